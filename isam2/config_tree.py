"""`print_config_tree`: the composed config as a rich tree at the start of a run, printed and saved in the run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from isam2.files import atomic_file

# The groups a reader looks at first; every other top-level key follows in the config's own order.
FIELDS = ("data", "sam2", "masklets", "model", "datamodule", "trainer", "callbacks", "logger", "paths")
TREE_FILE = "config_tree.log"


def config_tree(cfg: DictConfig, fields: Sequence[str] = FIELDS, resolve: bool = True):
    """A `rich.tree.Tree` with one branch per top-level key of `cfg` (`fields` first), each branch the key's
    YAML (or its value), resolved where it can be (a branch that cannot is shown with its `${...}`)."""
    import rich.syntax
    import rich.tree

    style = "dim"
    tree = rich.tree.Tree("CONFIG", style=style, guide_style=style)
    order = [f for f in fields if f in cfg] + [k for k in cfg if k not in fields]
    for key in order:
        branch = tree.add(str(key), style=style, guide_style=style)
        branch.add(rich.syntax.Syntax(_branch_text(cfg, str(key), resolve), "yaml"))
    return tree


def _branch_text(cfg: DictConfig, key: str, resolve: bool) -> str:
    """The YAML of `cfg[key]` (a scalar: its value), resolved against the whole config when `resolve` and it
    can be; unresolved when an interpolation cannot resolve here (e.g. `${hydra:...}` outside a run)."""
    node = cfg._get_node(key)
    if resolve:
        try:
            value = cfg[key]
            return (
                OmegaConf.to_yaml(value, resolve=True)
                if isinstance(value, DictConfig | ListConfig)
                else str(value)
            )
        except Exception:  # omegaconf raises several error types for one failed interpolation
            pass
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_yaml(node)
    return str(node._value())


def print_config_tree(
    cfg: DictConfig,
    save_to: Path | None = None,
    fields: Sequence[str] = FIELDS,
    resolve: bool = True,
) -> None:
    """Print `cfg` as a rich tree (see `config_tree`) on rank zero; with `save_to` (a run folder) also write it,
    without colour codes, to `<save_to>/config_tree.log`. Other ranks of a launched job do nothing."""
    import io

    import rich
    from rich.console import Console

    from isam2.distributed import launched_rank

    if launched_rank() != 0:
        return
    tree = config_tree(cfg, fields, resolve)
    rich.print(tree)
    if save_to is not None:
        text = io.StringIO()
        Console(file=text, width=120, color_system=None, force_terminal=False).print(tree)
        with atomic_file(Path(save_to) / TREE_FILE) as f:
            f.write("".join(line.rstrip() + "\n" for line in text.getvalue().splitlines()).encode())
