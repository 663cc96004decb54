"""What ``%validate`` shows: a one-line verdict first, a compact table with the failing and
drifted columns first, and plots only of those unless ``--plots all``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output


@pytest.fixture
def shell(project: Path):
    sh = InteractiveShell.instance()
    sh.reset(new_session=True)
    sh.run_line_magic("load_ext", "nbmlops")
    yield sh
    sh.run_line_magic("unload_ext", "nbmlops")
    sh.reset(new_session=True)


def frame(n: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {f"c{i}": rng.normal(size=n) for i in range(6)} | {"z": rng.normal(loc=shift, size=n)}
    )


def axes(output) -> int:
    """Plots in a displayed matplotlib figure, from its repr: <Figure size WxH with N Axes>."""
    found = re.search(r"with (\d+) Axes", output.data["text/plain"])
    assert found, output.data["text/plain"]
    return int(found.group(1))


def validate(shell, line: str):
    with capture_output() as out:
        result = shell.run_cell(line)
    assert result.success, out.stderr
    return out.outputs


def test_validate_shows_the_verdict_then_problems_first_and_plots_only_them(shell):
    shell.user_ns["ref"] = frame(400, 0.0, 1)
    shell.user_ns["today"] = frame(400, 2.0, 2)  # only z drifts
    validate(shell, "%data commit ref --name base")

    first, *plots = validate(shell, "%validate today --against base@1")
    html = first.data["text/html"]
    assert html.index("✗ Validation FAILED") < html.index("<table")
    assert "1 of 7 columns drifted: z" in html
    rows = html.split('<tr class="nbmlops-check-')[1:]
    # z failed the inferred range checks and drifted: first, and marked
    assert rows[0].split('"')[0] in ("problem", "drifted") and ">z<" in rows[0]
    assert all(r.startswith('ok"') for r in rows[1:])
    assert "Validation FAILED" in first.data["text/plain"]
    [drifted_only] = plots

    _first, *every = validate(shell, "%validate today --against base@1 --plots all")
    [all_columns] = every
    assert axes(drifted_only) == 1 and axes(all_columns) == 7

    assert len(validate(shell, "%validate today --against base@1 --plots none")) == 1
    shell.user_ns["same"] = shell.user_ns["ref"].copy()
    [passed] = validate(shell, "%validate same --against base@1")  # nothing to plot
    assert passed.data["text/html"].count("✓ Validation passed") == 1
