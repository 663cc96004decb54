"""``%sweep NOTEBOOK --param NAME=SPEC ... --metric NAME``: the sweep runner
(:mod:`nbmlops.core.pipeline.sweep`) with a widget progress bar, the trials as a table, the best
parameters and the plots in the cell output."""

from __future__ import annotations

import html
import shlex
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import HTML, Image, display

from nbmlops.api.pipeline import format_value
from nbmlops.exceptions import NbmlopsError
from nbmlops.ipython.args import MagicArgumentParser

if TYPE_CHECKING:
    from nbmlops.widgets.progress import WidgetProgress

_FONT = "font-family:var(--jp-ui-font-family,sans-serif);font-size:12px"


def _parser() -> MagicArgumentParser:
    p = MagicArgumentParser(
        prog="%sweep",
        description="An Optuna study over a notebook's parameters (see `nbmlops sweep --help`).",
    )
    p.add_argument("notebook")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        help="NAME=SPEC (repeatable): uniform(a,b), loguniform(a,b), int(a,b[,step]), "
        "intlog(a,b), choice(v1,v2,...), or a fixed value",
    )
    p.add_argument("--metric", "-m", required=True, help="metric a %%%%track cell logs")
    p.add_argument("--trials", "-n", type=int, default=20, help="trials in all (default 20)")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--maximize", action="store_true")
    direction.add_argument("--minimize", action="store_true")
    p.add_argument("--jobs", "-j", type=int, default=1, help="trials at once")
    p.add_argument("--study", default=None, help="study name (default NOTEBOOK-METRIC)")
    p.add_argument("--prune", action="store_true", help="median pruning on steps logged")
    p.add_argument("--prune-startup", type=int, default=5)
    p.add_argument("--out", "-o", default=None, help="folder for best_params.yaml and plots")
    p.add_argument("--experiment", "-e", default=None)
    p.add_argument("--kernel", "-k", default=None)
    p.add_argument("--timeout", type=float, default=None, help="seconds per cell")
    p.add_argument("--seed", type=int, default=None)
    return p


def _summary_html(report: Any) -> str:
    parts = []
    best = report.best
    if best is not None:
        params = ", ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
        parts.append(
            f"<div><b style='color:#2e7d32'>best</b> {html.escape(report.metric)} = "
            f"<b>{format_value(best.value)}</b> with {html.escape(params)} (trial {best.number})</div>"
            f"<div>best parameters: <code>{html.escape(str(report.best_params_path))}</code></div>"
        )
    else:
        parts.append(
            f"<div><b style='color:#c62828'>no trial completed</b>: no best "
            f"{html.escape(report.metric)}</div>"
        )
    for note in report.notes:
        parts.append(f"<div style='color:#777'>note: {html.escape(note)}</div>")
    return f"<div style='{_FONT}'>{''.join(parts)}</div>"


@magics_class
class SweepMagics(Magics):
    last_progress: WidgetProgress | None = None
    last_report: Any = None

    @line_magic
    def sweep(self, line: str) -> Any:
        """%sweep NOTEBOOK --param NAME=SPEC [--param ...] --metric NAME [--trials N]
        [--maximize] [--jobs N] [--study NAME] [--prune] [--out DIR] [--seed N]

        Runs an Optuna study over the notebook's parameters: each trial a papermill run of it,
        recorded as a child of the sweep's MLflow run. Returns the trials as a table; the best
        parameters go to best_params.yaml, the plots next to it."""
        args = _parser().parse_args(shlex.split(line))
        import pandas as pd

        from nbmlops.api.sweep import run_sweep
        from nbmlops.api.tracking import get_tracker
        from nbmlops.widgets.progress import WidgetProgress

        progress = WidgetProgress("sweep", status="checking")
        self.last_progress = progress
        display(progress.box)
        try:
            report = run_sweep(
                args.notebook,
                args.param,
                metric=args.metric,
                trials=args.trials,
                maximize=args.maximize,
                jobs=args.jobs,
                study=args.study,
                prune=args.prune,
                prune_startup=args.prune_startup,
                out=args.out,
                experiment=args.experiment,
                kernel=args.kernel,
                timeout=args.timeout,
                seed=args.seed,
                progress=progress,
                settings=get_tracker().settings,
            )
        except NbmlopsError as err:
            progress.bar.bar_style = "danger"
            progress.label.value = "not started"
            raise IPythonUsageError(str(err)) from None
        self.last_report = report
        display(HTML(_summary_html(report)))
        for path in report.plots.values():
            display(Image(filename=str(path)))
        frame = pd.DataFrame(report.table()).set_index("trial") if report.trials else None
        if frame is not None:
            frame.attrs["sweep"] = report.to_dict()
        return frame
