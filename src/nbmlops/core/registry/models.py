"""The model registry: register versions with their lineage, card and scan; move aliases
(``champion``, ``challenger``, any name) through gates and roles; roll them back.

MLflow's model registry is the store: a registered model version points at an MLflow 3
LoggedModel (``model_id``) and its run, and carries nbmlops's facts as version tags
(``nbmlops.*``). Model versions have no artifact store of their own, so a version's card and
scan report are logged to its source run under ``model_card/<NAME>/v<k>/``.

Aliases, not stages. Each (model, alias) keeps a linear history in the registered model tag
``nbmlops.alias_history.<alias>`` (JSON list of events: promote, rollback, external); the
holders stack it implies is what ``rollback`` pops. Every register, promotion, refusal,
override, rollback, approval and card edit is appended to the hash-chained audit log.

Concurrency (RELIABILITY 15): a promotion decides (roles, gates) against the alias holder it
read first, then takes an exclusive per-model file lock (``<home>/locks/``), reads the holder
again and refuses if it moved meanwhile (ConcurrentChange): of two promotions decided at
once, exactly one wins and the history stays linear. The lock is a local ``flock``: processes
sharing one machine (kernels, CLI, Jupyter server) are serialised; several machines sharing a
tracking server are not, beyond the holder re-check.

Never lose (RELIABILITY 24): every refusal (role, gate, lock busy, alias moved, store down)
happens before the first write; a write that fails midway is undone (alias, history tag,
version) before the error is raised, so a failed action changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbmlops.core.registry import approve as approving
from nbmlops.core.registry import card_store
from nbmlops.core.registry import history as reading
from nbmlops.core.registry import promote as promoting
from nbmlops.core.registry import register as registering
from nbmlops.core.registry.context import RegistryContext

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nbmlops.config import Settings
    from nbmlops.core.audit import AuditLog
    from nbmlops.core.registry.card import ModelCard
    from nbmlops.core.registry.gates import GateResult
    from nbmlops.core.registry.records import (
        AliasEvent,
        Approval,
        PromotionResult,
        RegisteredVersion,
        VersionInfo,
    )

__all__ = ["ModelRegistry"]


class ModelRegistry:
    """Register, promote, approve, roll back and describe models of one project.

    The user is ``settings.resolved_user`` (NBMLOPS_USER / JUPYTERHUB_USER / OS user); every
    method checks that user's role on the model first. Each operation lives in its own module
    (register, card_store, promote, approve, history) and works on this registry's context.
    """

    def __init__(self, settings: Settings | None = None):
        self.context = RegistryContext(settings)

    @property
    def settings(self) -> Settings:
        return self.context.settings

    @property
    def user(self) -> str:
        return self.context.user

    @property
    def client(self) -> MlflowClient:
        return self.context.client

    @property
    def audit(self) -> AuditLog:
        return self.context.audit

    def register(
        self,
        source: str,
        name: str,
        *,
        holdout: str | None = None,
        target: str | None = None,
        intended_use: str | None = None,
        limitations: str | None = None,
        description: str | None = None,
        namespace: dict[str, Any] | None = None,
    ) -> RegisteredVersion:
        """Register a logged model as a new version of ``name`` (see :func:`nbmlops.core.registry.register.register`)."""
        return registering.register(
            self.context,
            source,
            name,
            holdout=holdout,
            target=target,
            intended_use=intended_use,
            limitations=limitations,
            description=description,
            namespace=namespace,
        )

    def card(
        self,
        name: str,
        version: int | str,
        *,
        intended_use: str | None = None,
        limitations: str | None = None,
        description: str | None = None,
    ) -> ModelCard:
        """The version's model card; with field values, edit and re-render it first."""
        return card_store.read_or_edit_card(
            self.context,
            name,
            version,
            intended_use=intended_use,
            limitations=limitations,
            description=description,
        )

    def card_html(self, name: str, version: int | str) -> str:
        """The version's card as one self-contained HTML page."""
        return card_store.card_html(self.context, name, version)

    def check_gates(
        self, name: str, version: int | str, alias: str = "champion"
    ) -> list[GateResult]:
        """Every gate's result for moving ``alias`` to ``version``, changing nothing."""
        return promoting.check_gates(self.context, name, version, alias)

    def promote(
        self,
        name: str,
        version: int | str,
        alias: str = "champion",
        *,
        override: str | None = None,
    ) -> PromotionResult:
        """Move ``alias`` to ``version`` if roles and gates allow it (see :func:`nbmlops.core.registry.promote.promote`)."""
        return promoting.promote(self.context, name, version, alias, override=override)

    def set_alias(
        self, name: str, alias: str, version: int | str, *, override: str | None = None
    ) -> PromotionResult:
        """Point ``alias`` at ``version``: the same roles and gates as :meth:`promote`."""
        return promoting.set_alias(self.context, name, alias, version, override=override)

    def rollback(self, name: str, alias: str = "champion") -> PromotionResult:
        """Move ``alias`` back to the version that held it before its current holder."""
        return promoting.rollback(self.context, name, alias)

    def approve(self, name: str, version: int | str, comment: str = "") -> Approval:
        """Record the user's approval of ``version`` (approver role; audited)."""
        return approving.approve(self.context, name, version, comment)

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of ``name``, oldest first, with its aliases and nbmlops facts."""
        return reading.versions(self.context, name)

    def aliases(self, name: str) -> dict[str, int]:
        """alias -> version of ``name``."""
        return reading.aliases(self.context, name)

    def history(self, name: str, alias: str = "champion") -> list[AliasEvent]:
        """Every recorded move of ``alias`` of ``name``, oldest first."""
        return reading.history(self.context, name, alias)

    def roles(self, name: str) -> list[str]:
        """The roles the current user holds on ``name`` (every role when unconfigured)."""
        return reading.roles(self.context, name)
