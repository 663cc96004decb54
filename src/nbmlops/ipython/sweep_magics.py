"""``%sweep NOTEBOOK --param NAME=SPEC ... --metric NAME``: the sweep runner
(:mod:`nbmlops.core.pipeline.sweep`) with a widget progress bar, the trials as a table, the best
parameters and the plots in the cell output."""

from __future__ import annotations

import html
import shlex
from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import HTML, Image, display

from nbmlops.exceptions import NbmlopsError
from nbmlops.ipython.args import MagicArgumentParser as _Parser

_COLOURS = {"COMPLETE": "#2e7d32", "PRUNED": "#ef6c00", "FAIL": "#c62828"}
_FONT = "font-family:var(--jp-ui-font-family,sans-serif);font-size:12px"


def _parser() -> _Parser:
    p = _Parser(
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


def _fmt(value: Any) -> str:
    from nbmlops.core.pipeline.sweep import format_value

    return format_value(value)


class SweepProgress:
    """The pipeline's widget bar (an IntProgress, a status label, one line per finished item)
    over the trials of a sweep."""

    def __init__(self, metric: str):
        from nbmlops.widgets.progress import WidgetProgress

        view = WidgetProgress("sweep")
        self.bar, self.label, self.lines, self.box = view.bar, view.label, view.lines, view.box
        self.label.value = "checking"
        self.metric = metric
        self._rows: list[str] = []
        self._running: list[int] = []

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "plan":
            self.bar.max = max(1, event["to_run"])
            self.bar.value = 0
            self._rows.append(
                f"<div style='color:#555'>study <b>{html.escape(event['study'])}</b>: "
                f"{event['earlier']} earlier trial(s), {event['to_run']} to run</div>"
            )
            self.lines.value = "".join(self._rows)
            if not event["to_run"]:
                self.bar.value = self.bar.max
        elif kind == "trial_start":
            self._running.append(event["number"])
        elif kind == "trial_end":
            trial = event["trial"]
            if trial.number in self._running:
                self._running.remove(trial.number)
            self.bar.value = min(self.bar.max, self.bar.value + 1)
            colour = _COLOURS.get(trial.state, "#555")
            value = f" {self.metric}={_fmt(trial.value)}" if trial.value is not None else ""
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
            took = f" {trial.duration_s:.1f}s" if trial.duration_s is not None else ""
            self._rows.append(
                f"<div><b style='color:{colour}'>{trial.state}</b> trial {trial.number}"
                f"{html.escape(value)} <span>{html.escape(params)}</span>"
                f"<span style='color:#777'>{took} {html.escape(trial.error or '')}</span></div>"
            )
            self.lines.value = "".join(self._rows)
        elif kind == "done":
            report = event["report"]
            self.bar.bar_style = "success" if report.ok else "danger"
            best = report.best
            self.label.value = (
                f"best {self.metric}={_fmt(best.value)} (trial {best.number}) in "
                f"{report.wall_s:.1f}s"
                if best is not None
                else "no trial completed"
            )
            return
        self.label.value = (
            "running trial " + ", ".join(map(str, self._running)) if self._running else ""
        )


def _summary_html(report: Any) -> str:
    parts = []
    best = report.best
    if best is not None:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
        parts.append(
            f"<div><b style='color:#2e7d32'>best</b> {html.escape(report.metric)} = "
            f"<b>{_fmt(best.value)}</b> with {html.escape(params)} (trial {best.number})</div>"
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
    last_progress: SweepProgress | None = None
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

        from nbmlops.core.pipeline.sweep import run_sweep
        from nbmlops.core.tracking.session import get_tracker

        progress = SweepProgress(args.metric)
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
            print(f"nbmlops: {err}")
            return None
        self.last_report = report
        display(HTML(_summary_html(report)))
        for path in report.plots.values():
            display(Image(filename=str(path)))
        frame = pd.DataFrame(report.table()).set_index("trial") if report.trials else None
        if frame is not None:
            frame.attrs["sweep"] = report.to_dict()
        return frame
