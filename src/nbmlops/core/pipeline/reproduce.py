"""Run a recorded notebook run again and say whether it reproduces.

``reproduce(RUN_ID)`` takes what the run recorded (the source notebook artifact, so the code is
what ran; the injected parameters from ``step.json``; each input's path, digest and data
version), restores every input by digest into a fresh scratch folder
(``<home>/reproduce/<RUN_ID>/``), runs the notebook there as a new recorded notebook run (tag
``nbmlops.reproduces``), and compares the outputs' digests and the metrics of the ``%%track``
cell runs below each run.

Inputs come from, in this order: the output of a step reproduced just before (a pipeline run),
the file at the recorded path when it still has the recorded digest, a data version with that
digest in the data store. An input found nowhere is reported and nothing runs: a run with
other inputs is not a reproduction. The user's files are never written: input and output path
parameters are remapped into the scratch folder, which is also the kernel's working folder.

A pipeline run id reproduces each step run recorded under it (in the order they ran); a step
that reads an earlier step's output gets that step's reproduced output when its digest is the
recorded one.

A ``%%track`` run of an interactive notebook is reproduced by replaying the cells of the
kernel's execution history it depends on (``reproduce_replay``), compared the same way, with its
models' digests besides.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from nbmlops.config import Settings, load_settings
from nbmlops.core.extras import require_extra
from nbmlops.core.pipeline import notebook as nbfile
from nbmlops.core.pipeline.events import Progress
from nbmlops.core.pipeline.formatting import short_digest
from nbmlops.core.pipeline.reproduce_inputs import RecordedInputs
from nbmlops.core.pipeline.reproduce_replay import full_run_id
from nbmlops.core.pipeline.reproduce_report import (
    Check,
    ReproduceReport,
    Reproduction,
    metric_checks,
)
from nbmlops.core.pipeline.runner import PipelineRun, plan_pipeline
from nbmlops.core.pipeline.scheduler import StepStatus
from nbmlops.core.pipeline.spec import Pipeline, Step
from nbmlops.core.tracking.session import Tracker, get_tracker
from nbmlops.exceptions import PipelineError

REPRODUCES_TAG = "nbmlops.reproduces"
RESULT_TAG = "nbmlops.reproduce.result"
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def reproduce(
    run_id: str,
    *,
    rtol: float = 0.0,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> ReproduceReport:
    """Run the notebook run (or every step run of the pipeline run) ``run_id`` again with its
    recorded code, parameters and input versions, and compare outputs and metrics.

    ``rtol`` is the relative tolerance for metrics (0: exactly equal). Output files are compared
    by content digest, exactly. Raises PipelineError for an unknown run or a tracked cell run
    of a notebook run; a run that does not reproduce is a report with ``ok`` False.
    """
    require_extra("pipelines")
    settings = settings or load_settings()
    if not isinstance(rtol, (int, float)) or isinstance(rtol, bool) or not rtol >= 0:
        raise PipelineError(f"rtol must be a number >= 0, got {rtol!r}")
    if not math.isfinite(rtol):
        raise PipelineError(f"rtol must be finite, got {rtol!r}")
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id.strip()):
        raise PipelineError(
            f"{run_id!r} is not an MLflow run id",
            fix="Pass the run id shown by `nbmlops run`, `nbmlops pipeline run` or the MLflow UI.",
        )
    run_id = full_run_id(run_id.strip(), settings)
    from nbmlops.core.tracking.store import open_client

    client = open_client(settings)
    run = _get_run(client, run_id, settings)
    tags = run.data.tags
    kind = tags.get("nbmlops.kind")
    if kind not in ("notebook", "pipeline") and not tags.get("mlflow.parentRunId"):
        # a %%track run of an interactive notebook: replay the cells it depends on
        return _reproduce_interactive(client, run, settings, float(rtol), progress)
    if kind not in ("notebook", "pipeline"):
        parent = tags.get("mlflow.parentRunId")
        fix = "Pass the id of a notebook run (`nbmlops run`, a pipeline step) or a pipeline run."
        if parent:
            fix = (
                f"This looks like a tracked cell's run; reproduce the notebook run above it: "
                f"nbmlops reproduce {parent}"
            )
        raise PipelineError(
            f"Run {run_id} is not a notebook or pipeline run (tag nbmlops.kind is "
            f"{kind!r}), so there is no recorded notebook to run again",
            fix=fix,
        )
    runs = [run] if kind == "notebook" else _step_runs(client, run)
    if not runs:
        raise PipelineError(
            f"Pipeline run {run_id} has no step runs to reproduce (every step was cached "
            "or skipped)",
            fix="Reproduce the step runs that produced the outputs (the runs named in the "
            "pipeline's report.json artifact).",
        )
    folder = settings.home_dir / "reproduce" / run_id
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    report = ReproduceReport(run_id, kind, folder, float(rtol))
    experiment = client.get_experiment(run.info.experiment_id).name
    for tag, value in sorted(tags.items()):
        if tag.startswith("nbmlops.step.") and value.startswith(StepStatus.CACHED):
            report.notes.append(
                f"step {tag[len('nbmlops.step.') :]!r} was cached in this pipeline run (not "
                "run): reproduce the run that produced its outputs"
            )
    # Step runs in the order they ran: a step reading an earlier step's output gets the
    # reproduced output when its digest is the recorded one.
    produced: dict[str, tuple[Path, str]] = {}
    for step_run in runs:
        single = kind == "notebook"
        report.runs.append(
            _reproduce_run(
                client,
                step_run,
                experiment,
                folder if single else folder / _run_name(step_run),
                settings,
                rtol,
                produced,
                progress,
                {} if single else {"nbmlops.reproduces_pipeline": run_id},
            )
        )
    (folder / "reproduce.json").write_text(json.dumps(report.to_dict(), indent=1, default=str))
    return report


def _reproduce_interactive(
    client: Any, run: Any, settings: Settings, rtol: float, progress: Progress | None
) -> ReproduceReport:
    """Replay the cells of the execution history a %%track run depends on in a fresh kernel,
    and compare its metrics and models' digests."""
    from nbmlops.core.pipeline.reproduce_replay import (
        model_checks,
        model_digests,
        prepare_replay,
        unseeded_calls,
    )

    run_id = run.info.run_id
    folder = settings.home_dir / "reproduce" / run_id
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    report = ReproduceReport(run_id, "interactive", folder, rtol)
    experiment = client.get_experiment(run.info.experiment_id).name
    name = run.info.run_name or "replay"
    rep = Reproduction(run_id, name, experiment, folder)
    report.runs.append(rep)
    piece, notebook = prepare_replay(settings, run_id, folder)
    counts = ", ".join(f"[{c.get('execution_count')}]" for c in piece.cells)
    rep.checks.append(
        Check("code", f"cells {counts}", f"{notebook.name}", True, f"{piece.skipped} left out")
    )
    if piece.blockers:
        rep.error = "not run: " + "; ".join(f"{b.what}: {b.reason}" for b in piece.blockers)
        (folder / "reproduce.json").write_text(json.dumps(report.to_dict(), default=str))
        return report
    step = Step(name="replay", notebook=notebook, parameters={}, inputs={}, outputs={})
    pipe = plan_pipeline(
        Pipeline(
            steps={"replay": step}, root=folder / "work", name="replay", experiment=experiment
        ),
        settings,
    )
    out = folder / "replay.out.ipynb"
    runner = PipelineRun(
        pipe,
        settings,
        progress=progress,
        use_cache=False,
        parent=False,
        output_notebook=out.resolve(),
        extra_tags={REPRODUCES_TAG: run_id},
        state_dir=folder,
    )
    result = runner.execute().steps["replay"]
    rep.ran = True
    rep.output_notebook = str(out)
    ran = result.status == StepStatus.RAN
    rep.checks.append(Check("status", run.info.status, "FINISHED" if ran else "FAILED", ran))
    if not ran:
        rep.checks[-1].note = result.error or ""
    tracker = get_tracker(settings)
    tracker.ship_ended_processes()
    shipped = tracker.flush(settings.ship_wait_seconds)
    new_id = _new_run_id(client, tracker, run.info.experiment_id, result.run_key)
    same = (
        [r for r in _children(client, client.get_run(new_id)) if r.info.run_name == name]
        if (shipped and new_id)
        else []
    )
    if not same:
        rep.checks.append(
            Check("metrics", "", "no such run in the replay", False, f"run {name!r} not found")
        )
    else:
        new_run = same[-1]  # the run's own cell comes last in the slice
        rep.new_run_id = new_run.info.run_id
        rep.checks.extend(metric_checks([run], [new_run], rtol))
        rep.checks.extend(model_checks(model_digests(client, run), model_digests(client, new_run)))
    if rep.differences:
        calls = unseeded_calls([c["source"] for c in piece.cells])
        if calls:
            rep.notes.append(
                "randomness without a seed: the replayed code calls "
                + ", ".join(calls)
                + "; seed it (random_state=..., np.random.default_rng(SEED)) and train again"
            )
    if rep.new_run_id:
        _record_result(client, rep.new_run_id, rep)
    (folder / "reproduce.json").write_text(json.dumps(report.to_dict(), indent=1, default=str))
    return report


