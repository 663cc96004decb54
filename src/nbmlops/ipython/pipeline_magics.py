"""``%pipeline run|show pipeline.yaml``: the pipeline runner with a widget progress bar."""

from __future__ import annotations

import shlex
from typing import Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import display

from nbmlops.exceptions import NbmlopsError
from nbmlops.ipython.args import MagicArgumentParser


def _parser() -> MagicArgumentParser:
    p = MagicArgumentParser(
        prog="%pipeline", description="Pipelines of notebooks (see `nbmlops pipeline`)."
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=MagicArgumentParser)
    r = sub.add_parser("run", help="run the steps that changed, in parallel where possible")
    r.add_argument("pipeline")
    r.add_argument("--jobs", "-j", type=int, default=None)
    r.add_argument("--cluster", default=None, help="Dask scheduler tcp://HOST:PORT")
    r.add_argument("--force", action="append", default=[], help="STEP (repeatable; '*' all)")
    r.add_argument("--resume", action="store_true")
    r.add_argument("--dry-run", action="store_true")
    s = sub.add_parser("show", help="the steps in run order")
    s.add_argument("pipeline")
    return p


@magics_class
class PipelineMagics(Magics):
    @line_magic
    def pipeline(self, line: str) -> Any:
        """%pipeline run pipeline.yaml [--jobs N] [--force STEP] [--resume] [--dry-run]"""
        args = _parser().parse_args(shlex.split(line))
        import pandas as pd

        from nbmlops.api.pipeline import StepStatus, plan_pipeline, run_pipeline
        from nbmlops.config import load_settings

        try:
            if args.command == "show":
                p = plan_pipeline(args.pipeline, load_settings())
                return pd.DataFrame(
                    [
                        {
                            "step": n,
                            "notebook": str(p.steps[n].notebook),
                            "after": ", ".join(p.steps[n].upstream),
                            "outputs": ", ".join(map(str, p.steps[n].outputs.values())),
                        }
                        for n in p.order
                    ]
                )
            from nbmlops.widgets.progress import WidgetProgress

            checked = plan_pipeline(args.pipeline, load_settings())  # errors before any widget
            progress = WidgetProgress("pipeline")
            display(progress)
            report = run_pipeline(
                checked,
                jobs=args.jobs,
                cluster=args.cluster,
                force=args.force,
                resume=args.resume,
                dry_run=args.dry_run,
                progress=progress,
            )
        except NbmlopsError as err:
            raise IPythonUsageError(str(err)) from None
        frame = pd.DataFrame(report.table(), columns=["step", "status", "time", "why"])
        if not report.ok and not args.dry_run:
            # the cell fails as the CLI exits 1, so a notebook running this fails too
            display(frame)
            failed = [s for s in report.steps.values() if s.status == StepStatus.FAILED]
            raise IPythonUsageError(
                "\n".join(
                    f"{s.name} failed: {s.error} (notebook {s.output_notebook})" for s in failed
                )
                or f"pipeline {report.status.lower()}"
            )
        return frame
