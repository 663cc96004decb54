"""The step scheduler: one event loop over an executor's outcomes, shared by pipeline runs,
sweeps and reproductions.

The scheduler owns the executor, the steps running now and the kernels started ahead of need
(at most ``2 * jobs`` kernels up at once). What to run next is the caller's (a
:class:`Workload`): which steps are ready, which kernels are worth warming, what a finished
step means. All decisions are taken on the calling thread; executors only report outcomes on
the scheduler's queue.
"""

from __future__ import annotations

import enum
import os
import queue
from collections.abc import Callable, Iterator
from typing import Literal, Protocol

from nbmlops.core.pipeline.execute import StepOutcome, StepTask
from nbmlops.exceptions import PipelineError


class StepStatus(enum.StrEnum):
    """A step's state in a report (a ``str``, so reports and tags show the plain word)."""

    PENDING = "pending"
    RUNNING = "running"
    RAN = "ran"
    CACHED = "cached"
    FAILED = "failed"
    SKIPPED = "skipped"
    WOULD_RUN = "would run"  # dry runs
    WOULD_SKIP = "would skip"

    @property
    def unsettled(self) -> bool:
        return self in (StepStatus.PENDING, StepStatus.RUNNING)

    @property
    def unsuccessful(self) -> bool:
        return self in (StepStatus.FAILED, StepStatus.SKIPPED)

    @property
    def timed(self) -> bool:
        """Whether a report shows the step's duration (it was handed to a kernel or failed)."""
        return self in (StepStatus.RAN, StepStatus.FAILED)


def check_jobs(jobs: int | None) -> int:
    """``jobs`` checked (a positive integer); None means the cores, at most 8."""
    if jobs is None:
        return max(1, min(os.cpu_count() or 1, 8))
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise PipelineError(f"jobs must be a positive integer, got {jobs!r}")
    return jobs


class Executor(Protocol):
    """Runs :class:`StepTask` s and puts ``("done", name, outcome)`` then
    ``("kernel_gone", name, None)`` on its queue for each."""

    kernels: int  # started and not yet shut down
    warms: bool  # whether kernels can be started ahead of need

    def warm(self, task: StepTask) -> None: ...
    def warmed(self, name: str) -> bool: ...
    def submit(self, task: StepTask) -> None: ...
    def cancel(self, name: str) -> None: ...
    def interrupt(self, name: str) -> bool: ...
    def kill_all(self) -> None: ...
    def kernel_pid(self, name: str) -> int | None: ...
    def close(self) -> None: ...


class Workload(Protocol):
    """What a scheduler runs: a pipeline's steps, a sweep's trials."""

    def start_ready(self) -> None:
        """Hand every step that can start now to :meth:`StepScheduler.submit`."""

    def warm_candidates(self) -> Iterator[StepTask]:
        """Tasks worth a kernel started now; the scheduler stops taking them at its budget."""

    def finished(self, name: str, outcome: StepOutcome) -> None:
        """A running step ended (its outcome says how)."""

    def unclaimed(self, name: str) -> None:
        """An outcome for a name not running (a warm kernel that never got a step)."""

    def idle(self) -> None:
        """No outcome arrived within the scheduler's ``poll_s``."""

    def aborted(self, running: list[str]) -> None:
        """The loop is being left by an exception; ``running`` steps' kernels were stopped."""


class StepScheduler:
    """Runs a :class:`Workload` to its end on an executor made on first need.

    ``stop`` is how running kernels are stopped when the loop is left by an exception: killed
    (a pipeline: the run is over) or interrupted like Jupyter's button (a sweep's trials)."""

    def __init__(
        self,
        make_executor: Callable[[queue.Queue], Executor],
        *,
        jobs: int,
        ship: Callable[[], None],
        poll_s: float | None = None,
        stop: Literal["kill", "interrupt"] = "kill",
    ):
        self.events: queue.Queue = queue.Queue()
        self.jobs = jobs
        self.kernel_budget = 2 * jobs  # running ones plus as many started ahead
        self.poll_s = poll_s
        self.stop = stop
        self._make_executor = make_executor
        self._ship = ship
        self.executor: Executor | None = None
        self.running: dict[str, None] = {}  # an ordered set

    def ensure_executor(self) -> Executor:
        if self.executor is None:
            self.executor = self._make_executor(self.events)
        return self.executor

    def submit(self, name: str, task: StepTask) -> None:
        """Run ``task`` (on its warm kernel when one was started for ``task.name``)."""
        executor = self.ensure_executor()
        self.running[name] = None
        executor.submit(task)

    def cancel(self, name: str) -> None:
        """The step will not run: stop the kernel warmed for it, if any."""
        if self.executor is not None:
            self.executor.cancel(name)

    def top_up(self, work: Workload) -> None:
        """Start kernels ahead of need, up to the budget."""
        executor = self.executor
        if executor is None or not executor.warms:
            return
        candidates = work.warm_candidates()
        while executor.kernels < self.kernel_budget:
            task = next(candidates, None)
            if task is None:
                return
            executor.warm(task)

    def run(self, work: Workload) -> None:
        """Start what is ready, then handle outcomes until nothing runs; always closes the
        executor. Any exception stops the running kernels, tells ``work``, and propagates."""
        try:
            self.top_up(work)
            work.start_ready()
            self.top_up(work)
            while self.running:
                try:
                    kind, name, outcome = self.events.get(timeout=self.poll_s)
                except queue.Empty:
                    work.idle()
                    continue
                if kind == "kernel_gone":
                    self._ship()  # its journal segment is complete: ship it now
                    self.top_up(work)
                    continue
                if name not in self.running:
                    work.unclaimed(name)
                    continue
                del self.running[name]
                work.finished(name, outcome)
                work.start_ready()
                self.top_up(work)
        except BaseException:
            # Interrupted (Ctrl-C) or a bug: stop the kernels, let the workload record it.
            if self.executor is not None:
                if self.stop == "kill":
                    self.executor.kill_all()
                else:
                    for name in self.running:
                        self.executor.interrupt(name)
            running = list(self.running)
            self.running.clear()
            work.aborted(running)
            raise
        finally:
            if self.executor is not None:
                self.executor.close()
