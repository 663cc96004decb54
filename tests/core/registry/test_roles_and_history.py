"""Roles per model, aliases with a linear history, rollback, admin overrides, and the audit
log that records all of it (and catches an edit)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from nbmlops.core.audit import AuditLog
from nbmlops.core.registry.models import ModelRegistry
from nbmlops.exceptions import GateRefused, RoleDenied, StoreError, UsageError
from tests.core.registry.conftest import Zoo, unique

ROLES = {"viewer": ["*"], "developer": ["ana", "bo"], "approver": ["carol"], "admin": ["dave"]}


def rules(**gates) -> dict:
    return {"models": {"churn*": {"roles": ROLES, "gates": gates}}}


def test_a_developer_cannot_promote_to_champion_and_nothing_changes(zoo: Zoo):
    name = unique("churn")
    cfg = rules()
    ana = zoo.registry("ana", cfg)
    ana.register("good", name)
    entries = len(zoo.audit_entries())
    with pytest.raises(RoleDenied) as err:
        ana.promote(name, 1)
    msg = str(err.value)
    assert f"User 'ana' may not move @champion (promote version 1) of model '{name}'" in msg
    assert "needs the approver role" in msg and "ana' has developer" in msg
    assert "registry.models['churn*'].roles" in msg and "carol, dave" in msg
    assert err.value.needed == "approver" and err.value.rule == "churn*"
    assert ana.aliases(name) == {} and ana.history(name) == []
    assert len(zoo.audit_entries()) == entries
    # a developer may move an unprotected alias
    assert ana.promote(name, 1, alias="challenger").after == 1
    # a viewer may read but not register
    eve = zoo.registry("eve", cfg)
    assert [v.version for v in eve.versions(name)] == [1]
    with pytest.raises(RoleDenied, match="needs the developer role"):
        eve.register("good", name)


def test_unconfigured_models_are_open_to_everyone(zoo: Zoo):
    name = unique("free")
    eve = zoo.registry("eve", rules())
    eve.register("good", name)
    assert eve.promote(name, 1).after == 1
    assert eve.roles(name) == ["viewer", "developer", "approver", "admin"]


def test_rollback_restores_the_previous_holder_and_history_stays_linear(zoo: Zoo):
    name = unique("churn")
    carol = zoo.registry("carol", rules())
    for model in ("weak", "good", "dummy"):
        carol.register(model, name)
    carol.promote(name, 1)
    carol.promote(name, 2)
    carol.promote(name, 3)
    back = carol.rollback(name)
    assert (back.before, back.after, back.action) == (3, 2, "rollback")
    assert carol.aliases(name)["champion"] == 2
    assert carol.rollback(name).after == 1
    with pytest.raises(UsageError, match="first holder of @champion"):
        carol.rollback(name)
    assert carol.aliases(name)["champion"] == 1
    assert [(e.action, e.version, e.previous) for e in carol.history(name)] == [
        ("promote", 1, None),
        ("promote", 2, 1),
        ("promote", 3, 2),
        ("rollback", 2, 3),
        ("rollback", 1, 2),
    ]
    with pytest.raises(RoleDenied, match="roll back @champion"):
        zoo.registry("ana", rules()).rollback(name)


def test_an_alias_moved_outside_nbmlops_is_kept_in_the_history(zoo: Zoo):
    name = unique("churn")
    reg = zoo.registry("carol", rules())
    for model in ("weak", "good", "dummy"):
        reg.register(model, name)
    reg.promote(name, 1)
    zoo.client().set_registered_model_alias(name, "champion", "2")  # e.g. in the MLflow UI
    with pytest.raises(UsageError, match="moved outside nbmlops"):
        reg.rollback(name)
    reg.promote(name, 3)
    assert reg.rollback(name).after == 2  # back to the actual previous holder
    assert [e.action for e in reg.history(name)] == ["promote", "external", "promote", "rollback"]


def test_admin_override_is_audited_with_the_failed_gates(zoo: Zoo):
    name = unique("churn")
    cfg = rules(champion=[{"metric": {"name": "acc", "min": 0.99}}, {"approval": True}])
    carol, dave = zoo.registry("carol", cfg), zoo.registry("dave", cfg)
    carol.register("good", name)
    with pytest.raises(RoleDenied, match="override the gates of @champion"):
        carol.promote(name, 1, override="hotfix")
    with pytest.raises(UsageError, match="needs a reason"):
        dave.promote(name, 1, override="  ")
    result = dave.promote(name, 1, override="incident 42: old champion leaks PII")
    assert result.after == 1 and "gates overridden (metric acc, approval)" in result.summary()
    [entry] = [e for e in zoo.audit_entries() if e.action == "model.promote.override"]
    assert entry.user == "dave" and entry.target == f"models:/{name}@champion"
    assert entry.details["override"] == "incident 42: old champion leaks PII"
    assert entry.details["failed_gates"] == ["metric acc", "approval"]
    assert entry.details["before"] is None and entry.details["after"] == 1
    assert dave.history(name)[-1].override == "incident 42: old champion leaks PII"


def test_audit_verifies_after_all_of_that_and_catches_an_edit(zoo: Zoo):
    name = unique("churn")
    cfg = rules(champion=[{"approval": True}])
    ana, carol = zoo.registry("ana", cfg), zoo.registry("carol", cfg)
    ana.register("weak", name)
    ana.register("good", name)
    with pytest.raises(GateRefused):
        carol.promote(name, 1)
    carol.approve(name, 1)
    carol.promote(name, 1)
    carol.approve(name, 2)
    carol.promote(name, 2)
    carol.rollback(name)
    ana.card(name, 2, intended_use="x", limitations="y")
    log = AuditLog(zoo.settings().audit_path)
    mine = [e for e in log.entries() if name in e.target]
    assert [e.action for e in mine] == [
        "model.register",
        "model.register",
        "model.promote.refused",
        "model.approve",
        "model.promote",
        "model.approve",
        "model.promote",
        "model.rollback",
        "model.card.edit",
    ]
    promote = mine[6]
    assert (promote.details["before"], promote.details["after"]) == (1, 2)
    assert promote.details["gates"][0]["reason"] == "approved by carol"
    report = log.verify()
    assert report.ok, report.problems
    # someone rewrites who promoted v2
    lines = log.path.read_text().splitlines()
    idx = next(i for i, ln in enumerate(lines) if json.loads(ln)["seq"] == promote.seq)
    lines[idx] = lines[idx].replace('"user":"carol"', '"user":"mallory"')
    log.path.write_text("\n".join(lines) + "\n")
    report = log.verify()
    assert not report.ok
    assert f"entry {promote.seq} was edited (hash mismatch)" in report.problems


def test_a_store_that_is_down_refuses_fast_and_changes_nothing(zoo: Zoo):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends
    from nbmlops.config import load_settings

    s = load_settings(zoo.project, environ={}, tracking_uri=f"http://127.0.0.1:{port}")
    entries = len(zoo.audit_entries())
    started = time.monotonic()
    with pytest.raises(StoreError, match="does not answer; nothing was changed"):
        ModelRegistry(s).promote("churn-x", 1)
    assert time.monotonic() - started < 10
    assert len(zoo.audit_entries()) == entries
