"""Who may do what to which registered model, from ``registry.models`` in nbmlops.yaml.

Keys are model names or fnmatch patterns (``churn*``); the first key in file order that
matches applies, and a model no key matches (or a rule without ``roles``) is open: everyone
holds every role. Roles rank viewer < developer < approver < admin, each including the
ones below it:

* viewer reads (versions, aliases, history, cards);
* developer registers versions, edits cards and moves unprotected aliases (``challenger``);
* approver approves versions, moves protected aliases (``champion``) and rolls them back;
* admin may also override failed gates (with a reason, recorded in the audit log).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from nbmlops.config import ROLE_NAMES, ModelRule, RegistrySettings
from nbmlops.exceptions import RoleDenied, UsageError

__all__ = ["ROLE_NAMES", "RoleCheck", "alias_role", "check_role", "matching_rule", "roles_of"]

EVERYONE = "*"
_RANK = {name: i for i, name in enumerate(ROLE_NAMES)}


def matching_rule(registry: RegistrySettings, model: str) -> tuple[str, ModelRule] | None:
    """(key, rule) of the first key matching ``model`` exactly or as a pattern, or None."""
    for key, rule in registry.models.items():
        if key == model or fnmatch.fnmatchcase(model, key):
            return key, rule
    return None


def roles_of(registry: RegistrySettings, user: str, model: str) -> set[str]:
    """Every role ``user`` holds on ``model`` (including the ones a higher role implies)."""
    found = matching_rule(registry, model)
    if found is None or found[1].roles is None:
        return set(ROLE_NAMES)
    roles = found[1].roles
    top = -1
    for name in ROLE_NAMES:
        members = getattr(roles, name)
        if EVERYONE in members or user in members:
            top = max(top, _RANK[name])
    return {name for name in ROLE_NAMES if _RANK[name] <= top}


def alias_role(registry: RegistrySettings, model: str, alias: str) -> str:
    """The role that moving (or rolling back) ``alias`` of ``model`` needs."""
    found = matching_rule(registry, model)
    protected = found[1].protected_aliases if found is not None else ["champion"]
    return "approver" if alias in protected else "developer"


@dataclass(frozen=True)
class RoleCheck:
    """A granted check: who, on which model, under which rule key (None: unconfigured)."""

    user: str
    model: str
    role: str
    rule: str | None


def check_role(
    registry: RegistrySettings, user: str, model: str, needed: str, action: str
) -> RoleCheck:
    """Return if ``user`` holds ``needed`` on ``model``; raise RoleDenied naming the user, the
    model, the role, the rule key and the fix otherwise. ``action`` is a phrase for the
    message ("promote version 3 to @champion")."""
    if needed not in _RANK:
        raise UsageError(
            f"Unknown registry role {needed!r}",
            where="check_role",
            fix=f"Use one of {', '.join(ROLE_NAMES)}.",
        )
    found = matching_rule(registry, model)
    if found is None or found[1].roles is None:
        return RoleCheck(user, model, needed, None if found is None else found[0])
    key, rule = found
    held = roles_of(registry, user, model)
    if needed in held:
        return RoleCheck(user, model, needed, key)
    assert rule.roles is not None
    granted = sorted(
        {
            member
            for name in ROLE_NAMES
            if _RANK[name] >= _RANK[needed]
            for member in getattr(rule.roles, name)
        },
        key=lambda m: (m != EVERYONE, m),
    )
    granted = ["everyone" if m == EVERYONE else m for m in granted]
    has = max(held, key=_RANK.__getitem__) if held else "no role"
    raise RoleDenied(
        f"User {user!r} may not {action} of model {model!r}: that needs the {needed} role, "
        f"and {user!r} has {has} ({needed} or higher: {', '.join(granted) or 'no one'})",
        user=user,
        model=model,
        needed=needed,
        rule=key,
        where=f"nbmlops.yaml registry.models[{key!r}].roles",
        fix=f"Ask an admin of {model!r} to add {user!r} to registry.models[{key!r}].roles."
        f"{needed} in nbmlops.yaml, or ask one of the users named to do it.",
    )
