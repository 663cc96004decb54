"""What does running a DAG of notebooks with nbmlops cost, next to running the same notebooks
one after another with the plain ``papermill`` CLI?

One run of a 6-step diamond of small notebooks, built in a fresh temp folder::

    make --> clean ---> daily ----.
       \\                          >--> report
        `-> enrich --> regions --'
              ^
         lookup.csv  (a file input)

``make`` writes 40,000 synthetic sales rows; the others read their inputs with pandas, do a
little work (filter, merge, group by) and write CSV or JSON. Both sides run the SAME notebooks
with the same parameters, each side in its own copy of the folder.

1. **Cold.** *papermill CLI*: ``.venv/bin/papermill in.ipynb out.ipynb -p NAME VALUE ...``
   subprocesses one after another in topological order (a new Python process and a new kernel
   per step, nothing tracked). *nbmlops*: ``run_pipeline`` in this process, the first run in a
   fresh project folder, timed from the call to its return (independent steps in parallel,
   kernels started ahead of need, every step recorded in MLflow; runs ship behind the return,
   so the time until they are in MLflow is shown too). Then the whole
   ``nbmlops pipeline run`` command in another fresh folder (process start to exit, shipping
   included). Goal: nbmlops cold at least 2.5x faster than the papermill CLI.
2. **Nothing changed.** The same pipeline again. Goal: under 1/20 of the cold run.
3. **One upstream input changed.** Every tax rate in ``lookup.csv`` goes up: only ``enrich``
   and the steps below it (``regions``, ``report``) may run. Then a region that no sale has is
   added: ``enrich`` runs, writes the same bytes, and the steps below it stay cached.
4. **Where the time goes**: importing papermill in a fresh process, starting a kernel until it
   answers, the step timeline of the cold run, the shipping wait and what a fresh project's
   first shipping pays (importing MLflow, creating its SQLite store). ``--profile`` adds each
   step's kernel start, papermill import, papermill run and kernel shutdown.

Telemetry is off everywhere. Results are printed and written to
``bench/results/bench_pipeline.json``.

    .venv/bin/python bench/bench_pipeline.py             # about a minute on 2 cores
    .venv/bin/python bench/bench_pipeline.py --jobs 4 --keep
    .venv/bin/python bench/bench_pipeline.py --profile   # per-step phases of the cold run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "bench_pipeline.json"
VENV_BIN = Path(sys.executable).parent
PAPERMILL = VENV_BIN / "papermill"
NBMLOPS = VENV_BIN / "nbmlops"

GOAL_COLD = 2.5  # papermill CLI / nbmlops cold >= 2.5
GOAL_NOTHING = 20  # nothing changed <= cold / 20

# --- the notebooks -------------------------------------------------------------------------
# step -> (parameters cell, code cells); every path parameter is an input or output below.
NOTEBOOKS: dict[str, tuple[str, list[str]]] = {
    "make": (
        'sales_csv = "out/sales.csv"  # output\nrows = 40000\nseed = 0',
        [
            "import numpy as np\nimport pandas as pd\nfrom pathlib import Path",
            "rng = np.random.default_rng(seed)\n"
            "sales = pd.DataFrame({\n"
            '    "order": np.arange(rows),\n'
            '    "day": rng.integers(0, 365, rows),\n'
            '    "region": rng.integers(0, 12, rows),\n'
            '    "quantity": rng.integers(1, 20, rows),\n'
            '    "price": rng.gamma(2.0, 15.0, rows).round(2),\n'
            "})\n"
            'sales.loc[rng.random(rows) < 0.02, "price"] = -1.0  # bad rows\n'
            "Path(sales_csv).parent.mkdir(parents=True, exist_ok=True)\n"
            "sales.to_csv(sales_csv, index=False)\n"
            "len(sales)",
        ],
    ),
    "clean": (
        'sales_csv = "out/sales.csv"  # input\nclean_csv = "out/clean.csv"  # output\n'
        "max_quantity = 15",
        [
            "import numpy as np\nimport pandas as pd",
            "sales = pd.read_csv(sales_csv)\n"
            "clean = sales[(sales.price > 0) & (sales.quantity <= max_quantity)].copy()\n"
            'clean["revenue"] = clean.price * clean.quantity\n'
            'clean["log_revenue"] = np.log1p(clean.revenue)\n'
            "clean.to_csv(clean_csv, index=False)\n"
            "len(sales) - len(clean)",
        ],
    ),
    "enrich": (
        'sales_csv = "out/sales.csv"  # input\nlookup_csv = "data/lookup.csv"  # input\n'
        'enriched_csv = "out/enriched.csv"  # output',
        [
            "import pandas as pd",
            "sales = pd.read_csv(sales_csv)\n"
            "lookup = pd.read_csv(lookup_csv)\n"
            'enriched = sales.merge(lookup, on="region", how="left")\n'
            'enriched["net"] = enriched.price * enriched.quantity / (1 + enriched.tax)\n'
            "enriched.to_csv(enriched_csv, index=False)\n"
            "enriched.shape",
        ],
    ),
    "daily": (
        'clean_csv = "out/clean.csv"  # input\ndaily_csv = "out/daily.csv"  # output\nwindow = 7',
        [
            "import pandas as pd",
            "clean = pd.read_csv(clean_csv)\n"
            'daily = clean.groupby("day").agg(revenue=("revenue", "sum"), '
            'orders=("order", "count"))\n'
            'daily["rolling"] = daily.revenue.rolling(window, min_periods=1).mean()\n'
            "daily.to_csv(daily_csv)\n"
            "daily.tail()",
        ],
    ),
    "regions": (
        'enriched_csv = "out/enriched.csv"  # input\nregions_csv = "out/regions.csv"  # output',
        [
            "import pandas as pd",
            "enriched = pd.read_csv(enriched_csv)\n"
            'regions = enriched.groupby("name").agg(net=("net", "sum"), '
            'orders=("order", "count"), mean_price=("price", "mean"))\n'
            'regions.sort_values("net", ascending=False).to_csv(regions_csv)\n'
            "regions",
        ],
    ),
    "report": (
        'daily_csv = "out/daily.csv"  # input\nregions_csv = "out/regions.csv"  # input\n'
        'report_json = "out/report.json"  # output\ntop = 3',
        [
            "import json\nimport pandas as pd\nfrom pathlib import Path",
            "daily = pd.read_csv(daily_csv)\n"
            "regions = pd.read_csv(regions_csv)\n"
            "report = {\n"
            '    "revenue": float(daily.revenue.sum()),\n'
            '    "best_day": int(daily.loc[daily.revenue.idxmax(), "day"]),\n'
            '    "top_regions": regions.nlargest(top, "net")["name"].tolist(),\n'
            "}\n"
            'Path(report_json).write_text(json.dumps(report, indent=1) + "\\n")\n'
            "report",
        ],
    ),
}

# step -> inputs, outputs (paths relative to the pipeline folder), parameters
STEPS: dict[str, dict[str, Any]] = {
    "make": {"outputs": {"sales_csv": "out/sales.csv"}, "parameters": {"rows": 40000}},
    "clean": {
        "inputs": {"sales_csv": "out/sales.csv"},
        "outputs": {"clean_csv": "out/clean.csv"},
        "parameters": {"max_quantity": 15},
    },
    "enrich": {
        "inputs": {"sales_csv": "out/sales.csv", "lookup_csv": "data/lookup.csv"},
        "outputs": {"enriched_csv": "out/enriched.csv"},
    },
    "daily": {"inputs": {"clean_csv": "out/clean.csv"}, "outputs": {"daily_csv": "out/daily.csv"}},
    "regions": {
        "inputs": {"enriched_csv": "out/enriched.csv"},
        "outputs": {"regions_csv": "out/regions.csv"},
    },
    "report": {
        "inputs": {"daily_csv": "out/daily.csv", "regions_csv": "out/regions.csv"},
        "outputs": {"report_json": "out/report.json"},
        "parameters": {"top": 3},
    },
}
ORDER = ["make", "clean", "enrich", "daily", "regions", "report"]  # a topological order
CHANGED_INPUT = "data/lookup.csv"
AFFECTED = ["enrich", "regions", "report"]  # when the tax rates change
# A region no sales row has: enrich runs, writes the same bytes, and its dependents stay cached.
AFFECTED_NO_OP = ["enrich"]


def lookup_csv(tax_up: float = 0.0, unused_region: bool = False) -> str:
    """Region names and tax rates; ``unused_region`` adds a region no sales row has."""
    names = ["north", "south", "east", "west", "central", "coast"]
    rows = [f"{r},{names[r % 6]}-{r // 6},{0.05 + 0.01 * (r % 5) + tax_up:.2f}" for r in range(12)]
    if unused_region:
        rows.append("12,islands-0,0.00")
    return "region,name,tax\n" + "\n".join(rows) + "\n"


def notebook_json(params: str, cells: list[str]) -> dict[str, Any]:
    """nbformat 4.5 written by hand: importing nbformat here would warm modules papermill
    needs before the cold run is timed."""
    sources = [params, *cells]
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "cells": [
            {
                "id": f"cell-{i}",
                "cell_type": "code",
                "execution_count": None,
                "metadata": {"tags": ["parameters"]} if i == 0 else {},
                "outputs": [],
                "source": src,
            }
            for i, src in enumerate(sources)
        ],
    }


def build_folder(folder: Path) -> None:
    """The pipeline folder: six notebooks, pipeline.yaml, data/lookup.csv."""
    import yaml

    folder.mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "data" / "lookup.csv").write_text(lookup_csv())
    for name, (params, cells) in NOTEBOOKS.items():
        nb = notebook_json(params, cells)
        (folder / f"{name}.ipynb").write_text(json.dumps(nb, indent=1))
    spec = {
        "name": "diamond",
        "experiment": "bench-pipeline",
        "steps": {n: {"notebook": f"{n}.ipynb", **STEPS[n]} for n in ORDER},
    }
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def injected(folder: Path, step: str) -> dict[str, Any]:
    """What the pipeline injects: the step's parameters, then its paths (absolute)."""
    spec = STEPS[step]
    out = dict(spec.get("parameters", {}))
    for key in ("inputs", "outputs"):
        for name, rel in spec.get(key, {}).items():
            out.setdefault(name, str((folder / rel).resolve()))
    return out


