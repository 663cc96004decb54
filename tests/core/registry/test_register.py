"""Registering a tracked model: lineage tags, a model card in the run's artifacts, and
unsafe model folders refused before anything is registered or imported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nbmlops.core.registry.card import ModelCard
from nbmlops.exceptions import ModelNotFound, UnsafeModelError, UsageError
from tests.core.registry.conftest import Zoo, unique


def test_register_tags_lineage_and_writes_a_card(zoo: Zoo):
    name = unique("churn")
    reg = zoo.registry()
    rv = reg.register(
        "good",
        name,
        holdout="holdout@1",
        target="label",
        intended_use="Rank customers for the retention campaign.",
        limitations="Trained on 2024 data only; not for new markets.",
    )
    assert rv.version == 1
    mv = zoo.client().get_model_version(name, "1")
    tags = mv.tags
    run = zoo.client().get_run(zoo.run_ids["good"])
    # what the version is, where it came from, what it was trained on
    assert mv.run_id == zoo.run_ids["good"] == tags["nbmlops.run_id"]
    assert tags["nbmlops.model_id"] == zoo.model_ids["good"]
    assert tags["nbmlops.data_versions"] == "train@1"
    # the X and y of the fit call, each by its content digest
    assert [len(d) for d in tags["nbmlops.data_digests"].split(", ")] == [32, 32]
    assert json.loads(tags["nbmlops.metrics"]) == run.data.metrics
    assert tags["nbmlops.git_commit"] == zoo.git_commit == run.data.tags["mlflow.source.git.commit"]
    assert tags["nbmlops.scan"] == "clean"
    assert len(tags["nbmlops.files_digest"]) == 32
    assert tags["nbmlops.card.complete"] == "true"
    # the card lives in the source run's artifacts, next to the scan report
    folder = f"model_card/{name}/v1"
    assert tags["nbmlops.card"] == f"runs:/{zoo.run_ids['good']}/{folder}"
    listed = {Path(a.path).name for a in zoo.client().list_artifacts(mv.run_id, folder)}
    assert {
        "card.md",
        "card.html",
        "card.json",
        "lineage.png",
        "importance.png",
        "scan.json",
    } <= listed
    local = Path(zoo.client().download_artifacts(mv.run_id, folder, str(zoo.project / "dl")))
    html = (local / "card.html").read_text()
    for metric, value in run.data.metrics.items():
        assert f"<td>{metric}</td><td>{value:.6g}</td>" in html
    assert '<img alt="permutation importance" src="data:image/png;base64,' in html
    assert '<img alt="lineage of' in html
    assert "holdout holdout@1 (300 rows, true target)" in html
    assert "Rank customers for the retention campaign." in html
    assert zoo.git_commit in html
    md = (local / "card.md").read_text()
    assert "![permutation importance](importance.png)" in md and "`train@1`" in md
    card = ModelCard.from_json((local / "card.json").read_text())
    assert card.importance[0]["feature"] == "a"  # the label depends on a most
    assert (local / "importance.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((local / "scan.json").read_text())["status"] == "clean"
    [entry] = [e for e in zoo.audit_entries() if e.target == f"models:/{name}/1"]
    assert entry.action == "model.register" and entry.user == "ana"
    assert entry.details["data_versions"] == ["train@1"]


def test_without_holdout_importance_is_on_the_input_example_and_says_so(zoo: Zoo):
    name = unique("churn")
    rv = zoo.registry().register(f"runs:/{zoo.run_ids['weak']}/weak", name)
    assert rv.card.importance_basis.startswith("logged input example (5 rows)")
    assert "only indicative" in rv.card.importance_note
    assert rv.card.missing == ["intended_use", "limitations"]
    assert zoo.client().get_model_version(name, "1").tags["nbmlops.card.complete"] == "false"
    html = zoo.registry().card_html(name, 1)
    assert "only indicative" in html and "Incomplete" in html


def test_a_logged_model_id_registers_and_versions_count_up(zoo: Zoo):
    name = unique("churn")
    reg = zoo.registry()
    assert reg.register(zoo.model_ids["dummy"], name).version == 1
    assert reg.register(f"models:/{zoo.model_ids['good']}", name).version == 2
    assert [v.version for v in reg.versions(name)] == [1, 2]
    assert reg.versions(name)[0].data_versions == ["train@1"]


def test_unknown_sources_get_clear_errors(zoo: Zoo):
    reg = zoo.registry()
    with pytest.raises(ModelNotFound, match="no tracked cell has bound a model"):
        reg.register("nothing_like_this", unique("x"))
    with pytest.raises(ModelNotFound, match="has no logged model named 'nope'"):
        reg.register(f"runs:/{zoo.run_ids['good']}/nope", unique("x"))
    with pytest.raises(UsageError, match="Invalid model name"):
        reg.register("good", "../escape")
    with pytest.raises(UsageError, match="holdout and target go together"):
        reg.register("good", unique("x"), holdout="holdout@1")
    with pytest.raises(UsageError, match="Target column 'churned' is not in holdout@1"):
        reg.register("good", unique("x"), holdout="holdout@1", target="churned")


def test_a_model_pointing_outside_its_folder_is_refused_at_register(zoo: Zoo, tmp_path: Path):
    folder = zoo.model_dir("good", tmp_path / "copy")
    spec = yaml.safe_load((folder / "MLmodel").read_text())
    spec["flavors"]["python_function"]["model_path"] = "../../outside/model.pkl"
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))
    model_id = zoo.log_folder(folder, "escaping")
    name = unique("escape")
    before = len(zoo.audit_entries())
    with pytest.raises(UnsafeModelError, match=r"leaves the model folder \('../../outside"):
        zoo.registry().register(model_id, name)
    assert zoo.client().search_registered_models(f"name = '{name}'") == []
    assert len(zoo.audit_entries()) == before


def test_an_undeclared_loader_module_is_refused_at_register(zoo: Zoo, tmp_path: Path):
    marker = tmp_path / "imported"
    folder = zoo.model_dir("good", tmp_path / "copy")
    (folder / "evil_loader.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    spec = yaml.safe_load((folder / "MLmodel").read_text())
    spec["flavors"]["python_function"]["loader_module"] = "evil_loader"
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))
    model_id = zoo.log_folder(folder, "loader")
    with pytest.raises(UnsafeModelError, match="loader module 'evil_loader'"):
        zoo.registry().register(model_id, unique("loader"))
    assert not marker.exists()
