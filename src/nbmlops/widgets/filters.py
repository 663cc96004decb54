"""Checks of the runs filter a panel can make before filtering: a comparison on a field no run
has is an error naming the known fields, not an empty table."""

from __future__ import annotations

import difflib
import re
from typing import Any

from nbmlops.api import experiments as core

# a comparison token of the filter (acc>0.9, lr<=0.01, depth!=3), as the filter reads them
_COMPARISON = re.compile(r"^(?P<key>[^<>=!\s]+)(?P<op><=|>=|!=|<|>)(?P<value>.+)$")


def unknown_fields(runs: Any, text: str) -> str | None:
    """The error for comparisons on fields the runs do not have (``accuracy>0.9`` when the
    metric is ``acc``), naming the known ones; None when every field is known. Without it an
    unknown field silently matches no run."""
    if runs.empty:
        return None
    unknown = []
    for token in text.split():
        m = _COMPARISON.match(token)
        if m and core.resolve_column(runs, m["key"]) is None:
            unknown.append(m["key"])
    if not unknown:
        return None
    known = [core.short(c) for c in (*core.metric_columns(runs), *core.param_columns(runs))]
    close = difflib.get_close_matches(unknown[0], known, n=3, cutoff=0.4)
    hint = f"Did you mean {' or '.join(close)}? " if close else ""
    fields = ", ".join(dict.fromkeys(["duration", *known]))
    return (
        f"Unknown field {', '.join(repr(u) for u in unknown)} in the filter: no run has it, so "
        f"nothing matches. {hint}Known fields: {fields}."
    )
