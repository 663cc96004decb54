"""An ipywidgets progress bar for progress events (``%pipeline run``, ``%sweep``): the bar, the
steps or trials running now, one line per finished one."""

from __future__ import annotations

import html

import ipywidgets as W

from nbmlops.api.pipeline import (
    PipelineFinished,
    PipelinePlanned,
    ProgressEvent,
    StepFinished,
    StepStarted,
    StepStatus,
    SweepFinished,
    SweepPlanned,
    TrialFinished,
    TrialStarted,
    format_value,
    trial_line,
)

# JupyterLab's theme colours, so the lines read in the light and the dark theme alike (with
# plain fallbacks for a saved notebook shown outside JupyterLab)
_COLOURS = {
    StepStatus.RAN: "var(--jp-success-color1, #2e7d32)",
    StepStatus.CACHED: "var(--jp-info-color1, #0277bd)",
    StepStatus.FAILED: "var(--jp-error-color1, #c62828)",
    StepStatus.SKIPPED: "var(--jp-warn-color1, #ef6c00)",
    "COMPLETE": "var(--jp-success-color1, #2e7d32)",
    "PRUNED": "var(--jp-warn-color1, #ef6c00)",
    "FAIL": "var(--jp-error-color1, #c62828)",
}
_PLAIN = "var(--jp-ui-font-color2, #555)"


class WidgetProgress:
    def __init__(self, title: str = "pipeline", status: str = "planning"):
        self.bar = W.IntProgress(value=0, min=0, max=1, description=title, bar_style="info")
        self.label = W.Label(status)
        self.lines = W.HTML("")
        self.box = W.VBox([W.HBox([self.bar, self.label]), self.lines])
        self._rows: list[str] = []
        self._running: list[str] = []
        self._prefix = "running "
        self._metric = ""

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)

    def _line(self, text: str) -> None:
        self._rows.append(text)
        self.lines.value = "".join(self._rows)

    def __call__(self, event: ProgressEvent) -> None:
        match event:
            case PipelinePlanned(steps=steps):
                self.bar.max = max(1, len(steps))
                self.bar.value = 0
            case SweepPlanned():
                self._metric = event.metric
                self._prefix = "running trial "
                self.bar.max = max(1, event.to_run)
                self.bar.value = 0
                self._line(
                    f"<div style='color:var(--jp-ui-font-color2,#616161)'>study <b>{html.escape(event.study)}</b>: "
                    f"{event.earlier} earlier trial(s), {event.to_run} to run</div>"
                )
                if not event.to_run:
                    self.bar.value = self.bar.max
            case StepStarted(step=step):
                self._running.append(step)
            case TrialStarted(number=number):
                self._running.append(str(number))
            case StepFinished(report=rep):
                if rep.name in self._running:
                    self._running.remove(rep.name)
                self.bar.value += 1
                took = f" {rep.duration_s:.1f}s" if rep.status.timed else ""
                colour = _COLOURS.get(rep.status, _PLAIN)
                why = html.escape(rep.error or rep.reason or "")
                self._line(
                    f"<div><b style='color:{colour}'>{html.escape(rep.status)}</b> "
                    f"{html.escape(rep.name)}{took} <span style='color:var(--jp-ui-font-color2,#616161)'>{why}</span></div>"
                )
            case TrialFinished(trial=trial):
                if str(trial.number) in self._running:
                    self._running.remove(str(trial.number))
                self.bar.value = min(self.bar.max, self.bar.value + 1)
                colour = _COLOURS.get(trial.state, _PLAIN)
                value, params, took = trial_line(trial, self._metric)
                self._line(
                    f"<div><b style='color:{colour}'>{trial.state}</b> trial {trial.number}"
                    f"{html.escape(value)} <span>{html.escape(params)}</span>"
                    f"<span style='color:var(--jp-ui-font-color2,#616161)'>{took} {html.escape(trial.error or '')}</span></div>"
                )
            case PipelineFinished(report=report):
                self.bar.bar_style = "success" if report.ok else "danger"
                self.label.value = f"{report.status.lower()} in {report.wall_s:.1f}s"
                return
            case SweepFinished(report=sweep):
                self.bar.bar_style = "success" if sweep.ok else "danger"
                best = sweep.best
                self.label.value = (
                    f"best {self._metric}={format_value(best.value)} (trial {best.number}) in "
                    f"{sweep.wall_s:.1f}s"
                    if best is not None
                    else "no trial completed"
                )
                return
        self.label.value = (self._prefix + ", ".join(self._running)) if self._running else ""
