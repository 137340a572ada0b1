"""Containers and clusters, read from the files (no docker daemon, no SLURM here): the Dockerfile installs what
pyproject and the Makefile pin, .dockerignore keeps heavy folders out, the sbatch log folder exists before
sbatch opens it, and the submitit launcher config composes through the CLI."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml
from omegaconf import OmegaConf
from packaging.requirements import Requirement

from tests.train_helpers import REPO, run_cli

# ---- reading the files ----


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    joined, current = [], ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        joined.append(current.strip())
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def pip_installs() -> list[list[str]]:
    """The arguments of every `pip install` in the Dockerfile's RUN lines, options and all."""
    installs = []
    for instruction, args in dockerfile_instructions():
        if instruction != "RUN":
            continue
        for command in re.split(r"&&|;", args):
            words = shlex.split(command)
            if "pip" in words and "install" in words[words.index("pip") :]:
                installs.append(words[words.index("install", words.index("pip")) + 1 :])
    return installs


def pinned(words: list[str]) -> dict[str, str]:
    """{name: version} of the `name==version` requirements among pip install arguments."""
    found = {}
    for word in words:
        if not word.startswith("-") and "==" in word:
            requirement = Requirement(word)
            found[requirement.name] = str(requirement.specifier).removeprefix("==")
    return found


def makefile_pins() -> dict[str, str]:
    return pinned(shlex.split(" ".join(re.findall(r"pip install (.*)", (REPO / "Makefile").read_text()))))


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def env_settings() -> dict[str, str]:
    """ENV key=value pairs of the Dockerfile (quotes removed)."""
    settings = {}
    for instruction, args in dockerfile_instructions():
        if instruction == "ENV":
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                settings[key] = value
    return settings


# ---- the Dockerfile ----


def test_the_image_pins_the_torch_sam2_and_torchvision_of_the_makefile_and_the_tests():
    import torch

    image = {}
    for words in pip_installs():
        image.update(pinned(words))
    makefile = makefile_pins()
    assert {"torch", "torchvision", "sam2"} <= set(makefile)
    for name in ("torch", "torchvision", "sam2"):
        assert image.get(name) == makefile[name], (
            f"{name}: Dockerfile {image.get(name)}, Makefile {makefile[name]}"
        )
    # the tests run on the Makefile's torch; the image's CUDA is the one that torch was built for
    assert torch.__version__.split("+")[0] == makefile["torch"]
    base = next(args for instruction, args in dockerfile_instructions() if instruction == "FROM").split()[0]
    cuda = re.search(r"cuda[:\-]?(\d+\.\d+)", base)
    assert cuda, f"the base image {base} names no CUDA version"
    if torch.version.cuda is not None:  # a CPU-only torch in the test environment says nothing about CUDA
        assert cuda.group(1) == torch.version.cuda, f"base {base} vs the tests' torch {torch.__version__}"
    assert "devel" in base, "sam2._C compiles with nvcc: a devel image"


def test_every_pinned_package_satisfies_pyproject_and_the_project_is_installed_with_its_extras():
    project = pyproject()["project"]
    declared = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    installs = pip_installs()
    for words in installs:
        for name, version in pinned(words).items():
            assert name in declared, f"the Dockerfile installs {name}, which pyproject does not declare"
            assert declared[name].specifier.contains(version), (
                f"{name}=={version} vs pyproject {declared[name]}"
            )
    # the project itself (every dependency of pyproject) with the SLURM extra, the launcher that
    # conf/hydra/launcher/slurm.yaml needs
    projects = [w for words in installs for w in words if re.fullmatch(r"\.(\[[\w,]+\])?", w)]
    assert projects, "the Dockerfile never installs the project (`pip install -e .[slurm]`)"
    extras = set(re.findall(r"\w+", projects[0].removeprefix(".")))
    assert "slurm" in extras and extras <= set(project["optional-dependencies"])
    # the sources are in the image before the project is installed; Hydra reads conf/ beside isam2/
    steps = dockerfile_instructions()
    install = next(i for i, (ins, args) in enumerate(steps) if ins == "RUN" and projects[0] in args)
    copied = " ".join(args for ins, args in steps[:install] if ins == "COPY")
    for path in ("pyproject.toml", "isam2", "conf"):
        assert path in copied, f"{path} is copied after the project install"
    assert "-e" in next(words for words in installs if projects[0] in words), "editable: conf/ beside isam2/"


def test_the_image_builds_sam2_cuda_for_a100_and_h100_runs_as_a_user_and_mounts_the_paths():
    settings = env_settings()
    assert settings["SAM2_BUILD_CUDA"] == "1" and settings["SAM2_BUILD_ALLOW_ERRORS"] == "0"
    assert {"8.0", "9.0"} <= set(re.split(r"[;\s]+", settings["TORCH_CUDA_ARCH_LIST"]))
    sam2_install = next(words for words in pip_installs() if any(w.startswith("sam2==") for w in words))
    assert "--no-build-isolation" in sam2_install, "sam2 builds against the installed torch"
    users = [args.split(":")[0] for ins, args in dockerfile_instructions() if ins == "USER"]
    assert users and users[-1] not in ("root", "0")
    # VOLUMEs: conf/paths/default.yaml's folders under the image's ISAM2_ROOT, and a checkpoint mount
    paths = OmegaConf.create({"paths": OmegaConf.load(REPO / "conf" / "paths" / "default.yaml")}).paths
    paths.root_dir = settings["ISAM2_ROOT"]
    expected = {paths.data_dir, paths.store_dir, paths.log_dir}
    volumes = set()
    for ins, args in dockerfile_instructions():
        if ins == "VOLUME":
            volumes |= set(yaml.safe_load(args) if args.startswith("[") else args.split())
    assert expected <= volumes and any("ckpt" in v for v in volumes - expected)
    text = (REPO / "Dockerfile").read_text()
    assert "-e WANDB_API_KEY" in text, "the docker run line passes the wandb key through"
    assert "WANDB_API_KEY" not in settings, "no key baked into the image"


