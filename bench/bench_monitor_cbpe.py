"""Estimated performance (CBPE) of 1,000,000 predictions: nbmlops against NannyML.

The same data for both: a binary classifier whose scores are overconfident (the true
probability is sigmoid(2 s), the model says sigmoid(3 s)), so both calibrate with isotonic
regression. A reference of ``--reference`` labelled predictions (s ~ N(0, 2)) and an analysis
set of ``--rows`` predictions whose first half is like the reference and whose second half
shifts towards the decision boundary (s ~ N(0, 0.5)), cut into chunks of ``--chunk`` rows.
Both estimate accuracy, F1 and ROC AUC per chunk.

NannyML runs in its own virtualenv outside the project (``--nannyml-env``, default
/work/benchenv/nannyml, created with ``pip install nannyml==0.13.1 statsmodels`` when
missing), in its own process, which imports NannyML and reads the data before its clock
starts: its import time is not counted. Each side's time is fit (calibration on the
reference) plus estimate (every chunk), best of ``--repeat``, wall clock and CPU time (the
machine may be shared: CPU time is what load from other processes touches least); nbmlops
runs before and after NannyML.

    .venv/bin/python bench/bench_monitor_cbpe.py             # 1,000,000 rows
    .venv/bin/python bench/bench_monitor_cbpe.py --rows 200000 --chunk 20000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

NANNYML_VERSION = "0.13.1"
METRICS = ("accuracy", "f1", "roc_auc")

# Runs inside NannyML's virtualenv: reads the data, then times fit + estimate.
NANNYML_SIDE = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd
import nannyml as nml

folder, chunk, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ref = pd.read_parquet(f"{folder}/reference.parquet")
ana = pd.read_parquet(f"{folder}/analysis.parquet")
best, cpu, values = None, None, None
for _ in range(repeat):
    began, began_cpu = time.perf_counter(), time.process_time()
    est = nml.CBPE(
        y_pred_proba="proba", y_pred="pred", y_true="label", problem_type="classification_binary",
        metrics=["roc_auc", "f1", "accuracy"], chunk_size=chunk,
    )
    est.fit(ref)
    res = est.estimate(ana).filter(period="analysis").to_df()
    seconds, cpu_s = time.perf_counter() - began, time.process_time() - began_cpu
    best = seconds if best is None else min(best, seconds)
    cpu = cpu_s if cpu is None else min(cpu, cpu_s)
    values = {m: res[(m, "value")].tolist() for m in ("accuracy", "f1", "roc_auc")}
print(json.dumps({"seconds": best, "cpu": cpu, "values": values, "version": nml.__version__}))
"""


