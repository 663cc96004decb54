"""The registry panel's Python side against a real store holding real registered models: what a
user sees (versions, aliases, history, the error box, the confirm bar) and what clicking
changes in MLflow and the audit log."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import nbmlops
from nbmlops.config import load_settings
from nbmlops.core.audit import AuditLog
from nbmlops.core.registry.models import ModelRegistry
from nbmlops.exceptions import AlreadyRegistered
from nbmlops.widgets.registry import RegistryPanel
from tests.core.registry.conftest import Zoo, unique, zoo  # noqa: F401 (the zoo fixture)

REGISTRY = {
    "scan": {"pip_audit": "off"},
    "models": {
        "gated-*": {"gates": {"champion": [{"metric": {"name": "acc", "min": 0.8}}]}},
        "roles-*": {
            "roles": {
                "viewer": ["*"],
                "developer": ["ana", "bo"],
                "approver": ["carol"],
                "admin": ["dave"],
            }
        },
    },
}


@pytest.fixture(scope="module")
def hub(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A project whose nbmlops.yaml uses the zoo's store and configures gates and roles."""
    folder = tmp_path_factory.mktemp("registry-panel") / "project"
    folder.mkdir()
    config = {"home": str(zoo.project / ".nbmlops"), "registry": REGISTRY}
    (folder / "nbmlops.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture
def user(hub: Path, monkeypatch: pytest.MonkeyPatch):
    """Work in the hub project as a given user (NBMLOPS_USER)."""

    def become(name: str) -> ModelRegistry:
        monkeypatch.setenv("NBMLOPS_USER", name)
        nbmlops.core.tracking.session.reset_tracker()
        return ModelRegistry(load_settings())

    monkeypatch.chdir(hub)
    return become


def opened(panel: RegistryPanel) -> RegistryPanel:
    assert panel.wait(60), "the panel's background work did not finish"
    return panel


def entries(reg: ModelRegistry, name: str, action: str) -> list:
    return [
        e
        for e in AuditLog(reg.settings.audit_path).entries()
        if e.action == action and e.target.startswith(f"models:/{name}")
    ]


def click(button) -> None:
    button.click()


def test_select_a_model_register_and_see_its_versions(zoo: Zoo, user):  # noqa: F811
    reg = user("ana")
    first, second = unique("panel"), unique("panel")
    reg.register("dummy", second)
    panel = opened(RegistryPanel())
    panel.source_box.value = f"runs:/{zoo.run_ids['good']}/good"
    panel.name_box.value = first
    click(panel.register_button)
    opened(panel)
    assert panel.error == ""
    assert panel.model == first and panel.model_menu.value == first
    assert {first, second} <= set(panel.model_menu.options)
    assert [v.version for v in panel.versions] == [1] and panel.version == 1
    assert f"Registered models:/{first}/1" in panel.status
    assert zoo.run_ids["good"] in panel.versions_table.value
    assert "card complete" in panel.versions_table.value

    panel.model_menu.value = second  # selecting a model shows its versions
    opened(panel)
    assert panel.model == second and [v.version for v in panel.versions] == [1]
    assert zoo.run_ids["dummy"] in panel.versions_table.value
    html = panel._repr_mimebundle_()["text/html"]
    assert second in html and "nbmlops-versions" in html and "No alias is set" in html
    panel.close()


def test_promote_and_rollback_ask_first_then_move_the_alias_and_audit(zoo: Zoo, user):  # noqa: F811
    reg = user("ana")
    name = unique("panel")
    reg.register("weak", name)
    reg.register("good", name)
    panel = opened(nbmlops.panels.registry(name))
    assert panel.version == 2 and panel.alias == "champion"

    for version in (1, 2):
        panel.version_menu.value = version
        click(panel.promote_button)
        assert panel.confirm_bar.layout.display == "flex"
        assert f"Move {name}@champion" in panel.pending and f"to v{version}" in panel.pending
        opened(panel)
        assert reg.aliases(name).get("champion") != version  # nothing until Confirm
        click(panel.confirm_button)
        opened(panel)
        assert panel.error == "" and panel.confirm_bar.layout.display == "none"
        assert reg.aliases(name) == {"champion": version}
    assert panel.aliases == {"champion": 2}
    assert "v1 -&gt; v2" in panel.status_box.value
    promoted = entries(reg, name, "model.promote")
    assert [e.details["after"] for e in promoted] == [1, 2]

    click(panel.rollback_button)  # Cancel leaves everything as it was
    assert "Roll back" in panel.pending
    click(panel.cancel_button)
    assert panel.pending == "" and panel.confirm_bar.layout.display == "none"
    assert reg.aliases(name) == {"champion": 2}

    click(panel.rollback_button)
    click(panel.confirm_button)
    opened(panel)
    assert panel.error == ""
    assert zoo.client().get_registered_model(name).aliases == {"champion": 1}
    [rolled] = entries(reg, name, "model.rollback")
    assert rolled.details == {"alias": "champion", "before": 2, "after": 1}
    assert "rollback" in panel.history_table.value and [e.action for e in panel.history] == [
        "promote",
        "promote",
        "rollback",
    ]
    panel.close()


def test_a_refused_gate_shows_its_reason_and_changes_nothing(user):
    reg = user("ana")
    name = unique("gated")
    reg.register("dummy", name)
    panel = opened(RegistryPanel(name))
    click(panel.promote_button)
    click(panel.confirm_button)
    opened(panel)
    assert "refused: 1 of 1 gates failed" in panel.error
    assert "metric acc" in panel.error and "below the minimum 0.8" in panel.error
    # the refusal shows where the button is (under Promote), not in the box at the top
    assert "below the minimum 0.8" in panel.status_box.value
    assert panel.error_box.layout.display == "none"
    assert [g.gate for g in panel.gate_results if not g.passed] == ["metric acc"]
    assert reg.aliases(name) == {} and reg.history(name) == []
    assert entries(reg, name, "model.promote") == []
    assert len(entries(reg, name, "model.promote.refused")) == 1
    panel.close()


def test_a_developer_cannot_promote_to_champion_and_nothing_changes(user):
    reg = user("ana")  # a developer of roles-* models, not an approver
    name = unique("roles")
    reg.register("good", name)
    panel = opened(RegistryPanel(name))
    assert panel.roles == ["viewer", "developer"]
    click(panel.promote_button)
    assert "needs the approver role" in panel.error and "carol, dave" in panel.error
    assert panel.confirm_bar.layout.display == "none" and panel.pending == ""
    click(panel.approve_button)
    opened(panel)
    assert "needs the approver role" in panel.error
    assert reg.aliases(name) == {} and entries(reg, name, "model.promote") == []
    assert entries(reg, name, "model.approve") == []

    panel.alias_box.value = "challenger"  # an unprotected alias moves without a confirmation
    click(panel.promote_button)
    opened(panel)
    assert panel.error == "" and panel.pending == ""
    assert reg.aliases(name) == {"challenger": 1}
    panel.close()


def test_deploy_exports_a_kserve_manifest_with_a_canary(user, hub: Path):
    reg = user("ana")
    name = unique("panel")
    reg.register("good", name)
    reg.register("weak", name)
    reg.promote(name, 1, "champion")
    reg.promote(name, 2, "challenger")
    panel = opened(RegistryPanel(name))
    panel.canary_slider.value = 20
    assert panel.canary_percent == 20
    click(panel.deploy_button)
    assert "KServe deployment" in panel.pending and "20% to @challenger (v2)" in panel.pending
    click(panel.confirm_button)
    opened(panel)
    assert panel.error == ""
    out = hub / "deploy" / name
    written = sorted(p.name for p in out.iterdir())
    assert written == ["inferenceservice-canary.yaml", "inferenceservice.yaml"]
    assert str(out / "inferenceservice.yaml") in panel.deploy_box.value
    canary = yaml.safe_load((out / "inferenceservice-canary.yaml").read_text())
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 20
    panel.close()


def test_mlops_dashboard_has_a_registry_tab(user):
    user("ana")
    sh = InteractiveShell.instance()
    sh.reset(new_session=True)
    sh.run_line_magic("load_ext", "nbmlops")
    try:
        with capture_output():
            dash = sh.run_cell("%mlops Registry").result
        assert dash.titles == ("Experiments", "Lineage", "Registry", "Monitoring")
        assert isinstance(dash.panels["Registry"], RegistryPanel)
        dash.wait(60)
        assert dash.panels["Registry"].error == ""
        assert "nbmlops registry" in dash.summary_html()
        dash.close()
    finally:
        sh.run_line_magic("unload_ext", "nbmlops")
        sh.reset(new_session=True)


def test_a_double_clicked_register_makes_one_version_and_says_so_again(zoo: Zoo, user):  # noqa: F811
    reg = user("ana")
    name = unique("twice")
    panel = opened(RegistryPanel(live=False))
    busy: list[str] = []
    disabled: list[bool] = []
    panel.observe(lambda c: busy.append(c["new"]), "busy")
    panel.register_button.observe(lambda c: disabled.append(c["new"]), "disabled")
    panel.source_box.value = f"runs:/{zoo.run_ids['good']}/good"
    panel.name_box.value = name
    click(panel.register_button)
    click(panel.register_button)  # while the first runs: does nothing
    opened(panel)
    assert [v.version for v in reg.versions(name)] == [1]
    assert busy == ["Registering", ""] and disabled == [True, False]
    assert panel.register_button.description == "Register"
    assert f"Registered models:/{name}/1" in panel.register_result.value

    click(panel.register_button)  # once it is done: the same model is already version 1
    opened(panel)
    assert [v.version for v in reg.versions(name)] == [1]
    assert f"is already version 1 of {name}" in panel.register_result.value
    assert panel.version == 1 and panel.error == ""
    with pytest.raises(AlreadyRegistered, match="already version 1") as err:  # the CLI's path
        reg.register("good", name)
    assert err.value.version == 1
    panel.close()


def test_the_promote_confirmation_compares_with_the_champion_and_lists_the_gates(user):
    reg = user("ana")
    name = unique("gated")
    reg.register("good", name)
    reg.register("dummy", name)
    reg.promote(name, 1, override=None)
    panel = opened(RegistryPanel(name, live=False))
    assert "acc" in panel.versions_table.value  # each version's key metrics
    panel.version_menu.value = 2
    click(panel.promote_button)
    opened(panel)
    cmp = panel.comparison
    assert cmp["candidate"].version == 2 and cmp["holder"].version == 1
    assert cmp["candidate"].metrics["acc"] < cmp["holder"].metrics["acc"]
    assert [(g.gate, g.passed) for g in cmp["gates"]] == [("metric acc", False)]
    detail = panel.confirm_detail.value
    assert "candidate v2" in detail and "@champion now: v1" in detail
    assert "Gates for @champion" in detail and "Confirm will be refused" in detail
    click(panel.cancel_button)
    assert reg.aliases(name) == {"champion": 1}
    panel.close()


def test_the_panel_follows_changes_made_elsewhere(user):
    reg = user("ana")
    name = unique("live")
    reg.register("weak", name)
    panel = opened(RegistryPanel(name))
    assert panel.aliases == {} and panel.poller.running
    other = ModelRegistry(load_settings())  # another process's registry, as the CLI would be
    other.register("good", name)
    other.promote(name, 2, "challenger")
    deadline = time.monotonic() + 60
    while panel.aliases != {"challenger": 2} or len(panel.versions) != 2:
        assert time.monotonic() < deadline, (panel.aliases, panel.versions)
        time.sleep(0.2)
    opened(panel)
    assert "@challenger" in panel.versions_table.value
    panel.close()
    assert not panel.poller.running
