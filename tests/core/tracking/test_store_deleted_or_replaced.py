"""The tracking store's file deleted or replaced while runs ship: nothing is marked shipped
unless it is readable in the store the settings name, and what is not ships into the file
there now, whole and once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

import nbmlops
from nbmlops.config import load_settings
from nbmlops.core.tracking.journal import Journal, read_ship_state
from nbmlops.core.tracking.session import get_tracker
from tests.cli.test_cli import cli
from tests.conftest import unique
from tests.core.tracking.test_never_lose_a_run import run_script
from tests.services import MlflowServer

METRICS = 300


def open_in_this_process(path: Path) -> bool:
    """Does some file descriptor of this process point at ``path`` (SQLite holds it open)?"""
    fd_dir = Path("/proc/self/fd")
    for fd in fd_dir.iterdir():
        try:
            if os.readlink(fd) == str(path):
                return True
        except OSError:
            continue
    return False


def row(table: str, label: str) -> str:
    """The value next to ``label`` in a table the CLI printed."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) >= 3 and cells[1] == label:
            return cells[2]
    raise AssertionError(f"no row {label!r} in\n{table}")


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{condition} never held"
        time.sleep(0.05)


def assert_shipped_whole(project: Path, exp: str, name: str) -> None:
    """Read the file the settings name (a new connection, not this process's MLflow engine):
    one FINISHED run ``name`` with its param and every metric value once."""
    db = project / ".nbmlops" / "mlflow.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        runs = con.execute(
            "SELECT r.run_uuid, r.status FROM runs r JOIN experiments e"
            " ON r.experiment_id = e.experiment_id WHERE e.name = ? AND r.name = ?",
            (exp, name),
        ).fetchall()
        assert len(runs) == 1, runs
        [(run_id, status)] = runs
        assert status == "FINISHED"
        params = con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,))
        assert dict(params.fetchall())["C"] == "0.5"
        values = con.execute(
            "SELECT step, value FROM metrics WHERE run_uuid = ? AND key = 'loss'", (run_id,)
        ).fetchall()
    finally:
        con.close()
    assert sorted(values) == [(i, 1.0 / (i + 1)) for i in range(METRICS)]


def tracked_victim(exp: str) -> None:
    with nbmlops.track("victim", experiment=exp):
        nbmlops.log_param("C", 0.5)
        for i in range(METRICS):
            nbmlops.log_metric("loss", 1.0 / (i + 1), step=i)


def _ship_after_the_store_changed(project: Path, change) -> None:
    exp = unique("swap")
    tracker = get_tracker()
    with nbmlops.track("warm-up", experiment=exp):
        pass
    assert tracker.flush(120)
    db = project / ".nbmlops" / "mlflow.db"
    wait_for(lambda: open_in_this_process(db))  # the shipper's engine holds the file open

    tracker.shipper.pause()  # the victim is journaled, then shipped after the change
    tracked_victim(exp)
    change(db)
    assert tracker.flush(180), tracker.shipper.stats.last_error

    # what the shipper marked shipped is in the file the settings name, whole
    assert_shipped_whole(project, exp, "victim")
    status = cli(project, "status")
    assert status.returncode == 0, status.stderr
    assert row(status.stdout, "runs not yet in MLflow") == "0"
    # a sync (as the next process start) finds nothing left and duplicates nothing
    sync = cli(project, "sync")
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert_shipped_whole(project, exp, "victim")


def test_store_deleted_while_the_shipper_has_it_open(project: Path):
    def delete(db: Path) -> None:
        for suffix in ("", "-wal", "-shm"):  # rm mlflow.db*
            Path(f"{db}{suffix}").unlink(missing_ok=True)

    _ship_after_the_store_changed(project, delete)


def test_only_the_database_file_deleted_while_the_shipper_has_it_open(project: Path):
    """`rm mlflow.db` leaves the -wal and -shm of the old store: the new store is not built
    from them."""
    _ship_after_the_store_changed(project, lambda db: db.unlink())


