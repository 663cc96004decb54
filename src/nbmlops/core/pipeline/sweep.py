"""Optuna sweeps over a notebook: each trial is one papermill run of the notebook, recorded as a
child run of the sweep's own run, scored by a metric its tracked cells log.

```text
nbmlops sweep train.ipynb --param 'C=loguniform(0.001,10)' --param 'penalty=choice(l1,l2)' \
    --trials 30 --jobs 2 --metric val_auc --maximize [--prune]
```

Everything given is checked before any kernel starts: the search space parses, each name is in
the notebook's ``parameters`` cell, each range or choice fits the type of that parameter's
default, the metric name is valid, and a study resumed under the same name was run over the same
space, metric and direction. The study lives in ``<home>/optuna.db`` (SQLite through Optuna's
RDB storage), so running the same sweep again adds trials up to ``--trials`` in all.

Trials run on the pipeline runner's machinery: :class:`LocalExecutor` with kernels started ahead
of need, ``--jobs`` notebooks at once, and the runner's run records (executed notebook, source,
parameters) with a parent link to the sweep run. A trial's score is read from its kernel's
journal segment (the runs whose parent is the trial run) while the kernel is still up: the value
MLflow will show for the metric on the last tracked cell that bound it or passed it to
``nbmlops.log_metric``. Values logged with ``step=`` are the trial's intermediate values; with
pruning on, a trial the pruner stops is interrupted in its kernel (SIGINT, as Jupyter's
interrupt button) and recorded as pruned. A finite search space (choices and int ranges) is
covered once, in random order, before the sampler may repeat a combination.
"""

from __future__ import annotations

import ast
import copy
import csv
import dataclasses
import difflib
import itertools
import json
import math
import os
import queue
import random
import re
import shutil
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nbmlops.config import Settings, load_settings
from nbmlops.core.pipeline import params as P
from nbmlops.core.pipeline.execute import StepOutcome, StepTask
from nbmlops.core.pipeline.runner import LocalExecutor, StepReport, _jobs, _Run, _validated
from nbmlops.core.pipeline.spec import Pipeline, Step
from nbmlops.core.process import pid_alive
from nbmlops.core.tracking.journal import SEGMENT_SUFFIX
from nbmlops.core.tracking.session import _METRIC_NAME, get_tracker
from nbmlops.core.tracking.shipper import PARENT_KEY_TAG
from nbmlops.exceptions import PipelineError

Progress = Callable[[dict[str, Any]], None]

COMPLETE, PRUNED, FAIL, RUNNING = "COMPLETE", "PRUNED", "FAIL", "RUNNING"
FORMS = "uniform(a,b), loguniform(a,b), int(a,b[,step]), intlog(a,b) or choice(v1,v2,...)"
_TEMPLATE = "trial"
_POLL_S = 0.5
_STOP_AFTER_FAILURES = 3  # in a row, before any trial of this sweep completed
_MAX_COMBINATIONS = 10_000  # finite spaces up to this size are covered before repeating
_OWNER = f"{socket.gethostname()}:{os.getpid()}"


# --- the search space ------------------------------------------------------------------------
@dataclass(frozen=True)
class Dimension:
    """One swept parameter: a range (uniform, loguniform, int, intlog) or a choice."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None
    choices: tuple[Any, ...] = ()
    source: str = ""  # as written

    @property
    def canonical(self) -> str:
        if self.kind == "choice":
            return f"choice({', '.join(repr(c) for c in self.choices)})"
        step = f", step={self.step}" if self.kind == "int" and self.step not in (None, 1) else ""
        return f"{self.kind}({self.low!r}, {self.high!r}{step})"

    def distribution(self) -> Any:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "choice":
            return CategoricalDistribution(list(self.choices))
        if self.kind in ("int", "intlog"):
            return IntDistribution(
                int(self.low or 0),
                int(self.high or 0),
                log=self.kind == "intlog",
                step=self.step or 1,
            )
        return FloatDistribution(
            float(self.low or 0), float(self.high or 0), log=self.kind == "loguniform"
        )

    def values(self) -> list[Any] | None:
        """Every value, for a finite dimension (a choice or an int range); else None."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind in ("int", "intlog"):
            assert isinstance(self.low, int) and isinstance(self.high, int)
            return list(range(self.low, self.high + 1, self.step or 1))
        return None


@dataclass
class SearchSpace:
    dimensions: dict[str, Dimension]
    fixed: dict[str, Any] = field(default_factory=dict)  # passed to every trial as they are

    def distributions(self) -> dict[str, Any]:
        return {n: d.distribution() for n, d in self.dimensions.items()}

    def canonical(self) -> dict[str, str]:
        return {n: d.canonical for n, d in self.dimensions.items()}

    def combinations(self, limit: int = _MAX_COMBINATIONS) -> list[dict[str, Any]] | None:
        """All parameter combinations when the space is finite and at most ``limit`` large."""
        axes = [d.values() for d in self.dimensions.values()]
        if any(a is None for a in axes) or math.prod(len(a or ()) for a in axes) > limit:
            return None
        names = list(self.dimensions)
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]  # type: ignore[arg-type]


