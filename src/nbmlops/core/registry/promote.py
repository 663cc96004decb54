"""Moving aliases: the gates a promotion must pass (models loaded only after their scan),
promote, rollback, and the alias move with its history tag, undone whole on failure."""

from __future__ import annotations

import json
import tempfile
import time
from typing import TYPE_CHECKING, Any

from nbmlops.core.registry.context import approvals_of
from nbmlops.core.registry.gates import GateContext, GateResult, build_gates, run_gates, score
from nbmlops.core.registry.names import (
    HISTORY_TAG,
    alias_stack,
    as_version,
    check_alias,
    check_model_name,
)
from nbmlops.core.registry.records import PromotionResult
from nbmlops.core.registry.roles import alias_role, roles_of
from nbmlops.core.registry.safety import inspect_model_dir, verify_files
from nbmlops.core.registry.scan import scan_model_dir
from nbmlops.exceptions import (
    ConcurrentChange,
    GateRefused,
    StoreError,
    UnsafeModelError,
    UsageError,
)

if TYPE_CHECKING:
    from nbmlops.core.registry.context import RegistryContext

__all__ = ["check_gates", "promote", "rollback", "set_alias"]

_HISTORY_LIMIT = 90_000  # MLflow allows 100,000 characters per registry tag value


def _compact(events: list[dict[str, Any]]) -> str:
    """Serialise a history within MLflow's tag limit: the oldest events fold into a ``base``
    event holding the stack they implied (the audit log keeps every event)."""
    text = json.dumps(events, separators=(",", ":"))
    while len(text) > _HISTORY_LIMIT and len(events) > 2:
        cut = max(1, len(events) // 4)
        base = {"action": "base", "stack": alias_stack(events[:cut])[-200:], "ts": time.time()}
        events = [base, *events[cut:]]
        text = json.dumps(events, separators=(",", ":"))
    return text


def load_version_model(ctx: RegistryContext, name: str, version: int) -> Any:
    """A version's model as a pyfunc, loaded only after its structure check, its files
    digest check (when one was recorded) and a scan of the very files loaded: a verdict
    tag is not trusted for that, since whoever can write versions can write tags."""
    mv = ctx.client.get_model_version(name, str(version))
    tags = mv.tags or {}
    if tags.get("nbmlops.scan") == "flagged":
        raise UnsafeModelError(
            f"{name} v{version} was flagged by the security scan, so it is not loaded "
            f"({tags.get('nbmlops.scan.summary', '')})",
            fix="Register a clean model.",
        )
    import mlflow.pyfunc

    source = str(mv.source)
    if source.startswith("models:/"):
        source = str(ctx.client.get_model_version_download_uri(name, str(version)))
    with tempfile.TemporaryDirectory(prefix="nbmlops-load-") as tmp:
        local = ctx.download(source, tmp)
        inspect_model_dir(local, ctx.settings.trusted_loader_modules)
        verify_files(local, tags.get("nbmlops.files_digest"))
        report = scan_model_dir(
            local,
            ctx.settings.registry.scan,
            ctx.settings.trusted_loader_modules,
            audit=False,
        )
        if not report.loadable:
            raise UnsafeModelError(
                f"{name} v{version} is refused by the security scan, so it is not loaded: "
                + "; ".join(report.summary()),
                fix="Register a model whose files pass the scan.",
            )
        return mlflow.pyfunc.load_model(str(local))


def gate_context(
    ctx: RegistryContext, name: str, mv: Any, alias: str, holder: int | None
) -> GateContext:
    version = int(mv.version)
    tags = dict(mv.tags or {})
    metrics: dict[str, float] = {}
    if mv.run_id:
        metrics = dict(ctx.client.get_run(mv.run_id).data.metrics)
    frames: dict[tuple[str, str], tuple[Any, Any]] = {}
    scores: dict[tuple[int, str, str, str], tuple[float, int]] = {}

    def evaluate(v: int, ref: str, target: str, metric: str) -> tuple[float, int]:
        key = (v, ref, target, metric)
        if key not in scores:
            if (ref, target) not in frames:
                frames[(ref, target)] = ctx.holdout_xy(ref, target)
            X, y = frames[(ref, target)]
            model = load_version_model(ctx, name, v)
            scores[key] = (score(metric, y, model.predict(X)), len(X))
        return scores[key]

    def validate(data_ref: str, against: str) -> Any:
        from nbmlops.core.data.schema import infer_schema
        from nbmlops.core.data.validate import validate_frame

        reference = ctx.load_frame(against)
        schema = infer_schema(reference, range_margin=0.1)  # as nbmlops.data.validate
        return validate_frame(ctx.load_frame(data_ref), reference=reference, schema=schema)

    registry = ctx.settings.registry
    _key, rule = ctx.rule(name)
    approvers: list[str] = []
    if rule is not None and rule.roles is not None:
        members = set(rule.roles.approver) | set(rule.roles.admin)
        approvers = ["everyone"] if "*" in members else sorted(members)
    else:
        approvers = ["everyone (no roles configured)"]
    return GateContext(
        model=name,
        version=version,
        alias=alias,
        holder=holder,
        run_metrics=metrics,
        tags=tags,
        approvals=approvals_of(tags),
        is_approver=lambda u: "approver" in roles_of(registry, u, name),
        approvers=approvers,
        evaluate=evaluate,
        validate=validate,
    )


def gate_specs(ctx: RegistryContext, name: str, alias: str) -> tuple[str | None, list[Any]]:
    key, rule = ctx.rule(name)
    if rule is None:
        return None, []
    return key, list(rule.gates.get(alias, rule.gates.get("*", [])))


def check_gates(
    ctx: RegistryContext, name: str, version: int | str, alias: str = "champion"
) -> list[GateResult]:
    """Every gate's result for moving ``alias`` to ``version``, changing nothing."""
    name, alias, version = check_model_name(name), check_alias(alias), as_version(version)
    ctx.require(name, "viewer", "check the gates")
    with ctx.store(f"check the gates of {name} v{version}"):
        mv = ctx.version(name, version)
        holder = ctx.holder(name, alias)
        _key, specs = gate_specs(ctx, name, alias)
        return run_gates(build_gates(specs), gate_context(ctx, name, mv, alias, holder))


# -- aliases --------------------------------------------------------------------------


def promote(
    ctx: RegistryContext,
    name: str,
    version: int | str,
    alias: str = "champion",
    *,
    override: str | None = None,
) -> PromotionResult:
    """Move ``alias`` to ``version`` if the user's role allows it and every gate configured
    for that alias passes; else raise (RoleDenied, GateRefused listing every failed gate,
    RegistryBusy, ConcurrentChange, StoreError) having changed nothing. ``override``
    (admins only) is the reason to promote despite failed gates; it is audited with them."""
    name, alias, version = check_model_name(name), check_alias(alias), as_version(version)
    needed = alias_role(ctx.settings.registry, name, alias)
    ctx.require(name, needed, f"move @{alias} (promote version {version})")
    if override is not None:
        if not override.strip():
            raise UsageError(
                "An override needs a reason", fix='Pass --override "why this is needed".'
            )
        ctx.require(name, "admin", f"override the gates of @{alias}")
    ctx.ensure_store()
    user = ctx.user
    target = f"models:/{name}@{alias}"
    with ctx.store(f"promote {name} v{version} to @{alias}"):
        mv = ctx.version(name, version)
        before = ctx.holder(name, alias)
        if before == version:
            return PromotionResult(name, alias, before, version, "unchanged", user)
        rule_key, specs = gate_specs(ctx, name, alias)
        results = run_gates(build_gates(specs), gate_context(ctx, name, mv, alias, before))
        failed = [r for r in results if not r.passed]
        gate_log = [r.to_dict() for r in results]
        if failed and override is None:
            ctx.audit.append(
                "model.promote.refused",
                target,
                user=user,
                details={"version": version, "holder": before, "gates": gate_log},
            )
            lines = "\n".join(f"  - {r.gate}: {r.reason}" for r in failed)
            raise GateRefused(
                f"Promotion of {name} v{version} to @{alias} refused: {len(failed)} of "
                f"{len(results)} gates failed:\n{lines}\nNothing was changed",
                results,
                where=f"nbmlops.yaml registry.models[{rule_key!r}].gates.{alias}",
                fix="Fix what each failed gate names and promote again"
                + (
                    "; an admin may promote anyway with --override 'reason'."
                    if needed != "admin"
                    else "."
                ),
            )
        event: dict[str, Any] = {
            "action": "promote",
            "version": version,
            "previous": before,
            "user": user,
            "ts": time.time(),
        }
        if override is not None:
            event["override"] = override
        details: dict[str, Any] = {
            "alias": alias,
            "before": before,
            "after": version,
            "gates": gate_log,
        }
        if override is not None:
            details["override"] = override
            details["failed_gates"] = [r.gate for r in failed]
        with ctx.lock(name):
            now = ctx.holder(name, alias)
            if now != before:
                raise ConcurrentChange(
                    f"@{alias} of {name} moved from "
                    f"{'nobody' if before is None else f'v{before}'} to "
                    f"{'nobody' if now is None else f'v{now}'} while this promotion of "
                    f"v{version} was being decided; nothing was changed",
                    where=target,
                    fix="Look at the new holder (%history) and promote again if you still "
                    "want to: the gates will then be checked against it.",
                )
            action = "model.promote.override" if override is not None else "model.promote"
            move(ctx, name, alias, before, version, event, action, details)
    return PromotionResult(name, alias, before, version, "promote", user, results, override)


def set_alias(
    ctx: RegistryContext, name: str, alias: str, version: int | str, *, override: str | None = None
) -> PromotionResult:
    """Point ``alias`` at ``version``: the same roles and gates as :func:`promote`."""
    return promote(ctx, name, version, alias, override=override)


def rollback(ctx: RegistryContext, name: str, alias: str = "champion") -> PromotionResult:
    """Move ``alias`` back to the version that held it before its current holder (gates
    are not re-run: that version passed them when it was promoted)."""
    name, alias = check_model_name(name), check_alias(alias)
    needed = alias_role(ctx.settings.registry, name, alias)
    ctx.require(name, needed, f"roll back @{alias}")
    ctx.ensure_store()
    user = ctx.user
    target = f"models:/{name}@{alias}"
    with ctx.store(f"roll back {name}@{alias}"), ctx.lock(name):
        holder = ctx.holder(name, alias)
        stack = alias_stack(ctx.history_events(name, alias))
        if holder is None:
            raise UsageError(
                f"@{alias} of {name} has no holder: nothing to roll back",
                where=target,
            )
        if not stack or stack[-1] != holder:
            known = f"v{stack[-1]}" if stack else "nothing"
            raise UsageError(
                f"@{alias} of {name} is held by v{holder}, but its nbmlops history ends at "
                f"{known} (the alias was moved outside nbmlops); nothing was changed",
                where=target,
                fix=f"Promote the version you want explicitly: %promote {name} VERSION "
                f"--alias {alias}.",
            )
        if len(stack) < 2:
            raise UsageError(
                f"v{holder} is the first holder of @{alias} of {name} in its history: there "
                "is no earlier holder to roll back to; nothing was changed",
                where=target,
                fix=f"Promote another version instead: %promote {name} VERSION --alias {alias}.",
            )
        previous = stack[-2]
        ctx.version(name, previous)  # still exists (a deleted one cannot come back)
        event = {
            "action": "rollback",
            "version": previous,
            "previous": holder,
            "user": user,
            "ts": time.time(),
        }
        details = {"alias": alias, "before": holder, "after": previous}
        move(ctx, name, alias, holder, previous, event, "model.rollback", details)
    return PromotionResult(name, alias, holder, previous, "rollback", user)


def move(
    ctx: RegistryContext,
    name: str,
    alias: str,
    before: int | None,
    after: int,
    event: dict[str, Any],
    action: str,
    details: dict[str, Any],
) -> None:
    """Inside the lock: alias, history tag, audit entry; on any failure undo what was
    written and raise, so a failed move changes nothing."""
    key = HISTORY_TAG + alias
    raw_before = ctx.history_raw(name, alias)
    events = ctx.history_events(name, alias)
    stack = alias_stack(events)
    if before is not None and (not stack or stack[-1] != before):
        # moved outside nbmlops (MLflow UI, another tool): record it so rollback returns there
        events.append({"action": "external", "version": before, "user": "?", "ts": event["ts"]})
    events.append(event)
    done: list[str] = []
    try:
        ctx.client.set_registered_model_alias(name, alias, str(after))
        done.append("alias")
        ctx.client.set_registered_model_tag(name, key, _compact(events))
        done.append("history")
        ctx.audit.append(action, f"models:/{name}@{alias}", user=ctx.user, details=details)
    except BaseException as err:
        problems = []
        if "history" in done:
            try:
                if raw_before is None:
                    ctx.client.delete_registered_model_tag(name, key)
                else:
                    ctx.client.set_registered_model_tag(name, key, raw_before)
            except Exception as undo_err:
                problems.append(f"history tag not restored: {undo_err}")
        if "alias" in done:
            try:
                if before is None:
                    ctx.client.delete_registered_model_alias(name, alias)
                else:
                    ctx.client.set_registered_model_alias(name, alias, str(before))
            except Exception as undo_err:
                problems.append(f"alias not restored: {undo_err}")
        if problems:
            raise StoreError(
                f"Moving {name}@{alias} failed ({type(err).__name__}: {err}) and could not "
                f"be fully undone: {'; '.join(problems)}",
                where=ctx.settings.resolved_tracking_uri,
                fix=f"Check @{alias} of {name} in MLflow and set it back to "
                f"{'nothing' if before is None else f'v{before}'}.",
            ) from err
        raise
