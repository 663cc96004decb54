"""Names the registry accepts: model names, aliases, version numbers; and the holders stack an
alias history implies."""

from __future__ import annotations

import re
from typing import Any

from nbmlops.exceptions import UsageError

__all__ = [
    "HISTORY_TAG",
    "TAG",
    "alias_stack",
    "as_version",
    "check_alias",
    "check_model_name",
]

TAG = "nbmlops."
HISTORY_TAG = "nbmlops.alias_history."
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ALIAS_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def check_model_name(name: str) -> str:
    """A registered model name nbmlops accepts (it becomes a folder name under the run's
    artifacts and a lock file name, so nothing path-like)."""
    if isinstance(name, str) and _NAME_RE.fullmatch(name) and ".." not in name:
        return name
    raise UsageError(
        f"Invalid model name {name!r}",
        fix="Use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, "
        "without '..' (e.g. 'churn-model').",
    )


def check_alias(alias: str) -> str:
    if (
        isinstance(alias, str)
        and _ALIAS_RE.fullmatch(alias)
        and alias.lower() != "latest"
        and not re.fullmatch(r"[vV]\d+", alias)
    ):
        return alias
    raise UsageError(
        f"Invalid alias {alias!r}",
        fix="Use a letter then letters, digits, '_' or '-' (e.g. champion, challenger); "
        "'latest' and v<N> are reserved by MLflow.",
    )


def as_version(version: int | str) -> int:
    text = str(version).strip().removeprefix("v").removeprefix("V")
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise UsageError(f"Invalid model version {version!r}", fix="Give a version number: 1, 2, 3 ...")


def alias_stack(events: list[dict[str, Any]]) -> list[int]:
    """The holders an alias history implies, oldest first: promotions (and holders set
    outside nbmlops) push, rollbacks pop. ``rollback`` moves the alias to ``stack[-2]``."""
    stack: list[int] = []
    for e in events:
        action = e.get("action")
        if action == "base":
            stack = [int(v) for v in e.get("stack", [])]
        elif action in ("promote", "external") and e.get("version") is not None:
            v = int(e["version"])
            if not stack or stack[-1] != v:
                stack.append(v)
        elif action == "rollback" and stack:
            stack.pop()
    return stack