_ASSIGN = re.compile(r"^\s*([^=\s]*)\s*=\s*(.*?)\s*$", re.S)
_CALL = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)$", re.S)
_SWEEP_LINE = re.compile(r"^\s*%sweep\b", re.M)
_CALL_START = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*\(")
_KINDS = {"uniform", "loguniform", "int", "intlog", "choice"}
_WORDS = {"true": True, "false": False, "none": None, "null": None}


def _split_args(text: str, where: str) -> list[str]:
    """Split at top-level commas, keeping quoted strings and brackets whole."""
    parts: list[str] = []
    buf: list[str] = []
    quote: str | None = None
    depth = 0
    escaped = False
    for ch in text:
        if quote:
            buf.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise PipelineError(f"Unbalanced {ch!r} in the arguments", where=where)
        elif ch == "," and depth == 0:
            parts.append("".join(buf).strip())
            buf = []
            continue
        buf.append(ch)
    if quote:
        raise PipelineError(
            f"A quoted value is not closed (missing {quote})",
            where=where,
            fix="Close the quote, or leave simple words unquoted: choice(l1,l2).",
        )
    if depth:
        raise PipelineError("A bracket is not closed in the arguments", where=where)
    parts.append("".join(buf).strip())
    if parts == [""]:
        return []
    if any(not p for p in parts):
        raise PipelineError(
            "An argument is empty (two commas in a row, or a trailing comma)", where=where
        )
    return parts


def _literal(token: str) -> Any:
    """A number, a quoted string, true/false/none, or (anything else) the bare word itself."""
    word = _WORDS.get(token.lower(), token)
    if word is not token:
        return word
    try:
        return ast.literal_eval(token)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return token


def _text(token: str) -> str:
    """A choice for a string parameter: the token as written, without its quotes if quoted."""
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        try:
            value = ast.literal_eval(token)
        except (ValueError, SyntaxError):
            return token[1:-1]
        return value if isinstance(value, str) else token[1:-1]
    return token


def _number(token: str, kind: str, where: str, integer: bool = False) -> int | float:
    value = _literal(token)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer and isinstance(value, float):
        ok = value.is_integer()
        value = int(value) if ok else value
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        what = "whole numbers" if integer else "finite numbers"
        raise PipelineError(f"{kind}() takes {what}, got {token!r}", where=where)
    return value


def _range(kind: str, args: list[str], where: str) -> tuple[Any, Any, int | None]:
    integer = kind in ("int", "intlog")
    arity = "2 or 3 (a, b, step)" if kind == "int" else "2 (a, b)"
    if len(args) not in ((2, 3) if kind == "int" else (2,)):
        raise PipelineError(
            f"{kind}() takes {arity} arguments, got {len(args)}",
            where=where,
            fix=f"Write {kind}(low,high){', e.g. int(1,10,2)' if kind == 'int' else ''}.",
        )
    low = _number(args[0], kind, where, integer)
    high = _number(args[1], kind, where, integer)
    step = int(_number(args[2], kind, where, True)) if len(args) == 3 else None
    if not low < high:
        raise PipelineError(
            f"{kind}({args[0]},{args[1]}): the low bound must be below the high bound",
            where=where,
        )
    if kind in ("loguniform", "intlog") and low <= 0:
        raise PipelineError(
            f"{kind}() needs a low bound above 0 (a log scale), got {args[0]}",
            where=where,
            fix="Use uniform()/int() for ranges that include 0 or negative numbers.",
        )
    if step is not None and (step < 1 or step > high - low):
        raise PipelineError(
            f"int() step {step} must be at least 1 and at most high - low ({high - low})",
            where=where,
        )
    if kind == "uniform" or kind == "loguniform":
        low, high = float(low), float(high)
    return low, high, step


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _check_fits(dim: Dimension, param: P.Parameter, where: str) -> None:
    """The values the dimension can take must fit the default's type (papermill writes them as
    literals the notebook then uses)."""
    if not param.literal or param.default is None:
        return
    default = param.default
    shown = param.source or repr(default)
    if isinstance(default, (list, tuple, dict)):
        raise PipelineError(
            f"Parameter {dim.name!r} cannot be swept: its default {shown} is a "
            f"{_type_name(default)}",
            where=where,
            fix="Sweep scalar parameters (numbers, strings, booleans) and build the "
            f"{_type_name(default)} from them in the notebook.",
        )
    if dim.kind == "choice":
        for value in dim.choices:
            if not P._fits(value, default):
                raise PipelineError(
                    f"choice value {value!r} ({_type_name(value)}) does not fit parameter "
                    f"{dim.name!r}, whose default {shown} is {_type_name(default)}",
                    where=where,
                    fix=f"Give {_type_name(default)} values.",
                )
        return
    if isinstance(default, (bool, str)):
        raise PipelineError(
            f"{dim.kind}() draws numbers, but parameter {dim.name!r} has the "
            f"{_type_name(default)} default {shown}",
            where=where,
            fix="Sweep it with choice(...).",
        )
    if isinstance(default, int) and dim.kind in ("uniform", "loguniform"):
        raise PipelineError(
            f"{dim.kind}() draws floats, but parameter {dim.name!r} has the int default {shown}",
            where=where,
            fix=f"Use int(a,b) or intlog(a,b), or make the default a float ({dim.name} = "
            f"{float(default)!r}).",
        )


def _unknown(name: str, declared: P.NotebookParameters, where: str) -> PipelineError:
    close = difflib.get_close_matches(name, declared.names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return PipelineError(
        f"Unknown parameter {name!r} for {declared.notebook.name}; its parameters cell declares: "
        f"{', '.join(declared.names) or '(none)'}.{hint}",
        where=where,
        fix="Sweep a declared name, or add it to the notebook's parameters cell.",
    )


def parse_dimension(text: str, declared: P.NotebookParameters) -> tuple[str, Dimension | None, Any]:
    """``NAME=SPEC`` -> (name, dimension, None), or (name, None, value) for a fixed value."""
    where = f"--param {text!r}"
    m = _ASSIGN.match(text) if isinstance(text, str) else None
    if not m or not m.group(1):
        raise PipelineError(
            "A search-space entry must be NAME=SPEC",
            where=where,
            fix=f"Write e.g. C=loguniform(0.001,10); SPEC is {FORMS}, or a fixed value.",
        )
    name, spec = m.group(1), m.group(2)
    P.check_name(name, where)
    if declared.cell_index is None:
        raise PipelineError(
            f"Notebook {declared.notebook.name!r} has no cell tagged 'parameters', so "
            f"{name!r} has nowhere to go",
            where=where,
            fix="In JupyterLab select the cell with the defaults, open the property inspector "
            "and add the tag 'parameters'.",
        )
    param = declared.parameters.get(name)
    if param is None:
        raise _unknown(name, declared, where)
    call = _CALL.match(spec)
    if call is None and _CALL_START.match(spec):
        raise PipelineError(
            f"{spec!r} does not parse: a closing parenthesis is missing, or text follows it",
            where=where,
            fix=f"Write NAME=SPEC with SPEC one of {FORMS}.",
        )
    if call is None:
        if not spec:
            raise PipelineError(f"No value or range given for {name!r}", where=where)
        value = P.parse_cli_value(spec, param)
        P.validate({name: value}, declared, where=where)
        return name, None, value
    kind, inner = call.group(1), call.group(2)
    if kind not in _KINDS:
        close = difflib.get_close_matches(kind, sorted(_KINDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PipelineError(
            f"Unknown distribution {kind!r}{hint}",
            where=where,
            fix=f"Use {FORMS}. A fixed string that looks like a call can be written "
            "choice('text(1)').",
        )
    args = _split_args(inner, where)
    if kind == "choice":
        if not args:
            raise PipelineError("choice() needs at least one value", where=where)
        as_text = param.literal and isinstance(param.default, str)
        choices = tuple(_text(a) if as_text else _literal(a) for a in args)
        for value in choices:
            if not isinstance(value, (str, int, float, bool, type(None))):
                raise PipelineError(
                    f"choice value {value!r} is a {_type_name(value)}; choices are numbers, "
                    "strings, true/false or none",
                    where=where,
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise PipelineError(f"choice value {value!r} is not a finite number", where=where)
        seen: set[Any] = set()
        for value in choices:
            marker = (type(value), value)
            if marker in seen:
                raise PipelineError(f"choice() lists {value!r} twice", where=where)
            seen.add(marker)
        dim = Dimension(name, kind, choices=choices, source=spec)
    else:
        low, high, step = _range(kind, args, where)
        dim = Dimension(name, kind, low=low, high=high, step=step, source=spec)
    _check_fits(dim, param, where)
    samples = list(dim.choices) if kind == "choice" else [dim.low, dim.high]
    for sample in samples:
        P.validate({name: sample}, declared, where=where)
    return name, dim, None


def parse_space(
    specs: Iterable[str] | Mapping[str, Any], declared: P.NotebookParameters
) -> SearchSpace:
    """Parse ``NAME=SPEC`` entries (or a mapping NAME -> SPEC text or fixed value)."""
    items: list[str] = []
    fixed_values: dict[str, Any] = {}
    if isinstance(specs, Mapping):
        for name, spec in specs.items():
            if isinstance(spec, str):
                items.append(f"{name}={spec}")
            else:
                fixed_values[name] = spec
    elif isinstance(specs, str):
        items = [specs]
    else:
        items = list(specs)
    dims: dict[str, Dimension] = {}
    fixed: dict[str, Any] = {}
    for text in items:
        name, dim, value = parse_dimension(text, declared)
        if name in dims or name in fixed:
            raise PipelineError(f"Parameter {name!r} is given twice", where=f"--param {text!r}")
        if dim is not None:
            dims[name] = dim
        else:
            fixed[name] = value
    for name, value in fixed_values.items():
        if name in dims or name in fixed:
            raise PipelineError(f"Parameter {name!r} is given twice")
        fixed[name] = value
    if fixed:
        fixed = P.validate(fixed, declared)
    if not dims:
        raise PipelineError(
            "Nothing to sweep: no parameter is given a range or a choice",
            where=str(declared.notebook),
            fix=f"Add --param NAME=SPEC with SPEC one of {FORMS}.",
        )
    return SearchSpace(dims, fixed)


# --- a trial's metric, from its kernel's journal segment --------------------------------------
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


# --- run records -----------------------------------------------------------------------------
class _TrialRecords(_Run):
    """The runner's records for notebook runs, one per trial, each a child of the sweep run."""

    def __init__(self, pipeline: Pipeline, settings: Settings, sweep_key: str, outputs_dir: Path):
        super().__init__(
            pipeline, settings, use_cache=False, parent_kind="sweep", outputs_dir=outputs_dir
        )
        self.pipeline_key = sweep_key  # _open_step_run links each trial run to it
        self.template = pipeline.steps[_TEMPLATE]

    def step(self, name: str, key: str, parameters: dict[str, Any]) -> tuple[Step, StepTask]:
        step = copy.copy(self.template)
        step.name = name
        step.parameters = parameters
        self.keys[name] = key
        self.report.steps.setdefault(name, StepReport(name))
        task = dataclasses.replace(self._task(step), name=key)
        return step, task

    def warm_task(self, key: str) -> StepTask:
        """A task to start a kernel for the trial that will run under ``key`` (its environment
        carries the key, so the notebook's tracked cells link to the trial's run)."""
        name = f"warm-{key}"
        task = self.step(name, key, {})[1]
        self.keys.pop(name, None)
        self.report.steps.pop(name, None)
        return task


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


def format_value(value: Any) -> str:
    """A parameter or metric value for tables: floats to 6 significant digits."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# --- the study -------------------------------------------------------------------------------
def storage_url(settings: Settings) -> str:
    return f"sqlite:///{(settings.home_dir / 'optuna.db').resolve().as_posix()}"


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return slug[:100] or "sweep"


def _storage(settings: Settings) -> Any:
    import optuna

    settings.home_dir.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(
        storage_url(settings), engine_kwargs={"connect_args": {"timeout": 30}}
    )


def _attrs_mismatch(study: Any, expected: dict[str, Any]) -> str | None:
    attrs = study.user_attrs
    labels = {
        "nbmlops.notebook": "notebook",
        "nbmlops.metric": "metric",
        "nbmlops.space": "search space",
        "nbmlops.fixed": "fixed parameters",
    }
    for key, label in labels.items():
        if key not in attrs:
            continue
        same = (
            Path(str(attrs[key])).name == Path(str(expected[key])).name  # the project may move
            if key == "nbmlops.notebook"
            else attrs[key] == expected[key]
        )
        if not same:
            return f"its {label} was {_show(attrs[key])}, this sweep's is {_show(expected[key])}"
    return None


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={v}" for k, v in value.items()) + "}"
    return repr(value)


def _pid_alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # cannot tell: leave it
    return not pid.isdigit() or pid_alive(int(pid))  # unreadable: leave it


def _fail_stale(study: Any, storage: Any) -> int:
    """Trials left RUNNING by a sweep process on this host that has died are marked FAIL."""
    from optuna.trial import TrialState

    n = 0
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("nbmlops.owner")
        if owner and owner != _OWNER and not _pid_alive(owner):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_user_attr(trial_id, "nbmlops.error", "the sweep process died")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            n += 1
    return n


def _trial_report(t: Any, earlier: bool) -> TrialReport:
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


# --- plots and files -------------------------------------------------------------------------
def _plots(study: Any, out_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Optimization history, parameter importances and (when steps were logged) intermediate
    values as PNG files; figures are closed, so a notebook shows none of them by itself."""
    notes: list[str] = []
    try:
        import matplotlib
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as oplt
    except ImportError:
        return {}, ["plots need matplotlib (pip install matplotlib)"]
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    made: dict[str, Path] = {}

    def importances(s: Any) -> Any:
        try:
            return oplt.plot_param_importances(s)
        except ImportError:  # the default evaluator (fANOVA) needs scikit-learn
            return oplt.plot_param_importances(s, evaluator=PedAnovaImportanceEvaluator())

    wanted: list[tuple[str, Callable[[Any], Any], str | None]] = [
        (
            "optimization_history",
            oplt.plot_optimization_history,
            None if complete else "no trial completed",
        ),
        (
            "param_importances",
            importances,
            None if len(complete) >= 2 else "parameter importances need 2 completed trials",
        ),
    ]
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        wanted.append(("intermediate_values", oplt.plot_intermediate_values, None))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, fn, skip in wanted:
        if skip:
            notes.append(f"{name.replace('_', ' ')}: {skip}")
            continue
        path = out_dir / f"{name}.png"
        try:
            with warnings.catch_warnings(), matplotlib.rc_context():
                warnings.simplefilter("ignore")
                ax = fn(study)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.savefig(path, dpi=110, bbox_inches="tight")
                plt.close(fig)
        except Exception as err:
            notes.append(f"{name.replace('_', ' ')}: not drawn ({type(err).__name__}: {err})")
            continue
        made[name] = path
    return made, notes


def _write_best(report: SweepReport, parameters: dict[str, Any], path: Path) -> None:
    best = report.best
    assert best is not None
    nb = Path(report.notebook)
    head = (
        f"# best of study {report.study!r}: {report.metric} = {best.value!r} "
        f"(trial {best.number}, {report.direction})\n"
        f"# notebook: {nb}\n"
        f"# run it again with: nbmlops run {nb.name} -f {path.name}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(head + yaml.safe_dump(parameters, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


def _write_trials_csv(report: SweepReport, path: Path) -> None:
    rows = report.table()
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)


# --- the sweep -------------------------------------------------------------------------------
@dataclass
class _Live:
    trial: Any  # optuna.trial.Trial
    key: str
    step: Step
    task: StepTask
    params: dict[str, Any]
    journal: TrialJournal
    started: float
    pids: list[int] = field(default_factory=list)
    reported: set[int] = field(default_factory=set)
    pruned_at: tuple[int, float] | None = None

    @property
    def number(self) -> int:
        return int(self.trial.number)


def run_sweep(
    notebook: str | Path,
    space: Iterable[str] | Mapping[str, Any],
    *,
    metric: str,
    trials: int = 20,
    maximize: bool = False,
    jobs: int = 1,
    study: str | None = None,
    prune: bool = False,
    prune_startup: int = 5,
    out: str | Path | None = None,
    experiment: str | None = None,
    kernel: str | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    seed: int | None = None,
    sampler: Any = None,
    wait: bool = True,
    progress: Progress | None = None,
    settings: Settings | None = None,
) -> SweepReport:
    """Run an Optuna study over ``notebook``: up to ``trials`` trials in all (a study run
    before under the same name continues), ``jobs`` at once, each a recorded notebook run
    scored by ``metric``. Everything is checked before any kernel starts."""
    sweep = _Sweep(
        notebook,
        space,
        metric=metric,
        trials=trials,
        maximize=maximize,
        jobs=jobs,
        study=study,
        prune=prune,
        prune_startup=prune_startup,
        out=out,
        experiment=experiment,
        kernel=kernel,
        cwd=cwd,
        timeout=timeout,
        seed=seed,
        sampler=sampler,
        progress=progress,
        settings=settings or load_settings(),
    )
    return sweep.run(wait=wait)


class _Sweep:
    def __init__(
        self,
        notebook: str | Path,
        space: Iterable[str] | Mapping[str, Any],
        *,
        metric: str,
        trials: int,
        maximize: bool,
        jobs: int,
        study: str | None,
        prune: bool,
        prune_startup: int,
        out: str | Path | None,
        experiment: str | None,
        kernel: str | None,
        cwd: str | Path | None,
        timeout: float | None,
        seed: int | None,
        sampler: Any,
        progress: Progress | None,
        settings: Settings,
    ):
        self.settings = settings
        self.progress = progress or (lambda e: None)
        if not isinstance(metric, str) or not _METRIC_NAME.match(metric):
            raise PipelineError(
                f"--metric {metric!r} is not a valid metric name",
                fix="Use the name the notebook logs: letters, digits, '_', '-', '.', ' ' and "
                "'/' (at most 250 characters).",
            )
        if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
            raise PipelineError(f"--trials must be a positive integer, got {trials!r}")
        if not isinstance(prune_startup, int) or prune_startup < 0:
            raise PipelineError(f"--prune-startup must be 0 or more, got {prune_startup!r}")
        self.metric = metric
        self.total = trials
        self.jobs = _jobs(jobs)
        self.maximize = bool(maximize)
        self.direction = "maximize" if maximize else "minimize"
        self.prune = prune
        self.prune_startup = prune_startup
        self.seed = seed
        self.sampler = sampler
        root = Path(cwd or Path.cwd()).resolve()
        nb_path = Path(notebook)
        nb_path = (nb_path if nb_path.is_absolute() else Path.cwd() / nb_path).resolve()
        self.study_name = study or f"{nb_path.stem}-{metric}"
        if not isinstance(self.study_name, str) or not self.study_name.strip():
            raise PipelineError("--study must be a non-empty name")
        step = Step(name=_TEMPLATE, notebook=nb_path, timeout=timeout, kernel=kernel)
        pipe = Pipeline(
            steps={_TEMPLATE: step},
            root=root,
            name=self.study_name,
            experiment=experiment or settings.experiment or nb_path.stem,
        )
        self.pipeline = _validated(pipe, settings)  # notebook readable, kernel installed
        self.step = self.pipeline.steps[_TEMPLATE]
        for cell in self.step.nb["cells"]:
            if cell.get("cell_type") == "code" and _SWEEP_LINE.search(cell.get("source", "")):
                raise PipelineError(
                    f"{nb_path.name} runs %sweep itself: each trial would start another sweep",
                    where=str(nb_path),
                    fix="Sweep a notebook that does the work, from another notebook or the "
                    "command line.",
                )
        assert self.step.declared is not None
        self.declared = self.step.declared
        self.space = parse_space(space, self.declared)
        self.notebook = nb_path
        self.out_dir = (
            Path(out).resolve() if out else settings.home_dir / "sweeps" / _slug(self.study_name)
        )
        self.experiment = self.pipeline.experiment_name
        self._run_key: str | None = None
        self._sweep_params: dict[str, Any] = {}

    # -- the study ---------------------------------------------------------------------------
    def _open_study(self) -> Any:
        import optuna

        storage = self.storage = _storage(self.settings)
        expected = {
            "nbmlops.notebook": str(self.notebook),
            "nbmlops.metric": self.metric,
            "nbmlops.space": self.space.canonical(),
            "nbmlops.fixed": dict(self.space.fixed),
        }
        existing = {s.study_name: s for s in storage.get_all_studies()}
        where = f"study {self.study_name!r} in {storage_url(self.settings)}"
        if self.study_name in existing:
            old = existing[self.study_name]
            directions = [d.name.lower() for d in old.directions]
            if directions != [self.direction]:
                raise PipelineError(
                    f"Study {self.study_name!r} {'maximizes' if directions == ['maximize'] else 'minimizes'} "
                    f"its metric; this sweep asks to {self.direction} it",
                    where=where,
                    fix="Pass the same --maximize/--minimize to resume it, or --study NEW-NAME "
                    "to start another study.",
                )
            mismatch = _attrs_mismatch(old, expected)
            if mismatch:
                raise PipelineError(
                    f"Study {self.study_name!r} cannot be resumed by this sweep: {mismatch}",
                    where=where,
                    fix="Give the same notebook, metric and --param values to resume it, or "
                    "pass --study NEW-NAME to start another study.",
                )
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=self.prune_startup)
            if self.prune
            else optuna.pruners.NopPruner()
        )
        sampler = self.sampler or optuna.samplers.TPESampler(seed=self.seed)
        study = optuna.create_study(
            storage=storage,
            study_name=self.study_name,
            direction="maximize" if self.maximize else "minimize",
            load_if_exists=True,
            sampler=sampler,
            pruner=pruner,
        )
        for key, value in expected.items():
            if study.user_attrs.get(key) != value:
                study.set_user_attr(key, value)
        return study

    # -- the run -----------------------------------------------------------------------------
    def run(self, wait: bool = True) -> SweepReport:
        import optuna

        verbosity = optuna.logging.get_verbosity()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
                optuna.logging.set_verbosity(optuna.logging.WARNING)
                return self._run(wait)
        finally:
            optuna.logging.set_verbosity(verbosity)

    def _run(self, wait: bool) -> SweepReport:
        from optuna.trial import TrialState

        t0 = time.perf_counter()
        study = self._open_study()
        notes: list[str] = []
        stale = _fail_stale(study, self.storage)
        if stale:
            notes.append(f"{stale} trial(s) left running by a sweep that died were marked FAIL")
        done_states = (TrialState.COMPLETE, TrialState.PRUNED)
        before = study.get_trials(deepcopy=False)
        before_numbers = {t.number for t in before}
        earlier = sum(1 for t in before if t.state in done_states)
        to_run = max(0, self.total - earlier)
        self.progress(
            {
                "event": "plan",
                "study": self.study_name,
                "storage": storage_url(self.settings),
                "earlier": earlier,
                "to_run": to_run,
                "total": self.total,
            }
        )
        if earlier and to_run:
            notes.append(
                f"resumed study {self.study_name!r}: {earlier} earlier trial(s), {to_run} more "
                f"to reach {self.total}"
            )
        elif not to_run:
            notes.append(
                f"study {self.study_name!r} already has {earlier} trial(s) (asked for "
                f"{self.total}): nothing to run; pass a larger --trials to add more"
            )
        run_key = None
        if to_run:
            run_key = uuid.uuid4().hex
            self._execute(study, run_key, to_run, notes)
        try:
            report = self._report(study, before_numbers, earlier, notes, run_key)
        except BaseException:
            self._close_sweep_run(None, "FAILED")
            raise
        report.wall_s = time.perf_counter() - t0
        if run_key is not None:
            self._close_sweep_run(report, "FINISHED" if report.ok else "FAILED")
            tracker = get_tracker(self.settings)
            tracker.ship_ended_processes()
            if wait:
                report.shipped = tracker.flush(self.settings.ship_wait_seconds)
        self.progress({"event": "done", "report": report})
        return report

    def _open_sweep_run(self, run_key: str, to_run: int) -> None:
        tracker = get_tracker(self.settings)
        tags = {
            "mlflow.source.type": "JOB",
            "mlflow.source.name": str(self.notebook),
            "nbmlops.kind": "sweep",
            "nbmlops.sweep": self.study_name,
            "nbmlops.sweep.storage": storage_url(self.settings),
        }
        tracker.open_run(self.study_name, self.experiment, tags, key=run_key)
        self._sweep_params = {
            "notebook": str(self.notebook),
            "metric": self.metric,
            "direction": self.direction,
            "study": self.study_name,
            "trials": self.total,
            "trials_this_run": to_run,
            "jobs": self.jobs,
            "prune": self.prune,
            **{f"space.{n}": c for n, c in self.space.canonical().items()},
            **{f"fixed.{n}": v for n, v in self.space.fixed.items()},
        }

    def _execute(self, study: Any, run_key: str, to_run: int, notes: list[str]) -> None:
        from optuna.trial import TrialState

        self._open_sweep_run(run_key, to_run)
        self._run_key = run_key
        records = _TrialRecords(self.pipeline, self.settings, run_key, self.out_dir / "trials")
        tracker = get_tracker(self.settings)
        distributions = self.space.distributions()
        combos = self.space.combinations()
        rng = random.Random(self.seed)
        if combos is not None:
            rng.shuffle(combos)
        events: queue.Queue = queue.Queue()
        executor = LocalExecutor(self.jobs, events)
        since = time.time()
        warm: list[str] = []  # keys of kernels started ahead, not yet given a trial
        running: dict[str, _Live] = {}
        asked = 0
        failures_in_row = 0
        completed = 0
        stop_reason: str | None = None
        journal_dir = self.settings.journal_dir
        first_number = len(study.get_trials(deepcopy=False))

        def untried() -> dict[str, Any] | None:
            if combos is None:
                return None
            if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return None  # enqueued by hand (or left by an earlier sweep): asked first
            seen = {
                tuple(t.params.get(n) for n in self.space.dimensions)
                for t in study.get_trials(deepcopy=False)
                if t.state != TrialState.FAIL or t.number >= first_number
            }
            for combo in combos:
                if tuple(combo.values()) not in seen:
                    return combo
            return None

        def top_up_warm() -> None:
            if stop_reason is not None:
                return
            wanted = min(self.jobs, to_run - asked - len(warm))
            while wanted > 0 and executor.kernels < 2 * self.jobs:
                key = uuid.uuid4().hex
                executor.warm(records.warm_task(key))
                warm.append(key)
                wanted -= 1

        counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)

        def start_trials() -> None:
            nonlocal asked, stop_reason
            while len(running) < self.jobs and asked < to_run and stop_reason is None:
                taken = study.get_trials(deepcopy=False, states=counted)
                if len(taken) >= self.total:
                    stop_reason = (
                        f"another sweep of study {self.study_name!r} is running the remaining "
                        "trials"
                    )
                    break
                combo = untried()
                if combo is not None:
                    study.enqueue_trial(combo)
                trial = study.ask(distributions)
                asked += 1
                key = warm.pop(0) if warm else uuid.uuid4().hex
                params = P.validate({**self.space.fixed, **trial.params}, self.declared)
                step, task = records.step(f"trial-{trial.number}", key, params)
                trial.set_user_attr("nbmlops.owner", _OWNER)
                trial.set_user_attr("nbmlops.run_key", key)
                trial.set_user_attr("nbmlops.output_notebook", task.output)
                trial.set_user_attr("nbmlops.parameters", params)
                records._open_step_run(
                    step,
                    task,
                    tags={
                        "nbmlops.sweep": self.study_name,
                        "nbmlops.sweep.trial": str(trial.number),
                    },
                )
                live = _Live(
                    trial,
                    key,
                    step,
                    task,
                    params,
                    TrialJournal(journal_dir, key, since),
                    time.time(),
                )
                running[key] = live
                self.progress(
                    {"event": "trial_start", "number": trial.number, "params": dict(trial.params)}
                )
                executor.submit(task)

        def watch(live: _Live) -> None:
            """Intermediate values reach the study; the pruner may stop the trial."""
            if not live.pids:
                pid = executor.kernel_pid(live.key)
                live.pids = [pid] if pid else []
            for name, value, step in live.journal.poll(live.pids):
                if name != self.metric or step in live.reported or not math.isfinite(value):
                    continue
                live.trial.report(value, step)
                live.reported.add(step)
                if self.prune and live.pruned_at is None and live.trial.should_prune():
                    live.pruned_at = (step, value)
                    executor.interrupt(live.key)

        def finish(live: _Live, outcome: StepOutcome) -> TrialReport:
            nonlocal failures_in_row, completed, stop_reason
            watch(live)
            if not live.journal.tracked:
                live.journal.locate(None)  # the kernel's pid was never seen: search by tag
                watch(live)
            value = live.journal.final(self.metric)
            error: str | None = None
            tags = {"nbmlops.sweep.state": ""}
            metrics: dict[str, float] = {}
            if live.pruned_at is not None:
                state, status = TrialState.PRUNED, "KILLED"
                step, at = live.pruned_at
                error = f"pruned at step {step} ({self.metric} = {at:g})"
            elif not outcome.ok:  # a dead kernel (killed, out of memory) is KILLED
                state = TrialState.FAIL
                status = "KILLED" if getattr(outcome, "killed", False) else "FAILED"
                error = outcome.error or "the notebook failed"
            elif value is None:
                state, status = TrialState.FAIL, "FAILED"
                error = self._missing_metric(live.journal)
            elif not math.isfinite(value):
                state, status = TrialState.FAIL, "FAILED"
                error = f"{self.metric} is {value}, not a finite number"
            else:
                state, status = TrialState.COMPLETE, "FINISHED"
                metrics[self.metric] = value
            tags["nbmlops.sweep.state"] = state.name
            if error:
                tags["nbmlops.error"] = error[:5000]
            duration = outcome.duration_s
            live.trial.set_user_attr("nbmlops.duration_s", round(duration, 3))
            if error:
                live.trial.set_user_attr("nbmlops.error", error[:2000])
            records._close_step_run(
                live.step, live.task, outcome, status=status, metrics=metrics, tags=tags
            )
            if state == TrialState.COMPLETE:
                frozen = study.tell(live.trial, value)
                completed += 1
                failures_in_row = 0
            else:
                frozen = study.tell(live.trial, state=state)
                if state == TrialState.FAIL:
                    failures_in_row += 1
                    if not completed and failures_in_row >= _STOP_AFTER_FAILURES:
                        stop_reason = (
                            f"stopped after {failures_in_row} failed trials in a row, none "
                            f"completed (last error: {error})"
                        )
            rep = _trial_report(frozen, earlier=False)
            rep.error = error
            rep.duration_s = duration
            return rep

        try:
            top_up_warm()
            start_trials()
            top_up_warm()
            while running:
                try:
                    kind, key, outcome = events.get(timeout=_POLL_S)
                except queue.Empty:
                    for live in running.values():
                        watch(live)
                    continue
                if kind == "kernel_gone":
                    tracker.ship_ended_processes()
                    top_up_warm()
                    continue
                ended = running.pop(key) if key in running else None
                if ended is None:  # a warm kernel that failed to start, never given a trial
                    if key in warm:
                        warm.remove(key)
                    continue
                rep = finish(ended, outcome)
                self.progress({"event": "trial_end", "trial": rep})
                start_trials()
                top_up_warm()
        except BaseException:
            # Ctrl-C or a bug: stop the kernels, record what is known, then re-raise.
            for live in running.values():
                executor.interrupt(live.key)
            for live in list(running.values()):
                now = time.time()
                records._close_step_run(
                    live.step,
                    live.task,
                    StepOutcome(live.key, False, live.started, now, "interrupted"),
                    status="KILLED",
                    tags={"nbmlops.sweep.state": FAIL, "nbmlops.error": "interrupted"},
                )
                try:
                    live.trial.set_user_attr("nbmlops.error", "interrupted")
                    study.tell(live.trial, state=TrialState.FAIL)
                except Exception:
                    pass
            running.clear()
            self._close_sweep_run(None, "KILLED")
            raise
        finally:
            executor.close()
            tracker.ship_ended_processes()
        if stop_reason:
            notes.append(stop_reason)
        if combos is not None and len(combos) < self.total:
            notes.append(
                f"the search space has {len(combos)} combination(s); trials beyond that repeat them"
            )

    def _missing_metric(self, journal: TrialJournal) -> str:
        if not journal.tracked:
            return (
                f"the notebook logged no metric {self.metric!r}: it ran no tracked cell. Compute "
                f"it in a %%track cell ({self.metric} = ...) or log it there with "
                f"nbmlops.log_metric({self.metric!r}, value)"
            )
        names = journal.names()
        close = difflib.get_close_matches(self.metric, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (
            f"the notebook logged no metric {self.metric!r}{hint}; its tracked cells logged: "
            f"{', '.join(names) or '(no metrics)'}"
        )

    # -- the end -----------------------------------------------------------------------------
    def _report(
        self,
        study: Any,
        before: set[int],
        earlier: int,
        notes: list[str],
        run_key: str | None,
    ) -> SweepReport:
        from optuna.trial import TrialState

        all_trials = study.get_trials(deepcopy=False)
        report = SweepReport(
            study=self.study_name,
            storage=storage_url(self.settings),
            notebook=str(self.notebook),
            metric=self.metric,
            direction=self.direction,
            total=self.total,
            earlier=earlier,
            trials=[
                _trial_report(t, t.number in before)
                for t in all_trials
                if t.state != TrialState.WAITING
            ],
            out_dir=self.out_dir,
            experiment=self.experiment,
            notes=notes,
            run_key=run_key,
        )
        complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
        if complete:
            best = study.best_trial
            report.best = next(t for t in report.trials if t.number == best.number)
            parameters = best.user_attrs.get("nbmlops.parameters") or {
                **self.space.fixed,
                **best.params,
            }
            report.best_params_path = self.out_dir / "best_params.yaml"
            _write_best(report, parameters, report.best_params_path)
        report.plots, plot_notes = _plots(study, self.out_dir)
        report.notes += plot_notes
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _write_trials_csv(report, self.out_dir / "trials.csv")
        return report

    def _close_sweep_run(self, report: SweepReport | None, status: str) -> None:
        run_key = self._run_key
        if run_key is None:
            return
        self._run_key = None
        tracker = get_tracker(self.settings)
        artifacts = tracker.run_staging(run_key) / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        params = dict(self._sweep_params)
        metrics: dict[str, float] = {}
        tags: dict[str, str] = {}
        if report is not None:
            ran = report.counts(report.ran)
            metrics = {
                "trials_complete": ran[COMPLETE],
                "trials_pruned": ran[PRUNED],
                "trials_failed": ran[FAIL],
                "trials_in_study": len(report.trials),
                "wall_s": report.wall_s,
            }
            if report.best is not None and report.best.value is not None:
                metrics[self.metric] = report.best.value
                params["best_trial"] = report.best.number
                params.update({f"best.{k}": v for k, v in report.best.params.items()})
                tags["nbmlops.sweep.best"] = json.dumps(report.best.params, default=str)
            files = [report.best_params_path, *report.plots.values(), self.out_dir / "trials.csv"]
            for path in files:
                if path is not None and path.is_file():
                    shutil.copyfile(path, artifacts / path.name)
            (artifacts / "sweep.json").write_text(
                json.dumps(report.to_dict(), indent=1, default=str)
            )
            if report.notes:
                tags["nbmlops.sweep.notes"] = "; ".join(report.notes)[:5000]
        tracker.close_run(
            run_key, self.experiment, status, params=params, metrics=metrics, tags=tags
        )
