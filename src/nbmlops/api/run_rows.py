"""A notebook's runs and the run counts the side panel lists, read straight from a database
tracking store's tables when there is one.

Why not only ``MlflowClient.search_runs``: it builds an ORM object and an entity for every
tag, param and metric of every run, which takes about 300 ms for 200 runs of a 10,000-run
SQLite store (bench/bench_sidepanel.py), and MLflow has no count. The same rows through
MLflow's own store session and table models, as plain SQL rows, take a quarter of that. A
tracking server (HTTP) has no tables to read: callers fall back to ``search_runs`` on None.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["RunFields", "count_runs", "fields_of", "notebook_rows", "user_tags"]

log = logging.getLogger(__name__)

SOURCE_TAG = "mlflow.source.name"
# the tags a listed run shows; the rest are read for one run in full only
LISTED_TAGS = (
    SOURCE_TAG,
    "mlflow.user",
    "nbmlops.cell.id",
    "nbmlops.cell.index",
    "nbmlops.cell.execution_count",
    "nbmlops.duration_s",
)
_CHUNK = 500  # run ids per IN (...) query: below SQLite's variable limit


@dataclass(frozen=True)
class RunFields:
    """What the panel lists of one run (times in ms since the epoch)."""

    run_id: str
    name: str
    status: str
    start_time: int | None
    end_time: int | None
    experiment_id: str
    user_id: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)


def fields_of(run: Any) -> RunFields:
    """An MLflow ``Run`` entity's listed fields."""
    info, data = run.info, run.data
    return RunFields(
        run_id=info.run_id,
        name=info.run_name or "",
        status=info.status,
        start_time=info.start_time,
        end_time=info.end_time,
        experiment_id=str(info.experiment_id),
        user_id=info.user_id or "",
        tags=dict(data.tags),
        params=dict(data.params),
        metrics=dict(data.metrics),
    )


def _database(client: MlflowClient) -> Any | None:
    """MLflow's SQLAlchemy store behind ``client``, or None (a tracking server, another
    layout of MLflow's internals)."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = client._tracking_client.store
    except Exception:
        log.debug("no database store", exc_info=True)
        return None
    return store if isinstance(store, SqlAlchemyStore) else None


def count_runs(client: MlflowClient) -> dict[str, int] | None:
    """Active runs per experiment id, by one GROUP BY; None when not a database store."""
    store = _database(client)
    if store is None:
        return None
    from mlflow.store.tracking.dbmodels.models import SqlRun
    from sqlalchemy import func, select

    query: Any = (
        select(SqlRun.experiment_id, func.count(SqlRun.run_uuid))
        .where(SqlRun.lifecycle_stage == "active")
        .group_by(SqlRun.experiment_id)
    )
    with store.ManagedSessionMaker() as session:
        return {str(exp): int(n) for exp, n in session.execute(query).all()}


def notebook_rows(
    client: MlflowClient, experiment_ids: list[str], source: str | None, limit: int
) -> tuple[list[RunFields], int] | None:
    """The first ``limit`` active runs of the experiments (of notebook ``source`` when
    given), newest first as ``search_runs`` orders them, and how many match in all; None
    when not a database store."""
    store = _database(client)
    if store is None:
        return None
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag
    from sqlalchemy import select

    where = [
        SqlRun.experiment_id.in_([int(i) for i in experiment_ids]),
        SqlRun.lifecycle_stage == "active",
    ]
    if source is not None:
        where.append(
            SqlRun.run_uuid.in_(
                select(SqlTag.run_uuid).where(SqlTag.key == SOURCE_TAG, SqlTag.value == source)
            )
        )
    columns = (
        SqlRun.run_uuid,
        SqlRun.name,
        SqlRun.status,
        SqlRun.start_time,
        SqlRun.end_time,
        SqlRun.experiment_id,
        SqlRun.user_id,
    )
    with store.ManagedSessionMaker() as session:
        # every match in one query (the tag lookup is the slow part): the count is its length
        matches = session.execute(
            select(*columns).where(*where).order_by(SqlRun.start_time.desc(), SqlRun.run_uuid)
        ).all()
        total, rows = len(matches), matches[:limit]
        ids = [r[0] for r in rows]
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        params: dict[str, dict[str, str]] = {i: {} for i in ids}
        metrics: dict[str, dict[str, float | None]] = {i: {} for i in ids}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            for rid, key, value in session.execute(
                select(SqlTag.run_uuid, SqlTag.key, SqlTag.value).where(
                    SqlTag.run_uuid.in_(chunk), SqlTag.key.in_(LISTED_TAGS)
                )
            ):
                tags[rid][key] = value
            for rid, key, value in session.execute(
                select(SqlParam.run_uuid, SqlParam.key, SqlParam.value).where(
                    SqlParam.run_uuid.in_(chunk)
                )
            ):
                params[rid][key] = value
            for rid, key, value, is_nan in session.execute(
                select(
                    SqlLatestMetric.run_uuid,
                    SqlLatestMetric.key,
                    SqlLatestMetric.value,
                    SqlLatestMetric.is_nan,
                ).where(SqlLatestMetric.run_uuid.in_(chunk))
            ):
                metrics[rid][key] = None if is_nan else value
    out = [
        RunFields(
            run_id=rid,
            name=name or "",
            status=status,
            start_time=start_ms,
            end_time=end_ms,
            experiment_id=str(exp),
            user_id=user or "",
            tags=tags[rid],
            params=params[rid],
            metrics=metrics[rid],
        )
        for rid, name, status, start_ms, end_ms, exp, user in rows
    ]
    return out, int(total or 0)


NOTE_TAG = "mlflow.note.content"
_SYSTEM = ("mlflow.", "nbmlops.")


def _user_tags(tags: dict[str, str]) -> dict[str, str]:
    out = {"note": tags[NOTE_TAG]} if tags.get(NOTE_TAG) else {}
    out.update({k: v for k, v in tags.items() if not k.startswith(_SYSTEM)})
    return out


def user_tags(client: MlflowClient, run_ids: list[str]) -> dict[str, dict[str, str]]:
    """Per run id: its note (as ``note``) and the tags a user set (no ``mlflow.*`` or
    ``nbmlops.*`` system tags); by one query per 500 runs on a database store, else by
    ``get_run``."""
    out: dict[str, dict[str, str]] = {r: {} for r in run_ids}
    store = _database(client)
    if store is None:
        for rid in run_ids:
            out[rid] = _user_tags(dict(client.get_run(rid).data.tags))
        return out
    from mlflow.store.tracking.dbmodels.models import SqlTag
    from sqlalchemy import and_, or_, select

    raw: dict[str, dict[str, str]] = {r: {} for r in run_ids}
    with store.ManagedSessionMaker() as session:
        for start in range(0, len(run_ids), _CHUNK):
            chunk = run_ids[start : start + _CHUNK]
            query: Any = select(SqlTag.run_uuid, SqlTag.key, SqlTag.value).where(
                SqlTag.run_uuid.in_(chunk),
                or_(
                    SqlTag.key == NOTE_TAG,
                    and_(*(~SqlTag.key.startswith(p, autoescape=True) for p in _SYSTEM)),
                ),
            )
            for rid, key, value in session.execute(query):
                raw[rid][key] = value
    for rid, tags in raw.items():
        out[rid] = _user_tags(tags)
    return out
