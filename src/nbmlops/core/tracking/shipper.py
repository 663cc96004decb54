"""Ship journal records to MLflow: in a background thread for the live process, and by replay
for segments whose process died.

Shipping one run is idempotent, so a retry after any failure (store locked, server down,
process killed mid-ship) never duplicates anything:
* the MLflow run is found again by its ``nbmlops.run_key`` tag before a new one is created;
* metrics carry the timestamps recorded in the journal, and MLflow's SQL stores drop exact
  duplicates; the sidecar also remembers how many were shipped;
* params, tags, dataset inputs and artifacts are upserts;
* a model is looked up by (run, name) before it is logged;
* the run is set terminated last, so a FINISHED run is always complete.

A record is marked shipped (in the segment's sidecar) only while the store is the one the
settings name: the SQLite file must still be the one the engine opened (a stat before each
mark), and on a server the finished run is read back. A run id the sidecar remembers is read
back before more is shipped to it on a retry or replay; if the store lost it (deleted, replaced)
the sidecar forgets the run and it ships again from the journal, whole.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.config import Settings
from nbmlops.core.tracking import quiet, store
from nbmlops.core.tracking.context import environment_report
from nbmlops.core.tracking.journal import (
    QUARANTINE_DIR,
    Journal,
    RunRecords,
    ShipState,
    mark_shipped,
    now_ms,
    quarantine,
    read_segment,
    read_ship_state,
)
from nbmlops.core.tracking.lineage_events import RunLineage

log = logging.getLogger("nbmlops.shipper")

RUN_KEY_TAG = "nbmlops.run_key"
PARENT_KEY_TAG = "nbmlops.parent_run_key"
BATCH_METRICS = 1000  # MLflow's log_batch limits
BATCH_PARAMS = 100
BATCH_TAGS = 100
_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}
_TRANSIENT_TEXT = (
    "database is locked",
    "onnection",
    "timed out",
    "Timeout",
    "unreachable",
    "Max retries exceeded",
    "disk I/O error",
    " 502",
    " 503",
    " 504",
)


def transient(err: BaseException) -> bool:
    """Will trying again help? True for an unreachable, overloaded or locked store; False for
    a refusal that would be the same next time (a bad value, an unsaveable model)."""
    if isinstance(err, FileNotFoundError):
        return False  # a staged file is gone: trying again cannot bring it back
    if isinstance(err, (ConnectionError, TimeoutError, OSError)):
        return True
    if getattr(err, "error_code", None) in _TRANSIENT_CODES:
        return True
    text = f"{type(err).__name__}: {err}"
    return any(t in text for t in _TRANSIENT_TEXT)


@dataclass
class ShipStats:
    """Counters the UI and tests read: nothing is ever dropped silently."""

    runs_started: int = 0
    runs_finished: int = 0
    runs_killed: int = 0
    metrics: int = 0
    models: int = 0
    retries: int = 0
    stuck_records: int = 0
    part_errors: list[str] = field(default_factory=list)
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class RunShipper:
    """Puts journal runs into one MLflow store. No thread of its own."""

    def __init__(self, settings: Settings, stats: ShipStats | None = None):
        self.settings = settings
        self.stats = stats or ShipStats()
        self._client = None
        self._identity: tuple[int, int] | None = None  # the SQLite file the client writes to
        self._experiments: dict[str, str] = {}
        self._pip_requirements: list[str] | None = None
        self._env_cache: dict[tuple[str, ...], dict[str, Any]] = {}
        self.lineage = RunLineage(settings)
        self.key_ids: dict[str, str] = {}  # run key -> MLflow run id, for parent links
        self.linked: set[str] = set()  # run keys whose parent link is set
        # After the store changed under us, run ids known from before are read back once each.
        self._store_changed = False
        self._verified: set[str] = set()

    @property
    def client(self):
        if self._client is None:
            self._client = store.open_client(self.settings)
            self._identity = store.store_identity(self.settings)
        return self._client

    def _mark(self, segment: Path, record: dict[str, Any]) -> None:
        """Mark a record shipped, if what was written is in the store the settings name."""
        try:
            store.check_store(self.settings, self._identity)
        except store.StoreChangedError:
            self._client = None  # the retry opens the file there now
            self._store_changed = True
            self._verified.clear()
            self._experiments.clear()
            self.key_ids.clear()
            self.linked.clear()
            raise
        mark_shipped(segment, record)

    def _in_store(self, run_id: str) -> bool:
        """Read the run back (one request): False only if the store says it has no such run."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    def _forget(self, segment: Path, key: str, state: ShipState, why: str) -> None:
        log.warning("nbmlops: shipping run %s again: %s", key, why)
        mark_shipped(segment, {"key": key, "forget": why})
        state.forget(key)
        self.key_ids.pop(key, None)
        self.linked.discard(key)

    def _experiment(self, name: str) -> str:
        if name not in self._experiments:
            self._experiments[name] = store.experiment_id(
                self.client, name, self.settings.resolved_artifact_location
            )
        return self._experiments[name]

    # --- start ------------------------------------------------------------------------------
    def ship_start(self, segment: Path, run: RunRecords, state: ShipState, careful: bool) -> str:
        if run.key in state.run_ids:
            known = state.run_ids[run.key]
            if not (careful or self._store_changed) or run.key in self._verified:
                return known
            if self._in_store(known):
                self._verified.add(run.key)
                return known
            why = f"run {known} is not in {self.settings.resolved_tracking_uri} (store replaced)"
            self._forget(segment, run.key, state, why)
        start = run.start or {}
        exp_id = self._experiment(start.get("experiment") or "Default")
        careful = careful or bool(start.get("reopen"))
        run_id = self._find_run(exp_id, run.key) if careful else None
        if run_id is not None and start.get("reopen"):
            self.client.update_run(run_id, status="RUNNING")
        if run_id is None:
            tags = dict(start.get("tags", {}))
            tags[RUN_KEY_TAG] = run.key
            parent_key = tags.get(PARENT_KEY_TAG)
            if parent_key and "mlflow.parentRunId" not in tags:
                parent_id = self.key_ids.get(parent_key) or self._find_run(exp_id, parent_key)
                if parent_id:
                    tags["mlflow.parentRunId"] = parent_id
                    self.linked.add(run.key)
            created = self.client.create_run(
                exp_id,
                start_time=start.get("ts", run.last_ts or now_ms()),
                tags=tags,
                run_name=start.get("name"),
            )
            run_id = created.info.run_id
            self.stats.runs_started += 1
            self.lineage.start(run, run_id)
        self._mark(segment, {"key": run.key, "run_id": run_id})
        self._verified.add(run.key)
        state.run_ids[run.key] = run_id
        self.key_ids[run.key] = run_id
        return run_id

    def _find_run(self, exp_id: str, key: str) -> str | None:
        found = self.client.search_runs(
            [exp_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1
        )
        return found[0].info.run_id if found else None

    # --- end --------------------------------------------------------------------------------
    def ship_end(
        self,
        segment: Path,
        staging_root: Path,
        run: RunRecords,
        state: ShipState,
        careful: bool,
        killed: str | None = None,
    ) -> str:
        from mlflow.entities import Metric, Param, RunTag

        if run.start is None:  # the start line was torn: rebuild what we can
            run.start = {"name": None, "experiment": (run.end or {}).get("experiment"), "tags": {}}
        run_id = self.ship_start(
            segment, run, state, careful=careful or run.key not in state.run_ids
        )
        end = run.end or {}
        staging = staging_root / run.key

        metrics = [
            Metric(m["name"], float(m["value"]), int(m["ts"]), int(m.get("step") or 0))
            for m in [*run.metrics, *end.get("metrics", [])]
        ]
        done = state.metrics_done.get(run.key, 0)
        for i in range(done, len(metrics), BATCH_METRICS):
            chunk = metrics[i : i + BATCH_METRICS]
            self.client.log_batch(run_id, metrics=chunk)
            self._mark(segment, {"key": run.key, "metrics_done": i + len(chunk)})
            self.stats.metrics += len(chunk)
        state.metrics_done[run.key] = len(metrics)

        params = [Param(k, str(v)) for k, v in end.get("params", {}).items()]
        for i in range(0, len(params), BATCH_PARAMS):
            self._part(
                run_id, "params", self.client.log_batch, run_id, params=params[i : i + BATCH_PARAMS]
            )
        tags = dict(end.get("tags", {}))
        if killed:
            tags["nbmlops.failure"] = "killed"
            tags["nbmlops.status_reason"] = killed
        tag_list = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(tag_list), BATCH_TAGS):
            self._part(
                run_id, "tags", self.client.log_batch, run_id, tags=tag_list[i : i + BATCH_TAGS]
            )

        datasets = end.get("datasets", [])
        if datasets:
            self._part(
                run_id,
                "datasets",
                self.client.log_inputs,
                run_id,
                datasets=self._dataset_inputs(run, datasets),
            )

        artifacts = staging / "artifacts"
        modules = end.get("modules")
        if modules:
            artifacts.mkdir(parents=True, exist_ok=True)
            env = self._environment(tuple(modules))
            (artifacts / "environment.json").write_text(json.dumps(env, indent=2))
        if artifacts.is_dir() and any(artifacts.iterdir()):
            self.client.log_artifacts(run_id, str(artifacts))

        exp_id = self._experiment((run.start or {}).get("experiment") or "Default")
        model_ids: dict[str, str] = {}
        for entry in end.get("models", []):
            model_id = self._part(
                run_id, f"model {entry['name']}", self._ship_model, run_id, exp_id, staging, entry
            )
            if model_id:
                model_ids[entry["name"]] = model_id

        parent_key = (run.start or {}).get("tags", {}).get(PARENT_KEY_TAG)
        if parent_key and run.key not in self.linked:
            # The parent was not in MLflow when this run started (its process had not shipped
            # it yet): link the two now.
            exp = (run.start or {}).get("experiment") or "Default"
            parent_id = self.key_ids.get(parent_key) or self._find_run(
                self._experiment(exp), parent_key
            )
            if parent_id:
                self.client.set_tag(run_id, "mlflow.parentRunId", parent_id)
                self.linked.add(run.key)

        status = "FAILED" if killed else end.get("status", "FINISHED")
        end_ts = end.get("ts") or run.last_ts or now_ms()
        self.client.set_terminated(run_id, status=status, end_time=end_ts)
        # A server owns its store: ask it whether the run is there and terminated.
        on_server = store.sqlite_path(self.settings.resolved_tracking_uri) is None
        if on_server and self.client.get_run(run_id).info.status != status:
            raise store.StoreChangedError(
                f"run {run_id} is not {status} in {self.settings.resolved_tracking_uri} "
                "after it was set so"
            )
        self.lineage.end(run, run_id, status, end_ts, model_ids, killed)
        self._mark(segment, {"key": run.key, "finished": True, "status": status})
        state.finished.add(run.key)
        self.stats.runs_finished += 1
        if killed:
            self.stats.runs_killed += 1
        shutil.rmtree(staging, ignore_errors=True)
        return run_id

    def _part(self, run_id: str, what: str, fn, *args, **kwargs) -> Any:
        """Ship one optional part (params, tags, datasets, a model). A refusal that would repeat
        is recorded on the run (tag and counters) instead of being retried forever; an
        unreachable or locked store is retried with the whole run."""
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if transient(err):
                raise
            msg = f"{what}: {err}"
            self.stats.part_errors.append(msg)
            log.warning("nbmlops: MLflow refused %s of run %s", msg, run_id)
            try:
                self.client.set_tag(
                    run_id, f"nbmlops.ship_error.{what.replace(' ', '_')}", str(err)[:4000]
                )
            except Exception:
                pass

    def _dataset_inputs(self, run: RunRecords, datasets: list[dict[str, Any]]):
        from mlflow.entities import Dataset, DatasetInput, InputTag

        source_name = (run.start or {}).get("tags", {}).get("mlflow.source.name", "")
        out = []
        for d in datasets:
            if d.get("role") != "input":
                continue
            schema = None
            if d.get("schema"):
                schema = json.dumps(
                    {"mlflow_colspec": [{"name": k, "type": v} for k, v in d["schema"].items()]}
                )
            profile = json.dumps({"shape": d["shape"], "nbytes": d["nbytes"], "kind": d["kind"]})
            source = json.dumps(
                {"tags": {"mlflow.source.name": source_name, "nbmlops.variable": d["name"]}}
            )
            ds = Dataset(
                name=d["name"],
                digest=d["digest"],
                source_type="code",
                source=source,
                schema=schema,
                profile=profile,
            )
            tags = [InputTag("mlflow.data.context", d.get("context", "input"))]
            versions = self.lineage.versions(d["digest"])
            if versions:  # the same content was committed as a data version
                tags.append(InputTag("nbmlops.data_version", ", ".join(versions)))
            out.append(DatasetInput(ds, tags))
        return out

    def _environment(self, modules: tuple[str, ...]) -> dict[str, Any]:
        if modules not in self._env_cache:
            self._env_cache[modules] = environment_report(list(modules))
        return self._env_cache[modules]

    def pip_requirements(self) -> list[str]:
        """Worked out once per process from installed versions: MLflow's own inference runs a
        subprocess per model (about 6 s)."""
        if self._pip_requirements is None:
            from importlib.metadata import PackageNotFoundError, version

            reqs = []
            for dist in ("scikit-learn", "numpy", "scipy", "pandas", "cloudpickle"):
                try:
                    reqs.append(f"{dist}=={version(dist)}")
                except PackageNotFoundError:
                    continue
            self._pip_requirements = reqs
        return self._pip_requirements

    def _ship_model(
        self, run_id: str, exp_id: str, staging: Path, entry: dict[str, Any]
    ) -> str | None:
        with quiet.kept_filters():  # the user's warning filters stay theirs
            import mlflow.sklearn
        from mlflow.entities import LoggedModelOutput
        from mlflow.models import Model, infer_signature

        name = entry["name"]
        existing = self.client.search_logged_models(
            [exp_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'"
        )
        ready = [m for m in existing if str(m.status).rsplit(".", 1)[-1] == "READY"]
        if ready:
            return ready[0].model_id
        if "file" not in entry:
            return None
        # Only our own staging folder is unpickled: it was written by this project's kernel.
        model = pickle.loads((staging / entry["file"]).read_bytes())  # noqa: S301
        example = None
        signature = None
        if entry.get("example") and (staging / entry["example"]).exists():
            example = pickle.loads((staging / entry["example"]).read_bytes())  # noqa: S301
            try:
                signature = infer_signature(example, model.predict(example))
            except Exception as err:
                log.info("nbmlops: no signature for %s: %s", name, err)
                signature = infer_signature(example)
        tags = {
            "nbmlops.class": entry.get("class", ""),
            "nbmlops.trained_on": entry.get("trained_on", ""),
        }
        logged = self.client.create_logged_model(exp_id, name=name, source_run_id=run_id, tags=tags)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "model"
                mlflow_model = Model(
                    artifact_path=logged.artifact_location,
                    model_uuid=logged.model_id,
                    run_id=run_id,
                    model_id=logged.model_id,
                )
                mlflow.sklearn.save_model(
                    model,
                    path=str(local),
                    mlflow_model=mlflow_model,
                    signature=signature,
                    input_example=example,
                    pip_requirements=self.pip_requirements(),
                    **_serialization(entry, model),
                )
                self.client.log_model_artifacts(logged.model_id, str(local))
            self.client.finalize_logged_model(logged.model_id, "READY")
        except Exception:
            try:
                self.client.finalize_logged_model(logged.model_id, "FAILED")
            except Exception:
                pass
            raise
        self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        self.stats.models += 1
        return logged.model_id


def _serialization(entry: dict[str, Any], model: Any) -> dict[str, Any]:
    """skops (no code in the file), unless the model uses classes or functions defined in the
    notebook: skops and pickle name those by reference, which only the notebook's process can
    resolve, so they are saved by value with cloudpickle (the capture said so in the summary)."""
    if entry.get("by_value"):
        return {"serialization_format": "cloudpickle"}
    return {"skops_trusted_types": _own_skops_types(model)}


def _own_skops_types(model: Any) -> list[str] | None:
    """Types MLflow's skops format asks to be trusted (tree node storage, ...). This model was
    fitted by the user's own cell in this project, so its types are the user's own."""
    try:
        import skops.io as sio

        return list(sio.get_untrusted_types(data=sio.dumps(model))) or None
    except Exception:
        return None


@dataclass
class ReplayReport:
    segments: int = 0
    runs_finished: int = 0
    runs_killed: int = 0
    metrics: int = 0
    torn_lines: int = 0
    quarantined: int = 0  # malformed lines set aside (see quarantine_dir)
    quarantine_dir: Path | None = None
    archived: int = 0
    errors: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)


