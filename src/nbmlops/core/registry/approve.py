"""Approving a version: the approver's name, time and comment in its ``nbmlops.approvals``
tag, and an audit entry."""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from nbmlops.core.registry.context import approvals_of
from nbmlops.core.registry.names import as_version, check_model_name
from nbmlops.core.registry.records import Approval

if TYPE_CHECKING:
    from nbmlops.core.registry.context import RegistryContext

__all__ = ["approve"]


def approve(ctx: RegistryContext, name: str, version: int | str, comment: str = "") -> Approval:
    """Record the user's approval of ``version`` (approver role; audited)."""
    name, version = check_model_name(name), as_version(version)
    ctx.require(name, "approver", f"approve version {version}")
    ctx.ensure_store()
    user = ctx.user
    with ctx.store(f"approve {name} v{version}"), ctx.lock(name):
        mv = ctx.version(name, version)
        tags = dict(mv.tags or {})
        approvals = approvals_of(tags)
        mine = next((a for a in approvals if a["user"] == user), None)
        if mine is not None:
            return Approval(name, version, user, mine["ts"], mine.get("comment", ""), False)
        now = time.time()
        entry: dict[str, Any] = {"user": user, "ts": now, "comment": comment}
        approvals.append(entry)
        ctx.client.set_model_version_tag(
            name, str(version), "nbmlops.approvals", json.dumps(approvals)
        )
        try:
            ctx.audit.append(
                "model.approve",
                f"models:/{name}/{version}",
                user=user,
                details={"comment": comment, "approvals": [a["user"] for a in approvals]},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                if "nbmlops.approvals" in tags:
                    ctx.client.set_model_version_tag(
                        name, str(version), "nbmlops.approvals", tags["nbmlops.approvals"]
                    )
                else:
                    ctx.client.delete_model_version_tag(name, str(version), "nbmlops.approvals")
            raise
    return Approval(name, version, user, now, comment, True)