def make_data(rows: int, reference: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def draw(n: int, scale: np.ndarray | float) -> pd.DataFrame:
        s = rng.normal(size=n) * scale
        label = (rng.random(n) < 1 / (1 + np.exp(-2 * s))).astype("int64")
        proba = 1 / (1 + np.exp(-3 * s))
        return pd.DataFrame(
            {"proba": proba, "pred": (proba >= 0.5).astype("int64"), "label": label}
        )

    scale = np.where(np.arange(rows) < rows // 2, 2.0, 0.5)
    return draw(reference, 2.0), draw(rows, scale)


def ensure_nannyml(env: Path) -> Path:
    python = env / "bin" / "python"
    if not python.exists():
        print(f"creating NannyML's environment in {env} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                f"nannyml=={NANNYML_VERSION}",
                "statsmodels",
            ],
            check=True,
        )
    return python


def run_nbmlops(
    ref: pd.DataFrame, ana: pd.DataFrame, chunk: int, repeat: int
) -> tuple[float, dict]:
    from nbmlops.core.monitor.cbpe import CBPE

    y_ref = ref["label"].to_numpy()
    p_ref = ref["proba"].to_numpy()
    p_ana = ana["proba"].to_numpy()
    pred = ana["pred"].to_numpy()
    groups = np.arange(len(ana)) // chunk
    CBPE.fit(y_ref[:1000], np.column_stack([1 - p_ref, p_ref])[:1000], [0, 1])  # imports
    best, cpu, values = None, None, None
    for _ in range(repeat):
        began, began_cpu = time.perf_counter(), time.process_time()
        cbpe = CBPE.fit(y_ref, np.column_stack([1 - p_ref, p_ref]), [0, 1])
        est = cbpe.estimate(pred, np.column_stack([1 - p_ana, p_ana]), groups)
        seconds, cpu_s = time.perf_counter() - began, time.process_time() - began_cpu
        best = seconds if best is None else min(best, seconds)
        cpu = cpu_s if cpu is None else min(cpu, cpu_s)
        values = {m: est[m].tolist() for m in METRICS}
    assert best is not None and cpu is not None and values is not None
    return best, cpu, values


def realized(ana: pd.DataFrame, chunk: int) -> dict[str, list[float]]:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    out: dict[str, list[float]] = {m: [] for m in METRICS}
    for start in range(0, len(ana), chunk):
        part = ana.iloc[start : start + chunk]
        out["accuracy"].append(accuracy_score(part.label, part.pred))
        out["f1"].append(f1_score(part.label, part.pred))
        out["roc_auc"].append(roc_auc_score(part.label, part.proba))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--nannyml-env", type=Path, default=Path("/work/benchenv/nannyml"))
    args = parser.parse_args()
    if args.rows % args.chunk:
        parser.error("--rows must be a multiple of --chunk (NannyML folds a short last chunk)")

    ref, ana = make_data(args.rows, args.reference)
    python = ensure_nannyml(args.nannyml_env)
    print(f"{args.rows:,} predictions in chunks of {args.chunk:,}; reference {args.reference:,}")

    # nbmlops before and after NannyML, best of both: other load on the machine touches both
    ours_s, ours_cpu, ours = run_nbmlops(ref, ana, args.chunk, args.repeat)
    with tempfile.TemporaryDirectory(prefix="bench-cbpe-") as tmp:
        ref.to_parquet(f"{tmp}/reference.parquet")
        ana.to_parquet(f"{tmp}/analysis.parquet")
        env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}
        done = subprocess.run(
            [str(python), "-c", NANNYML_SIDE, tmp, str(args.chunk), str(args.repeat)],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"NannyML failed:\n{done.stderr[-3000:]}")
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    again_s, again_cpu, _ = run_nbmlops(ref, ana, args.chunk, args.repeat)
    ours_s, ours_cpu = min(ours_s, again_s), min(ours_cpu, again_cpu)
    truth = realized(ana, args.chunk)

    print(
        f"\n{'chunk':>5}  "
        + "  ".join(f"{m + ' nbmlops':>16} {'NannyML':>8} {'realized':>8}" for m in METRICS)
    )
    for i in range(len(ours["accuracy"])):
        cells = [
            f"{ours[m][i]:16.4f} {theirs['values'][m][i]:8.4f} {truth[m][i]:8.4f}" for m in METRICS
        ]
        print(f"{i:5d}  " + "  ".join(cells))
    diff = max(
        abs(a - b) for m in METRICS for a, b in zip(ours[m], theirs["values"][m], strict=True)
    )
    err_ours = max(abs(a - b) for m in METRICS for a, b in zip(ours[m], truth[m], strict=True))
    err_theirs = max(
        abs(a - b) for m in METRICS for a, b in zip(theirs["values"][m], truth[m], strict=True)
    )
    ratio = theirs["seconds"] / ours_s
    cpu_ratio = theirs["cpu"] / ours_cpu
    print(
        f"\nnbmlops CBPE (fit + estimate): {ours_s:.3f} s wall, {ours_cpu:.3f} s CPU"
        f"\nNannyML {theirs['version']} CBPE (fit + estimate, import excluded): "
        f"{theirs['seconds']:.3f} s wall, {theirs['cpu']:.3f} s CPU"
        f"\nratio NannyML / nbmlops: {ratio:.1f}x wall, {cpu_ratio:.1f}x CPU (best of {args.repeat})"
        f"\nmax |nbmlops - NannyML| over {len(METRICS)} metrics x {len(ours['accuracy'])} chunks: "
        f"{diff:.5f}"
        f"\nmax |estimate - realized|: nbmlops {err_ours:.4f}, NannyML {err_theirs:.4f}"
    )
    print("\nGOALS")
    for what, value in (("wall clock", ratio), ("CPU time", cpu_ratio)):
        verdict = "MET" if value >= 5 else "MISSED"
        print(f"  speed: >= 5x faster than NannyML ({what:10s}) {value:6.1f}x  {verdict}")
    print(
        f"  agreement: max difference <= 0.01 ....... {diff:.5f}  {'MET' if diff <= 0.01 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
