"""The lineage of every executed cell, tracked or not: what it read and bound, with digests of
the frames and arrays among them, and the data versions it loaded.

One :class:`CellRecord` per executed cell keeps what a later replay of the cells a model
depends on needs: the source as it was run, the execution count, the names read and bound
with their digests, the data versions loaded. :class:`CellRecorder` builds it from two calls
around the cell (``before`` and ``after``); the IPython adapter drives it from the shell's
``pre_run_cell``/``post_run_cell`` events and the record goes straight into ``lineage.db``
(one SQLite transaction before the next cell starts, so a killed kernel loses nothing that
ran).

Cheap by design: the AST analysis is the one tracked cells use; a value already digested keeps
its digest while it is the same object and no cell looks like it changed it in place (an
identity cache, as the data store's stat cache is for files), a data version loaded with ``nbmlops.data.load``
is known by its digest without hashing it, and a value larger than
``lineage.max_digest_bytes`` is recorded by shape and schema only.
"""

from __future__ import annotations

import ast
import threading
import time
import uuid
import weakref
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from nbmlops.core.data.digest_framing import loaded_module
from nbmlops.core.data.hashing import digest_value, is_digestible
from nbmlops.core.tracking.analysis import CellAnalysis, analyze_cell

if TYPE_CHECKING:
    from nbmlops.core.tracking.redact import Redactor

__all__ = [
    "CellLineage",
    "CellRecord",
    "CellRecorder",
    "CellValue",
    "describe",
    "mutated_names",
    "note_load",
]

_MAX_SOURCE_CHARS = 200_000  # a pasted data blob is not worth keeping whole in lineage.db


@dataclass
class CellValue:
    """A frame, series or array a cell read or bound: by digest, or by shape and schema only
    (``digest`` None) when it was larger than the limit or could not be digested."""

    name: str
    kind: str
    shape: list[int]
    schema: dict[str, str] | None
    nbytes: int
    digest: str | None = None
    note: str = ""  # why there is no digest


@dataclass
class CellRecord:
    """One executed cell: enough to draw its lineage and to replay it later."""

    session: str  # one per kernel process
    seq: int  # order of execution within the session
    execution_count: int | None
    ts_ms: int
    duration_ms: int
    source: str  # as it was run (secrets redacted)
    reads: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)
    inputs: list[CellValue] = field(default_factory=list)
    outputs: list[CellValue] = field(default_factory=list)
    loads: list[dict[str, str]] = field(default_factory=list)  # {"ref", "digest"}
    notebook: str | None = None
    cell_id: str | None = None
    tracked: bool = False  # a %%track cell: its lineage is its run's
    error: str | None = None

    @property
    def node(self) -> str:
        return f"cell:{self.session}/{self.seq}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- data versions loaded while a cell runs ---------------------------------------------------

_loads_lock = threading.Lock()
_loads: list[dict[str, str]] | None = None  # None: no recorder is listening
_seeded: list[tuple[Any, str]] = []  # (value, digest) of loaded versions, for the cache


def note_load(ref: str, digest: str, value: Any) -> None:
    """Called by ``nbmlops.data.load``: the running cell loaded data version ``ref``."""
    with _loads_lock:
        if _loads is None:
            return
        _loads.append({"ref": ref, "digest": digest})
        _seeded.append((value, digest))


_OBJECT_BYTES = 64  # an estimate per Python object (a short string) in an object column


def describe(value: Any) -> tuple[str, list[int], dict[str, str] | None, int]:
    """(kind, shape, schema, estimated bytes) of a frame, series or array, without reading
    its values: pandas' ``memory_usage`` builds Series and costs milliseconds per call, which
    each cell would pay. Object columns count ``_OBJECT_BYTES`` per value."""
    pd = loaded_module("pandas", "DataFrame")
    if pd is not None and isinstance(value, pd.DataFrame):
        rows = len(value)
        dtypes = list(value.dtypes.items())
        schema = {str(c): str(t) for c, t in dtypes}
        width = sum(
            _OBJECT_BYTES if t.kind == "O" else getattr(t, "itemsize", _OBJECT_BYTES)
            for _, t in dtypes
        )
        return "dataframe", [rows, len(dtypes)], schema, rows * (width + 8)
    if pd is not None and isinstance(value, pd.Series):
        t = value.dtype
        per = _OBJECT_BYTES if t.kind == "O" else getattr(t, "itemsize", _OBJECT_BYTES)
        return "series", [len(value)], {str(value.name): str(t)}, len(value) * (per + 8)
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        per = _OBJECT_BYTES if value.dtype.kind == "O" else value.dtype.itemsize
        return "ndarray", list(value.shape), {"": str(value.dtype)}, int(value.size) * per
    return "bytes", [len(value)], None, len(value)


