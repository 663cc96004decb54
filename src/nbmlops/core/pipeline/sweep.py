"""Optuna sweeps over a notebook: each trial is one papermill run of the notebook, recorded as a
child run of the sweep's own run, scored by a metric its tracked cells log.

```text
nbmlops sweep train.ipynb --param 'C=loguniform(0.001,10)' --param 'penalty=choice(l1,l2)' \
    --trials 30 --jobs 2 --metric val_auc --maximize [--prune]
```

Everything given is checked before any kernel starts: the search space parses, each name is in
the notebook's ``parameters`` cell, each range or choice fits the type of that parameter's
default, the metric name is valid, and a study resumed under the same name was run over the same
space, metric and direction. The study lives in ``<home>/optuna.db`` (SQLite through Optuna's
RDB storage), so running the same sweep again adds trials up to ``--trials`` in all.

Trials run on the step scheduler (:mod:`nbmlops.core.pipeline.trial_runs`): kernels started ahead
of need, ``--jobs`` notebooks at once, and the step recorder's run records (executed notebook,
source, parameters) with a parent link to the sweep run. A trial's score is read from its kernel's
journal segment (the runs whose parent is the trial run) while the kernel is still up: the value
MLflow will show for the metric on the last tracked cell that bound it or passed it to
``nbmlops.log_metric``. Values logged with ``step=`` are the trial's intermediate values; with
pruning on, a trial the pruner stops is interrupted in its kernel (SIGINT, as Jupyter's
interrupt button) and recorded as pruned. A finite search space (choices and int ranges) is
covered once, in random order, before the sampler may repeat a combination.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nbmlops.config import Settings, load_settings
from nbmlops.core.extras import require_extra
from nbmlops.core.pipeline.events import Progress, SweepFinished, SweepPlanned, no_progress
from nbmlops.core.pipeline.formatting import folder_slug
from nbmlops.core.pipeline.recorder import StepRecorder
from nbmlops.core.pipeline.runner import plan_pipeline
from nbmlops.core.pipeline.scheduler import check_jobs
from nbmlops.core.pipeline.space import parse_space
from nbmlops.core.pipeline.spec import Pipeline, Step
from nbmlops.core.pipeline.sweep_outputs import draw_plots, write_best_params, write_trials_csv
from nbmlops.core.pipeline.trial_runs import OWNER, TrialRun
from nbmlops.core.pipeline.trials import COMPLETE, FAIL, PRUNED, SweepReport, trial_report
from nbmlops.core.process import pid_alive
from nbmlops.core.tracking.session import METRIC_NAME, get_tracker
from nbmlops.exceptions import PipelineError

_TEMPLATE = "trial"
_SWEEP_LINE = re.compile(r"^\s*%sweep\b", re.M)


# --- the study -------------------------------------------------------------------------------
def storage_url(settings: Settings) -> str:
    return f"sqlite:///{(settings.home_dir / 'optuna.db').resolve().as_posix()}"


def open_storage(settings: Settings) -> Any:
    """The Optuna RDB storage of the project's studies (``<home>/optuna.db``)."""
    import optuna

    settings.home_dir.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(
        storage_url(settings), engine_kwargs={"connect_args": {"timeout": 30}}
    )


def _attrs_mismatch(study: Any, expected: dict[str, Any]) -> str | None:
    attrs = study.user_attrs
    labels = {
        "nbmlops.notebook": "notebook",
        "nbmlops.metric": "metric",
        "nbmlops.space": "search space",
        "nbmlops.fixed": "fixed parameters",
    }
    for key, label in labels.items():
        if key not in attrs:
            continue
        same = (
            Path(str(attrs[key])).name == Path(str(expected[key])).name  # the project may move
            if key == "nbmlops.notebook"
            else attrs[key] == expected[key]
        )
        if not same:
            return f"its {label} was {_show(attrs[key])}, this sweep's is {_show(expected[key])}"
    return None


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={v}" for k, v in value.items()) + "}"
    return repr(value)


def _pid_alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # cannot tell: leave it
    return not pid.isdigit() or pid_alive(int(pid))  # unreadable: leave it


def _fail_stale(study: Any, storage: Any) -> int:
    """Trials left RUNNING by a sweep process on this host that has died are marked FAIL."""
    from optuna.trial import TrialState

    n = 0
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("nbmlops.owner")
        if owner and owner != OWNER and not _pid_alive(owner):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_user_attr(trial_id, "nbmlops.error", "the sweep process died")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            n += 1
    return n


