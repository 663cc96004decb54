"""The live process's shipper thread: cells hand it journal records and never wait for it; it
ships them with :class:`~nbmlops.core.tracking.shipper.RunShipper`, retries with backoff while
the store is down, and replays dead processes' segments when its own queue is empty."""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from nbmlops.config import Settings
from nbmlops.core.tracking import quiet, store
from nbmlops.core.tracking.journal import (
    Journal,
    RunRecords,
    ShipState,
    read_segment,
    read_ship_state,
)
from nbmlops.core.tracking.shipper import (
    PARENT_KEY_TAG,
    ReplayReport,
    RunShipper,
    ShipStats,
    replay_orphans,
    transient,
)

log = logging.getLogger("nbmlops.shipper")

_STOP = object()
_REPLAY = object()
_TAIL = object()
_WARM = object()
_BACKLOG = object()
_MAX_STUCK_ATTEMPTS = 5


def _store_error(settings: Settings, err: BaseException, attempt: int) -> str:
    """One line naming the store and the cause (SQLAlchemy errors carry pages of SQL)."""
    text = str(err).strip()
    cause = text.splitlines()[0] if text else type(err).__name__
    for known in ("database is locked", "Connection refused", "unreachable", "disk I/O error"):
        if known in text:
            cause = known
            break
    return (
        f"cannot write to the MLflow store {settings.resolved_tracking_uri}: "
        f"{type(err).__name__}: {cause[:300]} (attempt {attempt}; retrying, "
        "the run is safe in the journal)"
    )


