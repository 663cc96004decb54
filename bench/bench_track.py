"""What does ``%%track`` cost the user, next to writing the same MLflow logging by hand?

Everything runs in one process against one fresh project folder (a temp dir) and its SQLite
MLflow store, ``sqlite:///<tmp>/.nbmlops/mlflow.db``:

1. **Added wait per cell.** An in-process IPython shell runs the same small training cell
   (400 x 8 DataFrame, train/test split, LogisticRegression, accuracy, a matplotlib bar plot)
   three ways, interleaved so machine noise hits all of them equally:
   *untracked* (the plain cell), *tracked* (``%%track bench-{i}`` on the first line) and
   *hand-written* (the plain cell plus the same capture written with MLflow's fluent API and
   its default arguments, i.e. what users write: ``log_model`` infers pip requirements in a
   subprocess, ~6 s). Added wait = tracked - untracked and hand - untracked, per iteration.
   Before each timed cell the shipper is flushed (untimed): a person reads a cell's output
   before running the next one. Hand-written cells are slow, so fewer are timed
   (``--hand-cells``), spread evenly over the iterations. Goal: tracked <= 1/50 of hand.
2. **Time until every run is durable in MLflow.** A burst of N tracked cells run back to back
   ("Run All"), timed from the start of the first cell to the return of
   ``get_tracker().flush()``; the FINISHED runs are then counted in the store. The hand path is
   synchronous: its total is the sum of its cell times, scaled to N runs. Goal: <= 1/3.
3. **Digest throughput**: ``bench/bench_digest.py``'s ``run()``.
4. **``%load_ext nbmlops`` in a fresh kernel vs ``import mlflow``**: a new jupyter_client kernel
   per measurement, median of ``--repeat`` kernels each. Goal: load_ext <= 1/5.

Telemetry is off everywhere (MLFLOW_DISABLE_TELEMETRY, DO_NOT_TRACK). Results are printed and
written to ``bench/results/bench_track.json``.

    .venv/bin/python bench/bench_track.py            # 50 tracked cells, 10 hand-written (~5 min)
    .venv/bin/python bench/bench_track.py --quick    # 10 tracked, 3 hand-written (~1 min)
    .venv/bin/python bench/bench_track.py --profile --breakdown  # where the added wait goes
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Before anything imports mlflow or matplotlib; kernels started below inherit these too.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
os.environ["MPLBACKEND"] = "Agg"

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "bench_track.json"
TRACKED_EXPERIMENT = "bench-tracked"

GOAL_ADDED_WAIT = 50  # tracked added wait <= hand added wait / 50
GOAL_DURABLE = 3  # tracked time-to-durable <= hand total / 3
GOAL_LOAD_EXT = 5  # %load_ext nbmlops <= import mlflow / 5

# --- the notebook --------------------------------------------------------------------------
SETUP_CELL = """\
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

rng = np.random.default_rng(0)
X = pd.DataFrame(rng.normal(size=(400, 8)), columns=[f"f{k}" for k in range(8)])
y = ((X["f0"] + 0.5 * X["f1"] - X["f2"] + rng.normal(scale=0.5, size=400)) > 0).astype(int)
"""

TRAIN_CELL = """\
C = 1.0
test_size = 0.25
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=0)
model = LogisticRegression(C=C, max_iter=200).fit(X_train, y_train)
accuracy = model.score(X_test, y_test)
fig, ax = plt.subplots(figsize=(4, 3))
ax.bar(X.columns, model.coef_[0])
ax.set_title("coef")
"""

HAND_LOGGING = """\
import mlflow
import mlflow.data
import mlflow.sklearn

mlflow.set_tracking_uri({uri!r})
mlflow.set_experiment("bench-hand")
with mlflow.start_run(run_name={name!r}):
    mlflow.log_params({{"C": C, "test_size": test_size}})
    mlflow.log_metrics({{"accuracy": accuracy}})
    mlflow.log_input(mlflow.data.from_pandas(X_train), context="training")
    mlflow.sklearn.log_model(model, name="model", input_example=X_train.iloc[:5])
    mlflow.log_figure(fig, "figures/coef.png")
