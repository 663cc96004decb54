"""Lineage of untracked cells in an in-process IPython shell, against a real lineage store and
MLflow store: the size limit, the switch, a killed kernel, and what a gap says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nbmlops.api.lineage import lineage_store
from nbmlops.config import load_settings

Shell = Callable[[dict], InteractiveShell]


@pytest.fixture
def make_shell(project: Path) -> Iterator[Shell]:
    """A shell with nbmlops loaded under the given nbmlops.yaml settings."""
    shells: list[InteractiveShell] = []

    def make(settings: dict) -> InteractiveShell:
        (project / "nbmlops.yaml").write_text(yaml.safe_dump(settings))
        sh = InteractiveShell.instance()
        sh.reset(new_session=True)
        sh.run_line_magic("load_ext", "nbmlops")
        sh.user_ns.update(pd=pd, np=np)
        shells.append(sh)
        return sh

    yield make
    for sh in shells:
        sh.run_line_magic("unload_ext", "nbmlops")
        sh.reset(new_session=True)


def run(shell: InteractiveShell, cell: str) -> str:
    with capture_output() as out:
        result = shell.run_cell(cell, store_history=True)
    assert result.success, (result.error_in_exec, out.stdout, out.stderr)
    return out.stdout


def test_frames_above_the_limit_are_recorded_by_shape_and_schema(make_shell: Shell, project: Path):
    sh = make_shell({"lineage": {"max_digest_bytes": 4000}})
    run(sh, "small = pd.DataFrame({'a': np.arange(100)})")  # 800 bytes + index
    run(sh, "big = pd.DataFrame({'a': np.arange(1000), 'b': np.ones(1000)})")  # 16 kB
    run(sh, "both = small.assign(c=1), big.a.sum()")
    cells = lineage_store(load_settings(project)).cells()
    small = next(c for c in cells if c["binds"] == ["small"])["outputs"][0]
    big = next(c for c in cells if c["binds"] == ["big"])["outputs"][0]
    assert len(small["digest"]) == 32 and not small["note"]
    assert big["digest"] is None and big["shape"] == [1000, 2]
    assert big["schema"] == {"a": "int64", "b": "float64"}
    assert "above lineage.max_digest_bytes" in big["note"]
    reader = next(c for c in cells if c["binds"] == ["both"])
    assert {i["name"]: bool(i["digest"]) for i in reader["inputs"]} == {"small": True, "big": False}

    shown = run(sh, "%lineage big")
    assert "recorded by shape and schema only" in shown
    assert "raise lineage.max_digest_bytes" in shown


def test_switched_off_no_cell_is_recorded(make_shell: Shell, project: Path):
    sh = make_shell({"lineage": {"untracked": False}})
    run(sh, "x = np.arange(10)")
    assert lineage_store(load_settings(project)).cells() == []


def test_records_survive_a_killed_kernel(project: Path):
    script = textwrap.dedent(
        """
        import os, signal
        from IPython.core.interactiveshell import InteractiveShell
        sh = InteractiveShell.instance()
        sh.run_cell("%load_ext nbmlops", store_history=True)
        sh.run_cell("import numpy as np\\nx = np.arange(1000)", store_history=True)
        sh.run_cell("y = x * 2", store_history=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBMLOPS_")}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=project, env=env, capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cells = lineage_store(load_settings(project)).cells()
    assert [c["source"] for c in cells][-2:] == [
        "import numpy as np\nx = np.arange(1000)",
        "y = x * 2",
    ]
    x_out = cells[-2]["outputs"][0]
    assert cells[-1]["inputs"][0]["digest"] == x_out["digest"]


def test_register_without_recorded_data_says_where_and_how(make_shell: Shell, project: Path):
    sh = make_shell({"registry": {"scan": {"pip_audit": "off"}}})
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    sh.user_ns.update(X=X, y=(X.a > 0).astype(int))  # made outside any cell
    run(
        sh,
        "%%track fit\nfrom sklearn.linear_model import LogisticRegression\n"
        "model = LogisticRegression().fit(X, y)",
    )
    shown = run(sh, "%register model gap-clf --intended-use demo --limitations none")
    assert "gap-clf v1 registered" in shown
    assert "data: X #" in shown and "has no recorded origin, read by run fit" in shown
    assert "To close it: run the cell that makes X again with nbmlops loaded" in shown
    assert "%data commit X" in shown

    shown = run(sh, "%lineage model")
    assert "  gaps:\n" in shown and "%data commit X" in shown


def test_a_frame_changed_in_place_is_an_output_of_the_cell_that_changed_it(
    make_shell: Shell, project: Path
):
    sh = make_shell({})
    run(sh, "df = pd.DataFrame({'a': np.arange(5)})")
    run(sh, "df['b'] = df.a * 2")
    run(sh, "total = df.sum()")
    made, changed, summed = lineage_store(load_settings(project)).cells()[-3:]
    assert changed["inputs"][0]["digest"] == made["outputs"][0]["digest"]
    assert [o["name"] for o in changed["outputs"]] == ["df"]
    assert changed["outputs"][0]["digest"] != made["outputs"][0]["digest"]
    assert summed["inputs"][0]["digest"] == changed["outputs"][0]["digest"]
