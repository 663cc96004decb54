"""Run notebooks and pipelines of notebooks: cache decisions, parallel execution, run records.

:class:`PipelineRun` makes every decision on one thread: which steps the cache answers, which
run, which fail or are skipped. The :class:`~nbmlops.core.pipeline.scheduler.StepScheduler`
runs them (local threads with kernels started ahead of need, or a Dask cluster) and the
:class:`~nbmlops.core.pipeline.recorder.StepRecorder` records them. Every run is journaled
first (the orchestrator's own journal segment; kernels run with ``ship: defer`` and their
segments are shipped here once they end), so a crash at any point leaves nothing unrecorded.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbmlops.config import Settings, load_settings
from nbmlops.core.extras import require_extra
from nbmlops.core.pipeline import notebook as nbfile
from nbmlops.core.pipeline.cache import (
    FileDigests,
    StepCache,
    atomic_write,
    cache_key,
    environment_digest,
    read_json_file,
)
from nbmlops.core.pipeline.events import (
    PipelineFinished,
    PipelinePlanned,
    Progress,
    StepFinished,
    StepStarted,
    no_progress,
)
from nbmlops.core.pipeline.execute import StepOutcome, StepTask
from nbmlops.core.pipeline.executors import DaskExecutor, LocalExecutor
from nbmlops.core.pipeline.formatting import step_slug
from nbmlops.core.pipeline.lock import exclusive
from nbmlops.core.pipeline.recorder import StepRecorder, step_kernel
from nbmlops.core.pipeline.report import PipelineReport, StepReport
from nbmlops.core.pipeline.scheduler import Executor, StepScheduler, StepStatus, check_jobs
from nbmlops.core.pipeline.spec import Pipeline, Step, load_pipeline
from nbmlops.exceptions import PipelineError

_TAIL_EVERY_S = 0.5  # how often a running kernel's ended runs are looked for


class PipelineRun:
    """One run of a pipeline: decides each step (cache, resume, force), schedules the ones that
    run, records them, and keeps the state ``--resume`` reads. A :class:`Workload` of the
    :class:`StepScheduler`."""

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
        outputs_dir: Path | None = None,
        output_notebook: Path | None = None,
        extra_tags: dict[str, str] | None = None,
        state_dir: Path | None = None,
    ):
        """``parent``: record a pipeline run above the step runs. ``extra_tags`` go on every
        step run. ``state_dir`` holds the step cache and file digests (default the project's;
        a scratch run keeps its own so it never answers the project's lookups)."""
        self.p = pipeline
        self.settings = settings
        self.jobs = jobs
        self.cluster = cluster
        self.force = set(force)
        self.resume = resume
        self.dry_run = dry_run
        self.progress: Progress = progress or no_progress
        self.use_cache = use_cache
        self.parent = parent
        self.home = settings.home_dir / "pipelines"
        self.recorder = StepRecorder(
            pipeline,
            settings,
            outputs_dir=outputs_dir or (self.home / "runs" / pipeline.display_name),
            output_notebook=output_notebook,
            parent_kind="pipeline" if parent else None,
            extra_tags=extra_tags,
        )
        state = state_dir or self.home
        self.cache = StepCache(state / "cache")
        self.digests = FileDigests(state / "digests.json")
        self.report = PipelineReport(
            pipeline.display_name,
            {n: StepReport(n) for n in pipeline.order},
            dry_run=dry_run,
            experiment=pipeline.experiment_name,
        )
        self.pipeline_key: str | None = None
        self.state_path = self.home / "state" / f"{pipeline.display_name}.json"
        self.resumed: dict[str, Any] = {}
        self.status: dict[str, StepStatus] = {n: StepStatus.PENDING for n in pipeline.order}
        self.tasks: dict[str, StepTask] = {}
        self.likely_cached: set[str] = set()
        self.scheduler: StepScheduler | None = None
        self._t0 = 0.0

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
        spec = nbfile.kernel_spec(step_kernel(self.p, step))
        inputs = {n: self._input_digest(step, n) for n in sorted(step.resolved_inputs)}
        self.recorder.input_digests[step.name] = inputs
        return cache_key(
            code=nbfile.code_digest(step.nb),
            parameters=step.parameters,
            inputs=inputs,
            outputs={n: os.path.relpath(p, self.p.root) for n, p in step.output_paths.items()},
            environment=environment_digest(spec),
            kernel=step_kernel(self.p, step),
        )

    def _decide(self, step: Step) -> tuple[bool, str]:
        """(run?, why) for a step whose upstream steps are all settled."""
        key = self._key(step)
        self.recorder.decided[step.name] = key
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

    # -- records -----------------------------------------------------------------------------
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
        self.recorder.tracker.open_run(
            self.p.display_name,
            self.p.experiment_name,
            tags,
            key=self.pipeline_key,
            reopen=reopen,
        )
        self.recorder.parent_key = self.pipeline_key
        self.report.run_key = self.pipeline_key
        self._save_state("RUNNING")

    def _open_step_run(self, step: Step, task: StepTask) -> None:
        self._open_pipeline_run()
        self.report.steps[step.name].run_key = self.recorder.open_step(step, task)

    def _close_pipeline_run(self) -> None:
        if self.pipeline_key is None:
            return
        tracker = self.recorder.tracker
        artifacts = tracker.run_staging(self.pipeline_key) / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        if self.p.source and self.p.source.is_file():
            shutil.copyfile(self.p.source, artifacts / self.p.source.name)
        (artifacts / "report.json").write_text(json.dumps(self.report.to_dict(), indent=1))
        counts = {
            f"steps_{s}": sum(1 for r in self.report.steps.values() if r.status == s)
            for s in (
                StepStatus.RAN,
                StepStatus.CACHED,
                StepStatus.FAILED,
                StepStatus.SKIPPED,
            )
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
        atomic_write(
            self.state_path,
            {
                "run_key": self.pipeline_key,
                "status": status,
                "pid": os.getpid(),
                "steps": {
                    n: self.recorder.decided.get(n)
                    for n, s in self.report.steps.items()
                    if s.status in (StepStatus.RAN, StepStatus.CACHED)
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
            name, what = (
                f"pipeline:{self.p.display_name}",
                f"pipeline {self.p.display_name!r}",
            )
        else:  # a single notebook: one writer per output notebook
            out = self.recorder.task(self.p.steps[self.p.order[0]]).output
            name, what = f"notebook:{out}", f"output notebook {out}"
        with exclusive(self.home / "locks", name, what=what):
            return self._execute()

    def _make_executor(self, events: queue.Queue) -> Executor:
        if self.cluster:
            return DaskExecutor(self.cluster, events)
        return LocalExecutor(self.jobs, events)

    def _execute(self) -> PipelineReport:
        t0 = time.perf_counter()
        if self.resume:
            self._load_resume()
        self.progress(PipelinePlanned(self.p.display_name, tuple(self.p.order)))
        if self.dry_run:
            self._plan_dry()
            self.report.wall_s = time.perf_counter() - t0
            return self.report

        self._t0 = t0
        # Runs are journaled as steps go (that is what makes them durable); shipping them to
        # MLflow waits until the steps are done, so importing MLflow and writing to its store
        # does not take a core from the kernels. Other processes' shipping is not affected.
        shipper = self.recorder.tracker.shipper if self.jobs > 1 or self.cluster else None
        if shipper is not None:
            shipper.pause()
        scheduler = self.scheduler = StepScheduler(
            self._make_executor,
            jobs=self.jobs,
            ship=lambda: self.recorder.tracker.ship_ended_processes(),
        )
        done = threading.Event()
        if shipper is None:
            if self._tracks_models():  # the tracker records the step's run anyway
                self.recorder.tracker.shipper.warm_model_libraries()
            threading.Thread(target=self._ship_as_steps_go, args=(done,), daemon=True).start()
        try:
            self._guess_cached()
            if any(n not in self.likely_cached for n in self.p.order):
                scheduler.ensure_executor()  # a cluster that cannot be reached fails here
            scheduler.run(self)
        finally:
            done.set()
            self.digests.save()
            if shipper is not None:
                shipper.resume()
        self.report.wall_s = time.perf_counter() - t0
        self._close_pipeline_run()
        if self.pipeline_key is not None:
            self._save_state(self.report.status)
        if self.recorder.has_tracker:
            self.recorder.tracker.ship_ended_processes()
        self.progress(PipelineFinished(self.report))
        return self.report

    def _tracks_models(self) -> bool:
        """Whether a step's notebook seems to track cells that fit a model: a look at its text
        that only decides when the model libraries are imported, never what is recorded."""
        for step in self.p.steps.values():
            try:
                text = step.notebook_path.read_text(errors="replace")
            except OSError:
                continue
            if ("%%track" in text or "nbmlops.track" in text) and ".fit(" in text:
                return True
        return False

    def _ship_as_steps_go(self, done: threading.Event) -> None:
        """One kernel at a time leaves a core free: ship the runs its tracked cells ended
        while it still runs, so the command's own shipping at the end is short."""
        while not done.wait(_TAIL_EVERY_S):
            if self.recorder.has_tracker:
                self.recorder.tracker.shipper.request_tail(set(self.recorder.keys.values()))

    def _guess_cached(self) -> None:
        """Steps whose upstream is all cached can be decided now: no kernel is warmed for the
        ones the cache answers."""
        steps = self.p.steps
        for n in self.p.order:
            if all(u in self.likely_cached for u in steps[n].upstream) and n not in self.force:
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
                    self.likely_cached.add(n)

    def _task(self, name: str) -> StepTask:
        if name not in self.tasks:
            self.tasks[name] = self.recorder.task(self.p.steps[name])
        return self.tasks[name]

    def _settle(self, name: str, status: StepStatus) -> None:
        rep = self.report.steps[name]
        self.status[name] = rep.status = status
        self.progress(StepFinished(name, rep))

    # -- the scheduler's workload ------------------------------------------------------------
    def warm_candidates(self) -> Iterator[StepTask]:
        assert self.scheduler is not None and self.scheduler.executor is not None
        executor = self.scheduler.executor
        for n in self.p.order:
            pending = self.status[n] == StepStatus.PENDING
            if pending and n not in self.likely_cached and not executor.warmed(n):
                yield self._task(n)

    def start_ready(self) -> None:
        """Decide every step whose upstream steps are settled: skip, fail, cache or submit."""
        assert self.scheduler is not None
        steps = self.p.steps
        progress_made = True
        while progress_made:
            progress_made = False
            for n in self.p.order:
                if self.status[n] != StepStatus.PENDING:
                    continue
                ups = steps[n].upstream
                if any(self.status[u].unsettled for u in ups):
                    continue
                progress_made = True
                rep = self.report.steps[n]
                bad = [u for u in ups if self.status[u].unsuccessful]
                if bad:
                    rep.reason = f"upstream step {bad[0]!r} did not succeed"
                    self.scheduler.cancel(n)
                    self._settle(n, StepStatus.SKIPPED)
                    continue
                try:
                    run, why = self._decide(steps[n])
                except (OSError, PipelineError) as err:
                    rep.error = f"inputs could not be read: {err}"
                    self._settle(n, StepStatus.FAILED)
                    continue
                rep.reason = why
                if not run:
                    for info in rep.outputs.values():
                        self.digests.remember(info["path"], info)
                    self.scheduler.cancel(n)
                    self._settle(n, StepStatus.CACHED)
                    continue
                task = self._task(n)
                self._open_step_run(steps[n], task)
                self.status[n] = StepStatus.RUNNING
                self.progress(StepStarted(n, why))
                self.scheduler.submit(n, task)

    def finished(self, name: str, outcome: StepOutcome) -> None:
        rep = self.report.steps[name]
        step, task = self.p.steps[name], self.tasks[name]
        rep.duration_s = outcome.duration_s
        rep.output_notebook = task.output
        rep.outputs = outcome.outputs
        if outcome.ok:
            self.status[name] = rep.status = StepStatus.RAN
            self.cache.store(
                self.recorder.decided[name],
                {
                    "step": name,
                    "notebook": str(step.notebook_path),
                    "outputs": outcome.outputs,
                    "run_key": self.recorder.keys[name],
                    "output_notebook": task.output,
                },
            )
            for info in outcome.outputs.values():
                self.digests.remember(info["path"], info)
        else:
            self.status[name] = rep.status = StepStatus.FAILED
            rep.error = outcome.error
            rep.failed_cell = outcome.failed_cell
        self.recorder.close_step(step, task, outcome)
        self.progress(StepFinished(name, rep))

    def unclaimed(self, name: str) -> None:  # every warm kernel of a pipeline has its step
        pass

    def idle(self) -> None:  # the pipeline's scheduler waits without a timeout
        pass

    def aborted(self, running: list[str]) -> None:
        """Interrupted (Ctrl-C) or a bug: journal what is known."""
        for n in running:
            now = time.time()
            self.report.steps[n].status = StepStatus.FAILED
            self.report.steps[n].error = "interrupted"
            self.recorder.close_step(
                self.p.steps[n],
                self.tasks[n],
                StepOutcome(n, False, now, now, "interrupted", killed=True),
            )
        self.report.wall_s = time.perf_counter() - self._t0
        self._close_pipeline_run()
        self._save_state("FAILED")

    def _plan_dry(self) -> None:
        for n in self.p.order:
            step = self.p.steps[n]
            rep = self.report.steps[n]
            upstream_runs = [
                u for u in step.upstream if self.report.steps[u].status == StepStatus.WOULD_RUN
            ]
            if upstream_runs:
                rep.status = StepStatus.WOULD_RUN
                rep.reason = f"upstream step {upstream_runs[0]!r} would run"
                continue
            try:
                run, why = self._decide(step)
            except (OSError, PipelineError) as err:
                rep.status, rep.reason = (
                    StepStatus.WOULD_RUN,
                    f"inputs could not be read: {err}",
                )
                continue
            rep.status = StepStatus.WOULD_RUN if run else StepStatus.WOULD_SKIP
            rep.reason = why


def plan_pipeline(pipeline: Pipeline | str | Path, settings: Settings) -> Pipeline:
    """Load (from a ``pipeline.yaml`` path) and check a pipeline: notebooks readable, kernels
    installed, parameters and inputs valid, data versions present. Raises ``PipelineError``."""
    p = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline)
    data_store = None
    if any(isinstance(v, str) and "@" in v for s in p.steps.values() for v in s.inputs.values()):
        from nbmlops.core.data.store import DataStore

        data_store = DataStore(settings.resolved_data_url)
    return p.validate(data_store)


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
    require_extra("pipelines", *(["dask"] if cluster is not None else []))
    settings = settings or load_settings()
    p = plan_pipeline(pipeline, settings)
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
    run = PipelineRun(
        p,
        settings,
        jobs=check_jobs(jobs),
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
        return self.report.status == StepStatus.RAN


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
    require_extra("pipelines")
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
        name=step_slug(nb_path.stem),
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
    pipe = plan_pipeline(pipe, settings)
    home = settings.home_dir / "notebooks"
    out = (
        Path(output)
        if output
        else home / f"{nb_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.ipynb"
    )
    run = PipelineRun(
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
