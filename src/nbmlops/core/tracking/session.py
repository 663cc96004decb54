"""The one place that holds "the active tracked run" for this process.

A ``Tracker`` owns the process's journal segment and shipper thread. ``begin`` and ``end``
bracket a tracked block (a ``%%track`` cell or a ``with nbmlops.track()`` block); ``end`` is
always called (the adapters call it in ``finally``), so no run is ever left active.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.config import Settings, load_settings
from nbmlops.core.process import pid_alive
from nbmlops.core.tracking.analysis import CellAnalysis, analyze_cell
from nbmlops.core.tracking.background import BackgroundShipper
from nbmlops.core.tracking.capture import (
    Capture,
    CaptureOptions,
    Snapshot,
    as_metric,
    capture_after,
    figure_shown,
    param_text,
    snapshot_before,
)
from nbmlops.core.tracking.context import CellOrigin, git_state, imported_top_level_modules
from nbmlops.core.tracking.diskfull import JournalTrouble, JournalWriter
from nbmlops.core.tracking.handoff import (
    ship_after_exit,
    stop_at_exit,
    tell_at_exit,
    wait_for_store,
)
from nbmlops.core.tracking.journal import Journal, Segment, now_ms
from nbmlops.core.tracking.redact import redactor_for
from nbmlops.core.tracking.shipper import PARENT_KEY_TAG
from nbmlops.exceptions import NoActiveRunError, UsageError

# A notebook run by ``nbmlops run`` or a pipeline learns its parent run's key from this
# variable; the shipper turns the tag into MLflow's ``mlflow.parentRunId``.
PARENT_KEY_ENV = "NBMLOPS_PARENT_RUN_KEY"
METRIC_NAME = re.compile(r"^[A-Za-z0-9_\-. /]{1,250}$")


@dataclass
class TrackedRun:
    key: str
    name: str
    experiment: str
    origin: CellOrigin
    source: str
    analysis: CellAnalysis
    snapshot: Snapshot
    options: CaptureOptions
    dry_run: bool
    started: float  # time.time()
    staging: Path | None
    git: Future | None = None
    logged_metrics: list[dict[str, Any]] = field(default_factory=list)
    logged_params: dict[str, str] = field(default_factory=dict)


@dataclass
class RunSummary:
    """What a finished tracked block captured; adapters render it."""

    key: str
    name: str
    experiment: str
    status: str
    duration_s: float
    dry_run: bool
    capture: Capture
    logged_metric_count: int
    tracking_uri: str
    error: str | None = None
    run_id: str | None = None
    experiment_id: str | None = None
    ui_url: str | None = None
    shipped: bool = False
    journaled: bool = True  # False: the run's end waits for room in the journal
    journal_note: str | None = None  # records the journal could not take (a full disk)
    ship_note: str | None = None  # why the run is not in MLflow yet, and what happens next

    @property
    def run_url(self) -> str | None:
        if self.ui_url and self.run_id and self.experiment_id:
            return (
                f"{self.ui_url.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
            )
        return None


class Tracker:
    """Per-process tracking state: the journal segment, the shipper, the active run."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.enabled = True
        self.active: TrackedRun | None = None
        self.journal = Journal(settings.journal_dir)
        self._segment: Segment | None = None
        self._shipper: BackgroundShipper | None = None
        self._lock = threading.RLock()
        self._pool: ThreadPoolExecutor | None = None
        self._listeners: list[Callable[[RunSummary], None]] = []
        self._summaries: dict[str, RunSummary] = {}
        self._closed = False
        self.user = settings.resolved_user
        self.writer = JournalWriter(self.journal.root, lambda: self.segment, self._submit)
        self.wait_given_up: str | None = None  # why an earlier cell's wait for MLflow timed out
        # A batch kernel (``ship: auto``) only journals; a detached shipper ships its runs
        # once it has exited, and this says so in each cell's summary.
        self.batch_note: str | None = None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self, batch: bool = False) -> None:
        """Open the journal segment and start shipping (and replaying what dead processes left).

        ``batch`` (a papermill/nbclient kernel): with ``ship: auto`` the process only journals,
        so no cell pays for importing MLflow or writing to its store, and a detached shipper,
        started now, ships the segment as soon as this process has exited."""
        with self._lock:
            if self._segment is not None:
                return
            self._segment = self.journal.open_segment()
            self._shipper = BackgroundShipper(
                self.settings, self.journal, self._segment.path, self._segment.staging_dir
            )
            self._shipper.listeners.append(self._on_shipped)
            if batch and self.settings.ship == "auto" and self.settings.handoff_seconds:
                self.batch_note = ship_after_exit(self.settings, self._segment.path)
            if not self.deferred:
                self._shipper.start()
            atexit.register(self.close)

    @property
    def deferred(self) -> bool:
        """``ship: defer``: this process only journals; whoever runs it (``nbmlops run``, a
        pipeline, ``nbmlops sync``) ships its segment once it has ended. A batch kernel
        started with ``batch`` hands its segment to a detached shipper the same way."""
        return self.settings.ship == "defer" or self.batch_note is not None

    @property
    def trouble(self) -> JournalTrouble | None:
        """What the journal could not take (a full disk), if anything."""
        return self.writer.trouble

    @property
    def held_records(self) -> int:
        """Run starts and ends waiting for room in the journal."""
        return len(self.writer.held)

    @property
    def shipper(self) -> BackgroundShipper:
        self.start()
        assert self._shipper is not None
        return self._shipper

    @property
    def segment(self) -> Segment:
        self.start()
        assert self._segment is not None
        return self._segment

    def flush(self, timeout: float | None = None) -> bool:
        if self._shipper is None:
            return True
        return self._shipper.flush(timeout)

    def ship_now(self, timeout: float | None = None) -> bool:
        """Put this process's runs in MLflow now and wait up to ``timeout`` seconds. A batch
        kernel that only journaled (its runs left to the detached shipper) is asked for them
        (``%track sync``, a panel about to read them): it ships what it journaled so far, and
        later runs as they end; the detached shipper skips what is already shipped."""
        with self._lock:
            if self.settings.ship == "defer":
                return False  # the command running this process ships its runs
            if self.batch_note is not None and self._shipper is not None:
                self.batch_note = None
                self._shipper.start()
                self._shipper.ship_backlog()
        return self.flush(timeout)

    def close(self) -> None:
        """Give the shipper a bounded time to finish; whatever is left stays journaled."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._segment is not None and not self.writer.write_held():
                assert self.trouble is not None
                tell_at_exit(
                    f"nbmlops: {self.held_records} run start/end record(s) could not be written "
                    f"before exit: {self.trouble.where()}. The next start closes runs whose end "
                    "is missing as FAILED (killed)."
                )
            if self._shipper is not None:
                stop_at_exit(self.settings, self._shipper, self._segment, self.wait_given_up)
            if self._segment is not None:
                try:
                    self._segment.sync()
                except OSError:
                    pass
                self._segment.close()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            atexit.unregister(self.close)
        except Exception:
            pass

    def add_listener(self, fn: Callable[[RunSummary], None]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[RunSummary], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _on_shipped(self, key: str, run_id: str, experiment_id: str | None) -> None:
        summary = self._summaries.pop(key, None)
        if summary is None:
            return
        summary.run_id = run_id
        summary.experiment_id = experiment_id
        summary.shipped = True
        for fn in list(self._listeners):
            try:
                fn(summary)
            except Exception:
                pass

    # --- a tracked block --------------------------------------------------------------------
    def begin(
        self,
        source: str,
        namespace: dict[str, Any],
        *,
        origin: CellOrigin,
        name: str | None = None,
        experiment: str | None = None,
        options: CaptureOptions | None = None,
        dry_run: bool = False,
        analyze: bool = True,
        batch: bool = False,
    ) -> TrackedRun:
        """Start a tracked block; ``batch`` as in :meth:`start` (when this starts the tracker)."""
        if self.active is not None:
            raise UsageError(
                f"A tracked block is already running ({self.active.name!r})",
                fix="Tracked blocks cannot be nested: end the outer one first.",
            )
        if not dry_run:
            self.start(batch=batch)
        options = options or CaptureOptions()
        options.ignore |= set(self.settings.ignore)
        options.models = options.models and self.settings.capture_models
        options.data = options.data and self.settings.capture_data
        options.figures = options.figures and self.settings.capture_figures
        try:
            analysis = analyze_cell(source) if analyze else CellAnalysis()
        except SyntaxError:
            analysis = CellAnalysis()  # the cell will fail with the same error when it runs
        snapshot = snapshot_before(analysis, namespace, options)
        key = uuid.uuid4().hex
        if name is None:
            name = f"cell-{origin.execution_count}" if origin.execution_count else "run"
        experiment = experiment or self.settings.experiment or origin.experiment_default
        staging = None if dry_run else self.segment.staging_dir / key
        run = TrackedRun(
            key=key,
            name=name,
            experiment=experiment,
            origin=origin,
            source=redactor_for(self.settings).code(source),  # the note and code/cell.py
            analysis=analysis,
            snapshot=snapshot,
            options=options,
            dry_run=dry_run,
            started=time.time(),
            staging=staging,
        )
        if not dry_run:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nbmlops-git")
            run.git = self._pool.submit(git_state, self.settings.project_dir)
            written = self._write(
                {
                    "datasets": [d.to_dict() for d in snapshot.data_inputs.values()],
                    "t": "start",
                    "key": key,
                    "ts": int(run.started * 1000),
                    "name": name,
                    "experiment": experiment,
                    "tags": self._start_tags(run),
                },
                essential=True,
            )
            if not written:
                self._warn(run, "its start is held until there is room")
        self.active = run
        return run

    def _start_tags(self, run: TrackedRun) -> dict[str, str]:
        o = run.origin
        tags = {
            "mlflow.user": self.user,
            "mlflow.source.type": o.source_type,
            "mlflow.note.content": f"```python\n{run.source.strip()}\n```",
            "nbmlops.pid": str(os.getpid()),
        }
        parent = os.environ.get(PARENT_KEY_ENV)
        if parent:
            tags[PARENT_KEY_TAG] = parent
        if o.source_name:
            tags["mlflow.source.name"] = o.source_name
        if o.cell_id:
            tags["nbmlops.cell.id"] = o.cell_id
        if o.cell_index is not None:
            tags["nbmlops.cell.index"] = str(o.cell_index)
        if o.execution_count is not None:
            tags["nbmlops.cell.execution_count"] = str(o.execution_count)
        return tags

    def _write(self, record: dict[str, Any], essential: bool = False) -> bool:
        """Journal a record (then ship it); never raises for a full disk, see JournalWriter."""
        record = redactor_for(self.settings).record(record)  # no secret reaches the journal
        written = self.writer.write(record, essential)
        run = self.active
        if not written and run is not None and self.writer.lost(run.key) == 1 and not essential:
            self._warn(run, "what it logs from now on is lost")
        return written

    def _submit(self, record: dict[str, Any]) -> None:
        if not self.deferred:
            self.shipper.submit(record)

    def _warn(self, run: TrackedRun, what: str) -> None:
        assert self.trouble is not None
        print(
            f"nbmlops: {self.trouble.where()}. Run {run.name!r} goes on, but {what}: free "
            "space there, or set `home:` in nbmlops.yaml to a folder on another disk.",
            file=sys.stderr,
        )

    # --- runs written by an orchestrator (notebook and pipeline runs) -------------------------
    def open_run(
        self,
        name: str,
        experiment: str,
        tags: dict[str, str],
        *,
        key: str | None = None,
        datasets: list[dict[str, Any]] | None = None,
        reopen: bool = False,
    ) -> str:
        """Journal the start of a run that is not a tracked block (a notebook or pipeline run);
        returns its key. ``reopen`` continues the earlier run with this key (``--resume``)."""
        key = key or uuid.uuid4().hex
        tags = {"mlflow.user": self.user, "nbmlops.pid": str(os.getpid()), **tags}
        record: dict[str, Any] = {
            "t": "start",
            "key": key,
            "ts": now_ms(),
            "name": name,
            "experiment": experiment,
            "tags": tags,
            "datasets": datasets or [],
        }
        if reopen:
            record["reopen"] = True
        self._write(record, essential=True)
        return key

    def run_staging(self, key: str) -> Path:
        """Folder whose ``artifacts/`` files ship with the run ``key``."""
        return self.segment.staging_dir / key

    def close_run(
        self,
        key: str,
        experiment: str,
        status: str,
        *,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        datasets: list[dict[str, Any]] | None = None,
    ) -> None:
        """Journal the end of a run opened with :meth:`open_run` (files staged under
        :meth:`run_staging` ship with it)."""
        ts = now_ms()
        self._write(
            {
                "t": "end",
                "key": key,
                "ts": ts,
                "status": status,
                "experiment": experiment,
                "params": {k: param_text(v) for k, v in (params or {}).items()},
                "metrics": [
                    {"name": k, "value": float(v), "step": 0, "ts": ts}
                    for k, v in (metrics or {}).items()
                ],
                "tags": dict(tags or {}),
                "datasets": datasets or [],
                "models": [],
                "figures": [],
            },
            essential=True,
        )
        try:
            self.segment.sync()
        except OSError:
            pass

    def ship_ended_processes(self) -> None:
        """Ship the journal segments of processes that have ended (kernels run with
        ``ship: defer``) from this process's shipper thread."""
        if not self.deferred:
            self.shipper.request_replay()

    def log_metric(self, name: str, value: Any, step: int | None = None) -> None:
        run = self._require_active("log_metric")
        if not isinstance(name, str) or not METRIC_NAME.match(name):
            raise UsageError(
                f"Invalid metric name {name!r}",
                fix="Use letters, digits, '_', '-', '.', ' ' and '/' (at most 250 characters).",
            )
        number = as_metric(value)
        if number is None:
            raise UsageError(
                f"Metric {name!r} must be a real number, got {type(value).__name__} {value!r}",
                fix="Pass an int or float (a bool or string is a param: use log_param).",
            )
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            np_int = getattr(step, "__index__", None)
            if np_int is None or isinstance(step, bool):
                raise UsageError(f"Step for {name!r} must be an int, got {step!r}")
            step = int(step)
        record = {
            "t": "metric",
            "key": run.key,
            "name": name,
            "value": number,
            "step": int(step or 0),
            "ts": now_ms(),
        }
        run.logged_metrics.append(record)
        if not run.dry_run:
            self._write(record)

    def log_param(self, name: str, value: Any) -> None:
        run = self._require_active("log_param")
        if not isinstance(name, str) or not METRIC_NAME.match(name):
            raise UsageError(
                f"Invalid param name {name!r}",
                fix="Use letters, digits, '_', '-', '.', ' ' and '/'.",
            )
        run.logged_params[name] = param_text(value)

    def stage_artifact(self, rel: str, content: str | bytes) -> None:
        """Add an artifact file to the active run (shipped with it)."""
        run = self._require_active("stage_artifact")
        if run.staging is None:  # dry run
            return
        path = (run.staging / "artifacts" / rel).resolve()
        if not path.is_relative_to((run.staging / "artifacts").resolve()):
            raise UsageError(f"Artifact path {rel!r} leaves the run's artifact folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    def figure_shown(self, fig: Any) -> None:
        """The running block shows ``fig``: save it now (a no-op outside a tracked block)."""
        run = self.active
        if run is None or not run.options.figures:
            return
        try:
            figure_shown(fig, run.snapshot, run.staging)
        except Exception as err:  # showing a figure must never fail because of us
            run.snapshot.notes.append(f"a shown figure was not saved: {err}")

    def _require_active(self, what: str) -> TrackedRun:
        if self.active is None:
            raise NoActiveRunError(
                f"nbmlops.{what} was called outside a tracked block",
                fix="Call it inside a %%track cell or a `with nbmlops.track(...):` block.",
            )
        return self.active

    def end(
        self,
        run: TrackedRun,
        namespace: dict[str, Any],
        error: BaseException | None,
        wait: bool = False,
    ) -> RunSummary:
        """Capture what the block produced, journal it, hand it to the shipper. Never raises
        for capture problems: they become notes on the summary. ``wait`` returns only once
        the run is in MLflow (or ``ship_wait_seconds`` passed: then it stays journaled)."""
        try:
            ended = time.time()
            try:
                cap = capture_after(run.analysis, run.snapshot, namespace, run.options, run.staging)
            except Exception as err:  # a capture bug must not hide the user's own result
                cap = Capture(notes=[f"capture failed: {type(err).__name__}: {err}"])
            cap.params.update(run.logged_params)
            redactor = redactor_for(self.settings).knowing(cap.params)
            redacted = redactor.capture_note(cap.params, run.source)
            cap.notes += [redacted] if redacted else []
            status, err_text = "FINISHED", None
            if isinstance(error, KeyboardInterrupt):
                status, err_text = "KILLED", "interrupted (KeyboardInterrupt)"
            elif error is not None:
                status = "FAILED"
                err_text = redactor.text(f"{type(error).__name__}: {error}")
            summary = RunSummary(
                key=run.key,
                name=run.name,
                experiment=run.experiment,
                status=status,
                duration_s=ended - run.started,
                dry_run=run.dry_run,
                capture=cap,
                logged_metric_count=len(run.logged_metrics),
                tracking_uri=self.settings.resolved_tracking_uri,
                error=err_text,
            )
            if run.dry_run:
                return summary
            tags = {"nbmlops.duration_s": f"{ended - run.started:.3f}"}
            if run.git is not None:
                try:
                    tags.update(run.git.result(timeout=5))
                except Exception:
                    pass
            if err_text:
                tags["nbmlops.error"] = err_text[:5000]
            self._stage_text(run, "code/cell.py", run.source, cap)
            if error is not None:
                tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
                self._stage_text(run, "traceback.txt", redactor.text(tb), cap)
            lost = self.trouble.lost.get(run.key, 0) if self.trouble else 0
            if lost:
                assert self.trouble is not None
                # A run missing some of its records is not a complete, FINISHED run.
                summary.status = status = "FAILED" if status == "FINISHED" else status
                tags["nbmlops.failure"] = self.trouble.cause
                tags["nbmlops.status_reason"] = self.trouble.reason(run.key)
                summary.journal_note = (
                    f"{lost} record(s) lost: {self.trouble.where()}; the run is FAILED "
                    "with this reason"
                )
            ts = int(ended * 1000)
            self._summaries[run.key] = summary
            summary.journaled = self._write(
                {
                    "t": "end",
                    "key": run.key,
                    "ts": ts,
                    "status": status,
                    "experiment": run.experiment,
                    "params": cap.params,
                    "metrics": [
                        {"name": k, "value": v, "step": 0, "ts": ts} for k, v in cap.metrics.items()
                    ],
                    "tags": tags,
                    "datasets": [d.to_dict() for d in cap.data],
                    "models": cap.models,
                    "figures": cap.figures,
                    "modules": imported_top_level_modules(),
                },
                essential=True,
            )
            if not summary.journaled:
                assert self.trouble is not None
                summary.journal_note = (
                    (summary.journal_note + ". " if summary.journal_note else "")
                    + f"The run's end is not in the journal yet ({self.trouble.where()}): it is "
                    "written once there is room; if this process ends first, the next start "
                    "closes the run as FAILED (killed)"
                )
            try:
                self.segment.sync()
            except OSError:
                pass
            if self.batch_note is not None and summary.journaled:
                summary.ship_note = self.batch_note
            elif wait and not self.deferred and summary.journaled:
                summary.ship_note, given_up = wait_for_store(
                    self.settings, self.shipper, self.wait_given_up
                )
                self.wait_given_up = self.wait_given_up or given_up
            summary.run_id = summary.run_id or self.shipper.run_ids.get(run.key)
            summary.ui_url = ui_url(self.settings)
            return summary
        finally:
            self.active = None

    def _stage_text(self, run: TrackedRun, rel: str, text: str, cap: Capture) -> None:
        assert run.staging is not None
        path = run.staging / "artifacts" / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as err:
            path.unlink(missing_ok=True)  # a half-written file must not ship
            self.writer.note(err)
            cap.notes.append(f"{rel} not saved: {err.strerror or err}")


def ui_url(settings: Settings) -> str | None:
    """URL of an ``nbmlops ui`` serving this store, if one is running."""
    import json

    info = settings.home_dir / "ui.json"
    try:
        data = json.loads(info.read_text())
        if not pid_alive(int(data["pid"])):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if data.get("tracking_uri") != settings.resolved_tracking_uri:
        return None
    return data.get("url")


_tracker: Tracker | None = None
_tracker_lock = threading.Lock()


def get_tracker(settings: Settings | None = None) -> Tracker:
    """This process's tracker, created on first use from nbmlops.yaml and NBMLOPS_* settings."""
    global _tracker
    with _tracker_lock:
        if _tracker is None:
            _tracker = Tracker(settings or load_settings())
        return _tracker


def current_tracker() -> Tracker | None:
    return _tracker


def reset_tracker() -> None:
    """Close this process's tracker (flushing within its limit); the next use makes a new one."""
    global _tracker
    with _tracker_lock:
        if _tracker is not None:
            _tracker.close()
        _tracker = None
