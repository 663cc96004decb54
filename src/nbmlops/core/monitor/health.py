"""Service health from the prediction log: request volume, error rates and latency
percentiles per model version and time window, and the serving process's CPU and memory
over time (sampled by the gateway into the log's database)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from nbmlops.core.monitor.performance import frame_single_window, window_starts

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

PERCENTILES = (50, 95, 99)


def health_table(log: pd.DataFrame, *, window: float | None = 3600.0) -> pd.DataFrame:
    """Per (model, version, window) of served (non-shadow) requests: requests, per second,
    server errors (5xx) and their rate, client errors (4xx), latency p50/p95/p99 (ms)."""
    import pandas as pd

    columns = [
        "model", "version", "window_start", "requests", "per_second", "errors_5xx",
        "error_rate", "errors_4xx", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
    ]  # fmt: skip
    served = log[log["route"] != "shadow"]
    if served.empty:
        return pd.DataFrame(columns=columns)
    starts = window_starts(served["ts"].to_numpy(), window)
    span = window if window is not None else max(float(np.ptp(served["ts"])), 1.0)
    rows: list[dict[str, Any]] = []
    keyed = served.assign(_start=starts)
    for (model, version, start), part in keyed.groupby(
        ["model", "version", "_start"], sort=True, dropna=False
    ):
        status = part["status"].to_numpy()
        lat = part["latency_ms"].dropna().to_numpy("float64")
        pct = np.percentile(lat, PERCENTILES) if len(lat) else [np.nan] * len(PERCENTILES)
        server_errors = int((status >= 500).sum())
        rows.append(
            {
                "model": model,
                "version": version,
                "window_start": pd.Timestamp(start, unit="s", tz="UTC"),
                "requests": len(part),
                "per_second": len(part) / span,
                "errors_5xx": server_errors,
                "error_rate": server_errors / len(part),
                "errors_4xx": int(((status >= 400) & (status < 500)).sum()),
                **{f"latency_p{p}_ms": float(v) for p, v in zip(PERCENTILES, pct, strict=True)},
            }
        )
    return pd.DataFrame(rows, columns=columns)


def resource_table(resources: pd.DataFrame, *, window: float | None = None) -> pd.DataFrame:
    """The process samples as they are (``window`` None) or averaged per window: time, pid,
    cpu_percent, rss_mb, threads (from raw samples, or from this table itself)."""
    frame = resources
    if "rss_mb" not in frame.columns:
        frame = frame.assign(rss_mb=frame["rss_bytes"] / 2**20)
    frame = frame[["time", "ts", "pid", "cpu_percent", "rss_mb", "threads"]]
    if window is None or frame.empty:
        return frame.reset_index(drop=True)
    import pandas as pd

    starts = window_starts(frame["ts"].to_numpy(), window)
    out = (
        frame.assign(ts=starts)
        .groupby(["ts", "pid"], sort=True)
        .agg(cpu_percent=("cpu_percent", "mean"), rss_mb=("rss_mb", "max"),
             threads=("threads", "max"))
        .reset_index()
    )  # fmt: skip
    out.insert(0, "time", pd.to_datetime(out["ts"], unit="s", utc=True))
    return out


def plot_latency(log: pd.DataFrame, *, window: float | None = 60.0) -> Figure:
    """Latency p50/p95/p99 over time per model version, with the error rate beneath."""
    from matplotlib.figure import Figure

    table = health_table(log, window=window)
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax, ax_err = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    if table.empty:
        ax.text(0.5, 0.5, "no requests in this window", ha="center", va="center")
        return fig
    for (model, version), part in table.groupby(["model", "version"], sort=True):
        for p, style in zip(PERCENTILES, ("-", "--", ":"), strict=True):
            ax.plot(
                part["window_start"], part[f"latency_p{p}_ms"], linestyle=style, marker=".",
                label=f"{model} v{version} p{p}",
            )  # fmt: skip
        ax_err.plot(part["window_start"], part["error_rate"] * 100, marker=".")
    frame_single_window(ax, table["window_start"], window)
    ax.set_ylabel("latency (ms)")
    ax.set_title("latency per model version")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    ax_err.set_ylabel("5xx (%)")
    ax_err.set_xlabel("window start (UTC)")
    ax_err.grid(alpha=0.3)
    return fig


def plot_resources(resources: pd.DataFrame) -> Figure:
    """CPU (%) and resident memory (MiB) of the serving process over time (raw samples or a
    :func:`resource_table`)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax_cpu, ax_mem = fig.subplots(2, 1, sharex=True)
    if resources.empty:
        ax_cpu.text(0.5, 0.5, "no resource samples yet", ha="center", va="center")
        return fig
    table = resource_table(resources)
    for pid, part in table.groupby("pid", sort=True):
        ax_cpu.plot(part["time"], part["cpu_percent"], marker=".", label=f"pid {pid}")
        ax_mem.plot(part["time"], part["rss_mb"], marker=".", label=f"pid {pid}")
    ax_cpu.set_ylabel("CPU (%)")
    ax_cpu.set_title("serving process")
    ax_cpu.grid(alpha=0.3)
    ax_cpu.legend(loc="best", fontsize="small")
    ax_mem.set_ylabel("memory RSS (MiB)")
    ax_mem.set_xlabel("time (UTC)")
    ax_mem.grid(alpha=0.3)
    frame_single_window(ax_mem, table["time"], 60.0)
    return fig
