"""Drift speed and memory: nbmlops.monitor against Evidently's DataDriftPreset, side by side.

1. Drift of 1,000,000 current rows against 1,000,000 reference rows, 20 features (15
   numeric, 5 categorical; 3 numeric and 1 categorical shifted): nbmlops in this process,
   Evidently 0.7.x in its own virtualenv (``/work/benchenv/evidently``, created here with
   ``python -m venv`` + pip when missing; override with ``EVIDENTLY_VENV``) as a subprocess
   that imports Evidently and reads the frames before its clock starts. Both sides run
   their import and a warm-up first. Prints both times, the ratio and the per-feature
   verdicts wherever both used the same test.
2. Drift over 30 days of a prediction log from its hourly profiles (720 windows), for a log
   of 1,000,000 and one of 10,000,000 rows: each measured in a fresh process (time of the
   drift, peak RSS of the process), so memory that grows with rows would show.

Run: ``.venv/bin/python bench/bench_monitor.py`` (``--rows 100000`` for a quick run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

NUMERIC = [f"n{i:02d}" for i in range(15)]
CATEGORICAL = [f"c{i}" for i in range(5)]
SHIFTED = ["n00", "n01", "n02", "c0"]
VENV = Path(os.environ.get("EVIDENTLY_VENV", "/work/benchenv/evidently"))
WINDOWS = 30 * 24  # hourly profiles over 30 days

EVIDENTLY_SCRIPT = r"""
import json, sys, time
import pandas as pd
ref = pd.read_parquet(sys.argv[1]); cur = pd.read_parquet(sys.argv[2])
numeric, categorical = json.loads(sys.argv[3]), json.loads(sys.argv[4])
for c in categorical:
    ref[c] = ref[c].astype(str); cur[c] = cur[c].astype(str)
t0 = time.perf_counter()
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
import_s = time.perf_counter() - t0
dd = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)

def run(r, c):
    report = Report([DataDriftPreset()])
    return report.run(Dataset.from_pandas(c, data_definition=dd), Dataset.from_pandas(r, data_definition=dd))

run(ref.head(2000), cur.head(2000))  # warm-up: lazy imports inside Evidently
t0 = time.perf_counter()
snap = run(ref, cur)
seconds = time.perf_counter() - t0
out = {"import_seconds": import_s, "seconds": seconds, "features": {}}
for m in snap.dict()["metrics"]:
    cfg = m.get("config", {})
    if cfg.get("type", "").endswith("ValueDrift"):
        method, thr, value = cfg["method"], cfg["threshold"], m["value"]
        drifted = value < thr if "p_value" in method else value >= thr
        out["features"][cfg["column"]] = {"method": method, "value": value, "drifted": bool(drifted)}
    elif cfg.get("type", "").endswith("DriftedColumnsCount"):
        out["share"] = m["value"]["share"]
print(json.dumps(out))
"""

PROFILE_SCRIPT = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from nbmlops.core.monitor.drift import drift_of_summaries
from nbmlops.core.monitor.profile_store import ProfileStore
import datasketches, scipy.stats, scipy.spatial.distance  # noqa: F401  imports not timed
imports = time.perf_counter() - t0
home, since = sys.argv[1], float(sys.argv[2])
runs = []
for _ in range(3):  # the first run also pays scipy's and pandas' first-call costs
    t0 = time.perf_counter()
    store = ProfileStore(home)
    cur = store.merged("churn", since=since)
    ref = store.merged("training")
    read_merge = time.perf_counter() - t0
    report = drift_of_summaries({c: (ref.columns[c].summary(), cur.columns[c].summary()) for c in ref.columns})
    runs.append((time.perf_counter() - t0, read_merge))
seconds, read_merge = min(runs)
cold = runs[0][0]
# VmHWM: this process's own peak (ru_maxrss would carry the parent's over the exec)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"seconds": seconds, "cold_seconds": cold, "read_merge_seconds": read_merge, "imports": imports, "rows": cur.rows,
                  "windows": len(store.windows("churn", since=since)), "drifted": report.drifted,
                  "peak_rss_mb": int(hwm) / 1024}))
"""


