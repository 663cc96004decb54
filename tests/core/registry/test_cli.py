"""``nbmlops model ...``: the typer app delegates to the registry and prints the outcome."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nbmlops.cli.registry import app
from nbmlops.exceptions import RoleDenied
from tests.core.registry.conftest import Zoo, unique


@pytest.fixture
def in_project(zoo: Zoo, monkeypatch: pytest.MonkeyPatch) -> Iterator[Zoo]:
    config = {
        "registry": {
            "scan": {"pip_audit": "off"},
            "models": {
                "cli-*": {
                    "roles": {"developer": ["ana"], "approver": ["carol"]},
                    "gates": {"champion": [{"metric": {"name": "acc", "min": 0.8}}]},
                }
            },
        }
    }
    path = zoo.project / "nbmlops.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(zoo.project)
    try:
        yield zoo
    finally:
        path.unlink()


def test_register_promote_history_rollback(
    in_project: Zoo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    zoo, runner, name = in_project, CliRunner(env={"COLUMNS": "200"}), unique("cli")
    monkeypatch.setenv("NBMLOPS_USER", "ana")
    # v3 is good's files logged again: the same logged model twice is refused (it is v1)
    again = zoo.log_folder(zoo.model_dir("good", tmp_path / "copy"), "good-again")
    for source in (f"runs:/{zoo.run_ids['good']}/good", zoo.model_ids["dummy"], again):
        result = runner.invoke(app, ["register", source, name, "--limitations", "demo only"])
        assert result.exit_code == 0, result.output
    assert (
        f"{name} v3 registered" in result.output
        and "card incomplete (intended_use)" in result.output
    )
    result = runner.invoke(app, ["promote", name, "1"])
    assert isinstance(result.exception, RoleDenied)
    monkeypatch.setenv("NBMLOPS_USER", "carol")
    result = runner.invoke(app, ["promote", name, "1"])
    assert result.exit_code == 0, result.output
    assert f"{name}@champion moved: nobody -> v1 (by carol)" in result.output
    result = runner.invoke(app, ["promote", name, "2"])
    assert result.exit_code == 1
    assert "FAILED" in result.output and "below the minimum 0.8" in result.output
    assert "Nothing was changed" in result.output
    assert runner.invoke(app, ["promote", name, "3"]).exit_code == 0
    result = runner.invoke(app, ["rollback", name])
    assert f"{name}@champion rolled back: v3 -> v1" in result.output
    result = runner.invoke(app, ["history", name])
    assert result.exit_code == 0 and result.output.count("carol") == 3
    result = runner.invoke(app, ["versions", name])
    assert result.exit_code == 0 and "champion" in result.output and "train@1" in result.output
