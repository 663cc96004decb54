"""Notebooks as reproducible, parameterized pipeline steps: one notebook run
(``run_notebook``), pipelines of them (``plan_pipeline``, ``run_pipeline``: cached when
nothing changed, parallel on this machine or on a Dask cluster), and ``reproduce`` of a
recorded run. Progress comes as typed events (one class each) to a ``progress`` callable."""

from __future__ import annotations

from nbmlops.core.pipeline.events import (
    PipelineFinished,
    PipelinePlanned,
    Progress,
    ProgressEvent,
    StepFinished,
    StepStarted,
    SweepFinished,
    SweepPlanned,
    TrialFinished,
    TrialStarted,
)
from nbmlops.core.pipeline.formatting import format_value, trial_line
from nbmlops.core.pipeline.params import parse_cli as parse_parameters
from nbmlops.core.pipeline.params import read_parameters
from nbmlops.core.pipeline.report import PipelineReport, StepReport
from nbmlops.core.pipeline.reproduce import reproduce
from nbmlops.core.pipeline.runner import NotebookRun, plan_pipeline, run_notebook, run_pipeline
from nbmlops.core.pipeline.scheduler import StepStatus
from nbmlops.core.pipeline.spec import Pipeline, Step

__all__ = [
    "NotebookRun",
    "Pipeline",
    "PipelineFinished",
    "PipelinePlanned",
    "PipelineReport",
    "Progress",
    "ProgressEvent",
    "Step",
    "StepFinished",
    "StepReport",
    "StepStarted",
    "StepStatus",
    "SweepFinished",
    "SweepPlanned",
    "TrialFinished",
    "TrialStarted",
    "end_interrupted",
    "format_value",
    "parse_parameters",
    "plan_pipeline",
    "read_parameters",
    "reproduce",
    "run_notebook",
    "run_pipeline",
    "trial_line",
]


def end_interrupted(flush_seconds: float = 2.0) -> str | None:
    """After Ctrl-C or SIGTERM: close this process's tracker with a short wait for MLflow
    instead of ``exit_flush_seconds`` (30 s by default, and more when MLflow is still to be
    imported on a busy machine); what is not shipped by then stays in the journal and goes to
    a detached shipper, so nothing recorded is lost. Returns the journal folder, if any."""
    from nbmlops.core.tracking.session import current_tracker

    tracker = current_tracker()
    if tracker is None:
        return None
    # The tracker reads the bound at close time; a copy keeps the user's settings untouched.
    tracker.settings = tracker.settings.model_copy(
        update={"exit_flush_seconds": min(flush_seconds, tracker.settings.exit_flush_seconds)}
    )
    tracker.close()
    return str(tracker.settings.journal_dir)
