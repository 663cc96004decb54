"""A sweep's trials: what each reported (:class:`TrialReport`), the sweep's report, and the
journal segment of a trial's kernel, followed while it runs for the trial's metric."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.core.tracking.journal import SEGMENT_SUFFIX
from nbmlops.core.tracking.shipper import PARENT_KEY_TAG

COMPLETE, PRUNED, FAIL, RUNNING = "COMPLETE", "PRUNED", "FAIL", "RUNNING"


# --- reports ---------------------------------------------------------------------------------
@dataclass
class TrialReport:
    number: int
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    value: float | None
    params: dict[str, Any]
    duration_s: float | None = None
    run_key: str | None = None
    output_notebook: str | None = None
    error: str | None = None
    earlier: bool = False  # run by an earlier sweep of the same study

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SweepReport:
    study: str
    storage: str
    notebook: str
    metric: str
    direction: str
    total: int  # trials asked for, in all
    earlier: int  # complete or pruned before this sweep
    trials: list[TrialReport]
    out_dir: Path
    experiment: str
    best: TrialReport | None = None
    best_params_path: Path | None = None
    plots: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    run_key: str | None = None
    wall_s: float = 0.0
    shipped: bool = True

    @property
    def ran(self) -> list[TrialReport]:
        return [t for t in self.trials if not t.earlier]

    @property
    def ok(self) -> bool:
        """A best trial exists and not every trial of this sweep failed."""
        ran = self.ran
        return self.best is not None and (not ran or any(t.state != FAIL for t in ran))

    def counts(self, trials: list[TrialReport] | None = None) -> dict[str, int]:
        trials = self.trials if trials is None else trials
        return {s: sum(1 for t in trials if t.state == s) for s in (COMPLETE, PRUNED, FAIL)}

    def params_names(self) -> list[str]:
        names: list[str] = []
        for t in self.trials:
            names += [n for n in t.params if n not in names]
        return names

    def table(self) -> list[dict[str, Any]]:
        """One row per trial: number, state, value, the parameters, seconds, error."""
        names = self.params_names()
        best = self.best.number if self.best else None
        rows = []
        for t in self.trials:
            row: dict[str, Any] = {
                "trial": t.number,
                "state": t.state,
                self.metric: t.value,
                **{n: t.params.get(n) for n in names},
                "seconds": None if t.duration_s is None else round(t.duration_s, 1),
                "best": t.number == best,
                "note": "; ".join(x for x in ("earlier sweep" if t.earlier else "", t.error) if x),
            }
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "storage": self.storage,
            "notebook": self.notebook,
            "metric": self.metric,
            "direction": self.direction,
            "total": self.total,
            "earlier": self.earlier,
            "ok": self.ok,
            "best": self.best.to_dict() if self.best else None,
            "best_params_path": str(self.best_params_path) if self.best_params_path else None,
            "plots": {k: str(v) for k, v in self.plots.items()},
            "trials": [t.to_dict() for t in self.trials],
            "out_dir": str(self.out_dir),
            "experiment": self.experiment,
            "run_key": self.run_key,
            "notes": self.notes,
            "wall_s": round(self.wall_s, 3),
            "shipped": self.shipped,
        }


def trial_report(t: Any, earlier: bool) -> TrialReport:
    """The report of an Optuna trial (``earlier``: run by an earlier sweep of the study)."""
    value = t.value if t.state.name == COMPLETE else None
    if t.state.name == PRUNED and t.intermediate_values:
        value = t.intermediate_values[max(t.intermediate_values)]
    return TrialReport(
        number=t.number,
        state=t.state.name,
        value=value,
        params=dict(t.params),
        duration_s=t.user_attrs.get("nbmlops.duration_s"),
        run_key=t.user_attrs.get("nbmlops.run_key"),
        output_notebook=t.user_attrs.get("nbmlops.output_notebook"),
        error=t.user_attrs.get("nbmlops.error"),
        earlier=earlier,
    )


class TrialJournal:
    """Follows the journal segment of one trial's kernel: the runs there whose parent is the
    trial's run, their metric records (intermediate values) and end records (final values)."""

    def __init__(self, journal_dir: Path, key: str, since: float):
        self.journal_dir = journal_dir
        self.key = key
        self.since = since
        self.path: Path | None = None
        self.pid: int | None = None  # the kernel's, from its tracked runs' tags
        self._offset = 0
        self._runs: set[str] = set()
        self._seq = 0
        # (run key, step, ts, order read, name, value), as MLflow will hold them
        self._values: list[tuple[str, int, int, int, str, float]] = []

    def _candidates(self, pids: Iterable[int] | None) -> list[Path]:
        folders = [self.journal_dir, self.journal_dir / "archive"]
        if pids is not None:
            return [
                p for pid in pids for f in folders for p in f.glob(f"*-{pid}-*{SEGMENT_SUFFIX}")
            ]
        out = []
        for f in folders:
            for p in f.glob(f"*{SEGMENT_SUFFIX}"):
                try:
                    if p.stat().st_mtime >= self.since - 1:
                        out.append(p)
                except OSError:
                    continue
        return out

    def _owns(self, path: Path) -> bool:
        try:
            with open(path, "rb") as fh:
                for raw in fh:
                    try:
                        rec = json.loads(raw)
                    except ValueError:
                        continue
                    if rec.get("t") == "start" and self._is_ours(rec):
                        return True
        except OSError:
            return False
        return False

    def _is_ours(self, rec: dict[str, Any]) -> bool:
        tags = rec.get("tags") or {}
        return isinstance(tags, dict) and tags.get(PARENT_KEY_TAG) == self.key

    def locate(self, pids: Iterable[int] | None) -> bool:
        """Find the segment: among those of processes ``pids`` (the trial's kernel), or among
        every segment written since the sweep began when ``pids`` is None."""
        if self.path is not None:
            return True
        for path in self._candidates(pids):
            if self._owns(path):
                self.path = path
                return True
        return False

    def _read_new(self) -> bytes:
        assert self.path is not None
        for path in (self.path, self.journal_dir / "archive" / self.path.name):
            try:
                with open(path, "rb") as fh:
                    fh.seek(self._offset)
                    data = fh.read()
            except FileNotFoundError:
                continue  # shipped and archived meanwhile
            self.path = path
            end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
            self._offset += end
            return data[:end]
        return b""

    def poll(self, pids: Iterable[int] = ()) -> list[tuple[str, float, int]]:
        """Read what was appended since the last poll; returns new (name, value, step) metric
        records of the trial's tracked runs."""
        if not self.locate(list(pids)):
            return []
        new: list[tuple[str, float, int]] = []
        for raw in self._read_new().splitlines():
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            kind, key = rec.get("t"), str(rec.get("key"))
            if kind == "start" and self._is_ours(rec):
                self._runs.add(key)
                tag_pid = str((rec.get("tags") or {}).get("nbmlops.pid", ""))
                self.pid = int(tag_pid) if tag_pid.isdigit() else self.pid
                continue
            if key not in self._runs:
                continue
            ts = int(rec.get("ts", 0))
            if kind == "metric":
                self._seq += 1
                try:
                    step = int(rec.get("step") or 0)
                    value = float(rec.get("value", "nan"))
                except (TypeError, ValueError):
                    continue
                self._values.append((key, step, ts, self._seq, str(rec.get("name")), value))
                new.append((str(rec.get("name")), value, step))
            elif kind == "end":
                for m in rec.get("metrics") or []:
                    self._seq += 1
                    try:
                        item = (key, 0, ts, self._seq, str(m["name"]), float(m["value"]))
                    except (KeyError, TypeError, ValueError):
                        continue
                    self._values.append(item)
        return new

    def names(self) -> list[str]:
        return sorted({v[4] for v in self._values})

    @property
    def tracked(self) -> bool:
        return bool(self._runs)

    def final(self, metric: str) -> float | None:
        """The value MLflow shows for the metric on the last tracked run that logged it: the
        latest by step, then by time (a value bound at the end of a cell is at step 0)."""
        found = [v for v in self._values if v[4] == metric]
        if not found:
            return None
        last_run = max(found, key=lambda v: (v[2], v[3]))[0]
        return max((v for v in found if v[0] == last_run), key=lambda v: (v[1], v[2], v[3]))[5]
