"""Every isam2 command that README.md shows composes: each `python -m isam2.<task> ...` (also under torchrun,
sbatch scripts/slurm/train.sbatch and docker run), read from the file, in code blocks (continued lines
joined) and inline code, with its placeholders filled, goes through Hydra's compose API, so every group,
option and key the README names exists. Commands added to the README later are found the same way."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tests.train_helpers import REPO

CONF = REPO / "conf"
PLACEHOLDER = re.compile(r"<[^<>]*>")


def readme_commands(text: str) -> list[tuple[str, list[str]]]:
    """(module, arguments) of each isam2 command in a markdown text: fenced code blocks (lines continued with
    a trailing backslash joined, `#` comments dropped) and inline code spans (which may wrap a line)."""
    snippets = []
    fenced = re.compile(r"^\s*```[^\n]*\n(.*?)^\s*```", re.S | re.M)
    for block in fenced.findall(text):
        snippets += re.sub(r"\\\n", " ", block).splitlines()
    snippets += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", fenced.sub("", text))]
    commands = []
    for snippet in snippets:
        snippet = PLACEHOLDER.sub(lambda m: m.group(0).replace(" ", "_"), snippet)  # <shared dir>: one word
        try:
            words = shlex.split(snippet, comments=True)
        except ValueError:  # an unbalanced quote: prose, not a command
            continue
        command = _isam2_command(words)
        if command is not None:
            commands.append(command)
    return commands


def _isam2_command(words: list[str]) -> tuple[str, list[str]] | None:
    """The isam2 module and its arguments in a shell command: `python -m`/`torchrun ... -m isam2.X args`,
    `sbatch ... scripts/slurm/train.sbatch args` (isam2.train) or `docker run ... <image> isam2.X args`."""
    for i, word in enumerate(words):
        if re.fullmatch(r"isam2(\.\w+)+", word) and (
            (i > 0 and words[i - 1] == "-m") or words[:2] == ["docker", "run"]
        ):
            return word, words[i + 1 :]
        if word.endswith("scripts/slurm/train.sbatch") and words[0] == "sbatch":
            return "isam2.train", words[i + 1 :]
    return None


def hydra_overrides(args: list[str]) -> list[str]:
    """The command's overrides as one composable job: options (`-m`, `--cfg job`), `[optional ...]` and
    `<prose placeholders>` dropped, `<value>` placeholders filled, a sweep (`a=1,2`) reduced to its first value."""
    kept, skip_next = [], False
    for word in args:
        if skip_next:
            skip_next = False
            continue
        if word.startswith("-"):
            skip_next = word in ("--cfg", "-c", "--package", "-p", "--info", "-i")
            continue
        if "=" not in word or word.startswith("[") or word.endswith("]") or word == "...":
            continue  # `<same overrides>`, `[overrides]`, `...`: prose
        kept.append(PLACEHOLDER.sub("x", word))
    parsed = OverridesParser.create().parse_overrides(kept)
    return [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
        if o.is_sweep_override()
        else o.input_line
        for o in parsed
    ]


def _readme_cases() -> list[tuple[str, list[str]]]:
    return readme_commands((REPO / "README.md").read_text())


def test_the_parser_finds_continued_inline_and_launcher_commands():
    """The parser on a hand-made README: what it must find and what it must leave."""
    text = "\n".join(
        [
            "Run `python -m isam2.train trainer=ddp` or `python -m isam2.evaluate",
            "ckpt_path=<run>/a.ckpt`. Not `isam2.train` alone, not `make demo`.",
            "```bash",
            "# a comment: python -m isam2.refine",
            "python -m isam2.extract data=vspw \\",
            "    data.root=/data/VSPW_480p   # trailing comment",
            "torchrun --nnodes=2 --node_rank=<0|1> -m isam2.train trainer.num_nodes=2",
            "sbatch --nodes=2 scripts/slurm/train.sbatch experiment=vspw_isam2",
            "docker run --gpus all -v /d:/d isam2 isam2.score pred_dir=<a dir>",
            "```",
        ]
    )
    assert readme_commands(text) == [
        ("isam2.extract", ["data=vspw", "data.root=/data/VSPW_480p"]),
        ("isam2.train", ["trainer.num_nodes=2"]),
        ("isam2.train", ["experiment=vspw_isam2"]),
        ("isam2.score", ["pred_dir=<a_dir>"]),
        ("isam2.train", ["trainer=ddp"]),
        ("isam2.evaluate", ["ckpt_path=<run>/a.ckpt"]),
    ]
    assert hydra_overrides(["-m", "<same", "overrides>", "a.b=1,2", "--cfg", "job", "c=<dir>/d", "[x=1"]) == [
        "a.b=1",
        "c=x/d",
    ]


def test_the_readme_shows_the_commands_a_user_needs():
    modules = {module for module, _ in _readme_cases()}
    assert {
        "isam2.extract",
        "isam2.train",
        "isam2.evaluate",
        "isam2.score",
        "isam2.refine",
        "isam2.predict",
    } <= modules
    flat = [" ".join(args) for _, args in _readme_cases()]
    assert any("hparams_search=" in line for line in flat) and any("debug=" in line for line in flat)
    torchrun = [line for line in (REPO / "README.md").read_text().splitlines() if "torchrun --" in line]
    assert torchrun and all(
        f"--{option}" in torchrun[0] for option in ("nnodes", "node_rank", "rdzv_backend", "rdzv_endpoint")
    ), "a complete torchrun line, no `...`"


def _hydra_app(module: str) -> Path | None:
    """conf/<task>.yaml of a Hydra entry point `isam2.<task>`, None for other modules."""
    path = CONF / f"{module.removeprefix('isam2.')}.yaml"
    return path if module.count(".") == 1 and path.is_file() else None


@pytest.mark.parametrize(
    ("module", "args"), _readme_cases(), ids=[f"{m} {' '.join(a)}"[:90] for m, a in _readme_cases()]
)
def test_every_readme_command_composes(module, args):
    config = _hydra_app(module)
    if config is None:
        _check_plain_command(module, args)
        return
    overrides = hydra_overrides(args)
    if not any(o.split("=")[0].lstrip("+~") == "paths.output_dir" for o in overrides):
        overrides.append("paths.output_dir=/tmp/isam2-readme")  # ${hydra:...} has no run here
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(config.stem, overrides=overrides, return_hydra_config=True)
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_delete() or override.key_or_group.startswith("hydra") or override.package:
            continue
        key = override.key_or_group
        group = (CONF / key).is_dir()
        assert group or OmegaConf.select(cfg, key, default="<missing>") != "<missing>", (
            f"{key} is not a setting"
        )
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.to_container(job, resolve=False)  # the job config is complete


def _check_plain_command(module: str, args: list[str]) -> None:
    """A module that is not a Hydra app: it exists, and its key=value arguments are its settings."""
    import importlib.util

    assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"
    if module == "isam2.data.synthetic":
        from isam2.data.synthetic import SyntheticConfig

        known = {f.name for f in dataclasses.fields(SyntheticConfig)} | {"root", "force"}
        for override in hydra_overrides(args):
            assert override.split("=")[0] in known, f"{override}: not a setting of python -m {module}"
