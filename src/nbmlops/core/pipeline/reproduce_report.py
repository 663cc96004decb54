"""What a reproduction found: one :class:`Check` per input, the code, the status, each output and
each metric of the tracked cells."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.core.pipeline.formatting import exact_value


@dataclass
class Check:
    """One line of the comparison: an input, the code, the status, an output or a metric."""

    item: str
    recorded: str
    now: str
    match: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Reproduction:
    """One notebook run reproduced (or refused: ``ran`` False and ``error`` says why)."""

    run_id: str
    name: str
    experiment: str
    folder: Path
    checks: list[Check] = field(default_factory=list)
    ran: bool = False
    error: str | None = None
    new_run_id: str | None = None
    output_notebook: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.ran and self.error is None and all(c.match for c in self.checks)

    @property
    def differences(self) -> list[Check]:
        return [c for c in self.checks if not c.match]

    def table(self) -> list[tuple[str, str, str, str]]:
        return [(c.item, c.recorded, c.now, "yes" if c.match else "NO") for c in self.checks]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "experiment": self.experiment,
            "folder": str(self.folder),
            "ok": self.ok,
            "ran": self.ran,
            "error": self.error,
            "new_run_id": self.new_run_id,
            "output_notebook": self.output_notebook,
            "checks": [c.to_dict() for c in self.checks],
            "notes": list(self.notes),
        }


@dataclass
class ReproduceReport:
    """What ``reproduce`` did: one :class:`Reproduction` per notebook run."""

    run_id: str
    kind: str  # "notebook" | "pipeline"
    folder: Path
    rtol: float
    runs: list[Reproduction] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.ok for r in self.runs)

    @property
    def differences(self) -> list[tuple[str, Check]]:
        return [(r.name, c) for r in self.runs for c in r.differences]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "folder": str(self.folder),
            "rtol": self.rtol,
            "ok": self.ok,
            "runs": [r.to_dict() for r in self.runs],
            "notes": list(self.notes),
        }


# --- the entry point ---------------------------------------------------------------------------


def _label(runs: Iterable[Any]) -> dict[str, Any]:
    """Child runs by name; a name used twice gets #2, #3 in the order the cells ran."""
    out: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for r in runs:
        name = r.info.run_name or r.info.run_id
        seen[name] = seen.get(name, 0) + 1
        out[name if seen[name] == 1 else f"{name}#{seen[name]}"] = r
    return out


def _close(a: float, b: float, rtol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)


def metric_checks(before: list[Any], after: list[Any], rtol: float) -> list[Check]:
    """Each metric of the tracked cell runs below two runs, compared within ``rtol``."""
    old, new = _label(before), _label(after)
    checks: list[Check] = []
    for label in [*old, *(n for n in new if n not in old)]:
        a, b = old.get(label), new.get(label)
        if a is None or b is None:
            checks.append(
                Check(
                    f"run {label}",
                    a.info.status if a is not None else "(none)",
                    b.info.status if b is not None else "(none)",
                    False,
                    "a tracked cell run on one side only",
                )
            )
            continue
        ma, mb = a.data.metrics, b.data.metrics
        for metric in [*sorted(ma), *sorted(m for m in mb if m not in ma)]:
            va, vb = ma.get(metric), mb.get(metric)
            match = va is not None and vb is not None and _close(va, vb, rtol)
            note = ""
            if va is not None and vb is not None and not match and va != 0:
                note = f"relative difference {abs(vb - va) / abs(va):.3g}"
            checks.append(
                Check(f"metric {label}.{metric}", exact_value(va), exact_value(vb), match, note)
            )
    return checks
