"""Secrets in tracked cells never reach MLflow, the artifacts, the journal or the lineage.

A cell holding passwords, API keys and credentials in URLs runs tracked, in an in-process
shell and in a real kernel (papermill); then every place a value is written is searched for
the secret strings: MLflow params, tags and note, every file under the project (artifacts,
journal segments and their archive, lineage database, OpenLineage events) and the
OpenLineage events a real HTTP receiver on 127.0.0.1 got.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import nbformat
import pytest
from IPython.utils.capture import capture_output

from nbmlops.core.tracking.redact import MARKER
from nbmlops.core.tracking.session import get_tracker
from tests.conftest import Lane, run_papermill, unique, write_notebook

# Realistic fakes (none is a live credential); each string must appear nowhere once recorded.
PASSWORD = "hunter2"
API_KEY = "sk-live-" + "4eC39HqLyjWDarjtT1zdp7dcQ"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYzK3qLrT9"
DB_PASSWORD = "tigerPass91"
KEY_ID = "AKIA" + "Q3EGRT5XJ2LWZ7PA"
PIN = "4711-0815-pin"
API_LOGGED = "Api-s3cret-77"
SECRETS = [PASSWORD, API_KEY, AWS_SECRET, DB_PASSWORD, KEY_ID, PIN, API_LOGGED]

CELL = f"""\
password = "{PASSWORD}"
api_key = "{API_KEY}"
aws_secret_access_key = "{AWS_SECRET}"
DB_URL = "postgresql://scott:{DB_PASSWORD}@db.example/prod"
conn = "https://user:{PASSWORD}@host/x"
key_id = "{KEY_ID}"
pin_code = "{PIN}"
C = 0.5
max_tokens = 512
secret_name = "prod/db"
nbmlops.log_param("db_password", "{API_LOGGED}")
acc = C * 2
"""

FAILING = 'raise ConnectionError(f"cannot reach {DB_URL} as {password}")'

EXPECTED_PARAMS = {
    "password": MARKER,
    "api_key": MARKER,
    "aws_secret_access_key": MARKER,
    "DB_URL": f"postgresql://scott:{MARKER}@db.example/prod",
    "conn": f"https://user:{MARKER}@host/x",
    "key_id": MARKER,
    "pin_code": MARKER,
    "db_password": MARKER,
    "C": "0.5",
    "max_tokens": "512",
    "secret_name": "prod/db",
}


def leaks_in_files(folder: Path, skip: set[Path] = frozenset()) -> list[str]:
    """``file: secret`` for every secret found in the bytes of any file under ``folder``."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p not in skip):
        data = path.read_bytes()
        found += [f"{path.relative_to(folder)}: {s}" for s in SECRETS if s.encode() in data]
    return found


def leaks_in(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def check_mlflow(lane: Lane, experiment: str) -> None:
    from mlflow.artifacts import download_artifacts

    client = lane.client()
    runs = {r.info.run_name: r for r in lane.runs(experiment)}
    assert set(runs) == {"secrets", "connect"}
    run = runs["secrets"]
    assert run.info.status == "FINISHED"
    assert run.data.params == EXPECTED_PARAMS
    assert run.data.metrics == {"acc": 1.0}
    note = run.data.tags["mlflow.note.content"]
    assert f'password = "{MARKER}"' in note and "C = 0.5" in note and "max_tokens = 512" in note
    failed = runs["connect"]
    assert failed.info.status == "FAILED"
    assert failed.data.params["password"] == MARKER
    assert failed.data.tags["nbmlops.error"] == (
        f"ConnectionError: cannot reach postgresql://scott:{MARKER}@db.example/prod as {MARKER}"
    )
    for r in runs.values():
        assert leaks_in(json.dumps([r.data.params, r.data.tags])) == []
        folder = Path(download_artifacts(run_id=r.info.run_id, tracking_uri=lane.uri))
        assert leaks_in_files(folder) == []
        shipped = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert "code/cell.py" in shipped
    cell_py = Path(
        download_artifacts(
            run_id=run.info.run_id, artifact_path="code/cell.py", tracking_uri=lane.uri
        )
    ).read_text()
    assert f'api_key = "{MARKER}"' in cell_py and 'secret_name = "prod/db"' in cell_py
    assert client.get_run(failed.info.run_id).data.tags["nbmlops.error"].startswith("Connection")


def wait_for(check, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self):
        _Receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch):
    """A real OpenLineage HTTP endpoint on 127.0.0.1 that keeps every body it receives."""
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("NBMLOPS_OPENLINEAGE_URL", f"http://127.0.0.1:{server.server_port}")
    yield _Receiver.bodies
    server.shutdown()
    server.server_close()


