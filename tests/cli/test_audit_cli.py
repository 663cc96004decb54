"""``nbmlops audit log`` and ``nbmlops audit verify`` on a real project folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from nbmlops.cli import audit
from nbmlops.core.audit import AuditLog

parent = typer.Typer()
parent.add_typer(audit.app, name="audit")
runner = CliRunner()


def fill(project: Path) -> AuditLog:
    log = AuditLog(project / ".nbmlops" / "audit.jsonl")
    for i in range(3):
        log.append("data.commit", f"sales@{i}", user="alice", details={"digest": f"d{i}"})
    log.append("data.checkout", "sales@1", user="bob")
    log.append("model.register", "churn@1", user="carol", details={"run": "r1"})
    return log


def test_verify_ok_then_tampered(project: Path):
    log = fill(project)
    result = runner.invoke(parent, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "audit log OK: 5 entries, chain intact" in result.output

    rows = log.path.read_text().splitlines()
    obj = json.loads(rows[2])
    obj["user"] = "mallory"
    rows[2] = json.dumps(obj)
    log.path.write_text("\n".join(rows) + "\n")
    result = runner.invoke(parent, ["audit", "verify"])
    assert result.exit_code == 1
    assert "entry 2 was edited (hash mismatch)" in result.output
    assert "chain intact" not in result.output


def test_verify_on_an_empty_project(project: Path):
    result = runner.invoke(parent, ["audit", "verify"])
    assert result.exit_code == 0 and "audit log OK: 0 entries" in result.output


def test_log_shows_entries_and_filters(project: Path):
    fill(project)
    out = runner.invoke(parent, ["audit", "log"]).output
    for text in ("alice", "bob", "carol", "data.commit", "model.register", "churn@1", "d2"):
        assert text in out
    assert "UTC" in out

    out = runner.invoke(parent, ["audit", "log", "--action", "data.commit"]).output
    assert "data.commit" in out and "bob" not in out and "carol" not in out

    out = runner.invoke(parent, ["audit", "log", "--target", "churn"]).output
    assert "carol" in out and "alice" not in out

    out = runner.invoke(parent, ["audit", "log", "-n", "1"]).output
    assert "carol" in out and "alice" not in out and "bob" not in out

    out = runner.invoke(parent, ["audit", "log", "--action", "nope"]).output
    assert "no audit entries" in out


BUILD = (
    "import typer; from nbmlops.cli import audit; "
    "app = typer.Typer(); app.add_typer(audit.app, name='audit'); app()"
)


def test_verify_as_a_process_reads_the_project_settings(project: Path):
    """A real process in a project whose nbmlops.yaml moves the home folder."""
    (project / "nbmlops.yaml").write_text("home: elsewhere\n")
    log = AuditLog(project / "elsewhere" / "audit.jsonl")
    log.append("data.commit", "sales@0", user="alice")
    log.append("data.commit", "sales@1", user="alice")

    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-c", BUILD, *args]
        return subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=60)

    proc = run("audit", "verify")
    assert proc.returncode == 0 and "audit log OK: 2 entries, chain intact" in proc.stdout
    log.path.write_text(log.path.read_text().splitlines()[0] + "\n")
    proc = run("audit", "verify")
    assert proc.returncode == 1
    assert "the log ends at entry 0 but the head says 1" in proc.stdout
