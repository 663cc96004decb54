"""What every nbmlops magic shares: one argument parser that reports in the cell instead of
exiting, and one rule for errors (an nbmlops error becomes IPython's UsageError carrying the
fix, so the cell fails, and with it a papermill or nbclient run)."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from IPython.core.error import UsageError as IPythonUsageError

from nbmlops.exceptions import NbmlopsError

F = TypeVar("F", bound=Callable[..., Any])


class MagicArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so a bad line prints usage in the cell."""

    def error(self, message: str) -> Any:
        raise IPythonUsageError(f"{message}\n{self.format_usage().strip()}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        if message:
            raise IPythonUsageError(message.strip())
        raise IPythonUsageError(self.format_help())


def reports_errors(fn: F) -> F:
    """Turn an :class:`NbmlopsError` raised by a magic into IPython's UsageError (the message
    with its fix, no traceback into nbmlops), so the cell fails as a bad command should."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        try:
            return fn(*args, **kwargs)
        except NbmlopsError as err:
            raise IPythonUsageError(str(err)) from None

    return wrapper  # type: ignore[return-value]