def fresh_project(root: Path, label: str, template: Path) -> Path:
    project = root / label
    project.mkdir()
    shutil.copytree(template, project / "pipeline")
    return project


# --- the two sides -------------------------------------------------------------------------
def papermill_cli(project: Path) -> dict[str, Any]:
    """The steps one after another with the papermill CLI, each a new process and kernel."""
    folder = project / "pipeline"
    steps: dict[str, float] = {}
    env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    start = time.perf_counter()
    for name in ORDER:
        cmd = [
            str(PAPERMILL),
            str(folder / f"{name}.ipynb"),
            str(folder / "executed" / f"{name}.ipynb"),
            "--cwd",
            str(folder),
        ]
        for key, value in injected(folder, name).items():
            cmd += ["-p", key, str(value)]
        (folder / "executed").mkdir(exist_ok=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        steps[name] = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"papermill {name} failed:\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - start
    return {"wall_s": wall, "steps_s": steps, "report": json.loads(_read(folder, "report"))}


def _read(folder: Path, what: str) -> str:
    return (folder / "out" / f"{what}.json").read_text()


class Phases:
    """``--profile``: wraps (observes, changes nothing) each step's kernel start, execution and
    kernel shutdown during the cold run; times are seconds from the run_pipeline call."""

    def __init__(self) -> None:
        from nbmlops.core.pipeline import execute, executors

        self.t0 = time.time()
        self.rows: dict[str, dict[str, float]] = {}
        self._undo: list[tuple[Any, str, Any]] = []
        kernel_init, kernel_shutdown = execute.WarmKernel.__init__, execute.WarmKernel.shutdown
        run_task = executors.execute_task
        phases = self

        def init(kernel: Any, task: Any, *args: Any, **kwargs: Any) -> None:
            begin = time.time()
            kernel_init(kernel, task, *args, **kwargs)
            kernel._bench_step = task.name
            phases.mark(task.name, kernel_start=begin, kernel_started=time.time())

        def shutdown(kernel: Any, *args: Any, **kwargs: Any) -> None:
            begin = time.time()
            kernel_shutdown(kernel, *args, **kwargs)
            phases.mark(getattr(kernel, "_bench_step", "?"), shutdown=begin, down=time.time())

        def execute_task(task: Any, *args: Any, **kwargs: Any) -> Any:
            begin = time.time()
            outcome, kernel = run_task(task, *args, **kwargs)
            phases.mark(
                task.name,
                execute=begin,
                papermill_start=outcome.started,
                papermill_end=outcome.ended,
                returned=time.time(),
            )
            return outcome, kernel

        for owner, name, fn in (
            (execute.WarmKernel, "__init__", init),
            (execute.WarmKernel, "shutdown", shutdown),
            (executors, "execute_task", execute_task),
        ):
            self._undo.append((owner, name, getattr(owner, name)))
            setattr(owner, name, fn)

    def mark(self, step: str, **times: float) -> None:
        self.rows.setdefault(step, {}).update({k: v - self.t0 for k, v in times.items()})

    def restore(self) -> None:
        for owner, name, fn in reversed(self._undo):
            setattr(owner, name, fn)


def nbmlops_run(project: Path, jobs: int | None, profile: bool = False) -> dict[str, Any]:
    """run_pipeline in this process; its wall from call to return and the event timeline."""
    from nbmlops.core.pipeline.runner import run_pipeline

    timeline: list[tuple[float, str, str]] = []
    phases = Phases() if profile else None
    start = time.perf_counter()

    def progress(event: Any) -> None:
        step = getattr(event, "step", "")
        timeline.append((time.perf_counter() - start, type(event).__name__, step))

    try:
        report = run_pipeline(project / "pipeline" / "pipeline.yaml", jobs=jobs, progress=progress)
    finally:
        if phases is not None:
            phases.restore()
    wall = time.perf_counter() - start
    if not report.ok:
        raise RuntimeError(f"the pipeline failed: {report.table()}")
    return {
        "wall_s": wall,
        "report_wall_s": report.wall_s,
        "status": {n: str(s.status) for n, s in report.steps.items()},
        "ran": report.ran(),
        "step_duration_s": {n: s.duration_s for n, s in report.steps.items()},
        "timeline": timeline,
        "phases": phases.rows if phases else None,
    }


def flush_wait() -> float:
    """Seconds until every run of this process is in MLflow."""
    from nbmlops.core.tracking.session import get_tracker

    t0 = time.perf_counter()
    if not get_tracker().flush(300):
        raise RuntimeError("the runs did not reach MLflow within 300 s")
    return time.perf_counter() - t0


def cli_run(project: Path, jobs: int | None) -> dict[str, Any]:
    """The whole ``nbmlops pipeline run`` command: process start to exit."""
    if not NBMLOPS.exists():
        return {"available": False, "note": f"{NBMLOPS} does not exist"}
    probe = subprocess.run(
        [str(NBMLOPS), "pipeline", "run", "--help"], capture_output=True, text=True, timeout=120
    )
    if probe.returncode != 0:
        return {"available": False, "note": "`nbmlops pipeline run` does not exist yet"}
    cmd = [str(NBMLOPS), "pipeline", "run", "pipeline/pipeline.yaml", "--json"]
    if jobs:
        cmd += ["--jobs", str(jobs)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBMLOPS_")}
    out: dict[str, Any] = {"available": True, "command": " ".join(cmd[1:])}
    for label in ("cold", "nothing_changed"):
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=project, capture_output=True, text=True, env=env, timeout=900
        )
        out[f"{label}_s"] = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"nbmlops pipeline run failed:\n{proc.stdout}\n{proc.stderr}")
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        rep = json.loads(lines[-1])
        out[f"{label}_report_wall_s"] = rep["wall_s"]
        out[f"{label}_ran"] = [n for n, st in rep["steps"].items() if st["status"] == "ran"]
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("bench-pipeline")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    out["finished_runs_after_exit"] = sum(1 for r in runs if r.info.status == "FINISHED")
    return out


