"""``python -m nbmlops.demo``: run the quick-start notebook through papermill, twice with
different parameters, tracked into the embedded store; then the example pipeline of notebooks,
cold and again with nothing changed; and show where the runs are."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    notebook = Path(args[0] if args else "notebooks/quickstart.ipynb").resolve()
    if not notebook.is_file():
        console.print(f"[red]error:[/red] no notebook at {notebook}; run from the project folder")
        return 2
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import papermill

    from nbmlops.config import load_settings

    settings = load_settings()
    out_dir = notebook.parent / "out"
    out_dir.mkdir(exist_ok=True)
    os.environ["NBMLOPS_NOTEBOOK"] = str(notebook)  # papermill does not tell the kernel
    for params in ({"C": 0.1, "n_trees": 30}, {"C": 1.0, "n_trees": 60}):
        label = ", ".join(f"{k}={v}" for k, v in params.items())
        out = out_dir / f"{notebook.stem}-C{params['C']}.ipynb"
        console.rule(f"papermill {notebook.name} ({label})")
        papermill.execute_notebook(
            str(notebook),
            str(out),
            parameters=params,
            kernel_name="python3",
            cwd=str(settings.project_dir),
            progress_bar=True,
        )
        console.print(f"executed notebook: {out}")
    _show_runs(settings, notebook.stem)
    pipeline = notebook.parent / "pipeline" / "pipeline.yaml"
    if pipeline.is_file():
        _run_pipeline(pipeline)
    return 0


def _run_pipeline(pipeline: Path) -> None:
    from nbmlops.api.pipeline import run_pipeline
    from nbmlops.api.tracking import get_tracker
    from nbmlops.cli.pipeline import RichProgress

    for attempt in ("cold", "again, nothing changed"):
        console.rule(f"pipeline {pipeline.parent.name}/{pipeline.name} ({attempt})")
        progress = RichProgress(console)
        try:
            report = run_pipeline(pipeline, progress=progress)
        finally:
            progress.stop()
        ran = ", ".join(report.ran()) or "nothing (every step cached)"
        console.print(f"{report.status.lower()} in {report.wall_s:.1f}s; ran: {ran}")
        if not report.ok:
            raise SystemExit(1)
    tracker = get_tracker()
    tracker.flush(tracker.settings.ship_wait_seconds)
    console.print(
        f"pipeline runs are in experiment [bold]{report.experiment}[/bold]: the pipeline run, "
        "one child run per step, and the steps' %%track runs under them"
    )


def _show_runs(settings, experiment: str) -> None:
    from nbmlops.api.tracking import open_store, sync_journal

    sync_journal(settings)  # anything a kernel could not ship before it was shut down
    client = open_store(settings)
    exp = client.get_experiment_by_name(experiment)
    runs = (
        client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
        if exp
        else []
    )
    table = Table(title=f"experiment {experiment!r}: {len(runs)} runs")
    for col in ("run", "status", "params", "metrics", "models"):
        table.add_column(col)
    for run in runs:
        models = client.search_logged_models(
            [exp.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        table.add_row(
            f"{run.info.run_name}\n{run.info.run_id[:12]}",
            run.info.status,
            "\n".join(f"{k}={v}" for k, v in sorted(run.data.params.items())),
            "\n".join(f"{k}={v:.4g}" for k, v in sorted(run.data.metrics.items())),
            "\n".join(m.name for m in models),
        )
    console.print(table)
    console.print(
        f"runs are in [bold]{settings.resolved_tracking_uri}[/bold]\n"
        f"artifacts in {settings.resolved_artifact_location}\n"
        "open the MLflow UI on them with:  [bold].venv/bin/nbmlops ui[/bold]   (or: make ui)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
