"""Drift and realized performance of the prediction log computed on a Dask cluster.

``nbmlops.monitor.drift(..., scheduler="tcp://HOST:PORT")`` and
``performance(..., scheduler=...)`` (or ``monitor.dask_scheduler`` in ``nbmlops.yaml``) come
here: the log is split into time partitions, each reduced on a worker to exact summaries
(:mod:`nbmlops.core.monitor.distributed`), merged here; the results equal those computed on
this machine. Workers must see the project folder (shared storage), as pipeline steps do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbmlops.config import Settings
from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    import pandas as pd

    from nbmlops.core.monitor.drift import DriftReport

__all__ = ["drift_on_cluster", "scheduler_address", "scored_records"]


def scheduler_address(scheduler: Any, settings: Settings) -> Any:
    """The scheduler to use: ``scheduler`` (an address or a ``distributed.Client``), else
    ``monitor.dask_scheduler`` from the settings; None: this machine."""
    if scheduler is not None and scheduler != "":
        return scheduler
    return settings.monitor.dask_scheduler or None


def drift_on_cluster(
    reference: Any,
    *,
    model: str | None,
    alias: str,
    last: Any,
    since: Any,
    until: Any,
    rows: int | None,
    scheduler: Any,
    settings: Settings,
    options: dict[str, Any],
) -> DriftReport:
    """What :func:`nbmlops.api.monitor.drift` answers for a window of the log, with the
    log's side summarised on the cluster."""
    import pandas as pd

    from nbmlops.api.monitor import reference_frame, served_columns
    from nbmlops.core.data.column_kinds import check_frame
    from nbmlops.core.monitor.distributed import connect, models_in_window, summarize_on_cluster
    from nbmlops.core.monitor.drift import (
        MIN_ROWS,
        check_rows,
        drift_of_summaries,
        reference_columns,
    )
    from nbmlops.core.monitor.summary import feature_kinds, summarize_column
    from nbmlops.core.monitor.traffic import resolve_window

    if rows is not None:
        raise UsageError(
            "rows= (--rows) cannot split the log into partitions for a Dask scheduler",
            fix="name the window by time (last='1h', since=...), or leave out the scheduler",
        )
    if options.pop("multivariate", False):
        raise UsageError(
            "the multivariate test needs the rows together, and a Dask scheduler keeps them "
            "in partitions",
            fix="leave out the scheduler (--scheduler, monitor.dask_scheduler) to run it",
        )
    s = settings
    window = resolve_window(last, since, until, None)
    name = model
    if name is None and reference is None:  # the model whose training data is the reference
        found = models_in_window(s.home_dir, window.since, window.until)
        name = found[0] if len(found) == 1 else None
    ref, ref_label = reference_frame(reference, name, alias, s)
    ref = check_frame(ref, "reference")
    columns = options.pop("columns", None)
    numeric, categorical = options.pop("numeric", None), options.pop("categorical", None)
    categorical_max = options.pop("categorical_max", 50)
    min_rows = options.get("min_rows", MIN_ROWS)
    asked = reference_columns(ref, columns)
    all_kinds, _ = feature_kinds(
        ref, asked, numeric=numeric, categorical=categorical, categorical_max=categorical_max
    )
    client, opened = connect(scheduler)
    try:
        cur = summarize_on_cluster(client, s.home_dir, window.since, window.until, name, all_kinds)
    finally:
        if opened:
            client.close()
    if cur.rows == 0:
        raise UsageError(
            f"the {window.label()} is empty: no successful predictions"
            + (f" of {name}" if name else ""),
            where=str(s.home_dir / "predictions"),
            fix="widen the window (last='24h', since='2026-12-01', rows=1000), check the model "
            "name, or send traffic to the gateway (nbmlops serve) first",
        )
    if name is None and len(cur.models) > 1:
        raise UsageError(
            f"the {window.label()} holds predictions of several models: "
            f"{', '.join(sorted(cur.models))}",
            fix="name one: model='NAME' (or --model NAME@alias)",
        )
    served_notes: list[str] = []
    if columns is None:
        asked, served_notes = served_columns(ref, pd.DataFrame(columns=cur.columns))
    missing = [c for c in asked if c not in cur.columns]
    if missing:
        raise UsageError(
            f"the current data lacks {len(missing)} feature(s) of the reference: "
            f"{', '.join(map(repr, missing))}",
            fix="send every feature the model was trained on, or compare a subset with "
            f"columns=[...] (the current data has {', '.join(cur.columns[:12])})",
        )
    labels = (ref_label, window.label())
    check_rows(len(ref), cur.rows, min_rows, labels)
    kinds, notes = feature_kinds(
        ref, asked, numeric=numeric, categorical=categorical, categorical_max=categorical_max
    )
    known = set(map(str, ref.columns))
    extra = [c for c in cur.columns if c not in known]
    if extra:
        notes.append(f"not in the reference, so not compared: {', '.join(extra[:12])}")
    summaries = {
        c: (summarize_column(ref[c], k, "reference"), cur.summaries[c]) for c, k in kinds.items()
    }
    report = drift_of_summaries(
        summaries, labels=labels, reference_rows=len(ref), current_rows=cur.rows, **options
    )
    report.notes[:0] = served_notes + notes
    return report


def scored_records(
    home: Any,
    until: float | None,
    scheduler: Any,
    *,
    model: str | None = None,
    version: int | None = None,
) -> pd.DataFrame:
    """The scored records logged before ``until`` (labels joined; only the columns the
    metrics read), read on the cluster."""
    from nbmlops.core.monitor.distributed import connect, scored_on_cluster

    client, opened = connect(scheduler)
    try:
        return scored_on_cluster(client, home, until, model=model, version=version)
    finally:
        if opened:
            client.close()