# ---- .dockerignore ----


def _glob_regex(glob: str) -> str:
    """Docker's (Go filepath.Match plus `**`) glob as a regex: `*` and `?` stay inside one folder."""
    tokens = re.split(r"(\*\*/|\*\*|\*|\?)", glob)
    table = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return "".join(table.get(t, re.escape(t)) for t in tokens)


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins (`!` re-includes); a pattern matches a path or a folder
    above it; `**` matches any number of folders."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        regex = _glob_regex(glob)
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negated
    return excluded


@pytest.mark.parametrize(
    "heavy",
    [
        ".venv/bin/python",
        ".git/objects/aa",
        "data/VSPW_480p/data/v/origin/0.jpg",
        "stores/vspw-train-ab12/features.npy",
        "outputs/train/runs/x/checkpoints/last.ckpt",
        "multirun/2026/0/metrics.json",
        "wandb/offline-run-1/run.wandb",
        "isam2/__pycache__/cli.cpython-311.pyc",
        "checkpoints/sam2.1_hiera_large.pt",
        "epoch001.ckpt",
        ".whl/torch-2.14.1-cp311-linux_x86_64.whl",
        ".pytest_cache/v/cache",
        ".ruff_cache/x",
        "logs/slurm/isam2-train-1.out",
    ],
)
def test_dockerignore_keeps_heavy_folders_out_of_the_build_context(heavy):
    assert dockerignored(heavy)


def test_dockerignore_keeps_what_the_image_copies():
    copied = [args.split()[:-1] for ins, args in dockerfile_instructions() if ins == "COPY"]
    for sources in copied:
        for source in sources:
            assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    for path in ("isam2/cli.py", "conf/train.yaml", "pyproject.toml", "scripts/slurm/train.sbatch"):
        assert not dockerignored(path), path


# ---- SLURM ----


def test_the_sbatch_log_folder_exists_before_sbatch_opens_it(tmp_path):
    script = (REPO / "scripts" / "slurm" / "train.sbatch").read_text()
    options = dict(
        line.split()[1].partition("=")[::2] for line in script.splitlines() if line.startswith("#SBATCH --")
    )
    assert "--output" in options
    log_dir = Path(options["--output"]).parent  # relative to the submit directory, the repo root
    # run outputs stay out of git: the folder is made by scripts/slurm/submit.sh, before sbatch opens it
    assert "/logs/" in (REPO / ".gitignore").read_text().splitlines() and log_dir.parts[0] == "logs"
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "scripts", repo / "scripts")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(
        f'#!/bin/sh\n[ -d {log_dir} ] && pwd > "{tmp_path}/submitted" && echo "$@" >> "{tmp_path}/submitted"\n'
    )
    (fake / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    subprocess.run(
        [
            repo / "scripts/slurm/submit.sh",
            "--nodes=2",
            "scripts/slurm/train.sbatch",
            "experiment=vspw_isam2",
        ],
        cwd=tmp_path,
        env=env,
        check=True,
    )
    where, args = (tmp_path / "submitted").read_text().splitlines()
    assert Path(where) == repo and args == "--nodes=2 scripts/slurm/train.sbatch experiment=vspw_isam2"
    # one task per GPU: --ntasks-per-node == --gpus-per-node, and srun passes both counts to the trainer
    assert options["--ntasks-per-node"] == options["--gpus-per-node"]
    assert 'trainer.devices="${SLURM_NTASKS_PER_NODE}"' in script
    assert 'trainer.num_nodes="${SLURM_JOB_NUM_NODES}"' in script


def test_the_submitit_launcher_config_composes_through_the_cli():
    """`--cfg all --resolve` (Hydra refuses --cfg together with -m; the launcher is the same config)."""
    proc = run_cli(
        "isam2.train",
        [
            "hydra/launcher=slurm",
            "trainer=ddp",
            "trainer.devices=8",
            "trainer.num_nodes=2",
            "+slurm_tasks_per_node=8",
            "hydra.launcher.partition=gpu",
            "--cfg",
            "all",
            "--resolve",
        ],
    )
    cfg = yaml.safe_load(proc.stdout)
    launcher = cfg["hydra"]["launcher"]
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    # SLURM starts the ranks: one task per GPU, as many nodes as the trainer's
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 8, 8)
    assert launcher["partition"] == "gpu" and launcher["max_num_timeout"] >= 1
    # the shell, not OmegaConf, expands ${WANDB_MODE:-offline} on the node
    assert "export WANDB_MODE=${WANDB_MODE:-offline}" in launcher["setup"]
    assert cfg["trainer"]["num_nodes"] == 2 and cfg["trainer"]["strategy"] == "ddp"
