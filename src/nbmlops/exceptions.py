"""Errors nbmlops raises. Each one says what was wrong, where, and how to fix it."""

from __future__ import annotations


class NbmlopsError(Exception):
    """Root of every nbmlops error.

    ``what`` says what went wrong, ``where`` names the place (a file, a cell, a store),
    ``fix`` says what the user can do about it. ``str(err)`` joins them into one paragraph.
    """

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self._message())

    def _message(self) -> str:
        parts = [self.what]
        if self.where:
            parts.append(f"(in {self.where})")
        msg = " ".join(parts)
        if self.fix:
            msg += f". {self.fix}" if not msg.endswith(".") else f" {self.fix}"
        return msg


class ConfigError(NbmlopsError, ValueError):
    """A setting in nbmlops.yaml or an NBMLOPS_* variable is invalid."""


class UsageError(NbmlopsError, ValueError):
    """A public entry point was called with bad arguments."""


class UndigestibleError(NbmlopsError, TypeError):
    """A value cannot be content-digested (unsupported type or layout)."""


class StoreError(NbmlopsError):
    """The tracking or data store could not be reached or written."""


class NoActiveRunError(NbmlopsError, RuntimeError):
    """A logging call was made outside a tracked cell or ``nbmlops.track`` block."""


class MissingDependencyError(NbmlopsError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ValidationFailed(NbmlopsError):
    """A DataFrame failed schema validation or drifted from its reference.

    ``report`` is the :class:`nbmlops.core.data.report.ValidationReport` that failed; call
    ``report.to_table()`` or ``report.schema_errors`` to see what went wrong.
    """

    def __init__(
        self,
        report: object,
        *,
        what: str | None = None,
        where: str | None = None,
        fix: str | None = None,
    ):
        self.report = report
        super().__init__(what or "data validation failed", where=where, fix=fix)


class AccessDenied(NbmlopsError, PermissionError):
    """The user may not read or commit a dataset under the access rules in nbmlops.yaml."""


class DataStoreError(StoreError):
    """The data store could not be written or read (disk full, permissions, an unsafe path)."""


class DatasetNotFoundError(NbmlopsError, KeyError):
    """No dataset (or no such version of it) in the data store; the message lists what exists."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return self._message()


class IntegrityError(StoreError):
    """Bytes in the data store do not match the content digest recorded for them."""


class UnsafeModelError(NbmlopsError):
    """A model's files are unsafe to load: paths leaving its folder, an undeclared loader
    module, files that do not match their recorded digest, or unsafe pickle content."""


class RoleDenied(AccessDenied):
    """The user lacks the registry role an action on a model needs (roles in nbmlops.yaml)."""

    def __init__(
        self,
        what: str,
        *,
        user: str,
        model: str,
        needed: str,
        rule: str,
        where: str | None = None,
        fix: str | None = None,
    ):
        self.user = user
        self.model = model
        self.needed = needed
        self.rule = rule
        super().__init__(what, where=where, fix=fix)


class ModelNotFound(NbmlopsError, KeyError):
    """No such registered model, version or logged model; the message lists what exists."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return self._message()


class GateRefused(NbmlopsError):
    """A promotion failed one or more gates; ``results`` holds every gate's result (passed
    ones too), ``failed`` only the failed ones. Nothing was changed."""

    def __init__(
        self, what: str, results: list, *, where: str | None = None, fix: str | None = None
    ):
        self.results = list(results)
        self.failed = [r for r in self.results if not r.passed]
        super().__init__(what, where=where, fix=fix)


class AlreadyRegistered(NbmlopsError):
    """The logged model is already a version of that registered model (``version``); nothing
    was registered again."""

    def __init__(self, what: str, *, name: str, version: int, fix: str | None = None):
        self.name = name
        self.version = version
        super().__init__(what, fix=fix)


class RegistryBusy(StoreError):
    """Another promotion, rollback or approval of the same model holds its lock."""


class ConcurrentChange(NbmlopsError):
    """The alias moved between the moment a promotion was decided and the moment it was to
    be written (another promotion won). Nothing was changed."""


class PipelineError(NbmlopsError, ValueError):
    """A notebook, pipeline file or sweep is invalid; raised before any kernel starts."""
