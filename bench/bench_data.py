"""How fast does nbmlops version data, next to MLflow's dataset digest and ``dvc add``?

One run, the same data for every tool:

1. **A 10,000,000-row x 8-column numeric frame** (4 float64, 4 int64 columns: 640 MB).
   ``DataStore.commit`` (first commit: full-content digest, profile, Parquet write), the same
   commit again (unchanged: digest only, nothing written), ``DataStore.load`` (read back and
   digest-checked), ``digest_value(df)`` alone, and ``mlflow.data.from_pandas(df).digest``
   (MLflow's digest hashes a sample, the first 10,000 rows, not the whole frame).
   Goal: nbmlops' full-content digest >= 100x faster than MLflow's sampled digest.
2. **A 1 GiB CSV file** (random numeric rows, generated once into a temp folder).
   ``DataStore.commit`` (first: one pass that hashes and writes the object), the same commit
   again (unchanged: the stat cache answers, the file is not read), ``checkout_path``; and
   ``dvc add`` of the same file in a fresh DVC repo (``git init`` + ``dvc init``; a subprocess,
   so its start-up is part of its time, as for a user), then ``dvc add`` again unchanged.
   Goals: ``dvc add`` / nbmlops commit >= 2x; nbmlops re-commit < 1/20 of a first commit (for
   the frame and for the file).

The page cache cannot be dropped here, so each timed step is preceded (untimed) by
``os.sync()`` (so no step pays for an earlier step's write-back) and, for the file, by one
full read of it (so every tool starts from the same warm cache). Each tool's file commit runs
once untimed first (warm-up). Then each step runs ``--repeat`` times (``--file-repeat`` for
the file steps; a fresh store or DVC repo for every first commit) and the median is
reported; a step slower than 20 s runs once. nbmlops fsyncs every object before renaming it
into place; ``dvc add`` does not fsync. The machine's other load shows up as noise: the JSON
keeps every run's time.

DVC is not a project dependency: unless ``--dvc PATH`` names a dvc executable, the script uses
``/tmp/bench-dvc/bin/dvc``, installing it there first (``python3 -m venv /tmp/bench-dvc`` +
``pip install dvc``) when missing, never into the project's venv.

Results are printed and written to ``bench/results/bench_data.json``.

    .venv/bin/python bench/bench_data.py            # 10M-row frame, 1 GiB CSV (~3 min)
    .venv/bin/python bench/bench_data.py --quick    # a tenth of that
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
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
os.environ["DVC_NO_ANALYTICS"] = "1"

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "bench_data.json"
DVC_VENV = Path("/tmp/bench-dvc")

GOAL_DIGEST = 100  # mlflow sampled digest / nbmlops full digest >= 100
GOAL_DVC = 2  # dvc add / nbmlops commit >= 2
GOAL_RECOMMIT = 20  # first commit / re-commit > 20 (re-commit < 1/20 of a first commit)
SLOW_SECONDS = 20.0  # a step slower than this is not repeated
MLFLOW_SAMPLE_ROWS = 10_000
CSV_COLUMNS = 8
CSV_FIELD = 13  # one field: 6 digits, ".", 5 digits and its separator ("," or newline)
RACY_WAIT = 2.2  # the stat cache trusts files whose mtime is > 2 s older than their read


# --- timing ----------------------------------------------------------------------------------


def measure(
    fn: Callable[[], Any], repeat: int, before: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """Median wall time of ``fn`` over ``repeat`` runs; ``before`` runs untimed before each.

    A run slower than SLOW_SECONDS is not repeated."""
    times: list[float] = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if times[-1] > SLOW_SECONDS:
            break
    return {"seconds": statistics.median(times), "runs": len(times), "times": times}


def settle(path: Path | None = None) -> None:
    """Flush earlier writes to disk, then (for a file) read it once: a warm, equal start."""
    os.sync()
    if path is not None:
        warm_read(path)


def warm_read(path: Path) -> None:
    view = memoryview(bytearray(16 << 20))
    with open(path, "rb", buffering=0) as f:
        while f.readinto(view):
            pass


# --- data ------------------------------------------------------------------------------------


def numeric_frame(rows: int) -> Any:
    """The frame of bench_digest.py: 4 float64 and 4 int64 columns."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    cols = {f"f{k}": rng.random(rows) for k in range(4)}
    cols |= {f"i{k}": rng.integers(0, 1 << 40, rows) for k in range(4)}
    return pd.DataFrame(cols)


