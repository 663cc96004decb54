"""``nbmlops monitor``: drift and data quality of a served model's traffic."""

from __future__ import annotations

import json
import math

import typer
from rich.table import Table

from nbmlops.cli.output import Output

app = typer.Typer(
    help="Monitoring of served models: drift, data quality, performance and service health.",
    no_args_is_help=True,
)
console = Output(highlight=False)


def _num(v: object) -> str:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


@app.command("drift")
def drift(
    model: str | None = typer.Option(
        None, "--model", help="NAME or NAME@alias (default alias: champion)."
    ),
    reference: str | None = typer.Option(
        None, "--reference", help="A data version NAME@k (default: the champion's training data)."
    ),
    current: str | None = typer.Option(
        None, "--current", help="A data version NAME@k (default: the prediction log window)."
    ),
    last: str | None = typer.Option(None, "--last", help="Window: 15m, 1h (default), 7d."),
    since: str | None = typer.Option(None, "--since", help="Window start, ISO time (UTC)."),
    until: str | None = typer.Option(None, "--until", help="Window end, ISO time (UTC)."),
    rows: int | None = typer.Option(None, "--rows", min=1, help="The newest N rows of the log."),
    profiles: bool = typer.Option(False, "--profiles", help="Read the window from its profiles."),
    test: str = typer.Option(
        "auto", "--test", help="auto, ks, wasserstein, chi2, jensenshannon, psi."
    ),
    correction: str = typer.Option("bh", "--correction", help="bh, bonferroni or none."),
    multivariate: bool = typer.Option(
        False, "--multivariate", help="Add the PCA reconstruction test."
    ),
    html: str | None = typer.Option(
        None, "--html", help="Write a self-contained HTML report here."
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        help="Dask scheduler tcp://HOST:PORT whose workers summarise the log (default: "
        "monitor.dask_scheduler in nbmlops.yaml, else this machine).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Drift of the prediction log (or --current) from the champion's training data (or
    --reference), per feature and for the dataset. Exits 1 when the dataset drifted."""
    from nbmlops.api.monitor import drift as run

    report = run(
        reference,
        current,
        model=model,
        last=last,
        since=since,
        until=until,
        rows=rows,
        profiles=profiles,
        test=test,
        correction=correction,
        multivariate=multivariate,
        html=html,
        scheduler=scheduler,
    )
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        table = Table(title=f"{report.reference_label}  vs  {report.current_label}")
        for col in (
            "feature",
            "kind",
            "test",
            "score",
            "threshold",
            "drifted",
            "psi",
            "missing",
            "new categories",
        ):
            table.add_column(col)
        for r in report.features.to_dict("records"):
            table.add_row(
                str(r["feature"]),
                str(r["kind"]),
                str(r["test"]),
                _num(r["score"]),
                _num(r["threshold"]),
                "[red]yes[/red]" if r["drifted"] else "no",
                _num(r["psi"]),
                _num(r["current_missing"]),
                ", ".join(r["new_categories"][:3]),
            )
        console.print(table)
        console.print(report.summary())
        for note in report.notes:
            console.print(f"note: {note}")
        if html:
            console.print(f"report written to {html}")
    if report.dataset_drift:
        raise typer.Exit(1)


@app.command("quality")
def quality(
    model: str | None = typer.Option(None, "--model", help="NAME or NAME@alias."),
    last: str | None = typer.Option(None, "--last", help="Window: 15m, 1h (default), 7d."),
    since: str | None = typer.Option(None, "--since", help="Window start, ISO time (UTC)."),
    rows: int | None = typer.Option(None, "--rows", min=1, help="The newest N rows of the log."),
    window: str = typer.Option("1h", "--window", help="Report per window of this length."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Null shares, out-of-range values, unseen categories and schema violations of the
    prediction log against the training data's schema. Exits 1 on a violation."""
    from nbmlops.api.monitor import quality as run

    report = run(model=model, last=last, since=since, rows=rows, window=window)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        console.print(report.summary())
        for v in report.violations:
            console.print(f"- {v}")
    if not report.ok:
        raise typer.Exit(1)


@app.command("report")
def report(
    model: str = typer.Option(..., "--model", help="NAME or NAME@alias (default: champion)."),
    version: int | None = typer.Option(None, "--version", help="The model version."),
    last: str | None = typer.Option(None, "--last", help="Span of the log: 1h, 24h (default), 7d."),
    since: str | None = typer.Option(None, "--since", help="Window start, ISO time (UTC)."),
    until: str | None = typer.Option(None, "--until", help="Window end, ISO time (UTC)."),
    window: str = typer.Option("1h", "--window", "-w", help="Tables and plots per window."),
    html: str | None = typer.Option(None, "--html", help="Write the HTML report here."),
    log: bool = typer.Option(True, "--log/--no-log", help="Log a monitoring run to MLflow."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Drift, data quality, realized and estimated performance and service health of one
    model version in one report, logged to MLflow (experiment monitoring/NAME)."""
    from nbmlops.api.monitor_report import report as run

    result = run(
        model, version, last=last, since=since, until=until,
        window=window, html=html, log=log,
    )  # fmt: skip
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return
    console.print(result.summary())
    for note in result.drift.notes + result.notes:
        console.print(f"note: {note}")
    if result.html_path:
        console.print(f"report written to {result.html_path}")
    if result.run_id:
        console.print(f"monitoring run {result.run_id} in experiment {result.experiment}")


# label, performance, slices and health live in their own module; one `nbmlops monitor` group.
from nbmlops.cli import monitor_performance  # noqa: E402

monitor_performance.register(app)
