"""A batch run (nbclient, a real kernel) against a tracking server that is down: one wait, not
one per cell; the notebook says the runs are safe in the journal; once the server is up, a
detached shipper started at kernel exit delivers them without `nbmlops sync`."""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from nbclient import NotebookClient

from tests.conftest import outputs_text, unique, write_notebook
from tests.services import MlflowServer, find_free_port

pytestmark = [pytest.mark.kernel]

WAIT_S = 20  # ship_wait_seconds: the first tracked cell waits this long, the others not at all


def tracked(name: str, exp: str, value: float) -> str:
    return f"%%track {name} -e {exp}\nalpha = {value}\nnbmlops.log_metric('m', {value} * 2)\n"


def summaries(nb_path: Path) -> list[str]:
    nb = nbformat.read(str(nb_path), as_version=4)
    out = []
    for cell in nb.cells[1:]:
        texts = [
            o.get("data", {}).get("text/plain", "")
            for o in cell.get("outputs", [])
            if "nbmlops" in o.get("data", {}).get("text/plain", "")
        ]
        out.append(texts[-1] if texts else "")
    return out


def _stop_if_ours(pid: int) -> None:
    try:
        proc = psutil.Process(pid)
        if "nbmlops.core.tracking.handoff" in " ".join(proc.cmdline()):
            proc.kill()
    except psutil.Error:
        pass


def test_a_dead_server_stalls_one_wait_and_a_detached_shipper_delivers(
    project: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
):
    port = find_free_port()  # nothing listens here until the server starts below
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("NBMLOPS_SHIP", "wait")  # batch kernels wait only when told to
    monkeypatch.setenv("NBMLOPS_SHIP_WAIT_SECONDS", str(WAIT_S))
    monkeypatch.setenv("NBMLOPS_RETRY_MAX_SECONDS", "2")
    monkeypatch.setenv("NBMLOPS_HANDOFF_SECONDS", "600")
    exp = unique("offline")
    names = ["first", "second", "third"]
    nb_path = write_notebook(
        project / "batch.ipynb",
        ["%load_ext nbmlops\nimport nbmlops"]
        + [tracked(n, exp, i + 0.5) for i, n in enumerate(names)],
    )
    nb = nbformat.read(str(nb_path), as_version=4)
    # Each cell may take far longer than WAIT_S on a busy machine; what shows that only one
    # wait happened is what each cell says, not the clock.
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(project)}}
    ).execute()
    out_path = project / "batch.out.ipynb"
    nbformat.write(nb, str(out_path))

    first, second, third = summaries(out_path)
    assert f"waited {WAIT_S}s for {uri} in vain" in first
    assert "later cells do not wait" in first
    for text in (second, third):
        assert f"did not wait for {uri}: an earlier tracked cell waited {WAIT_S}s in vain" in text
    for text in (first, second, third):
        assert "safe in the journal, not yet in MLflow" in text
        assert "detached shipper" in text
    assert "Traceback" not in outputs_text(out_path)

    # At exit the kernel said why the runs are not in MLflow and what happens next.
    err = capfd.readouterr().err
    assert f"could not reach {uri} before exit; the last attempt failed:" in err
    assert "(None)" not in err
    found = re.search(r"a detached shipper \(pid (\d+)\) keeps trying", err)
    assert found, err[-3000:]
    pid = int(found.group(1))
    journal = project / ".nbmlops" / "journal"
    assert list(journal.glob("*.handoff")), "the kernel's segment was not handed off"

    server = MlflowServer(
        f"sqlite:///{project / 'server.db'}", project / "server-artifacts", port=port
    )
    try:
        server.start(timeout=180)
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        deadline = time.monotonic() + 300
        runs: list = []
        while time.monotonic() < deadline:
            exp_obj = client.get_experiment_by_name(exp)
            if exp_obj is not None:
                runs = client.search_runs([exp_obj.experiment_id])
                if len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs):
                    break
            time.sleep(1)
        by_name = {r.info.run_name: r for r in runs}
        assert sorted(by_name) == sorted(names), "the detached shipper did not deliver the runs"
        for i, name in enumerate(names):
            run = by_name[name]
            assert run.info.status == "FINISHED"
            assert run.data.params == {"alpha": str(i + 0.5)}
            assert run.data.metrics == {"m": (i + 0.5) * 2}
        # the shipper is done: it leaves nothing pending and exits
        try:
            psutil.Process(pid).wait(timeout=120)
        except psutil.NoSuchProcess:
            pass  # already gone
        assert not list(journal.glob("*.handoff"))
        assert not list(journal.glob("*.jsonl")), "shipped segments are archived"
    finally:
        _stop_if_ours(pid)
        server.stop()
