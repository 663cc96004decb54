"""`%register`, `%promote`, `%rollback`, `%approve` and `%card` in an in-process IPython shell,
on models fitted by `%%track` cells, against a real MLflow store and audit log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from sklearn.linear_model import LogisticRegression

from nbmlops.config import load_settings
from nbmlops.core.audit import AuditLog
from nbmlops.core.registry.models import ModelRegistry
from nbmlops.ipython.registry_magics import RegistryMagics

MAGICS = ("register", "promote", "rollback", "approve", "card")


@pytest.fixture
def shell(project: Path):
    (project / "nbmlops.yaml").write_text(
        yaml.safe_dump(
            {
                "registry": {
                    "scan": {"pip_audit": "off"},
                    "models": {
                        "strict-*": {
                            "gates": {"champion": [{"metric": {"name": "acc", "min": 0.99}}]}
                        }
                    },
                }
            }
        )
    )
    sh = InteractiveShell.instance()
    sh.reset(new_session=True)
    sh.run_line_magic("load_ext", "nbmlops")
    sh.register_magics(RegistryMagics)
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = ((X.a + rng.normal(scale=0.5, size=200)) > 0).astype(int)  # noisy: acc about 0.85
    sh.user_ns.update(pd=pd, np=np, LogisticRegression=LogisticRegression, X=X, y=y)
    yield sh
    for name in MAGICS:
        sh.magics_manager.magics["line"].pop(name, None)
    sh.run_line_magic("unload_ext", "nbmlops")
    sh.reset(new_session=True)


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    return result, out


def registry(project: Path) -> ModelRegistry:
    return ModelRegistry(load_settings(project, environ={}))


def test_register_promote_rollback_from_a_notebook(shell, project: Path):
    result, out = run(
        shell,
        "%%track fit -e churn\nmodel = LogisticRegression(C=1.0).fit(X, y)\nacc = model.score(X, y)",
    )
    assert result.success, out.stderr
    _r, out = run(
        shell,
        '%register model churn --intended-use "Rank customers for offers" --limitations "toy data"',
    )
    assert "nbmlops registry: churn v1 registered" in out.stdout, out.stderr
    assert "scan clean, card complete" in out.stdout
    result, out = run(
        shell,
        "%%track refit -e churn\nmodel = LogisticRegression(C=0.01).fit(X, y)\nacc = model.score(X, y)",
    )
    assert result.success, out.stderr
    _r, out = run(shell, "%register model churn")
    assert "churn v2 registered" in out.stdout and "card incomplete" in out.stdout
    assert '%card churn 2 --intended-use "..." --limitations "..."' in out.stdout
    _r, out = run(shell, "%promote churn 1")
    assert "churn@champion moved: nobody -> v1" in out.stdout, out.stderr
    _r, out = run(shell, "%promote churn 2")
    assert "churn@champion moved: v1 -> v2" in out.stdout, out.stderr
    _r, out = run(shell, "%rollback churn")
    assert "churn@champion rolled back: v2 -> v1" in out.stdout, out.stderr
    reg = registry(project)
    assert reg.aliases("churn") == {"champion": 1}
    assert [e.action for e in reg.history("churn")] == ["promote", "promote", "rollback"]
    # versions record the tracked runs' metrics, and the lineage ties them to the cells
    assert [v.version for v in reg.versions("churn")] == [1, 2]
    log = AuditLog(project / ".nbmlops" / "audit.jsonl")
    assert [e.action for e in log.entries() if e.action.startswith("model.")] == [
        "model.register",
        "model.register",
        "model.promote",
        "model.promote",
        "model.rollback",
    ]
    assert log.verify().ok


def test_refusals_show_every_reason_and_change_nothing(shell, project: Path):
    run(
        shell,
        "%%track fit -e strict\nmodel = LogisticRegression().fit(X, y)\nacc = model.score(X, y)",
    )
    _r, out = run(shell, "%register model strict-churn")
    assert "strict-churn v1 registered" in out.stdout, out.stderr
    _r, out = run(shell, "%promote strict-churn 1")
    assert "refused: 1 of 1 gates failed" in out.stderr
    assert "below the minimum 0.99" in out.stderr and "Nothing was changed" in out.stderr
    assert registry(project).aliases("strict-churn") == {}
    _r, out = run(shell, "%rollback strict-churn")
    assert "has no holder: nothing to roll back" in out.stderr
    _r, out = run(shell, "%register nothing_here strict-churn")
    assert "no tracked cell has bound a model" in out.stderr
    _r, out = run(shell, "%promote")
    assert "usage: %promote" in out.stderr


def test_card_edit_approve_and_show(shell, project: Path):
    run(
        shell,
        "%%track fit -e cards\nmodel = LogisticRegression().fit(X, y)\nacc = model.score(X, y)",
    )
    run(shell, "%register model carded")
    _result, out = run(shell, '%card carded 1 --intended-use "demo" --limitations "none known"')
    assert "card of carded v1 updated (complete)" in out.stdout, out.stderr
    html = out.outputs[-1].data["text/html"]
    assert "Model card: carded v1" in html and "none known" in html
    assert "permutation importance" in html
    _r, out = run(shell, "%approve carded 1 -m 'read the card'")
    assert "carded v1 approved by" in out.stdout
    [v] = registry(project).versions("carded")
    assert v.card_complete and len(v.approvals) == 1
