"""Hyperparameter sweeps: an Optuna study over a notebook's parameters, each trial a recorded
notebook run on kernels started ahead, scored from the run's metric, pruned by the median
rule, resumable under its name (``nbmlops[sweep]``)."""

from __future__ import annotations

from nbmlops.core.pipeline.space import parse_space
from nbmlops.core.pipeline.sweep import run_sweep
from nbmlops.core.pipeline.trials import SweepReport, TrialReport

__all__ = ["SweepReport", "TrialReport", "parse_space", "run_sweep"]