def _get_run(client: Any, run_id: str, settings: Settings) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        if getattr(err, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise PipelineError(
                f"No run {run_id!r} in the MLflow store {settings.resolved_tracking_uri}",
                fix="Check the id (shown by `nbmlops run`, `nbmlops pipeline run` and the MLflow "
                "UI), and that this is the project the run was recorded in.",
            ) from None
        raise PipelineError(
            f"Cannot read run {run_id!r} from {settings.resolved_tracking_uri}: {err.message}"
        ) from None


def _step_runs(client: Any, pipeline_run: Any) -> list[Any]:
    children = client.search_runs(
        [pipeline_run.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{pipeline_run.info.run_id}'",
        max_results=1000,
    )
    steps = [r for r in children if r.data.tags.get("nbmlops.kind") == "notebook"]
    return sorted(steps, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def _children(client: Any, run: Any) -> list[Any]:
    found = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'",
        max_results=1000,
    )
    return sorted(
        found,
        key=lambda r: (
            int(r.data.tags.get("nbmlops.cell.index", "0") or 0),
            r.info.start_time or 0,
            r.info.run_id,
        ),
    )


def _run_name(run: Any) -> str:
    for candidate in (run.data.tags.get("nbmlops.step"), run.info.run_name):
        if candidate and _STEP_NAME.match(candidate):
            return str(candidate)
    return "notebook"


# --- one notebook run ------------------------------------------------------------------------
def _download(client: Any, run_id: str, path: str, dst: Path) -> Path | None:
    from mlflow.exceptions import MlflowException

    from nbmlops.core.tracking.store import quiet_artifact_downloads

    dst.mkdir(parents=True, exist_ok=True)
    try:
        with quiet_artifact_downloads():
            return Path(client.download_artifacts(run_id, path, str(dst)))
    except (MlflowException, OSError):
        return None


def _recorded_files(client: Any, run: Any, folder: Path) -> tuple[Path, dict[str, Any]]:
    """(the source notebook, step.json) of a notebook run, downloaded into ``folder``."""
    run_id = run.info.run_id
    recorded = folder / "recorded"
    step_json = _download(client, run_id, "step.json", recorded)
    sources = [
        a.path
        for a in client.list_artifacts(run_id, "notebook")
        if Path(a.path).name.startswith("source-") and a.path.endswith(".ipynb")
    ]
    if not sources or step_json is None:
        missing = "notebook/source-*.ipynb" if not sources else "step.json"
        raise PipelineError(
            f"Run {run_id} has no {missing} artifact, so it cannot be run again as it ran",
            fix="Only runs recorded by `nbmlops run` or a pipeline (with their artifacts in "
            "the artifact store) can be reproduced.",
        )
    downloaded = _download(client, run_id, sources[0], recorded)
    if downloaded is None:
        raise PipelineError(f"The source notebook of run {run_id} cannot be downloaded")
    # Back under the notebook's own name: the new run records it as source-<name> again.
    source = folder / "source" / Path(sources[0]).name[len("source-") :]
    source.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(downloaded, source)
    try:
        info = json.loads(step_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PipelineError(f"The step.json of run {run_id} cannot be read: {err}") from None
    if not isinstance(info, dict):
        raise PipelineError(f"The step.json of run {run_id} is not a JSON object")
    return source, info


def _mirror(path: str, name: str, work: Path, project: Path) -> Path:
    """Where the scratch copy of ``path`` goes: the same place relative to the project."""
    p = Path(path)
    try:
        rel = p.resolve().relative_to(project.resolve())
    except ValueError:
        return work / "_outside" / name / p.name
    if ".." in rel.parts or not rel.parts:
        return work / "_outside" / name / (p.name or name)
    return work / rel


def _same_path(value: Any, path: str, project: Path) -> bool:
    if not isinstance(value, str) or not value or not path or "\n" in value or len(value) > 4096:
        return False
    p = Path(value)
    candidate = p if p.is_absolute() else project / p
    try:
        return candidate.resolve() == Path(path).resolve()
    except (OSError, RuntimeError):
        return False


def _reproduce_run(
    client: Any,
    run: Any,
    experiment: str,
    folder: Path,
    settings: Settings,
    rtol: float,
    produced: dict[str, tuple[Path, str]],
    progress: Progress | None,
    extra_tags: dict[str, str],
) -> Reproduction:
    run_id = run.info.run_id
    tags = run.data.tags
    name = _run_name(run)
    rep = Reproduction(run_id, name, experiment, folder)
    folder.mkdir(parents=True, exist_ok=True)
    work = folder / "work"
    work.mkdir(parents=True, exist_ok=True)
    project = settings.project_dir
    source, info = _recorded_files(client, run, folder)

    # The code: the recorded source notebook, checked against the recorded code digest.
    recorded_code = tags.get("nbmlops.code_digest", "")
    code_now = nbfile.code_digest(nbfile.read_json(source))
    rep.checks.append(
        Check(
            "code",
            short_digest(recorded_code),
            short_digest(code_now),
            not recorded_code or recorded_code == code_now,
            f"notebook/{Path(source).name} artifact",
        )
    )

    parameters = info.get("parameters")
    if not isinstance(parameters, dict):
        parameters = _params_from_mlflow(run, source)
    parameters = dict(parameters)
    remapped: set[str] = set()

    def remap(name_: str, original: str, new: str) -> None:
        for key, value in parameters.items():
            if key in remapped:
                continue
            if key == name_ or _same_path(value, original, project):
                parameters[key] = new
                remapped.add(key)

    # Inputs, by digest.
    finder = RecordedInputs(settings, produced)
    step_inputs: dict[str, str] = {}
    recorded_inputs = info.get("inputs") or {}
    if not recorded_inputs and tags.get("nbmlops.inputs"):
        try:
            recorded_inputs = {
                n: {"digest": d, "path": "", "ref": None}
                for n, d in json.loads(tags["nbmlops.inputs"]).items()
            }
        except ValueError:
            recorded_inputs = {}
    for iname, entry in sorted(recorded_inputs.items()):
        digest = str(entry.get("digest") or "")
        path = str(entry.get("path") or "")
        ref = entry.get("ref")
        if ref and not path:
            check, use = finder.data(iname, str(ref), digest)
            rep.checks.append(check)
            if use is not None:
                step_inputs[iname] = use
                if parameters.get(iname) == ref:
                    parameters[iname] = use
                remapped.add(iname)
            continue
        dest = _mirror(path or iname, iname, work, project)
        check = finder.file(iname, path, digest, dest)
        rep.checks.append(check)
        if check.match:
            step_inputs[iname] = str(dest)
            remap(iname, path, str(dest))
    bad = [
        c.item[len("input ") :] for c in rep.checks if c.item.startswith("input ") and not c.match
    ]
    if bad:
        rep.error = (
            f"not run: input(s) {', '.join(bad)} are not available with their recorded "
            "content, so a run now would not be a reproduction. Put the recorded file back, or "
            "commit inputs to the data store (`nbmlops data commit`) before the runs you want "
            "to reproduce"
        )
        return rep

    # Outputs: into the scratch folder.
    recorded_outputs = _recorded_outputs(tags, info)
    output_paths = {
        n: str((info.get("outputs") or {}).get(n, {}).get("path") or "") for n in recorded_outputs
    }
    step_outputs: dict[str, str] = {}
    for oname in sorted(recorded_outputs):
        dest = _mirror(output_paths[oname] or oname, oname, work, project)
        dest.parent.mkdir(parents=True, exist_ok=True)
        step_outputs[oname] = str(dest)
        remap(oname, output_paths[oname], str(dest))
    for key, value in parameters.items():
        if key not in remapped and isinstance(value, str) and os.path.isabs(value):
            rep.notes.append(
                f"parameter {key!r} ({value}) is not a declared input or output: passed as recorded"
            )

    step = Step(
        name=name,
        notebook=source,
        parameters=parameters,
        inputs=step_inputs,
        outputs=step_outputs,
        kernel=tags.get("nbmlops.kernel") or None,
    )
    pipe = plan_pipeline(
        Pipeline(steps={name: step}, root=work, name=name, experiment=experiment), settings
    )
    out = folder / f"{name}.ipynb"
    # The step cache and digests stay in the scratch folder: its outputs must never answer a
    # cache lookup of the project.
    runner = PipelineRun(
        pipe,
        settings,
        progress=progress,
        use_cache=False,
        parent=False,
        output_notebook=out.resolve(),
        extra_tags={REPRODUCES_TAG: run_id, **extra_tags},
        state_dir=folder,
    )
    result = runner.execute().steps[name]
    rep.ran = True
    rep.output_notebook = str(out)

    # The status as the report knows it; replaced by MLflow's (FAILED or KILLED) once shipped.
    status = Check(
        "status",
        run.info.status,
        "FINISHED" if result.status == StepStatus.RAN else "FAILED",
        False,
        result.error or "",
    )
    status.match = status.recorded == status.now
    rep.checks.append(status)

    for oname, digest in sorted(recorded_outputs.items()):
        info_now = result.outputs.get(oname)
        now = info_now["digest"] if info_now else None
        rep.checks.append(
            Check(
                f"output {oname}",
                short_digest(digest),
                short_digest(now) if now else "(not written)",
                now == digest,
            )
        )
        if info_now and output_paths[oname]:
            produced[output_paths[oname]] = (Path(info_now["path"]), info_now["digest"])

    # Metrics of the tracked cells below each run, once the new ones are in MLflow.
    tracker = get_tracker(settings)
    tracker.ship_ended_processes()  # kernels that ended since the run's own request
    shipped = tracker.flush(settings.ship_wait_seconds)
    new_id = _new_run_id(client, tracker, run.info.experiment_id, result.run_key)
    rep.new_run_id = new_id
    if not shipped or new_id is None:
        rep.checks.append(
            Check(
                "metrics",
                "",
                "not in MLflow yet",
                False,
                f"the new runs did not reach {settings.resolved_tracking_uri} within "
                f"{settings.ship_wait_seconds:g}s; they are safe in the journal",
            )
        )
        return rep
    new_run = client.get_run(new_id)
    status.now = new_run.info.status
    status.match = status.recorded == status.now
    rep.checks.extend(metric_checks(_children(client, run), _children(client, new_run), rtol))
    _record_result(client, new_id, rep)
    return rep


def _params_from_mlflow(run: Any, source: Path) -> dict[str, Any]:
    """Parameters from MLflow's strings, typed by the notebook's defaults (older runs)."""
    from nbmlops.core.pipeline import params as P

    declared = P.read_parameters(source)
    return {
        k: P.parse_cli_value(v, declared.parameters.get(k))
        for k, v in run.data.params.items()
        if k in declared.parameters
    }


def _recorded_outputs(tags: dict[str, str], info: dict[str, Any]) -> dict[str, str]:
    try:
        outputs = json.loads(tags.get("nbmlops.outputs") or "{}")
    except ValueError:
        outputs = {}
    if not outputs:
        outputs = {n: i.get("digest") for n, i in (info.get("outputs") or {}).items()}
    return {str(n): str(d) for n, d in outputs.items() if d}


def _new_run_id(client: Any, tracker: Tracker, experiment_id: str, key: str | None) -> str | None:
    if not key:
        return None
    shipper = getattr(tracker, "_shipper", None)
    if shipper is not None and key in shipper.run_ids:
        return str(shipper.run_ids[key])
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`nbmlops.run_key` = '{key}'", max_results=1
    )
    return found[0].info.run_id if found else None


def _record_result(client: Any, run_id: str, rep: Reproduction) -> None:
    """The verdict on the new run (known only once its cell runs are in MLflow)."""
    try:
        client.set_tag(run_id, RESULT_TAG, "match" if rep.ok else "differs")
        staged = rep.folder / "reproduce-result.json"
        staged.write_text(json.dumps(rep.to_dict(), indent=1, default=str))
        client.log_artifact(run_id, str(staged))
    except Exception as err:  # the comparison stands without it
        rep.notes.append(f"the verdict could not be recorded on run {run_id}: {err}")
