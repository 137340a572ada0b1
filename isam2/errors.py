"""The one exception type for bad input, and the CLI wrapper that turns it into a single clear message."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

F = TypeVar("F", bound=Callable)


class ISAM2Error(Exception):
    """Bad input or a bad setting. The message names the file or setting; no traceback is shown."""


class ConfigError(ISAM2Error, ValueError):
    """A setting (a Hydra override) has a value the code cannot use; the message names the setting."""


def user_error(exc: BaseException) -> BaseException | None:
    """The user error behind `exc`, or None: an ISAM2Error, or an OSError naming a file (missing, unreadable,
    unwritable), found in `exc` or in the exceptions it was raised from (Hydra's instantiate wraps them)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ISAM2Error) or (isinstance(cause, OSError) and cause.filename is not None):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__
    return None


def error_message(exc: BaseException) -> str:
    """One line for a user error: the ISAM2Error's message, or what failed on which file and what to do."""
    if isinstance(exc, OSError) and not isinstance(exc, ISAM2Error):
        name = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
        return f"cannot use {name}: {exc.strerror or exc}; check the path and that you may read or write it"
    return str(exc)


def exit_with_error(message: str) -> NoReturn:
    """Print `error: <message>` on stderr, as one line, and exit with status 2."""
    print(f"error: {' '.join(message.splitlines())}", file=sys.stderr, flush=True)
    sys.exit(2)


def user_errors_exit(fn: F) -> F:
    """Run an entry point; a user error (`user_error`), however wrapped, prints one `error: <message>` line on
    stderr and exits with status 2. Any other exception propagates with its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            found = user_error(e)
            if found is None:
                raise
            exit_with_error(error_message(found))

    return wrapper  # type: ignore[return-value]
