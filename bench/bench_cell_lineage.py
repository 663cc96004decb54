"""What does the lineage of untracked cells add to each cell a user runs?

``%load_ext nbmlops`` records every executed cell (names read and bound, digests of the frames
and arrays among them). This script runs the same cells in one in-process IPython shell three
ways, side by side in one run, and reports the median wall time per cell:

* **plain**: nbmlops not loaded (the baseline);
* **loaded, lineage off**: ``%load_ext nbmlops`` with ``lineage: {untracked: false}``;
* **loaded**: ``%load_ext nbmlops`` with the default settings (lineage on).

Cells:

1. ``a = 1`` (nothing to digest: the AST analysis and one SQLite transaction);
2. a cell reading a 1,000 x 5 frame and binding a new one;
3. ``train_test_split`` of a 10,000 x 10 frame (binds four values);
4. a cell reading a ~1 GB frame (12.5M x 10 float64) and binding 1,000 rows of it, with the
   default ``lineage.max_digest_bytes`` (256 MiB: the big frame is recorded by shape and
   schema only) and with the limit raised to 2 GiB (the first read digests the whole frame;
   later reads find its digest in the identity cache);
5. a cell binding the ~1 GB frame to a new name, above and below the limit.

Besides the wall time per cell, the time spent inside nbmlops's own ``pre_run_cell`` and
``post_run_cell`` callbacks is measured (timers registered around them). The rest of the added
wall time is the interplay with IPython's own history thread, which writes and fsyncs
``history.sqlite`` after every cell (on a busy disk, with the lineage records' pages).

Goals: a few ms (<= 5 ms) added per small cell; a big frame costs <= 5 ms per cell in
nbmlops's callbacks above the limit (shape and schema only), and below it after its first
digest (cache).

    .venv/bin/python bench/bench_cell_lineage.py            # ~2-4 min, ~3.5 GB of memory
    .venv/bin/python bench/bench_cell_lineage.py --quick    # small cells only, ~30 s

Results are printed and written to ``bench/results/bench_cell_lineage.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "bench_cell_lineage.json"
GOAL_SMALL_MS = 5.0
GOAL_BIG_MS = 5.0

SETUP = """
import numpy as np, pandas as pd
from sklearn.model_selection import train_test_split
rng = np.random.default_rng(0)
x = pd.DataFrame(rng.normal(size=(1_000, 5)), columns=list("abcde"))
wide = pd.DataFrame(rng.normal(size=(10_000, 10)), columns=[f"f{i}" for i in range(10)])
"""
BIG = "big = pd.DataFrame(rng.normal(size=({rows}, 10)), columns=[f'g{{i}}' for i in range(10)])"

SMALL_CELLS = {
    "a = 1": "a = 1",
    "read 1k x 5 frame, bind one": "y = x.assign(f=x.a * 2)",
    "train_test_split 10k x 10": "X_train, X_test = train_test_split(wide, random_state=0)",
}
BIG_CELLS = {
    "read ~1 GB frame, bind 1k rows": "head = big.iloc[:1000]",
    "bind the ~1 GB frame to a new name": "alias = big",
}


def wait_for_children(timeout: float = 120) -> None:
    import psutil

    deadline = time.monotonic() + timeout
    me = psutil.Process()
    while me.children(recursive=True) and time.monotonic() < deadline:
        time.sleep(0.2)


class Bench:
    def __init__(self, project: Path):
        from IPython.core.interactiveshell import InteractiveShell

        self.project = project
        self.shell = InteractiveShell.instance()
        self.loaded = False
        self.hook_ms: list[float] = []
        self._marks: dict[str, float] = {}

    def cell(self, code: str) -> float:
        start = time.perf_counter()
        result = self.shell.run_cell(code, store_history=True)
        elapsed = time.perf_counter() - start
        if not result.success:
            raise SystemExit(f"cell failed: {code!r}: {result.error_in_exec}")
        return elapsed

    def configure(self, mode: str, max_digest_bytes: int | None = None) -> None:
        """mode: plain | off | on."""
        if self.loaded:
            self.shell.run_line_magic("unload_ext", "nbmlops")
            self.loaded = False
            wait_for_children()  # a detached shipper started at unload must not share the CPU
        settings: dict[str, Any] = {}
        if mode == "off":
            settings["lineage"] = {"untracked": False}
        elif max_digest_bytes is not None:
            settings["lineage"] = {"max_digest_bytes": max_digest_bytes}
        (self.project / "nbmlops.yaml").write_text(json.dumps(settings))  # JSON is YAML
        if mode != "plain":
            self.shell.run_line_magic("load_ext", "nbmlops")
            self.loaded = True
            from nbmlops.api.tracking import get_tracker

            get_tracker().flush(60)  # the shipper's start-up replay is not a cell's cost
            for _ in range(20):  # warm-up: imports, SQLite schema, page cache
                self.cell("warm = 1")

    def _start(self, *args: Any) -> None:
        self._marks["t"] = time.perf_counter()

    def _stop(self, *args: Any) -> None:
        self.hook_ms.append((time.perf_counter() - self._marks["t"]) * 1000)

    def measure(self, code: str, repeat: int) -> tuple[list[float], list[float]]:
        """Wall ms per cell, and ms in the run-cell callbacks per cell (pre + post)."""
        self.hook_ms = []
        events = ("pre_run_cell", "post_run_cell")
        for event in events:  # timers first and last around every callback
            self.shell.events.callbacks[event].insert(0, self._start)
            self.shell.events.callbacks[event].append(self._stop)
        try:
            times = [self.cell(code) * 1000 for _ in range(repeat)]
        finally:
            for event in events:
                self.shell.events.callbacks[event].remove(self._start)
                self.shell.events.callbacks[event].remove(self._stop)
        hooks = [a + b for a, b in zip(self.hook_ms[::2], self.hook_ms[1::2], strict=True)]
        return times, hooks


def run(args: argparse.Namespace) -> dict[str, Any]:
    project = Path(tempfile.mkdtemp(prefix="nbmlops-bench-lineage-"))
    os.chdir(project)
    bench = Bench(project)
    bench.cell(SETUP)
    results: dict[str, Any] = {"small": {}, "big": {}}
    # The modes take turns, round after round, so the machine's other load falls on all three.
    walls: dict[tuple[str, str], list[float]] = {}
    hooks: dict[tuple[str, str], list[float]] = {}
    per_round = max(1, args.repeat // args.rounds)
    for r in range(args.rounds):
        for mode in ("plain", "off", "on"):
            bench.configure(mode)
            for label, code in SMALL_CELLS.items():
                wall, hook = bench.measure(code, per_round)
                walls.setdefault((label, mode), []).extend(wall)
                hooks.setdefault((label, mode), []).extend(hook)
        print(f"  round {r + 1}/{args.rounds} done", flush=True)
    for (label, mode), wall in walls.items():
        results["small"].setdefault(label, {})[mode] = {
            "median_ms": statistics.median(wall),
            "hooks_ms": statistics.median(hooks[(label, mode)]),
            "runs": len(wall),
        }
    if args.quick:
        return results
    bench.configure("plain")
    t = bench.cell(BIG.format(rows=args.big_rows))
    nbytes = int(bench.shell.user_ns["big"].memory_usage(index=True).sum())
    results["big_bytes"] = nbytes
    print(f"  made the big frame: {nbytes / 1e9:.2f} GB in {t:.1f} s", flush=True)
    limits = {"above": None, "below": 2 * 2**30}  # the default 256 MiB; 2 GiB
    for label, code in BIG_CELLS.items():
        bench.configure("plain")
        wall, _ = bench.measure(code, args.big_repeat)
        entry: dict[str, Any] = {"plain": {"median_ms": statistics.median(wall)}}
        for where, limit in limits.items():
            bench.configure("on", limit)
            first = bench.cell(code) * 1000  # below the limit: the first read digests it all
            wall, hook = bench.measure(code, args.big_repeat)
            entry[where] = {
                "first_ms": first,
                "median_ms": statistics.median(wall),
                "hooks_ms": statistics.median(hook),
            }
        results["big"][label] = entry
        bench.shell.run_cell("alias = None; head = None", store_history=True)
        print(f"  {label} done", flush=True)
    bench.configure("plain")
    return results


def report(res: dict[str, Any]) -> list[dict[str, Any]]:
    print(
        "\nADDED TIME PER CELL (median ms; ratio = loaded / plain; in hooks = nbmlops's callbacks)"
    )
    print(
        f"  {'cell':<46} {'plain':>8} {'lin. off':>9} {'loaded':>8} {'added':>8} "
        f"{'ratio':>7} {'in hooks':>9}"
    )
    worst_wall = worst_hooks = 0.0
    for label, modes in res["small"].items():
        plain, off, on = (modes[m]["median_ms"] for m in ("plain", "off", "on"))
        worst_wall = max(worst_wall, on - plain)
        worst_hooks = max(worst_hooks, modes["on"]["hooks_ms"])
        print(
            f"  {label:<46} {plain:8.2f} {off:9.2f} {on:8.2f} {on - plain:8.2f} "
            f"{on / plain:6.2f}x {modes['on']['hooks_ms']:9.2f}"
        )
    for label, entry in res.get("big", {}).items():
        plain = entry["plain"]["median_ms"]
        for where in ("above", "below"):
            on = entry[where]["median_ms"]
            print(
                f"  {label + ' (' + where + ' limit)':<46} {plain:8.2f} {'':>9} {on:8.2f} "
                f"{on - plain:8.2f} {on / plain:6.2f}x {entry[where]['hooks_ms']:9.2f}"
            )
        first = entry["below"]["first_ms"] - plain
        if first > 0:
            gbps = res["big_bytes"] / 1e9 / (first / 1000)
            print(f"    below the limit, its first cell adds {first:.0f} ms ({gbps:.1f} GB/s)")

    goals: list[dict[str, Any]] = []

    def goal(name: str, value: float, target: float, text: str) -> None:
        ok = value <= target
        goals.append({"goal": name, "value": value, "target": target, "pass": ok})
        print(f"  {'PASS' if ok else 'FAIL'}  {text}: {value:.2f} ms (goal <= {target:g} ms)")

    print("\nGOALS")
    goal("small_cell_hooks_ms", worst_hooks, GOAL_SMALL_MS, "small cells, time in nbmlops (worst)")
    goal("small_cell_added_ms", worst_wall, GOAL_SMALL_MS, "small cells, added wall time (worst)")
    for label, entry in res.get("big", {}).items():
        for where, how in (("above", "shape and schema"), ("below", "digest from the cache")):
            goal(
                f"big_{where}_limit_hooks_ms[{label}]",
                entry[where]["hooks_ms"],
                GOAL_BIG_MS,
                f"{label}, {where} the limit ({how}), time in nbmlops",
            )
    return goals


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small cells only")
    p.add_argument("--repeat", type=int, default=300, help="runs of each small cell per mode")
    p.add_argument("--rounds", type=int, default=3, help="turns the three modes take")
    p.add_argument("--big-repeat", type=int, default=5, help="runs of each big-frame cell")
    p.add_argument("--big-rows", type=int, default=12_500_000, help="rows of the 10-column frame")
    args = p.parse_args()
    print(f"nbmlops cell lineage bench (python {sys.version.split()[0]})", flush=True)
    res = run(args)
    goals = report(res)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps({"results": res, "goals": goals}, indent=2))
    print(f"\nwritten to {RESULTS_FILE}")


if __name__ == "__main__":
    main()
