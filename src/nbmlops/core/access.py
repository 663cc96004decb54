"""Who may read and who may commit which dataset, from ``access.datasets`` in nbmlops.yaml.

Keys are dataset names or fnmatch patterns (``raw-*``); the first key in file order that
matches the dataset applies, and a dataset no key matches is open to everyone. In a rule's
``read``/``commit`` list, ``"*"`` means everyone and an empty list means no one.
"""

from __future__ import annotations

import fnmatch
from typing import Literal

from nbmlops.config import AccessRules, DatasetAccess
from nbmlops.exceptions import AccessDenied, UsageError

__all__ = ["AccessDenied", "check_dataset", "dataset_rule", "matching_rule"]

EVERYONE = "*"


def matching_rule(rules: AccessRules, name: str) -> tuple[str, DatasetAccess] | None:
    """(key, rule) of the first key matching ``name`` exactly or as a pattern, or None."""
    for key, rule in rules.datasets.items():
        if key == name or fnmatch.fnmatchcase(name, key):
            return key, rule
    return None


def dataset_rule(rules: AccessRules, name: str) -> DatasetAccess | None:
    """The rule for dataset ``name`` (first matching key in file order); None means open."""
    found = matching_rule(rules, name)
    return None if found is None else found[1]


def check_dataset(
    rules: AccessRules, user: str, action: Literal["read", "commit"], name: str
) -> None:
    """Return if ``user`` may ``action`` dataset ``name``; raise AccessDenied otherwise."""
    if action not in ("read", "commit"):
        raise UsageError(
            f"Unknown dataset action {action!r}",
            where="check_dataset",
            fix="Use 'read' or 'commit'.",
        )
    found = matching_rule(rules, name)
    if found is None:
        return
    key, rule = found
    allowed = rule.read if action == "read" else rule.commit
    if EVERYONE in allowed or user in allowed:
        return
    raise AccessDenied(
        f"User {user!r} may not {action} dataset {name!r} "
        f"(allowed: {', '.join(allowed) if allowed else 'no one'})",
        where=f"nbmlops.yaml access.datasets[{key!r}]",
        fix=f"Ask an owner to add you to access.datasets[{key!r}].{action} in nbmlops.yaml, "
        "or run as an allowed user (NBMLOPS_USER).",
    )
