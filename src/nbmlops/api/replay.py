"""The notebook that actually made a model: the cells a ``%%track`` run of an interactive
notebook depends on, from the kernel's execution history, written as a clean notebook
(``<home>/reproduce/RUN_ID/replay.ipynb``), with what cannot be replayed named."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nbmlops.api.lineage import lineage_store
from nbmlops.api.tracking import project_settings
from nbmlops.config import Settings
from nbmlops.core.lineage.replay import Blocker, ReplaySlice, replay_slice, write_notebook

__all__ = ["Blocker", "ReplayExport", "ReplaySlice", "export_notebook", "replay_folder"]


@dataclass
class ReplayExport:
    """A written replay notebook and the slice it holds."""

    path: Path
    slice: ReplaySlice

    @property
    def run_id(self) -> str:
        return self.slice.run_id

    @property
    def blockers(self) -> list[Blocker]:
        return self.slice.blockers


def replay_folder(settings: Settings, run_id: str) -> Path:
    """Where the replay of ``run_id`` goes: the folder ``nbmlops reproduce`` uses."""
    return settings.home_dir / "reproduce" / run_id


def _working_folder(piece: ReplaySlice, settings: Settings) -> Path:
    """The folder the recorded kernel ran in, as far as known: its notebook's, else the
    project's (where relative file paths of its cells are looked up)."""
    notebook = piece.target.get("notebook")
    if notebook:
        path = Path(str(notebook))
        path = path if path.is_absolute() else settings.project_dir / path
        if path.parent.is_dir():
            return path.parent
    return settings.project_dir


def export_notebook(run_id: str, settings: Settings | None = None) -> ReplayExport:
    """Write the replay notebook of the ``%%track`` run ``run_id`` (an unambiguous prefix
    works); raises UsageError for an unknown run or one no recorded cell made. What cannot be
    replayed is in ``blockers`` (the notebook is written all the same, to be fixed)."""
    s = settings or project_settings()
    store = lineage_store(s)
    try:
        piece = replay_slice(store, run_id, s.project_dir)
        folder = _working_folder(piece, s)
        if folder != s.project_dir:
            piece = replay_slice(store, run_id, folder)
    finally:
        store.close()
    path = write_notebook(piece, replay_folder(s, piece.run_id) / "replay.ipynb")
    return ReplayExport(path, piece)
