"""What every panel shares: a worker thread, the error box, the static HTML fallback."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

try:
    import ipywidgets as widgets
except ImportError as err:  # pragma: no cover - ipywidgets is a runtime dependency
    from nbmlops.exceptions import MissingDependencyError

    raise MissingDependencyError(
        "nbmlops panels need ipywidgets 8",
        fix="pip install 'ipywidgets>=8' (and jupyterlab_widgets in the Jupyter server's "
        "environment).",
    ) from err

from nbmlops.exceptions import NbmlopsError

log = logging.getLogger("nbmlops.widgets")

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def message(err: BaseException) -> str:
    """What the user reads in the error box: our errors say what/where/fix already."""
    if isinstance(err, NbmlopsError):
        return str(err)
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:500]}" if text else type(err).__name__


class Worker:
    """One background thread per panel: reading the store and drawing never block the kernel,
    and jobs run in the order they were asked for. A job's exception goes to ``on_error``
    (the panel's error box), never to the kernel log."""

    def __init__(self, on_error: Callable[[BaseException], None]):
        self._on_error = on_error
        self._pool: ThreadPoolExecutor | None = None
        self._pending: set[Future] = set()
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], Any]) -> Future:
        def job() -> Any:
            try:
                return fn()
            except Exception as err:
                log.debug("panel job failed", exc_info=True)
                self._on_error(err)
                return None

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nbmlops-panel")
            future = self._pool.submit(job)
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future) -> None:
        with self._lock:
            self._pending.discard(future)

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def wait(self, timeout: float = 60.0) -> bool:
        """Until every job submitted so far (and any they submit) has finished."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                return True
            for future in pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                try:
                    future.result(timeout=left)
                except Exception:
                    pass

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:  # outside the lock: cancelling a job calls _done, which takes it
            pool.shutdown(wait=False, cancel_futures=True)


def batch_kernel() -> bool:
    """True in papermill/nbclient and plain IPython (no front end sends a cellId): there the
    static HTML is all a reader will see, so it must hold the loaded data."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None) if ipython else None
    shell = get() if get else None
    parent = getattr(shell, "parent_header", None) if shell is not None else None
    if not isinstance(parent, dict):
        return True
    return not (parent.get("metadata") or {}).get("cellId")


def style_widget() -> widgets.HTML:
    """The panels' stylesheet (theme fixes for tab labels and charts), as a hidden widget."""
    from nbmlops.widgets.charts import CHART_CSS
    from nbmlops.widgets.html import PANEL_CSS

    return widgets.HTML(PANEL_CSS + CHART_CSS, layout=widgets.Layout(display="none"))


def current_notebook() -> str | None:
    """The notebook this kernel runs, when the front end said (JupyterLab, VS Code)."""
    from nbmlops.api.tracking import notebook_from_environment

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return notebook_from_environment(getattr(shell, "user_ns", None))


def same_notebook(source: object, notebook: str | None) -> bool:
    """Whether a run's ``mlflow.source.name`` is ``notebook`` (paths may be relative or
    absolute: compared resolved, then by file name when one side is relative)."""
    if not notebook or not isinstance(source, str) or not source:
        return False
    from pathlib import Path

    a, b = Path(source), Path(notebook)
    if a.is_absolute() and b.is_absolute():
        return a.resolve() == b.resolve()
    return a.name == b.name


class PanelMixin:
    """Error box, waiting for background work, and the text/html fallback in the display data.

    Subclasses set ``self.error_box`` (an HTML widget) and ``self.worker``, and implement
    ``summary_html()``; ``_loaded`` is set once the first load has finished or failed."""

    error_box: widgets.HTML
    worker: Worker
    _loaded: threading.Event
    error: str
    _quiet: threading.local
    _lock: threading.Lock
    _generation: dict[str, int]
    _closed: bool

    @contextmanager
    def _quietly(self) -> Iterator[None]:
        """Trait and widget changes made by the panel itself do not trigger its observers."""
        before = getattr(self._quiet, "on", False)
        self._quiet.on = True
        try:
            yield
        finally:
            self._quiet.on = before

    @property
    def _is_quiet(self) -> bool:
        return getattr(self._quiet, "on", False)

    def _set(self, name: str, value: Any) -> None:
        if not self._is_quiet:
            self._guard(setattr, self, name, value)

    def _guard(self, fn: Any, *args: Any) -> Any:
        """Run a UI callback; a failure goes to the error box, never to the kernel log."""
        try:
            return fn(*args)
        except Exception as err:
            log.debug("panel callback failed", exc_info=True)
            self.show_error(err)
            return None

    def _bump(self, what: str) -> int:
        with self._lock:
            self._generation[what] = self._generation.get(what, 0) + 1
            return self._generation[what]

    def _stale(self, what: str, generation: int) -> bool:
        return self._closed or self._generation.get(what) != generation

    def show_error(self, err: BaseException | str | None) -> None:
        from nbmlops.widgets.html import error_html

        text = (err if isinstance(err, str) else message(err)) if err else ""
        self.error = text
        self.error_box.value = error_html(text) if text else ""
        self.error_box.layout.display = "block" if text else "none"

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait for background work (loading, drawing, refreshing) to finish; for tests and
        scripts. Returns False on timeout."""
        return self.worker.wait(timeout)

    def settle(self, interactive_seconds: float = 1.0, batch_seconds: float = 120.0) -> bool:
        """Wait for the first load: briefly in a live notebook (the widget shows progress),
        fully in batch kernels, where the static HTML is what gets saved."""
        return self._loaded.wait(batch_seconds if batch_kernel() else interactive_seconds)

    def summary_html(self) -> str:  # pragma: no cover - each panel implements it
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = super()._repr_mimebundle_(**kwargs) or {}  # type: ignore[misc]
        try:
            self.settle()
            data["text/html"] = self.summary_html()
        except Exception as err:  # the fallback must never break the display of the widget
            log.debug("static summary failed", exc_info=True)
            from nbmlops.widgets.html import error_html

            data["text/html"] = error_html(message(err))
        return data
