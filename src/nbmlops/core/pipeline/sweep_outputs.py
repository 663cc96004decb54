"""What a sweep leaves next to its trials: plots, ``best_params.yaml`` and ``trials.csv``."""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from nbmlops.core.pipeline.trials import SweepReport


def draw_plots(study: Any, out_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Optimization history, parameter importances and (when steps were logged) intermediate
    values as PNG files; figures are closed, so a notebook shows none of them by itself."""
    notes: list[str] = []
    try:
        import matplotlib
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as oplt
    except ImportError:
        return {}, ["plots need matplotlib (pip install matplotlib)"]
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    made: dict[str, Path] = {}

    def importances(s: Any) -> Any:
        try:
            return oplt.plot_param_importances(s)
        except ImportError:  # the default evaluator (fANOVA) needs scikit-learn
            return oplt.plot_param_importances(s, evaluator=PedAnovaImportanceEvaluator())

    wanted: list[tuple[str, Callable[[Any], Any], str | None]] = [
        (
            "optimization_history",
            oplt.plot_optimization_history,
            None if complete else "no trial completed",
        ),
        (
            "param_importances",
            importances,
            None if len(complete) >= 2 else "parameter importances need 2 completed trials",
        ),
    ]
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        wanted.append(("intermediate_values", oplt.plot_intermediate_values, None))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, fn, skip in wanted:
        if skip:
            notes.append(f"{name.replace('_', ' ')}: {skip}")
            continue
        path = out_dir / f"{name}.png"
        try:
            with warnings.catch_warnings(), matplotlib.rc_context():
                warnings.simplefilter("ignore")
                ax = fn(study)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.savefig(path, dpi=110, bbox_inches="tight")
                plt.close(fig)
        except Exception as err:
            notes.append(f"{name.replace('_', ' ')}: not drawn ({type(err).__name__}: {err})")
            continue
        made[name] = path
    return made, notes


def write_best_params(report: SweepReport, parameters: dict[str, Any], path: Path) -> None:
    """The best trial's parameters as YAML, headed by how to run the notebook with them."""
    best = report.best
    assert best is not None
    nb = Path(report.notebook)
    head = (
        f"# best of study {report.study!r}: {report.metric} = {best.value!r} "
        f"(trial {best.number}, {report.direction})\n"
        f"# notebook: {nb}\n"
        f"# run it again with: nbmlops run {nb.name} -f {path.name}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(head + yaml.safe_dump(parameters, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


def write_trials_csv(report: SweepReport, path: Path) -> None:
    """One row per trial (:meth:`SweepReport.table`)."""
    rows = report.table()
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
