"""Model cards: what a registered version is, how good it is, what it was trained on, what
drives its predictions, and what it is (not) meant for.

A card is built once at registration into :class:`ModelCard` (kept as ``card.json``) and
rendered to Markdown (``card.md``, images beside it) and to one self-contained HTML file
(``card.html``, images embedded) so it can be mailed or opened anywhere. Editing the
``intended_use`` / ``limitations`` fields later re-renders from ``card.json`` without loading
the model again. A card whose intended use or limitations are empty is *incomplete*.

The explainability section is a permutation importance (scikit-learn's
``permutation_importance``): on a holdout data version with its true target when one is
given, else on the model's logged input example scored against the model's own predictions,
which only shows what moves its outputs on a handful of rows (the card says so).
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from nbmlops.core.registry.gates import CARD_FIELDS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CARD_FIELDS",
    "ModelCard",
    "importance_figure",
    "permutation_importances",
    "render_html",
    "render_markdown",
]

INDICATIVE_NOTE = (
    "Computed on the model's logged input example ({rows} rows) against the model's own "
    "predictions, because no holdout data version was given: only indicative of what moves "
    "its outputs, not of what makes it accurate. Register with --holdout NAME@k --target COL "
    "for a real measure."
)


@dataclass
class ModelCard:
    name: str
    version: int
    created: float
    registered_by: str
    model_id: str | None = None
    run_id: str | None = None
    source: str | None = None
    model_class: str | None = None
    git_commit: str | None = None
    description: str = ""
    intended_use: str = ""
    limitations: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    data_versions: list[str] = field(default_factory=list)
    data_digests: list[str] = field(default_factory=list)
    upstream_data_versions: list[str] = field(default_factory=list)
    training_data: list[dict[str, Any]] = field(default_factory=list)  # TrainingSet.to_dict()
    data_gaps: list[str] = field(default_factory=list)
    lineage_note: str = ""
    importance: list[dict[str, float | str]] = field(default_factory=list)
    importance_basis: str = ""
    importance_metric: str = ""
    importance_note: str = ""
    scan_status: str = ""
    scan_summary: list[str] = field(default_factory=list)
    edits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """User-filled fields still empty (a card with any is incomplete)."""
        return [f for f in CARD_FIELDS if not str(getattr(self, f) or "").strip()]

    @property
    def complete(self) -> bool:
        return not self.missing

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


# --- explainability ------------------------------------------------------------------------


class _Predictor:
    """The smallest estimator scikit-learn's permutation_importance accepts: it only calls
    our scorer, which calls ``predict``."""

    def __init__(self, predict: Callable[[Any], Any]):
        self.predict = predict

    def fit(self, X: Any, y: Any = None) -> _Predictor:  # never called; check_scoring wants it
        return self


def _is_classification(y: Any) -> bool:
    import numpy as np
    import pandas as pd

    values = pd.Series(np.asarray(y).ravel())
    if values.dtype.kind in "biuOSU" or isinstance(values.dtype, pd.CategoricalDtype):
        return values.nunique() <= max(20, int(len(values) ** 0.5))
    return False


def permutation_importances(
    predict: Callable[[Any], Any],
    X: Any,
    y: Any,
    *,
    n_repeats: int = 10,
    random_state: int = 0,
) -> tuple[list[dict[str, float | str]], str]:
    """Permutation importance of every column of frame ``X`` (largest first) and the name
    of the score used (accuracy for class-like targets, r2 otherwise)."""
    import numpy as np
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import accuracy_score, r2_score

    classify = _is_classification(y)
    metric = "accuracy" if classify else "r2"

    def scorer(estimator: Any, X_: Any, y_: Any) -> float:
        pred = np.asarray(estimator.predict(X_))
        if pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred[:, 0]
        return float(accuracy_score(y_, pred) if classify else r2_score(y_, pred))

    result = permutation_importance(
        _Predictor(predict), X, y, scoring=scorer, n_repeats=n_repeats, random_state=random_state
    )
    rows: list[dict[str, float | str]] = [
        {"feature": str(col), "mean": float(m), "std": float(s)}
        for col, m, s in zip(
            X.columns, result.importances_mean, result.importances_std, strict=True
        )
    ]
    rows.sort(key=lambda r: -float(r["mean"]))
    return rows, metric


def importance_figure(card: ModelCard) -> Figure:
    from matplotlib.figure import Figure

    rows = list(reversed(card.importance[:30]))
    fig = Figure(figsize=(6.5, 0.9 + 0.32 * max(1, len(rows))))
    ax = fig.add_subplot()
    ax.barh(
        [str(r["feature"]) for r in rows],
        [float(r["mean"]) for r in rows],
        xerr=[float(r["std"]) for r in rows],
        color="#4c8eda",
    )
    ax.axvline(0, color="#888888", linewidth=0.8)
    ax.set_xlabel(f"decrease in {card.importance_metric} when the column is shuffled")
    ax.set_title(f"permutation importance of {card.name} ({card.importance_basis})", fontsize=9)
    fig.tight_layout()
    return fig


def fit_labels(fig: Figure) -> Figure:
    """Widen the y-range of a lineage drawing so the labels under the nodes stay inside it
    (a graph of one row has a y-range of about +-0.02 and its labels sit at -0.06)."""
    for ax in fig.axes:
        ys = [float(t.get_position()[1]) for t in ax.texts]
        if not ys:
            continue
        low, high = ax.get_ylim()
        low, high = min(low, min(ys) - 0.12), max(high, max(ys) + 0.05)
        if high - low < 0.4:
            mid = (high + low) / 2
            low, high = min(low, mid - 0.2), max(high, mid + 0.2)
        ax.set_ylim(low, high)
    return fig


def figure_png(fig: Figure) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


# --- rendering -----------------------------------------------------------------------------


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _unfilled(card: ModelCard, field_name: str) -> str:
    flag = field_name.replace("_", "-")
    return f'Not filled in: `%card {card.name} {card.version} --{flag} "..."`'


def training_rows(card: ModelCard) -> list[tuple[str, str]]:
    """The card's training data as (what, text) rows: each variable the model was fitted on,
    with its data version or where it came from, then the versions further upstream."""
    rows: list[tuple[str, str]] = []
    for t in card.training_data:
        shape = "x".join(str(n) for n in t.get("shape") or [])
        held = ", ".join(f"`{v}`" for v in t.get("versions") or [])
        came = ", ".join(f"`{v}`" for v in t.get("sources") or [])
        where = f"data version {held}" if held else (f"from {came}" if came else "no data version")
        rows.append(
            (
                f"{t.get('role', 'data')} `{t.get('name')}`",
                f"{shape}, {where}, digest {str(t.get('digest'))[:12]}",
            )
        )
    if not card.training_data:  # cards written before the training data was named
        rows += [("data version", f"`{v}`") for v in card.data_versions]
        rows += [("content digest", f"`{d}`") for d in card.data_digests]
    named = {v for t in card.training_data for v in [*t.get("versions", []), *t.get("sources", [])]}
    named |= set(card.data_versions)
    rows += [("further upstream", f"`{v}`") for v in card.upstream_data_versions if v not in named]
    return rows


def render_markdown(card: ModelCard, images: dict[str, str] | None = None) -> str:
    """The card as Markdown; ``images`` maps ``lineage`` / ``importance`` to file names."""
    images = images or {}
    md = [f"# Model card: {card.name} v{card.version}", ""]
    if not card.complete:
        md += [f"> **Incomplete**: {', '.join(card.missing)} not filled in.", ""]
    md += [
        "| | |",
        "|---|---|",
        f"| registered | {_when(card.created)} by {card.registered_by} |",
        f"| model class | {card.model_class or 'unknown'} |",
        f"| logged model | {card.model_id or '-'} |",
        f"| run | {card.run_id or '-'} |",
        f"| git commit | {card.git_commit or 'not recorded'} |",
        f"| security scan | {card.scan_status or 'not run'} |",
        "",
    ]
    if card.description:
        md += [card.description, ""]
    md += ["## Intended use", "", card.intended_use.strip() or _unfilled(card, "intended_use"), ""]
    md += ["## Limitations", "", card.limitations.strip() or _unfilled(card, "limitations"), ""]
    md += ["## Metrics", ""]
    if card.metrics:
        md += ["| metric | value |", "|---|---|"]
        md += [f"| {k} | {_fmt(v)} |" for k, v in sorted(card.metrics.items())]
    else:
        md.append("No metrics were logged on the run.")
    md += ["", "## Parameters", ""]
    if card.params:
        md += ["| parameter | value |", "|---|---|"]
        md += [f"| {k} | {v} |" for k, v in sorted(card.params.items())]
    else:
        md.append("No parameters were logged on the run.")
    md += ["", "## Training data", ""]
    rows = training_rows(card)
    if rows:
        md += [f"- {what}: {text}" for what, text in rows]
    else:
        md.append("No training data recorded in the lineage.")
    md += [f"- gap: {gap}" for gap in card.data_gaps]
    if card.lineage_note:
        md += ["", card.lineage_note]
    md += ["", "## Lineage", ""]
    md.append(
        f"![lineage of {card.name} v{card.version}]({images['lineage']})"
        if "lineage" in images
        else "No lineage graph (the model was not logged by a tracked cell)."
    )
    md += ["", "## Explainability: permutation importance", ""]
    if card.importance:
        md += [f"Basis: {card.importance_basis}. Score: {card.importance_metric}.", ""]
        if card.importance_note:
            md += [f"> {card.importance_note}", ""]
        md += ["| feature | importance | std |", "|---|---|---|"]
        md += [
            f"| {r['feature']} | {_fmt(r['mean'])} | {_fmt(r['std'])} |" for r in card.importance
        ]
        if "importance" in images:
            md += ["", f"![permutation importance]({images['importance']})"]
    else:
        md.append(card.importance_note or "Not computed.")
    md += ["", "## Security scan", "", f"Status: **{card.scan_status or 'not run'}**"]
    md += [f"- {line}" for line in card.scan_summary]
    if card.edits:
        md += ["", "## Edits", ""]
        md += [f"- {_when(e['ts'])} {e['user']}: {', '.join(e['fields'])}" for e in card.edits]
    return "\n".join(md) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:60rem;margin:2rem auto;
padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;
text-align:left}th{background:#f5f5f5}.incomplete{background:#fff3cd;padding:.5rem 1rem}
.note{color:#555;font-style:italic}img{max-width:100%}code{background:#f3f3f3;padding:0 .2rem}
"""


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    thead = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""
    body = "".join("<tr>" + "".join(f"<td>{e(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(card: ModelCard, images: dict[str, bytes] | None = None) -> str:
    """The card as one self-contained HTML page (``images``: PNG bytes, embedded)."""
    images = images or {}
    e = html.escape
    title = f"Model card: {card.name} v{card.version}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if not card.complete:
        parts.append(
            f'<p class="incomplete"><b>Incomplete</b>: {e(", ".join(card.missing))} '
            "not filled in.</p>"
        )
    parts.append(
        _table(
            ["", ""],
            [
                ["registered", f"{_when(card.created)} by {card.registered_by}"],
                ["model class", card.model_class or "unknown"],
                ["logged model", card.model_id or "-"],
                ["run", card.run_id or "-"],
                ["git commit", card.git_commit or "not recorded"],
                ["security scan", card.scan_status or "not run"],
            ],
        )
    )
    if card.description:
        parts.append(f"<p>{e(card.description)}</p>")
    for heading, name in (("Intended use", "intended_use"), ("Limitations", "limitations")):
        text = str(getattr(card, name)).strip()
        body = f"<p>{e(text)}</p>" if text else f'<p class="note">{e(_unfilled(card, name))}</p>'
        parts += [f'<h2 id="{name}">{heading}</h2>', body]
    parts.append('<h2 id="metrics">Metrics</h2>')
    parts.append(
        _table(["metric", "value"], [[k, v] for k, v in sorted(card.metrics.items())])
        if card.metrics
        else '<p class="note">No metrics were logged on the run.</p>'
    )
    parts.append('<h2 id="parameters">Parameters</h2>')
    parts.append(
        _table(["parameter", "value"], [[k, v] for k, v in sorted(card.params.items())])
        if card.params
        else '<p class="note">No parameters were logged on the run.</p>'
    )
    parts.append('<h2 id="data">Training data</h2>')
    rows = [[part.replace("`", "") for part in r] for r in training_rows(card)]
    parts.append(
        _table(["", ""], rows)
        if rows
        else '<p class="note">No training data recorded in the lineage.</p>'
    )
    parts += [f'<p class="note">Gap: {e(gap)}</p>' for gap in card.data_gaps]
    if card.lineage_note:
        parts.append(f'<p class="note">{e(card.lineage_note)}</p>')
    parts.append('<h2 id="lineage">Lineage</h2>')
    parts.append(
        _img(images["lineage"], f"lineage of {card.name} v{card.version}")
        if "lineage" in images
        else '<p class="note">No lineage graph (the model was not logged by a tracked cell).</p>'
    )
    parts.append('<h2 id="explainability">Explainability: permutation importance</h2>')
    if card.importance:
        parts.append(
            f"<p>Basis: {e(card.importance_basis)}. Score: {e(card.importance_metric)}.</p>"
        )
        if card.importance_note:
            parts.append(f'<p class="note">{e(card.importance_note)}</p>')
        parts.append(
            _table(
                ["feature", "importance", "std"],
                [[r["feature"], r["mean"], r["std"]] for r in card.importance],
            )
        )
        if "importance" in images:
            parts.append(_img(images["importance"], "permutation importance"))
    else:
        parts.append(f'<p class="note">{e(card.importance_note or "Not computed.")}</p>')
    parts.append('<h2 id="scan">Security scan</h2>')
    parts.append(f"<p>Status: <b>{e(card.scan_status or 'not run')}</b></p>")
    if card.scan_summary:
        parts.append("<ul>" + "".join(f"<li>{e(s)}</li>" for s in card.scan_summary) + "</ul>")
    if card.edits:
        parts.append('<h2 id="edits">Edits</h2>')
        parts.append(
            _table(
                ["when", "who", "fields"],
                [[_when(x["ts"]), x["user"], ", ".join(x["fields"])] for x in card.edits],
            )
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