def frames(n: int, seed: int, shifted: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    for i, name in enumerate(NUMERIC):
        shift = 0.3 if shifted and name in SHIFTED else 0.0
        if i % 3 == 0:
            cols[name] = rng.normal(shift, 1.0, n)
        elif i % 3 == 1:
            cols[name] = rng.lognormal(shift, 0.8, n)
        else:
            cols[name] = rng.gamma(2.0 + shift * 3, 1.0, n)
    for j, name in enumerate(CATEGORICAL):
        k = 4 + 3 * j
        p = np.linspace(1, 2, k)
        if shifted and name in SHIFTED:
            p = p[::-1] ** 2
        cols[name] = pd.Categorical.from_codes(
            rng.choice(k, n, p=p / p.sum()), [f"v{v}" for v in range(k)]
        )
    return pd.DataFrame(cols)


def ensure_evidently() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} (Evidently 0.7.x, pandas < 2.4) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "evidently>=0.7,<0.8",
                "pandas<2.4",
                "pyarrow",
            ],
            check=True,
        )
    return python


def bench_drift(rows: int, work: Path) -> dict:
    from nbmlops.core.monitor.drift import drift

    print(f"generating 2 x {rows:,} rows x 20 features ...", flush=True)
    ref, cur = frames(rows, 1, False), frames(rows, 2, True)
    ref.to_parquet(work / "ref.parquet")
    cur.to_parquet(work / "cur.parquet")
    drift(ref.head(2000), cur.head(2000))  # warm-up: scipy's lazy imports
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        ours = drift(ref, cur)
        times.append(time.perf_counter() - t0)
    python = ensure_evidently()
    proc = subprocess.run(
        [str(python), "-c", EVIDENTLY_SCRIPT, str(work / "ref.parquet"), str(work / "cur.parquet"),
         json.dumps(NUMERIC), json.dumps(CATEGORICAL)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"Evidently failed:\n{proc.stderr[-3000:]}")
    ev = json.loads(proc.stdout.strip().splitlines()[-1])
    same = {"Wasserstein distance (normed)": "wasserstein", "Jensen-Shannon distance": "jensenshannon",
            "K-S p_value": "ks", "chi-square p_value": "chi2"}  # fmt: skip
    table = ours.features.set_index("feature")
    compared, agree, lines = 0, 0, []
    for name, e in ev["features"].items():
        mine = table.loc[name]
        if same.get(e["method"]) == mine["test"]:
            compared += 1
            agree += int(bool(mine["drifted"]) == e["drifted"])
        lines.append(
            f"  {name:4} {mine['test']:>13} {mine['score']:9.4f} {'DRIFT' if mine['drifted'] else '-':>5}"
            f"   | {e['method']:>29} {e['value']:9.4f} {'DRIFT' if e['drifted'] else '-':>5}"
        )
    return {"ours": min(times), "evidently": ev["seconds"], "evidently_import": ev["import_seconds"],
            "compared": compared, "agree": agree, "lines": lines, "ours_drifted": ours.drifted,
            "evidently_share": ev.get("share"), "ours_share": ours.drift_share}  # fmt: skip


def build_profiles(home: Path, total_rows: int, reference: pd.DataFrame) -> tuple[float, float]:
    """720 hourly profiles of ``total_rows`` rows of traffic, as update_profiles writes them
    (profile_frame per window, one transaction a window); returns (seconds, since)."""
    from nbmlops.core.monitor.profile import profile_frame
    from nbmlops.core.monitor.profile_store import ProfileStore
    from nbmlops.core.monitor.summary import feature_kinds

    store = ProfileStore(home)
    kinds, _ = feature_kinds(
        reference, list(reference.columns), numeric=None, categorical=None, categorical_max=50
    )
    end = (time.time() // 3600) * 3600
    since = end - WINDOWS * 3600
    ref_prof = profile_frame(reference, kinds=kinds, start=since - 3600, end=since)
    store.write("training", 1, ref_prof)
    per = total_rows // WINDOWS
    t0 = time.perf_counter()
    items = []
    for w in range(WINDOWS):
        window = frames(per, 100 + w, shifted=w >= WINDOWS // 2)
        start = since + w * 3600
        items.append(
            ("churn", 1, profile_frame(window, kinds=kinds, start=start, end=start + 3600))
        )
    store.write_many(items)
    return time.perf_counter() - t0, since


def bench_profiles(total_rows: int, work: Path) -> dict:
    home = work / f"home-{total_rows}"
    seconds, since = build_profiles(home, total_rows, frames(200_000, 7, False))
    proc = subprocess.run(
        [sys.executable, "-c", PROFILE_SCRIPT, str(home), str(since)],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["build_seconds"] = seconds
    out["db_mb"] = (home / "predictions" / "profiles.db").stat().st_size / 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="rows per side of the drift comparison"
    )
    parser.add_argument("--log-rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--skip-evidently", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        work = Path(tmp)
        d = None
        if not args.skip_evidently:
            d = bench_drift(args.rows, work)
            print(
                f"\ndrift of {args.rows:,} vs {args.rows:,} rows, 20 features (imports excluded on both sides)"
            )
            print(
                f"  nbmlops.monitor.drift      {d['ours']:8.2f} s   drifted: {', '.join(d['ours_drifted'])}"
            )
            print(
                f"  Evidently DataDriftPreset  {d['evidently']:8.2f} s   (its import: {d['evidently_import']:.1f} s, excluded)"
            )
            print(f"  ratio                      {d['evidently'] / d['ours']:8.1f} x")
            print(
                f"  same test on {d['compared']} of 20 features; same verdict on {d['agree']} of them"
            )
            print("  feature   ours: test, score, verdict      | Evidently: method, value, verdict")
            print("\n".join(d["lines"]))
        prof = {}
        for n in args.log_rows:
            prof[n] = bench_profiles(n, work)
            p = prof[n]
            print(
                f"\n30 days of a {n:,}-row prediction log from {p['windows']} hourly profiles: drift in "
                f"{p['seconds']:.3f} s best of 3 (reading + merging {p['read_merge_seconds']:.3f} s; first run "
                f"{p['cold_seconds']:.3f} s), peak RSS {p['peak_rss_mb']:.0f} MB (imports {p['imports']:.1f} s, "
                f"excluded); profiles.db {p['db_mb']:.1f} MB; profiling the 720 windows took "
                f"{p['build_seconds']:.1f} s; drifted: {', '.join(p['drifted'])}"
            )
        print("\nGOALS")
        if d is not None:
            ratio = d["evidently"] / d["ours"]
            print(
                f"  [{'x' if ratio >= 20 else ' '}] drift >= 20x faster than Evidently: {ratio:.1f}x"
            )
            print(
                f"  [{'x' if d['agree'] == d['compared'] else ' '}] same verdict where the test is the same: {d['agree']}/{d['compared']}"
            )
        for n, p in prof.items():
            print(
                f"  [{'x' if p['seconds'] < 1 else ' '}] 30 days of {n:,} rows from profiles < 1 s: {p['seconds']:.3f} s"
            )
        if len(prof) >= 2:
            sizes = sorted(prof)
            a, b = prof[sizes[0]]["peak_rss_mb"], prof[sizes[-1]]["peak_rss_mb"]
            print(
                f"  [{'x' if b <= a * 1.1 else ' '}] memory flat in rows: peak RSS {a:.0f} MB ({sizes[0]:,}) vs {b:.0f} MB ({sizes[-1]:,})"
            )
        print(
            f"  (this process's peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)"
        )


if __name__ == "__main__":
    main()