def csv_block(rng: Any, rows: int) -> bytes:
    """``rows`` CSV lines of 8 random decimal numbers like ``482913.07351``.

    Built as a (rows, 8, 13) array of ASCII bytes: 6 digits, '.', 5 digits, then ',' (the last
    column's separator is the newline)."""
    import numpy as np

    block = rng.integers(
        ord("0"), ord("9") + 1, size=(rows, CSV_COLUMNS, CSV_FIELD), dtype=np.uint8
    )
    block[:, :, 0] = rng.integers(ord("1"), ord("9") + 1, size=(rows, CSV_COLUMNS), dtype=np.uint8)
    block[:, :, 6] = ord(".")
    block[:, :, 12] = ord(",")
    block[:, -1, 12] = ord("\n")
    return block.tobytes()


def write_csv(path: Path, nbytes: int) -> int:
    """A real CSV of about ``nbytes`` bytes (header + random numeric rows); its size."""
    import numpy as np

    rng = np.random.default_rng(42)
    header = (",".join(f"c{k}" for k in range(CSV_COLUMNS)) + "\n").encode()
    row_bytes = CSV_COLUMNS * CSV_FIELD
    rows_left = (nbytes - len(header)) // row_bytes
    with open(path, "wb") as f:
        f.write(header)
        while rows_left > 0:
            rows = min(rows_left, 500_000)
            f.write(csv_block(rng, rows))
            rows_left -= rows
    return path.stat().st_size


# --- dvc -------------------------------------------------------------------------------------


