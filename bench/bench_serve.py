"""How does ``nbmlops serve`` compare with ``mlflow models serve`` on the same model?

One fresh project folder (a temp dir) with a SQLite MLflow store; one logged model, a
LogisticRegression on 10 features (``mlflow.sklearn.log_model`` with an input example), registered
as ``bench-model`` version 1 with alias ``champion`` and its files digest recorded. Then, for
both servers, each started as its own process on 127.0.0.1:

1. **Start-up**: from spawning the command to the first successful health check, i.e. to
   a loaded model ready to predict: ``GET /health`` answers 200 for nbmlops once every route's
   model is loaded, checked and warmed up (503 before); ``GET /ping`` answers 200 for mlflow
   once its model is loaded. ``nbmlops serve bench-model@champion --port P`` vs
   ``mlflow models serve -m models:/bench-model/1 --env-manager local -h 127.0.0.1 -p P``.
   nbmlops is started both ways:

   * **warm** (the goal's figure): the serving cache holds the checked copy and the record of
     what ``@champion`` meant, as after any earlier start in the project (a restart, a
     redeploy, a crash). The model is served from the copy once it passes its checks again;
     the registry is asked in the background, and its answer ("confirmed") follows within
     seconds (printed too; not measured on the start used for latency, so that polling
     ``/health`` does not touch that run).
   * **cold**: the serving cache is emptied before each start (the first start in a
     project): the registry helper resolves and downloads while the gateway imports.

   mlflow resolves and downloads the model on every start; it has no cache to start from.
2. **Latency**: one client, one persistent connection, single-row requests
   (``POST /predict`` vs ``POST /invocations``, the same body bytes: MLflow's
   ``{"dataframe_records": [...]}``), p50 and p99 of ``--requests`` requests after a warm-up.
3. **Throughput**: ``--clients`` client threads (persistent connection each) for
   ``--seconds``; requests per second. The load generator is this script in its own process
   (``--client``), identical for both servers.

Plus the in-process cost of one single-row prediction: ``PyFuncModel.predict`` vs the gateway's
path (signature check + DataFrame + the estimator's own ``predict``).

The start-ups run in interleaved rounds (nbmlops cold, nbmlops warm, mlflow), so that other
load on the machine touches all of them alike. Latency and throughput are measured on one more
start of each (warm for nbmlops, counted among its start-ups), straight after the start, while
nbmlops's registry helper may still be importing MLflow.

Goals: throughput >= 3x, p99 <= 1/3, (warm) start-up <= 1/3 of mlflow's. Results are printed and
written to ``bench/results/bench_serve.json``. Telemetry is off (MLFLOW_DISABLE_TELEMETRY,
DO_NOT_TRACK).

    .venv/bin/python bench/bench_serve.py            # 5 rounds of starts, 500 requests, 10 s load
    .venv/bin/python bench/bench_serve.py --quick    # 1 round, 200 requests, 4 s load
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "bench_serve.json"
MODEL = "bench-model"
N_FEATURES = 10
GOAL_THROUGHPUT = 3.0  # nbmlops req/s >= 3x mlflow's
GOAL_P99 = 3.0  # nbmlops p99 <= mlflow p99 / 3
GOAL_STARTUP = 3.0  # nbmlops start-up <= mlflow start-up / 3

# What `nbmlops` runs once cli/main.py mounts the serve command.
NBMLOPS_MAIN = """
import sys, typer
from nbmlops.cli import serve
app = typer.Typer()
app.command("serve")(serve.serve)
app.add_typer(serve.deploy_app, name="deploy")
app()
"""


# --- the load generator (also run as its own process with --client) ----------------------
def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> int:
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def client_run(
    port: int, path: str, body: bytes, clients: int, seconds: float, requests: int
) -> dict[str, Any]:
    """Latency (one client, ``requests`` requests) or throughput (``clients`` for ``seconds``)."""
    if clients == 1:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(50):  # warm-up
            assert _post(conn, path, body) == 200
        times = []
        for _ in range(requests):
            began = time.perf_counter()
            status = _post(conn, path, body)
            times.append(time.perf_counter() - began)
            assert status == 200, status
        conn.close()
        times.sort()
        return {
            "requests": len(times),
            "p50_ms": 1000 * times[len(times) // 2],
            "p99_ms": 1000 * times[min(len(times) - 1, int(len(times) * 0.99))],
            "mean_ms": 1000 * statistics.fmean(times),
        }
    counts = [0] * clients
    errors = [0] * clients
    stop = time.perf_counter() + seconds
    barrier = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        _post(conn, path, body)
        barrier.wait()
        while time.perf_counter() < stop:
            try:
                if _post(conn, path, body) == 200:
                    counts[i] += 1
                else:
                    errors[i] += 1
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    return {"clients": clients, "seconds": elapsed, "requests": sum(counts),
            "errors": sum(errors), "rps": sum(counts) / elapsed}  # fmt: skip


def run_client(
    port: int, path: str, body: bytes, clients: int, seconds: float, requests: int
) -> dict[str, Any]:
    """The load generator in its own process: the servers never share a GIL with it."""
    out = subprocess.run(
        [sys.executable, __file__, "--client", str(port), path, str(clients), str(seconds),
         str(requests)],
        input=body, capture_output=True, check=True, timeout=600,
    )  # fmt: skip
    return json.loads(out.stdout)


# --- set-up --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_store(root: Path) -> tuple[str, list[dict[str, float]]]:
    import mlflow
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    from nbmlops.core.registry.safety import files_digest

    uri = f"sqlite:///{root / '.nbmlops' / 'mlflow.db'}"
    (root / ".nbmlops").mkdir(parents=True)
    client = MlflowClient(uri)
    exp = client.create_experiment("bench", artifact_location=(root / "artifacts").as_uri())
    rng = np.random.default_rng(0)
    cols = [f"f{i}" for i in range(N_FEATURES)]
    X = pd.DataFrame(rng.normal(size=(2000, N_FEATURES)), columns=cols)
    y = ((X.f0 + 0.5 * X.f1 - X.f2 + rng.normal(scale=0.5, size=len(X))) > 0).astype(int)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.sklearn.log_model(
            LogisticRegression(max_iter=500).fit(X, y), name="model", input_example=X.head(3),
            pip_requirements=["scikit-learn"],
        )  # fmt: skip
    logged = client.get_logged_model(info.model_id)
    client.create_registered_model(MODEL)
    mv = client.create_model_version(MODEL, logged.artifact_location, run_id=info.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=logged.artifact_location, dst_path=tmp, tracking_uri=uri
        )
        digest = files_digest(local)
    client.set_model_version_tag(MODEL, mv.version, "nbmlops.files_digest", digest)
    client.set_registered_model_alias(MODEL, "champion", mv.version)
    rows = X.head(1).to_dict(orient="records")
    return uri, rows


# --- servers -------------------------------------------------------------------------------
def _env(uri: str) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)  # mlflow runs `uvicorn` from PATH
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "NBMLOPS_TRACKING_URI": uri,
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}  # fmt: skip


def _healthy(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class Server:
    def __init__(self, kind: str, root: Path, uri: str):
        self.kind, self.root, self.uri = kind, root, uri
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / f"{kind}.log"

    @property
    def predict_path(self) -> str:
        return "/predict" if self.kind == "nbmlops" else "/invocations"

    @property
    def health_path(self) -> str:
        return "/health" if self.kind == "nbmlops" else "/ping"

    def command(self) -> list[str]:
        if self.kind == "nbmlops":
            return [sys.executable, "-c", NBMLOPS_MAIN, "serve", f"{MODEL}@champion",
                    "--port", str(self.port), "--log-level", "warning"]  # fmt: skip
        return [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}/1",
                "--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port)]  # fmt: skip

    def start(self, cold: bool, timeout: float = 180) -> float:
        """Spawn; seconds until the first successful health check. ``cold`` empties
        nbmlops's serving cache first."""
        if self.kind == "nbmlops" and cold:
            shutil.rmtree(self.root / ".nbmlops" / "serving-cache", ignore_errors=True)
        with open(self.log, "ab") as log:
            self.began = time.perf_counter()
            self.proc = subprocess.Popen(
                self.command(), cwd=self.root, env=_env(self.uri), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        while not _healthy(self.port, self.health_path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited: see {self.log}")
            if time.perf_counter() - self.began > timeout:
                raise RuntimeError(f"{self.kind} did not start in {timeout} s: see {self.log}")
            time.sleep(0.02)
        return time.perf_counter() - self.began

    def confirmed_after(self, timeout: float = 60) -> float:
        """nbmlops: seconds from spawning until /health says the registry confirmed."""
        while time.perf_counter() - self.began < timeout:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/health")
                if json.loads(conn.getresponse().read()).get("confirmed"):
                    return time.perf_counter() - self.began
            finally:
                conn.close()
            time.sleep(0.05)
        raise RuntimeError(f"nbmlops was not confirmed within {timeout} s: see {self.log}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _one_start(kind: str, root: Path, uri: str, cold: bool) -> tuple[float, float | None]:
    """Seconds to the first health answer (and, for a warm nbmlops start, to "confirmed")."""
    server = Server(kind, root, uri)
    try:
        seconds = server.start(cold)
        confirmed = server.confirmed_after() if kind == "nbmlops" and not cold else None
    finally:
        server.stop()
    return seconds, confirmed


def measure_startups(root: Path, uri: str, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Start-ups in rounds of nbmlops cold, nbmlops warm, mlflow: interleaved, so that a
    change in the machine's load (other processes) touches all three alike."""
    out: dict[str, dict[str, list[float]]] = {
        "nbmlops": {"cold": [], "warm": [], "confirmed": []},
        "mlflow": {"cold": []},
    }
    for i in range(rounds):
        for kind, cold in (("nbmlops", True), ("nbmlops", False), ("mlflow", True)):
            seconds, confirmed = _one_start(kind, root, uri, cold)
            out[kind]["cold" if cold else "warm"].append(seconds)
            if confirmed is not None:
                out[kind]["confirmed"].append(confirmed)
        print(f"  round {i + 1}: nbmlops cold {out['nbmlops']['cold'][-1]:.2f} s, "
              f"warm {out['nbmlops']['warm'][-1]:.2f} s, "
              f"mlflow {out['mlflow']['cold'][-1]:.2f} s", flush=True)  # fmt: skip
    return out


def measure(
    kind: str, root: Path, uri: str, body: bytes, args: argparse.Namespace, starts: list[float]
) -> dict[str, Any]:
    """Latency and throughput on a server started (warm for nbmlops) just before; its start
    joins ``starts``."""
    server = Server(kind, root, uri)
    try:
        starts.append(server.start(cold=False))
        latency = run_client(server.port, server.predict_path, body, 1, 0, args.requests)
        throughput = run_client(server.port, server.predict_path, body, args.clients,
                                args.seconds, 0)  # fmt: skip
    finally:
        server.stop()
    print(f"  {kind}: start-up {starts[-1]:.2f} s, p50 {latency['p50_ms']:.2f} ms, "
          f"p99 {latency['p99_ms']:.2f} ms, {throughput['rps']:.0f} req/s", flush=True)  # fmt: skip
    return {"startup_s": statistics.median(starts), "startups_s": starts, "latency": latency,
            "throughput": throughput}  # fmt: skip


def in_process(
    root: Path, uri: str, rows: list[dict[str, float]], n: int = 2000
) -> dict[str, float]:
    """Microseconds per single-row prediction: MLflow's ``PyFuncModel.predict`` on a DataFrame
    vs the gateway's path (checks against the signature, then the estimator on an array)."""
    import mlflow.pyfunc
    import pandas as pd

    from nbmlops.config import load_settings
    from nbmlops.core.serving.loader import ModelLoader, ModelRef

    loader = ModelLoader(load_settings(root, environ={}, tracking_uri=uri))
    model = loader.load(ModelRef.parse(f"{MODEL}@champion"))
    pyfunc = mlflow.pyfunc.load_model(str(model.path))
    df = pd.DataFrame(rows)
    checked = model.validate(rows)

    def per_call(fn: Any) -> float:
        for _ in range(100):
            fn()
        began = time.perf_counter()
        for _ in range(n):
            fn()
        return 1e6 * (time.perf_counter() - began) / n

    return {
        "pyfunc_predict_us": per_call(lambda: pyfunc.predict(df)),
        "gateway_path_us": per_call(lambda: model.predict(model.validate(rows))),
        "check_only_us": per_call(lambda: model.validate(rows)),
        "estimator_on_dataframe_us": per_call(lambda: model._call(checked.frame())),
        "estimator_on_array_us": per_call(lambda: model._call_array(checked.array())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--starts", type=int, default=None, help="Rounds of start-ups (nbmlops cold, warm, mlflow)."
    )
    parser.add_argument("--requests", type=int, default=None, help="Latency requests.")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=None, help="Throughput run length.")
    parser.add_argument("--client", nargs=5, metavar=("PORT", "PATH", "CLIENTS", "SECONDS", "N"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.client:
        port, path, clients, seconds, n = args.client
        body = sys.stdin.buffer.read()
        print(json.dumps(client_run(int(port), path, body, int(clients), float(seconds), int(n))))
        return
    args.starts = args.starts or (1 if args.quick else 5)  # medians of 6: the machine is shared
    args.requests = args.requests or (200 if args.quick else 500)
    args.seconds = args.seconds or (4.0 if args.quick else 10.0)

    root = Path(tempfile.mkdtemp(prefix="nbmlops-bench-serve-"))
    try:
        print(f"setting up {root} ...", flush=True)
        uri, rows = make_store(root)
        body = json.dumps({"dataframe_records": rows}).encode()
        print("in-process single-row prediction ...", flush=True)
        micro = in_process(root, uri, rows)
        print("start-ups ...", flush=True)
        startups = measure_startups(root, uri, args.starts)
        results = {}
        for kind in ("nbmlops", "mlflow"):
            print(f"{kind} ...", flush=True)
            starts = startups[kind]["warm" if kind == "nbmlops" else "cold"]
            results[kind] = measure(kind, root, uri, body, args, starts)
        nb_starts = startups["nbmlops"]
        results["nbmlops"].update(
            cold_startup_s=statistics.median(nb_starts["cold"]),
            cold_startups_s=nb_starts["cold"],
            warm_confirmed_s=statistics.median(nb_starts["confirmed"]),
            warm_confirmed_all_s=nb_starts["confirmed"],
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    nb, ml = results["nbmlops"], results["mlflow"]
    ratios = {
        "throughput": nb["throughput"]["rps"] / ml["throughput"]["rps"],
        "p99": ml["latency"]["p99_ms"] / nb["latency"]["p99_ms"],
        "p50": ml["latency"]["p50_ms"] / nb["latency"]["p50_ms"],
        "startup": ml["startup_s"] / nb["startup_s"],
        "startup_cold": ml["startup_s"] / nb["cold_startup_s"],
    }
    goals = {
        "throughput": (ratios["throughput"], GOAL_THROUGHPUT),
        "p99": (ratios["p99"], GOAL_P99),
        "startup": (ratios["startup"], GOAL_STARTUP),
    }
    rows_out = [
        ("start-up, warm cache (s)", nb["startup_s"], ml["startup_s"], ratios["startup"]),
        ("start-up, cold cache (s)", nb["cold_startup_s"], ml["startup_s"],
         ratios["startup_cold"]),
        ("latency p50 (ms)", nb["latency"]["p50_ms"], ml["latency"]["p50_ms"], ratios["p50"]),
        ("latency p99 (ms)", nb["latency"]["p99_ms"], ml["latency"]["p99_ms"], ratios["p99"]),
        (f"throughput, {args.clients} clients (req/s)", nb["throughput"]["rps"],
         ml["throughput"]["rps"], ratios["throughput"]),
    ]  # fmt: skip
    print()
    print(f"{'':<36}{'nbmlops':>12}{'mlflow':>12}{'better by':>12}")
    for label, a, b, r in rows_out:
        print(f"{label:<36}{a:>12.2f}{b:>12.2f}{r:>11.2f}x")
    print(
        f"errors under load: nbmlops {nb['throughput']['errors']}, mlflow {ml['throughput']['errors']}"
    )
    print(
        f"nbmlops warm start: registry confirmed after {nb['warm_confirmed_s']:.2f} s "
        "(from spawning; serving from the checked cached copy before that)"
    )
    print()
    print("in-process, one row (us): " + ", ".join(f"{k} {v:.0f}" for k, v in micro.items()))
    print()
    print("GOALS")
    for name, (ratio, goal) in goals.items():
        print(
            f"  {name:<11} {ratio:5.2f}x better (goal >= {goal:g}x)  {'MET' if ratio >= goal else 'MISSED'}"
        )
    print(
        f"  (start-up is judged warm; cold: {ratios['startup_cold']:.2f}x, "
        f"{nb['cold_startup_s']:.2f} s vs {ml['startup_s']:.2f} s)"
    )

    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(
        json.dumps(
            {
                "machine": {
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                },
                "settings": {
                    "quick": args.quick,
                    "starts": args.starts,
                    "requests": args.requests,
                    "clients": args.clients,
                    "seconds": args.seconds,
                },
                "results": results,
                "in_process_us": micro,
                "ratios": ratios,
                "goals": {k: {"ratio": r, "goal": g, "met": r >= g} for k, (r, g) in goals.items()},
            },
            indent=2,
        )
    )
    print(f"\nwritten to {RESULTS_FILE}")


if __name__ == "__main__":
    main()