@pytest.fixture
def custom_names(project: Path) -> Path:
    """A project whose settings add a name pattern of its own (written before nbmlops loads)."""
    (project / "nbmlops.yaml").write_text("redact_names: ['^pin_code$']\n")
    return project


def test_secrets_in_a_tracked_cell_are_redacted_everywhere(custom_names: Path, receiver, shell):
    project = custom_names
    lane = Lane("sqlite", project, {}, f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    shell.run_cell("import nbmlops")
    with capture_output() as out:
        ok = shell.run_cell("%%track secrets -e vault\n" + CELL)
        failed = shell.run_cell("%%track connect -e vault\n" + FAILING)
    assert ok.success and not failed.success
    assert shell.user_ns["password"] == PASSWORD  # the user's own values are untouched
    assert get_tracker().flush(120)

    summaries = [
        o.data["text/plain"] for o in out.outputs if "nbmlops" in o.data.get("text/plain", "")
    ]
    assert summaries and leaks_in("\n".join(summaries)) == []
    first = next(s for s in summaries if "'secrets'" in s)
    assert "secret-looking values redacted" in first
    assert "password, api_key, aws_secret_access_key, DB_URL, conn, key_id, pin_code" in first
    assert "db_password" in first and "redact_names" in first
    assert "C=0.5" in first

    check_mlflow(lane, "vault")
    assert leaks_in_files(project, skip={project / "nbmlops.yaml"}) == []
    journal = project / ".nbmlops" / "journal"
    assert any(journal.rglob("*.jsonl")), "the journal holds the runs' records"
    events = wait_for(lambda: len(receiver) >= 4 and list(receiver), "four OpenLineage events")
    assert [json.loads(b)["eventType"] for b in events].count("FAIL") == 1
    assert leaks_in(b"\n".join(events).decode()) == []
    fail = next(json.loads(b) for b in events if json.loads(b)["eventType"] == "FAIL")
    assert MARKER in fail["run"]["facets"]["errorMessage"]["message"]
    assert MARKER in json.loads(events[0])["job"]["facets"]["sourceCode"]["sourceCode"]


@pytest.mark.kernel
def test_secrets_in_a_notebook_run_by_papermill_are_redacted_everywhere(custom_names: Path):
    project = custom_names
    lane = Lane("sqlite", project, {}, f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    name = unique("vault")
    nb = write_notebook(
        project / f"{name}.ipynb",
        [
            "%load_ext nbmlops\nimport nbmlops",
            f"%%track secrets -e {name}\n" + CELL,
            f"%%track connect -e {name}\n" + FAILING,
        ],
    )
    proc = run_papermill(nb, project, check=False)
    assert proc.returncode != 0 and "ConnectionError" in proc.stderr

    check_mlflow(lane, name)
    events_file = project / ".nbmlops" / "openlineage" / "events.jsonl"
    wait_for(
        lambda: events_file.exists() and '"FAIL"' in events_file.read_text(),
        "the FAIL OpenLineage event",
    )
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert sorted(e["eventType"] for e in events) == ["COMPLETE", "FAIL", "START", "START"]
    out_nb = nb.with_name(f"{name}.out.ipynb")
    # the notebooks hold the cells as the user wrote them, and the error the user raised
    assert leaks_in_files(project, skip={nb, out_nb, project / "nbmlops.yaml"}) == []
    shown = [
        o.get("data", {}).get("text/plain", "")
        for cell in nbformat.read(str(out_nb), as_version=4).cells
        for o in cell.get("outputs", [])
        if o.get("output_type") in ("display_data", "execute_result", "update_display_data")
    ]
    summary = next(s for s in shown if "'secrets'" in s)
    assert "secret-looking values redacted" in summary and leaks_in("\n".join(shown)) == []
