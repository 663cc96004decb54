"""Promotion gates refuse with their reason, list every failure at once, change nothing, and
pass once the cause is fixed."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

import nbmlops
from nbmlops.exceptions import GateRefused, RoleDenied
from tests.core.registry.conftest import Zoo, labelled_frame, malicious_copy, unique


def gated(*gates: Any, roles: dict | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"gates": {"champion": list(gates)}}
    if roles is not None:
        rule["roles"] = roles
    return {"models": {"gated-*": rule}}


def refused(fn, *args, **kwargs) -> GateRefused:
    with pytest.raises(GateRefused) as err:
        fn(*args, **kwargs)
    return err.value


def test_metric_threshold(zoo: Zoo):
    name = unique("gated")
    reg = zoo.registry(registry=gated({"metric": {"name": "acc", "min": 0.8}}))
    reg.register("dummy", name)
    reg.register("good", name)
    err = refused(reg.promote, name, 1)
    [failed] = err.failed
    assert failed.gate == "metric acc"
    assert "below the minimum 0.8" in failed.reason and "Nothing was changed" in str(err)
    assert reg.aliases(name) == {} and reg.history(name) == []
    assert reg.promote(name, 2).after == 2
    assert reg.aliases(name) == {"champion": 2}


def test_beats_champion_is_evaluated_on_the_holdout_version(zoo: Zoo):
    name = unique("gated")
    gate = {"beats_champion": {"metric": "acc", "holdout": "holdout@1", "target": "label"}}
    reg = zoo.registry(registry=gated(gate))
    for model in ("weak", "dummy", "good"):
        reg.register(model, name)
    first = reg.promote(name, 1)  # nobody holds @champion yet: nothing to beat
    assert "nothing to beat" in first.gates[0].reason
    err = refused(reg.promote, name, 2)
    [failed] = err.failed
    assert "the candidate is worse by" in failed.reason
    assert "on holdout@1 (300 rows, target 'label'): v2" in failed.reason
    # the scores are measured on holdout@1, not copied from the training logs
    train, holdout = (
        nbmlops.data.load("train@1", settings=zoo.settings()),
        nbmlops.data.load("holdout@1", settings=zoo.settings()),
    )
    majority = train.label.mode()[0]
    expected = float((holdout.label == majority).mean())
    assert failed.details["candidate"] == pytest.approx(expected)
    logged = zoo.client().get_run(zoo.run_ids["dummy"]).data.metrics["acc"]
    assert failed.details["candidate"] != pytest.approx(logged)
    assert reg.aliases(name) == {"champion": 1}
    ok = reg.promote(name, 3)
    assert ok.gates[0].details["candidate"] > ok.gates[0].details["holder"]
    assert reg.aliases(name) == {"champion": 3}


def test_validation_of_a_data_version(zoo: Zoo):
    name, incoming = unique("gated"), unique("incoming")
    s = zoo.settings()
    nbmlops.data.commit(labelled_frame(300, seed=3, shift=2.0), incoming, settings=s)
    reg = zoo.registry(registry=gated({"validation": {"against": "train@1", "data": incoming}}))
    reg.register("good", name)
    err = refused(reg.promote, name, 1)
    assert f"{incoming} failed validation against train@1" in err.failed[0].reason
    assert "Drift" in err.failed[0].reason
    nbmlops.data.commit(labelled_frame(300, seed=4), incoming, "fixed feed", settings=s)
    result = reg.promote(name, 1)
    assert result.gates[0].passed and "passed validation" in result.gates[0].reason


def test_card_fields_must_be_filled_in(zoo: Zoo):
    name = unique("gated")
    reg = zoo.registry(registry=gated({"card": True}))
    reg.register("good", name)
    err = refused(reg.promote, name, 1)
    assert "model card incomplete: intended_use, limitations missing" in err.failed[0].reason
    reg.card(name, 1, intended_use="Churn ranking for retention offers.")
    err = refused(reg.promote, name, 1)
    assert "limitations missing" in err.failed[0].reason
    card = reg.card(name, 1, limitations="Not for customers under 3 months of tenure.")
    assert card.complete and [e["fields"] for e in card.edits] == [
        ["intended_use"],
        ["limitations"],
    ]
    assert reg.promote(name, 1).after == 1
    html = reg.card_html(name, 1)
    assert "Not for customers under 3 months of tenure." in html and "Incomplete" not in html
    edits = [e for e in zoo.audit_entries() if e.action == "model.card.edit" and name in e.target]
    assert [e.details["fields"] for e in edits] == [["intended_use"], ["limitations"]]


def test_scan_flagged_version_is_refused(zoo: Zoo, tmp_path: Path):
    name = unique("gated")
    marker = tmp_path / "ran"
    evil = zoo.log_folder(malicious_copy(zoo, tmp_path / "evil", marker), "evil")
    reg = zoo.registry(registry=gated({"scan": True}))
    rv = reg.register(evil, name)
    assert rv.scan.status == "flagged"
    assert "not loaded" in rv.card.importance_note
    reg.register("good", name)
    err = refused(reg.promote, name, 1)
    assert "security scan flagged: model.pkl: imports posix.system" in err.failed[0].reason
    assert reg.promote(name, 2).after == 2
    assert not marker.exists()  # the malicious pickle was never loaded


def test_approval_by_an_approver(zoo: Zoo):
    name = unique("gated")
    roles = {"developer": ["ana"], "approver": ["carol"]}
    cfg = gated({"approval": True}, roles=roles)
    ana, carol = zoo.registry("ana", cfg), zoo.registry("carol", cfg)
    ana.register("good", name)
    err = refused(carol.promote, name, 1)
    assert "not approved: needs 1 approval by an approver (carol), has none" in err.failed[0].reason
    with pytest.raises(RoleDenied, match="approver"):
        ana.approve(name, 1)
    assert carol.approve(name, 1, "looked at the card").new
    assert not carol.approve(name, 1).new  # approving twice records nothing more
    result = carol.promote(name, 1)
    assert result.gates[0].reason == "approved by carol"


def test_every_failed_gate_is_listed_and_nothing_changes(zoo: Zoo, tmp_path: Path):
    name, incoming = unique("gated"), unique("incoming")
    nbmlops.data.commit(labelled_frame(300, seed=3, shift=2.0), incoming, settings=zoo.settings())
    gates = [
        {"metric": {"name": "acc", "min": 0.8}},
        {"beats_champion": {"metric": "accuracy", "holdout": "holdout@1", "target": "label"}},
        {"validation": {"against": "train@1", "data": incoming}},
        {"card": True},
        {"scan": True},
        {"approval": True},
    ]
    open_reg, reg = zoo.registry(), zoo.registry(registry=gated(*gates))
    open_reg.register("good", name)
    open_reg.promote(name, 1)  # no rule in this registry's settings: no gates
    # a malicious pickle logged on the dummy's run: poor metrics, flagged, no card, no approval
    marker = tmp_path / "ran"
    evil = zoo.log_folder(malicious_copy(zoo, tmp_path / "evil", marker), "evil", run_of="dummy")
    reg.register(evil, name)
    history, audit_before = reg.history(name), len(zoo.audit_entries())
    err = refused(reg.promote, name, 2)
    reasons = {r.kind: r.reason for r in err.failed}
    assert set(reasons) == {"metric", "beats_champion", "validation", "card", "scan", "approval"}
    assert "below the minimum 0.8" in reasons["metric"]
    assert "flagged by the security scan, so it is not loaded" in reasons["beats_champion"]
    assert "failed validation" in reasons["validation"]
    assert "card incomplete" in reasons["card"]
    assert "security scan flagged" in reasons["scan"]
    assert "not approved" in reasons["approval"]
    assert "6 of 6 gates failed" in str(err)
    assert reg.aliases(name) == {"champion": 1} and reg.history(name) == history
    new = zoo.audit_entries()[audit_before:]
    assert [e.action for e in new if e.action.startswith("model.")] == ["model.promote.refused"]
    assert not marker.exists()


def test_a_version_whose_files_changed_after_registration_is_not_loaded(zoo: Zoo, tmp_path: Path):
    name = unique("gated")
    gate = {"beats_champion": {"metric": "accuracy", "holdout": "holdout@1", "target": "label"}}
    reg = zoo.registry(registry=gated(gate))
    reg.register("weak", name)
    reg.promote(name, 1)
    copy = zoo.log_folder(zoo.model_dir("good", tmp_path / "copy"), "copy")
    reg.register(copy, name)
    # someone swaps a file in the artifact store after registration
    stored = Path(urlparse(zoo.client().get_logged_model(copy).artifact_location).path)
    (stored / "conda.yaml").write_text("name: changed\n")
    err = refused(reg.promote, name, 2)
    assert "do not match the digest recorded at registration" in err.failed[0].reason
    assert reg.aliases(name) == {"champion": 1}
