"""`%sweep` in an in-process IPython shell: trials in real kernels, a widget progress bar, the
trials table, the best parameters file and the plots in the cell output."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from tests.conftest import write_notebook


def magics(shell):
    return shell.magics_manager.registry["SweepMagics"]


@pytest.mark.kernel
def test_sweep_magic_shows_progress_table_and_best(shell, project: Path) -> None:
    write_notebook(
        project / "train.ipynb",
        ["%load_ext nbmlops", "%%track fit\nval_auc = 0.9 if mode == 'good' else 0.6\n"],
        parameters="mode = 'bad'",
    )
    with capture_output() as out:
        frame = shell.run_line_magic(
            "sweep",
            "train.ipynb --param 'mode=choice(good, bad)' --trials 2 --metric val_auc "
            "--maximize --jobs 2",
        )
    assert list(frame["state"]) == ["COMPLETE", "COMPLETE"]
    assert set(frame["mode"]) == {"good", "bad"}
    best = frame[frame["best"]]
    assert list(best["mode"]) == ["good"] and list(best["val_auc"]) == [0.9]
    progress = magics(shell).last_progress
    assert progress.bar.max == 2 and progress.bar.value == 2
    assert progress.bar.bar_style == "success"
    assert "best val_auc=0.9" in progress.label.value
    assert progress.lines.value.count("COMPLETE") == 2
    report = magics(shell).last_report
    assert yaml.safe_load(report.best_params_path.read_text()) == {"mode": "good"}
    shown = [o.data for o in out.outputs]
    assert any("application/vnd.jupyter.widget-view+json" in d for d in shown)  # the bar
    assert any("best</b> val_auc" in d.get("text/html", "") for d in shown)
    assert sum("image/png" in d for d in shown) == len(report.plots) >= 2


def test_sweep_magic_reports_bad_input_in_one_line(shell, project: Path) -> None:
    write_notebook(project / "train.ipynb", ["pass"], parameters="mode = 'bad'")
    with capture_output(), pytest.raises(UsageError) as refused:
        shell.run_line_magic(
            "sweep", "train.ipynb --param 'mood=choice(a,b)' --trials 2 --metric val_auc"
        )
    # a refused sweep fails its cell (and so a papermill run of the notebook), in one message
    assert str(refused.value).startswith("Unknown parameter 'mood' for train.ipynb")
    assert "(in --param 'mood=choice(a,b)')" in str(refused.value)
    assert magics(shell).last_progress.bar.bar_style == "danger"
    assert not (project / ".nbmlops" / "sweeps").exists()
