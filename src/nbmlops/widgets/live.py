"""Following changes made anywhere (the CLI, another kernel, the REST API): a daemon thread
polls a cheap fingerprint of what a panel shows, with back-off, and asks the panel to reload
when it changes.

Polling rather than watching files: the registry lives in MLflow's store, which may be a
database server as well as a local SQLite file, and a poll of a few small queries every few
seconds works for every store. The interval starts at ``fast`` seconds, grows by half after
each unchanged poll up to ``slow``, and drops back to ``fast`` on a change; a panel whose
views were all closed stops polling."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any

from nbmlops.api.tracking import RunSummary, Tracker, get_tracker
from nbmlops.widgets._common import log


class Poller:
    """Call ``changed()`` on its own thread whenever ``fingerprint()`` returns a new value."""

    def __init__(
        self,
        fingerprint: Callable[[], Hashable],
        changed: Callable[[], None],
        *,
        fast: float = 1.5,
        slow: float = 5.0,
        name: str = "nbmlops-poll",
    ):
        self.fingerprint = fingerprint
        self.changed = changed
        self.fast, self.slow = fast, slow
        self.interval = fast
        self.polls = 0
        self._last: Hashable | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self, baseline: bool = True) -> None:
        if baseline:
            try:
                self._last = self.fingerprint()
            except Exception:  # the first real poll reports it
                self._last = None
        self._thread.start()

    def poke(self) -> None:
        """Poll soon and fast again (after an action of the panel itself)."""
        self.interval = self.fast
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.polls += 1
            try:
                now = self.fingerprint()
            except Exception:  # a store hiccup: try again later, never raise on this thread
                log.debug("poll failed", exc_info=True)
                self.interval = min(self.slow, self.interval * 1.5)
                continue
            if now != self._last:
                self._last = now
                self.interval = self.fast
                try:
                    self.changed()
                except Exception:
                    log.debug("reload after a change failed", exc_info=True)
            else:
                self.interval = min(self.slow, self.interval * 1.5)


# Panels (with a ``_run_shipped(summary)`` method) refresh when a tracked run reaches MLflow.
# They listen through one function per tracker and weak references, so a closed or
# forgotten panel costs nothing and never keeps the tracker's listener list growing.
_panels: weakref.WeakSet[Any] = weakref.WeakSet()
_trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()
_listen_lock = threading.Lock()


def _on_run_shipped(summary: RunSummary) -> None:
    for panel in list(_panels):
        try:
            panel._run_shipped(summary)
        except Exception:  # a panel problem must never disturb the shipper
            log.debug("panel refresh failed", exc_info=True)


def listen_for_runs(panel: Any) -> None:
    tracker = get_tracker()
    with _listen_lock:
        _panels.add(panel)
        if tracker not in _trackers:
            tracker.add_listener(_on_run_shipped)
            _trackers.add(tracker)


def stop_listening(panel: Any) -> None:
    with _listen_lock:
        _panels.discard(panel)
