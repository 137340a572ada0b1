"""The schema of metrics.json: one typed structure per command that writes it (train/evaluate, score, refine)."""

# No `from __future__ import annotations`: TypedDict must see NotRequired unquoted to tell optional keys.
from typing import Any, Literal, get_type_hints

from typing_extensions import NotRequired, TypedDict


class MethodScores(TypedDict):
    """One method's numbers: `VideoSegmentationMetrics.compute()`, plus `CoverageMetrics.compute()` where the
    painting is known. Fractions in [0, 1]; None where nothing qualifies (e.g. `mvc16` when no video is long
    enough). The mVC keys follow `metrics.vc_lengths` (8 and 16 by default)."""

    miou: float | None
    fwiou: float | None
    mbiou: float | None
    mvc8: NotRequired[float | None]
    mvc16: NotRequired[float | None]
    per_class_iou: list[float | None]
    num_frames: int
    num_videos: int
    num_invalid_pred: int
    protocol: dict[str, Any]
    coverage: NotRequired[float | None]
    acc_inside: NotRequired[float | None]
    acc_outside: NotRequired[float | None]


class PaperColumns(TypedDict):
    """The paper's five columns in percent with one decimal (`metrics.report.paper_columns`)."""

    columns: dict[str, float | None]
    protocol: str


class SpeedRecord(TypedDict):
    """Frames per second over what `measured` says the clock covered."""

    fps: float | None
    frames: int
    seconds: float
    masklets_per_frame: float | None
    measured: str


class SelectionRecord(TypedDict):
    """Where train selected its checkpoint: on `held_out` train videos (`fraction` of them, drawn with `seed`)
    or on the paper's `paper_val` split; `monitor` and its best value (None when nothing was selected)."""

    mode: Literal["held_out", "paper_val"]
    label: str
    split: str
    videos: list[str] | None
    monitor: str | None
    miou_best: float | None
    fraction: NotRequired[float]
    seed: NotRequired[int]


class MvcVideos(TypedDict):
    """How many videos one mVC_n scores under the protocol (`metrics.report.mvc_videos`)."""

    counted: int
    of: int
    skipped_up_to: int


class DatasetRecord(TypedDict):
    """Which data a result was computed on."""

    name: str
    split: str
    root: str
    layout: str
    split_list: str


class TestResults(MethodScores):
    """train's and evaluate's metrics.json: the primary method's scores at the top level, every method under
    `methods` (with a base segmentor: isam2, base, fused and refined), their paper columns under `paper`."""

    method: str
    methods: dict[str, MethodScores]
    paper: dict[str, PaperColumns]
    checkpoint: str | None
    trained: bool
    selection: NotRequired[SelectionRecord]
    note: NotRequired[str]
    feature_mismatch: NotRequired[list[str]]
    speed: NotRequired[SpeedRecord]


class ScoreResults(MethodScores):
    """score's metrics.json: one method, the predictions in `pred_dir`."""

    dataset: str
    split: str
    pred_dir: str
    layout: str
    mvc_videos: dict[str, MvcVideos]
    paper: PaperColumns


class RefineResults(TypedDict):
    """refine's metrics.json: the base predictions and the refined ones, scored alike (None, None and no
    `paper` on a split without ground truth)."""

    base: MethodScores | None
    refined: MethodScores | None
    scored_videos: int
    speed: SpeedRecord
    vote: str
    dataset: DatasetRecord
    mvc_videos: NotRequired[dict[str, MvcVideos]]
    paper: NotRequired[dict[str, PaperColumns]]


def schema_problems(record: dict[str, Any], schema: type) -> list[str]:
    """What keeps `record` (a metrics.json dict) from matching `schema`, one TypedDict above, at its top level:
    missing required keys and keys it does not declare (`mvc<n>` for any n is allowed). [] when it matches."""
    hints = get_type_hints(schema)
    required = set(schema.__required_keys__)  # type: ignore[attr-defined]
    missing = sorted(required - set(record))
    unknown = sorted(k for k in record if k not in hints and not (k.startswith("mvc") and k[3:].isdigit()))
    return [f"missing key {k!r}" for k in missing] + [f"undeclared key {k!r}" for k in unknown]
