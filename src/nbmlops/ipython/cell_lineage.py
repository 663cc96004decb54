"""Every executed cell, tracked or not, leaves a lineage record: the shell's ``pre_run_cell``
and ``post_run_cell`` events drive :func:`nbmlops.api.lineage.cell_lineage`."""

from __future__ import annotations

from typing import Any

from nbmlops.api.lineage import CellLineage, cell_lineage
from nbmlops.api.tracking import get_tracker, notebook_from_environment

# Cell magics whose body is Python run in the user's namespace: the body is what is analysed.
_PYTHON_CELL_MAGICS = ("track", "time", "timeit", "capture", "prun")


class CellLineageHooks:
    """The shell's run-cell events, forwarded to the recorder; never raises into a cell."""

    def __init__(self, shell: Any, lineage: CellLineage):
        self.shell = shell
        self.lineage = lineage
        self._notebook: str | None = None
        self._looked_up = False

    def _python(self, raw: str) -> str:
        text = raw.lstrip()
        if text.startswith("%%"):
            magic, _, body = text[2:].partition("\n")
            name = magic.split()[0] if magic.split() else ""
            return str(self.shell.transform_cell(body)) if name in _PYTHON_CELL_MAGICS else ""
        return str(self.shell.transform_cell(raw))

    def pre_run_cell(self, info: Any) -> None:
        try:
            source = self._python(getattr(info, "raw_cell", "") or "")
        except Exception:
            source = ""
        self.lineage.before(source, self.shell.user_ns)

    def post_run_cell(self, result: Any) -> None:
        info = getattr(result, "info", None)
        raw = getattr(info, "raw_cell", "") or ""
        if not self.lineage.pending:  # the cell that loaded nbmlops: read after it ran
            self.pre_run_cell(info)
        if not self._looked_up:
            self._looked_up = True
            try:
                self._notebook = notebook_from_environment(self.shell.user_ns)
            except Exception:
                self._notebook = None
        parent = getattr(self.shell, "parent_header", None) or {}
        meta = parent.get("metadata") if isinstance(parent, dict) else None
        cell_id = meta.get("cellId") if isinstance(meta, dict) else None
        error = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        self.lineage.after(
            self.shell.user_ns,
            raw_source=raw,
            execution_count=getattr(result, "execution_count", None),
            error=error,
            notebook=self._notebook,
            cell_id=cell_id,
        )


_hooks: dict[int, CellLineageHooks] = {}


def register(shell: Any) -> None:
    """Record every executed cell from now on, unless ``lineage.untracked`` is false."""
    if id(shell) in _hooks:
        return
    lineage = cell_lineage(get_tracker().settings)
    if lineage is None:
        return
    hooks = CellLineageHooks(shell, lineage)
    lineage.start()
    shell.events.register("pre_run_cell", hooks.pre_run_cell)
    shell.events.register("post_run_cell", hooks.post_run_cell)
    _hooks[id(shell)] = hooks


def unregister(shell: Any) -> None:
    hooks = _hooks.pop(id(shell), None)
    if hooks is None:
        return
    for name in ("pre_run_cell", "post_run_cell"):
        try:
            shell.events.unregister(name, getattr(hooks, name))
        except ValueError:
            pass
    hooks.lineage.stop()
