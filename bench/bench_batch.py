"""Batch runs of real notebooks, plain against tracked (every code cell under ``%%track``),
with plain papermill and with ``nbmlops run``, side by side.

The corpus is a public project's notebooks, not written for nbmlops: Kevin Markham's
scikit-learn video series (iris, KNN, logistic regression, cross-validation, grid search,
classification metrics). Get it once, then pass the folder::

    git clone https://github.com/justmarkham/scikit-learn-videos /work/benchcorpus/scikit-learn-videos
    .venv/bin/python bench/bench_batch.py /work/benchcorpus/scikit-learn-videos

Notebooks that fail plain (they need the network, or an API scikit-learn has removed) are
listed and skipped. Goal: a tracked batch run at most 1.2x the plain run (median over the
notebooks), with every run in MLflow when ``nbmlops run`` returns, and on its way through a
detached shipper when plain papermill returns (the time until it is in MLflow is printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

GOAL_RATIO = 1.2
BIN = Path(sys.executable).parent


def tracked_copy(src: Path, dst: Path, experiment: str) -> int:
    """``src`` with ``%load_ext nbmlops`` first and every code cell under ``%%track``; the
    number of tracked cells."""
    nb = nbformat.read(str(src), as_version=4)
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if cell.source.lstrip().startswith("%%"):
            continue  # another cell magic owns the cell
        cell.source = f"%%track -e {experiment}\n{cell.source}"
        count += 1
    nb.cells.insert(0, nbformat.v4.new_code_cell("%load_ext nbmlops"))
    nbformat.write(nb, str(dst))
    return count


def papermill(nb: Path, out: Path, cwd: Path) -> tuple[float, bool, str]:
    cmd = [sys.executable, "-m", "papermill", str(nb), str(out), "-k", "python3"]
    cmd += ["--cwd", str(cwd), "--no-progress-bar", "--execution-timeout", "600"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    return time.perf_counter() - t0, proc.returncode == 0, proc.stderr[-2000:]


def nbmlops_run(nb: Path, out: Path, cwd: Path) -> tuple[float, bool, str]:
    cmd = [str(BIN / "nbmlops"), "run", str(nb), "-o", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    return time.perf_counter() - t0, proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]


def finished_runs(project: Path, experiment: str) -> tuple[int, int]:
    """(FINISHED runs, all runs) of ``experiment`` in the project's store, read by a plain
    MlflowClient in a subprocess so this process never imports MLflow."""
    code = (
        "import json,sys\nfrom mlflow import MlflowClient\n"
        f"c = MlflowClient('sqlite:///{project}/.nbmlops/mlflow.db')\n"
        f"e = c.get_experiment_by_name({experiment!r})\n"
        "r = [] if e is None else c.search_runs([e.experiment_id], max_results=5000)\n"
        "print(json.dumps([sum(x.info.status == 'FINISHED' for x in r), len(r)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        done, total = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return 0, 0
    return int(done), int(total)


def wait_handed_off(project: Path, timeout: float = 600) -> float:
    """Seconds until no segment handed to a detached shipper is left in the journal."""
    journal = project / ".nbmlops" / "journal"
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if not any(m.with_suffix(".jsonl").exists() for m in journal.glob("*.handoff")):
            break
        time.sleep(0.1)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", default="/work/benchcorpus/scikit-learn-videos")
    ap.add_argument("--only", nargs="*", help="notebook names to run (default: all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each; the median counts")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    notebooks = sorted(corpus.glob("*.ipynb")) if corpus.is_dir() else []
    if args.only:
        notebooks = [n for n in notebooks if n.name in args.only or n.stem in args.only]
    if not notebooks:
        print(
            f"no notebooks in {corpus}. Get the corpus with:\n  git clone "
            "https://github.com/justmarkham/scikit-learn-videos "
            "/work/benchcorpus/scikit-learn-videos"
        )
        return 2

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    project = work / "project"
    shutil.copytree(corpus, project, ignore=shutil.ignore_patterns(".git"))
    (project / "nbmlops.yaml").write_text("{}\n")
    (project / "out").mkdir()
    env_note = os.environ.get("NBMLOPS_SHIP", "auto")
    print(f"corpus {corpus} ({len(notebooks)} notebooks), project {project}, ship: {env_note}")
    print(
        f"{'notebook':34} {'cells':>5} {'pm plain':>9} {'pm track':>9} {'ratio':>6} "
        f"{'->MLflow':>9} {'run plain':>10} {'run track':>10} {'ratio':>6} {'in MLflow':>10}"
    )
    pm_ratios, run_ratios, all_in = [], [], True
    skipped = []
    for src in notebooks:
        name = src.stem
        exp = f"bench-{name}"
        tracked = project / f"{name}.tracked.ipynb"
        cells = tracked_copy(src, tracked, exp)
        if not cells:
            skipped.append((name, "no code cell to track"))
            continue
        plain = project / src.name
        times: dict[str, list[float]] = {k: [] for k in ("pp", "pt", "ship", "rp", "rt")}
        failed = None
        done = 0
        ok1 = ok2 = True
        for i in range(args.repeat):
            t, ok, err = papermill(plain, project / "out" / f"{name}.plain.ipynb", project)
            if not ok:
                failed = err.strip().splitlines()[-1] if err.strip() else "failed"
                break
            times["pp"].append(t)
            t, ok, err = papermill(tracked, project / "out" / f"{name}.track.ipynb", project)
            if not ok:
                failed = "tracked run failed: " + err.strip().splitlines()[-1]
                break
            times["pt"].append(t)
            times["ship"].append(wait_handed_off(project))
            # `nbmlops run`: its own experiment per repeat, so what it shipped counts apart.
            exp_run = f"{exp}-run{i}"
            tracked_run = project / f"{name}.tracked-run.ipynb"
            tracked_copy(src, tracked_run, exp_run)
            t, ok1, _ = nbmlops_run(plain, project / "out" / f"{name}.run-plain.ipynb", project)
            times["rp"].append(t)
            t, ok2, err = nbmlops_run(
                tracked_run, project / "out" / f"{name}.run-track.ipynb", project
            )
            times["rt"].append(t)
            done, total = finished_runs(project, exp_run)
            all_in = all_in and ok2 and done == cells and total == cells
        if failed:
            skipped.append((name, failed))
            continue
        t_plain, t_track, t_ship, r_plain, r_track = (
            statistics.median(times[k]) for k in ("pp", "pt", "ship", "rp", "rt")
        )
        pm_ratios.append(t_track / t_plain)
        if ok1 and ok2:
            run_ratios.append(r_track / r_plain)
        print(
            f"{name:34} {cells:5d} {t_plain:8.1f}s {t_track:8.1f}s {t_track / t_plain:5.2f}x "
            f"{t_ship:8.1f}s {r_plain:9.1f}s {r_track:9.1f}s {r_track / r_plain:5.2f}x "
            f"{done:>4}/{cells:<5}"
        )
    for name, why in skipped:
        print(f"skipped {name}: {why[:150]}")
    if not pm_ratios:
        print("no notebook ran")
        return 1
    pm_med = statistics.median(pm_ratios)
    run_med = statistics.median(run_ratios) if run_ratios else float("nan")
    print("\nGOALS")
    print(
        f"  papermill, tracked/plain median {pm_med:.2f}x (goal <= {GOAL_RATIO}x): "
        f"{'MET' if pm_med <= GOAL_RATIO else 'NOT MET'}"
    )
    print(
        f"  nbmlops run, tracked/plain median {run_med:.2f}x (goal <= {GOAL_RATIO}x): "
        f"{'MET' if run_med <= GOAL_RATIO else 'NOT MET'}"
    )
    print(
        f"  every tracked cell FINISHED in MLflow when `nbmlops run` returned: "
        f"{'MET' if all_in else 'NOT MET'}"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
