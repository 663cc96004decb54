"""What nbmlops's own threads, and the libraries they drive, log goes to ``nbmlops.log`` in
the project's ``.nbmlops`` folder, never into the cell that happens to be running.

In a kernel, anything written to stderr from any thread lands in the current cell's output:
MLflow's "Model was missing function: predict" for a fitted scaler, urllib3's PySocks warning,
our own retry messages. Logging and warnings are process-wide, so this routes by thread: records
and warnings raised on a thread whose name starts with ``nbmlops`` go to the file, everyone
else's go where they went before. Importing MLflow (requests, urllib3) also adds process-wide
warning filters; :func:`kept_filters` keeps the ones our thread would add out of the user's.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOG_NAME = "nbmlops.log"
THREAD_PREFIX = "nbmlops"

_lock = threading.Lock()
_handler: logging.FileHandler | None = None
_routed_loggers: set[str] = set()


def on_our_thread() -> bool:
    return threading.current_thread().name.startswith(THREAD_PREFIX)


class _OurThreads(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return (record.threadName or "").startswith(THREAD_PREFIX)


class _OtherThreads(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.threadName or "").startswith(THREAD_PREFIX)


class _LastResort(logging.Handler):
    """Stands in for ``logging.lastResort`` (what logs a record no handler took: stderr)."""

    def __init__(self, previous: logging.Handler | None):
        super().__init__(previous.level if previous is not None else logging.WARNING)
        self.previous = previous

    def handle(self, record: logging.LogRecord) -> bool:
        if (record.threadName or "").startswith(THREAD_PREFIX) and _handler is not None:
            return bool(_handler.handle(record))
        return bool(self.previous.handle(record)) if self.previous is not None else False

    def emit(self, record: logging.LogRecord) -> None:  # handle() does it all
        pass


def route_to_log(home_dir: Path) -> Path:
    """Send what nbmlops threads log and warn to ``home_dir/nbmlops.log`` (idempotent); the
    log's path. Call again once MLflow is imported: its logger has a stderr handler of its
    own."""
    global _handler
    path = home_dir / LOG_NAME
    with _lock:
        if _handler is None or Path(_handler.baseFilename) != path.resolve():
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8", delay=True)
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")
            )
            handler.addFilter(_OurThreads())
            old, _handler = _handler, handler
            for name in _routed_loggers:
                logger = logging.getLogger(name)
                if old is not None:
                    logger.removeHandler(old)
                logger.addHandler(handler)
            if old is not None:
                old.close()
        if not isinstance(logging.lastResort, _LastResort):
            logging.lastResort = _LastResort(logging.lastResort)
        if not getattr(warnings.showwarning, "_nbmlops", False):
            warnings.showwarning = _show_warning(warnings.showwarning)
        # Loggers that do not propagate to the root write with handlers of their own.
        for name in ("mlflow",):
            logger = logging.getLogger(name)
            if name in _routed_loggers or logger.propagate:
                continue
            for existing in logger.handlers:
                existing.addFilter(_OtherThreads())
            logger.addHandler(_handler)
            _routed_loggers.add(name)
    return path


def _show_warning(previous: Any) -> Any:
    def show(message: Any, category: Any, filename: str, lineno: int, *args: Any) -> None:
        if on_our_thread() and _handler is not None:
            text = warnings.formatwarning(message, category, filename, lineno).rstrip()
            logging.getLogger("nbmlops.warnings").warning("%s", text)
            return
        previous(message, category, filename, lineno, *args)

    show._nbmlops = True  # type: ignore[attr-defined]
    return show


@contextmanager
def kept_filters() -> Iterator[None]:
    """While our thread imports libraries, the warning filters they set at import
    (``requests`` ignores urllib3's DependencyWarning, urllib3 sets SecurityWarning to always)
    are not added to the process's list: the user's cells keep the filters they had. Calls from
    other threads go through unchanged; what our thread then warns goes to the log anyway."""
    originals = warnings.filterwarnings, warnings.simplefilter

    def guard(original: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            if not on_our_thread():
                original(*args, **kwargs)

        return call

    warnings.filterwarnings, warnings.simplefilter = guard(originals[0]), guard(originals[1])
    try:
        yield
    finally:
        warnings.filterwarnings, warnings.simplefilter = originals


def import_mlflow(home_dir: Path) -> None:
    """Import what the shipper uses without touching the user's warning filters, then route
    our threads' logs to the log file."""
    route_to_log(home_dir)  # what the imports warn, too
    with kept_filters():
        import mlflow
        import mlflow.models
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - the SQLite store's
    route_to_log(home_dir)  # MLflow's logger, set up by the import
