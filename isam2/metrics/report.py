"""Results in the paper's language: its five columns (Tables 1 and 3) in percent with one decimal, the protocol named."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

MAIN_COLUMNS = (("mIoU", "miou"), ("WIoU", "fwiou"), ("mBIoU", "mbiou"))
# Tables 1 and 3 of the paper, in its order; Tables 4-7 drop mBIoU, Table 2 drops WIoU (our files keep all five).
PAPER_COLUMNS = (*MAIN_COLUMNS, ("mVC8", "mvc8"), ("mVC16", "mvc16"))
_VC_PROTOCOLS = {
    "cffm": "mVC as the CFFM/MRCFA/TV3S scripts compute it (the published numbers)",
    "vspw": "mVC as the VSPW toolkit computes it",
    "paper": "mVC as Eq. 4 is printed",
}
_CLASS_SETS = {
    "gt": "mIoU over classes present in GT (VSPW/CFFM)",
    "union": "mIoU over non-empty unions (mmseg)",
}


def paper_percent(value: float | None) -> float | None:
    """A fraction as the paper prints it: percent rounded to one decimal (None stays None)."""
    return None if value is None else round(100 * float(value), 1)


def _pct(value) -> str:
    percent = paper_percent(value)
    return "-" if percent is None else f"{percent:.1f}"


def protocol_name(protocol: Mapping[str, Any] | None) -> str:
    """One line naming the metric protocol variant of a result (`results["protocol"]`, docs/metrics.md)."""
    if not protocol:
        return "protocol not recorded"
    classes = protocol.get("miou_classes")
    vc = protocol.get("vc_protocol")
    width = protocol.get("boundary_width")
    return "; ".join(
        [
            _CLASS_SETS.get(classes, f"miou_classes={classes}"),
            _VC_PROTOCOLS.get(vc, f"vc_protocol={vc}"),
            f"mBIoU band {width}x{width} (Eq. 5 corrected: boundary pixels, docs/metrics.md)",
        ]
    )


def paper_columns(results: Mapping[str, Any], protocol: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{"columns": {mIoU, WIoU, mBIoU, mVC8, mVC16 -> percent, one decimal, or None}, "protocol": "..."}.

    `results` is one method's metrics (VideoSegmentationMetrics.compute()); `protocol` defaults to the one it
    records. These are the numbers to set beside the paper's Tables 1 and 3."""
    protocol = results.get("protocol") if protocol is None else protocol
    return {
        "columns": {title: paper_percent(results.get(key)) for title, key in PAPER_COLUMNS},
        "protocol": protocol_name(protocol),
    }


def mvc_videos(num_frames: Sequence[int], lengths: Sequence[int], protocol: str) -> dict[str, dict[str, int]]:
    """Per mVC_n, how many of the videos (`num_frames`: their lengths) `protocol` scores, from `window_ends`:
    {"mvc16": {"counted": 310, "of": 343, "skipped_up_to": 16}, ...}; skipped_up_to: a video of that many
    frames or fewer has no window."""
    from isam2.metrics.consistency import CFFM_MIN_FRAMES, window_ends

    out = {}
    for n in lengths:
        counted = sum(1 for t in num_frames if len(window_ends(int(t), int(n), protocol)))
        limit = max(int(n), CFFM_MIN_FRAMES) + 2
        longest = max((t for t in range(1, limit) if not len(window_ends(t, int(n), protocol))), default=0)
        out[f"mvc{n}"] = {"counted": counted, "of": len(num_frames), "skipped_up_to": longest}
    return out


def mvc_videos_note(videos: Mapping[str, Mapping[str, int]]) -> str | None:
    """The lengths that skip videos, as in `mVC8 and mVC16 over 310 of 343 videos: 33 have <= 16 frames`;
    None when every length counts every video."""
    groups: dict[tuple[int, int, int], list[str]] = {}
    for key, v in videos.items():
        if v["counted"] < v["of"]:
            groups.setdefault((v["counted"], v["of"], v["skipped_up_to"]), []).append(f"mVC{key[3:]}")
    parts = []
    for (counted, total, up_to), names in groups.items():
        skipped = total - counted
        verb = "has" if skipped == 1 else "have"
        parts.append(
            f"{' and '.join(names)} over {counted} of {total} videos: {skipped} {verb} <= {up_to} frames"
        )
    return "; ".join(parts) or None


def _grid(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, body)])


def format_table(
    rows: dict[str, dict], class_names: list[str] | None = None, protocol_note: str | None = None
) -> str:
    """The paper's columns (mIoU, WIoU, mBIoU, mVC8, mVC16, ...) in percent, one row per method name.

    A last line names the protocol (when the rows record one), `protocol_note` appended (`mvc_videos_note`).
    With `class_names`, a per-class IoU table follows (classes with an IoU for at least one method). Missing
    values (None) print as "-".
    """
    lengths = sorted(
        {int(m.group(1)) for r in rows.values() for k in r if (m := re.fullmatch(r"mvc(\d+)", k))}
    )
    columns = [*MAIN_COLUMNS, *((f"mVC{n}", f"mvc{n}") for n in lengths)]
    body = [[name, *(_pct(r.get(key)) for _, key in columns)] for name, r in rows.items()]
    text = _grid(["Method", *(title for title, _ in columns)], body)
    protocols = {protocol_name(r["protocol"]) for r in rows.values() if r.get("protocol")}
    lines = [f"{p}; {protocol_note}" if protocol_note else p for p in sorted(protocols)]
    if protocol_note and not lines:
        lines = [protocol_note]
    text += "".join(f"\nprotocol: {line}" for line in lines)
    if class_names is not None:
        per_class = {name: r.get("per_class_iou") or [] for name, r in rows.items()}
        lines = []
        for i, cname in enumerate(class_names):
            values = [v[i] if i < len(v) else None for v in per_class.values()]
            if any(v is not None for v in values):
                lines.append([f"{i} {cname}", *map(_pct, values)])
        text += "\n\nPer-class IoU (%)\n" + _grid(["Class", *rows], lines)
    return text
