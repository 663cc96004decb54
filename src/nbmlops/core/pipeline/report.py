"""Reports of pipeline and notebook runs: one :class:`StepReport` per step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nbmlops.core.pipeline.scheduler import StepStatus


@dataclass
class StepReport:
    """One step of a run: its status, why, how long, and what it read and wrote."""

    name: str
    status: StepStatus = StepStatus.PENDING
    reason: str = ""
    duration_s: float = 0.0
    run_key: str | None = None
    output_notebook: str | None = None
    error: str | None = None
    failed_cell: int | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    cache_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PipelineReport:
    """A pipeline run (or a single notebook run): its steps' reports in run order."""

    name: str
    steps: dict[str, StepReport]
    wall_s: float = 0.0
    run_key: str | None = None
    dry_run: bool = False
    experiment: str = ""

    @property
    def ok(self) -> bool:
        return not any(s.status.unsuccessful for s in self.steps.values())

    @property
    def status(self) -> str:
        return "FINISHED" if self.ok else "FAILED"

    def ran(self) -> list[str]:
        return [n for n, s in self.steps.items() if s.status == StepStatus.RAN]

    def table(self) -> list[tuple[str, str, str, str]]:
        return [
            (
                n,
                s.status,
                f"{s.duration_s:.2f}s" if s.status.timed else "",
                s.error or s.reason,
            )
            for n, s in self.steps.items()
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "wall_s": round(self.wall_s, 3),
            "run_key": self.run_key,
            "dry_run": self.dry_run,
            "steps": {n: s.to_dict() for n, s in self.steps.items()},
        }
