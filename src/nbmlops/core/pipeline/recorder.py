"""The step recorder: each executed notebook as an MLflow run, through the tracker's journal.

Pipeline runs, sweeps and reproductions all record their steps here: the task a kernel runs
(its environment carries the step's run key, so the notebook's ``%%track`` cells become child
runs of the step run), the run opened when the step starts (code digest, cache key, inputs),
and closed when it ends (the executed notebook and its source as artifacts, ``step.json``, the
outputs' digests, the error).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from nbmlops.config import Settings
from nbmlops.core.pipeline import notebook as nbfile
from nbmlops.core.pipeline.execute import StepOutcome, StepTask
from nbmlops.core.pipeline.spec import Pipeline, Step
from nbmlops.core.tracking.session import PARENT_KEY_ENV, Tracker, get_tracker


def step_kernel(pipeline: Pipeline, step: Step) -> str:
    """The kernel a step runs in: its own, else the pipeline's, else its notebook's."""
    return step.kernel or pipeline.kernel or nbfile.kernel_name_of(step.nb)


class StepRecorder:
    """Tasks and run records for the steps of ``pipeline``.

    ``parent_kind`` ("pipeline", "sweep" or None) names the run recorded above the step runs,
    whose key is :attr:`parent_key`; ``extra_tags`` go on every step run. Executed notebooks go
    to ``output_notebook`` (a single notebook) or ``outputs_dir/STEP.ipynb``."""

    def __init__(
        self,
        pipeline: Pipeline,
        settings: Settings,
        *,
        outputs_dir: Path,
        output_notebook: Path | None = None,
        parent_kind: str | None = "pipeline",
        extra_tags: dict[str, str] | None = None,
    ):
        self.p = pipeline
        self.settings = settings
        self.outputs_dir = outputs_dir
        self.output_notebook = output_notebook
        self.parent_kind = parent_kind
        self.extra_tags = dict(extra_tags or {})
        self.parent_key: str | None = None
        self.keys: dict[str, str] = {n: uuid.uuid4().hex for n in pipeline.order}  # run keys
        self.decided: dict[str, str] = {}  # step -> cache key
        self.input_digests: dict[str, dict[str, str]] = {}  # step -> input -> digest
        self._tracker: Tracker | None = None

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = get_tracker(self.settings)
        return self._tracker

    @property
    def has_tracker(self) -> bool:
        """Whether anything asked for the tracker yet (nothing recorded otherwise)."""
        return self._tracker is not None

    def task(self, step: Step, key: str | None = None) -> StepTask:
        """The task for ``step``, its kernel linked to run ``key`` (default: the step's)."""
        out = self.output_notebook or (self.outputs_dir / f"{step.name}.ipynb")
        env = {
            "NBMLOPS_SHIP": "defer",
            "NBMLOPS_PROJECT_DIR": str(self.settings.project_dir),
            "NBMLOPS_EXPERIMENT": self.p.experiment_name,
            "NBMLOPS_NOTEBOOK": str(step.notebook_path),
            PARENT_KEY_ENV: key or self.keys[step.name],
        }
        if self.settings.home:
            env["NBMLOPS_HOME"] = str(self.settings.home_dir)
        if self.settings.tracking_uri:
            env["NBMLOPS_TRACKING_URI"] = self.settings.resolved_tracking_uri
        return StepTask(
            name=step.name,
            notebook=str(step.notebook_path),
            output=str(Path(out).resolve()),
            parameters=step.injected(),
            cwd=str(self.p.root.resolve()),
            kernel_name=step_kernel(self.p, step),
            env=env,
            outputs={n: str(p) for n, p in step.output_paths.items()},
            timeout=step.timeout,
        )

    def datasets(self, step: Step, outcome: StepOutcome | None = None) -> list[dict[str, Any]]:
        """The step's inputs (and, once it ended, its outputs) as dataset records."""
        out: list[dict[str, Any]] = []
        for name, digest in self.input_digests.get(step.name, {}).items():
            inp = step.resolved_inputs[name]
            out.append(
                {
                    "name": name,
                    "digest": digest,
                    "kind": "file" if inp.kind != "data" else "version",
                    "shape": [],
                    "schema": None,
                    "nbytes": 0,
                    "role": "input",
                    "context": "input",
                    "path": str(inp.path) if inp.path else inp.ref,
                }
            )
        for name, info in (outcome.outputs if outcome else {}).items():
            out.append(
                {
                    "name": name,
                    "digest": info["digest"],
                    "kind": "file",
                    "shape": [info["size"]],
                    "schema": None,
                    "nbytes": info["size"],
                    "role": "output",
                    "context": "output",
                    "path": info["path"],
                }
            )
        return out

    def open_step(self, step: Step, task: StepTask, tags: dict[str, str] | None = None) -> str:
        """Journal the step run's start; returns its run key."""
        run_tags = {
            "mlflow.source.name": str(step.notebook_path),
            "mlflow.source.type": "NOTEBOOK",
            "nbmlops.kind": "notebook",
            "nbmlops.step": step.name,
            "nbmlops.code_digest": nbfile.code_digest(step.nb),
            "nbmlops.cache_key": self.decided.get(step.name, ""),
            "nbmlops.kernel": task.kernel_name,
            "nbmlops.inputs": json.dumps(self.input_digests.get(step.name, {}), sort_keys=True),
            **self.extra_tags,
            **(tags or {}),
        }
        if self.parent_kind is not None:
            if self.parent_kind == "pipeline":
                run_tags["nbmlops.pipeline"] = self.p.display_name
            run_tags["nbmlops.parent_run_key"] = self.parent_key or ""
        key = self.keys[step.name]
        self.tracker.open_run(
            step.name,
            self.p.experiment_name,
            run_tags,
            key=key,
            datasets=self.datasets(step),
        )
        return key

    def close_step(
        self,
        step: Step,
        task: StepTask,
        outcome: StepOutcome,
        *,
        status: str | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Journal the step run's end; ``status``, ``metrics`` and ``tags`` add to (or override)
        what the outcome says (a sweep's trial state and score)."""
        extra_tags = tags or {}
        tracker = self.tracker
        key = self.keys[step.name]
        artifacts = tracker.run_staging(key) / "artifacts"
        nb_dir = artifacts / "notebook"
        nb_dir.mkdir(parents=True, exist_ok=True)
        if os.path.isfile(task.output):
            shutil.copyfile(task.output, nb_dir / Path(task.output).name)
        shutil.copyfile(step.notebook_path, nb_dir / f"source-{step.notebook_path.name}")
        end_tags = {
            "nbmlops.outputs": json.dumps(
                {n: i["digest"] for n, i in outcome.outputs.items()}, sort_keys=True
            ),
            "nbmlops.output_notebook": task.output,
            "nbmlops.duration_s": f"{outcome.duration_s:.3f}",
        }
        if outcome.error:
            end_tags["nbmlops.error"] = outcome.error[:5000]
        if outcome.failed_cell is not None:
            end_tags["nbmlops.failed_cell"] = str(outcome.failed_cell)
        (artifacts / "step.json").write_text(
            json.dumps(
                {
                    "step": step.name,
                    "notebook": str(step.notebook_path),
                    "parameters": task.parameters,
                    "inputs": {
                        n: {
                            "digest": d,
                            "path": str(step.resolved_inputs[n].path or ""),
                            "ref": step.resolved_inputs[n].ref,
                        }
                        for n, d in self.input_digests.get(step.name, {}).items()
                    },
                    "outputs": outcome.outputs,
                    "cache_key": self.decided.get(step.name),
                    "ok": outcome.ok,
                    "error": outcome.error,
                },
                indent=1,
                default=str,
            )
        )
        tracker.close_run(
            key,
            self.p.experiment_name,
            status or ("FINISHED" if outcome.ok else ("KILLED" if outcome.killed else "FAILED")),
            params=task.parameters,
            metrics=metrics,
            tags={**end_tags, **extra_tags},
            datasets=self.datasets(step, outcome),
        )
