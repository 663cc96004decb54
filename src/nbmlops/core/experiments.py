"""Runs of an experiment as a DataFrame, and the pure operations the panels need on it:
filter, sort, page, compare, metric curves and a parallel-coordinates view.

Plain core: no IPython or ipywidgets here. The experiments panel holds only state and calls
these functions; they are equally usable from a script or the CLI.

The runs frame has one row per run and the columns ``run_id, name, status, start, end,
duration, user`` followed by ``params.<key>`` (strings, as MLflow stores them) and
``metrics.<key>`` (the latest value of each metric), like ``mlflow.search_runs`` but read with
the stateless client on the project's store.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from nbmlops.config import Settings
from nbmlops.core.tracking import store
from nbmlops.exceptions import StoreError, UsageError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

BASE_COLUMNS = ["run_id", "name", "status", "start", "end", "duration", "user"]
STATUSES = ["FINISHED", "FAILED", "RUNNING", "KILLED", "SCHEDULED"]
PAGE = 500  # runs per search_runs page: progress after each page, one query per page
RUN_KEY_TAG = "nbmlops.run_key"

Progress = Callable[[int, bool], None]  # (runs loaded so far, finished)


# --- reading the store --------------------------------------------------------------------------
def client(settings: Settings) -> MlflowClient:
    """A client on the configured store; an unreachable tracking server fails in seconds
    (MLflow's own client would retry for minutes, and a panel must not hang on it)."""
    uri = settings.resolved_tracking_uri
    if store.is_http(uri) and not store.reachable(uri):
        raise StoreError(
            f"Cannot reach the MLflow tracking server at {uri}",
            fix="Start the server, or point MLFLOW_TRACKING_URI (or tracking_uri in "
            "nbmlops.yaml) at one that is running.",
        )
    try:
        return store.open_client(settings)
    except StoreError:
        raise
    except Exception as err:
        raise _store_error(settings, err) from err


def _store_error(settings: Settings, err: BaseException) -> StoreError:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return StoreError(
        f"Cannot read the MLflow store {settings.resolved_tracking_uri}: {text[:300]}",
        fix="Check that the store is reachable (`nbmlops status` shows it).",
    )


def experiments(settings: Settings) -> list[str]:
    """Names of the store's active experiments, sorted by name."""
    c = client(settings)
    try:
        found = c.search_experiments(max_results=50000)
    except Exception as err:
        raise _store_error(settings, err) from err
    return sorted(e.name for e in found)


def latest_experiment(settings: Settings) -> str | None:
    """The experiment holding the most recently started run (None for an empty store)."""
    c = client(settings)
    try:
        exps = {e.experiment_id: e.name for e in c.search_experiments(max_results=50000)}
        if not exps:
            return None
        runs = c.search_runs(list(exps), max_results=1, order_by=["attributes.start_time DESC"])
    except Exception as err:
        raise _store_error(settings, err) from err
    if runs:
        return exps.get(runs[0].info.experiment_id)
    return sorted(exps.values())[0] if exps else None


def default_experiment(settings: Settings, notebook: str | None = None) -> str | None:
    """What a panel opens on: the configured experiment, else the notebook's own (``train.ipynb``
    gives ``train``) when it has runs, else the most recently active one."""
    from pathlib import PurePath

    known = set(experiments(settings))
    for cand in (settings.experiment, PurePath(notebook).stem if notebook else None):
        if cand and cand in known:
            return cand
    return latest_experiment(settings)


def _experiment_id(c: MlflowClient, settings: Settings, name: str) -> str:
    try:
        exp = c.get_experiment_by_name(name)
    except Exception as err:
        raise _store_error(settings, err) from err
    if exp is None or exp.lifecycle_stage == "deleted":
        known = experiments(settings)
        raise UsageError(
            f"Unknown experiment {name!r} in {settings.resolved_tracking_uri}",
            fix=f"Known experiments: {', '.join(known)}."
            if known
            else "The store has no experiments yet: run a %%track cell first.",
        )
    return str(exp.experiment_id)


def list_runs(
    settings: Settings,
    experiment: str | None = None,
    max_results: int = 5000,
    *,
    progress: Progress | None = None,
    page_size: int = PAGE,
) -> pd.DataFrame:
    """The runs of ``experiment`` (default: see :func:`default_experiment`), newest first,
    as one frame. One ``search_runs`` query per page of ``page_size`` runs; ``progress`` is
    called after each page with the number of runs read so far."""
    import pandas as pd

    if experiment is None:
        experiment = default_experiment(settings)
        if experiment is None:
            if progress:
                progress(0, True)
            return empty_runs()
    c = client(settings)
    exp_id = _experiment_id(c, settings, experiment)
    rows: list[dict[str, Any]] = []
    token: str | None = None
    while len(rows) < max_results:
        try:
            page = c.search_runs(
                [exp_id],
                max_results=min(page_size, max_results - len(rows)),
                order_by=["attributes.start_time DESC"],
                page_token=token,
            )
        except Exception as err:
            raise _store_error(settings, err) from err
        rows.extend(_row(r) for r in page)
        token = page.token
        if progress:
            progress(len(rows), not token)
        if not token:
            break
    if not rows:
        return empty_runs()
    frame = pd.DataFrame.from_records(rows)
    return _typed(frame)


def _row(run: Any) -> dict[str, Any]:
    info, data = run.info, run.data
    row: dict[str, Any] = {
        "run_id": info.run_id,
        "name": info.run_name or "",
        "status": info.status,
        "start": info.start_time,
        "end": info.end_time,
        "user": data.tags.get("mlflow.user") or info.user_id or "",
    }
    for k, v in data.params.items():
        row[f"params.{k}"] = v
    for k, v in data.metrics.items():
        row[f"metrics.{k}"] = v
    return row


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    start = pd.to_numeric(frame["start"], errors="coerce")
    end = pd.to_numeric(frame["end"], errors="coerce")
    frame["duration"] = (end - start) / 1000.0
    frame["start"] = pd.to_datetime(start, unit="ms", utc=True)
    frame["end"] = pd.to_datetime(end, unit="ms", utc=True)
    params = sorted(c for c in frame.columns if c.startswith("params."))
    metrics = sorted(c for c in frame.columns if c.startswith("metrics."))
    for m in metrics:
        frame[m] = pd.to_numeric(frame[m], errors="coerce").astype("float64")
    return frame[BASE_COLUMNS + params + metrics].reset_index(drop=True)


def runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The runs frame :func:`list_runs` returns, from rows of the same shape read elsewhere."""
    import pandas as pd

    return _typed(pd.DataFrame.from_records(rows)) if rows else empty_runs()


def empty_runs() -> pd.DataFrame:
    import pandas as pd

    return _typed(pd.DataFrame({c: pd.Series([], dtype="object") for c in BASE_COLUMNS}))


def metric_history(settings: Settings, run_ids: Iterable[str], key: str) -> pd.DataFrame:
    """Every logged value of metric ``key`` for each run: columns run_id, step, value,
    timestamp (ms), sorted by run then step."""
    import pandas as pd

    c = client(settings)
    rows: list[tuple[str, int, float, int]] = []
    for run_id in run_ids:
        try:
            history = c.get_metric_history(run_id, key)
        except Exception as err:
            raise _store_error(settings, err) from err
        rows.extend((run_id, int(m.step), float(m.value), int(m.timestamp)) for m in history)
    frame = pd.DataFrame(rows, columns=["run_id", "step", "value", "timestamp"])
    return frame.sort_values(["run_id", "step", "timestamp"], kind="stable").reset_index(drop=True)


def run_details(settings: Settings, run_id: str) -> dict[str, Any]:
    """One run's name, status, experiment, times, user, params and metrics."""
    c = client(settings)
    try:
        run = c.get_run(run_id)
        exp = c.get_experiment(run.info.experiment_id)
    except Exception as err:
        raise _store_error(settings, err) from err
    info, data = run.info, run.data
    return {
        "run_id": info.run_id,
        "name": info.run_name,
        "status": info.status,
        "experiment": exp.name if exp is not None else info.experiment_id,
        "start_ms": info.start_time,
        "end_ms": info.end_time,
        "user": data.tags.get("mlflow.user") or info.user_id,
        "source": data.tags.get("mlflow.source.name"),
        "git_commit": data.tags.get("mlflow.source.git.commit"),
        "params": dict(sorted(data.params.items())),
        "metrics": dict(sorted(data.metrics.items())),
    }


# --- pure operations on a runs frame ----------------------------------------------------------
def param_columns(runs: pd.DataFrame) -> list[str]:
    return [c for c in runs.columns if c.startswith("params.")]


def metric_columns(runs: pd.DataFrame) -> list[str]:
    return [c for c in runs.columns if c.startswith("metrics.")]


def short(column: str) -> str:
    """``metrics.acc`` -> ``acc`` (for headers and menus)."""
    return column.split(".", 1)[1] if column.startswith(("params.", "metrics.")) else column


_COMPARISON = re.compile(r"^(?P<key>[A-Za-z0-9_.\-/]+?)(?P<op><=|>=|!=|<|>)(?P<value>[^<>=!]+)$")


def _haystack(runs: pd.DataFrame) -> pd.Series:
    """Per run: 'name run_id k=v k=v' in lower case: what the text filter searches."""
    hay = runs["name"].astype("str").fillna("") + " " + runs["run_id"].astype("str")
    for col in param_columns(runs):
        values = runs[col]
        piece = (" " + short(col) + "=" + values.astype("str")).where(values.notna(), "")
        hay = hay + piece
    return hay.str.lower()


def resolve_column(runs: pd.DataFrame, name: str) -> str | None:
    """A column by its full name or its short name (``acc`` for ``metrics.acc``; metrics
    win over params of the same name)."""
    if name in runs.columns:
        return name
    for prefix in ("metrics.", "params."):
        if prefix + name in runs.columns:
            return prefix + name
    return None


def filter_runs(runs: pd.DataFrame, text: str = "", status: str | None = None) -> pd.DataFrame:
    """Rows whose status is ``status`` (None, '' or 'ALL' for any) and that match every
    whitespace-separated token of ``text``: a case-insensitive substring of the run's name,
    id or ``param=value`` pairs, or a numeric comparison on a metric or param
    (``acc>0.9``, ``lr<=0.01``, ``depth!=3``)."""
    import numpy as np
    import pandas as pd

    out = runs
    if status and status.strip().upper() not in ("ALL", "ANY"):
        out = out[out["status"] == status.strip().upper()]
    tokens = text.split()
    if not tokens or out.empty:
        return out
    mask = np.ones(len(out), dtype=bool)
    hay: pd.Series | None = None
    for token in tokens:
        m = _COMPARISON.match(token)
        column = resolve_column(out, m["key"]) if m else None
        number = _number(m["value"]) if m else None
        if m and column is not None and number is not None:
            values = pd.to_numeric(out[column], errors="coerce").to_numpy(dtype="float64")
            with np.errstate(invalid="ignore"):
                hit = {
                    "<": values < number,
                    ">": values > number,
                    "<=": values <= number,
                    ">=": values >= number,
                    "!=": values != number,
                }[m["op"]]
            mask &= hit & ~np.isnan(values)
        else:
            if hay is None:
                hay = _haystack(out)
            mask &= hay.str.contains(token.lower(), regex=False).to_numpy(dtype=bool)
    return out[mask]


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def sort_runs(runs: pd.DataFrame, column: str, ascending: bool = True) -> pd.DataFrame:
    """Rows sorted by ``column`` (full or short name). Params sort as numbers when every value
    is one, else as text; missing values go last either way."""
    import pandas as pd

    col = resolve_column(runs, column)
    if col is None:
        raise UsageError(
            f"Cannot sort by {column!r}: no such column",
            fix=f"Sort by one of: {', '.join(runs.columns)}.",
        )

    def key(values: pd.Series) -> pd.Series:
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
            return values
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().sum() == values.notna().sum():
            return numbers
        return values.astype("str").str.lower().where(values.notna())

    return runs.sort_values(col, ascending=ascending, na_position="last", kind="stable", key=key)


def page_of(runs: pd.DataFrame, page: int, size: int = 50) -> tuple[pd.DataFrame, int, int]:
    """(rows of page ``page``, that page number clamped to the valid range, number of pages)."""
    pages = max(1, math.ceil(len(runs) / size))
    page = min(max(0, page), pages - 1)
    return runs.iloc[page * size : (page + 1) * size], page, pages


def run_labels(runs: pd.DataFrame, run_ids: Sequence[str] | None = None) -> dict[str, str]:
    """run_id -> 'name (abcd1234)': unique, readable labels for menus and legends."""
    rows = runs if run_ids is None else runs[runs["run_id"].isin(list(run_ids))]
    return {
        rid: f"{name} ({rid[:8]})" for rid, name in zip(rows["run_id"], rows["name"], strict=True)
    }


def compare_runs(runs: pd.DataFrame, run_ids: Sequence[str]) -> pd.DataFrame:
    """Selected runs side by side: one column per run (in the order given, labelled
    'name (id)'), one row per status/start/duration, param and metric any of them has.
    The boolean column ``differs`` marks rows whose values are not all equal."""
    import pandas as pd

    known = set(runs["run_id"])
    chosen = runs.set_index("run_id").reindex([r for r in run_ids if r in known])
    if chosen.empty:
        return pd.DataFrame({"differs": pd.Series([], dtype=bool)})
    fields = ["status", "start", "duration", "user"] + [
        c for c in param_columns(runs) + metric_columns(runs) if chosen[c].notna().any()
    ]
    labels = run_labels(runs, list(chosen.index))
    table = chosen[fields].T
    table.columns = [labels[r] for r in chosen.index]
    table = table.astype("object")
    differs = table.apply(lambda row: row.astype("str").nunique(dropna=False) > 1, axis=1)
    table["differs"] = differs.astype(bool)
    return table


def parallel_frame(
    runs: pd.DataFrame, run_ids: Sequence[str] | None = None, max_axes: int = 10
) -> pd.DataFrame:
    """The params and metrics that vary across the runs, each scaled to [0, 1] (text params
    by their sorted categories), with a ``run`` label column: the input of a
    parallel-coordinates plot."""
    import pandas as pd

    rows = runs if run_ids is None else runs[runs["run_id"].isin(list(run_ids))]
    labels = run_labels(rows)
    out = pd.DataFrame(index=rows.index)
    for col in param_columns(rows) + metric_columns(rows):
        values = rows[col]
        if values.notna().sum() < 2 or values.astype("str").nunique() < 2:
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().sum() != values.notna().sum():
            cats = sorted(values.dropna().astype("str").unique())
            numbers = (
                values.astype("str").map({c: i for i, c in enumerate(cats)}).where(values.notna())
            )
        numbers = numbers.astype("float64")
        lo, hi = numbers.min(), numbers.max()
        out[short(col)] = (numbers - lo) / (hi - lo) if hi > lo else 0.5
        if len(out.columns) >= max_axes:
            break
    out["run"] = [labels[r] for r in rows["run_id"]]
    return out.reset_index(drop=True)


# --- figures (matplotlib's object API: no pyplot state, nothing shown by itself) ----------------
def curves_figure(history: pd.DataFrame, labels: dict[str, str], key: str) -> Figure:
    """Metric ``key`` over steps, one line per run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    for run_id, points in history.groupby("run_id", sort=False):
        ax.plot(
            points["step"],
            points["value"],
            marker="o" if len(points) < 30 else None,
            markersize=3,
            label=labels.get(str(run_id), str(run_id)[:8]),
        )
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(f"{key} over steps", fontsize=10)
    ax.grid(alpha=0.3)
    if history["run_id"].nunique() <= 12:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def parallel_figure(frame: pd.DataFrame) -> Figure:
    """Parallel coordinates of :func:`parallel_frame`'s output, one line per run."""
    from matplotlib.figure import Figure
    from pandas.plotting import parallel_coordinates

    axes = [c for c in frame.columns if c != "run"]
    fig = Figure(figsize=(max(6.4, 1.1 * len(axes) + 2), 3.6))
    ax = fig.add_subplot()
    if not axes:
        ax.text(0.5, 0.5, "no param or metric varies across these runs", ha="center")
        ax.axis("off")
        return fig
    parallel_coordinates(frame, "run", cols=axes, ax=ax, alpha=0.7, linewidth=1.2)
    ax.set_ylabel("scaled to [0, 1]")
    ax.set_title("params and metrics (each axis scaled to its range)", fontsize=10)
    legend = ax.get_legend()
    if legend is not None and frame["run"].nunique() > 12:
        legend.remove()
    elif legend is not None:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    return fig


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