# Methods that change a frame or array in place (besides any call with inplace=True or out=).
_MUTATING_METHODS = frozenset(
    {
        "sort",
        "fill",
        "resize",
        "put",
        "itemset",
        "setfield",
        "partition",
        "byteswap",
        "update",
        "insert",
        "pop",
        "popitem",
        "clear",
        "__setitem__",
        "__delitem__",
        "setflags",
    }
)
# Functions that change an argument in place.
_MUTATING_FUNCTIONS = frozenset({"shuffle", "copyto", "place", "putmask", "fill_diagonal"})


def _base(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def mutated_names(source: str, namespace: dict[str, Any]) -> set[str]:
    """Names a cell may change in place: item or attribute assignment (``df["x"] = ...``,
    ``del df["x"]``, ``arr[0] += 1``), in-place methods (``arr.sort()``, ``inplace=True``,
    ``out=arr``), ``np.random.shuffle(arr)``, and any argument of a function defined in the
    notebook itself (its body is not looked into). A heuristic: a library call that mutates its
    argument otherwise goes unseen until a tracked cell digests the value again."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, (ast.Subscript, ast.Attribute)) and (b := _base(sub)):
                    out.add(b)
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        inplace = keywords.get("inplace")
        if (
            isinstance(func, ast.Attribute)
            and (
                func.attr in _MUTATING_METHODS
                or (isinstance(inplace, ast.Constant) and inplace.value is True)
            )
            and (b := _base(func.value)) is not None
        ):
            out.add(b)
        target = keywords.get("out")
        if isinstance(target, ast.Name):
            out.add(target.id)
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        user_fn = (
            isinstance(func, ast.Name)
            and getattr(namespace.get(func.id), "__module__", None) == "__main__"
        )
        if name in _MUTATING_FUNCTIONS or user_fn:
            out |= {a.id for a in node.args if isinstance(a, ast.Name)}
    return out


class _DigestCache:
    """id(value) -> its CellValue while the value is alive and no cell looks like it changed
    it in place. Keyed by identity, checked by a weak reference (an id can be reused)."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Any, CellValue]] = {}

    def get(self, value: Any) -> CellValue | None:
        entry = self._entries.get(id(value))
        if entry is None:
            return None
        ref, known = entry
        if ref() is not value:
            del self._entries[id(value)]
            return None
        return known

    def put(self, value: Any, known: CellValue) -> None:
        try:
            ref = weakref.ref(value)
        except TypeError:  # bytes cannot be weakly referenced: not cached
            return
        self._entries[id(value)] = (ref, known)

    def forget(self, value: Any) -> None:
        self._entries.pop(id(value), None)

    def prune(self) -> None:
        for key in [k for k, (ref, _) in self._entries.items() if ref() is None]:
            del self._entries[key]


class CellRecorder:
    """Builds one :class:`CellRecord` per executed cell (``before``, then ``after``)."""

    def __init__(self, max_digest_bytes: int, redactor: Redactor | None = None):
        self.max_digest_bytes = max_digest_bytes
        self.redactor = redactor  # secrets never reach lineage.db
        self.session = uuid.uuid4().hex[:12]
        self._seq = 0
        self._cache = _DigestCache()
        self._pending: tuple[float, str, CellAnalysis, list[CellValue]] | None = None

    def start(self) -> None:
        """Listen for data versions loaded while cells run."""
        global _loads
        with _loads_lock:
            _loads = []

    def stop(self) -> None:
        global _loads
        with _loads_lock:
            _loads = None
            _seeded.clear()

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def before(self, source: str, namespace: dict[str, Any]) -> None:
        """The cell (IPython syntax already transformed) is about to run: digest what it reads."""
        try:
            analysis = analyze_cell(source)
        except SyntaxError:
            analysis = CellAnalysis()  # the cell fails with the same error when it runs
        inputs = [
            self._value(name, namespace[name])
            for name in analysis.reads
            if not name.startswith("_") and name in namespace and is_digestible(namespace[name])
        ]
        with _loads_lock:
            if _loads is not None:
                _loads.clear()
        self._pending = (time.time(), source, analysis, inputs)

    def after(
        self,
        namespace: dict[str, Any],
        *,
        raw_source: str,
        execution_count: int | None,
        error: BaseException | None = None,
        notebook: str | None = None,
        cell_id: str | None = None,
    ) -> CellRecord:
        """The cell ran: digest what it bound and return its record."""
        started, source, analysis, inputs = self._pending or (
            time.time(),
            raw_source,
            CellAnalysis(),
            [],
        )
        self._pending = None
        with _loads_lock:
            loads = list(_loads or [])
            seeded = list(_seeded)
            _seeded.clear()
        for value, digest in seeded:
            if self._cache.get(value) is None:
                kind, shape, schema, size = describe(value)
                self._cache.put(value, CellValue("", kind, shape, schema, size, digest))
        outputs = [
            self._value(name, namespace[name])
            for name in analysis.assigned
            if not name.startswith("_") and name in namespace and is_digestible(namespace[name])
        ]
        # A value the cell may have changed in place is digested again: when it changed, it is
        # an output too (the store skips it when its digest did not change).
        for name in sorted(mutated_names(source, namespace) & set(analysis.reads)):
            value = namespace.get(name)
            if value is None or name in analysis.assigned or not is_digestible(value):
                continue
            self._cache.forget(value)
            outputs.append(self._value(name, value))
        self._cache.prune()
        self._seq += 1
        text = (
            raw_source if len(raw_source) <= _MAX_SOURCE_CHARS else raw_source[:_MAX_SOURCE_CHARS]
        )
        error_text = f"{type(error).__name__}: {error}" if error is not None else None
        if self.redactor is not None:
            # the values of secret-looking names the cell used, wherever they appear (an error
            # message that quotes a password), besides the built-in patterns
            known = {
                n: v
                for n in [*analysis.reads, *analysis.binds]
                if isinstance(v := namespace.get(n), str)
            }
            redactor = self.redactor.knowing(known)
            text = redactor.code(text)
            error_text = redactor.text(error_text) if error_text else None
        return CellRecord(
            session=self.session,
            seq=self._seq,
            execution_count=execution_count,
            ts_ms=int(started * 1000),
            duration_ms=int((time.time() - started) * 1000),
            source=text,
            reads=list(analysis.reads),
            binds=list(analysis.binds),
            inputs=inputs,
            outputs=outputs,
            loads=loads,
            notebook=notebook,
            cell_id=cell_id,
            tracked=raw_source.lstrip().startswith("%%track"),
            error=error_text,
        )

    def _value(self, name: str, value: Any) -> CellValue:
        known = self._cache.get(value)
        if known is not None:
            return replace(known, name=name)
        try:
            kind, shape, schema, size = describe(value)
        except Exception as err:
            return CellValue(name, type(value).__name__, [], None, 0, note=f"not described: {err}")
        if size > self.max_digest_bytes:
            # not cached: a value over the limit is described again (cheaply) at each use
            return CellValue(
                name,
                kind,
                shape,
                schema,
                size,
                note=f"{size / 2**20:.0f} MiB is above lineage.max_digest_bytes "
                f"({self.max_digest_bytes / 2**20:.0f} MiB): recorded by shape and schema only",
            )
        try:
            d = digest_value(value)
        except Exception as err:  # a value we cannot digest never breaks the user's cell
            return CellValue(name, kind, shape, schema, size, note=f"not digested: {err}")
        known = CellValue(name, d.kind, list(d.shape), d.schema, d.nbytes, d.digest)
        self._cache.put(value, known)
        return known


class CellLineage:
    """Records each executed cell into the project's lineage store. Never raises into a cell:
    a record that cannot be written is counted and logged, and the cell goes on."""

    def __init__(self, settings: Any):
        from nbmlops.core.lineage.store import LineageStore
        from nbmlops.core.tracking.redact import redactor_for

        self.settings = settings
        self.recorder = CellRecorder(settings.lineage.max_digest_bytes, redactor_for(settings))
        self.store = LineageStore(settings.home_dir / "lineage.db")
        self.errors: list[str] = []
        self.recorded = 0

    def start(self) -> None:
        self.recorder.start()

    def stop(self) -> None:
        self.recorder.stop()
        self.store.close()

    @property
    def pending(self) -> bool:
        """A cell's ``before`` was recorded and its ``after`` not yet."""
        return self.recorder.pending

    def before(self, source: str, namespace: dict[str, Any]) -> None:
        try:
            self.recorder.before(source, namespace)
        except Exception as err:
            self._failed("read the cell's inputs", err)

    def after(self, namespace: dict[str, Any], **cell: Any) -> CellRecord | None:
        try:
            record = self.recorder.after(namespace, **cell)
            self.store.record_cell(record)
        except Exception as err:
            self._failed("record the cell", err)
            return None
        self.recorded += 1
        return record

    def _failed(self, what: str, err: Exception) -> None:
        import logging

        text = f"{what}: {type(err).__name__}: {err}"
        repeated = bool(self.errors) and self.errors[-1] == text
        self.errors.append(text)
        del self.errors[:-20]
        if not repeated:  # a full disk fails every cell the same way: said once
            logging.getLogger("nbmlops.lineage").warning(
                "nbmlops: could not %s for the lineage: %s", what, err
            )
