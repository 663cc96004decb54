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
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.config import Settings, load_settings
from nbmlops.core.data.digest_files import digest_file
from nbmlops.core.pipeline import notebook as nbfile
from nbmlops.core.pipeline.runner import RAN, Progress, _Run, _validated
from nbmlops.core.pipeline.spec import Pipeline, Step
from nbmlops.core.tracking.session import Tracker, get_tracker
from nbmlops.exceptions import NbmlopsError, PipelineError

REPRODUCES_TAG = "nbmlops.reproduces"
RESULT_TAG = "nbmlops.reproduce.result"
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass
class Check:
    """One line of the comparison: an input, the code, the status, an output or a metric."""

    item: str
    recorded: str
    now: str
    match: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Reproduction:
    """One notebook run reproduced (or refused: ``ran`` False and ``error`` says why)."""

    run_id: str
    name: str
    experiment: str
    folder: Path
    checks: list[Check] = field(default_factory=list)
    ran: bool = False
    error: str | None = None
    new_run_id: str | None = None
    output_notebook: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.ran and self.error is None and all(c.match for c in self.checks)

    @property
    def differences(self) -> list[Check]:
        return [c for c in self.checks if not c.match]

    def table(self) -> list[tuple[str, str, str, str]]:
        return [(c.item, c.recorded, c.now, "yes" if c.match else "NO") for c in self.checks]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "experiment": self.experiment,
            "folder": str(self.folder),
            "ok": self.ok,
            "ran": self.ran,
            "error": self.error,
            "new_run_id": self.new_run_id,
            "output_notebook": self.output_notebook,
            "checks": [c.to_dict() for c in self.checks],
            "notes": list(self.notes),
        }


@dataclass
class ReproduceReport:
    """What ``reproduce`` did: one :class:`Reproduction` per notebook run."""

    run_id: str
    kind: str  # "notebook" | "pipeline"
    folder: Path
    rtol: float
    runs: list[Reproduction] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.ok for r in self.runs)

    @property
    def differences(self) -> list[tuple[str, Check]]:
        return [(r.name, c) for r in self.runs for c in r.differences]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "folder": str(self.folder),
            "rtol": self.rtol,
            "ok": self.ok,
            "runs": [r.to_dict() for r in self.runs],
            "notes": list(self.notes),
        }


