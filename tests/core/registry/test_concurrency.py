"""RELIABILITY 15: two promotions of one model at once, from two processes: exactly one wins,
the other is refused having changed nothing, and the alias history stays linear."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.core.registry.conftest import Zoo, unique

PROMOTER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from nbmlops.config import load_settings
    from nbmlops.core.registry.models import ModelRegistry

    project, name, version, go, out, registry = sys.argv[1:]
    reg = ModelRegistry(load_settings(project, environ={}, user="carol",
                                      registry=json.loads(registry)))
    reg.versions(name)  # imports and connections warmed up before the start signal
    import mlflow.pyfunc, sklearn.metrics  # noqa: F401
    Path(out + ".ready").touch()
    while not Path(go).exists():
        time.sleep(0.002)
    try:
        result = reg.promote(name, int(version))
        outcome = {"ok": True, "before": result.before, "after": result.after}
    except Exception as err:
        outcome = {"ok": False, "error": type(err).__name__, "message": str(err)}
    Path(out).write_text(json.dumps(outcome))
    """
)


@pytest.mark.slow
def test_two_promotions_at_once_one_wins_history_linear(zoo: Zoo, tmp_path: Path):
    name = unique("race")
    # a gate that evaluates both models on the holdout: each decision takes a while, so the
    # two processes are surely deciding at the same time
    registry = {
        "scan": {"pip_audit": "off"},
        "models": {
            "race-*": {
                "gates": {
                    "champion": [
                        {
                            "beats_champion": {
                                "metric": "accuracy",
                                "holdout": "holdout@1",
                                "target": "label",
                            }
                        }
                    ]
                }
            }
        },
    }
    reg = zoo.registry("carol", registry)
    for model in ("dummy", "weak", "good"):  # one version per logged model
        reg.register(model, name)
    reg.promote(name, 1)
    script = tmp_path / "promote.py"
    script.write_text(PROMOTER)
    go = tmp_path / "go"
    outs = [tmp_path / f"out{v}.json" for v in (2, 3)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(zoo.project),
                name,
                str(v),
                str(go),
                str(out),
                json.dumps(registry),
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v, out in zip((2, 3), outs, strict=True)
    ]
    deadline = time.monotonic() + 120
    while not all(Path(str(o) + ".ready").exists() for o in outs):
        assert time.monotonic() < deadline, [p.stderr.read() for p in procs if p.poll() is not None]
        time.sleep(0.05)
    go.touch()
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read()
    outcomes = [json.loads(o.read_text()) for o in outs]
    winners = [o for o in outcomes if o["ok"]]
    losers = [o for o in outcomes if not o["ok"]]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert losers[0]["error"] in ("ConcurrentChange", "RegistryBusy"), losers[0]
    assert "nothing was changed" in losers[0]["message"]
    won = winners[0]["after"]
    assert reg.aliases(name) == {"champion": won}
    history = reg.history(name)
    assert [(e.action, e.version, e.previous) for e in history] == [
        ("promote", 1, None),
        ("promote", won, 1),
    ]
    promotes = [e for e in zoo.audit_entries() if e.action == "model.promote" and name in e.target]
    assert [(e.details["before"], e.details["after"]) for e in promotes] == [(None, 1), (1, won)]
