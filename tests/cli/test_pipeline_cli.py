"""`nbmlops run` and `nbmlops pipeline` as users run them (subprocesses, real kernels)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from tests.cli.test_cli import cli
from tests.conftest import write_notebook

pytestmark = pytest.mark.kernel


def test_run_with_parameters_and_exit_codes(project: Path) -> None:
    write_notebook(
        project / "nb.ipynb",
        ["open(out, 'w').write(f'{rate * n}')", "assert n < 100, 'too many'"],
        parameters="rate = 0.5\nn = 2\nout = 'result.txt'",
    )
    params = project / "p.yaml"
    params.write_text("rate: 0.25\n")
    ok = cli(project, "run", "nb.ipynb", "-f", "p.yaml", "-p", "n", "8", "-o", "o.ipynb", "--json")
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["ok"] and result["run_id"]
    assert result["parameters"] == {"rate": 0.25, "n": 8}
    assert (project / "result.txt").read_text() == "2.0"
    assert (project / "o.ipynb").is_file()

    failed = cli(project, "run", "nb.ipynb", "-p", "n", "200", "-o", "bad.ipynb")
    assert failed.returncode == 1
    assert "AssertionError: too many" in failed.stdout
    assert (project / "bad.ipynb").is_file()  # kept, with the failing cell marked

    for args, words in [
        (["-p", "m", "1"], "Unknown parameter 'm'"),
        (["-p", "n", "lots"], "'n' is str"),
        (["-p", "n"], "needs a name and a value"),
    ]:
        bad = cli(project, "run", "nb.ipynb", *args, "-o", "never.ipynb")
        assert bad.returncode == 2, bad.stderr
        assert words in bad.stderr
        assert "Traceback" not in bad.stderr
    assert not (project / "never.ipynb").exists()  # refused before any kernel started


def test_missing_notebook_and_kernel_are_clear(project: Path) -> None:
    gone = cli(project, "run", "gone.ipynb")
    assert gone.returncode == 2 and "gone.ipynb' does not exist" in gone.stderr
    nb = write_notebook(project / "k.ipynb", ["pass"])
    doc = nbformat.read(str(nb), as_version=4)
    doc.metadata["kernelspec"]["name"] = "julia-1.9"
    nbformat.write(doc, str(nb))
    nokernel = cli(project, "run", "k.ipynb")
    assert nokernel.returncode == 2
    assert "No Jupyter kernel named 'julia-1.9'" in nokernel.stderr
    assert "python3" in nokernel.stderr


def test_pipeline_run_show_and_dry_run(project: Path) -> None:
    write_notebook(
        project / "w.ipynb", ["open(out, 'w').write(text)"], parameters="text = ''\nout = ''"
    )
    (project / "pipeline.yaml").write_text(
        "name: two\nsteps:\n"
        "  first: {notebook: w.ipynb, parameters: {text: hi}, outputs: {out: one.txt}}\n"
        "  second: {notebook: w.ipynb, parameters: {text: yo}, inputs: {x: one.txt},"
        " outputs: {out: two.txt}}\n"
    )
    show = cli(project, "pipeline", "show", "pipeline.yaml")
    assert show.returncode == 0 and "first" in show.stdout and "second" in show.stdout
    shown = json.loads(cli(project, "pipeline", "show", "pipeline.yaml", "--json").stdout)
    assert [(s["step"], s["after"]) for s in shown["steps"]] == [
        ("first", []),
        ("second", ["first"]),
    ]
    dry = cli(project, "pipeline", "run", "pipeline.yaml", "--dry-run", "--json")
    plan = json.loads(dry.stdout)
    assert {n: s["status"] for n, s in plan["steps"].items()} == {
        "first": "would run",
        "second": "would run",
    }
    assert not (project / "one.txt").exists()
    cold = cli(project, "pipeline", "run", "pipeline.yaml", "--json", timeout=300)
    assert cold.returncode == 0, cold.stderr
    report = json.loads(cold.stdout)
    assert [s["status"] for s in report["steps"].values()] == ["ran", "ran"]
    assert report["run_id"]
    warm = cli(project, "pipeline", "run", "pipeline.yaml")
    assert warm.returncode == 0
    assert warm.stdout.count("cached") >= 2 and "nothing ran" in warm.stdout


def test_bad_pipeline_file_is_one_paragraph(project: Path) -> None:
    (project / "pipeline.yaml").write_text("steps:\n  a: {notebook: a.ipynb\n")
    proc = cli(project, "pipeline", "run", "pipeline.yaml")
    assert proc.returncode == 2
    assert "is not valid YAML at line" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ctrl_c_stops_the_kernels_and_records_the_step_as_killed(project: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    import psutil

    write_notebook(
        project / "slow.ipynb",
        ["open('started', 'w').close()", "import time\ntime.sleep(600)", "open(out, 'w')"],
        parameters="out = ''",
    )
    (project / "pipeline.yaml").write_text(
        "name: slow\nsteps:\n  nap: {notebook: slow.ipynb, outputs: {out: done.txt}}\n"
    )

    def as_a_background_job() -> None:
        # A shell script's `cmd &` starts it with SIGINT ignored (POSIX); the command must
        # still stop on Ctrl-C / kill -INT.
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [sys.executable, "-m", "nbmlops.cli.main", "pipeline", "run", "pipeline.yaml"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_a_background_job,
    )
    try:
        deadline = time.monotonic() + 300  # the kernel starts and runs its first cell
        while not (project / "started").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the step's kernel never ran its first cell"
            time.sleep(0.1)
        kernels = list(psutil.Process(proc.pid).children(recursive=True))
        assert kernels
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=240)  # generous: the machine may be loaded
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "SIGINT: stopping the kernels of the running steps (nap)" in err
    assert "recorded as killed" in err and "stopped." in err
    _gone, alive = psutil.wait_procs(kernels, timeout=60)
    assert not alive, f"kernels left running: {[p.pid for p in alive]}"
    assert not (project / "done.txt").exists()

    sync = cli(project, "sync", timeout=300)
    assert sync.returncode == 0, sync.stderr
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pipeline-slow")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert runs["nap"].info.status == "KILLED"
    assert runs["slow"].info.status == "FAILED"
    resumed = cli(project, "pipeline", "run", "pipeline.yaml", "--resume", "--dry-run", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (project / "slow.ipynb").exists()
