"""The compact summary shown under a tracked cell, as text and as HTML."""

from __future__ import annotations

import html

from nbmlops.core.tracking.session import RunSummary

# JupyterLab theme variables (light and dark), with fallbacks for other front ends; the text
# keeps its inherited colour and the status colour marks only the edge, for contrast.
_STATUS_COLOUR = {
    "FINISHED": "var(--jp-success-color1,#388e3c)",
    "FAILED": "var(--jp-error-color1,#d32f2f)",
    "KILLED": "var(--jp-warn-color1,#f57c00)",
}
_OTHER = "var(--jp-layout-color4,#757575)"
_KEY_COLOUR = "var(--jp-ui-font-color1,#212121)"  # color2 falls below AA on a table's shaded row


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _settings(count: int | None) -> str:
    return f", {count} settings as params" if count else ""


def summary_lines(s: RunSummary) -> list[tuple[str, str]]:
    cap = s.capture
    rows: list[tuple[str, str]] = []
    # an estimator's settings are counted on its model row: dozens of them would bury the rest
    own = {k: v for k, v in cap.params.items() if k.split(".", 1)[0] not in cap.settings_of}
    if own:
        rows.append(("params", ", ".join(f"{k}={_short(v, 30)}" for k, v in own.items())))
    metrics = [f"{k}={_fmt(v)}" for k, v in cap.metrics.items()]
    if s.logged_metric_count:
        metrics.append(f"+{s.logged_metric_count} logged value(s)")
    if metrics:
        rows.append(("metrics", ", ".join(metrics)))
    if cap.models:
        rows.append(
            (
                "models",
                ", ".join(
                    f"{m['name']} ({m['class'].rsplit('.', 1)[-1]}"
                    f"{_settings(cap.settings_of.get(m['name']))})"
                    for m in cap.models
                ),
            )
        )
    unlogged = [n for n in cap.settings_of if n not in {m["name"] for m in cap.models}]
    if unlogged:
        rows.append(
            ("settings", ", ".join(f"{n}{_settings(cap.settings_of[n])}" for n in unlogged))
        )
    inputs = [d for d in cap.data if d.role == "input"]
    outputs = [d for d in cap.data if d.role == "output"]
    if inputs:
        rows.append(
            (
                "data in",
                ", ".join(
                    f"{d.name} {'x'.join(map(str, d.shape))} #{d.digest[:10]}" for d in inputs
                ),
            )
        )
    if outputs:
        rows.append(
            (
                "data out",
                ", ".join(
                    f"{d.name} {'x'.join(map(str, d.shape))} #{d.digest[:10]}" for d in outputs
                ),
            )
        )
    if cap.figures:
        rows.append(("figures", ", ".join(f.rsplit("/", 1)[-1] for f in cap.figures)))
    for note in cap.notes:
        rows.append(("note", note))
    if s.journal_note:
        rows.append(("journal", s.journal_note))
    if s.ship_note:
        rows.append(("shipping", s.ship_note))
    return rows


def _headline(s: RunSummary) -> str:
    if s.dry_run:
        return f"dry run of {s.name!r}: nothing was logged"
    run = s.run_id or f"pending (journal key {s.key[:12]})"
    if s.shipped:
        state = ""
    elif not s.journaled:
        state = " · not yet in the journal (see below)"
    else:
        state = " · safe in the journal, not yet in MLflow (shipping in the background)"
    return (
        f"{s.status} {s.name!r} in experiment {s.experiment!r} · run {run} · "
        f"{s.duration_s:.2f}s{state}"
    )


def summary_text(s: RunSummary) -> str:
    lines = [f"nbmlops: {_headline(s)}"]
    lines += [f"  {k:<9}{v}" for k, v in summary_lines(s)]
    if s.error:
        lines.append(f"  {'error':<9}{s.error}")
    if s.run_url:
        lines.append(f"  {'open':<9}{s.run_url}")
    return "\n".join(lines)


def summary_html(s: RunSummary) -> str:
    colour = _STATUS_COLOUR.get(s.status, _OTHER)
    head = html.escape(_headline(s))
    link = ""
    if s.run_url:
        link = f' · <a href="{html.escape(s.run_url)}" target="_blank">open in MLflow</a>'
    rows = "".join(
        f"<tr><td style='padding:0 8px 0 0;color:{_KEY_COLOUR};vertical-align:top;text-align:left'>"
        f"{html.escape(k)}</td><td style='padding:0;text-align:left'>{html.escape(v)}</td></tr>"
        for k, v in summary_lines(s)
    )
    if s.error:
        rows += (
            "<tr><td style='font-weight:600;text-align:left'>error</td>"
            f"<td style='text-align:left'>{html.escape(s.error)}</td></tr>"
        )
    return (
        f"<div class='nbmlops-summary' style='font-size:12px;border-left:3px solid {colour};"
        f"padding:2px 8px;margin:2px 0;color:var(--jp-content-font-color1,inherit)'><b>nbmlops</b> "
        f"{head}{link}"
        f"<table style='margin:2px 0 0 0;border:none'>{rows}</table></div>"
    )