def find_dvc(explicit: str | None, console: Any) -> str:
    """The dvc executable: --dvc, else the bench venv's (installed there when missing)."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise SystemExit(f"--dvc {explicit}: not an executable file")
        return explicit
    dvc = DVC_VENV / "bin" / "dvc"
    if dvc.exists():
        return str(dvc)
    python = shutil.which("python3") or sys.executable
    console.print(f"dvc not found: installing it into a separate venv, {DVC_VENV} ...")
    subprocess.run([python, "-m", "venv", str(DVC_VENV)], check=True)
    subprocess.run([str(DVC_VENV / "bin" / "pip"), "install", "-q", "dvc"], check=True)
    return str(dvc)


def dvc_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)  # the project's venv is not dvc's
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run_cmd(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=dvc_env(), capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")


def fresh_dvc_repo(dvc: str, repo: Path, csv: Path) -> None:
    """An empty git + DVC repo at ``repo`` holding a copy of ``csv`` as data.csv (untimed)."""
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    if shutil.which("git"):
        run_cmd(["git", "init", "-q"], repo)
        run_cmd([dvc, "init", "-q"], repo)
    else:
        run_cmd([dvc, "init", "-q", "--no-scm"], repo)
    run_cmd([dvc, "config", "core.analytics", "false"], repo)
    shutil.copyfile(csv, repo / "data.csv")


def dvc_link_kind(repo: Path) -> str:
    """How dvc left data.csv next to its cache copy: copy, hardlink, symlink (or reflink)."""
    data = repo / "data.csv"
    if data.is_symlink():
        return "symlink"
    cached = [p for p in (repo / ".dvc" / "cache").rglob("*") if p.is_file()]
    same_inode = any(p.stat().st_ino == data.stat().st_ino for p in cached)
    return "hardlink" if same_inode else "copy (or reflink)"


# --- part 1: the frame -----------------------------------------------------------------------


def bench_frame(work: Path, rows: int, repeat: int, with_mlflow: bool, console: Any) -> dict:
    from nbmlops.core.data.hashing import digest_value
    from nbmlops.core.data.store import DataStore

    console.print(f"part 1: building the {rows:,} x 8 numeric frame")
    df = numeric_frame(rows)
    nbytes = int(df.memory_usage(index=False).sum())
    digest_value(df.head(1000))  # imports and first-call costs outside the timings
    DataStore(work / "warm-store").commit(df.head(1000), "warm")
    steps: dict[str, dict[str, Any]] = {}
    store_dir = work / "frame-store"
    state: dict[str, Any] = {}

    def fresh_store() -> None:
        shutil.rmtree(store_dir, ignore_errors=True)
        settle()
        state["store"] = DataStore(store_dir)

    def first_commit() -> None:
        res = state["store"].commit(df, "frame")
        assert res.created and res.bytes_written > 0
        state["version"] = res.version

    def recommit() -> None:
        res = state["store"].commit(df, "frame")
        assert not res.created and res.bytes_written == 0

    console.print("  nbmlops commit (first), re-commit unchanged, load, digest_value")
    steps["commit"] = measure(first_commit, repeat, fresh_store)
    steps["recommit"] = measure(recommit, repeat, settle)
    loaded: dict[str, Any] = {}
    steps["load"] = measure(lambda: loaded.update(df=state["store"].load("frame")), repeat, settle)
    assert loaded["df"].equals(df)
    digests: dict[str, Any] = {}
    steps["digest"] = measure(lambda: digests.update(cd=digest_value(df)), repeat)
    parquet = state["store"]._backend.size(
        f"objects/{state['version'].digest[:2]}/{state['version'].digest}.parquet"
    )
    if with_mlflow:
        console.print("  mlflow.data.from_pandas(df).digest")
        try:
            mlflow_digest(df.head(10))  # the import, outside the timing
            steps["mlflow_digest"] = measure(lambda: mlflow_digest(df), repeat)
        except Exception as err:  # mlflow missing or broken: the rest still reports
            steps["mlflow_digest"] = {"error": repr(err)}
    del loaded["df"]
    return {
        "rows": rows,
        "columns": 8,
        "bytes": nbytes,
        "parquet_bytes": parquet,
        "digest": state["version"].digest,
        "steps": steps,
    }


def mlflow_digest(df: Any) -> str:
    import mlflow.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(mlflow.data.from_pandas(df).digest)


# --- part 2: the file ------------------------------------------------------------------------


def bench_file(work: Path, nbytes: int, repeat: int, dvc: str | None, console: Any) -> dict:
    from nbmlops.core.data.digest_files import digest_file
    from nbmlops.core.data.store import DataStore

    csv = work / "data.csv"
    console.print(f"part 2: writing a {nbytes / 2**30:.2f} GiB CSV to {csv}")
    start = time.perf_counter()
    size = write_csv(csv, nbytes)
    gen_seconds = time.perf_counter() - start
    os.sync()
    age = time.time() - csv.stat().st_mtime
    if age < RACY_WAIT:  # a user commits a file some time after writing it, not within 2 s
        time.sleep(RACY_WAIT - age)
    expected = digest_file(csv).digest
    steps: dict[str, dict[str, Any]] = {}
    store_dir = work / "file-store"
    out = work / "checkout" / "data.csv"
    state: dict[str, Any] = {}

    def fresh_store() -> None:
        shutil.rmtree(store_dir, ignore_errors=True)
        settle(csv)
        state["store"] = DataStore(store_dir)

    def first_commit() -> None:
        res = state["store"].commit(csv, "data")
        assert res.created and res.bytes_written == size and res.version.digest == expected

    def recommit() -> None:
        res = state["store"].commit(csv, "data")
        assert not res.created and res.bytes_written == 0

    def fresh_out() -> None:
        shutil.rmtree(out.parent, ignore_errors=True)
        settle()

    console.print("  nbmlops commit (first), re-commit unchanged, checkout_path")
    fresh_store()  # warm-up, untimed (as for dvc below): first-run costs of this file system
    first_commit()
    steps["commit"] = measure(first_commit, repeat, fresh_store)
    steps["recommit"] = measure(recommit, repeat, lambda: settle(csv))
    steps["checkout"] = measure(
        lambda: state["store"].checkout_path("data", out), repeat, fresh_out
    )
    assert out.stat().st_size == size
    shutil.rmtree(out.parent, ignore_errors=True)
    shutil.rmtree(store_dir, ignore_errors=True)

    dvc_info: dict[str, Any] = {}
    if dvc is not None:
        console.print(f"  dvc add (fresh repo), dvc add again unchanged (dvc: {dvc})")
        repo = work / "dvc-repo"
        try:
            dvc_info["version"] = subprocess.run(
                [dvc, "--version"], capture_output=True, text=True, env=dvc_env(), check=True
            ).stdout.strip()
            fresh_dvc_repo(dvc, repo, csv)  # warm-up, untimed: e.g. dvc's first start compiles
            run_cmd([dvc, "add", "-q", "data.csv"], repo)

            def dvc_fresh() -> None:
                fresh_dvc_repo(dvc, repo, csv)
                settle(repo / "data.csv")

            steps["dvc_add"] = measure(
                lambda: run_cmd([dvc, "add", "-q", "data.csv"], repo), repeat, dvc_fresh
            )
            dvc_info["link"] = dvc_link_kind(repo)
            steps["dvc_readd"] = measure(
                lambda: run_cmd([dvc, "add", "-q", "data.csv"], repo),
                repeat,
                lambda: settle(repo / "data.csv"),
            )
        except Exception as err:  # dvc broken: the nbmlops numbers still report
            steps["dvc_add"] = {"error": repr(err)}
        finally:
            shutil.rmtree(repo, ignore_errors=True)
    return {
        "bytes": size,
        "generate_seconds": gen_seconds,
        "digest": expected,
        "steps": steps,
        "dvc": dvc_info,
    }


# --- report ----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "[red]MISS[/red]"


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 1 else f"{seconds:,.2f} s"


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or "seconds" not in a or "seconds" not in b or b["seconds"] <= 0:
        return None
    return float(a["seconds"] / b["seconds"])


def report(res: dict[str, Any], console: Any) -> list[dict[str, Any]]:
    from rich.table import Table

    frame, file = res["frame"], res["file"]
    fs, ff = frame["steps"], file["steps"]
    mb_frame, mb_file = frame["bytes"] / 1e6, file["bytes"] / 1e6
    t = Table(title="nbmlops data versioning vs MLflow's dataset digest and dvc add")
    for col in ("data", "tool", "step", "median", "MB/s", "runs", "note"):
        t.add_column(col, justify="right" if col in ("median", "MB/s", "runs") else "left")
    frame_label = f"frame {frame['rows']:,} x 8 ({mb_frame:,.0f} MB)"
    file_label = f"CSV file ({mb_file:,.0f} MB)"
    rows = [
        (frame_label, "nbmlops", "DataStore.commit (first)", fs["commit"], mb_frame,
         f"digest + profile + Parquet ({frame['parquet_bytes'] / 1e6:,.0f} MB), fsynced"),
        (frame_label, "nbmlops", "DataStore.commit (unchanged)", fs["recommit"], mb_frame,
         "full-content digest; nothing written"),
        (frame_label, "nbmlops", "DataStore.load", fs["load"], mb_frame,
         "Parquet read + digest check"),
        (frame_label, "nbmlops", "digest_value(df)", fs["digest"], mb_frame,
         "every byte of the frame"),
        (frame_label, "mlflow", "from_pandas(df).digest", fs.get("mlflow_digest"), mb_frame,
         f"sampled: hashes the first {MLFLOW_SAMPLE_ROWS:,} rows only; MB/s is nominal"),
        (file_label, "nbmlops", "DataStore.commit (first)", ff["commit"], mb_file,
         "one pass: hash + write object, fsynced"),
        (file_label, "nbmlops", "DataStore.commit (unchanged)", ff["recommit"], mb_file,
         "stat cache: the file is not read"),
        (file_label, "nbmlops", "DataStore.checkout_path", ff["checkout"], mb_file,
         "copy out + digest check, fsynced"),
        (file_label, "dvc", "dvc add (fresh repo)", ff.get("dvc_add"), mb_file,
         f"md5 + copy to cache ({file['dvc'].get('link', '?')}); no fsync; incl. start-up"),
        (file_label, "dvc", "dvc add (unchanged)", ff.get("dvc_readd"), mb_file,
         "incl. start-up"),
    ]  # fmt: skip
    for data, tool, step, m, mb, note in rows:
        if m is None:
            continue
        if "error" in m:
            t.add_row(data, tool, step, "error", "", "", m["error"][:120])
            continue
        t.add_row(
            data, tool, step, fmt_s(m["seconds"]), f"{mb / m['seconds']:,.0f}", str(m["runs"]), note
        )
    console.print(t)
    console.print(
        "[dim]Before each timed step: os.sync() (no step pays for an earlier step's write-back) "
        "and, for the CSV, one full read of it: the page cache cannot be dropped here, so every "
        "tool starts from the same warm cache. Medians of the runs shown.[/dim]"
    )

    goals: list[dict[str, Any]] = []

    def goal(name: str, value: float | None, target: float, text: str) -> None:
        ok = None if value is None else value >= target  # None: not measured (skipped/error)
        goals.append({"goal": name, "value": value, "target": target, "pass": ok})
        shown = f"{value:,.1f}x" if value is not None else "not measured"
        mark = verdict(ok) if ok is not None else "[yellow]SKIP[/yellow]"
        console.print(f"  {mark}  {text}: {shown} (goal >= {target:g}x)")

    console.print("\n[bold]RATIOS[/bold]")
    readd = ratio(ff.get("dvc_readd"), ff.get("dvc_add"))
    info = [
        ("frame: first commit / digest_value alone", ratio(fs["commit"], fs["digest"])),
        ("frame: load / digest_value alone", ratio(fs["load"], fs["digest"])),
        ("file: checkout_path / first commit", ratio(ff["checkout"], ff["commit"])),
        ("dvc: dvc add unchanged / first dvc add", readd),
    ]
    for text, value in info:
        console.print(f"  {text}: {value:,.3f}" if value is not None else f"  {text}: n/a")
    console.print("\n[bold]GOALS[/bold]")
    goal(
        "digest_vs_mlflow",
        ratio(fs.get("mlflow_digest"), fs["digest"]),
        GOAL_DIGEST,
        "mlflow sampled digest / nbmlops full-content digest (frame)",
    )
    goal(
        "commit_vs_dvc_add",
        ratio(ff.get("dvc_add"), ff["commit"]),
        GOAL_DVC,
        "dvc add / nbmlops commit (1 file)",
    )
    for label, steps in (("frame", fs), ("file", ff)):
        first_over_re = ratio(steps["commit"], steps["recommit"])
        goal(
            f"recommit_{label}",
            first_over_re,
            GOAL_RECOMMIT,
            f"{label}: first commit / re-commit unchanged "
            f"(re-commit = {1 / first_over_re:.4f} of first; goal < 1/{GOAL_RECOMMIT})"
            if first_over_re
            else f"{label}: first commit / re-commit unchanged",
        )
    return goals


# --- main ------------------------------------------------------------------------------------


def fs_type(path: Path) -> str:
    """The file system type of ``path`` (from /proc/mounts; '?' elsewhere)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "?"
    real = os.path.realpath(path)
    best = max(
        (m for m in mounts if len(m) > 2 and (real + "/").startswith(m[1].rstrip("/") + "/")),
        key=lambda m: len(m[1]),
        default=None,
    )
    return best[2] if best else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/10 of the sizes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per frame step (median)")
    parser.add_argument(
        "--file-repeat",
        type=int,
        default=5,
        help="runs per file step (median): they are short and disk-bound, hence noisier",
    )
    parser.add_argument("--dvc", metavar="PATH", help="a dvc executable to use")
    parser.add_argument("--no-dvc", action="store_true", help="skip the dvc comparison")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the mlflow comparison")
    parser.add_argument("--workdir", help="where the temp folder goes (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    rows = 10_000_000 // scale
    nbytes = (1 << 30) // scale

    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 170)
    dvc = None if args.no_dvc else find_dvc(args.dvc, console)
    work = Path(tempfile.mkdtemp(prefix="nbmlops-bench-data-", dir=args.workdir)).resolve()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    console.print(f"work folder {work} ({fs_type(work)}), {os.cpu_count()} CPUs, load {load}")

    import mlflow
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    import nbmlops

    res: dict[str, Any] = {
        "args": {
            "quick": args.quick,
            "repeat": args.repeat,
            "file_repeat": args.file_repeat,
            "rows": rows,
            "csv_bytes": nbytes,
        },
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "fs": fs_type(work),
            "load_average_at_start": os.getloadavg(),
        },
        "versions": {
            "nbmlops": nbmlops.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "pyarrow": pa.__version__,
            "mlflow": mlflow.__version__,
        },
        "method": "median of --repeat (frame) / --file-repeat (file) runs; os.sync() before each step, and one full read of "
        "the CSV before each file step (warm page cache for every tool); first commits and "
        "first dvc adds each get a fresh store / repo",
    }
    try:
        res["frame"] = bench_frame(work, rows, args.repeat, not args.no_mlflow, console)
        res["file"] = bench_file(work, nbytes, args.file_repeat, dvc, console)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["versions"]["dvc"] = res["file"]["dvc"].get("version")
    console.print()
    res["goals"] = report(res, console)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(res, indent=2, default=str))
    console.print(f"\nresults written to {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    try:
        import nbmlops  # noqa: F401
    except ImportError:  # running from a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
