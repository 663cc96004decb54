"""Promotion gates: the checks a model version must pass before it may hold an alias.

Gates come from ``registry.models[KEY].gates[ALIAS]`` in nbmlops.yaml. Every configured gate
is evaluated (a failure does not stop the others), so a refusal lists every reason at once.
A gate that cannot be evaluated (its data version is missing, the store is down) fails with
that reason: a gate never passes by accident.

``beats_champion`` is evaluated, not copied from training logs: the candidate and the current
holder of the alias are both loaded (after their structural check, digest check and scan
verdict) and scored on the same holdout data version.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nbmlops.config import (
    ApprovalGateSpec,
    BeatsChampionSpec,
    GateSpec,
    MetricGateSpec,
    ScanGateSpec,
    ValidationGateSpec,
)
from nbmlops.exceptions import NbmlopsError, UsageError

__all__ = [
    "GateContext",
    "GateResult",
    "PromotionGate",
    "build_gates",
    "higher_is_better",
    "run_gates",
    "score",
]

CARD_FIELDS = ("intended_use", "limitations")

_METRIC_ALIASES = {"acc": "accuracy", "auc": "roc_auc", "f1_score": "f1"}
_LOWER_IS_BETTER = {"mae", "mse", "rmse", "log_loss"}
METRICS = ("accuracy", "balanced_accuracy", "f1", "precision", "recall", "r2", "mae", "mse", "rmse")


def _canonical_metric(name: str) -> str:
    return _METRIC_ALIASES.get(name.lower(), name.lower())


def higher_is_better(metric: str) -> bool:
    return _canonical_metric(metric) not in _LOWER_IS_BETTER


def score(metric: str, y_true: Any, y_pred: Any) -> float:
    """``metric`` of predictions ``y_pred`` against ``y_true`` (scikit-learn's metrics)."""
    import numpy as np
    from sklearn import metrics as m

    name = _canonical_metric(metric)
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2 and y_pred.shape[1] == 1:
        y_pred = y_pred[:, 0]
    binary = len(np.unique(np.asarray(y_true))) <= 2
    average = "binary" if binary else "macro"
    fns: dict[str, Callable[[], float]] = {
        "accuracy": lambda: m.accuracy_score(y_true, y_pred),
        "balanced_accuracy": lambda: m.balanced_accuracy_score(y_true, y_pred),
        "f1": lambda: m.f1_score(y_true, y_pred, average=average),
        "precision": lambda: m.precision_score(y_true, y_pred, average=average, zero_division=0),
        "recall": lambda: m.recall_score(y_true, y_pred, average=average, zero_division=0),
        "r2": lambda: m.r2_score(y_true, y_pred),
        "mae": lambda: m.mean_absolute_error(y_true, y_pred),
        "mse": lambda: m.mean_squared_error(y_true, y_pred),
        "rmse": lambda: math.sqrt(m.mean_squared_error(y_true, y_pred)),
    }
    if name not in fns:
        raise UsageError(
            f"Unknown metric {metric!r} for a beats_champion gate",
            fix=f"Use one of {', '.join(METRICS)} (or acc).",
        )
    return float(fns[name]())


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict. ``reason`` is one sentence a person can act on."""

    gate: str  # "metric acc", "beats_champion accuracy on holdout@1", ...
    kind: str  # metric | beats_champion | validation | card | scan | approval
    passed: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values only (numpy scalars become numbers): it goes to the audit log."""
        return {
            "gate": self.gate,
            "kind": self.kind,
            "passed": bool(self.passed),
            "reason": self.reason,
            "details": _plain(self.details),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return _plain(item())
        except (TypeError, ValueError):
            pass
    return str(value)


@dataclass
class GateContext:
    """What gates may look at. The callables are provided by the registry so that gates
    never load a model or a data version by any other (less careful) path."""

    model: str
    version: int
    alias: str
    holder: int | None  # current holder of the alias (None: nobody)
    run_metrics: dict[str, float]
    tags: dict[str, str]  # the candidate version's tags
    approvals: list[dict[str, Any]]
    is_approver: Callable[[str], bool]
    approvers: list[str]
    evaluate: Callable[[int, str, str, str], tuple[float, int]]  # version, ref, target, metric
    validate: Callable[[str, str], Any]  # data ref, reference ref -> ValidationReport


class PromotionGate(Protocol):
    kind: str

    @property
    def label(self) -> str: ...

    def check(self, ctx: GateContext) -> GateResult: ...


@dataclass
class MetricGate:
    spec: MetricGateSpec
    kind: str = "metric"

    @property
    def label(self) -> str:
        return f"metric {self.spec.name}"

    def check(self, ctx: GateContext) -> GateResult:
        name = self.spec.name
        bounds = {"min": self.spec.min, "max": self.spec.max}
        if name not in ctx.run_metrics:
            have = ", ".join(sorted(ctx.run_metrics)) or "none"
            return GateResult(
                self.label,
                self.kind,
                False,
                f"the version's run has no metric {name!r} (it has: {have})",
                {"bounds": bounds},
            )
        value = ctx.run_metrics[name]
        details = {"value": value, "bounds": bounds}
        if self.spec.min is not None and not value >= self.spec.min:
            return GateResult(
                self.label,
                self.kind,
                False,
                f"{name} = {value:.4g}, below the minimum {self.spec.min:g}",
                details,
            )
        if self.spec.max is not None and not value <= self.spec.max:
            return GateResult(
                self.label,
                self.kind,
                False,
                f"{name} = {value:.4g}, above the maximum {self.spec.max:g}",
                details,
            )
        limits = " and ".join(
            f"{'>=' if k == 'min' else '<='} {v:g}" for k, v in bounds.items() if v is not None
        )
        return GateResult(self.label, self.kind, True, f"{name} = {value:.4g} ({limits})", details)


@dataclass
class BeatsChampionGate:
    spec: BeatsChampionSpec
    kind: str = "beats_champion"

    @property
    def label(self) -> str:
        return f"beats_champion {self.spec.metric} on {self.spec.holdout}"

    def check(self, ctx: GateContext) -> GateResult:
        s = self.spec
        details: dict[str, Any] = {"holdout": s.holdout, "target": s.target, "metric": s.metric}
        if ctx.holder is None:
            return GateResult(
                self.label, self.kind, True, f"no current holder of @{ctx.alias}: nothing to beat"
            )
        if ctx.holder == ctx.version:
            return GateResult(
                self.label, self.kind, True, f"v{ctx.version} already holds @{ctx.alias}"
            )
        higher = (
            s.higher_is_better if s.higher_is_better is not None else higher_is_better(s.metric)
        )
        cand, rows = ctx.evaluate(ctx.version, s.holdout, s.target, s.metric)
        champ, _rows = ctx.evaluate(ctx.holder, s.holdout, s.target, s.metric)
        gain = (cand - champ) if higher else (champ - cand)
        details.update(
            candidate=cand, holder=champ, holder_version=ctx.holder, rows=rows, gain=gain
        )
        what = (
            f"{s.metric} on {s.holdout} ({rows} rows, target {s.target!r}): "
            f"v{ctx.version} {cand:.4g} vs @{ctx.alias} v{ctx.holder} {champ:.4g}"
        )
        if gain >= s.min_delta:
            return GateResult(self.label, self.kind, True, what, details)
        worse = "worse" if gain < 0 else "not better enough"
        need = f" (needs at least +{s.min_delta:g})" if s.min_delta > 0 else ""
        return GateResult(
            self.label,
            self.kind,
            False,
            f"{what}: the candidate is {worse} by {abs(gain):.4g}{need}",
            details,
        )


@dataclass
class ValidationGate:
    spec: ValidationGateSpec
    kind: str = "validation"

    @property
    def label(self) -> str:
        return f"validation {self.spec.data} against {self.spec.against}"

    def check(self, ctx: GateContext) -> GateResult:
        report = ctx.validate(self.spec.data, self.spec.against)
        details = {
            "passed": bool(report.passed),
            "schema_errors": len(report.schema_errors),
            "drifted_columns": list(report.drifted_columns),
            "rows": report.rows,
        }
        if report.passed:
            return GateResult(
                self.label,
                self.kind,
                True,
                f"{self.spec.data} passed validation against {self.spec.against}",
                details,
            )
        problems = [ln for ln in report.summary().splitlines()[1:] if "ok." not in ln]
        return GateResult(
            self.label,
            self.kind,
            False,
            f"{self.spec.data} failed validation against {self.spec.against}: "
            + " ".join(problems[:3]),
            details,
        )


@dataclass
class CardGate:
    kind: str = "card"

    @property
    def label(self) -> str:
        return "card"

    def check(self, ctx: GateContext) -> GateResult:
        if not ctx.tags.get("nbmlops.card"):
            return GateResult(
                self.label,
                self.kind,
                False,
                f"v{ctx.version} has no model card (write one: %card {ctx.model} {ctx.version} "
                "--intended-use ... --limitations ...)",
            )
        missing = [f for f in CARD_FIELDS if not ctx.tags.get(f"nbmlops.card.{f}", "").strip()]
        if missing:
            flags = " ".join(f"--{f.replace('_', '-')} ..." for f in missing)
            return GateResult(
                self.label,
                self.kind,
                False,
                f"model card incomplete: {', '.join(missing)} missing "
                f"(fill in with %card {ctx.model} {ctx.version} {flags})",
                {"missing": missing},
            )
        return GateResult(self.label, self.kind, True, "model card complete")


@dataclass
class ScanGate:
    spec: ScanGateSpec
    kind: str = "scan"

    @property
    def label(self) -> str:
        return "scan"

    def check(self, ctx: GateContext) -> GateResult:
        status = ctx.tags.get("nbmlops.scan")
        summary = ctx.tags.get("nbmlops.scan.summary", "")
        details = {"status": status}
        if status is None:
            return GateResult(
                self.label, self.kind, False, "no security scan recorded for this version"
            )
        if status == "clean":
            return GateResult(self.label, self.kind, True, "security scan clean", details)
        if status == "incomplete" and self.spec.allow_incomplete:
            return GateResult(
                self.label,
                self.kind,
                True,
                f"security scan incomplete, accepted by allow_incomplete ({summary})",
                details,
            )
        fix = (
            " (nothing unsafe was found; set allow_incomplete: true on this gate to accept it)"
            if status == "incomplete"
            else ""
        )
        return GateResult(
            self.label, self.kind, False, f"security scan {status}: {summary}{fix}", details
        )


@dataclass
class ApprovalGate:
    spec: ApprovalGateSpec
    kind: str = "approval"

    @property
    def label(self) -> str:
        return "approval"

    def check(self, ctx: GateContext) -> GateResult:
        # An approval counts only while its author still holds the approver role.
        valid = sorted({a["user"] for a in ctx.approvals if ctx.is_approver(a["user"])})
        need = self.spec.count
        details = {"approved_by": valid, "needed": need}
        if len(valid) >= need:
            return GateResult(
                self.label, self.kind, True, f"approved by {', '.join(valid)}", details
            )
        who = ", ".join(ctx.approvers) or "no one is configured"
        has = f"has {len(valid)} ({', '.join(valid)})" if valid else "has none"
        return GateResult(
            self.label,
            self.kind,
            False,
            f"not approved: needs {need} approval{'s' if need > 1 else ''} by an approver "
            f"({who}), {has} (%approve {ctx.model} {ctx.version})",
            details,
        )


def build_gates(specs: list[GateSpec]) -> list[PromotionGate]:
    """Gate objects for the configured specs, in order (``card: false`` etc. are skipped)."""
    gates: list[PromotionGate] = []
    for spec in specs:
        kind = spec.kind
        if kind == "metric" and spec.metric is not None:
            gates.append(MetricGate(spec.metric))
        elif kind == "beats_champion" and spec.beats_champion is not None:
            gates.append(BeatsChampionGate(spec.beats_champion))
        elif kind == "validation" and spec.validation is not None:
            gates.append(ValidationGate(spec.validation))
        elif kind == "card" and spec.card:
            gates.append(CardGate())
        elif kind == "scan" and spec.scan:
            gates.append(
                ScanGate(spec.scan if isinstance(spec.scan, ScanGateSpec) else ScanGateSpec())
            )
        elif kind == "approval" and spec.approval:
            gates.append(
                ApprovalGate(
                    spec.approval
                    if isinstance(spec.approval, ApprovalGateSpec)
                    else ApprovalGateSpec()
                )
            )
    return gates


def run_gates(gates: list[PromotionGate], ctx: GateContext) -> list[GateResult]:
    """Every gate's result; a gate that raises fails with the error as its reason."""
    results = []
    for gate in gates:
        try:
            results.append(gate.check(ctx))
        except NbmlopsError as err:
            results.append(
                GateResult(gate.label, gate.kind, False, f"could not be evaluated: {err}")
            )
        except Exception as err:
            results.append(
                GateResult(
                    gate.label,
                    gate.kind,
                    False,
                    f"could not be evaluated: {type(err).__name__}: {err}",
                )
            )
    return results
