"""The cells a tracked run depends on, from the kernel's execution history in ``lineage.db``.

A ``%%track`` run of an interactive notebook has no notebook file that made it: cells ran out
of order, some were edited and run again, some deleted. The history keeps each executed cell as
it ran (source, execution count, names read and bound), so walking it backwards from the run's
cell, keeping each cell that last bound a name still needed, gives the slice that made the run:
in real execution order, with the source as it ran, and nothing unrelated.

What the slice cannot give back is named with its reason: a name no recorded cell bound (a
value made before nbmlops was loaded, or by a widget callback), a file a kept cell read that no
longer exists.
"""

from __future__ import annotations

import ast
import builtins
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.core.lineage.cells import mutated_names
from nbmlops.core.lineage.store import LineageStore
from nbmlops.exceptions import UsageError

__all__ = [
    "Blocker",
    "ReplaySlice",
    "find_run",
    "replay_slice",
    "slice_history",
    "write_notebook",
]

# Names IPython puts in every user namespace: no cell has to bind them.
_SHELL_NAMES = frozenset({"get_ipython", "display", "In", "Out", "exit", "quit"})
# Calls that read a file named by their first argument.
_FILE_READERS = frozenset(
    {
        "open",
        "read_csv",
        "read_parquet",
        "read_json",
        "read_excel",
        "read_table",
        "read_feather",
        "read_pickle",
        "loadtxt",
        "genfromtxt",
        "load",
        "fromfile",
    }
)
_LOAD_EXT = "%load_ext nbmlops"
# Magics whose effect is on the project, not on names the run reads: not done again by a replay.
_PROJECT_MAGICS = frozenset(
    {"%register", "%promote", "%rollback", "%approve", "%replay", "%lineage", "%card"}
)
_SUB = {"%data": "commit", "%track": "sync"}
# A run starts while its cell runs: the cell's record starts before and ends after it, give or
# take the two hooks' order and clock reads.
_SLACK_MS = 2000


@dataclass(frozen=True)
class Blocker:
    """Something the replay cannot give back, and why."""

    what: str
    reason: str


@dataclass
class ReplaySlice:
    """The cells a run depends on, oldest first, and what keeps them from replaying."""

    run_id: str
    target: dict[str, Any]
    cells: list[dict[str, Any]] = field(default_factory=list)  # history records, target last
    blockers: list[Blocker] = field(default_factory=list)
    skipped: int = 0  # cells of the session left out

    @property
    def replayable(self) -> bool:
        return not self.blockers

    def sources(self) -> list[tuple[str, int | None]]:
        """The cells of the replay notebook with the execution count each ran as:
        ``%load_ext nbmlops``, then each kept cell as it ran (without its own
        ``%load_ext nbmlops``)."""
        out: list[tuple[str, int | None]] = [(_LOAD_EXT, None)]
        for record in self.cells:
            lines = [ln for ln in record["source"].splitlines() if not _dropped(ln)]
            text = "\n".join(lines).strip("\n")
            if text.strip():
                out.append((text, record.get("execution_count")))
        return out


def _dropped(line: str) -> bool:
    """A line the replay leaves out: loading nbmlops again, or a magic that changes the
    project (registry moves, data commits, shipping) rather than the kernel's state."""
    text = line.strip()
    if text == _LOAD_EXT:
        return True
    words = text.split()
    return bool(words) and (
        words[0] in _PROJECT_MAGICS
        or (words[0] in ("%data", "%track") and words[1:2] == [_SUB.get(words[0])])
    )


def _python(source: str) -> str:
    """The Python of a cell as recorded: magic and shell lines dropped (the core does not
    run IPython's transformers; the recorded reads and binds came from them)."""
    return "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines())


def _bound(record: dict[str, Any]) -> set[str]:
    """Names a recorded cell bound or changed in place."""
    names = set(record.get("binds") or [])
    names |= {o["name"] for o in record.get("outputs") or [] if o.get("name")}
    names |= mutated_names(_python(record.get("source") or ""), {})
    return names


def slice_history(cells: list[dict[str, Any]], target: int, run_id: str = "") -> ReplaySlice:
    """The cells of ``cells`` (one session's history, in execution order) that the cell at
    index ``target`` depends on: each cell that last bound a name still needed, transitively.
    A cell that raised is left out (its bindings are not known to be whole)."""
    record = cells[target]
    out = ReplaySlice(run_id, record)
    needed = set(record.get("reads") or [])
    kept: list[dict[str, Any]] = [record]
    for earlier in reversed(cells[:target]):
        if earlier.get("error"):
            continue
        bound = _bound(earlier)
        hit = bound & needed
        if not hit:
            continue
        kept.append(earlier)
        reads = set(earlier.get("reads") or [])
        # a name bound without being read is defined here: earlier binders do not matter
        needed -= hit - reads
        needed |= reads
    kept.reverse()
    out.cells = kept
    out.skipped = target + 1 - len(kept)
    unknown = sorted(n for n in needed if not _known(n))
    for name in unknown:
        out.blockers.append(
            Blocker(
                name,
                "created outside any recorded cell (before nbmlops was loaded, by a widget "
                "callback or another thread): bind it in a cell and run the training again",
            )
        )
    return out


