"""``nbmlops data diff`` through a pipe: an edited value in frames sharing an index is one
changed row, shown with its old and new value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd


def test_diff_without_key_matches_rows_by_a_shared_unique_index(project: Path):
    from nbmlops.api import data

    old = pd.DataFrame(
        {"alcohol": [13.2, 12.4, 14.1, 13.0], "label": ["a", "b", "a", "c"]},
        index=pd.Index([10, 11, 12, 13], name="sample"),
    )
    new = old.copy()
    new.loc[12, "alcohol"] = 14.6
    data.commit(old, "wine")
    data.commit(new, "wine")

    proc = subprocess.run(
        [sys.executable, "-m", "nbmlops.cli.main", "data", "diff", "wine@1", "wine@2"],
        cwd=project, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "+0 added, -0 removed, ~1 changed" in out, out
    assert "matched by index" in out
    assert "row 12: alcohol: 14.1 -> 14.6" in out, out

    proc = subprocess.run(
        [sys.executable, "-m", "nbmlops.cli.main", "data", "diff", "wine@1", "wine@2", "--json"],
        cwd=project, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["rows_changed"] == 1 and doc["rows_added"] == doc["rows_removed"] == 0
    assert doc["changed_rows"] == [{"key": 12, "values": {"alcohol": [14.1, 14.6]}}]
