"""``nbmlops run`` (one notebook) and ``nbmlops pipeline run|show`` (a DAG of notebooks)."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from nbmlops.cli.output import JSON_OPTION, listing, print_json, print_table

if TYPE_CHECKING:
    from nbmlops.api.pipeline import ProgressEvent

# nbmlops.api.pipeline is imported where a command needs it: every nbmlops command imports
# this module (typer reads the signatures), and the pipeline machinery costs ~0.4 s of a
# read-only command's start-up (python -X importtime).

app = typer.Typer(no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

STATUS_STYLE = {  # by StepStatus value (a StrEnum)
    "ran": "green",
    "cached": "cyan",
    "failed": "bold red",
    "skipped": "yellow",
    "would run": "magenta",
    "would skip": "cyan",
}


STATE_STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "bold red", "RUNNING": "cyan"}


class RichProgress:
    """A live bar over the steps (or a sweep's trials) plus one line per finished one."""

    def __init__(self, console: Console, quiet: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.console = console
        self.quiet = quiet
        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=quiet,
        )
        self.task: Any = None
        self.running: list[str] = []
        self.running_prefix = "running "
        self.metric = ""

    def __call__(self, event: ProgressEvent) -> None:
        from nbmlops.api.pipeline import (
            PipelineFinished,
            PipelinePlanned,
            StepFinished,
            StepStarted,
            SweepFinished,
            SweepPlanned,
            TrialFinished,
            TrialStarted,
            trial_line,
        )

        match event:
            case PipelinePlanned(steps=steps):
                self.progress.start()
                self.task = self.progress.add_task("starting", total=len(steps))
            case SweepPlanned():
                self.metric = event.metric
                self.running_prefix = "running trial "
                if not self.quiet:
                    self.console.print(
                        f"study [bold]{event.study}[/] ({event.storage}): "
                        f"{event.earlier} earlier trial(s), {event.to_run} to run"
                    )
                if event.to_run:
                    self.progress.start()
                    self.task = self.progress.add_task("starting kernels", total=event.to_run)
            case StepStarted(step=step):
                self._started(step)
            case TrialStarted(number=number):
                self._started(str(number))
            case StepFinished(report=rep):
                self._ended(rep.name)
                if not self.quiet:
                    style = STATUS_STYLE.get(rep.status, "")
                    took = f" {rep.duration_s:.1f}s" if rep.status.timed else ""
                    why = rep.error or rep.reason
                    self.progress.console.print(
                        f"  [{style}]{rep.status:>7}[/] {rep.name}{took}  [dim]{why}[/]"
                    )
            case TrialFinished(trial=trial):
                self._ended(str(trial.number))
                if not self.quiet:
                    style = STATE_STYLE.get(trial.state, "")
                    value, params, took = trial_line(trial, self.metric)
                    self.progress.console.print(
                        f"  [{style}]{trial.state:>8}[/] trial {trial.number}{value}  {params}"
                        f"[dim]{took}  {trial.error or ''}[/]"
                    )
            case PipelineFinished() | SweepFinished():
                self.stop()

    def _started(self, name: str) -> None:
        self.running.append(name)
        self._describe()

    def _ended(self, name: str) -> None:
        if name in self.running:
            self.running.remove(name)
        self.progress.advance(self.task)
        self._describe()

    def _describe(self) -> None:
        running = self.running
        text = self.running_prefix + ", ".join(running) if running else "waiting"
        self.progress.update(self.task, description=text)

    def stop(self) -> None:
        self.progress.stop()


RUN_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


def _params(args: list[str]) -> list[tuple[str, str]]:
    """``-p NAME VALUE`` pairs (papermill's form; typer has no two-value repeatable option, so
    they arrive as extra arguments and are read here)."""
    from nbmlops.exceptions import PipelineError

    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        if args[i] in ("-p", "--parameter"):
            if len(args) - i < 3:
                raise PipelineError(
                    f"{args[i]} needs a name and a value", fix="Write -p NAME VALUE."
                )
            pairs.append((args[i + 1], args[i + 2]))
            i += 3
        else:
            raise PipelineError(
                f"Unexpected argument {args[i]!r}",
                fix="Parameters are passed as -p NAME VALUE; see `nbmlops run --help`.",
            )
    return pairs


def _named_paths(items: list[str] | None, option: str) -> dict[str, str]:
    from nbmlops.exceptions import PipelineError

    out: dict[str, str] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise PipelineError(
                f"{option} {item!r} is not NAME=PATH", fix=f"Write {option} NAME=PATH."
            )
        out[name] = path
    return out


@contextlib.contextmanager
def _stoppable(progress: RichProgress) -> Iterator[None]:
    """Ctrl-C and SIGTERM stop the run: the running steps' kernels are killed and recorded as
    KILLED, the runs are left in the journal for a detached shipper, and the command exits
    130 within seconds, saying what it stops.

    The handlers are installed explicitly: a command started from a non-interactive shell's
    background job inherits SIGINT *ignored* (POSIX), and Python then keeps it ignored, so a
    Ctrl-C or ``kill -INT`` would never stop the kernels. A second signal while stopping is
    acknowledged and stopping goes on: cutting it short could leave a step's run open.
    """
    stopping = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal stopping
        if stopping:
            err_console.print("still stopping (the kernels are being killed)", highlight=False)
            return
        stopping = True
        name = signal.Signals(signum).name
        steps = ", ".join(progress.running) or "none running"
        err_console.print(
            f"{name}: stopping the kernels of the running steps ({steps}); they are recorded "
            "as killed",
            highlight=False,
            soft_wrap=True,
        )
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except KeyboardInterrupt:
        from nbmlops.api.pipeline import end_interrupted

        progress.stop()
        journal = end_interrupted()
        err_console.print(
            "stopped. The runs so far are safe"
            + (f" in {journal}" if journal else "")
            + "; `nbmlops pipeline run --resume` continues, `nbmlops sync` ships them now.",
            highlight=False,
            soft_wrap=True,
        )
        # Everything is recorded and closed: the objects left die with the process, and the
        # interpreter's last full collection of them took ~10 s on a loaded machine.
        import gc

        gc.freeze()
        raise typer.Exit(130) from None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _ship(quiet: bool) -> dict[str, str]:
    """Wait for the runs to reach MLflow; returns run key -> run id."""
    from nbmlops.api.tracking import ship_pending

    result = ship_pending()
    if result is None:
        return {}
    if not result.shipped and not quiet:
        err_console.print(
            f"[yellow]runs not yet in MLflow ({result.last_error}); they are "
            f"safe in {result.journal_dir} and ship with `nbmlops sync`[/]"
        )
    return result.run_ids


def run(
    ctx: typer.Context,
    notebook: Path = typer.Argument(..., help="The notebook (.ipynb) to execute."),
    params_file: list[Path] | None = typer.Option(
        None, "--parameters-file", "-f", help="YAML file of parameters (repeatable)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Executed notebook (default under .nbmlops/notebooks)."
    ),
    input_: list[str] | None = typer.Option(
        None, "--input", "-i", help="NAME=PATH of an input file whose digest is recorded."
    ),
    output_file: list[str] | None = typer.Option(
        None, "--output-file", "-O", help="NAME=PATH of a file the notebook writes (recorded)."
    ),
    experiment: str | None = typer.Option(None, "--experiment", "-e"),
    kernel: str | None = typer.Option(None, "--kernel", "-k", help="Kernel name."),
    timeout: float | None = typer.Option(None, "--timeout", help="Seconds per cell."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Execute a notebook with papermill as a recorded run. Parameters: -p NAME VALUE
    (repeatable), checked against the notebook's parameters cell before the kernel starts. Its
    %%track cells become child runs; a failed cell exits 1 and keeps the output notebook."""
    from nbmlops.api.pipeline import parse_parameters, read_parameters, run_notebook
    from nbmlops.config import load_settings

    settings = load_settings()
    declared = read_parameters(notebook)
    values = parse_parameters(_params(ctx.args), list(params_file or []), declared)
    progress = RichProgress(err_console, quiet=as_json)
    try:
        result = run_notebook(
            notebook,
            values,
            output=output,
            inputs=_named_paths(input_, "--input"),
            outputs=_named_paths(output_file, "--output-file"),
            experiment=experiment,
            kernel=kernel,
            timeout=timeout,
            progress=progress,
            settings=settings,
        )
    finally:
        progress.stop()
    ids = _ship(as_json)
    rep = result.report
    run_id = ids.get(rep.run_key or "")
    if as_json:
        print(
            json.dumps(
                {
                    "ok": result.ok,
                    "run_id": run_id,
                    "experiment": result.experiment,
                    "output_notebook": result.output_notebook,
                    "parameters": result.parameters,
                    "error": rep.error,
                    "failed_cell": rep.failed_cell,
                    "outputs": rep.outputs,
                },
                default=str,
            )
        )
    else:
        if result.ok:
            console.print(f"[green]finished[/] {notebook} in {rep.duration_s:.1f}s")
        else:
            cell = f" in cell {rep.failed_cell}" if rep.failed_cell is not None else ""
            console.print(f"[bold red]failed[/]{cell}: {rep.error}")
        console.print(f"  output notebook  {result.output_notebook}")
        console.print(f"  MLflow run       {run_id or '(journaled, not yet shipped)'}")
        console.print(f"  experiment       {result.experiment}")
    if not result.ok:
        raise typer.Exit(1)


@app.command("run")
def pipeline_run(
    pipeline: Path = typer.Argument(..., help="pipeline.yaml"),
    jobs: int | None = typer.Option(None, "--jobs", "-j", help="Steps at once (default: cores)."),
    cluster: str | None = typer.Option(
        None, "--cluster", help="Dask scheduler tcp://HOST:PORT instead of local processes."
    ),
    force: list[str] | None = typer.Option(
        None, "--force", help="Run STEP even if cached (repeatable; '*' for all)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the last failed run."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say which steps would run and why."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Run a pipeline of notebooks: steps in dependency order, independent ones in parallel,
    unchanged ones skipped (cache)."""
    from nbmlops.api.pipeline import run_pipeline

    progress = RichProgress(err_console, quiet=as_json or dry_run)
    try:
        with _stoppable(progress):
            report = run_pipeline(
                pipeline,
                jobs=jobs,
                cluster=cluster,
                force=force or (),
                resume=resume,
                dry_run=dry_run,
                progress=progress,
            )
    finally:
        progress.stop()
    ids = _ship(as_json) if not dry_run and report.run_key else {}
    if as_json:
        data = report.to_dict()
        data["run_id"] = ids.get(report.run_key or "")
        print(json.dumps(data, default=str))
    else:
        table = Table(title=f"pipeline {report.name}" + (" (dry run)" if dry_run else ""))
        for col in ("step", "status", "time", "why"):
            table.add_column(col)
        for name, status, took, why in report.table():
            table.add_row(name, f"[{STATUS_STYLE.get(status, '')}]{status}[/]", took, why)
        console.print(table)
        if not dry_run:
            run_id = ids.get(report.run_key or "")
            where = f"MLflow run {run_id}" if run_id else "nothing ran: no MLflow run"
            console.print(f"{report.status.lower()} in {report.wall_s:.1f}s; {where}")
            failed = [s for s in report.steps.values() if s.status == "failed"]
            for s in failed:
                cell = f" (cell {s.failed_cell})" if s.failed_cell is not None else ""
                console.print(f"[red]{s.name}[/]{cell}: {s.error}; notebook {s.output_notebook}")
            if failed:
                console.print("fix it and rerun with --resume")
    if not report.ok and not dry_run:
        raise typer.Exit(1)


@app.command("show")
def pipeline_show(
    pipeline: Path = typer.Argument(..., help="pipeline.yaml"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Check a pipeline file and print its steps in run order with their inputs and outputs."""
    from nbmlops.api.pipeline import plan_pipeline
    from nbmlops.config import load_settings

    p = plan_pipeline(pipeline, load_settings())
    steps = []
    for n in p.order:
        s = p.steps[n]
        steps.append(
            {
                "step": n,
                "notebook": str(s.notebook),
                "after": list(s.upstream),
                "inputs": {k: i.ref or str(i.path) for k, i in s.resolved_inputs.items()},
                "outputs": {k: str(v) for k, v in s.output_paths.items()},
            }
        )
    if as_json:
        print_json({"pipeline": p.display_name, "experiment": p.experiment_name, "steps": steps})
        return
    rows = []
    for n in p.order:
        s = p.steps[n]
        ins = ", ".join(
            f"{k}={i.ref or Path(str(i.path)).name}" for k, i in s.resolved_inputs.items()
        )
        outs = ", ".join(f"{k}={Path(v).name}" for k, v in s.output_paths.items())
        rows.append((n, str(s.notebook), ", ".join(s.upstream), ins, outs))
    title = f"pipeline {p.display_name} (experiment {p.experiment_name})"
    columns = ("step", "notebook", "after", "inputs", "outputs")
    print_table(listing(title, columns, rows), console)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
