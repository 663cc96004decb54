"""Versioned data — commit, load, log, diff, validate, checkout (also ``nbmlops.data``).

Every call checks the access rules in nbmlops.yaml for the current user first (nothing is
written when it is refused) and appends commits and checkouts to the project's audit log.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.config import Settings
from nbmlops.core.lineage.cells import note_load
from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    from nbmlops.core.audit import AuditLog
    from nbmlops.core.data.diff import DataDiff
    from nbmlops.core.data.records import CommitResult, DatasetVersion
    from nbmlops.core.data.report import ValidationReport
    from nbmlops.core.data.store import DataStore

__all__ = [
    "audit_log",
    "checkout",
    "commit",
    "diff",
    "load",
    "log",
    "ls",
    "raise_if_failed",
    "show",
    "store",
    "validate",
]


def _settings() -> Settings:
    from nbmlops.api.tracking import project_settings

    return project_settings()


def store(settings: Settings | None = None) -> DataStore:
    """The project's data store (``data_url`` in nbmlops.yaml; default ``.nbmlops/data``)."""
    from nbmlops.core.data.store import DataStore

    s = settings or _settings()
    return DataStore(s.resolved_data_url)


def audit_log(settings: Settings | None = None) -> AuditLog:
    """The project's audit log, where commits and checkouts are recorded."""
    from nbmlops.core.audit import AuditLog

    return AuditLog((settings or _settings()).audit_path)


def raise_if_failed(report: ValidationReport) -> None:
    """Raise :class:`nbmlops.exceptions.ValidationFailed` when ``report`` did not pass."""
    from nbmlops.core.data.validate import raise_if_failed as check

    check(report)


def _check(settings: Settings, action: str, name: str) -> str:
    from nbmlops.core.access import check_dataset

    user = settings.resolved_user
    check_dataset(settings.access, user, action, name)  # type: ignore[arg-type]
    return user


def commit(
    obj: Any,
    name: str | None = None,
    message: str = "",
    *,
    settings: Settings | None = None,
) -> CommitResult:
    """Store a version of a DataFrame, Series, ndarray, or a local file or folder.

    ``name`` defaults to the file or folder name for paths and is required otherwise.
    Identical content makes no new bytes (``created`` is False).
    """
    s = settings or _settings()
    if name is None:
        if isinstance(obj, (str, os.PathLike)):
            name = Path(obj).name.replace(" ", "_")
        else:
            raise UsageError(
                f"commit needs a name for a {type(obj).__name__}",
                fix="Pass name=..., e.g. nbmlops.data.commit(df, 'sales').",
            )
    from nbmlops.core.data.refs import validate_name

    validate_name(name)
    user = _check(s, "commit", name)
    data_store = store(s)
    result = data_store.commit(obj, name, message=message, author=user)
    v = result.version
    audit_log(s).append(
        "data.commit",
        v.ref,
        user=user,
        details={
            "digest": v.digest,
            "created": result.created,
            "bytes": result.bytes_written,
            "shape": v.shape,
            "message": message,
            "store": store(s).url,
        },
    )
    return result


def _read(ref: str, s: Settings) -> tuple[DatasetVersion, str]:
    from nbmlops.core.data.refs import parse_ref

    name, _ = parse_ref(ref)
    user = _check(s, "read", name)
    return store(s).get(ref), user


def load(ref: str, *, settings: Settings | None = None) -> Any:
    """The exact frame, series or array of ``NAME@k`` (or the latest ``NAME``)."""
    s = settings or _settings()
    version, user = _read(ref, s)
    value = store(s).load(version.ref)
    audit_log(s).append("data.checkout", version.ref, user=user, details={"digest": version.digest})
    note_load(version.ref, version.digest, value)  # the running cell's lineage names it
    return value


def checkout(
    ref: str, dest: str | os.PathLike | None = None, *, settings: Settings | None = None
) -> Path:
    """Write a file or folder version to ``dest`` (default: its original name here)."""
    s = settings or _settings()
    version, user = _read(ref, s)
    target = Path(dest) if dest is not None else Path(Path(version.source or version.name).name)
    path = store(s).checkout_path(version.ref, target)
    audit_log(s).append(
        "data.checkout",
        version.ref,
        user=user,
        details={"digest": version.digest, "dest": str(path)},
    )
    return path


def show(ref: str, *, settings: Settings | None = None) -> DatasetVersion:
    s = settings or _settings()
    return _read(ref, s)[0]


def log(name: str, *, settings: Settings | None = None) -> list[DatasetVersion]:
    s = settings or _settings()
    _check(s, "read", name)
    return store(s).log(name)


def ls(*, settings: Settings | None = None) -> list[DatasetVersion]:
    return store(settings or _settings()).latest()


def diff(
    a: str, b: str, key: list[str] | None = None, *, settings: Settings | None = None
) -> DataDiff:
    """What changed from version ``a`` to ``b`` (schema, rows, profile)."""
    from nbmlops.core.data.diff import diff_versions

    s = settings or _settings()
    va, vb = _read(a, s)[0], _read(b, s)[0]
    st = store(s)  # one store for both loads
    return diff_versions(
        st.load(va.ref),
        st.load(vb.ref),
        key_columns=key,
        old_profile=va.profile,
        new_profile=vb.profile,
    )


def validate(
    df: Any,
    against: str | None = None,
    *,
    schema: str | os.PathLike | None = None,
    save_schema: str | os.PathLike | None = None,
    strict: bool = False,
    range_margin: float = 0.1,
    settings: Settings | None = None,
) -> ValidationReport:
    """Check ``df`` against a schema inferred from version ``against`` (or a saved YAML schema)
    and measure drift per column. Logged to the active tracked run; ``strict`` raises.

    An inferred schema lets numeric values go ``range_margin`` (a fraction of the reference's
    span) beyond the reference's min and max: new data from the same distribution exceeds a
    sample's extremes now and then. Save the schema (``save_schema``) to edit its rules."""
    from nbmlops.core.data import schema as sc
    from nbmlops.core.data import validate as v

    s = settings or _settings()
    if against is None and schema is None:
        raise UsageError(
            "validate needs a reference", fix="Pass against='NAME@k' or schema='file.yaml'."
        )
    reference = load(against, settings=s) if against else None
    sch = (
        sc.load_schema(schema) if schema else sc.infer_schema(reference, range_margin=range_margin)
    )
    if save_schema:
        sc.save_schema(sch, save_schema)
    report = v.validate_frame(df, reference=reference, schema=sch)
    _log_to_active_run(report, against)
    if strict:
        v.raise_if_failed(report)
    return report


def _log_to_active_run(report: ValidationReport, against: str | None) -> None:
    import json

    from nbmlops.core.tracking.session import current_tracker

    tracker = current_tracker()
    if tracker is None or tracker.active is None:
        return
    tracker.log_metric("validation.passed", 1.0 if report.passed else 0.0)
    tracker.log_metric("validation.schema_errors", float(len(report.schema_errors)))
    tracker.log_metric("validation.drifted_columns", float(sum(d.drifted for d in report.drift)))
    if against:
        tracker.log_param("validation.reference", against)
    tracker.stage_artifact(
        "validation/report.json", json.dumps(report.to_dict(), indent=2, default=str)
    )