"""


def untracked_cell() -> str:
    return TRAIN_CELL


def tracked_cell(name: str, extra: str = "") -> str:
    return f"%%track {extra}{name}\n{TRAIN_CELL}"


def hand_cell(uri: str, name: str) -> str:
    return TRAIN_CELL + HAND_LOGGING.format(uri=uri, name=name)


# --- helpers -------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def verdict(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "[red]MISS[/red]"


class Notebook:
    """An in-process IPython shell with nbmlops loaded; cells' output goes to a log file."""

    def __init__(self, project: Path, log: io.TextIOBase):
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config

        self.project = project
        self.log = log
        config = Config()
        config.HistoryManager.hist_file = ":memory:"  # the project folder is deleted at the end
        self.shell = InteractiveShell.instance(config=config)
        with self.quiet():
            self.run(SETUP_CELL)
            self.shell.run_line_magic("load_ext", "nbmlops")

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Cell output, run summaries and late display updates from the shipper thread."""
        with contextlib.redirect_stdout(self.log), contextlib.redirect_stderr(self.log):
            yield

    def run(self, code: str) -> float:
        """Run one cell; its wall time in seconds. Open figures are closed afterwards (untimed),
        as the inline backend does after every notebook cell."""
        import matplotlib.pyplot as plt

        with self.quiet():
            start = time.perf_counter()
            result = self.shell.run_cell(code, store_history=True)
            elapsed = time.perf_counter() - start
            plt.close("all")
        if not result.success:
            err = result.error_in_exec or result.error_before_exec
            raise RuntimeError(f"cell failed ({err!r}); see {self.log.name}:\n{code}")
        return elapsed

    def flush(self, timeout: float = 300) -> None:
        from nbmlops.core.tracking.session import get_tracker

        with self.quiet():
            if not get_tracker().flush(timeout):
                raise RuntimeError(f"the shipper did not drain within {timeout} s")


def finished_runs(uri: str, experiment: str, name_prefix: str) -> int:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return 0
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"attributes.status = 'FINISHED' AND attributes.run_name LIKE '{name_prefix}%'",
        max_results=10_000,
    )
    return len(runs)


# --- sections 1 and 2 ----------------------------------------------------------------------
def bench_cells(nb: Notebook, uri: str, cells: int, hand_cells: int) -> dict[str, Any]:
    """Interleaved untracked / tracked / hand-written cells; shipper drained before each."""
    hand_cells = min(hand_cells, cells)
    step = cells / hand_cells if hand_cells else 0
    hand_at = {int(k * step) for k in range(hand_cells)}
    times: dict[str, list[float]] = {"untracked": [], "tracked": [], "hand": []}
    pairs_tracked: list[float] = []
    pairs_hand: list[float] = []
    for i in range(cells):
        variants = ["untracked", "tracked"] + (["hand"] if i in hand_at else [])
        shift = i % len(variants)
        variants = variants[shift:] + variants[:shift]  # rotate: no variant always goes first
        got: dict[str, float] = {}
        for variant in variants:
            nb.flush()
            code = {
                "untracked": untracked_cell,
                "tracked": lambda i=i: tracked_cell(f"bench-{i}"),
                "hand": lambda i=i: hand_cell(uri, f"hand-{i}"),
            }[variant]()
            got[variant] = nb.run(code)
            times[variant].append(got[variant])
        pairs_tracked.append(got["tracked"] - got["untracked"])
        if "hand" in got:
            pairs_hand.append(got["hand"] - got["untracked"])
        if (i + 1) % 10 == 0 or i + 1 == cells:
            print(f"  section 1: {i + 1}/{cells} iterations", file=sys.__stdout__, flush=True)
    nb.flush()
    return {
        "cells": cells,
        "hand_cells": len(pairs_hand),
        "cell_seconds": times,
        "added_tracked": pairs_tracked,
        "added_hand": pairs_hand,
    }


def bench_durable(nb: Notebook, cells: int) -> dict[str, Any]:
    """N tracked cells back to back, then wait for the shipper: time until all are in MLflow."""
    from nbmlops.core.tracking.session import get_tracker

    nb.flush()
    cell_times = []
    start = time.perf_counter()
    for i in range(cells):
        cell_times.append(nb.run(tracked_cell(f"burst-{i}")))
    cells_done = time.perf_counter()
    with nb.quiet():
        ok = get_tracker().flush(600)
    durable = time.perf_counter() - start
    if not ok:
        raise RuntimeError("the burst did not reach MLflow within 600 s")
    return {
        "cells": cells,
        "cell_seconds": cell_times,
        "cells_done_s": cells_done - start,
        "flush_wait_s": durable - (cells_done - start),
        "durable_s": durable,
    }


BREAKDOWN = {  # variant -> extra %%track arguments (None: untracked)
    "untracked": None,
    "%%track": "",
    "%%track --no-figures": "--no-figures ",
    "%%track --no-models": "--no-models ",
    "%%track --no-figures --no-models --no-data": "--no-figures --no-models --no-data ",
    "%%track --dry-run (capture only: no staging, journal or shipping)": "--dry-run ",
}


def bench_breakdown(nb: Notebook, cells: int) -> dict[str, list[float]]:
    """Where the added wait goes: the tracked cell with parts of the capture switched off,
    interleaved like section 1; added wait per iteration against its untracked cell."""
    times: dict[str, list[float]] = {v: [] for v in BREAKDOWN}
    names = list(BREAKDOWN)
    for i in range(cells):
        order = names[i % len(names) :] + names[: i % len(names)]
        for variant in order:
            nb.flush()
            extra = BREAKDOWN[variant]
            code = (
                untracked_cell()
                if extra is None
                else tracked_cell(f"breakdown-{i}", extra=f"-e bench-breakdown {extra}")
            )
            times[variant].append(nb.run(code))
    nb.flush()
    base = times["untracked"]
    return {
        v: [t - b for t, b in zip(xs, base, strict=True)]
        for v, xs in times.items()
        if v != "untracked"
    }


def profile_tracked(nb: Notebook, cells: int) -> str:
    """cProfile of the main thread over a few tracked cells (the shipper thread is not in it)."""
    prof = cProfile.Profile()
    for i in range(cells):
        nb.flush()
        prof.enable()
        nb.run(tracked_cell(f"profile-{i}", extra="-e bench-profile "))
        prof.disable()
    nb.flush()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).sort_stats("cumulative")
    stats.print_stats(r"nbmlops|savefig|pickle|subprocess|psutil|fsync|display", 30)
    return out.getvalue()


# --- sections 3 and 4 ----------------------------------------------------------------------
def bench_digest(quick: bool) -> tuple[list[dict], list[str]]:
    sys.path.insert(0, str(BENCH_DIR))
    import bench_digest

    scale = 10 if quick else 1
    rows = bench_digest.run(rows_numeric=10_000_000 // scale, rows_string=1_000_000 // scale)
    try:
        notes = bench_digest._ratios(rows)
    except Exception as err:  # the ratio helper is private to that script
        notes = [f"(no ratio lines: {err!r})"]
    return rows, notes


def kernel_time(statement: str, project: Path, env: dict[str, str]) -> dict[str, Any]:
    """Seconds ``statement`` takes in a brand-new kernel, timed inside the kernel."""
    from jupyter_client.manager import start_new_kernel

    code = (
        "import sys, time\n"
        "_t = time.perf_counter()\n"
        f"{statement}\n"
        "_dt = time.perf_counter() - _t\n"
        "_mods = sorted(m for m in ('mlflow', 'pandas', 'sklearn', 'sqlalchemy') "
        "if m in sys.modules)"
    )
    km, kc = start_new_kernel(
        kernel_name="python3", cwd=str(project), env=env, stderr=subprocess.DEVNULL
    )
    try:
        reply = kc.execute_interactive(
            code,
            user_expressions={"dt": "_dt", "mods": "_mods", "exe": "sys.executable"},
            output_hook=lambda msg: None,
            timeout=180,
        )
        content = reply["content"]
        if content["status"] != "ok":
            raise RuntimeError(
                f"kernel cell failed: {content.get('ename')}: {content.get('evalue')}"
            )
        expr = content["user_expressions"]
        return {
            "seconds": float(expr["dt"]["data"]["text/plain"]),
            "heavy_modules_after": expr["mods"]["data"]["text/plain"],
            "executable": expr["exe"]["data"]["text/plain"].strip("'"),
        }
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def bench_load_ext(project: Path, repeat: int) -> dict[str, Any]:
    env = dict(os.environ)
    out: dict[str, Any] = {}
    for label, statement in (
        ("load_ext", "get_ipython().run_line_magic('load_ext', 'nbmlops')"),
        ("import_mlflow", "import mlflow"),
    ):
        samples = []
        for k in range(repeat):
            samples.append(kernel_time(statement, project, env))
            print(f"  section 4: {label} kernel {k + 1}/{repeat}", file=sys.__stdout__, flush=True)
        out[label] = {
            "median_s": statistics.median(s["seconds"] for s in samples),
            "samples": samples,
        }
    return out


# --- report --------------------------------------------------------------------------------
def report(res: dict[str, Any], console: Any) -> list[dict[str, Any]]:
    from rich.table import Table

    goals: list[dict[str, Any]] = []
    s1 = res["cells"]
    n, h = s1["cells"], s1["hand_cells"]
    t = Table(title=f"1. Added wait per cell ({n} tracked, {h} hand-written cells timed)")
    for col in ("path", "cell p50", "cell p95", "added p50", "added p95"):
        t.add_column(col, justify="right" if col != "path" else "left")
    base = s1["cell_seconds"]["untracked"]
    t.add_row("untracked (plain cell)", ms(pct(base, 50)), ms(pct(base, 95)), "-", "-")
    for path, label in (("tracked", "%%track"), ("hand", "hand-written MLflow")):
        cell, added = s1["cell_seconds"][path], s1[f"added_{path}"]
        t.add_row(
            label, ms(pct(cell, 50)), ms(pct(cell, 95)), ms(pct(added, 50)), ms(pct(added, 95))
        )
    burst = res["durable"]["cell_seconds"]
    t.add_row(
        "%%track, back to back (section 2)",
        ms(pct(burst, 50)),
        ms(pct(burst, 95)),
        ms(pct(burst, 50) - pct(base, 50)),
        ms(pct(burst, 95) - pct(base, 50)),
    )
    console.print(t)
    tracked50, hand50 = pct(s1["added_tracked"], 50), pct(s1["added_hand"], 50)
    ratio = hand50 / tracked50 if tracked50 > 0 else float("inf")
    console.print(
        f"hand / tracked added wait (p50): [bold]{ratio:,.1f}x[/bold]   "
        f"goal >= {GOAL_ADDED_WAIT}x (tracked <= 1/{GOAL_ADDED_WAIT} of hand): "
        f"{verdict(ratio >= GOAL_ADDED_WAIT)}"
    )
    if h < n:
        console.print(
            f"[dim]Only {h} of {n} iterations included a hand-written cell "
            f"({pct(s1['cell_seconds']['hand'], 50):.1f} s each at p50); "
            "each is paired with the untracked cell of its own iteration. The back-to-back row "
            "is added wait against the interleaved untracked p50 while the shipper is busy.[/dim]"
        )
    goals.append(
        {
            "figure": "added wait per cell, p50: tracked vs hand",
            "value": f"{ms(tracked50)} vs {ms(hand50)} ({ratio:,.1f}x)",
            "goal": f"tracked <= hand / {GOAL_ADDED_WAIT}",
            "pass": ratio >= GOAL_ADDED_WAIT,
        }
    )

    if "breakdown" in res:
        bd = res["breakdown"]
        t = Table(
            title=f"1b. Where the added wait goes ({len(next(iter(bd.values())))} iterations)"
        )
        for col in ("variant", "added p50", "added p95"):
            t.add_column(col, justify="left" if col == "variant" else "right")
        for variant, added in bd.items():
            t.add_row(variant, ms(pct(added, 50)), ms(pct(added, 95)))
        console.print(t)

    s2 = res["durable"]
    hand_total = sum(s1["cell_seconds"]["hand"])
    hand_scaled = hand_total * n / h
    dratio = s2["durable_s"] / hand_scaled
    t = Table(title=f"2. Time until all {n} runs are durable in MLflow")
    t.add_column("path")
    t.add_column("seconds", justify="right")
    t.add_column("how", justify="left")
    t.add_row(
        "%%track",
        f"{s2['durable_s']:.2f}",
        f"{n} cells back to back ({s2['cells_done_s']:.2f} s) + flush ({s2['flush_wait_s']:.2f} s); "
        f"{s2['finished_runs']} FINISHED runs counted in the store",
    )
    t.add_row(
        "hand-written MLflow",
        f"{hand_scaled:.2f}",
        f"sum of {h} synchronous cells ({hand_total:.2f} s)"
        + (f", scaled x{n / h:.1f} to {n} runs" if h != n else ""),
    )
    console.print(t)
    console.print(
        f"tracked / hand: [bold]{dratio:.3f}[/bold]   goal <= 1/{GOAL_DURABLE}: "
        f"{verdict(dratio <= 1 / GOAL_DURABLE)}"
    )
    goals.append(
        {
            "figure": f"time until {n} runs durable: tracked vs hand",
            "value": f"{s2['durable_s']:.2f} s vs {hand_scaled:.2f} s ({dratio:.3f})",
            "goal": f"<= 1/{GOAL_DURABLE}",
            "pass": dratio <= 1 / GOAL_DURABLE,
        }
    )

    t = Table(title="3. Digest throughput (bench/bench_digest.py run())")
    for col in ("frame", "method", "median s", "GB/s", "runs", "note"):
        t.add_column(col, justify="right" if col in ("median s", "GB/s", "runs") else "left")
    for r in res["digest"]["rows"]:
        if "error" in r:
            t.add_row(r["frame"], r["method"], "-", "-", "-", f"error: {r['error']}")
        else:
            t.add_row(
                r["frame"],
                r["method"],
                f"{r['seconds']:.4f}",
                f"{r['gb_per_s']:.2f}",
                str(r["runs"]),
                r["note"],
            )
    console.print(t)
    for line in res["digest"]["notes"]:
        console.print(line)

    s4 = res["load_ext"]
    t = Table(title="4. In a fresh kernel (median of fresh kernels)")
    t.add_column("statement")
    t.add_column("median", justify="right")
    t.add_column("samples", justify="right")
    t.add_column("heavy modules imported after it")
    for label, stmt in (("load_ext", "%load_ext nbmlops"), ("import_mlflow", "import mlflow")):
        samples = s4[label]["samples"]
        t.add_row(
            stmt,
            ms(s4[label]["median_s"]),
            ", ".join(ms(s["seconds"]) for s in samples),
            samples[0]["heavy_modules_after"],
        )
    console.print(t)
    lratio = s4["load_ext"]["median_s"] / s4["import_mlflow"]["median_s"]
    console.print(
        f"load_ext / import mlflow: [bold]{lratio:.3f}[/bold]   goal <= 1/{GOAL_LOAD_EXT}: "
        f"{verdict(lratio <= 1 / GOAL_LOAD_EXT)}"
    )
    goals.append(
        {
            "figure": "%load_ext nbmlops vs import mlflow (fresh kernel)",
            "value": f"{ms(s4['load_ext']['median_s'])} vs {ms(s4['import_mlflow']['median_s'])} "
            f"({lratio:.3f})",
            "goal": f"<= 1/{GOAL_LOAD_EXT}",
            "pass": lratio <= 1 / GOAL_LOAD_EXT,
        }
    )

    t = Table(title="GOALS")
    for col in ("figure", "value", "goal", "result"):
        t.add_column(col)
    for g in goals:
        t.add_row(g["figure"], g["value"], g["goal"], verdict(g["pass"]))
    console.print(t)
    return goals


# --- main ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10/3 cells, 1/10 digest, 1 kernel")
    parser.add_argument("--cells", type=int, help="tracked (and untracked) cells; default 50")
    parser.add_argument("--hand-cells", type=int, help="hand-written cells timed; default 10")
    parser.add_argument("--repeat", type=int, help="fresh kernels per statement; default 3")
    parser.add_argument("--profile", action="store_true", help="cProfile 5 tracked cells")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the tracked cell with parts of the capture switched off",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp project folder")
    args = parser.parse_args(argv)
    cells = args.cells or (10 if args.quick else 50)
    hand_cells = args.hand_cells or (3 if args.quick else 10)
    repeat = args.repeat or (1 if args.quick else 3)

    from rich.console import Console

    out = sys.__stdout__
    console = Console(file=out, width=None if out.isatty() else 160)
    project = Path(tempfile.mkdtemp(prefix="nbmlops-bench-")).resolve()
    uri = f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}"
    (project / ".nbmlops").mkdir()
    os.environ.update(
        {
            "NBMLOPS_PROJECT_DIR": str(project),
            "NBMLOPS_TRACKING_URI": uri,
            "NBMLOPS_EXPERIMENT": TRACKED_EXPERIMENT,
            "IPYTHONDIR": str(project / ".ipython"),
        }
    )
    os.chdir(project)
    console.print(f"project {project}\nstore   {uri}")

    res: dict[str, Any] = {
        "args": {"cells": cells, "hand_cells": hand_cells, "repeat": repeat, "quick": args.quick},
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "tracking_uri": uri,
    }
    log_path = project / "cells.log"
    try:
        with open(log_path, "w") as log:
            # In-process there is no ipykernel, so `ship: auto` already ships in the background;
            # say so explicitly for the tracked cells.
            os.environ["NBMLOPS_SHIP"] = "background"
            nb = Notebook(project, log)
            console.print("warm-up: one cell of each kind (imports, store schema, experiments)")
            nb.run(untracked_cell())
            nb.run(tracked_cell("warmup", extra="-e bench-warmup "))
            nb.run(hand_cell(uri, "hand-warmup"))
            nb.flush()

            res["cells"] = bench_cells(nb, uri, cells, hand_cells)
            res["durable"] = bench_durable(nb, cells)
            res["durable"]["finished_runs"] = finished_runs(uri, TRACKED_EXPERIMENT, "burst-")
            assert res["durable"]["finished_runs"] == cells, res["durable"]
            res["cells"]["finished_runs"] = finished_runs(uri, TRACKED_EXPERIMENT, "bench-")
            assert res["cells"]["finished_runs"] == cells, res["cells"]
            res["cells"]["finished_hand_runs"] = finished_runs(uri, "bench-hand", "hand-") - 1
            assert res["cells"]["finished_hand_runs"] == res["cells"]["hand_cells"]
            if args.breakdown:
                res["breakdown"] = bench_breakdown(nb, max(10, cells // 2))
            if args.profile:
                res["profile"] = profile_tracked(nb, 5)

            from nbmlops.core.tracking.session import get_tracker

            res["ship_stats"] = get_tracker().shipper.stats.to_dict()
            with nb.quiet():
                nb.shell.run_line_magic("unload_ext", "nbmlops")
            del os.environ["NBMLOPS_SHIP"]

        console.print("section 3: digest throughput")
        rows, notes = bench_digest(args.quick)
        res["digest"] = {"rows": rows, "notes": notes}
        res["load_ext"] = bench_load_ext(project, repeat)
    except BaseException:
        console.print(f"[red]failed; cell output is in {log_path}[/red]")
        args.keep = True
        raise
    finally:
        os.chdir(BENCH_DIR)
        if not args.keep:
            shutil.rmtree(project, ignore_errors=True)

    console.print()
    if "profile" in res:
        console.print("[bold]cProfile of 5 tracked cells (main thread, cumulative)[/bold]")
        console.print(res["profile"], markup=False, highlight=False)
    stats = res["ship_stats"]
    console.print(
        f"shipper: {stats['runs_finished']} runs, {stats['models']} models, "
        f"{stats['retries']} retries, last error: {stats['last_error']}, "
        f"part errors: {stats['part_errors'] or 'none'}"
    )
    res["goals"] = report(res, console)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(res, indent=2, default=str))
    console.print(f"results written to {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    try:
        import nbmlops  # noqa: F401
    except ImportError:  # running from a checkout without `pip install -e .`
        sys.path.insert(0, str(BENCH_DIR.parent / "src"))
    sys.exit(main())
