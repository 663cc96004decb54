"""Run notebooks and pipelines of notebooks: cache decisions, parallel execution, run records.

One orchestrating thread makes every decision; executors (local threads with kernels started
ahead of need, or a Dask cluster) only run :class:`StepTask`s and report :class:`StepOutcome`s
on a queue. Every run is journaled first (the orchestrator's own journal segment; kernels run
with ``ship: defer`` and their segments are shipped here once they end), so a crash at any point
leaves nothing unrecorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from nbmlops.config import Settings, load_settings
from nbmlops.core.pipeline import notebook as nbfile
from nbmlops.core.pipeline.cache import (
    FileDigests,
    StepCache,
    _atomic_write,
    cache_key,
    environment_digest,
    read_json_file,
)
from nbmlops.core.pipeline.execute import StepOutcome, StepTask, WarmKernel, execute_task
from nbmlops.core.pipeline.spec import Pipeline, Step, load_pipeline
from nbmlops.core.tracking.session import PARENT_KEY_ENV, Tracker, get_tracker
from nbmlops.exceptions import PipelineError

Progress = Callable[[dict[str, Any]], None]

# Step statuses in reports
RAN, CACHED, FAILED, SKIPPED = "ran", "cached", "failed", "skipped"
WOULD_RUN, WOULD_SKIP = "would run", "would skip"


@dataclass
class StepReport:
    name: str
    status: str = "pending"
    reason: str = ""
    duration_s: float = 0.0
    run_key: str | None = None
    output_notebook: str | None = None
    error: str | None = None
    failed_cell: int | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    cache_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PipelineReport:
    name: str
    steps: dict[str, StepReport]
    wall_s: float = 0.0
    run_key: str | None = None
    dry_run: bool = False
    experiment: str = ""

    @property
    def ok(self) -> bool:
        return not any(s.status in (FAILED, SKIPPED) for s in self.steps.values())

    @property
    def status(self) -> str:
        return "FINISHED" if self.ok else "FAILED"

    def ran(self) -> list[str]:
        return [n for n, s in self.steps.items() if s.status == RAN]

    def table(self) -> list[tuple[str, str, str, str]]:
        return [
            (
                n,
                s.status,
                f"{s.duration_s:.2f}s" if s.status in (RAN, FAILED) else "",
                s.error or s.reason,
            )
            for n, s in self.steps.items()
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "wall_s": round(self.wall_s, 3),
            "run_key": self.run_key,
            "dry_run": self.dry_run,
            "steps": {n: s.to_dict() for n, s in self.steps.items()},
        }


# --- executors -------------------------------------------------------------------------------
class LocalExecutor:
    """Steps on local kernels, at most ``jobs`` executing at once. ``warm`` starts a step's
    kernel before its inputs are ready; the step thread then waits for ``submit`` (or
    ``cancel``). Each kernel lives in its step's thread (its event loop) from start to shutdown;
    the outcome is published before shutdown, so shutting down overlaps the next steps."""

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


# --- the orchestrator ------------------------------------------------------------------------
class _Run:
    def __init__(
        self,
        pipeline: Pipeline,
        settings: Settings,
        *,
        jobs: int = 1,
        cluster: str | None = None,
        force: Iterable[str] = (),
        resume: bool = False,
        dry_run: bool = False,
        progress: Progress | None = None,
        use_cache: bool = True,
        parent: bool = True,
        parent_kind: str = "pipeline",
        outputs_dir: Path | None = None,
        output_notebook: Path | None = None,
        extra_tags: dict[str, str] | None = None,
        state_dir: Path | None = None,
    ):
        """``parent``: record a run (of ``parent_kind``) above the step runs. ``extra_tags``
        go on every step run. ``state_dir`` holds the step cache and file digests (default the
        project's; a scratch run keeps its own so it never answers the project's lookups)."""
        self.p = pipeline
        self.settings = settings
        self.jobs = jobs
        self.cluster = cluster
        self.force = set(force)
        self.resume = resume
        self.dry_run = dry_run
        self.progress = progress or (lambda e: None)
        self.use_cache = use_cache
        self.parent = parent
        self.parent_kind = parent_kind
        self.extra_tags = dict(extra_tags or {})
        self.home = settings.home_dir / "pipelines"
        self.outputs_dir = outputs_dir or (self.home / "runs" / pipeline.display_name)
        self.output_notebook = output_notebook
        state = state_dir or self.home
        self.cache = StepCache(state / "cache")
        self.digests = FileDigests(state / "digests.json")
        self.report = PipelineReport(
            pipeline.display_name,
            {n: StepReport(n) for n in pipeline.order},
            dry_run=dry_run,
            experiment=pipeline.experiment_name,
        )
        self.keys: dict[str, str] = {n: uuid.uuid4().hex for n in pipeline.order}
        self.pipeline_key: str | None = None
        self.tracker: Tracker | None = None
        self.state_path = self.home / "state" / f"{pipeline.display_name}.json"
        self.resumed: dict[str, Any] = {}
        self.input_digests: dict[str, dict[str, str]] = {}
        self.decided: dict[str, str] = {}  # step -> cache key

    # -- decisions ---------------------------------------------------------------------------
    def _input_digest(self, step: Step, name: str) -> str:
        inp = step.resolved_inputs[name]
        if inp.kind == "data":
            from nbmlops.core.data.store import DataStore

            return DataStore(self.settings.resolved_data_url).get(inp.ref or "").digest
        assert inp.path is not None
        if inp.kind == "step" and inp.step:
            out = self.report.steps[inp.step].outputs.get(inp.output or "")
            if out:
                return str(out["digest"])
        return self.digests.digest(inp.path)

    def _key(self, step: Step) -> str:
        spec = nbfile.kernel_spec(self._kernel(step))
        inputs = {n: self._input_digest(step, n) for n in sorted(step.resolved_inputs)}
        self.input_digests[step.name] = inputs
        return cache_key(
            code=nbfile.code_digest(step.nb),
            parameters=step.parameters,
            inputs=inputs,
            outputs={n: os.path.relpath(p, self.p.root) for n, p in step.output_paths.items()},
            environment=environment_digest(spec),
            kernel=self._kernel(step),
        )

    def _kernel(self, step: Step) -> str:
        return step.kernel or self.p.kernel or nbfile.kernel_name_of(step.nb)

    def _decide(self, step: Step) -> tuple[bool, str]:
        """(run?, why) for a step whose upstream steps are all settled."""
        key = self._key(step)
        self.decided[step.name] = key
        self.report.steps[step.name].cache_key = key
        if step.name in self.force or "*" in self.force:
            return True, "forced (--force)"
        if self.resume and self.resumed.get("steps", {}).get(step.name) == key:
            entry, why = self.cache.lookup(key, self.digests)
            if entry is not None:
                self.report.steps[step.name].outputs = entry.get("outputs", {})
                return False, "done before the failure (--resume)"
        if not (self.use_cache and step.cache):
            return True, "cache off for this step" if not step.cache else "always runs"
        entry, why = self.cache.lookup(key, self.digests)
        if entry is None:
            return True, why
        self.report.steps[step.name].outputs = entry.get("outputs", {})
        self.report.steps[step.name].run_key = entry.get("run_key")
        self.report.steps[step.name].output_notebook = entry.get("output_notebook")
        return False, why

    # -- tasks -------------------------------------------------------------------------------
    def _task(self, step: Step) -> StepTask:
        out = self.output_notebook or (self.outputs_dir / f"{step.name}.ipynb")
        env = {
            "NBMLOPS_SHIP": "defer",
            "NBMLOPS_PROJECT_DIR": str(self.settings.project_dir),
            "NBMLOPS_EXPERIMENT": self.p.experiment_name,
            "NBMLOPS_NOTEBOOK": str(step.notebook_path),
            PARENT_KEY_ENV: self.keys[step.name],
        }
        if self.settings.home:
            env["NBMLOPS_HOME"] = str(self.settings.home_dir)
        if self.settings.tracking_uri:
            env["NBMLOPS_TRACKING_URI"] = self.settings.resolved_tracking_uri
        return StepTask(
            name=step.name,
            notebook=str(step.notebook_path),
            output=str(Path(out).resolve()),
            parameters=step.injected(),
            cwd=str(self.p.root.resolve()),
            kernel_name=self._kernel(step),
            env=env,
            outputs={n: str(p) for n, p in step.output_paths.items()},
            timeout=step.timeout,
        )

    # -- records -----------------------------------------------------------------------------
    def _tracker(self) -> Tracker:
        if self.tracker is None:
            self.tracker = get_tracker(self.settings)
        return self.tracker

    def _open_pipeline_run(self) -> None:
        if not self.parent or self.pipeline_key is not None:
            return
        reopen = bool(self.resume and self.resumed.get("run_key"))
        self.pipeline_key = self.resumed.get("run_key") if reopen else uuid.uuid4().hex
        tags = {
            "mlflow.source.type": "JOB",
            "nbmlops.pipeline": self.p.display_name,
            "nbmlops.kind": "pipeline",
        }
        if self.p.source:
            tags["mlflow.source.name"] = str(self.p.source)
        self._tracker().open_run(
            self.p.display_name,
            self.p.experiment_name,
            tags,
            key=self.pipeline_key,
            reopen=reopen,
        )
        self.report.run_key = self.pipeline_key
        self._save_state("RUNNING")

    def _datasets(self, step: Step, outcome: StepOutcome | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, digest in self.input_digests.get(step.name, {}).items():
            inp = step.resolved_inputs[name]
            out.append(
                {
                    "name": name,
                    "digest": digest,
                    "kind": "file" if inp.kind != "data" else "version",
                    "shape": [],
                    "schema": None,
                    "nbytes": 0,
                    "role": "input",
                    "context": "input",
                    "path": str(inp.path) if inp.path else inp.ref,
                }
            )
        for name, info in (outcome.outputs if outcome else {}).items():
            out.append(
                {
                    "name": name,
                    "digest": info["digest"],
                    "kind": "file",
                    "shape": [info["size"]],
                    "schema": None,
                    "nbytes": info["size"],
                    "role": "output",
                    "context": "output",
                    "path": info["path"],
                }
            )
        return out

    def _open_step_run(
        self, step: Step, task: StepTask, tags: dict[str, str] | None = None
    ) -> None:
        self._open_pipeline_run()
        run_tags = {
            "mlflow.source.name": str(step.notebook_path),
            "mlflow.source.type": "NOTEBOOK",
            "nbmlops.kind": "notebook",
            "nbmlops.step": step.name,
            "nbmlops.code_digest": nbfile.code_digest(step.nb),
            "nbmlops.cache_key": self.decided.get(step.name, ""),
            "nbmlops.kernel": task.kernel_name,
            "nbmlops.inputs": json.dumps(self.input_digests.get(step.name, {}), sort_keys=True),
            **self.extra_tags,
            **(tags or {}),
        }
        if self.parent:
            if self.parent_kind == "pipeline":
                run_tags["nbmlops.pipeline"] = self.p.display_name
            run_tags["nbmlops.parent_run_key"] = self.pipeline_key or ""
        self._tracker().open_run(
            step.name,
            self.p.experiment_name,
            run_tags,
            key=self.keys[step.name],
            datasets=self._datasets(step),
        )
        self.report.steps[step.name].run_key = self.keys[step.name]

    def _close_step_run(
        self,
        step: Step,
        task: StepTask,
        outcome: StepOutcome,
        *,
        status: str | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Journal the step run's end; ``status``, ``metrics`` and ``tags`` add to (or override)
        what the outcome says (a sweep's trial state and score)."""
        extra_tags = tags or {}
        tracker = self._tracker()
        key = self.keys[step.name]
        artifacts = tracker.run_staging(key) / "artifacts"
        nb_dir = artifacts / "notebook"
        nb_dir.mkdir(parents=True, exist_ok=True)
        if os.path.isfile(task.output):
            shutil.copyfile(task.output, nb_dir / Path(task.output).name)
        shutil.copyfile(step.notebook_path, nb_dir / f"source-{step.notebook_path.name}")
        tags = {
            "nbmlops.outputs": json.dumps(
                {n: i["digest"] for n, i in outcome.outputs.items()}, sort_keys=True
            ),
            "nbmlops.output_notebook": task.output,
            "nbmlops.duration_s": f"{outcome.duration_s:.3f}",
        }
        if outcome.error:
            tags["nbmlops.error"] = outcome.error[:5000]
        if outcome.failed_cell is not None:
            tags["nbmlops.failed_cell"] = str(outcome.failed_cell)
        (artifacts / "step.json").write_text(
            json.dumps(
                {
                    "step": step.name,
                    "notebook": str(step.notebook_path),
                    "parameters": task.parameters,
                    "inputs": {
                        n: {
                            "digest": d,
                            "path": str(step.resolved_inputs[n].path or ""),
                            "ref": step.resolved_inputs[n].ref,
                        }
                        for n, d in self.input_digests.get(step.name, {}).items()
                    },
                    "outputs": outcome.outputs,
                    "cache_key": self.decided.get(step.name),
                    "ok": outcome.ok,
                    "error": outcome.error,
                },
                indent=1,
                default=str,
            )
        )
        tracker.close_run(
            key,
            self.p.experiment_name,
            status or ("FINISHED" if outcome.ok else ("KILLED" if outcome.killed else "FAILED")),
            params=task.parameters,
            metrics=metrics,
            tags={**tags, **extra_tags},
            datasets=self._datasets(step, outcome),
        )

    def _close_pipeline_run(self) -> None:
        if self.pipeline_key is None:
            return
        tracker = self._tracker()
        artifacts = tracker.run_staging(self.pipeline_key) / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        if self.p.source and self.p.source.is_file():
            shutil.copyfile(self.p.source, artifacts / self.p.source.name)
        (artifacts / "report.json").write_text(json.dumps(self.report.to_dict(), indent=1))
        counts = {
            f"steps_{s}": sum(1 for r in self.report.steps.values() if r.status == s)
            for s in (RAN, CACHED, FAILED, SKIPPED)
        }
        tracker.close_run(
            self.pipeline_key,
            self.p.experiment_name,
            self.report.status,
            params={"jobs": self.jobs, "cluster": self.cluster or "local"},
            metrics={"wall_s": self.report.wall_s, **counts},
            tags={
                f"nbmlops.step.{n}": s.status + (f": {s.error[:200]}" if s.error else "")
                for n, s in self.report.steps.items()
            },
        )

    def _save_state(self, status: str) -> None:
        if not self.parent:
            return
        _atomic_write(
            self.state_path,
            {
                "run_key": self.pipeline_key,
                "status": status,
                "pid": os.getpid(),
                "steps": {
                    n: self.decided.get(n)
                    for n, s in self.report.steps.items()
                    if s.status in (RAN, CACHED)
                },
                "ts": time.time(),
            },
        )

    def _load_resume(self) -> None:
        state = read_json_file(self.state_path)
        if not state:
            raise PipelineError(
                f"Nothing to resume: pipeline {self.p.display_name!r} has no earlier run here",
                fix="Run it without --resume.",
            )
        # RUNNING means the process that ran it died: this run holds the pipeline's lock, so
        # no other run of it is alive.
        if state.get("status") == "FINISHED":
            raise PipelineError(
                f"Nothing to resume: the last run of {self.p.display_name!r} finished",
                fix="Run it without --resume (unchanged steps are cached anyway).",
            )
        self.resumed = state

    # -- the loop ----------------------------------------------------------------------------
    def execute(self) -> PipelineReport:
        if self.dry_run:
            return self._execute()
        if self.parent:
            name, what = f"pipeline:{self.p.display_name}", f"pipeline {self.p.display_name!r}"
        else:  # a single notebook: one writer per output notebook
            out = self._task(self.p.steps[self.p.order[0]]).output
            name, what = f"notebook:{out}", f"output notebook {out}"
        with exclusive(self.home / "locks", name, what=what):
            return self._execute()

    def _execute(self) -> PipelineReport:
        t0 = time.perf_counter()
        if self.resume:
            self._load_resume()
        steps = self.p.steps
        order = self.p.order
        status = {n: "pending" for n in order}
        self.progress({"event": "plan", "steps": list(order), "pipeline": self.p.display_name})

        if self.dry_run:
            self._plan_dry(status)
            self.report.wall_s = time.perf_counter() - t0
            return self.report

        events: queue.Queue = queue.Queue()
        executor: LocalExecutor | DaskExecutor | None = None
        # Runs are journaled as steps go (that is what makes them durable); shipping them to
        # MLflow waits until the steps are done, so importing MLflow and writing to its store
        # does not take a core from the kernels. Other processes' shipping is not affected.
        shipper = self._tracker().shipper if self.jobs > 1 or self.cluster else None
        if shipper is not None:
            shipper.pause()
        tasks: dict[str, StepTask] = {}
        running: set[str] = set()
        likely_cached: set[str] = set()
        warm_ahead = self.jobs

        def get_executor() -> LocalExecutor | DaskExecutor:
            nonlocal executor
            if executor is None:
                executor = (
                    DaskExecutor(self.cluster, events)
                    if self.cluster
                    else LocalExecutor(self.jobs, events)
                )
            return executor

        def top_up_warm() -> None:
            if self.cluster or executor is None:
                return
            for n in order:
                if executor.kernels >= self.jobs + warm_ahead:
                    return
                if status[n] == "pending" and n not in likely_cached and not executor.warmed(n):
                    tasks[n] = self._task(steps[n])
                    executor.warm(tasks[n])

        def settle_ready() -> None:
            progress_made = True
            while progress_made:
                progress_made = False
                for n in order:
                    if status[n] != "pending":
                        continue
                    ups = steps[n].upstream
                    if any(status[u] in ("pending", "running") for u in ups):
                        continue
                    rep = self.report.steps[n]
                    bad = [u for u in ups if status[u] in (FAILED, SKIPPED)]
                    if bad:
                        status[n] = rep.status = SKIPPED
                        rep.reason = f"upstream step {bad[0]!r} did not succeed"
                        if executor is not None:
                            executor.cancel(n)
                        self.progress({"event": "step_end", "step": n, "report": rep})
                        progress_made = True
                        continue
                    try:
                        run, why = self._decide(steps[n])
                    except (OSError, PipelineError) as err:
                        status[n] = rep.status = FAILED
                        rep.error = f"inputs could not be read: {err}"
                        self.progress({"event": "step_end", "step": n, "report": rep})
                        progress_made = True
                        continue
                    rep.reason = why
                    if not run:
                        status[n] = rep.status = CACHED
                        for info in rep.outputs.values():
                            self.digests.remember(info["path"], info)
                        if executor is not None:
                            executor.cancel(n)
                        self.progress({"event": "step_end", "step": n, "report": rep})
                        progress_made = True
                        continue
                    task = tasks.get(n) or self._task(steps[n])
                    tasks[n] = task
                    self._open_step_run(steps[n], task)
                    status[n] = "running"
                    running.add(n)
                    self.progress({"event": "step_start", "step": n, "reason": why})
                    get_executor().submit(task)
                    progress_made = True

        # Steps whose upstream is all cached can be decided now: do not warm kernels for them.
        for n in order:
            if all(u in likely_cached for u in steps[n].upstream) and n not in self.force:
                try:
                    key = self._key(steps[n])
                except (OSError, PipelineError):
                    continue
                if (
                    self.use_cache
                    and steps[n].cache
                    and "*" not in self.force
                    and self.cache.lookup(key, self.digests)[0] is not None
                ):
                    likely_cached.add(n)
        if any(n not in likely_cached for n in order):
            get_executor()
            top_up_warm()
        try:
            settle_ready()
            while running:
                kind, name, outcome = events.get()
                if kind == "kernel_gone":
                    self._tracker().ship_ended_processes()
                    top_up_warm()
                    continue
                running.discard(name)
                rep = self.report.steps[name]
                step, task = steps[name], tasks[name]
                rep.duration_s = outcome.duration_s
                rep.output_notebook = task.output
                rep.outputs = outcome.outputs
                if outcome.ok:
                    status[name] = rep.status = RAN
                    key = self.decided[name]
                    self.cache.store(
                        key,
                        {
                            "step": name,
                            "notebook": str(step.notebook_path),
                            "outputs": outcome.outputs,
                            "run_key": self.keys[name],
                            "output_notebook": task.output,
                        },
                    )
                    for info in outcome.outputs.values():
                        self.digests.remember(info["path"], info)
                else:
                    status[name] = rep.status = FAILED
                    rep.error = outcome.error
                    rep.failed_cell = outcome.failed_cell
                self._close_step_run(step, task, outcome)
                self.progress({"event": "step_end", "step": name, "report": rep})
                settle_ready()
                top_up_warm()
        except BaseException:
            # Interrupted (Ctrl-C) or a bug: stop the kernels, journal what is known.
            if isinstance(executor, LocalExecutor):
                executor.kill_all()
            for n in running:
                now = time.time()
                self.report.steps[n].status = FAILED
                self.report.steps[n].error = "interrupted"
                self._close_step_run(
                    steps[n],
                    tasks[n],
                    StepOutcome(n, False, now, now, "interrupted", killed=True),
                )
            self.report.wall_s = time.perf_counter() - t0
            self._close_pipeline_run()
            self._save_state("FAILED")
            raise
        finally:
            if executor is not None:
                executor.close()
            self.digests.save()
            if shipper is not None:
                shipper.resume()
        self.report.wall_s = time.perf_counter() - t0
        self._close_pipeline_run()
        if self.pipeline_key is not None:
            self._save_state(self.report.status)
        if self.tracker is not None:
            self.tracker.ship_ended_processes()
        self.progress({"event": "done", "report": self.report})
        return self.report

    def _plan_dry(self, status: dict[str, str]) -> None:
        for n in self.p.order:
            step = self.p.steps[n]
            rep = self.report.steps[n]
            upstream_runs = [u for u in step.upstream if self.report.steps[u].status == WOULD_RUN]
            if upstream_runs:
                rep.status = WOULD_RUN
                rep.reason = f"upstream step {upstream_runs[0]!r} would run"
                continue
            try:
                run, why = self._decide(step)
            except (OSError, PipelineError) as err:
                rep.status, rep.reason = WOULD_RUN, f"inputs could not be read: {err}"
                continue
            rep.status = WOULD_RUN if run else WOULD_SKIP
            rep.reason = why


