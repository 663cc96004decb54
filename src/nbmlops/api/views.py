"""What the JupyterLab side panel shows, as plain JSON-ready dicts: a notebook's runs, one
run in full with its artifacts, experiments, and the journal's backlog (registered models and
lineage: :mod:`nbmlops.api.model_views`). Read from the project's stores; nothing here
writes."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.api.run_rows import SOURCE_TAG, RunFields, count_runs, fields_of, notebook_rows
from nbmlops.config import Settings
from nbmlops.core.experiments import client as store_client
from nbmlops.core.experiments import filter_runs
from nbmlops.core.tracking.journal import Journal, read_segment, read_ship_state
from nbmlops.core.tracking.redact import Redactor
from nbmlops.core.tracking.session import ui_url
from nbmlops.exceptions import ModelNotFound, NbmlopsError, StoreError, UsageError

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "MAX_RUNS",
    "RUN_ID",
    "check_artifact_path",
    "compare_view",
    "experiments_view",
    "journal_view",
    "json_number",
    "notebook_runs",
    "nothing_tracked",
    "read_artifact",
    "run_artifact",
    "run_summary",
    "run_view",
    "store_error",
]

MAX_RUNS = 10_000  # a notebook's runs read for one listing (newest first)
PAGE = 1000  # runs per search_runs query
MAX_CODE_BYTES = 200_000  # a cell's source shown in the panel
MAX_ARTIFACT_BYTES = 20_000_000  # an artifact served to the panel
RUN_ID = re.compile(r"[0-9a-f]{32}")


def store_error(settings: Settings, err: BaseException) -> StoreError:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return StoreError(
        f"Cannot read the MLflow store {Redactor().text(settings.resolved_tracking_uri)}: "
        f"{text[:300]}",
        fix="Check that the store is reachable (`nbmlops status` shows it).",
    )


def nothing_tracked(settings: Settings) -> bool:
    """True when the project's default SQLite store does not exist yet: reading answers
    empty rather than creating it (a server started in a folder must not write there)."""
    return settings.uses_default_store and not (settings.home_dir / "mlflow.db").exists()


def _exp_names(c: MlflowClient, settings: Settings) -> dict[str, str]:
    try:
        return {e.experiment_id: e.name for e in c.search_experiments(max_results=50000)}
    except Exception as err:
        raise store_error(settings, err) from err


def experiments_view(settings: Settings) -> list[dict[str, Any]]:
    """Every active experiment: id, name and number of active runs."""
    if nothing_tracked(settings):
        return []
    c = store_client(settings)
    names = _exp_names(c, settings)
    counts = _run_counts(c, settings, list(names))
    return [
        {"id": exp_id, "name": name, "runs": counts.get(exp_id, 0)}
        for exp_id, name in sorted(names.items(), key=lambda kv: kv[1])
    ]


def _run_counts(c: MlflowClient, settings: Settings, ids: list[str]) -> dict[str, int]:
    """Active runs per experiment id: one GROUP BY on a database store, else by paging."""
    try:
        counted = count_runs(c)
        if counted is not None:
            return counted
        counts: dict[str, int] = {}
        for exp_id in ids:
            token, count = None, 0
            while True:
                page = c.search_runs([exp_id], max_results=PAGE, page_token=token)
                count += len(page)
                token = page.token
                if not token:
                    break
            counts[exp_id] = count
    except Exception as err:
        raise store_error(settings, err) from err
    return counts


def _ms(value: Any) -> int | None:
    return int(value) if value is not None else None


def json_number(value: Any) -> float | None:
    """A JSON-safe number (NaN and infinities, which JSON lacks, become None)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _relative(source: str | None, root: Path | None) -> str | None:
    if not source or root is None:
        return source
    try:
        return Path(source).relative_to(root).as_posix()
    except ValueError:
        return source


