"""Errors of the serving gateway: what went wrong, where, and how to fix it."""

from __future__ import annotations

from nbmlops.exceptions import NbmlopsError, UsageError


class ServingError(NbmlopsError):
    """The gateway cannot start or serve: a model that cannot be resolved or loaded."""


class ModelNotFoundError(ServingError, LookupError):
    """No registered model, version or alias by that name; the message lists what exists."""


class ModelLoadError(ServingError):
    """A model version resolved but could not be downloaded, checked or loaded."""


class BadModelSpec(UsageError):
    """A model spec (``NAME@alias``, ``NAME@3``, ``NAME@alias:10``) could not be parsed."""


class ExportError(ServingError):
    """A deployment export could not be written."""


class InvalidInput(Exception):
    """A request body the gateway refuses; carries the HTTP status and the fields at fault.

    Not an NbmlopsError: it never reaches a user's terminal, it becomes a 400/422 response.
    """

    def __init__(self, status: int, message: str, fields: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields or []
