"""Shadow traffic: the same input scored by other model versions, logged, never returned.

A request hands its parsed body to a bounded queue (``put_nowait``) and answers at once; one
worker thread checks the body against each shadow model's own signature, predicts and logs a
row with route ``shadow``. A full queue drops the mirror (counted), never the request; a
shadow model that fails only produces a failed shadow row.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from nbmlops.core.serving.errors import InvalidInput
from nbmlops.core.serving.predlog import PredictionLog, wait_drained
from nbmlops.core.serving.router import Route

log = logging.getLogger("nbmlops.serving")
_WAKE = object()  # put on the queue by close() to wake the worker at once


class ShadowScorer:
    def __init__(
        self,
        shadows: Callable[[], tuple[Route, ...]],
        predlog: PredictionLog,
        queue_size: int = 1000,
    ):
        self._shadows = shadows
        self._predlog = predlog
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.counts = {"scored": 0, "failed": 0, "dropped": 0}

    def submit(self, request_id: str, payload: Any) -> None:
        """Mirror one request (never blocks; counted as dropped when the queue is full)."""
        try:
            self._queue.put_nowait((request_id, payload))
        except queue.Full:
            with self._lock:
                self.counts["dropped"] += 1

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="nbmlops-shadow", daemon=True)
            self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        return wait_drained(self._queue, timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._stop.set()
        try:
            self._queue.put_nowait(("", _WAKE))
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                request_id, payload = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if payload is _WAKE:
                self._queue.task_done()
                continue
            try:
                for route in self._shadows():
                    self._score(route, request_id, payload)
            except Exception:
                log.exception("shadow scorer")
            finally:
                self._queue.task_done()

    def _score(self, route: Route, request_id: str, payload: Any) -> None:
        model = route.model
        began = time.perf_counter()
        status, outputs, error, records = 200, None, None, None
        try:
            rows = model.validate(payload)
            records = rows.records
            outputs = model.predict(rows)
        except InvalidInput as err:
            status, error = err.status, err.message
        except Exception as err:
            status, error = 500, f"{type(err).__name__}: {err}"
        key = "scored" if status == 200 else "failed"
        with self._lock:
            self.counts[key] += 1
        self._predlog.record(
            request_id,
            route.kind,
            model.name,
            model.version,
            status,
            (time.perf_counter() - began) * 1000.0,
            inputs=records,
            outputs=outputs,
            error=error,
        )
