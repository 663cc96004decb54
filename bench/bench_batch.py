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
import re
import resource
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


# the cells a data scientist would wrap: they fit, predict or score a model
MODEL_CELL = re.compile(r"\.fit\(|\.predict\(|cross_val_score|metrics\.")


def tracked_copy(src: Path, dst: Path, experiment: str, mode: str = "every") -> int:
    """``src`` with ``%load_ext nbmlops`` first and its code cells under ``%%track``: every one
    (``every``, the stress case) or those that fit, predict or score a model (``models``);
    the number of tracked cells."""
    nb = nbformat.read(str(src), as_version=4)
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if cell.source.lstrip().startswith("%%"):
            continue  # another cell magic owns the cell
        if mode == "models" and not MODEL_CELL.search(cell.source):
            continue
        cell.source = f"%%track -e {experiment}\n{cell.source}"
        count += 1
    nb.cells.insert(0, nbformat.v4.new_code_cell("%load_ext nbmlops"))
    nbformat.write(nb, str(dst))
    return count


CPU: dict[str, list[float]] = {}  # what -> CPU seconds of each run (the process and its kernel)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(what: str, cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of ``cmd``; its CPU seconds (with the kernel it waited for) go to CPU,
    which a busy machine does not inflate the way it inflates wall time."""
    c0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - t0
    CPU.setdefault(what, []).append(_children_cpu() - c0)
    return wall, proc


def papermill(nb: Path, out: Path, cwd: Path, what: str = "") -> tuple[float, bool, str]:
    cmd = [sys.executable, "-m", "papermill", str(nb), str(out), "-k", "python3"]
    cmd += ["--cwd", str(cwd), "--no-progress-bar", "--execution-timeout", "600"]
    wall, proc = timed(what, cmd, cwd)
    return wall, proc.returncode == 0, proc.stderr[-2000:]


def nbmlops_run(nb: Path, out: Path, cwd: Path, what: str = "") -> tuple[float, bool, str]:
    cmd = [str(BIN / "nbmlops"), "run", str(nb), "-o", str(out)]
    wall, proc = timed(what, cmd, cwd)
    return wall, proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]


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
    print(f"corpus {corpus} ({len(notebooks)} notebooks), project {project}")
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        "every: every code cell tracked (the stress case); models: the cells that fit, "
        "predict or score a model.\nWall seconds (median of --repeat), and CPU seconds of the "
        "command with its kernel, which a busy machine inflates less."
    )
    print(
        f"{'notebook':30} {'cells':>9} {'pm plain':>9} {'pm every':>9} {'ratio':>6} "
        f"{'->MLflow':>9} {'run plain':>10} {'run every':>10} {'ratio':>6} "
        f"{'run models':>11} {'ratio':>6}  in MLflow"
    )
    ratios: dict[str, list[float]] = {"pm": [], "every": [], "models": []}
    cpu_ratios: dict[str, list[float]] = {"pm": [], "every": [], "models": []}
    all_in = True
    skipped = []
    for src in notebooks:
        name = src.stem
        plain = project / src.name
        copies = {}
        for mode in ("every", "models"):
            copies[mode] = project / f"{name}.{mode}.ipynb"
            copies[mode + "-cells"] = tracked_copy(src, copies[mode], f"bench-{name}", mode)
        if not copies["every-cells"]:
            skipped.append((name, "no code cell to track"))
            continue
        times: dict[str, list[float]] = {k: [] for k in ("pp", "pt", "ship", "rp", "re", "rm")}
        failed = None
        shipped = ""
        for i in range(args.repeat):
            t, ok, err = papermill(plain, project / "out" / f"{name}.plain.ipynb", project, "pp")
            if not ok:
                failed = err.strip().splitlines()[-1] if err.strip() else "failed"
                break
            times["pp"].append(t)
            t, ok, err = papermill(
                copies["every"], project / "out" / f"{name}.track.ipynb", project, "pt"
            )
            if not ok:
                failed = "tracked run failed: " + err.strip().splitlines()[-1]
                break
            times["pt"].append(t)
            times["ship"].append(wait_handed_off(project))
            t, ok, err = nbmlops_run(plain, project / "out" / f"{name}.rp.ipynb", project, "rp")
            if not ok:
                failed = "nbmlops run failed: " + err.strip().splitlines()[-1]
                break
            times["rp"].append(t)
            # `nbmlops run`: its own experiment per mode and repeat, so what it shipped counts
            for mode, key in (("every", "re"), ("models", "rm")):
                cells = copies[mode + "-cells"]
                if not cells:
                    continue
                exp_run = f"bench-{name}-{mode}-{i}"
                nb = project / f"{name}.{mode}-run.ipynb"
                tracked_copy(src, nb, exp_run, mode)
                t, ok, err = nbmlops_run(nb, project / "out" / f"{name}.{key}.ipynb", project, key)
                times[key].append(t)
                done, total = finished_runs(project, exp_run)
                all_in = all_in and ok and done == cells and total == cells
                shipped += f" {done}/{cells}"
        if failed:
            skipped.append((name, failed))
            continue
        med = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
        cpu = {
            k: statistics.median(CPU[k][-len(times[k]) :]) for k in times if times[k] and k in CPU
        }
        ratios["pm"].append(med["pt"] / med["pp"])
        ratios["every"].append(med["re"] / med["rp"])
        cpu_ratios["pm"].append(cpu["pt"] / cpu["pp"])
        cpu_ratios["every"].append(cpu["re"] / cpu["rp"])
        if times["rm"]:
            ratios["models"].append(med["rm"] / med["rp"])
            cpu_ratios["models"].append(cpu["rm"] / cpu["rp"])
        cells = f"{copies['every-cells']}/{copies['models-cells']}"
        print(
            f"{name:30} {cells:>9} {med['pp']:8.1f}s {med['pt']:8.1f}s "
            f"{med['pt'] / med['pp']:5.2f}x {med['ship']:8.1f}s {med['rp']:9.1f}s "
            f"{med['re']:9.1f}s {med['re'] / med['rp']:5.2f}x {med['rm']:10.1f}s "
            f"{med['rm'] / med['rp']:5.2f}x {shipped}"
        )
        print(
            f"{'  CPU s':30} {'':>9} {cpu['pp']:8.1f}s {cpu['pt']:8.1f}s "
            f"{cpu['pt'] / cpu['pp']:5.2f}x {'':>9} {cpu['rp']:9.1f}s {cpu['re']:9.1f}s "
            f"{cpu['re'] / cpu['rp']:5.2f}x "
            + (f"{cpu['rm']:10.1f}s {cpu['rm'] / cpu['rp']:5.2f}x" if "rm" in cpu else "")
        )
    for name, why in skipped:
        print(f"skipped {name}: {why[:150]}")
    if not ratios["pm"]:
        print("no notebook ran")
        return 1
    print(f"load average at end: {os.getloadavg()[0]:.1f}")

    def line(label: str, key: str) -> str:
        if not ratios[key]:
            return f"  {label}: no notebook"
        wall, cpu = statistics.median(ratios[key]), statistics.median(cpu_ratios[key])
        verdict = "MET" if wall <= GOAL_RATIO else "NOT MET"
        return (
            f"  {label}, tracked/plain median {wall:.2f}x wall (goal <= {GOAL_RATIO}x): "
            f"{verdict}; CPU {cpu:.2f}x"
        )

    print("\nGOALS")
    print(line("papermill, every cell tracked", "pm"))
    print(line("nbmlops run, model cells tracked", "models"))
    print(line("nbmlops run, every cell tracked (stress)", "every"))
    print(
        f"  every tracked cell FINISHED in MLflow when `nbmlops run` returned: "
        f"{'MET' if all_in else 'NOT MET'}"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