@contextlib.contextmanager
def exclusive(folder: Path, name: str, what: str) -> Iterator[None]:
    """One run at a time per pipeline (or per output notebook): a second one is refused, never
    allowed to overwrite the first one's files. A local ``flock``, released if the process dies."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (xxhash.xxh3_64_hexdigest(name.encode()) + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise PipelineError(
                f"The {what} is being written by a run in progress (process {holder})",
                fix="Wait for it to finish, or write elsewhere (-o PATH).",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def _validated(pipeline: Pipeline | str | Path, settings: Settings) -> Pipeline:
    p = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline)
    data_store = None
    if any(isinstance(v, str) and "@" in v for s in p.steps.values() for v in s.inputs.values()):
        from nbmlops.core.data.store import DataStore

        data_store = DataStore(settings.resolved_data_url)
    return p.validate(data_store)


def _slug(text: str) -> str:
    """A name usable as a step (and file) name: 'my notebook (v2)' -> 'my-notebook-v2'."""
    import re

    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return slug if slug[:1].isalnum() else f"nb-{slug}".rstrip("-")


def _jobs(jobs: int | None) -> int:
    if jobs is None:
        return max(1, min(os.cpu_count() or 1, 8))
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise PipelineError(f"jobs must be a positive integer, got {jobs!r}")
    return jobs


def run_pipeline(
    pipeline: Pipeline | str | Path,
    *,
    jobs: int | None = None,
    cluster: str | None = None,
    force: Iterable[str] = (),
    resume: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    settings: Settings | None = None,
) -> PipelineReport:
    """Run a pipeline (a ``pipeline.yaml`` path or a :class:`Pipeline`); see ``spec``."""
    settings = settings or load_settings()
    p = _validated(pipeline, settings)
    force = set(force)
    unknown = force - set(p.steps) - {"*"}
    if unknown:
        raise PipelineError(
            f"--force names unknown step(s) {', '.join(sorted(unknown))} "
            f"(steps: {', '.join(p.order)})",
            where=p.where,
        )
    if cluster is not None and not str(cluster).startswith(("tcp://", "tls://", "inproc://")):
        raise PipelineError(
            f"--cluster {cluster!r} is not a scheduler address",
            fix="Pass tcp://HOST:PORT, as printed by `dask scheduler`.",
        )
    run = _Run(
        p,
        settings,
        jobs=_jobs(jobs),
        cluster=cluster,
        force=force,
        resume=resume,
        dry_run=dry_run,
        progress=progress,
    )
    return run.execute()


@dataclass
class NotebookRun:
    """What ``nbmlops run`` did: the report of its single step and where things are."""

    report: StepReport
    output_notebook: str
    run_key: str | None
    parameters: dict[str, Any]
    experiment: str

    @property
    def ok(self) -> bool:
        return self.report.status == RAN


def run_notebook(
    notebook: str | Path,
    parameters: dict[str, Any] | None = None,
    *,
    output: str | Path | None = None,
    inputs: dict[str, str] | None = None,
    outputs: dict[str, str] | None = None,
    experiment: str | None = None,
    kernel: str | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    progress: Progress | None = None,
    settings: Settings | None = None,
) -> NotebookRun:
    """Execute one notebook with papermill as a recorded run (parameters checked first).

    String parameters naming existing files are recorded as inputs (by content digest) too.
    """
    settings = settings or load_settings()
    root = Path(cwd or Path.cwd()).resolve()
    nb_path = Path(notebook)
    nb_path = nb_path if nb_path.is_absolute() else (Path.cwd() / nb_path)
    params = dict(parameters or {})
    auto_inputs = {
        k: v
        for k, v in params.items()
        if isinstance(v, str) and len(v) < 4096 and "\n" not in v and (root / v).is_file()
    }
    step = Step(
        name=_slug(nb_path.stem),
        notebook=nb_path,
        parameters=params,
        inputs={**auto_inputs, **(inputs or {})},
        outputs=dict(outputs or {}),
        timeout=timeout,
        kernel=kernel,
    )
    pipe = Pipeline(
        steps={step.name: step},
        root=root,
        name=step.name,
        experiment=experiment or settings.experiment or nb_path.stem,
    )
    pipe = _validated(pipe, settings)
    home = settings.home_dir / "notebooks"
    out = (
        Path(output)
        if output
        else home / f"{nb_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.ipynb"
    )
    run = _Run(
        pipe,
        settings,
        progress=progress,
        use_cache=False,
        parent=False,
        output_notebook=out.resolve(),
    )
    report = run.execute()
    rep = report.steps[step.name]
    return NotebookRun(
        report=rep,
        output_notebook=str(out.resolve()),
        run_key=rep.run_key,
        parameters=step.injected(),
        experiment=pipe.experiment_name,
    )
