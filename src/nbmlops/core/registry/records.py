"""What registry actions return: registered versions, version listings, alias events,
promotion results and approvals."""

from __future__ import annotations

from dataclasses import dataclass, field

from nbmlops.core.registry.card import ModelCard
from nbmlops.core.registry.gates import GateResult
from nbmlops.core.registry.scan import ScanReport

__all__ = ["AliasEvent", "Approval", "PromotionResult", "RegisteredVersion", "VersionInfo"]


@dataclass(frozen=True)
class RegisteredVersion:
    """What :meth:`ModelRegistry.register` made."""

    name: str
    version: int
    run_id: str
    model_id: str
    source: str
    files_digest: str
    scan: ScanReport
    card: ModelCard
    card_uri: str
    data_versions: list[str]
    tags: dict[str, str]
    data_summary: str = "not recorded"  # the training data by variable and data version
    data_gaps: list[str] = field(default_factory=list)  # where its record stops, and the fix

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    aliases: list[str]
    run_id: str | None
    model_id: str | None
    created: float
    registered_by: str
    scan: str
    card_complete: bool
    approvals: list[str]
    data_versions: list[str]
    metrics: dict[str, float] = field(default_factory=dict)  # the run's, at registration


@dataclass(frozen=True)
class AliasEvent:
    action: str  # promote | rollback | external | base
    version: int | None
    previous: int | None
    user: str
    ts: float
    override: str | None = None


@dataclass(frozen=True)
class PromotionResult:
    name: str
    alias: str
    before: int | None
    after: int | None
    action: str  # promote | rollback | unchanged
    user: str
    gates: list[GateResult] = field(default_factory=list)
    override: str | None = None

    @property
    def changed(self) -> bool:
        return self.action != "unchanged"

    def summary(self) -> str:
        if not self.changed:
            return f"{self.name}: v{self.after} already holds @{self.alias}; nothing changed"
        before = f"v{self.before}" if self.before is not None else "nobody"
        verb = "rolled back" if self.action == "rollback" else "moved"
        text = f"{self.name}@{self.alias} {verb}: {before} -> v{self.after} (by {self.user})"
        if self.override:
            failed = [g.gate for g in self.gates if not g.passed]
            text += f"; gates overridden ({', '.join(failed) or 'none failed'}): {self.override}"
        return text


@dataclass(frozen=True)
class Approval:
    name: str
    version: int
    user: str
    ts: float
    comment: str
    new: bool  # False when this user had approved already
