"""HTML of the registry panel: versions (with their key metrics), aliases, an alias's history,
and the comparison a promotion shows before Confirm."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from html import escape
from typing import Any

from nbmlops.api.registry import AliasEvent, VersionInfo
from nbmlops.widgets.html import (
    DIFF_EDGE,
    ERROR_EDGE,
    FONT,
    OK_EDGE,
    SELECTED_BG,
    SELECTED_EDGE,
    TABLE,
    TD,
    TH,
    dot,
    fmt,
    note_html,
)

KEY_METRICS = 4  # metric columns in the versions table


def when(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def table(
    head: list[str], rows: list[list[str]], cls: str, row_styles: list[str] | None = None
) -> str:
    """Cells are HTML already (escaped by the caller)."""
    th = "".join(f'<th style="{TH}">{escape(h)}</th>' for h in head)
    styles = row_styles or [""] * len(rows)
    body = "".join(
        f'<tr style="{style}">' + "".join(f'<td style="{TD}">{c}</td>' for c in row) + "</tr>"
        for row, style in zip(rows, styles, strict=True)
    )
    return (
        '<div style="overflow-x:auto;max-width:100%">'
        f'<table class="{cls}" style="{TABLE}"><thead><tr>{th}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def key_metrics(versions: list[VersionInfo], limit: int = KEY_METRICS) -> list[str]:
    """The metrics most versions have (then by name): the versions table's metric columns."""
    counts = Counter(k for v in versions for k in v.metrics)
    return [k for k, _n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:limit]


def _alias_tags(aliases: list[str]) -> str:
    return " ".join(
        f'<span style="white-space:nowrap;font-weight:600">@{escape(a)}</span>' for a in aliases
    )


def versions_html(versions: list[VersionInfo], selected: int = 0) -> str:
    """Newest first; the selected version's row is shaded, never marked with a fake expander."""
    if not versions:
        return note_html("No versions registered yet.")
    metrics = key_metrics(versions)
    rows, styles = [], []
    for v in reversed(versions):
        scan = escape(v.scan)
        if v.scan != "clean":
            colour = ERROR_EDGE if v.scan == "flagged" else DIFF_EDGE
            scan = dot(colour) + f"<b>{scan}</b>"
        rows.append(
            [
                f"<b>v{v.version}</b>",
                _alias_tags(v.aliases),
                *(escape(fmt(v.metrics.get(m))) for m in metrics),
                scan,
                "✓" if v.card_complete else dot(ERROR_EDGE) + "<b>✗ incomplete</b>",
                escape(", ".join(v.approvals)),
                f'<span style="font-family:monospace" title="{escape(v.run_id or "")}">'
                f"{escape((v.run_id or '')[:8])}</span>",
                escape(when(v.created)),
            ]
        )
        styles.append(
            f"background:{SELECTED_BG};box-shadow:inset 4px 0 {SELECTED_EDGE}"
            if v.version == selected
            else ""
        )
    head = [
        "version",
        "aliases",
        *metrics,
        "scan",
        "card complete",
        "approvals",
        "run",
        "created",
    ]
    return table(head, rows, "nbmlops-versions", styles)


def aliases_html(aliases: dict[str, int]) -> str:
    if not aliases:
        return note_html("No alias is set.")
    rows = [[_alias_tags([a]), f"v{v}"] for a, v in aliases.items()]
    return table(["alias", "held by"], rows, "nbmlops-aliases")


def history_html(alias: str, events: list[AliasEvent]) -> str:
    if not events:
        return note_html(f"@{alias} has no recorded history.")
    rows = []
    for e in reversed(events):  # newest first
        before = "nobody" if e.previous is None else f"v{e.previous}"
        after = "nobody" if e.version is None else f"v{e.version}"
        rows.append(
            [
                escape(when(e.ts)),
                escape(e.action),
                escape(f"{before} → {after}" if e.action != "external" else after),
                escape(e.user),
                escape(e.override or ""),
            ]
        )
    title = (
        f'<div style="{FONT};font-weight:600;padding:6px 0 2px">History of @{escape(alias)}</div>'
    )
    return title + table(["when", "action", "move", "by", "override"], rows, "nbmlops-history")


def comparison_html(
    candidate: VersionInfo | None,
    holder: VersionInfo | None,
    alias: str,
    gates: list[Any] | None,
    gate_note: str = "",
) -> str:
    """Candidate beside the alias's current holder (metrics, card, scan, approvals), then every
    gate the promotion must pass with its verdict now; ``gates`` None: still being checked."""
    if candidate is None:
        return ""
    them = [candidate, *([holder] if holder is not None else [])]
    head = ["", f"candidate v{candidate.version}"]
    if holder is not None:
        head.append(f"@{alias} now: v{holder.version}")
    rows, styles = [], []
    names = sorted({k for v in them for k in v.metrics})
    for m in names:
        values = [v.metrics.get(m) for v in them]
        rows.append([f"<b>{escape(m)}</b>", *(escape(fmt(x)) for x in values)])
        differs = holder is not None and values[0] != values[1]
        styles.append(f"box-shadow:inset 4px 0 {DIFF_EDGE}" if differs else "")
    for label, get in (
        ("card", lambda v: "complete" if v.card_complete else "✗ incomplete"),
        ("scan", lambda v: v.scan),
        ("approvals", lambda v: ", ".join(v.approvals) or "none"),
    ):
        facts = [str(get(v)) for v in them]
        rows.append([f"<b>{label}</b>", *(escape(x) for x in facts)])
        bad = facts[0] in ("✗ incomplete", "flagged", "error") or (
            label == "approvals" and facts[0] == "none"
        )
        styles.append(f"box-shadow:inset 4px 0 {ERROR_EDGE}" if bad else "")
    parts = [table(head, rows, "nbmlops-promote-compare", styles)]
    if not names:
        parts.append(note_html("Neither version recorded metrics at registration."))
    if gates is None:
        parts.append(note_html("Checking the gates…"))
    elif not gates:
        parts.append(note_html(gate_note or f"No gate is configured for @{alias}."))
    else:
        items = "".join(
            f'<li style="list-style:none;padding:1px 0">'
            f"{dot(OK_EDGE if g.passed else ERROR_EDGE)}<b>{'pass' if g.passed else 'FAIL'}"
            f"</b> {escape(g.gate)}: {escape(g.reason)}</li>"
            for g in gates
        )
        failed = sum(1 for g in gates if not g.passed)
        verdict = (
            "every gate passes now"
            if not failed
            else f"{failed} of {len(gates)} gates fail now: Confirm will be refused"
        )
        parts.append(
            f'<div class="nbmlops-gates" style="{FONT};padding:4px 0"><b>Gates for @'
            f'{escape(alias)}</b> ({verdict}):<ul style="margin:2px 0;padding-left:4px">'
            f"{items}</ul></div>"
        )
    return "".join(parts)
