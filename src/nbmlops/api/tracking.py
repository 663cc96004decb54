"""Tracking from the front door: ``track`` blocks, ``log_metric``/``log_param`` inside them,
``sync``, and the process's tracker that ``%%track`` drives."""

from __future__ import annotations

import ast
import linecache
import sys
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Literal

from nbmlops.config import Settings, load_settings
from nbmlops.core.tracking.capture import CaptureOptions
from nbmlops.core.tracking.context import CellOrigin, locate_cell, notebook_from_environment
from nbmlops.core.tracking.journal import Journal
from nbmlops.core.tracking.report import summary_html, summary_text
from nbmlops.core.tracking.session import (
    RunSummary,
    TrackedRun,
    Tracker,
    current_tracker,
    get_tracker,
    reset_tracker,
    ui_url,
)
from nbmlops.core.tracking.shipper import ReplayReport, RunShipper, replay_orphans
from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "CaptureOptions",
    "CellOrigin",
    "RunSummary",
    "ShipResult",
    "TrackedRun",
    "Tracker",
    "current_tracker",
    "get_tracker",
    "locate_cell",
    "log_metric",
    "log_metrics",
    "log_param",
    "notebook_from_environment",
    "open_store",
    "pending_summary",
    "project_settings",
    "reset_tracker",
    "run_id_of",
    "settings",
    "ship_pending",
    "summary_html",
    "summary_text",
    "sync",
    "sync_journal",
    "track",
    "ui_url",
]


def settings() -> Settings:
    """The settings this process tracks with."""
    return get_tracker().settings


def project_settings() -> Settings:
    """The settings of this process's tracker when one is running, else the project's
    (nbmlops.yaml and NBMLOPS_* variables): reading data or lineage starts no tracker."""
    tracker = current_tracker()
    return tracker.settings if tracker is not None else load_settings()


def log_metric(name: str, value: float, step: int | None = None) -> None:
    """Log one metric value (``step`` makes a curve) to the active tracked block's run."""
    get_tracker().log_metric(name, value, step)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log several metrics at one step to the active tracked block's run."""
    if not isinstance(metrics, Mapping):
        raise UsageError(
            f"log_metrics takes a mapping of name to number, got {type(metrics).__name__}",
            fix="Call log_metrics({'loss': 0.1, 'acc': 0.9}, step=3).",
        )
    tracker = get_tracker()
    for name, value in metrics.items():
        tracker.log_metric(name, value, step)


def log_param(name: str, value: Any) -> None:
    """Record a param on the active tracked block's run (a secret-looking name or value is
    recorded as ``***redacted***``; see nbmlops.core.tracking.redact)."""
    get_tracker().log_param(name, value)


def sync(timeout: float | None = 60.0) -> ReplayReport:
    """Ship every run still in the journal (this process's and dead processes') to MLflow.

    Returns what was replayed. Runs of processes that are still alive are theirs to ship.
    """
    tracker = get_tracker()
    report = replay_orphans(
        RunShipper(tracker.settings),
        Journal(tracker.settings.journal_dir),
        exclude=tracker.segment.path if tracker._segment is not None else None,
    )
    if not tracker.flush(timeout):
        report.errors.append(
            f"{tracker.shipper.pending} record(s) of this process not shipped within {timeout}s "
            f"(last error: {tracker.shipper.stats.last_error}); they stay in the journal"
        )
    return report


def sync_journal(settings_: Settings | None = None, wait: float = 300) -> ReplayReport:
    """Replay dead processes' journal segments without starting a tracker (the CLI's sync).

    Segments another shipper is shipping right now (the detached one a process started at
    its exit) are waited for, up to ``wait`` seconds, and replayed again if still there: when
    sync returns, what ended processes recorded is in MLflow, not merely on its way."""
    import time

    s = settings_ or load_settings()
    journal = Journal(s.journal_dir)
    shipper = RunShipper(s)
    report = replay_orphans(shipper, journal)
    deadline = time.monotonic() + wait
    waited = False
    while journal.held_by_replayers() and time.monotonic() < deadline:
        waited = True
        time.sleep(0.2)
    if waited:
        again = replay_orphans(shipper, journal)
        for name in ("segments", "runs_finished", "runs_killed", "metrics", "torn_lines"):
            setattr(report, name, getattr(report, name) + getattr(again, name))
        report.quarantined += again.quarantined
        report.archived += again.archived
        report.errors += again.errors
        report.run_ids += again.run_ids
    return report


def pending_summary(settings_: Settings | None = None) -> dict[str, int]:
    """What the project's journal still holds that MLflow has not: counts by kind."""
    s = settings_ or project_settings()
    return Journal(s.journal_dir).pending_summary()


