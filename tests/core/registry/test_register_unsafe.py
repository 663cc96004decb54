"""Registering a model whose pickle reaches code through a helper of a trusted library: the
version is flagged with the helper's name, no card is drawn from it, it is never unpickled
(RELIABILITY 25)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nbmlops.cli.registry import app
from tests.core.registry.conftest import Zoo, unique
from tests.core.registry.payloads import ISSUE_PAYLOADS, PAYLOADS, Payload
from tests.core.registry.test_allowlist import write_payload


@pytest.mark.parametrize("payload", PAYLOADS, ids=str)
def test_register_flags_the_helper_and_never_loads_it(zoo: Zoo, tmp_path: Path, payload: Payload):
    marker = tmp_path / "ran"
    evil = zoo.log_folder(write_payload(zoo, payload, tmp_path / "evil", marker), "evil")
    name = unique("helper")
    rv = zoo.registry().register(evil, name)
    assert rv.scan.status == "flagged"
    assert any(f"imports {payload.offender} (" in line for line in rv.scan.summary())
    assert rv.card.importance == [] and "so it was not loaded" in rv.card.importance_note
    assert zoo.client().get_model_version(name, "1").tags["nbmlops.scan"] == "flagged"
    assert not marker.exists()


@pytest.mark.parametrize("payload", ISSUE_PAYLOADS, ids=str)
def test_the_cli_register_names_the_helper(
    zoo: Zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: Payload
):
    marker = tmp_path / "ran"
    evil = zoo.log_folder(write_payload(zoo, payload, tmp_path / "evil", marker), "evil")
    config = zoo.project / "nbmlops.yaml"
    config.write_text(yaml.safe_dump({"registry": {"scan": {"pip_audit": "off"}}}))
    monkeypatch.chdir(zoo.project)
    try:
        result = CliRunner(env={"COLUMNS": "400"}).invoke(app, ["register", evil, unique("cli")])
    finally:
        config.unlink()
    assert result.exit_code == 0, result.output
    assert "scan flagged" in result.output
    assert f"imports {payload.offender} (" in result.output
    assert not marker.exists()


def test_no_card_is_drawn_from_a_model_the_scan_could_not_fully_read(zoo: Zoo, tmp_path: Path):
    folder = zoo.model_dir("good", tmp_path / "copy")
    (folder / "weights.npy").write_bytes(b"PK\x03\x04 not an array")
    logged = zoo.log_folder(folder, "unreadable")
    rv = zoo.registry().register(logged, unique("unreadable"))
    assert rv.scan.status == "incomplete"
    assert rv.card.importance == []
    assert "could not check every model file" in rv.card.importance_note
