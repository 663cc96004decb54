"""Progress events of pipeline runs, notebook runs, sweeps and reproductions.

The runners call a :data:`Progress` callback with one of these frozen dataclasses; every
renderer (the command line's bar, the notebook widget) matches on their types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbmlops.core.pipeline.report import PipelineReport, StepReport
    from nbmlops.core.pipeline.trials import SweepReport, TrialReport


@dataclass(frozen=True)
class PipelinePlanned:
    """A pipeline (or a single notebook) is about to run these steps, in this order."""

    pipeline: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class StepStarted:
    """A step was handed to a kernel; ``reason`` says why it runs (not cached, forced...)."""

    step: str
    reason: str


@dataclass(frozen=True)
class StepFinished:
    """A step is settled: ran, failed, came from the cache or was skipped."""

    step: str
    report: StepReport


@dataclass(frozen=True)
class PipelineFinished:
    """Every step is settled."""

    report: PipelineReport


@dataclass(frozen=True)
class SweepPlanned:
    """A sweep opened its study: ``earlier`` trials done before, ``to_run`` more now."""

    study: str
    storage: str
    metric: str
    earlier: int
    to_run: int
    total: int


@dataclass(frozen=True)
class TrialStarted:
    """A trial was asked of the study and handed to a kernel."""

    number: int
    params: dict[str, Any]


@dataclass(frozen=True)
class TrialFinished:
    """A trial ended (complete, pruned or failed) and was told to the study."""

    trial: TrialReport


@dataclass(frozen=True)
class SweepFinished:
    """The sweep's report is written."""

    report: SweepReport


ProgressEvent = (
    PipelinePlanned
    | StepStarted
    | StepFinished
    | PipelineFinished
    | SweepPlanned
    | TrialStarted
    | TrialFinished
    | SweepFinished
)
Progress = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    """The callback used when the caller gives none."""
