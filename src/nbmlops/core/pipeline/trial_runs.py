"""A sweep's trials on the step scheduler: each asked of the Optuna study, run on a kernel
started ahead of need, watched through its journal segment (intermediate values, pruning),
recorded by the step recorder as a child of the sweep's run, and told to the study."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import queue
import random
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.core.pipeline import params as P
from nbmlops.core.pipeline.events import Progress, TrialFinished, TrialStarted
from nbmlops.core.pipeline.execute import StepOutcome, StepTask
from nbmlops.core.pipeline.executors import LocalExecutor
from nbmlops.core.pipeline.recorder import StepRecorder
from nbmlops.core.pipeline.scheduler import Executor, StepScheduler
from nbmlops.core.pipeline.space import SearchSpace
from nbmlops.core.pipeline.spec import Step
from nbmlops.core.pipeline.trials import FAIL, TrialJournal, TrialReport, trial_report

OWNER = f"{socket.gethostname()}:{os.getpid()}"  # marks the trials this process runs
POLL_S = 0.5  # how often running trials' journals are read for intermediate values
_STOP_AFTER_FAILURES = 3  # in a row, before any trial of this sweep completed


@dataclass
class _Live:
    trial: Any  # optuna.trial.Trial
    key: str
    step: Step
    task: StepTask
    params: dict[str, Any]
    journal: TrialJournal
    started: float
    pids: list[int] = field(default_factory=list)
    reported: set[int] = field(default_factory=set)
    pruned_at: tuple[int, float] | None = None


class TrialRun:
    """Up to ``to_run`` trials of ``study``, ``jobs`` at once: a workload of the
    :class:`StepScheduler`. A finite search space is covered once, in random order, before
    the sampler may repeat a combination."""

    def __init__(
        self,
        study: Any,
        *,
        recorder: StepRecorder,
        template: Step,
        space: SearchSpace,
        declared: P.NotebookParameters,
        metric: str,
        prune: bool,
        jobs: int,
        to_run: int,
        total: int,
        seed: int | None,
        journal_dir: Path,
        progress: Progress,
    ):
        self.study = study
        self.recorder = recorder
        self.template = template
        self.space = space
        self.declared = declared
        self.metric = metric
        self.prune = prune
        self.jobs = jobs
        self.to_run = to_run
        self.total = total
        self.journal_dir = journal_dir
        self.progress = progress
        self.distributions = space.distributions()
        self.combos = space.combinations()
        if self.combos is not None:
            random.Random(seed).shuffle(self.combos)
        self.since = time.time()
        self.warm: list[str] = []  # keys of kernels started ahead, not yet given a trial
        self.running: dict[str, _Live] = {}
        self.asked = 0
        self.failures_in_row = 0
        self.completed = 0
        self.stop_reason: str | None = None
        self.first_number = len(study.get_trials(deepcopy=False))
        self.scheduler = StepScheduler(
            self._executor,
            jobs=jobs,
            ship=lambda: recorder.tracker.ship_ended_processes(),
            poll_s=POLL_S,
            stop="interrupt",
        )

    def _executor(self, events: queue.Queue) -> Executor:
        return LocalExecutor(self.jobs, events)

    def run(self) -> None:
        self.scheduler.ensure_executor()
        self.scheduler.run(self)

    # -- tasks -------------------------------------------------------------------------------
    def _step(self, name: str, key: str, parameters: dict[str, Any]) -> tuple[Step, StepTask]:
        step = copy.copy(self.template)
        step.name = name
        step.parameters = parameters
        self.recorder.keys[name] = key
        task = dataclasses.replace(self.recorder.task(step), name=key)
        return step, task

    def _warm_task(self, key: str) -> StepTask:
        """A task to start a kernel for the trial that will run under ``key`` (its environment
        carries the key, so the notebook's tracked cells link to the trial's run)."""
        name = f"warm-{key}"
        task = self._step(name, key, {})[1]
        self.recorder.keys.pop(name, None)
        return task

    def _untried(self) -> dict[str, Any] | None:
        from optuna.trial import TrialState

        if self.combos is None:
            return None
        if self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return None  # enqueued by hand (or left by an earlier sweep): asked first
        seen = {
            tuple(t.params.get(n) for n in self.space.dimensions)
            for t in self.study.get_trials(deepcopy=False)
            if t.state != TrialState.FAIL or t.number >= self.first_number
        }
        for combo in self.combos:
            if tuple(combo.values()) not in seen:
                return combo
        return None

    # -- the scheduler's workload ------------------------------------------------------------
    def warm_candidates(self) -> Iterator[StepTask]:
        if self.stop_reason is not None:
            return
        wanted = min(self.jobs, self.to_run - self.asked - len(self.warm))
        for _ in range(wanted):
            key = uuid.uuid4().hex
            self.warm.append(key)
            yield self._warm_task(key)

    def start_ready(self) -> None:
        from optuna.trial import TrialState

        counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        study = self.study
        while (
            len(self.running) < self.jobs and self.asked < self.to_run and self.stop_reason is None
        ):
            taken = study.get_trials(deepcopy=False, states=counted)
            if len(taken) >= self.total:
                self.stop_reason = (
                    f"another sweep of study {study.study_name!r} is running the remaining trials"
                )
                break
            combo = self._untried()
            if combo is not None:
                study.enqueue_trial(combo)
            trial = study.ask(self.distributions)
            self.asked += 1
            key = self.warm.pop(0) if self.warm else uuid.uuid4().hex
            params = P.validate({**self.space.fixed, **trial.params}, self.declared)
            step, task = self._step(f"trial-{trial.number}", key, params)
            trial.set_user_attr("nbmlops.owner", OWNER)
            trial.set_user_attr("nbmlops.run_key", key)
            trial.set_user_attr("nbmlops.output_notebook", task.output)
            trial.set_user_attr("nbmlops.parameters", params)
            self.recorder.open_step(
                step,
                task,
                tags={
                    "nbmlops.sweep": study.study_name,
                    "nbmlops.sweep.trial": str(trial.number),
                },
            )
            journal = TrialJournal(self.journal_dir, key, self.since)
            self.running[key] = _Live(trial, key, step, task, params, journal, time.time())
            self.progress(TrialStarted(trial.number, dict(trial.params)))
            self.scheduler.submit(key, task)

    def idle(self) -> None:
        for live in self.running.values():
            self._watch(live)

    def unclaimed(self, name: str) -> None:
        """A warm kernel that failed to start, never given a trial."""
        if name in self.warm:
            self.warm.remove(name)

    def finished(self, name: str, outcome: StepOutcome) -> None:
        rep = self._finish(self.running.pop(name), outcome)
        self.progress(TrialFinished(rep))

    def aborted(self, running: list[str]) -> None:
        """Ctrl-C or a bug: the kernels were interrupted; record what is known."""
        from optuna.trial import TrialState

        for live in list(self.running.values()):
            now = time.time()
            self.recorder.close_step(
                live.step,
                live.task,
                StepOutcome(live.key, False, live.started, now, "interrupted"),
                status="KILLED",
                tags={"nbmlops.sweep.state": FAIL, "nbmlops.error": "interrupted"},
            )
            try:
                live.trial.set_user_attr("nbmlops.error", "interrupted")
                self.study.tell(live.trial, state=TrialState.FAIL)
            except Exception:
                pass
        self.running.clear()

    # -- one trial ---------------------------------------------------------------------------
    def _watch(self, live: _Live) -> None:
        """Intermediate values reach the study; the pruner may stop the trial."""
        executor = self.scheduler.executor
        if not live.pids and executor is not None:
            pid = executor.kernel_pid(live.key)
            live.pids = [pid] if pid else []
        for name, value, step in live.journal.poll(live.pids):
            if name != self.metric or step in live.reported or not math.isfinite(value):
                continue
            live.trial.report(value, step)
            live.reported.add(step)
            if self.prune and live.pruned_at is None and live.trial.should_prune():
                live.pruned_at = (step, value)
                if executor is not None:
                    executor.interrupt(live.key)

    def _finish(self, live: _Live, outcome: StepOutcome) -> TrialReport:
        from optuna.trial import TrialState

        self._watch(live)
        if not live.journal.tracked:
            live.journal.locate(None)  # the kernel's pid was never seen: search by tag
            self._watch(live)
        value = live.journal.final(self.metric)
        error: str | None = None
        tags = {"nbmlops.sweep.state": ""}
        metrics: dict[str, float] = {}
        if live.pruned_at is not None:
            state, status = TrialState.PRUNED, "KILLED"
            step, at = live.pruned_at
            error = f"pruned at step {step} ({self.metric} = {at:g})"
        elif not outcome.ok:  # a dead kernel (killed, out of memory) is KILLED
            state = TrialState.FAIL
            status = "KILLED" if getattr(outcome, "killed", False) else "FAILED"
            error = outcome.error or "the notebook failed"
        elif value is None:
            state, status = TrialState.FAIL, "FAILED"
            error = self._missing_metric(live.journal)
        elif not math.isfinite(value):
            state, status = TrialState.FAIL, "FAILED"
            error = f"{self.metric} is {value}, not a finite number"
        else:
            state, status = TrialState.COMPLETE, "FINISHED"
            metrics[self.metric] = value
        tags["nbmlops.sweep.state"] = state.name
        if error:
            tags["nbmlops.error"] = error[:5000]
        duration = outcome.duration_s
        live.trial.set_user_attr("nbmlops.duration_s", round(duration, 3))
        if error:
            live.trial.set_user_attr("nbmlops.error", error[:2000])
        self.recorder.close_step(
            live.step, live.task, outcome, status=status, metrics=metrics, tags=tags
        )
        if state == TrialState.COMPLETE:
            frozen = self.study.tell(live.trial, value)
            self.completed += 1
            self.failures_in_row = 0
        else:
            frozen = self.study.tell(live.trial, state=state)
            if state == TrialState.FAIL:
                self.failures_in_row += 1
                if not self.completed and self.failures_in_row >= _STOP_AFTER_FAILURES:
                    self.stop_reason = (
                        f"stopped after {self.failures_in_row} failed trials in a row, none "
                        f"completed (last error: {error})"
                    )
        rep = trial_report(frozen, earlier=False)
        rep.error = error
        rep.duration_s = duration
        return rep

    def _missing_metric(self, journal: TrialJournal) -> str:
        if not journal.tracked:
            return (
                f"the notebook logged no metric {self.metric!r}: it ran no tracked cell. Compute "
                f"it in a %%track cell ({self.metric} = ...) or log it there with "
                f"nbmlops.log_metric({self.metric!r}, value)"
            )
        names = journal.names()
        close = difflib.get_close_matches(self.metric, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (
            f"the notebook logged no metric {self.metric!r}{hint}; its tracked cells logged: "
            f"{', '.join(names) or '(no metrics)'}"
        )
