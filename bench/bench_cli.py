"""How fast do ``nbmlops`` registry and runs commands answer, next to doing the same with
MLflow's own tools on the same store?

One fresh project folder (a temp dir) with its SQLite MLflow store: two runs in experiment
``wine``, model ``wine-clf`` registered twice and promoted. Each command is a new process, as a
user types it, with stdout a pipe; each pair is run interleaved (nbmlops, baseline, nbmlops,
...) so machine noise hits both alike; the median of ``--repeat`` runs is reported.

| nbmlops                       | baseline (same store, same answer)                         |
| ----------------------------- | ---------------------------------------------------------- |
| model versions wine-clf       | MlflowClient: search_model_versions + get_registered_model |
| model history wine-clf        | MlflowClient: get_registered_model, the history tag parsed |
| model promote wine-clf 1|2    | MlflowClient: set_registered_model_alias + set the tag     |
| runs ls --experiment wine     | ``mlflow runs list --experiment-id ID``                    |

Goal: each read-only command (versions, history, runs ls) at least 3x faster than its
baseline. ``promote`` checks roles and gates, locks, writes the history and the audit log, so
it is shown for scale only (MLflow is imported to write).

    .venv/bin/python bench/bench_cli.py              # 5 runs of each
    .venv/bin/python bench/bench_cli.py --repeat 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PY = sys.executable
ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}

BUILD = textwrap.dedent(
    """
    import mlflow, numpy as np
    from sklearn.linear_model import LogisticRegression
    from nbmlops.api.registry import model_registry
    from nbmlops.api.tracking import open_store
    from nbmlops.config import load_settings

    s = load_settings()
    open_store(s)
    mlflow.set_tracking_uri(s.resolved_tracking_uri)
    exp = mlflow.set_experiment("wine")
    X = np.random.default_rng(0).random((30, 3))
    y = (X[:, 0] > 0.5).astype(int)
    uris = []
    for i, acc in enumerate((0.81, 0.93)):
        with mlflow.start_run(run_name=f"train-{i}") as run:
            mlflow.log_param("C", i + 1)
            mlflow.log_metric("acc", acc)
            mlflow.sklearn.log_model(LogisticRegression().fit(X, y), name="model")
            uris.append(f"runs:/{run.info.run_id}/model")
    reg = model_registry(s)
    for uri in uris:
        reg.register(uri, "wine-clf")
    reg.promote("wine-clf", 1)
    print(exp.experiment_id)
    """
)

CLIENT = textwrap.dedent(
    """
    import json, sys
    from mlflow import MlflowClient
    client = MlflowClient(sys.argv[1])
    what = sys.argv[2]
    if what == "versions":
        aliases = client.get_registered_model("wine-clf").aliases
        for mv in sorted(client.search_model_versions("name = 'wine-clf'"), key=lambda v: int(v.version)):
            held = [a for a, v in aliases.items() if int(v) == int(mv.version)]
            print(mv.version, held, mv.run_id, mv.tags.get("nbmlops.scan"))
    elif what == "history":
        tags = client.get_registered_model("wine-clf").tags
        for e in json.loads(tags.get("nbmlops.alias_history.champion", "[]")):
            print(e.get("action"), e.get("version"), e.get("previous"))
    elif what == "promote":
        tags = client.get_registered_model("wine-clf").tags
        events = json.loads(tags.get("nbmlops.alias_history.champion", "[]"))
        events.append({"action": "promote", "version": int(sys.argv[3])})
        client.set_registered_model_alias("wine-clf", "champion", sys.argv[3])
        client.set_registered_model_tag("wine-clf", "nbmlops.alias_history.champion", json.dumps(events))
    """
)


def timed(cmd: list[str], cwd: Path) -> float:
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command")
    args = parser.parse_args(argv)

    project = Path(tempfile.mkdtemp(prefix="bench-cli-")) / "project"
    project.mkdir()
    print(f"building {project} (two runs, a model with two versions) ...", flush=True)
    built = subprocess.run(
        [PY, "-c", BUILD], cwd=project, env=ENV, capture_output=True, text=True, timeout=900
    )
    if built.returncode != 0:
        raise SystemExit(built.stderr[-3000:])
    exp_id = built.stdout.split()[-1]
    uri = f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}"
    nbmlops = [PY, "-m", "nbmlops.cli.main"]
    client = [PY, "-c", CLIENT, uri]
    mlflow_cli = [PY, "-m", "mlflow"]
    cases = [
        (
            "model versions",
            True,
            [*nbmlops, "model", "versions", "wine-clf"],
            [*client, "versions"],
        ),
        ("model history", True, [*nbmlops, "model", "history", "wine-clf"], [*client, "history"]),
        (
            "runs ls",
            True,
            [*nbmlops, "runs", "ls", "--experiment", "wine"],
            [*mlflow_cli, "runs", "list", "--experiment-id", exp_id],
        ),
        ("model promote", False, None, None),
    ]
    results = []
    for label, read_only, ours_cmd, base_cmd in cases:
        ours, base = [], []
        for i in range(args.repeat):
            if label == "model promote":  # alternate versions so every promotion moves it
                version = str(2 - i % 2)
                ours_cmd = [*nbmlops, "model", "promote", "wine-clf", version]
                base_cmd = [*client, "promote", version]
            ours.append(timed(ours_cmd, project))
            base.append(timed(base_cmd, project))
        o, b = statistics.median(ours), statistics.median(base)
        results.append((label, read_only, o, b))
        print(f"{label:16s} nbmlops {o:6.2f} s   baseline {b:6.2f} s   ratio {b / o:5.1f}x")

    print()
    print(f"{'command':16s} {'nbmlops s':>10s} {'baseline s':>11s} {'baseline/nbmlops':>17s}")
    for label, _ro, o, b in results:
        print(f"{label:16s} {o:10.2f} {b:11.2f} {b / o:16.1f}x")
    print()
    print("GOALS")
    ok = True
    for label, read_only, o, b in results:
        if not read_only:
            print(f"  {label:16s} {b / o:5.1f}x faster   (for scale: writes go through MLflow)")
            continue
        met = b / o >= 3.0
        ok &= met
        print(f"  {label:16s} {b / o:5.1f}x faster   goal >= 3x   {'MET' if met else 'NOT MET'}")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
