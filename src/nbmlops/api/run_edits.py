"""What the Experiments panel writes: a run's note and tags back to MLflow, and the runs table
as a CSV file under the project. Every write is checked first, and a refusal says why."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from nbmlops.api.run_rows import user_tags
from nbmlops.config import Settings
from nbmlops.core.experiments import client
from nbmlops.core.tracking.redact import redactor_for
from nbmlops.exceptions import UsageError

__all__ = ["NOTE_TAG", "edit_run", "export_csv", "parse_tags", "run_tags"]

NOTE_TAG = "mlflow.note.content"
# what MLflow accepts as a tag key, minus the system prefixes a user must not overwrite
_KEY = re.compile(r"^[A-Za-z0-9_\-. /]{1,250}$")
_RESERVED = ("mlflow.", "nbmlops.")
_MAX_VALUE = 8000  # MLflow's limit for a tag value (the note is a tag too)


def run_tags(settings: Settings, run_ids: list[str]) -> dict[str, dict[str, str]]:
    """Per run id: its note (``note``) and the tags a user set (no ``mlflow.*`` or
    ``nbmlops.*`` system tags)."""
    return user_tags(client(settings), list(run_ids))


def parse_tags(text: str) -> dict[str, str]:
    """``"team=vision, stage=tuned"`` as a dict; a piece without ``=`` is refused."""
    tags: dict[str, str] = {}
    for piece in (p.strip() for p in re.split(r"[,\n]", text)):
        if not piece:
            continue
        key, sep, value = piece.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"Tag {piece!r} has no name=value form",
                fix="Write tags as name=value, separated by commas: team=vision, stage=tuned.",
            )
        tags[key.strip()] = value.strip()
    return tags


def _check(settings: Settings, key: str, value: str) -> None:
    if key != NOTE_TAG:
        if not _KEY.match(key):
            raise UsageError(
                f"Tag name {key!r} is not one MLflow accepts",
                fix="Use letters, digits, spaces and _ - . / (at most 250 characters).",
            )
        if key.startswith(_RESERVED):
            raise UsageError(
                f"Tag {key!r} is a system tag of MLflow or nbmlops, not editable here",
                fix="Choose a name that does not start with mlflow. or nbmlops.",
            )
    if len(value) > _MAX_VALUE:
        raise UsageError(
            f"The {'note' if key == NOTE_TAG else 'tag ' + repr(key)} is {len(value):,} "
            f"characters; MLflow keeps at most {_MAX_VALUE:,}",
            fix="Shorten it, or log the text as an artifact of the run.",
        )
    redactor = redactor_for(settings)
    what = "the note" if key == NOTE_TAG else f"tag {key!r}"
    if key != NOTE_TAG and redactor.is_secret_name(key):
        raise UsageError(
            f"Not recorded: {what} has a name that holds secrets, and secrets are never recorded",
            fix="Keep the secret out of MLflow (an environment variable or a secret store).",
        )
    if redactor.text(value) != value:
        raise UsageError(
            f"Not recorded: {what} contains what looks like a secret (a password, token or "
            "key), and secrets are never recorded",
            fix="Remove the secret from the text and save again.",
        )


def edit_run(
    settings: Settings,
    run_id: str,
    *,
    note: str | None = None,
    tags: dict[str, str] | None = None,
    remove: tuple[str, ...] | list[str] = (),
) -> dict[str, str]:
    """Write ``note`` (as ``mlflow.note.content``) and ``tags`` to the run and delete the
    ``remove`` tags; every value is checked before anything is written. Returns the run's
    tags as :func:`run_tags` reads them afterwards."""
    writes = dict(tags or {})
    if note is not None:
        writes[NOTE_TAG] = note
    for key, value in writes.items():
        _check(settings, key, str(value))
    for key in remove:
        if key.startswith(_RESERVED):
            _check(settings, key, "")
    c = client(settings)
    try:
        for key, value in writes.items():
            c.set_tag(run_id, key, str(value))
        for key in remove:
            if key not in writes:
                c.delete_tag(run_id, key)
    except Exception as err:
        from nbmlops.api.views import store_error

        raise store_error(settings, err) from err
    return run_tags(settings, [run_id]).get(run_id, {})


def export_csv(settings: Settings, frame: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``frame`` (the table as shown) as CSV to ``path``, relative to the project
    folder; a path that leaves the project (``..``, an absolute path elsewhere, a symlink out)
    is refused. Written to a temporary name, then renamed. Returns the absolute path."""
    root = Path(settings.project_dir).resolve()
    text = str(path).strip()
    if not text:
        raise UsageError("No file name for the CSV export", fix="Give a name like runs.csv.")
    target = Path(text)
    target = (target if target.is_absolute() else root / target).resolve()
    if not target.is_relative_to(root):
        raise UsageError(
            f"The export path {text!r} leaves the project folder",
            where=str(root),
            fix="Give a path inside the project, e.g. exports/runs.csv.",
        )
    if target.suffix.lower() != ".csv":
        raise UsageError(
            f"The export path {text!r} does not end in .csv",
            fix="Name the file NAME.csv.",
        )
    if target.is_dir():
        raise UsageError(f"{text!r} is a folder", fix="Name a file, e.g. exports/runs.csv.")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".csv", dir=target.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
            frame.to_csv(out, index=False)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