# --- where the time goes -------------------------------------------------------------------
def papermill_import_s(repeat: int) -> list[float]:
    code = "import time; t = time.perf_counter(); import papermill; print(time.perf_counter() - t)"
    return [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
        for _ in range(repeat)
    ]


MLFLOW_STORE = """
import sys, tempfile, time
t0 = time.perf_counter()
from mlflow import MlflowClient
t1 = time.perf_counter()
MlflowClient(f"sqlite:///{tempfile.mkdtemp()}/mlflow.db").search_experiments(max_results=1)
print(t1 - t0, time.perf_counter() - t1)
"""


def mlflow_store_s(repeat: int) -> list[list[float]]:
    """[import mlflow, create a new SQLite store (alembic migrations)] in fresh processes:
    what shipping pays first in a new project folder."""
    out = []
    for _ in range(repeat):
        proc = subprocess.run(
            [sys.executable, "-c", MLFLOW_STORE], capture_output=True, text=True, check=True
        )
        out.append([float(x) for x in proc.stdout.split()[-2:]])
    return out


def process_start_s(repeat: int) -> list[float]:
    """A papermill CLI process that does nothing (``--help``): interpreter + imports + click."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([str(PAPERMILL), "--help"], capture_output=True, check=True)
        out.append(time.perf_counter() - t0)
    return out


def kernel_ready_s(cwd: Path, repeat: int) -> list[float]:
    """Start a python3 kernel and wait until it answers (what each papermill CLI step pays)."""
    from jupyter_client.manager import start_new_kernel

    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        km, kc = start_new_kernel(kernel_name="python3", cwd=str(cwd), stderr=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    return out


def timeline_text(timeline: list[tuple[float, str, str]]) -> list[str]:
    starts = {s: t for t, e, s in timeline if e == "StepStarted"}
    lines = []
    for t, e, s in timeline:
        if e == "StepFinished":
            began = starts.get(s)
            span = f"{began:6.2f} -> {t:6.2f} s" if began is not None else f"cached at {t:.2f} s"
            lines.append(f"    {s:<8} {span}")
        elif e == "PipelineFinished":
            lines.append(f"    done     at {t:6.2f} s")
    return lines


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# --- main ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, help="steps at once (default: nbmlops's, the cores)")
    parser.add_argument("--no-cli", action="store_true", help="skip `nbmlops pipeline run`")
    parser.add_argument("--repeat", type=int, default=3, help="samples for section 4")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="time each step's kernel start, papermill import and run, and shutdown (cold run)",
    )
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="nbmlops-bench-pipeline-")).resolve()
    template = root / "template"
    build_folder(template)
    res: dict[str, Any] = {
        "args": vars(args),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "steps": ORDER,
        "folder": str(root),
    }
    print(
        f"temp folder {root}\ncores {os.cpu_count()}, jobs {args.jobs or '(default)'}, "
        f"load average {os.getloadavg()[0]:.2f} (other work on the machine slows both sides)"
    )
    cwd = Path.cwd()
    try:
        # Untimed warm-up: one papermill CLI step, so both sides find papermill, the kernel and
        # pandas in the page cache.
        warm = fresh_project(root, "warmup", template)
        subprocess.run(
            [
                str(PAPERMILL),
                str(warm / "pipeline" / "make.ipynb"),
                str(warm / "make.out.ipynb"),
                "--cwd",
                str(warm / "pipeline"),
                "-p",
                "rows",
                "100",
            ],
            capture_output=True,
            check=True,
        )

        # 1. cold, ours first: this process has not imported papermill or jupyter_client yet.
        ours = fresh_project(root, "nbmlops", template)
        os.chdir(ours)
        os.environ["NBMLOPS_PROJECT_DIR"] = str(ours)
        print("1. cold run: nbmlops (in process) ...", flush=True)
        res["cold"] = nbmlops_run(ours, args.jobs, profile=args.profile)
        res["cold"]["flush_after_return_s"] = flush_wait()
        print("1. cold run: papermill CLI, one step after another ...", flush=True)
        base = fresh_project(root, "papermill", template)
        res["papermill_cli"] = papermill_cli(base)
        ours_report = json.loads(_read(ours / "pipeline", "report"))
        if ours_report != res["papermill_cli"]["report"]:
            raise RuntimeError(f"different results: {ours_report} vs {res['papermill_cli']}")

        # 2. nothing changed
        print("2. nothing changed ...", flush=True)
        res["nothing_changed"] = nbmlops_run(ours, args.jobs)

        # 3. one upstream input changed: every tax rate up, then a region no sale has
        print(f"3. {CHANGED_INPUT} changed ...", flush=True)
        (ours / "pipeline" / CHANGED_INPUT).write_text(lookup_csv(tax_up=0.02))
        res["input_changed"] = nbmlops_run(ours, args.jobs)
        res["input_changed"]["flush_after_return_s"] = flush_wait()
        (ours / "pipeline" / CHANGED_INPUT).write_text(lookup_csv(0.02, unused_region=True))
        res["input_changed_same_output"] = nbmlops_run(ours, args.jobs)
        flush_wait()

        # the whole command, in another fresh project folder
        os.chdir(cwd)
        del os.environ["NBMLOPS_PROJECT_DIR"]
        if args.no_cli:
            res["cli"] = {"available": False, "note": "skipped (--no-cli)"}
        else:
            print("1. cold run: the `nbmlops pipeline run` command ...", flush=True)
            res["cli"] = cli_run(fresh_project(root, "cli", template), args.jobs)

        # 4. where the time goes
        print("4. where the time goes ...", flush=True)
        res["breakdown"] = {
            "papermill_import_s": papermill_import_s(args.repeat),
            "papermill_cli_noop_s": process_start_s(args.repeat),
            "kernel_ready_s": kernel_ready_s(root, args.repeat),
            "mlflow_import_and_new_store_s": mlflow_store_s(args.repeat),
        }
    except BaseException:
        args.keep = True
        print(f"failed; the folder is kept: {root}", file=sys.stderr)
        raise
    finally:
        os.chdir(cwd)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    res["goals"] = report(res)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(res, indent=2, default=str))
    print(f"results written to {RESULTS_FILE}")
    return 0


def report(res: dict[str, Any]) -> list[dict[str, Any]]:
    pm, cold = res["papermill_cli"], res["cold"]
    same, changed, cli = res["nothing_changed"], res["input_changed"], res["cli"]
    bd = res["breakdown"]
    med = statistics.median
    goals: list[dict[str, Any]] = []
    print()
    print("1. Cold run of the 6-step diamond")
    print(f"  papermill CLI, sequential      {pm['wall_s']:7.2f} s")
    print("    " + ", ".join(f"{n} {s:.2f}" for n, s in pm["steps_s"].items()))
    durable = cold["wall_s"] + cold["flush_after_return_s"]
    print(f"  nbmlops run_pipeline           {cold['wall_s']:7.2f} s   (call to return)")
    print(
        f"    + shipping to MLflow          {cold['flush_after_return_s']:7.2f} s   "
        f"(all runs durable at {durable:.2f} s)"
    )
    print("    timeline:")
    for line in timeline_text(cold["timeline"]):
        print(line)
    print(
        "    papermill time per step: "
        + ", ".join(f"{n} {s:.2f}" for n, s in cold["step_duration_s"].items())
    )
    if cli.get("available"):
        print(
            f"  nbmlops pipeline run (command) {cli['cold_s']:7.2f} s   (process start to exit, "
            f"shipping included; {cli['finished_runs_after_exit']} FINISHED runs in MLflow)"
        )
        print(
            f"    of which run_pipeline         {cli['cold_report_wall_s']:7.2f} s   "
            f"(its report's wall); the rest is process start, imports, shipping and exit"
        )
    else:
        print(f"  nbmlops pipeline run (command)  not measured: {cli.get('note')}")
    ratio = pm["wall_s"] / cold["wall_s"]
    print(f"  papermill CLI / nbmlops cold:      {ratio:.2f}x   goal >= {GOAL_COLD}x")
    print(f"  papermill CLI / nbmlops durable:   {pm['wall_s'] / durable:.2f}x")
    if cli.get("available"):
        print(f"  papermill CLI / nbmlops command:   {pm['wall_s'] / cli['cold_s']:.2f}x")
    goals.append(
        {
            "figure": "cold: papermill CLI sequential / nbmlops run_pipeline",
            "value": f"{pm['wall_s']:.2f} s / {cold['wall_s']:.2f} s = {ratio:.2f}x",
            "goal": f">= {GOAL_COLD}x",
            "pass": ratio >= GOAL_COLD,
        }
    )

    print()
    print("2. Nothing changed")
    share = same["wall_s"] / cold["wall_s"]
    print(
        f"  nbmlops run_pipeline           {same['wall_s'] * 1000:7.1f} ms  "
        f"({share:.4f} of cold; steps {sorted(set(same['status'].values()))})"
    )
    if cli.get("available"):
        print(
            f"  nbmlops pipeline run (command) {cli['nothing_changed_s']:7.2f} s   "
            f"(run_pipeline {cli['nothing_changed_report_wall_s'] * 1000:.1f} ms; ran: "
            f"{', '.join(cli['nothing_changed_ran']) or 'nothing'})"
        )
    goals.append(
        {
            "figure": "nothing changed / cold",
            "value": f"{same['wall_s'] * 1000:.1f} ms / {cold['wall_s']:.2f} s = {share:.4f}",
            "goal": f"< 1/{GOAL_NOTHING}",
            "pass": share < 1 / GOAL_NOTHING and not same["ran"],
        }
    )

    print()
    print(f"3. {CHANGED_INPUT} changed (read by enrich)")
    noop = res["input_changed_same_output"]
    for label, got in (("tax rates up", changed), ("a region no sale has", noop)):
        cached = ", ".join(n for n, s in got["status"].items() if s == "cached")
        print(
            f"  {label:<21} {got['wall_s']:6.2f} s   ran: {', '.join(got['ran'])}; cached: {cached}"
        )
    print(
        "  (the second edit leaves enrich's output byte for byte the same, so the steps below "
        "it stay cached)"
    )
    goals.append(
        {
            "figure": f"steps run after {CHANGED_INPUT} changed",
            "value": f"{', '.join(changed['ran'])} | {', '.join(noop['ran'])}",
            "goal": f"{', '.join(AFFECTED)} | {', '.join(AFFECTED_NO_OP)}",
            "pass": sorted(changed["ran"]) == sorted(AFFECTED)
            and sorted(noop["ran"]) == sorted(AFFECTED_NO_OP),
        }
    )

    print()
    print(f"4. Where the time goes (median of {len(bd['kernel_ready_s'])})")
    print(f"  import papermill, fresh process             {med(bd['papermill_import_s']):.2f} s")
    print(f"  papermill --help, process start to exit     {med(bd['papermill_cli_noop_s']):.2f} s")
    print(f"  python3 kernel, start until it answers      {med(bd['kernel_ready_s']):.2f} s")
    first = next(t for t, e, _ in cold["timeline"] if e == "StepStarted")
    last_end = max(t for t, e, _ in cold["timeline"] if e == "StepFinished")
    print(f"  cold run: call to first step start          {first:.2f} s")
    print(f"  cold run: last step end to return           {cold['wall_s'] - last_end:.2f} s")
    print(
        f"  cold run: papermill time of all steps       {sum(cold['step_duration_s'].values()):.2f} s"
    )
    print(f"  cold run: shipping after return             {cold['flush_after_return_s']:.2f} s")
    store = bd["mlflow_import_and_new_store_s"]
    print(
        f"    of which at most: import mlflow {med(s[0] for s in store):.2f} s + a new SQLite "
        f"store {med(s[1] for s in store):.2f} s (fresh process each)"
    )
    print(
        f"  papermill CLI: per step (mean)              {pm['wall_s'] / len(pm['steps_s']):.2f} s"
    )
    if cold.get("phases"):
        print("  cold run, per step (seconds from the call; --profile):")
        print(
            "    step      kernel start   waits   import+setup   papermill run   digests   shutdown"
        )
        for name in ORDER:
            ph = cold["phases"].get(name, {})
            if "execute" not in ph:
                continue
            print(
                f"    {name:<8} {ph['kernel_start']:5.2f}-{ph['kernel_started']:5.2f}  "
                f"{ph['execute'] - ph['kernel_started']:6.2f}   "
                f"{ph['execute']:5.2f}-{ph['papermill_start']:5.2f}    "
                f"{ph['papermill_start']:5.2f}-{ph['papermill_end']:5.2f}     "
                f"{ph['returned'] - ph['papermill_end']:6.3f}   "
                f"{ph.get('shutdown', float('nan')):5.2f}-{ph.get('down', float('nan')):5.2f}"
            )

    print()
    print("GOALS")
    for g in goals:
        print(f"  {verdict(g['pass'])}  {g['figure']}: {g['value']}  (goal {g['goal']})")
    return goals


if __name__ == "__main__":
    try:
        import nbmlops  # noqa: F401
    except ImportError:  # running from a checkout without `pip install -e .`
        sys.path.insert(0, str(BENCH_DIR.parent / "src"))
    sys.exit(main())
