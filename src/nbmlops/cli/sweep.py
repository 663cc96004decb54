"""``nbmlops sweep``: an Optuna study over a notebook's parameters, each trial a recorded
notebook run (see :mod:`nbmlops.core.pipeline.sweep`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from nbmlops.cli.pipeline import STATE_STYLE, RichProgress


def format_value(value: Any) -> str:
    """nbmlops.api.pipeline's format_value, imported when a sweep prints (not at start-up)."""
    from nbmlops.api.pipeline import format_value as fmt

    return fmt(value)


console = Console()
err_console = Console(stderr=True)

_MAX_ROWS = 40


def _table(report: Any) -> Table:
    rows = report.table()
    caption = None
    if len(rows) > _MAX_ROWS:
        half = _MAX_ROWS // 2
        scored = [r for r in rows if r[report.metric] is not None]
        scored.sort(key=lambda r: r[report.metric], reverse=report.direction == "maximize")
        keep = {r["trial"] for r in scored[:half]} | {r["trial"] for r in rows[-half:]}
        caption = (
            f"the {half} best and the {half} latest of {len(rows)} trials; all in "
            f"{report.out_dir / 'trials.csv'}"
        )
        rows = [r for r in rows if r["trial"] in keep]
    names = report.params_names()
    table = Table(title=f"sweep {report.study}: {report.direction} {report.metric}")
    table.add_column("trial", justify="right")
    table.add_column("state")
    table.add_column(report.metric, justify="right")
    for n in names:
        table.add_column(n)
    table.add_column("seconds", justify="right")
    table.add_column("note", overflow="fold")
    for r in rows:
        style = STATE_STYLE.get(r["state"], "")
        mark = "★ " if r["best"] else ""
        table.add_row(
            f"{mark}{r['trial']}",
            f"[{style}]{r['state']}[/]",
            format_value(r[report.metric]),
            *[format_value(r[n]) for n in names],
            format_value(r["seconds"]),
            r["note"],
            style="bold" if r["best"] else None,
        )
    table.caption = caption
    return table


def _run_id(run_key: str | None) -> str | None:
    from nbmlops.api.tracking import run_id_of

    return run_id_of(run_key)


def sweep(
    notebook: Path = typer.Argument(
        ..., help="The notebook; its 'parameters' cell declares what can be swept."
    ),
    param: list[str] = typer.Option(
        None,
        "--param",
        help="NAME=SPEC (repeatable). SPEC: uniform(a,b), loguniform(a,b), int(a,b[,step]), "
        "intlog(a,b), choice(v1,v2,...) (bare words are strings; numbers, true, false, none are "
        "literals), or a fixed value for every trial.",
    ),
    metric: str = typer.Option(
        ..., "--metric", "-m", help="The metric a %%track cell binds or logs (log_metric)."
    ),
    trials: int = typer.Option(
        20, "--trials", "-n", help="Trials in all: a study run before continues up to this."
    ),
    maximize: bool = typer.Option(
        False, "--maximize/--minimize", help="Direction of the metric (default: minimize)."
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Trials running at once."),
    study: str | None = typer.Option(
        None, "--study", help="Study name (default: NOTEBOOK-STEM-METRIC)."
    ),
    prune: bool = typer.Option(
        False,
        "--prune",
        help="Stop (interrupt) trials whose intermediate values (log_metric with step=) are "
        "worse than the median of earlier trials at the same step.",
    ),
    prune_startup: int = typer.Option(
        5, "--prune-startup", help="Trials that complete before any is pruned."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder for best_params.yaml, plots, trial notebooks."
    ),
    experiment: str | None = typer.Option(None, "--experiment", "-e"),
    kernel: str | None = typer.Option(None, "--kernel", "-k", help="Kernel name."),
    timeout: float | None = typer.Option(None, "--timeout", help="Seconds per cell."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the sampler."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Run an Optuna study over a notebook: each trial a papermill run, recorded in MLflow as a
    child of the sweep's run. Ends with a table of trials, plots and best_params.yaml. Running
    it again resumes the study (stored in .nbmlops/optuna.db). Exits 1 when no trial
    completed, 2 on bad input (checked before any kernel starts)."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # plots are files; never a GUI window
    from nbmlops.api.sweep import run_sweep

    progress = RichProgress(err_console, quiet=as_json)
    try:
        report = run_sweep(
            notebook,
            list(param or []),
            metric=metric,
            trials=trials,
            maximize=maximize,
            jobs=jobs,
            study=study,
            prune=prune,
            prune_startup=prune_startup,
            out=out,
            experiment=experiment,
            kernel=kernel,
            timeout=timeout,
            seed=seed,
            progress=progress,
        )
    finally:
        progress.stop()
    run_id = _run_id(report.run_key)
    if as_json:
        data = report.to_dict()
        data["run_id"] = run_id
        print(json.dumps(data, default=str))
        raise typer.Exit(0 if report.ok else 1)
    if report.trials:
        console.print(_table(report))
    best = report.best
    if best is not None:
        params = ", ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
        console.print(
            f"[bold green]best[/]: {report.metric} = {format_value(best.value)} with {params} "
            f"(trial {best.number})"
        )
        console.print(f"best parameters: {report.best_params_path}")
    else:
        console.print(f"[bold red]no trial completed[/]: no best {report.metric}")
    for name, path in report.plots.items():
        console.print(f"{name.replace('_', ' ')}: {path}")
    if report.run_key:
        where = f"run {run_id}" if run_id else f"run key {report.run_key}"
        console.print(f"sweep recorded in MLflow: {where}, experiment {report.experiment!r}")
        if not report.shipped:
            err_console.print(
                "[yellow]some runs are not in MLflow yet; they are safe in the journal and "
                "ship with `nbmlops sync`[/]"
            )
    for note in report.notes:
        console.print(f"[dim]note: {note}[/]")
    if not report.ok:
        raise typer.Exit(1)