# --- the sweep -------------------------------------------------------------------------------
def run_sweep(
    notebook: str | Path,
    space: Iterable[str] | Mapping[str, Any],
    *,
    metric: str,
    trials: int = 20,
    maximize: bool = False,
    jobs: int = 1,
    study: str | None = None,
    prune: bool = False,
    prune_startup: int = 5,
    out: str | Path | None = None,
    experiment: str | None = None,
    kernel: str | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    seed: int | None = None,
    sampler: Any = None,
    wait: bool = True,
    progress: Progress | None = None,
    settings: Settings | None = None,
) -> SweepReport:
    """Run an Optuna study over ``notebook``: up to ``trials`` trials in all (a study run
    before under the same name continues), ``jobs`` at once, each a recorded notebook run
    scored by ``metric``. Everything is checked before any kernel starts."""
    require_extra("pipelines", "sweep")
    sweep = _Sweep(
        notebook,
        space,
        metric=metric,
        trials=trials,
        maximize=maximize,
        jobs=jobs,
        study=study,
        prune=prune,
        prune_startup=prune_startup,
        out=out,
        experiment=experiment,
        kernel=kernel,
        cwd=cwd,
        timeout=timeout,
        seed=seed,
        sampler=sampler,
        progress=progress,
        settings=settings or load_settings(),
    )
    return sweep.run(wait=wait)