def open_store(settings_: Settings | None = None) -> MlflowClient:
    """A client on the project's tracking store, opened once (an embedded SQLite store's
    schema is created safely first, so a tool started next, such as ``mlflow ui``, finds it
    ready)."""
    from nbmlops.core.tracking.store import open_client

    return open_client(settings_ or project_settings())


@dataclass(frozen=True)
class ShipResult:
    """Where this process's runs are after :func:`ship_pending`."""

    shipped: bool  # every record reached MLflow within the wait
    run_ids: dict[str, str]  # run key -> MLflow run id, for the runs shipped so far
    last_error: str | None  # why the store could not take them, when it could not
    journal_dir: Path  # where the rest is kept until it ships


def ship_pending(timeout: float | None = None) -> ShipResult | None:
    """Ship what this process and its ended step kernels recorded, and wait up to ``timeout``
    seconds (default: ``ship_wait_seconds``) for MLflow to have it. None when this process
    has tracked nothing."""
    tracker = current_tracker()
    if tracker is None:
        return None
    tracker.ship_ended_processes()
    shipped = tracker.flush(tracker.settings.ship_wait_seconds if timeout is None else timeout)
    return ShipResult(
        shipped=shipped,
        run_ids=dict(tracker.shipper.shipper.key_ids),
        last_error=tracker.shipper.stats.last_error,
        journal_dir=tracker.settings.journal_dir,
    )


def runs_in_store_now(timeout: float = 60) -> bool:
    """Before a panel reads runs: what this kernel tracked is put in MLflow first (a batch
    kernel otherwise leaves its runs to the detached shipper, and the panel would not show
    them). True when nothing is left waiting; a no-op outside a batch kernel."""
    tracker = current_tracker()
    if tracker is None or tracker.batch_note is None:
        return True  # an interactive kernel ships as cells end; the panels follow the store
    return tracker.ship_now(timeout)


def run_id_of(run_key: str | None) -> str | None:
    """The MLflow run id of a run this process recorded under ``run_key``, once shipped."""
    tracker = current_tracker()
    if tracker is None or run_key is None or tracker.deferred:
        return None
    return tracker.shipper.run_ids.get(run_key)


class track:
    """Track a block of plain Python like a ``%%track`` cell::

        with nbmlops.track("train-logreg"):
            C = 0.5
            model = LogisticRegression(C=C).fit(X, y)
            acc = model.score(X, y)

    The block's source is read from its file to find params, metrics, models and data, as
    the cell magic does. An exception inside marks the run FAILED and propagates unchanged.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        experiment: str | None = None,
        params: Mapping[str, Any] | None = None,
        ignore: Iterable[str] = (),
        dry_run: bool = False,
    ):
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise UsageError(f"Run name must be a non-empty string, got {name!r}")
        self.name = name
        self.experiment = experiment
        self.options = CaptureOptions(
            params={str(k): v for k, v in (params or {}).items()}, ignore=set(ignore)
        )
        self.dry_run = dry_run
        self.run: TrackedRun | None = None
        self.summary: RunSummary | None = None
        self._frame: FrameType | None = None

    def __enter__(self) -> track:
        frame = sys._getframe(1)
        self._frame = frame
        source, found = _with_block_source(frame)
        origin = CellOrigin(
            source_name=str(Path(frame.f_code.co_filename).resolve())
            if Path(frame.f_code.co_filename).exists()
            else frame.f_code.co_filename,
            source_type="LOCAL",
        )
        tracker = get_tracker()
        self.run = tracker.begin(
            source,
            _namespace(frame),
            origin=origin,
            name=self.name,
            experiment=self.experiment,
            options=self.options,
            dry_run=self.dry_run,
            analyze=found,
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        assert self.run is not None and self._frame is not None
        self.summary = get_tracker().end(self.run, _namespace(self._frame), exc)
        self._frame = None
        return False


def _namespace(frame: FrameType) -> dict[str, Any]:
    if frame.f_code.co_name == "<module>":
        return frame.f_globals
    return {**frame.f_globals, **frame.f_locals}


def _with_block_source(frame: FrameType) -> tuple[str, bool]:
    """The source of the body of the ``with`` statement executing at ``frame``'s line."""
    filename = frame.f_code.co_filename
    lines = linecache.getlines(filename, frame.f_globals)
    if not lines:
        return "", False
    text = "".join(lines)
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return "", False
    lineno = frame.f_lineno
    best = None
    for node in ast.walk(tree):
        if (
            isinstance(node, (ast.With, ast.AsyncWith))
            and node.lineno
            <= lineno
            <= (node.body[0].lineno - 1 if node.body[0].lineno > node.lineno else node.lineno)
            and (best is None or node.lineno > best.lineno)
        ):
            best = node
    if best is None:
        return "", False
    first, last = best.body[0].lineno, best.body[-1].end_lineno or best.body[-1].lineno
    return textwrap.dedent("".join(lines[first - 1 : last])), True