# --- the entry point ---------------------------------------------------------------------------
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
    by content digest, exactly. Raises PipelineError for an unknown run or one that is not a
    notebook or pipeline run; a run that does not reproduce is a report with ``ok`` False.
    """
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
    run_id = run_id.strip()
    from nbmlops.core.tracking.store import open_client

    client = open_client(settings)
    run = _get_run(client, run_id, settings)
    tags = run.data.tags
    kind = tags.get("nbmlops.kind")
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
        if tag.startswith("nbmlops.step.") and value.startswith("cached"):
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


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "(none)"


def _copy_checked(src: Path, dest: Path, digest: str) -> bool:
    """Copy ``src`` to ``dest``; True when the copy has ``digest`` (else it is removed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(src, dest)
    except OSError:
        return False
    if digest_file(dest).digest == digest:
        return True
    dest.unlink(missing_ok=True)
    return False


class _Inputs:
    """Finds each recorded input by digest and puts it in the scratch folder."""

    def __init__(self, settings: Settings, produced: dict[str, tuple[Path, str]]):
        self.settings = settings
        self.produced = produced
        self._store: Any = None

    @property
    def store(self) -> Any:
        if self._store is None:
            from nbmlops.core.data.store import DataStore

            self._store = DataStore(self.settings.resolved_data_url)
        return self._store

    def versions(self, digest: str) -> list[Any]:
        try:
            return [v for v in self.store.find_digest(digest) if v.kind == "file"]
        except (NbmlopsError, OSError):
            return []

    def checkout(self, version: Any, dest: Path) -> bool:
        from nbmlops.core.access import check_dataset
        from nbmlops.core.audit import AuditLog

        user = self.settings.resolved_user
        check_dataset(self.settings.access, user, "read", version.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.store.checkout_path(version.ref, dest)
        except NbmlopsError:
            return False
        AuditLog(self.settings.audit_path).append(
            "data.checkout",
            version.ref,
            user=user,
            details={"digest": version.digest, "dest": str(dest), "for": "reproduce"},
        )
        return True

    def file(self, name: str, path: str, digest: str, dest: Path) -> Check:
        item = f"input {name}"
        earlier = self.produced.get(path)
        if earlier is not None and earlier[1] == digest and _copy_checked(earlier[0], dest, digest):
            return Check(item, _short(digest), _short(digest), True, "reproduced output")
        current: str | None = None
        if path and os.path.isfile(path):
            if _copy_checked(Path(path), dest, digest):
                return Check(item, _short(digest), _short(digest), True, f"unchanged at {path}")
            try:
                current = digest_file(path).digest
            except OSError:
                current = None
        for version in self.versions(digest):
            if self.checkout(version, dest):
                return Check(
                    item, _short(digest), _short(digest), True, f"restored from {version.ref}"
                )
        now = f"changed ({_short(current)})" if current else "missing"
        return Check(
            item,
            _short(digest),
            now,
            False,
            f"{path or name} {'changed since the run' if current else 'is gone'} and no data "
            "version with the recorded digest is in the data store",
        )

    def data(self, name: str, ref: str, digest: str) -> tuple[Check, str | None]:
        item = f"input {name}"
        try:
            current = self.store.get(ref)
        except (NbmlopsError, OSError):
            current = None
        if current is not None and current.digest == digest:
            return Check(item, _short(digest), _short(digest), True, f"data version {ref}"), ref
        same = next(iter(self.store_versions(digest)), None)
        if same is not None:
            return (
                Check(item, _short(digest), _short(digest), True, f"as {same.ref}"),
                same.ref,
            )
        now = _short(current.digest) if current is not None else "missing"
        return (
            Check(item, _short(digest), now, False, f"no data version of {ref}'s content"),
            None,
        )

    def store_versions(self, digest: str) -> list[Any]:
        try:
            return list(self.store.find_digest(digest))
        except (NbmlopsError, OSError):
            return []


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
            _short(recorded_code),
            _short(code_now),
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
    finder = _Inputs(settings, produced)
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
    pipe = _validated(
        Pipeline(steps={name: step}, root=work, name=name, experiment=experiment), settings
    )
    out = folder / f"{name}.ipynb"
    # The step cache and digests stay in the scratch folder: its outputs must never answer a
    # cache lookup of the project.
    runner = _Run(
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
        "FINISHED" if result.status == RAN else "FAILED",
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
                _short(digest),
                _short(now) if now else "(not written)",
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
    rep.checks.extend(_metric_checks(_children(client, run), _children(client, new_run), rtol))
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


def _label(runs: Iterable[Any]) -> dict[str, Any]:
    """Child runs by name; a name used twice gets #2, #3 in the order the cells ran."""
    out: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for r in runs:
        name = r.info.run_name or r.info.run_id
        seen[name] = seen.get(name, 0) + 1
        out[name if seen[name] == 1 else f"{name}#{seen[name]}"] = r
    return out


def _fmt(value: float | None) -> str:
    return "(missing)" if value is None else f"{value:.10g}"


def _close(a: float, b: float, rtol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)


def _metric_checks(before: list[Any], after: list[Any], rtol: float) -> list[Check]:
    old, new = _label(before), _label(after)
    checks: list[Check] = []
    for label in [*old, *(n for n in new if n not in old)]:
        a, b = old.get(label), new.get(label)
        if a is None or b is None:
            checks.append(
                Check(
                    f"run {label}",
                    a.info.status if a is not None else "(none)",
                    b.info.status if b is not None else "(none)",
                    False,
                    "a tracked cell run on one side only",
                )
            )
            continue
        ma, mb = a.data.metrics, b.data.metrics
        for metric in [*sorted(ma), *sorted(m for m in mb if m not in ma)]:
            va, vb = ma.get(metric), mb.get(metric)
            match = va is not None and vb is not None and _close(va, vb, rtol)
            note = ""
            if va is not None and vb is not None and not match and va != 0:
                note = f"relative difference {abs(vb - va) / abs(va):.3g}"
            checks.append(Check(f"metric {label}.{metric}", _fmt(va), _fmt(vb), match, note))
    return checks


def _record_result(client: Any, run_id: str, rep: Reproduction) -> None:
    """The verdict on the new run (known only once its cell runs are in MLflow)."""
    try:
        client.set_tag(run_id, RESULT_TAG, "match" if rep.ok else "differs")
        staged = rep.folder / "reproduce-result.json"
        staged.write_text(json.dumps(rep.to_dict(), indent=1, default=str))
        client.log_artifact(run_id, str(staged))
    except Exception as err:  # the comparison stands without it
        rep.notes.append(f"the verdict could not be recorded on run {run_id}: {err}")
