"""Every train/evaluate config group option and every experiment preset composes (Hydra's compose API)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("model", "trainer", "logger", "callbacks", "datamodule", "data/augment", "data", "sam2", "masklets")
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
PAPER_ROWS = {"vspw_isam2", "vspw_isam2_base", "vspw_oracle", "vipseg_isam2", "demo"}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(name, overrides=overrides, return_hydra_config=False)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes_into_train(group, option):
    cfg = _compose("train", [f"{group}={option}", "paths.output_dir=/tmp/x"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("config", ["train", "evaluate"])
def test_every_experiment_composes(config, experiment):
    overrides = [f"experiment={experiment}", "paths.output_dir=/tmp/x", "ckpt_path=/tmp/c.ckpt"]
    if experiment == "vspw_isam2_base":
        overrides.append("base_pred_dir=/tmp/base")
    cfg = _compose(config, overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["data"]["num_classes"] == 124
    if experiment == "vspw_isam2_base":
        assert resolved["segment"]["fill"] == "base"


# What each top-level preset honestly is: the Table 3 rows it aliases, or beyond the paper (docs/paper.md).
HONEST_LABELS = {
    "vspw_isam2": 'Table 3, row "I-SAM2"',
    "vspw_isam2_base": 'Table 3, row "I-SAM2_base"',
    "vspw_oracle": "Beyond the paper",
    "vipseg_isam2": "Beyond the paper",
    "demo": "Paper correspondence: none",
}


def test_experiments_cover_the_paper_rows_and_say_honestly_which():
    """The first comment line after the package header says which paper row a preset is, or that it is none:
    the oracle and VIPSeg I-SAM2 presets are not rows of Table 3 and must not say so."""
    assert set(EXPERIMENTS) >= PAPER_ROWS
    for name in EXPERIMENTS:
        text = (CONF / "experiment" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_")
        if name in HONEST_LABELS:
            assert HONEST_LABELS[name] in text
        if name in ("vspw_oracle", "vipseg_isam2"):
            assert "Table 3, row" not in text


def test_default_train_config_is_the_demo_and_instantiates():
    cfg = _compose("train", ["paths.output_dir=/tmp/x"])
    assert cfg.data.name == "synthetic" and cfg.sam2.image_size == 128 and cfg.masklets.source == "gt"
    assert (
        cfg.sam2.checkpoint is None and "wandb" in cfg.logger and cfg.trainer.use_distributed_sampler is False
    )
    assert cfg.segment.fill == "none" and cfg.segment.track_vote is False and cfg.base_pred_dir is None
    model = instantiate(
        cfg.model,
        num_classes=124,
        feature_dim=256,
        segment=cfg.segment,
        metrics=cfg.metrics,
        _recursive_=False,
    )
    assert model.hparams.optimizer["_partial_"] is True
    opt = model.configure_optimizers()
    assert type(opt["optimizer"]).__name__ == "AdamW"
    pipeline = instantiate(cfg.data.augment)
    assert type(pipeline).__name__ == "Compose"


ENTRY_POINTS = sorted(p.stem for p in CONF.glob("*.yaml"))


@pytest.mark.parametrize("config", ENTRY_POINTS)
def test_every_entry_point_config_composes_and_resolves(config):
    required = {
        "score": ["pred_dir=/tmp/p"],
        "refine": ["base_pred_dir=/tmp/b"],
        "evaluate": ["ckpt_path=/tmp/c"],
    }
    cfg = _compose(config, ["paths.output_dir=/tmp/x", *required.get(config, [])])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["task_name"] == config and resolved["data"]["num_classes"] == 124


def test_entry_points_are_the_documented_six():
    assert set(ENTRY_POINTS) == {"train", "evaluate", "extract", "score", "refine", "predict"}


# ---- debug=, hparams_search= and the SLURM launcher (lightning-hydra-template's groups) ----

OPTIONAL_GROUPS = ("debug", "hparams_search")


def group_override(group: str, option: str, config: str = "train") -> str:
    """`group=option` when conf/<config>.yaml's defaults list has a `group` entry (`- optional debug: null`),
    else `+group=option` (appended): the same composition either way."""
    defaults = OmegaConf.load(CONF / f"{config}.yaml").get("defaults", [])
    listed = {
        key.removeprefix("optional ").strip()
        for entry in defaults
        if isinstance(entry, DictConfig)
        for key in entry
    }
    return f"{group}={option}" if group in listed else f"+{group}={option}"


def test_optional_groups_are_last_in_the_train_defaults_when_listed():
    """debug must come after experiment (it overrides an experiment's trainer), hparams_search after it too."""
    names = []
    for entry in OmegaConf.load(CONF / "train.yaml").defaults:
        names.append(entry if isinstance(entry, str) else next(iter(entry)).removeprefix("optional ").strip())
    listed = [g for g in OPTIONAL_GROUPS if g in names]
    for group in listed:
        assert names.index(group) > names.index("experiment"), f"{group} must follow experiment in train.yaml"
    if "debug" in names:
        assert names[-1] == "debug", "debug must be the last entry of train.yaml's defaults"


@pytest.mark.parametrize("option", _options("debug"))
def test_every_debug_config_composes_one_cpu_process_and_no_logger(option):
    cfg = _compose(
        "train",
        [group_override("debug", option), "experiment=vspw_isam2", "trainer=ddp", "paths.output_dir=/tmp/x"],
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    trainer = resolved["trainer"]
    # the debug config wins over the experiment and the trainer group: one CPU process, anomaly detection
    assert (trainer["accelerator"], trainer["devices"], trainer["num_nodes"]) == ("cpu", 1, 1)
    assert trainer["strategy"] == "auto" and trainer["detect_anomaly"] is True
    assert resolved["task_name"] == "debug" and not resolved.get("logger")
    assert resolved["datamodule"]["num_workers"] == 0


def test_debug_configs_set_what_they_name():
    def trainer(option: str) -> dict:
        return OmegaConf.to_container(_compose("train", [group_override("debug", option)]).trainer)

    assert trainer("fdr")["fast_dev_run"] is True
    limit = trainer("limit")
    assert all(isinstance(limit[f"limit_{s}_batches"], int) for s in ("train", "val", "test"))
    assert trainer("overfit")["limit_train_batches"] == 3
    assert _compose("train", [group_override("debug", "overfit")]).datamodule.shuffle is False
    profiler = instantiate(
        _compose("train", [group_override("debug", "profiler"), "paths.output_dir=/tmp/x"]).trainer.profiler
    )
    assert type(profiler).__name__ == "SimpleProfiler"


def test_head_optuna_search_composes_over_the_head_settings():
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "train", overrides=[group_override("hparams_search", "head_optuna")], return_hydra_config=True
        )
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.hydra.mode.name == "MULTIRUN" and sweeper.n_trials >= 2 and sweeper.sampler.seed is not None
    assert isinstance(cfg.optimized_metric, str) and cfg.optimized_metric
    for key in sweeper.params:  # every searched key is a setting of the composed config
        assert OmegaConf.select(cfg, key, default=None) is not None, key
    assert set(sweeper.params) == {
        "model.optimizer.lr",
        "model.head.hidden_dim",
        "model.head.dropout",
        "model.label_smoothing",
    }


# ---- the config tree printed and saved at the start of a run ----


def _branches(text: str) -> dict[str, str]:
    """{top-level key: the text of its branch} of a printed config tree, in printed order."""
    branches: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith(("├── ", "└── ")):
            key = line[4:].strip()
            branches[key] = ""
        elif branches:
            branches[key] += line + "\n"
    return branches


def test_config_tree_prints_and_saves_every_key_resolved_where_it_can(tmp_path, capsys, monkeypatch):
    from isam2.config_tree import FIELDS, TREE_FILE, print_config_tree

    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    cfg = _compose("train", ["trainer.max_epochs=7"])  # paths.output_dir is ${hydra:...}: no run here
    print_config_tree(cfg, save_to=tmp_path / "run")
    printed = capsys.readouterr().out
    saved = (tmp_path / "run" / TREE_FILE).read_text()
    assert "\x1b[" not in saved, "the saved tree has no colour codes"
    for text in (printed, saved):
        branches = _branches(text)
        assert list(branches)[: len(FIELDS)] == list(FIELDS) and sorted(branches) == sorted(map(str, cfg))
    branches = _branches(saved)
    assert "T_max: 7" in branches["model"], "interpolations (T_max: ${trainer.max_epochs}) are resolved"
    assert "${hydra:runtime.output_dir}" in branches["paths"], "unresolvable here: shown as written"


def test_config_tree_only_on_rank_zero(tmp_path, capsys, monkeypatch):
    from isam2.config_tree import print_config_tree

    monkeypatch.setenv("RANK", "1")
    print_config_tree(_compose("train", []), save_to=tmp_path)
    assert capsys.readouterr().out == "" and not any(tmp_path.iterdir())


@pytest.mark.parametrize("config", ENTRY_POINTS)
def test_logs_are_coloured_on_the_console_and_plain_in_the_task_log(config):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(config, overrides=["hydra.runtime.output_dir=/tmp/run"], return_hydra_config=True)
    logging = cfg.hydra.job_logging
    assert cfg.hydra.runtime.choices["hydra/job_logging"] == "colorlog"
    assert cfg.hydra.runtime.choices["hydra/hydra_logging"] == "colorlog"
    assert logging.formatters[logging.handlers.console.formatter]["()"] == "colorlog.ColoredFormatter"
    assert logging.handlers.file.formatter == "simple" and set(logging.root.handlers) == {"console", "file"}
    assert logging.handlers.file.filename == f"/tmp/run/{config}.log"