def _quiet_libraries(settings: Settings) -> None:
    """Output of this thread lands in whatever cell runs now: MLflow is imported without
    touching the user's warning filters, and what it logs goes to nbmlops.log."""
    for name in ("mlflow.store.db.utils", "alembic", "mlflow.models.model", "mlflow.store.db"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        quiet.import_mlflow(settings.home_dir)
    except Exception as err:  # shipping reports a missing or broken MLflow itself
        log.debug("nbmlops: MLflow not imported ahead: %s", err)


class BackgroundShipper:
    """The live process's shipper thread. Cells hand it records; it never blocks them."""

    def __init__(
        self, settings: Settings, journal: Journal, segment_path: Path, staging_root: Path
    ):
        self.settings = settings
        self.journal = journal
        self.segment_path = segment_path
        self.staging_root = staging_root
        self.stats = ShipStats()
        self.shipper = RunShipper(settings, self.stats)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._runs: dict[str, RunRecords] = {}
        self._state = ShipState()
        self._stopping = threading.Event()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._tail_queued = threading.Event()
        self._tail_seen: dict[Path, tuple[int, int]] = {}  # segment -> (size, mtime) last read
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._pending = 0
        self.replay_report: ReplayReport | None = None
        self.run_ids: dict[str, str] = {}
        self.listeners: list[Any] = []  # called as fn(key, run_id, experiment_id) once shipped

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="nbmlops-shipper", daemon=True)
            self._thread.start()

    def submit(self, record: dict[str, Any]) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(record)

    @property
    def pending(self) -> int:
        return self._pending

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted is in MLflow; False on timeout (it stays journaled)."""
        self.resume()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def request_replay(self) -> None:
        """Ship the segments of processes that ended (e.g. deferred kernels), in this thread."""
        with self._idle:
            self._pending += 1
        self._queue.put(_REPLAY)

    def request_tail(self, parents: set[str]) -> None:
        """Ship the runs already ended in live segments whose runs name one of ``parents``
        (the keys of runs this process journaled, e.g. ``nbmlops run``'s notebook run), while
        their kernel still runs (``ship: defer``): the command's wait at the end is shorter.
        Best effort: the replay after the kernel ended ships what is left."""
        if not self._tail_queued.is_set():  # one at a time: a busy thread gets no backlog
            self._tail_queued.set()
            self._queue.put((_TAIL, frozenset(parents)))

    def ship_backlog(self) -> None:
        """Ship the ended runs of this process's own segment that were journaled without being
        handed to this thread (a batch kernel deferring to the detached shipper until it is
        asked for its runs); :meth:`flush` waits for them too."""
        with self._idle:
            self._pending += 1
        self._queue.put(_BACKLOG)

    def warm_model_libraries(self) -> None:
        """Import what shipping a model needs (MLflow's sklearn flavor and skops, several
        seconds) in this thread now, while a batch command's kernel starts on the other core,
        instead of after the first model's cell ended. Not for a notebook's own kernel: there
        the import would hold the GIL while the user's cells run."""
        self._queue.put(_WARM)

    def stop(self, timeout: float) -> bool:
        self.resume()
        flushed = self.flush(timeout)
        self._stopping.set()
        self._queue.put(_STOP)
        return flushed

    def pause(self) -> None:
        """Hold shipping (records keep being journaled), e.g. while a pipeline's kernels need
        every core; :meth:`resume` ships everything held. Stopping resumes."""
        self._unpaused.clear()

    def resume(self) -> None:
        self._unpaused.set()

    def _loop(self) -> None:
        self._unpaused.wait()
        _quiet_libraries(self.settings)
        # Other processes' segments are replayed only when this process's own queue is empty:
        # a kernel's tracked cell names its parent (a notebook or pipeline run this process
        # journaled), which must reach MLflow first for the child to be linked to it.
        replay_wanted = True
        held = 0  # _REPLAY requests counted in _pending until a replay has run
        while True:
            if replay_wanted and self._queue.empty():
                self._replay()
                replay_wanted = False
                if held:
                    with self._idle:
                        self._pending -= held
                        self._idle.notify_all()
                    held = 0
                continue
            item = self._queue.get()
            if item is _STOP:
                return
            self._unpaused.wait()
            if item is _WARM:
                self._warm()
                continue
            if item is _BACKLOG:
                self._ship_segment(self.segment_path, self.staging_root, None)
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
                continue
            if item is _REPLAY:
                replay_wanted = True
                held += 1
                continue
            if isinstance(item, tuple) and item[0] is _TAIL:
                self._tail_queued.clear()
                if self._queue.empty():  # own records first: the parents must be in MLflow
                    self._tail(item[1])
                continue
            self._process_with_retry(item)
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    @staticmethod
    def _warm() -> None:
        try:
            with quiet.kept_filters():
                import mlflow.sklearn  # noqa: F401
                import skops.io  # noqa: F401
        except Exception as err:  # shipping a model reports a missing library itself
            log.debug("nbmlops: model libraries not imported ahead: %s", err)

    def _replay(self) -> None:
        try:
            self.replay_report = replay_orphans(
                self.shipper, self.journal, exclude=self.segment_path
            )
        except Exception as err:  # never let replay kill the live shipper
            self.stats.last_error = f"replay: {type(err).__name__}: {err}"
            log.warning("nbmlops: replay of unshipped runs failed: %s", err)

    def _tail(self, parents: frozenset[str]) -> None:
        """See :meth:`request_tail`. Only this process writes the ship state (the ``.shipped``
        sidecar) of a deferred kernel's segment while it lives; the replay after its exit
        reads that state and skips what was shipped here."""
        for path in self.journal.segments():
            if path == self.segment_path or self._stopping.is_set():
                continue
            seen = path.stat()
            if self._tail_seen.get(path) == (seen.st_size, seen.st_mtime_ns):
                continue  # nothing appended since the last look: no need to parse it again
            if self._ship_segment(path, path.parent / "staging" / path.stem, parents):
                self._tail_seen[path] = (seen.st_size, seen.st_mtime_ns)

    def _ship_segment(self, path: Path, staging: Path, parents: frozenset[str] | None) -> bool:
        """Ship the ended, unshipped runs of a segment whose writer still lives (those naming
        one of ``parents``, or all); False when the store refused (the replay after the
        writer ends ships them)."""
        try:
            contents = read_segment(path)
            state = read_ship_state(path)
            for key, run in contents.runs.items():
                tags = (run.start or {}).get("tags") or {}
                if run.end is None or key in state.finished:
                    continue
                if parents is not None and tags.get(PARENT_KEY_TAG) not in parents:
                    continue
                self.shipper.ship_end(path, staging, run, state, careful=True)
        except Exception as err:
            self.stats.last_error = f"{path.name}: {type(err).__name__}: {err}"
            log.info("nbmlops: shipping a running kernel's runs failed: %s", err)
            return False
        return True

    def _process_with_retry(self, record: dict[str, Any]) -> None:
        delay = 0.2
        attempt = 0
        while True:
            try:
                if record.get("t") != "metric" and not store.reachable(
                    self.settings.resolved_tracking_uri
                ):
                    raise ConnectionError(
                        f"tracking server {self.settings.resolved_tracking_uri} unreachable"
                    )
                self._process(record, careful=attempt > 0)
                return
            except Exception as err:
                attempt += 1
                self.stats.retries += 1
                self.stats.last_error = _store_error(self.settings, err, attempt)
                if attempt == 1:
                    log.warning("nbmlops: %s", self.stats.last_error)
                if not transient(err) and attempt >= _MAX_STUCK_ATTEMPTS:
                    # Something about this record fails every time: stop blocking the runs
                    # behind it. It stays in the journal; the next replay tries it again.
                    self.stats.stuck_records += 1
                    log.error("nbmlops: giving up on a journal record for now: %s", err)
                    return
                if self._stopping.is_set():
                    return  # stays in the journal; the next start replays it
                self._stopping.wait(delay)
                if self._stopping.is_set():
                    return
                delay = min(delay * 2, self.settings.retry_max_seconds)

    def _process(self, record: dict[str, Any], careful: bool) -> None:
        key = record["key"]
        kind = record.get("t")
        run = self._runs.setdefault(key, RunRecords(key))
        if kind == "start":
            run.start = record
            self.run_ids[key] = self.shipper.ship_start(
                self.segment_path, run, self._state, careful
            )
        elif kind == "metric":
            run.metrics.append(record)
        elif kind == "end":
            run.end = record
            run_id = self.shipper.ship_end(
                self.segment_path, self.staging_root, run, self._state, careful
            )
            self.run_ids[key] = run_id
            self._runs.pop(key, None)
            exp_id = self.shipper._experiments.get(record.get("experiment") or "")
            for fn in list(self.listeners):
                try:
                    fn(key, run_id, exp_id)
                except Exception:
                    log.debug("nbmlops: shipped-listener failed", exc_info=True)