def run_summary(run: RunFields, experiments: dict[str, str], root: Path | None) -> dict[str, Any]:
    """One run as the panel lists it (times in ms since the epoch)."""
    tags = run.tags
    duration = json_number(tags.get("nbmlops.duration_s"))
    if duration is None and run.end_time and run.start_time:
        duration = (run.end_time - run.start_time) / 1000.0
    count = tags.get("nbmlops.cell.execution_count")
    index = tags.get("nbmlops.cell.index")
    return {
        "run_id": run.run_id,
        "name": run.name,
        "status": run.status,
        "start_time": _ms(run.start_time),
        "end_time": _ms(run.end_time),
        "duration_s": duration,
        "metrics": {k: json_number(v) for k, v in sorted(run.metrics.items())},
        "params": dict(sorted(run.params.items())),
        "notebook": _relative(tags.get(SOURCE_TAG), root),
        "cell": tags.get("nbmlops.cell.id"),
        "cell_index": int(index) if index and index.isdigit() else None,
        "execution_count": int(count) if count and count.isdigit() else None,
        "experiment": experiments.get(run.experiment_id, run.experiment_id),
        "user": tags.get("mlflow.user") or run.user_id,
    }


def _quoted(value: str) -> str:
    """``value`` as a string literal of MLflow's filter language, which has no escapes."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise UsageError(
        f"Cannot search for {value!r}: it holds both kinds of quote",
        fix="Rename the notebook without quotes.",
    )


def notebook_runs(
    settings: Settings,
    notebook: Path | None = None,
    *,
    experiment: str | None = None,
    limit: int = 100,
    text: str = "",
    root: Path | None = None,
) -> dict[str, Any]:
    """The runs tracked from ``notebook`` (an absolute path, as kernels record it; None for
    every run), newest first, in ``experiment`` (default: all), matching the panel filter
    ``text`` (see :func:`nbmlops.core.experiments.filter_runs`): ``{"runs", "total"}``,
    at most ``limit`` runs; ``total`` counts every match (up to :data:`MAX_RUNS`)."""
    if nothing_tracked(settings):
        return {"runs": [], "total": 0, "truncated": False}
    c = store_client(settings)
    names = _exp_names(c, settings)
    if experiment is not None:
        ids = [i for i, n in names.items() if n == experiment]
        if not ids:
            known = sorted(names.values())
            raise UsageError(
                f"Unknown experiment {experiment!r}",
                fix=f"Known experiments: {', '.join(known)}."
                if known
                else "The store has no experiments yet: run a %%track cell first.",
            )
    else:
        ids = list(names)
    if not ids:
        return {"runs": [], "total": 0, "truncated": False}
    # Without a text filter only `limit` runs are built, but every match is counted.
    want = MAX_RUNS if text.strip() else limit
    source = str(notebook) if notebook is not None else None
    try:
        found = notebook_rows(c, ids, source, want)
        if found is not None:
            runs, total = found
            token = "more" if total > len(runs) and text.strip() else None
        else:
            runs, total, token = _searched(c, ids, source, want)
    except NbmlopsError:
        raise
    except Exception as err:
        raise store_error(settings, err) from err
    rows = [run_summary(r, names, root) for r in runs]
    if text.strip():
        rows = _filtered(rows, text)
        total = len(rows)
    return {"runs": rows[:limit], "total": total, "truncated": token is not None}


def _searched(
    c: MlflowClient, ids: list[str], source: str | None, want: int
) -> tuple[list[RunFields], int, str | None]:
    """(the first ``want`` runs, how many match up to MAX_RUNS, a token when more do) by
    ``search_runs``: a tracking server's way."""
    query = f"tags.`{SOURCE_TAG}` = {_quoted(source)}" if source is not None else ""
    runs: list[RunFields] = []
    total, token = 0, None
    while total < MAX_RUNS:
        page = c.search_runs(
            ids,
            filter_string=query,
            max_results=min(PAGE, MAX_RUNS - total),
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        total += len(page)
        runs.extend(fields_of(r) for r in page[: max(0, want - len(runs))])
        token = page.token
        if not token:
            break
    return runs, total, token


def _filtered(rows: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """The rows the panel filter keeps, through the experiments panel's own filter."""
    import pandas as pd

    if not rows:
        return rows
    frame = pd.DataFrame.from_records(
        [
            {
                "run_id": r["run_id"],
                "name": r["name"],
                "status": r["status"],
                **{f"params.{k}": v for k, v in r["params"].items()},
                **{f"metrics.{k}": v for k, v in r["metrics"].items()},
            }
            for r in rows
        ]
    )
    keep = set(filter_runs(frame, text)["run_id"])
    return [r for r in rows if r["run_id"] in keep]


def _get_run(c: MlflowClient | None, settings: Settings, run_id: str) -> Any:
    try:
        if c is None:
            raise LookupError("RESOURCE_DOES_NOT_EXIST: nothing tracked yet")
        return c.get_run(run_id)
    except Exception as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(err) or "not found" in str(err).lower():
            raise ModelNotFound(
                f"No run {run_id} in the tracking store",
                where=Redactor().text(settings.resolved_tracking_uri),
                fix="Pick a run from the panel's list; runs still in the journal appear "
                "once shipped.",
            ) from None
        raise store_error(settings, err) from err


def run_view(
    settings: Settings, run_id: str, *, root: Path | None = None, artifact_url: str = ""
) -> dict[str, Any]:
    """One run in full: its summary, every metric's history ``[step, value, ts_ms]``, its
    models (logged and registered), data inputs, figures (``artifact_url`` + path), cell
    source and MLflow UI link."""
    c = None if nothing_tracked(settings) else store_client(settings)
    run = _get_run(c, settings, run_id)
    assert c is not None
    names = _exp_names(c, settings)
    out = run_summary(fields_of(run), names, root)
    try:
        out["metrics_history"] = {
            key: [
                [int(m.step), json_number(m.value), int(m.timestamp)]
                for m in sorted(
                    c.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp)
                )
            ]
            for key in sorted(run.data.metrics)
        }
        out["models"] = _run_models(c, run)
        figures = [
            f.path
            for f in c.list_artifacts(run_id, "figures")
            if not f.is_dir and f.path.lower().endswith((".png", ".svg", ".jpg", ".jpeg"))
        ]
    except Exception as err:
        raise store_error(settings, err) from err
    out["data_inputs"] = [
        {
            "name": d.dataset.name,
            "digest": d.dataset.digest,
            "version": next((t.value for t in d.tags if t.key == "nbmlops.data_version"), None),
        }
        for d in (run.inputs.dataset_inputs if run.inputs else [])
    ]
    out["figures"] = [{"name": Path(p).name, "url": artifact_url + p} for p in sorted(figures)]
    out["code"] = _cell_code(c, run_id)
    base = ui_url(settings)
    out["mlflow_url"] = (
        f"{base.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}" if base else None
    )
    return out


def _run_models(c: MlflowClient, run: Any) -> list[dict[str, Any]]:
    """The run's logged models, each with the registered versions made from it."""
    run_id = run.info.run_id
    registered: dict[str, list[dict[str, Any]]] = {}
    for mv in c.search_model_versions(f"run_id = '{run_id}'"):
        key = (mv.tags or {}).get("nbmlops.model_id") or getattr(mv, "model_id", None) or ""
        registered.setdefault(key, []).append({"name": mv.name, "version": int(mv.version)})
    logged = c.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    out = []
    for m in sorted(logged, key=lambda m: m.name):
        out.append(
            {
                "name": m.name,
                "model_id": m.model_id,
                "uri": f"runs:/{run_id}/{m.name}",
                "class": (m.tags or {}).get("nbmlops.class"),
                "registered": registered.pop(m.model_id, []),
            }
        )
    leftovers = [v for versions in registered.values() for v in versions]
    if leftovers:  # versions registered from this run without a logged model we know
        out.append({"name": None, "model_id": None, "uri": None, "registered": leftovers})
    return out


def _cell_code(c: MlflowClient, run_id: str) -> str | None:
    try:
        data = read_artifact(c, run_id, "code/cell.py")
    except (ModelNotFound, StoreError, UsageError):
        return None
    return data[:MAX_CODE_BYTES].decode("utf-8", errors="replace")


def compare_view(
    settings: Settings, run_ids: list[str], *, max_figures: int = 6
) -> list[dict[str, Any]]:
    """What the panels compare beyond params and metrics, per run in the given order: its
    recorded cell source (``code``, None when not recorded) and its PNG figures
    (``figures``: name and bytes, at most ``max_figures`` per run)."""
    c = None if nothing_tracked(settings) else store_client(settings)
    out = []
    for run_id in run_ids:
        _get_run(c, settings, run_id)
        assert c is not None
        try:
            paths = sorted(
                f.path
                for f in c.list_artifacts(run_id, "figures")
                if not f.is_dir and f.path.lower().endswith(".png")
            )
        except Exception as err:
            raise store_error(settings, err) from err
        figures = [
            {"name": Path(p).name, "png": read_artifact(c, run_id, p)} for p in paths[:max_figures]
        ]
        out.append({"run_id": run_id, "code": _cell_code(c, run_id), "figures": figures})
    return out


def check_artifact_path(path: str) -> str:
    """``path`` if it names a file inside a run's artifacts, else UsageError saying why."""
    bad = (
        not path
        or len(path) > 500
        or path.startswith("/")
        or "\\" in path
        or any(ord(ch) < 32 for ch in path)
        or ":" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    )
    if bad:
        raise UsageError(
            f"Invalid artifact path {path!r}: it must stay inside the run's artifacts",
            fix="Use a relative path such as figures/fig-1.png, without '..', a leading '/', "
            "'\\' or ':'.",
        )
    return path


def read_artifact(c: MlflowClient, run_id: str, path: str) -> bytes:
    """The bytes of one artifact file of a run (a path that could leave the run's artifacts
    is refused before the store is asked)."""
    import tempfile

    import mlflow.artifacts

    path = check_artifact_path(path)
    parent, _, _name = path.rpartition("/")
    try:
        listed = {f.path: f for f in c.list_artifacts(run_id, parent or None)}
    except Exception as err:
        raise StoreError(f"Cannot list the artifacts of run {run_id}: {err}") from err
    entry = listed.get(path)
    if entry is None or entry.is_dir:
        raise ModelNotFound(
            f"Run {run_id} has no artifact file {path!r}",
            fix=f"Files in {parent or 'the top folder'}: "
            + (", ".join(sorted(p.rpartition("/")[2] for p in listed)) or "none")
            + ".",
        )
    if entry.file_size is not None and entry.file_size > MAX_ARTIFACT_BYTES:
        raise UsageError(
            f"Artifact {path!r} is {entry.file_size} bytes, more than the panel shows",
            fix="Open it in the MLflow UI.",
        )
    with tempfile.TemporaryDirectory(prefix="nbmlops-artifact-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=tmp, tracking_uri=c.tracking_uri
        )
        target = Path(local).resolve()
        if not target.is_relative_to(Path(tmp).resolve()) or not target.is_file():
            raise UsageError(f"Artifact {path!r} is not a file inside the run's artifacts")
        return target.read_bytes()


def run_artifact(settings: Settings, run_id: str, path: str) -> bytes:
    """One artifact file of run ``run_id`` (see :func:`read_artifact`)."""
    c = None if nothing_tracked(settings) else store_client(settings)
    _get_run(c, settings, run_id)
    assert c is not None
    return read_artifact(c, run_id, path)


def journal_view(settings: Settings) -> dict[str, Any]:
    """The tracking store (no password) and what the journal still holds for it: pending
    runs, quarantined lines and the age of the oldest pending run."""
    journal = Journal(settings.journal_dir)
    summary = journal.pending_summary()
    oldest: int | None = None
    for path in journal.segments():
        try:
            contents = read_segment(path)
            finished = read_ship_state(path).finished
        except OSError:  # archived by a shipper meanwhile
            continue
        for key, run in contents.runs.items():
            if key in finished:
                continue
            ts = (run.start or {}).get("ts") or run.last_ts or None
            if ts and (oldest is None or ts < oldest):
                oldest = int(ts)
    return {
        "store": Redactor().text(settings.resolved_tracking_uri),
        "pending": int(summary["pending"]),
        "open": int(summary["open"]),
        "quarantined": int(summary["quarantined"]),
        "oldest_pending_s": round(max(0.0, time.time() - oldest / 1000), 3)
        if oldest is not None
        else None,
    }
