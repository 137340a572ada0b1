"""`hydra_entry`: Hydra's main for every isam2 command, with one way out for user errors (`error: ...`, exit 2)."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from isam2.errors import ConfigError, error_message, exit_with_error, user_error, user_errors_exit

# Settings whose accepted values have several types (Lightning takes devices=1, devices=auto, devices=[0,1]).
MIXED_TYPES = ("trainer.devices",)
# The config folder beside the package, by absolute path: the same for `python -m` and for a caller that
# imports an entry point (Hydra resolves a relative path from the caller, as a module when imported).
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def hydra_entry(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """`@hydra.main` over conf/<config_name>.yaml, the task wrapped in `user_errors_exit`.

    The task's return value (the configured `optimized_metric`) goes back to Hydra, which hands it to a sweeper
    (e.g. Optuna) as the job's return value.

    What Hydra refuses before the task runs (an unknown key, a missing group option, bad override syntax, an
    unwritable run directory) ends the same way as a user error inside it: one `error:` line, exit 2. Before
    the task runs, every setting left `???` and every override of the wrong type (`trainer.max_epochs=abc`)
    is refused too. Other exceptions keep their full traceback. A user who sets HYDRA_FULL_ERROR=1 gets
    Hydra's own reports back."""
    import hydra

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @functools.wraps(task)
        def checked(cfg: DictConfig) -> Any:
            from isam2.masklets.runtime import apply_tf32

            check_settings(cfg)
            from hydra.core.hydra_config import HydraConfig

            from isam2.config_tree import print_config_tree

            print_config_tree(cfg, save_to=Path(HydraConfig.get().runtime.output_dir))
            # process-wide, so set here for every command, never by a library object
            apply_tf32(cfg.get("sam2"))
            try:
                return task(cfg)
            finally:
                from isam2.callbacks.wandb_media import finish_wandb

                finish_wandb()  # each job of a multirun is a wandb run of its own

        main = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(
            user_errors_exit(checked)
        )

        @functools.wraps(task)
        def entry() -> Any:
            debugging = bool(os.environ.get("HYDRA_FULL_ERROR"))
            try:
                with _hydra_reraises():
                    return main()
            except Exception as e:
                message = None if debugging else _composition_message(e, config_name)
                if message is None:
                    raise
                exit_with_error(message)

        return entry

    return decorate


@contextlib.contextmanager
def _hydra_reraises() -> Iterator[None]:
    """Hydra prints and exits on an exception unless HYDRA_FULL_ERROR is set; set it so that `entry` sees it."""
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


def _composition_message(exc: Exception, config_name: str) -> str | None:
    """The one-line message of an error Hydra raised before the task ran, or None for any other exception."""
    from hydra.errors import ConfigCompositionException, OverrideParseException, SearchPathException

    found = user_error(exc)
    if found is not None:
        return error_message(found)
    if not isinstance(exc, (ConfigCompositionException, OverrideParseException, SearchPathException)):
        return None
    text = str(exc) if exc.__cause__ is None else f"{exc}\n{exc.__cause__}"
    lines = [line.strip() for line in text.split("Config search path:")[0].splitlines()]
    lines = [line for line in lines if line and not line.startswith(("object_type=", "See https://"))]
    what = "; ".join(lines).replace(":;", ":").replace(".;", ";")
    if isinstance(exc, OverrideParseException):
        what = f"{exc.override}: {what}"
    return (
        f"{what}; fix that override (python -m isam2.{config_name} --help lists the groups and their options)"
    )


def check_settings(cfg: DictConfig) -> None:
    """Refuse, before any work, a required setting left `???` and a command-line value whose type differs
    from the setting's default (an integer, a float or a boolean given as anything else)."""
    from hydra.core.hydra_config import HydraConfig

    config_name = HydraConfig.get().job.config_name
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} must be set: add {' '.join(f'{k}=<value>' for k in missing)} "
            f"to the command (python -m isam2.{config_name} --cfg job prints the settings)"
        )
    for key, value, default in _value_overrides(cfg):
        expected = _type_name(default)
        if expected is not None and value is not None and _type_name(value, default) != expected:
            raise ConfigError(
                f"{key}={value!r} is not {expected} (the default is {default!r}): set {key}=<{expected}>"
            )


def _value_overrides(cfg: DictConfig) -> list[tuple[str, Any, Any]]:
    """(key, value in `cfg`, default) of each command-line `key=value` override of a scalar setting; the
    default is the setting's value composed with the command line's group choices only."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = HydraConfig.get()
    choices = set(hydra_cfg.runtime.choices)
    overrides = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    groups = [o.input_line for o in overrides if o.key_or_group in choices and not o.is_delete()]
    values = [
        o.key_or_group
        for o in overrides
        if o.key_or_group not in choices and o.key_or_group not in MIXED_TYPES
        if not (o.is_add() or o.is_delete() or o.is_force_add() or o.is_sweep_override() or o.package)
    ]
    if not values:
        return []
    defaults = compose(hydra_cfg.job.config_name, overrides=groups)
    found = []
    for key in values:
        default = OmegaConf.select(defaults, key, default=None, throw_on_resolution_failure=False)
        if isinstance(default, (bool, int, float)):
            found.append((key, OmegaConf.select(cfg, key, throw_on_resolution_failure=False), default))
    return found


def _type_name(value: Any, default: Any = None) -> str | None:
    """'a boolean', 'an integer' or 'a number' for a scalar setting (an integer is also a number where the
    default is a float), None for anything else."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number" if isinstance(default, float) else "an integer"
    if isinstance(value, float):
        return "a number"
    return None
