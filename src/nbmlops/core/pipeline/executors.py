"""Executors of the step scheduler: local threads with kernels started ahead of need, or a Dask
cluster. Both run :class:`StepTask` s and report on the scheduler's queue."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from typing import Any

from nbmlops.core.pipeline.execute import StepOutcome, StepTask, WarmKernel, execute_task
from nbmlops.exceptions import PipelineError


class LocalExecutor:
    """Steps on local kernels, at most ``jobs`` executing at once. ``warm`` starts a step's
    kernel before its inputs are ready; the step thread then waits for ``submit`` (or
    ``cancel``). Each kernel lives in its step's thread (its event loop) from start to shutdown;
    the outcome is published before shutdown, so shutting down overlaps the next steps."""

    warms = True

    def __init__(self, jobs: int, events: queue.Queue):
        self.jobs = jobs
        self.events = events
        self._run_slots = threading.Semaphore(jobs)
        self._lock = threading.Lock()
        self._go: dict[str, threading.Event] = {}
        self._tasks: dict[str, StepTask | None] = {}
        self.kernels = 0  # started and not yet shut down
        self._threads: list[threading.Thread] = []
        self._live: dict[str, WarmKernel] = {}  # step -> its running kernel

    def warm(self, task: StepTask) -> None:
        self._spawn(task, go=False)

    def warmed(self, name: str) -> bool:
        return name in self._go

    def submit(self, task: StepTask) -> None:
        with self._lock:
            if task.name in self._go:
                self._tasks[task.name] = task
                self._go[task.name].set()
                return
        self._spawn(task, go=True)

    def cancel(self, name: str) -> None:
        with self._lock:
            if name in self._go and self._tasks.get(name) is None:
                self._tasks[name] = None
                self._go[name].set()

    def _spawn(self, task: StepTask, go: bool) -> None:
        with self._lock:
            ev = threading.Event()
            self._go[task.name] = ev
            self._tasks[task.name] = task if go else None
            if go:
                ev.set()
            self.kernels += 1
        t = threading.Thread(
            target=self._body, args=(task,), name=f"nbmlops-step-{task.name}", daemon=True
        )
        self._threads.append(t)
        t.start()

    def _body(self, warm_task: StepTask) -> None:
        name = warm_task.name
        kernel: WarmKernel | None = None
        kernel_error: str | None = None
        ran = False
        try:
            try:
                kernel = WarmKernel(warm_task)
                self._live[name] = kernel
            except Exception as err:
                kernel_error = f"the kernel {warm_task.kernel_name!r} did not start: {err}"
            self._go[name].wait()
            task = self._tasks.get(name)
            if task is None:  # cancelled: the cache had it after all
                return
            ran = True
            if kernel_error:
                now = time.time()
                self.events.put(("done", name, StepOutcome(name, False, now, now, kernel_error)))
                return
            with self._run_slots:
                outcome, kernel = execute_task(task, kernel)
            self.events.put(("done", name, outcome))
        except BaseException as err:  # never leave the orchestrator waiting
            now = time.time()
            self.events.put(("done", name, StepOutcome(name, False, now, now, repr(err))))
        finally:
            if kernel is not None:
                kernel.shutdown(now=not ran)  # a kernel that ran nothing is simply stopped
            self._live.pop(name, None)
            with self._lock:
                self.kernels -= 1
            self.events.put(("kernel_gone", name, None))

    def kernel_pid(self, name: str) -> int | None:
        kernel = self._live.get(name)
        return kernel.pid if kernel else None

    def interrupt(self, name: str) -> bool:
        """Interrupt the cell the step's kernel is running (KeyboardInterrupt in the kernel)."""
        import signal

        kernel = self._live.get(name)
        return bool(kernel and kernel.signal(signal.SIGINT))

    def kill_all(self) -> None:
        """Stop every kernel now (the run was interrupted): their steps end as KILLED."""
        import signal

        for kernel in list(self._live.values()):
            kernel.signal(signal.SIGKILL)

    def close(self) -> None:
        for name in list(self._go):
            self.cancel(name)
        for t in self._threads:
            t.join(timeout=30)


class DaskExecutor:
    """Steps as tasks on a Dask distributed cluster. Workers must see the same files (the
    project folder on shared storage); each worker runs papermill with its own kernel."""

    warms = False  # workers start their own kernels

    def __init__(self, address: str, events: queue.Queue):
        try:
            from distributed import Client
        except ImportError as err:
            raise PipelineError(
                "--cluster needs dask.distributed, which is not installed",
                fix="pip install 'dask[distributed]'",
            ) from err
        self.events = events
        self.kernels = 0
        try:
            if address.startswith("tcp://"):  # fail in a moment, not after Client's timeout
                import socket

                host, _, port = address.removeprefix("tcp://").rpartition(":")
                socket.create_connection((host.strip("[]"), int(port)), timeout=3).close()
            self.client = Client(address, timeout=15, set_as_default=False)
        except Exception as err:
            raise PipelineError(
                f"Cannot connect to the Dask scheduler at {address}: {type(err).__name__}: {err}",
                fix="Start one with `dask scheduler` (and `dask worker ADDRESS`), or check the "
                "address (tcp://HOST:PORT).",
            ) from None
        try:
            self.client.wait_for_workers(1, timeout=60)
        except Exception:
            self.client.close()
            raise PipelineError(
                f"The Dask scheduler at {address} has no workers (waited 60 s)",
                fix=f"Start some with `dask worker {address}`.",
            ) from None
        self._futures: dict[str, Any] = {}

    def warm(self, task: StepTask) -> None:  # workers start their own kernels
        pass

    def warmed(self, name: str) -> bool:
        return True

    def cancel(self, name: str) -> None:
        pass

    def interrupt(self, name: str) -> bool:  # a task on a worker runs to its end
        return False

    def kill_all(self) -> None:
        pass

    def kernel_pid(self, name: str) -> int | None:
        return None

    def submit(self, task: StepTask) -> None:
        from nbmlops.core.pipeline.execute import run_task_standalone

        fut = self.client.submit(
            run_task_standalone, task, key=f"nbmlops-{task.name}-{uuid.uuid4().hex[:8]}", pure=False
        )
        self._futures[task.name] = fut

        def done(f: Any, name: str = task.name) -> None:
            try:
                outcome = f.result()
            except Exception as err:
                now = time.time()
                outcome = StepOutcome(name, False, now, now, f"on the cluster: {err!r}")
            self.events.put(("done", name, outcome))
            self.events.put(("kernel_gone", name, None))

        fut.add_done_callback(done)

    def close(self) -> None:
        try:
            self.client.close(timeout=10)
        except Exception:
            pass
