"""Opening the MLflow store safely from many processes.

MLflow creates the SQLite schema on first use with alembic; processes starting together race
on it ("table already exists", "duplicate column name"). We create it once under an exclusive
file lock and switch the database to WAL (persistent in the file) so readers never block the
writer. MLflow already sets ``busy_timeout`` on its SQLite sessions; the shipper retries what
still fails with "database is locked".

MLflow keeps one engine per URI with pooled connections for the life of the process. If the
database file is deleted or replaced, those connections go on writing into the old file. We
note the file's identity (device and inode) when the engine is made and :func:`check_store`
compares it with the file the settings name now; :func:`open_client` starts a new engine when
they differ.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from nbmlops.config import Settings
from nbmlops.exceptions import StoreError

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("nbmlops.store")
_ready_lock = threading.Lock()
_ready: set[str] = set()
_opened: dict[str, tuple[int, int] | None] = {}  # uri -> identity of the file its engine uses


class StoreChangedError(ConnectionError):
    """The store file was deleted or replaced since this process opened it (retry: the next
    attempt opens the file the settings name now)."""


def file_identity(db: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(db)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def store_identity(settings: Settings) -> tuple[int, int] | None:
    """The identity of the SQLite file this process's engine writes to (None: not SQLite, or
    not opened yet)."""
    return _opened.get(normalize_uri(settings.resolved_tracking_uri))


def check_store(settings: Settings, identity: tuple[int, int] | None) -> None:
    """Raise :class:`StoreChangedError` if the SQLite file the settings name is no longer the
    one with ``identity`` (a stat: cheap enough before every mark of a shipped record). Other
    stores are owned by their server; the shipper reads runs back there instead."""
    db = sqlite_path(normalize_uri(settings.resolved_tracking_uri))
    if db is None or identity is None:
        return
    now = file_identity(db)
    if now != identity:
        what = "deleted" if now is None else "replaced by another file"
        raise StoreChangedError(
            f"the MLflow store file {db} was {what} while this process had it open; "
            "what was written since is shipped again into the file there now"
        )


def _forget_engine(uri: str) -> None:
    """Close the pooled connections of MLflow's engine for ``uri`` (they hold the old file
    open); the engine opens new ones on the file the URI names now. MLflow keeps its engines
    in a private map: if that moves, :func:`check_store` keeps refusing to mark records."""
    _ready.discard(uri)
    _opened.pop(uri, None)
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        engine = SqlAlchemyStore._engine_map.get(uri)
        if engine is not None:
            engine.dispose()
    except Exception:
        log.warning("nbmlops: could not close MLflow's connections to %s", uri, exc_info=True)


def _set_aside_stale_wal(db: Path) -> None:
    """A ``-wal``/``-shm`` pair without its database is left by a deleted store still open in
    some process: SQLite would apply it to a new file of that name. Keep it, under another name."""
    for suffix in ("-wal", "-shm"):
        stale = db.with_name(db.name + suffix)
        if stale.exists():
            os.replace(stale, stale.with_name(f"{stale.name}.orphan-{os.getpid()}"))


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:"):
        return None
    path = uri.removeprefix("sqlite:///")
    if path in ("", ":memory:"):
        return None
    return Path(unquote(path))


def normalize_uri(uri: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is here."""
    if uri.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
            return "postgresql+psycopg2://" + uri.removeprefix("postgresql://")
    return uri


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def quiet_artifact_downloads():
    """MLflow draws a progress bar per artifact download (into a notebook cell, or a server's
    log); switch it off for the duration."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def is_http(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def open_client(settings: Settings) -> MlflowClient:
    """An MlflowClient on the configured store, its schema created once across processes."""
    from mlflow import MlflowClient

    uri = normalize_uri(settings.resolved_tracking_uri)
    db = sqlite_path(uri)
    if db is not None and uri in _opened and file_identity(db) != _opened[uri]:
        with _ready_lock:
            _forget_engine(uri)
    if db is not None and uri not in _ready:
        with _ready_lock, _file_lock(db.with_name(db.name + ".init.lock")):
            if uri not in _ready:
                db.parent.mkdir(parents=True, exist_ok=True)
                if not db.exists():
                    _set_aside_stale_wal(db)
                if not db.exists() or db.stat().st_size == 0:
                    _seed_from_template(db)
                _opened[uri] = file_identity(db)  # before any connection of the new engine
                con = sqlite3.connect(db, timeout=60)
                try:
                    con.execute("PRAGMA journal_mode=WAL")
                finally:
                    con.close()
                client = MlflowClient(uri)
                try:
                    client.search_experiments(max_results=1)  # creates the schema
                except Exception as err:
                    raise StoreError(
                        f"Cannot open the MLflow store {uri}: {err}",
                        fix="Check that the folder is writable and on a local disk "
                        "(SQLite must not live on a network filesystem).",
                    ) from err
                _ready.add(uri)
                return client
    return MlflowClient(uri)


def _template_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nbmlops"


def _seed_from_template(db: Path) -> None:
    """Start a new SQLite store from a copy of an empty, fully migrated one.

    Creating MLflow's schema runs some fifty alembic migrations (about 3 s here) for every new
    project; a copy takes milliseconds. The template is made once per MLflow version by MLflow
    itself, in the user's cache folder, and its one row (the Default experiment, whose artifact
    location depends on the working folder) is removed, so MLflow creates that row for the new
    store as it always does. Any problem here falls back to MLflow creating the schema.
    """
    import shutil

    import mlflow

    try:
        cache = _template_dir()
        cache.mkdir(parents=True, exist_ok=True)
        template = cache / f"mlflow-{mlflow.__version__}-empty.db"
        if not template.exists():
            with _file_lock(cache / f"{template.name}.lock"):
                if not template.exists():
                    from mlflow import MlflowClient

                    tmp = cache / f".{template.name}.{os.getpid()}.tmp"
                    tmp.unlink(missing_ok=True)
                    MlflowClient(f"sqlite:///{tmp}").search_experiments(max_results=1)
                    con = sqlite3.connect(tmp)
                    try:
                        con.execute("DELETE FROM experiments")
                        con.commit()
                    finally:
                        con.close()
                    os.replace(tmp, template)
        part = db.with_name(f".{db.name}.{os.getpid()}.seed")
        shutil.copyfile(template, part)
        os.replace(part, db)
    except Exception:
        return  # MLflow creates the schema the slow way


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Get or create the experiment ``name`` (safe when another process creates it too)."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def reachable(uri: str, timeout: float = 2.0) -> bool:
    """Cheap probe for an HTTP tracking server (MLflow's own client retries for minutes)."""
    if not is_http(uri):
        return True
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            return 200 <= resp.status < 500
    except Exception:
        return False


def describe(uri: str) -> dict[str, Any]:
    return {"tracking_uri": uri, "kind": "sqlite" if sqlite_path(uri) else urlparse(uri).scheme}