def replay_orphans(
    shipper: RunShipper, journal: Journal, exclude: Path | None = None
) -> ReplayReport:
    """Ship every run of every dead process's segment; close runs left open as killed."""
    report = ReplayReport(quarantine_dir=journal.root / QUARANTINE_DIR)
    for orphan in journal.claim_orphans(exclude=exclude):
        report.segments += 1
        contents = read_segment(orphan.path)
        if contents.bad_lines:
            quarantine(orphan.path, contents.bad_lines)
            report.quarantined += len(contents.bad_lines)
            log.warning(
                "nbmlops: %d malformed line(s) of %s set aside in %s",
                len(contents.bad_lines),
                orphan.path.name,
                report.quarantine_dir,
            )
        state = read_ship_state(orphan.path)
        report.torn_lines += contents.torn_lines
        complete = True
        host_pid = orphan.path.stem.rsplit("-", 1)[0]
        for key, run in contents.runs.items():
            if key in state.finished:
                continue
            killed = None
            if run.end is None:
                killed = (
                    f"the process {host_pid} ended while the run was open "
                    f"(last journal record at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(run.last_ts / 1000))} UTC)"
                )
            try:
                before = shipper.stats.metrics
                run_id = shipper.ship_end(
                    orphan.path, orphan.staging_dir, run, state, careful=True, killed=killed
                )
                report.run_ids.append(run_id)
                report.metrics += shipper.stats.metrics - before
                report.runs_finished += 1
                if killed:
                    report.runs_killed += 1
            except Exception as err:
                complete = False
                report.errors.append(f"{orphan.path.name} run {key}: {type(err).__name__}: {err}")
                break  # the store is likely down: keep the rest for the next replay
        if complete:
            orphan.archive()
            report.archived += 1
    return report