def _known(name: str) -> bool:
    return name in _SHELL_NAMES or hasattr(builtins, name) or name.startswith("_")


def files_read(source: str) -> list[str]:
    """Paths a cell reads, when spelled as a string literal: ``pd.read_csv("x.csv")``,
    ``open("x")``, ``np.load("x.npy")``."""
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        arg = node.args[0]
        if (
            name in _FILE_READERS
            and isinstance(arg, ast.Constant)
            and isinstance(arg.value, str)
            and arg.value not in found
        ):
            found.append(arg.value)
    return found


def check_files(piece: ReplaySlice, folder: Path) -> None:
    """Add a blocker for each file a kept cell reads that is no longer there (relative paths
    from ``folder``, the kernel's working folder)."""
    for record in piece.cells:
        for path in files_read(record.get("source") or ""):
            where = Path(path).expanduser()
            if not where.is_absolute():
                where = folder / where
            if not where.exists():
                count = record.get("execution_count")
                piece.blockers.append(
                    Blocker(
                        path,
                        f"read by cell [{count}] but no longer exists at {where}, and a file "
                        "read by path has no recorded version: put it back, or commit it "
                        "(`nbmlops data commit`) and load it with nbmlops.data.load",
                    )
                )


def find_run(store: LineageStore, prefix: str) -> dict[str, Any]:
    """The lineage attributes of the run whose MLflow id is ``prefix`` or starts with it."""
    what = prefix.strip()
    if not what or not all(c.isalnum() or c in "-_" for c in what):
        raise UsageError(
            f"{prefix!r} is not a run id",
            fix="Pass the run id a %%track cell printed (or its first characters).",
        )
    runs = [n.attrs for n in store.nodes() if n.kind == "run" and n.attrs.get("run_id")]
    exact = [a for a in runs if a["run_id"] == what]
    found = exact or [a for a in runs if str(a["run_id"]).startswith(what)]
    if not found:
        raise UsageError(
            f"No run {what!r} in the lineage of this project",
            fix="Runs appear once shipped to MLflow: `%track sync` or `nbmlops sync`, then "
            "check the id (the MLflow UI, `nbmlops runs`).",
        )
    if len(found) > 1:
        ids = ", ".join(sorted(str(a["run_id"]) for a in found)[:5])
        raise UsageError(
            f"Run id prefix {what!r} is ambiguous: {ids}",
            fix="Give more characters of the run id.",
        )
    return found[0]


def _target_index(cells: list[dict[str, Any]], start_ms: int) -> int | None:
    best: tuple[int, int] | None = None
    for i, c in enumerate(cells):
        if not c.get("tracked"):
            continue
        begin = int(c["ts_ms"]) - _SLACK_MS
        end = int(c["ts_ms"]) + int(c.get("duration_ms") or 0) + _SLACK_MS
        if begin <= start_ms <= end:
            distance = abs(start_ms - int(c["ts_ms"]))
            if best is None or distance < best[0]:
                best = (distance, i)
    return best[1] if best else None


def replay_slice(store: LineageStore, run_id: str, folder: Path) -> ReplaySlice:
    """The slice of the execution history that made tracked run ``run_id`` (any unambiguous
    prefix), with what cannot be replayed; file paths are checked from ``folder``."""
    attrs = find_run(store, run_id)
    full_id = str(attrs["run_id"])
    start = attrs.get("start_ms")
    history = store.cells()
    hit = _target_index(history, int(start)) if start is not None else None
    if hit is None:
        raise UsageError(
            f"Run {full_id} was not made by a recorded notebook cell, so there is no history "
            "to replay",
            fix="Only %%track runs of a notebook with `%load_ext nbmlops` (lineage.untracked "
            "on) have one; runs of `nbmlops run` and pipelines are reproduced from their "
            "recorded notebook: nbmlops reproduce " + full_id,
        )
    session = history[hit]["session"]
    cells = [c for c in history if c["session"] == session]
    cells.sort(key=lambda c: int(c["seq"]))
    target = next(i for i, c in enumerate(cells) if c["seq"] == history[hit]["seq"])
    piece = slice_history(cells, target, full_id)
    check_files(piece, folder)
    return piece


def write_notebook(piece: ReplaySlice, path: Path, kernel: str = "python3") -> Path:
    """Write the slice as a clean notebook (each cell's execution count as it ran is kept in
    its metadata); written to a temporary name, then renamed."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nb.metadata["nbmlops"] = {
        "replays": piece.run_id,
        "blockers": [{"what": b.what, "reason": b.reason} for b in piece.blockers],
    }
    for source, count in piece.sources():
        cell = nbformat.v4.new_code_cell(source)
        if count is not None:
            cell.metadata["nbmlops"] = {"execution_count": count}
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(nb, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
