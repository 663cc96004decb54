"""Do the panels stay responsive on a 1,000-run experiment and a 200-node lineage graph?

One fresh project folder (a temp dir) with its SQLite MLflow store:

1. **The store.** 1,000 runs (3 params, 2 metrics, a 10-step loss curve each) written with
   direct ``MlflowClient.log_batch`` calls (tracked cells would take far longer to build).
2. **Reading the runs.** ``nbmlops.core.experiments.list_runs`` (paged ``search_runs``) against
   the anchor ``mlflow.search_runs(output_format="pandas")`` on the same experiment.
   Goal: list_runs <= 1.5x the anchor.
3. **The experiments panel.** What blocks the kernel (the constructor, a filter keystroke, a
   sort, a page change, a selection) against a 100 ms "visible stall" budget; what runs in the
   background (the first load with its progress, the curves and the parallel-coordinates
   drawing for 5 selected runs), reported as time until shown.
4. **The lineage panel.** A 202-node chain (67 runs, each reading the previous output and
   producing a new one and a model): constructing the panel (the first one also imports
   networkx and the data store), filtering the node list, selecting a node (sync), and
   drawing the graph (background).

Every figure is the median of ``--repeat`` runs. Results are printed and written to
``bench/results/bench_panels.json``.

    .venv/bin/python bench/bench_panels.py            # 1,000 runs (~30 s to build the store)
    .venv/bin/python bench/bench_panels.py --runs 200 # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
os.environ["MPLBACKEND"] = "Agg"

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "bench_panels.json"
STALL_MS = 100.0  # a UI action blocking the kernel longer than this is a visible stall
EXPERIMENT = "bench-panels"


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def build_store(settings: Any, runs: int) -> float:
    from mlflow.entities import Metric, Param, RunTag

    from nbmlops.core.tracking import store

    client = store.open_client(settings)
    exp = client.create_experiment(EXPERIMENT)
    start = time.perf_counter()
    t0 = 1_700_000_000_000
    for i in range(runs):
        ts = t0 + i * 60_000
        run = client.create_run(exp, run_name=f"sweep-{i:04d}", start_time=ts)
        rid = run.info.run_id
        loss = [Metric("loss", 1.0 / (s + 1) + (i % 17) / 100, ts + s, s) for s in range(10)]
        client.log_batch(
            rid,
            metrics=[Metric("acc", 0.5 + (i % 97) / 200, ts, 0), *loss],
            params=[
                Param("lr", str([0.001, 0.01, 0.1][i % 3])),
                Param("depth", str(i % 11 + 1)),
                Param("opt", ["adam", "sgd"][i % 2]),
            ],
            tags=[RunTag("mlflow.user", "bench")],
        )
        client.set_terminated(rid, "FAILED" if i % 13 == 0 else "FINISHED", end_time=ts + 30_000)
    return time.perf_counter() - start


def build_lineage(path: Path, runs: int = 67) -> str:
    from nbmlops.core.lineage.store import LineageStore

    store = LineageStore(path)
    for i in range(runs):
        store.record_run(
            f"k{i:03d}",
            run_id=None,
            name=f"step-{i:03d}",
            experiment="chain",
            status="FINISHED",
            start_ms=1_700_000_000_000 + i,
            end_ms=1_700_000_000_500 + i,
            source=None,
            datasets=[
                {"name": "x", "digest": f"{i:032x}", "role": "input", "shape": [10, 2]},
                {"name": "x", "digest": f"{i + 1:032x}", "role": "output", "shape": [10, 2]},
            ],
            models=[{"name": "m", "class": "sklearn.linear_model.Ridge", "trained_on": "x"}],
            tracking_uri="sqlite://",
        )
    return "data:" + "0" * 32


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="bench-panels-"))
    os.chdir(folder)
    import mlflow
    import pandas as pd  # noqa: F401  (imported before any worker thread does)

    from nbmlops.config import load_settings
    from nbmlops.core import experiments as core
    from nbmlops.widgets.experiments import ExperimentsPanel
    from nbmlops.widgets.lineage import LineagePanel

    settings = load_settings()
    out: dict[str, Any] = {
        "runs": args.runs,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "mlflow": mlflow.__version__,
    }
    print(f"store: {settings.resolved_tracking_uri}")
    out["build_store_s"] = build_store(settings, args.runs)
    print(f"built {args.runs:,} runs with log_batch in {out['build_store_s']:.1f} s")

    # 2. reading the runs
    exp_id = (
        mlflow.MlflowClient(settings.resolved_tracking_uri)
        .get_experiment_by_name(EXPERIMENT)
        .experiment_id
    )
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    anchor = median_ms(
        lambda: mlflow.search_runs([exp_id], max_results=50_000, output_format="pandas"),
        args.repeat,
    )
    ours = median_ms(lambda: core.list_runs(settings, EXPERIMENT), args.repeat)
    out.update(list_runs_ms=ours, mlflow_search_runs_ms=anchor, list_runs_ratio=ours / anchor)
    print(
        f"list_runs {ours:.0f} ms vs mlflow.search_runs {anchor:.0f} ms: "
        f"ratio {ours / anchor:.2f} (goal <= 1.5)"
    )

    # 3. the experiments panel
    start = time.perf_counter()
    panel = ExperimentsPanel(EXPERIMENT)
    ctor = (time.perf_counter() - start) * 1000
    assert panel.wait(120)
    first = (time.perf_counter() - start) * 1000
    assert len(panel.runs) == args.runs, (len(panel.runs), panel.error)
    keystrokes = ["o", "op", "opt", "opt=", "opt=a", "opt=ad", "opt=ada", "opt=adam"]

    def type_filter() -> None:
        for text in keystrokes:
            panel.text = text
        panel.text = ""

    filter_ms = median_ms(type_filter, args.repeat) / (len(keystrokes) + 1)
    sort_ms = (
        median_ms(
            lambda: (setattr(panel, "sort_by", "acc"), setattr(panel, "sort_by", "depth")),
            args.repeat,
        )
        / 2
    )
    page_ms = (
        median_ms(lambda: (setattr(panel, "page", 7), setattr(panel, "page", 0)), args.repeat) / 2
    )
    ids = tuple(panel.view["run_id"][:5])
    panel.curve_metric = "loss"
    panel.wait(60)

    def select() -> None:
        panel.selected = ()
        panel.selected = ids

    select_ms = median_ms(select, args.repeat)
    start = time.perf_counter()
    panel.selected = ()
    panel.selected = ids
    assert panel.wait(60)
    figures = (time.perf_counter() - start) * 1000
    assert panel.curve_image.value[:4] == b"\x89PNG" and panel.parallel_image.value
    html_ms = median_ms(panel.summary_html, args.repeat)
    out["experiments_panel"] = {
        "constructor_ms": ctor,
        "first_table_ms": first,
        "filter_keystroke_ms": filter_ms,
        "sort_ms": sort_ms,
        "page_ms": page_ms,
        "select_5_runs_ms": select_ms,
        "curves_and_parallel_shown_ms": figures,
        "static_html_ms": html_ms,
    }
    panel.close()

    # 4. the lineage panel
    focus = build_lineage(settings.home_dir / "lineage.db")
    start = time.perf_counter()
    lineage = LineagePanel(focus, settings=settings, namespace={})
    lctor = (time.perf_counter() - start) * 1000
    assert lineage.wait(120) and not lineage.error, lineage.error
    drawn = (time.perf_counter() - start) * 1000

    def construct() -> None:
        again = LineagePanel(focus, settings=settings, namespace={})
        again.close()

    lwarm = median_ms(construct, args.repeat)  # imports done: what every later panel costs
    nodes = lineage.view.graph.number_of_nodes()

    def filter_nodes() -> None:
        for text in ("s", "st", "ste", "step-0", "step-01", ""):
            lineage.node_filter = text

    lfilter = median_ms(filter_nodes, args.repeat) / 6
    options = [v for _label, v in lineage.node_list.options]
    picks = iter(options * (args.repeat + 1))
    lselect = median_ms(lambda: setattr(lineage, "selected", next(picks)), args.repeat)
    lineage.wait(120)
    start = time.perf_counter()
    lineage.selected = options[len(options) // 2]
    lineage.wait(120)
    redraw = (time.perf_counter() - start) * 1000
    out["lineage_panel"] = {
        "nodes": nodes,
        "constructor_first_ms": lctor,
        "constructor_ms": lwarm,
        "drawing_shown_ms": drawn,
        "filter_keystroke_ms": lfilter,
        "select_node_ms": lselect,
        "redraw_after_select_ms": redraw,
    }
    lineage.close()

    print(f"\nexperiments panel, {args.runs:,} runs (kernel blocked: goal <= {STALL_MS:.0f} ms)")
    blocking = ("constructor_ms", "filter_keystroke_ms", "sort_ms", "page_ms", "select_5_runs_ms")
    for key, value in out["experiments_panel"].items():
        tag = f"  ({value / STALL_MS:.2f} of budget)" if key in blocking else "  (background)"
        print(f"  {key:32s} {value:8.1f} ms{tag if key != 'static_html_ms' else ''}")
    print(f"\nlineage panel, {nodes} nodes")
    blocking = ("constructor_ms", "filter_keystroke_ms", "select_node_ms")
    for key, value in out["lineage_panel"].items():
        if key == "nodes":
            continue
        tag = f"  ({value / STALL_MS:.2f} of budget)" if key in blocking else ""
        tag = tag or ("  (background)" if "shown" in key or "redraw" in key else "")
        print(f"  {key:32s} {value:8.1f} ms{tag}")
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(out, indent=2))
    print(f"\nresults written to {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
