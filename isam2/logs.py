"""Rank-aware logging: every isam2 message goes through `logging`, once on rank zero unless it is one rank's."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from isam2.distributed import current_rank

# A library's logger carries no handler of its own: the entry points' Hydra job logging (console and
# <run>/<task>.log) prints it, and outside Hydra Python's last-resort handler still shows warnings.
logging.getLogger("isam2").addHandler(logging.NullHandler())


class RankedLogger(logging.LoggerAdapter):
    """A logger that speaks on rank zero only, so a DDP job prints each warning once.

    A message about one rank passes `rank_zero_only=False`: every rank logs it, prefixed `[rank r]`.
    """

    def __init__(self, name: str, rank_zero_only: bool = True) -> None:
        super().__init__(logging.getLogger(name), {})
        self.rank_zero_only = rank_zero_only

    def log(
        self, level: int, msg: object, *args: Any, rank_zero_only: bool | None = None, **kwargs: Any
    ) -> None:
        if not self.isEnabledFor(level):
            return
        rank = current_rank()
        only_zero = self.rank_zero_only if rank_zero_only is None else rank_zero_only
        if only_zero and rank != 0:
            return
        if not only_zero and rank != 0:
            msg = f"[rank {rank}] {msg}"
        msg, kwargs = self.process(msg, kwargs)
        self.logger.log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: Mapping[str, Any]) -> tuple[Any, Any]:
        kwargs = dict(kwargs)
        # The caller's frame, not this adapter's, names the line that logged.
        kwargs.setdefault("stacklevel", 2)
        return msg, kwargs


def get_logger(name: str, rank_zero_only: bool = True) -> RankedLogger:
    """The isam2 logger of module `name` (pass `__name__`)."""
    return RankedLogger(name, rank_zero_only=rank_zero_only)


def console_logging(level: int = logging.INFO) -> None:
    """For the command lines without Hydra (`isam2.data.synthetic`, `isam2.convert`): messages on stderr,
    `warning: ...` for a warning. Does nothing where logging is set up already."""
    handler = logging.StreamHandler()
    handler.setFormatter(_PlainFormatter())
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, handlers=[handler])


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"
