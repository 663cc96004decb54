"""The project's tamper-evident audit log of dataset and model actions."""

from __future__ import annotations

from nbmlops.config import Settings, load_settings
from nbmlops.core.audit import AuditEntry, AuditLog, VerifyReport

__all__ = ["AuditEntry", "AuditLog", "VerifyReport", "audit_log"]


def audit_log(settings: Settings | None = None) -> AuditLog:
    """The audit log of ``settings``' project (``<home>/audit.jsonl``)."""
    return AuditLog((settings or load_settings()).audit_path)