def test_store_replaced_by_another_file_while_the_shipper_has_it_open(project: Path):
    def replace(db: Path) -> None:
        # a fresh store, made by another process elsewhere, is put where the old one was
        fresh = project / "fresh"
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from mlflow import MlflowClient\n"
                f"MlflowClient('sqlite:///{fresh}/mlflow.db').search_experiments()\n",
            ],
            cwd=project,
            check=True,
            timeout=300,
        )
        away = project / "moved-away"
        away.mkdir()
        for suffix in ("", "-wal", "-shm"):  # mv mlflow.db* moved-away/
            if Path(f"{db}{suffix}").exists():
                os.replace(f"{db}{suffix}", away / f"mlflow.db{suffix}")
        os.replace(fresh / "mlflow.db", db)

    _ship_after_the_store_changed(project, replace)


def test_a_run_half_shipped_into_a_deleted_store_ships_whole_with_sync(project: Path):
    """The process marked the run's start shipped, the store file was deleted, the process
    ended: `status` shows the run waiting and `sync` ships it whole into the new store."""
    exp = unique("halfway")
    proc = run_script(
        project,
        f"""
        import os
        from pathlib import Path
        import nbmlops
        from nbmlops.core.tracking.session import get_tracker
        tracker = get_tracker()
        db = Path(".nbmlops/mlflow.db").resolve()
        with nbmlops.track("victim", experiment="{exp}"):
            nbmlops.log_param("C", 0.5)
            for i in range({METRICS}):
                nbmlops.log_metric("loss", 1.0 / (i + 1), step=i)
            assert tracker.flush(120)  # the start is in MLflow, its run id in the sidecar
            tracker.shipper.pause()  # the end stays in the journal
        from tests.core.tracking.test_store_deleted_or_replaced import open_in_this_process
        assert open_in_this_process(db)  # the shipper holds the store open
        for suffix in ("", "-wal", "-shm"):  # rm mlflow.db*
            Path(f"{{db}}{{suffix}}").unlink(missing_ok=True)
        os._exit(0)
        """,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )
    assert proc.returncode == 0
    [segment] = Journal(load_settings(project).journal_dir).segments()
    assert read_ship_state(segment).run_ids  # the sidecar names a run of the deleted store

    status = cli(project, "status")
    assert status.returncode == 0, status.stderr
    assert row(status.stdout, "runs not yet in MLflow") == "1"
    sync = cli(project, "sync")
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert row(sync.stdout, "runs shipped") == "1"
    assert_shipped_whole(project, exp, "victim")
    assert row(cli(project, "status").stdout, "runs not yet in MLflow") == "0"
    again = cli(project, "sync")
    assert again.returncode == 0
    assert_shipped_whole(project, exp, "victim")


@pytest.mark.server
def test_a_tracking_server_whose_store_was_replaced_gets_the_run_whole(
    project: Path, postgres_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A server lane: the run's start reached the server, then the server came back on a new,
    empty database. The run id the sidecar remembers is read back, found missing, and the
    run ships again whole."""
    exp = unique("server-swap")
    server = MlflowServer(
        postgres_server.create_database(unique("before")), tmp_path / "artifacts"
    ).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        run_script(
            project,
            f"""
            import os
            import nbmlops
            from nbmlops.core.tracking.session import get_tracker
            tracker = get_tracker()
            with nbmlops.track("victim", experiment="{exp}"):
                nbmlops.log_param("C", 0.5)
                for i in range({METRICS}):
                    nbmlops.log_metric("loss", 1.0 / (i + 1), step=i)
                assert tracker.flush(120)  # the start is on the server, its id in the sidecar
                tracker.shipper.pause()  # the end stays in the journal
            os._exit(0)
            """,
        )
        server.stop()
        server.backend_store_uri = postgres_server.create_database(unique("after"))
        server.start()

        sync = cli(project, "sync")
        assert sync.returncode == 0, sync.stdout + sync.stderr
        assert row(sync.stdout, "runs shipped") == "1"
        client = MlflowClient(server.uri)
        [run] = client.search_runs([client.get_experiment_by_name(exp).experiment_id])
        assert run.info.status == "FINISHED" and run.data.params["C"] == "0.5"
        history = client.get_metric_history(run.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in history) == [
            (i, 1.0 / (i + 1)) for i in range(METRICS)
        ]
    finally:
        server.stop()
