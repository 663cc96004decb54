"""Monitoring at scale: the labels join and realized performance on 1,000,000 and 5,000,000
logged predictions, before (the per-record Python loops of the previous version) and after
(whole columns), and drift plus performance on a local Dask cluster of two worker processes
against this machine alone.

The prediction log is a real one (``<home>/predictions/predictions.db``, the gateway's
schema) of single-record classifier requests over a day, features x (numeric, shifted in the
second half) and c (categorical), class probabilities logged; labels arrive for every other
request. "Before" is the code of ``--baseline`` (a git commit), read with ``git show`` into
a temporary module, run on the same log side by side; both sides' labels and tables are
compared, and must be equal.

    .venv/bin/python bench/bench_monitor_scale.py                      # 1M and 5M
    .venv/bin/python bench/bench_monitor_scale.py --sizes 1000000,2000000
    .venv/bin/python bench/bench_monitor_scale.py --sizes 200000 --dask-size 200000

Memory: the "before" side holds a dict per record on top of the parsed log; at 5,000,000
predictions the process passes 16 GB, so on a shared machine run 1M and 2M.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "18ec529"  # the last commit with the per-record loops
COLUMNS = (
    "request_id", "route", "ts", "model", "version", "status", "latency_ms", "inputs",
    "outputs", "error", "proba",
)  # fmt: skip
DAY = 86400.0
T0 = 1_764_547_200.0  # 2025-12-01 00:00 UTC


def old_modules(commit: str, folder: Path) -> tuple[ModuleType, ModuleType]:
    """labels.py and performance.py of ``commit`` as modules (performance reading labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    mods = []
    for name in ("labels", "performance"):
        text = subprocess.run(
            ["git", "show", f"{commit}:src/nbmlops/core/monitor/{name}.py"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        text = text.replace("from nbmlops.core.monitor.labels import", "from old_labels import")
        path = folder / f"old_{name}.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location(f"old_{name}", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[f"old_{name}"] = mod
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods[0], mods[1]


def write_log(home: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` single-record requests over a day into a fresh log; returns the labels of
    every other request (request_id, label)."""
    rng = np.random.default_rng(seed)
    folder = home / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(folder / "predictions.db")
    conn.executescript(
        """
        CREATE TABLE predictions (
            request_id TEXT NOT NULL, route TEXT NOT NULL, ts REAL NOT NULL, model TEXT,
            version INTEGER, status INTEGER NOT NULL, latency_ms REAL, inputs TEXT,
            outputs TEXT, error TEXT, proba TEXT, PRIMARY KEY (request_id, route));
        CREATE INDEX predictions_ts ON predictions (ts);
        PRAGMA journal_mode=WAL;
        """
    )
    ts = T0 + np.sort(rng.uniform(0, DAY, n))
    x = rng.normal(size=n) + (np.arange(n) >= n // 2)
    c = rng.choice(np.array(["a", "b", "c"]), n)
    p1 = 1 / (1 + np.exp(-x))
    pred = (p1 > 0.5).astype(int)
    truth = (rng.uniform(size=n) < p1).astype(int)
    ids = [f"req-{i:08d}" for i in range(n)]
    xs, cs, ps, preds, tss = x.tolist(), c.tolist(), p1.tolist(), pred.tolist(), ts.tolist()
    step = 500_000
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        rows = [
            (
                ids[i],
                "main",
                tss[i],
                "churn",
                1 + (i % 2),
                200,
                3.0,
                f'[{{"x":{xs[i]!r},"c":"{cs[i]}"}}]',
                f"[{preds[i]}]",
                None,
                f'{{"classes":[0,1],"p":[[{1 - ps[i]!r},{ps[i]!r}]]}}',
            )
            for i in range(lo, hi)
        ]
        conn.executemany(f"INSERT INTO predictions VALUES ({','.join('?' * 11)})", rows)
        conn.commit()
    conn.close()
    half = np.arange(0, n, 2)
    return pd.DataFrame({"request_id": [ids[i] for i in half], "label": truth[half]})


def clear_labels(home: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (home / "predictions" / f"labels.db{suffix}").unlink(missing_ok=True)


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """(result, wall seconds)."""
    began = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - began


def cpu_timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """(result, CPU seconds of this process): what load from other processes on a shared
    machine touches least."""
    began = time.process_time()
    out = fn(*args, **kwargs)
    return out, time.process_time() - began


def labels_and_performance(home: Path, labels: pd.DataFrame, old: tuple, new: tuple) -> dict:
    """Both sides' attach + scored frame + realized performance on the same log, in CPU
    seconds; ``read`` is one read of the log (the same code on both sides: attach and the
    scored frame read it once each)."""
    from nbmlops.core.serving.predlog import read_prediction_log

    out: dict = {}
    tables = {}
    stored = {}
    for side, (lab, perf) in (("before", old), ("after", new)):
        clear_labels(home)
        _, t_read = cpu_timed(read_prediction_log, home)
        report, t_attach = cpu_timed(lab.attach_labels, home, labels)
        scored, t_scored = cpu_timed(lab.scored_frame, home)
        table, t_perf = cpu_timed(perf.performance_table, scored, window=3600.0, estimate=False)
        stored[side] = lab.read_labels(home).drop(columns="labeled_at")
        tables[side] = table
        total = t_attach + t_scored + t_perf
        out[side] = {
            "attach": t_attach,
            "scored": t_scored,
            "performance": t_perf,
            "total": total,
            "read": t_read,
            "own": max(total - 2 * t_read, 1e-9),
            "added": report.added,
        }
        del scored
    pd.testing.assert_frame_equal(stored["before"], stored["after"])
    pd.testing.assert_frame_equal(tables["before"], tables["after"])
    out["same"] = True
    return out


def dask_side_by_side(home: Path, workers: int) -> dict:
    """Drift and realized performance of the whole log: this machine, then the cluster."""
    from distributed import Client, LocalCluster

    from nbmlops.api.monitor import drift
    from nbmlops.api.monitor_performance import performance
    from nbmlops.config import load_settings

    settings = load_settings(home.parent, home=home)
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"x": rng.normal(size=100_000), "c": rng.choice(["a", "b", "c"], 100_000)})
    window = {"since": T0, "until": T0 + DAY}
    local_drift, t_ld = timed(drift, ref, model="churn", settings=settings, **window)
    local_perf, t_lp = timed(performance, settings=settings, window="1h", estimate=False)
    with (
        LocalCluster(
            n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=None
        ) as lc,
        Client(lc) as client,
    ):
        client.run(lambda: __import__("nbmlops.core.monitor.distributed"))  # warm imports
        kw = {"settings": settings, "scheduler": client}
        dask_drift, t_dd = timed(drift, ref, model="churn", **kw, **window)
        dask_perf, t_dp = timed(performance, window="1h", estimate=False, **kw)
    pd.testing.assert_frame_equal(dask_drift.features, local_drift.features, rtol=1e-9)
    pd.testing.assert_frame_equal(dask_perf.table, local_perf.table, rtol=1e-9)
    return {
        "drift": (t_ld, t_dd),
        "performance": (t_lp, t_dp),
        "drifted": (local_drift.drifted, dask_drift.drifted),
        "same": True,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,5000000", help="predictions per run")
    parser.add_argument("--dask-size", type=int, default=1_000_000, help="0: skip Dask")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline", default=BASELINE, help="git commit of 'before'")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]

    from nbmlops.core.monitor import labels, performance

    tmp = Path(tempfile.mkdtemp(prefix="bench-monitor-scale-"))
    results: dict = {"sizes": {}}
    try:
        old = old_modules(args.baseline, tmp / "old")
        new = (labels, performance)
        for n in sizes:
            home = tmp / f"p{n}" / ".nbmlops"
            lab, t_write = timed(write_log, home, n)
            print(f"\n{n:,} predictions ({len(lab):,} labels), log written in {t_write:.1f} s")
            r = labels_and_performance(home, lab, old, new)
            results["sizes"][n] = r
            print(f"  {'CPU seconds':<44}{'before':>9}{'after':>9}{'ratio':>8}")
            for step, what in (
                ("attach", "labels join (attach_labels)"),
                ("scored", "scored frame (log + labels)"),
                ("performance", "realized performance per hour"),
                ("total", "total"),
                ("read", "  of which one read of the log (unchanged)"),
                ("own", "total less the two reads of the log"),
            ):
                b, a = r["before"][step], r["after"][step]
                print(f"  {what:<44}{b:>9.2f}{a:>9.2f}{b / a:>7.1f}x")
            print("  labels stored and performance tables: identical")
            if n == args.dask_size:
                d = dask_side_by_side(home, args.workers)
                results["dask"] = d
                print(f"  Dask LocalCluster({args.workers} processes) vs this machine:")
                for step in ("drift", "performance"):
                    here, there = d[step]
                    print(f"    {step:<14} here {here:6.2f} s  cluster {there:6.2f} s  "
                          f"ratio {here / there:4.2f}x")  # fmt: skip
                print(f"    drifted {d['drifted'][1]} on both; tables identical")
            shutil.rmtree(home.parent, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("\nGOALS")
    for n, r in results["sizes"].items():
        own = r["before"]["own"] / r["after"]["own"]
        total = r["before"]["total"] / r["after"]["total"]
        verdict = "PASS" if own >= 3 and r["same"] else "FAIL"
        print(
            f"  [{verdict}] labels join + realized performance on {n:,} predictions, beyond "
            f"reading the log: at least 3x less CPU than before, same results: {own:.1f}x "
            f"(with the log's reads, which parse its JSON and did not change: {total:.1f}x)"
        )
    if "dask" in results:
        d = results["dask"]
        print(
            f"  [{'PASS' if d['same'] else 'FAIL'}] drift and performance on the Dask cluster equal this machine's "
            f"(drifted {d['drifted'][1]}); cluster/here time: drift "
            f"{d['drift'][1] / d['drift'][0]:.2f}, performance "
            f"{d['performance'][1] / d['performance'][0]:.2f} (2 workers sharing this "
            "machine's cores: the cluster pays for moving summaries, gains on more machines)"
        )
    if args.json:
        print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
