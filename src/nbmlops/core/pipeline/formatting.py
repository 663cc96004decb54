"""Small text formatters shared by the pipeline family's reports and renderers."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbmlops.core.pipeline.trials import TrialReport

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def format_value(value: Any) -> str:
    """A parameter or metric value for tables: floats to 6 significant digits."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def exact_value(value: float | None) -> str:
    """A metric value compared between runs: 10 significant digits, or ``(missing)``."""
    return "(missing)" if value is None else f"{value:.10g}"


def short_digest(digest: str | None) -> str:
    """A digest shortened for tables: its first 12 characters, or ``(none)``."""
    return digest[:12] if digest else "(none)"


def step_slug(text: str) -> str:
    """A name usable as a step (and file) name: 'my notebook (v2)' -> 'my-notebook-v2'."""
    slug = _UNSAFE.sub("-", text).strip("-.")
    return slug if slug[:1].isalnum() else f"nb-{slug}".rstrip("-")


def folder_slug(text: str, default: str) -> str:
    """A folder name from free text (at most 100 characters), ``default`` when nothing is left."""
    slug = _UNSAFE.sub("-", text).strip("-.")
    return slug[:100] or default


def trial_line(trial: TrialReport, metric: str) -> tuple[str, str, str]:
    """A finished trial for progress lines: (`` metric=value`` or "", params, `` 1.2s`` or "")."""
    value = f" {metric}={format_value(trial.value)}" if trial.value is not None else ""
    params = ", ".join(f"{k}={format_value(v)}" for k, v in trial.params.items())
    took = f" {trial.duration_s:.1f}s" if trial.duration_s is not None else ""
    return value, params, took
