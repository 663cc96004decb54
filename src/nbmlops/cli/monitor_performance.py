"""``nbmlops monitor label|performance|slices|health``: delayed labels, realized and estimated
performance, worst slices and service health of served models.

:func:`register` adds the commands to a typer app (the ``monitor`` group); ``app`` is a
group holding only them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from nbmlops.cli.output import Output

console = Output(highlight=False)

LAST_HELP = "Only the last span of the log: 90s, 15m, 1h, 7d."
WINDOW_HELP = "Window length: 15m, 1h, 1d, or 'all' for one window."


def _settings() -> Any:
    from nbmlops.config import load_settings

    return load_settings()


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _print_table(frame: Any, title: str, columns: list[str] | None = None) -> None:
    if frame.empty:
        console.print(f"{title}: nothing to show")
        return
    columns = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col in ("model", "slice", "feature") else "right")
    for row in frame[columns].itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    console.print(table)


def _save_figures(figures: dict[str, Any], folder: Path | None) -> None:
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=110)
        console.print(f"plot: {path}")


def label(
    file: Path = typer.Argument(..., help="CSV, Parquet, JSON or JSON-lines file of labels."),
    id_column: str = typer.Option("request_id", "--id-column", help="Column of request ids."),
    label_column: str = typer.Option("label", "--label-column", help="Column of true labels."),
    row_column: str = typer.Option(
        "row", "--row-column", help="Column of a record's position in a request of several."
    ),
    replace: bool = typer.Option(False, "--replace", help="Overwrite labels that differ."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Join delayed ground truth to the prediction log by request id (all or nothing)."""
    from nbmlops.api.monitor_performance import label as attach

    report = attach(
        file, settings=_settings(), id_column=id_column, label_column=label_column,
        row_column=row_column, replace=replace,
    )  # fmt: skip
    if as_json:
        print(json.dumps({**report.__dict__, "total": report.total}))
        return
    console.print(
        f"labels: {report.added} added, {report.replaced} replaced, "
        f"{report.unchanged} unchanged ({report.path})"
    )


SCHEDULER_HELP = (
    "Dask scheduler tcp://HOST:PORT whose workers read the log (default: monitor.dask_scheduler "
    "in nbmlops.yaml, else this machine)."
)


def performance(
    window: str = typer.Option("1h", "--window", "-w", help=WINDOW_HELP),
    last: str | None = typer.Option(None, "--last", help=LAST_HELP),
    model: str | None = typer.Option(None, "--model", help="Only this registered model."),
    version: int | None = typer.Option(None, "--version", help="Only this model version."),
    estimate: bool = typer.Option(
        True, "--estimate/--no-estimate", help="CBPE estimate for classifiers."
    ),
    plots: Path | None = typer.Option(None, "--plots", help="Save the plots into this folder."),
    scheduler: str | None = typer.Option(None, "--scheduler", help=SCHEDULER_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Realized (labelled) and estimated (CBPE) performance per window and model version."""
    from nbmlops.api.monitor_performance import performance as measure

    result = measure(
        settings=_settings(), window=window, last=last, model=model, version=version,
        estimate=estimate, scheduler=scheduler,
    )  # fmt: skip
    if as_json:
        print(json.dumps(result.to_records()))
    else:
        cols = ["model", "version", "window_start", "n", "labelled"]
        for m in result.metrics:
            cols += [m, f"{m}_estimated"]
        _print_table(result.table, "performance (realized, estimated)", cols)
    if plots is not None:
        _save_figures(result.figures, plots)


def slices(
    model: str | None = typer.Option(None, "--model", help="The registered model."),
    version: int | None = typer.Option(None, "--version", help="The model version."),
    last: str | None = typer.Option(None, "--last", help=LAST_HELP),
    source: str = typer.Option("realized", "--source", help="realized or estimated."),
    limit: int = typer.Option(10, "-n", "--limit", min=1, help="How many slices."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The feature ranges and categories where a model version performs worst."""
    from nbmlops.api.monitor_performance import slices as worst

    table = worst(
        settings=_settings(), model=model, version=version, last=last, source=source,
        limit=limit,
    )  # fmt: skip
    if as_json:
        print(table.to_json(orient="records"))
        return
    _print_table(table, "worst slices", ["slice", "n", "score", "overall", "gap", "metric"])


def health(
    window: str = typer.Option("1m", "--window", "-w", help=WINDOW_HELP),
    last: str | None = typer.Option(None, "--last", help=LAST_HELP),
    model: str | None = typer.Option(None, "--model", help="Only this registered model."),
    version: int | None = typer.Option(None, "--version", help="Only this model version."),
    plots: Path | None = typer.Option(None, "--plots", help="Save the plots into this folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Latency p50/p95/p99, error rates and volume per version; CPU and memory over time."""
    from nbmlops.api.monitor_performance import health as service_health

    result = service_health(
        settings=_settings(), window=window, last=last, model=model, version=version
    )
    if as_json:
        print(json.dumps(result.to_records()))
    else:
        _print_table(result.table, "service health")
        res = result.resources
        if res.empty:
            console.print("resources: no samples yet (the gateway samples every 5 s)")
        else:
            console.print(
                f"resources: {len(res)} samples, CPU mean {res.cpu_percent.mean():.1f}% "
                f"max {res.cpu_percent.max():.1f}%, memory max {res.rss_mb.max():.1f} MiB"
            )
    if plots is not None:
        _save_figures(result.figures, plots)


def register(app: typer.Typer) -> typer.Typer:
    """Add ``label``, ``performance``, ``slices`` and ``health`` to ``app``."""
    app.command("label")(label)
    app.command("performance")(performance)
    app.command("slices")(slices)
    app.command("health")(health)
    return app


app = register(
    typer.Typer(help="Performance and service health of served models.", no_args_is_help=True)
)
