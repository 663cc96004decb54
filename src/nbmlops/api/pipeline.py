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
    "format_value",
    "parse_parameters",
    "plan_pipeline",
    "read_parameters",
    "reproduce",
    "run_notebook",
    "run_pipeline",
    "trial_line",
]