class _Sweep:
    def __init__(
        self,
        notebook: str | Path,
        space: Iterable[str] | Mapping[str, Any],
        *,
        metric: str,
        trials: int,
        maximize: bool,
        jobs: int,
        study: str | None,
        prune: bool,
        prune_startup: int,
        out: str | Path | None,
        experiment: str | None,
        kernel: str | None,
        cwd: str | Path | None,
        timeout: float | None,
        seed: int | None,
        sampler: Any,
        progress: Progress | None,
        settings: Settings,
    ):
        self.settings = settings
        self.progress: Progress = progress or no_progress
        if not isinstance(metric, str) or not METRIC_NAME.match(
            metric
        ):  # checked before kernels start
            raise PipelineError(
                f"--metric {metric!r} is not a valid metric name",
                fix="Use the name the notebook logs: letters, digits, '_', '-', '.', ' ' and "
                "'/' (at most 250 characters).",
            )
        if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
            raise PipelineError(f"--trials must be a positive integer, got {trials!r}")
        if not isinstance(prune_startup, int) or prune_startup < 0:
            raise PipelineError(f"--prune-startup must be 0 or more, got {prune_startup!r}")
        self.metric = metric
        self.total = trials
        self.jobs = check_jobs(jobs)
        self.maximize = bool(maximize)
        self.direction = "maximize" if maximize else "minimize"
        self.prune = prune
        self.prune_startup = prune_startup
        self.seed = seed
        self.sampler = sampler
        root = Path(cwd or Path.cwd()).resolve()
        nb_path = Path(notebook)
        nb_path = (nb_path if nb_path.is_absolute() else Path.cwd() / nb_path).resolve()
        self.study_name = study or f"{nb_path.stem}-{metric}"
        if not isinstance(self.study_name, str) or not self.study_name.strip():
            raise PipelineError("--study must be a non-empty name")
        step = Step(name=_TEMPLATE, notebook=nb_path, timeout=timeout, kernel=kernel)
        pipe = Pipeline(
            steps={_TEMPLATE: step},
            root=root,
            name=self.study_name,
            experiment=experiment or settings.experiment or nb_path.stem,
        )
        self.pipeline = plan_pipeline(pipe, settings)  # notebook readable, kernel installed
        self.step = self.pipeline.steps[_TEMPLATE]
        for cell in self.step.nb["cells"]:
            if cell.get("cell_type") == "code" and _SWEEP_LINE.search(cell.get("source", "")):
                raise PipelineError(
                    f"{nb_path.name} runs %sweep itself: each trial would start another sweep",
                    where=str(nb_path),
                    fix="Sweep a notebook that does the work, from another notebook or the "
                    "command line.",
                )
        assert self.step.declared is not None
        self.declared = self.step.declared
        self.space = parse_space(space, self.declared)
        self.notebook = nb_path
        self.out_dir = (
            Path(out).resolve()
            if out
            else settings.home_dir / "sweeps" / folder_slug(self.study_name, "sweep")
        )
        self.experiment = self.pipeline.experiment_name
        self._run_key: str | None = None
        self._sweep_params: dict[str, Any] = {}

    # -- the study ---------------------------------------------------------------------------
    def _open_study(self) -> Any:
        import optuna

        storage = self.storage = open_storage(self.settings)
        expected = {
            "nbmlops.notebook": str(self.notebook),
            "nbmlops.metric": self.metric,
            "nbmlops.space": self.space.canonical(),
            "nbmlops.fixed": dict(self.space.fixed),
        }
        existing = {s.study_name: s for s in storage.get_all_studies()}
        where = f"study {self.study_name!r} in {storage_url(self.settings)}"
        if self.study_name in existing:
            old = existing[self.study_name]
            directions = [d.name.lower() for d in old.directions]
            if directions != [self.direction]:
                raise PipelineError(
                    f"Study {self.study_name!r} {'maximizes' if directions == ['maximize'] else 'minimizes'} "
                    f"its metric; this sweep asks to {self.direction} it",
                    where=where,
                    fix="Pass the same --maximize/--minimize to resume it, or --study NEW-NAME "
                    "to start another study.",
                )
            mismatch = _attrs_mismatch(old, expected)
            if mismatch:
                raise PipelineError(
                    f"Study {self.study_name!r} cannot be resumed by this sweep: {mismatch}",
                    where=where,
                    fix="Give the same notebook, metric and --param values to resume it, or "
                    "pass --study NEW-NAME to start another study.",
                )
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=self.prune_startup)
            if self.prune
            else optuna.pruners.NopPruner()
        )
        sampler = self.sampler or optuna.samplers.TPESampler(seed=self.seed)
        study = optuna.create_study(
            storage=storage,
            study_name=self.study_name,
            direction="maximize" if self.maximize else "minimize",
            load_if_exists=True,
            sampler=sampler,
            pruner=pruner,
        )
        for key, value in expected.items():
            if study.user_attrs.get(key) != value:
                study.set_user_attr(key, value)
        return study

    # -- the run -----------------------------------------------------------------------------
    def run(self, wait: bool = True) -> SweepReport:
        import optuna

        verbosity = optuna.logging.get_verbosity()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
                optuna.logging.set_verbosity(optuna.logging.WARNING)
                return self._run(wait)
        finally:
            optuna.logging.set_verbosity(verbosity)

    def _run(self, wait: bool) -> SweepReport:
        from optuna.trial import TrialState

        t0 = time.perf_counter()
        study = self._open_study()
        notes: list[str] = []
        stale = _fail_stale(study, self.storage)
        if stale:
            notes.append(f"{stale} trial(s) left running by a sweep that died were marked FAIL")
        done_states = (TrialState.COMPLETE, TrialState.PRUNED)
        before = study.get_trials(deepcopy=False)
        before_numbers = {t.number for t in before}
        earlier = sum(1 for t in before if t.state in done_states)
        to_run = max(0, self.total - earlier)
        self.progress(
            SweepPlanned(
                study=self.study_name,
                storage=storage_url(self.settings),
                metric=self.metric,
                earlier=earlier,
                to_run=to_run,
                total=self.total,
            )
        )
        if earlier and to_run:
            notes.append(
                f"resumed study {self.study_name!r}: {earlier} earlier trial(s), {to_run} more "
                f"to reach {self.total}"
            )
        elif not to_run:
            notes.append(
                f"study {self.study_name!r} already has {earlier} trial(s) (asked for "
                f"{self.total}): nothing to run; pass a larger --trials to add more"
            )
        run_key = None
        if to_run:
            run_key = uuid.uuid4().hex
            self._execute(study, run_key, to_run, notes)
        try:
            report = self._report(study, before_numbers, earlier, notes, run_key)
        except BaseException:
            self._close_sweep_run(None, "FAILED")
            raise
        report.wall_s = time.perf_counter() - t0
        if run_key is not None:
            self._close_sweep_run(report, "FINISHED" if report.ok else "FAILED")
            tracker = get_tracker(self.settings)
            tracker.ship_ended_processes()
            if wait:
                report.shipped = tracker.flush(self.settings.ship_wait_seconds)
        self.progress(SweepFinished(report))
        return report

    def _open_sweep_run(self, run_key: str, to_run: int) -> None:
        tracker = get_tracker(self.settings)
        tags = {
            "mlflow.source.type": "JOB",
            "mlflow.source.name": str(self.notebook),
            "nbmlops.kind": "sweep",
            "nbmlops.sweep": self.study_name,
            "nbmlops.sweep.storage": storage_url(self.settings),
        }
        tracker.open_run(self.study_name, self.experiment, tags, key=run_key)
        self._sweep_params = {
            "notebook": str(self.notebook),
            "metric": self.metric,
            "direction": self.direction,
            "study": self.study_name,
            "trials": self.total,
            "trials_this_run": to_run,
            "jobs": self.jobs,
            "prune": self.prune,
            **{f"space.{n}": c for n, c in self.space.canonical().items()},
            **{f"fixed.{n}": v for n, v in self.space.fixed.items()},
        }

    def _execute(self, study: Any, run_key: str, to_run: int, notes: list[str]) -> None:
        self._open_sweep_run(run_key, to_run)
        self._run_key = run_key
        recorder = StepRecorder(
            self.pipeline, self.settings, outputs_dir=self.out_dir / "trials", parent_kind="sweep"
        )
        recorder.parent_key = run_key
        trials = TrialRun(
            study,
            recorder=recorder,
            template=self.step,
            space=self.space,
            declared=self.declared,
            metric=self.metric,
            prune=self.prune,
            jobs=self.jobs,
            to_run=to_run,
            total=self.total,
            seed=self.seed,
            journal_dir=self.settings.journal_dir,
            progress=self.progress,
        )
        try:
            trials.run()
        except BaseException:
            self._close_sweep_run(None, "KILLED")
            raise
        finally:
            recorder.tracker.ship_ended_processes()
        if trials.stop_reason:
            notes.append(trials.stop_reason)
        if trials.combos is not None and len(trials.combos) < self.total:
            notes.append(
                f"the search space has {len(trials.combos)} combination(s); trials beyond that "
                "repeat them"
            )

    # -- the end -----------------------------------------------------------------------------
    def _report(
        self,
        study: Any,
        before: set[int],
        earlier: int,
        notes: list[str],
        run_key: str | None,
    ) -> SweepReport:
        from optuna.trial import TrialState

        all_trials = study.get_trials(deepcopy=False)
        report = SweepReport(
            study=self.study_name,
            storage=storage_url(self.settings),
            notebook=str(self.notebook),
            metric=self.metric,
            direction=self.direction,
            total=self.total,
            earlier=earlier,
            trials=[
                trial_report(t, t.number in before)
                for t in all_trials
                if t.state != TrialState.WAITING
            ],
            out_dir=self.out_dir,
            experiment=self.experiment,
            notes=notes,
            run_key=run_key,
        )
        complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
        if complete:
            best = study.best_trial
            report.best = next(t for t in report.trials if t.number == best.number)
            parameters = best.user_attrs.get("nbmlops.parameters") or {
                **self.space.fixed,
                **best.params,
            }
            report.best_params_path = self.out_dir / "best_params.yaml"
            write_best_params(report, parameters, report.best_params_path)
        report.plots, plot_notes = draw_plots(study, self.out_dir)
        report.notes += plot_notes
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_trials_csv(report, self.out_dir / "trials.csv")
        return report

    def _close_sweep_run(self, report: SweepReport | None, status: str) -> None:
        run_key = self._run_key
        if run_key is None:
            return
        self._run_key = None
        tracker = get_tracker(self.settings)
        artifacts = tracker.run_staging(run_key) / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        params = dict(self._sweep_params)
        metrics: dict[str, float] = {}
        tags: dict[str, str] = {}
        if report is not None:
            ran = report.counts(report.ran)
            metrics = {
                "trials_complete": ran[COMPLETE],
                "trials_pruned": ran[PRUNED],
                "trials_failed": ran[FAIL],
                "trials_in_study": len(report.trials),
                "wall_s": report.wall_s,
            }
            if report.best is not None and report.best.value is not None:
                metrics[self.metric] = report.best.value
                params["best_trial"] = report.best.number
                params.update({f"best.{k}": v for k, v in report.best.params.items()})
                tags["nbmlops.sweep.best"] = json.dumps(report.best.params, default=str)
            files = [report.best_params_path, *report.plots.values(), self.out_dir / "trials.csv"]
            for path in files:
                if path is not None and path.is_file():
                    shutil.copyfile(path, artifacts / path.name)
            (artifacts / "sweep.json").write_text(
                json.dumps(report.to_dict(), indent=1, default=str)
            )
            if report.notes:
                tags["nbmlops.sweep.notes"] = "; ".join(report.notes)[:5000]
        tracker.close_run(
            run_key, self.experiment, status, params=params, metrics=metrics, tags=tags
        )
