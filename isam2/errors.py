"""The one exception type for bad input, and the CLI wrapper that turns it into a single clear message."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class ISAM2Error(Exception):
    """Bad input or a bad setting. The message names the file or setting; no traceback is shown."""


class ConfigError(ISAM2Error, ValueError):
    """A setting (a Hydra override) has a value the code cannot use; the message names the setting."""


def user_errors_exit(fn: F) -> F:
    """Run an entry point; an ISAM2Error prints `error: <message>` on stderr and exits with status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ISAM2Error as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
