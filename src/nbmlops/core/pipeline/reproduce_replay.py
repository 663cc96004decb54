"""The parts of reproducing a ``%%track`` run of an interactive notebook: its replay notebook
(the cells of the execution history it depends on, :mod:`nbmlops.core.lineage.replay`) with the
files it reads copied beside it, the digests of the models a run logged, and the unseeded random
generators a replay's code calls (named when digests differ)."""

from __future__ import annotations

import ast
import hashlib
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from nbmlops.config import Settings
from nbmlops.core.lineage.replay import (
    ReplaySlice,
    files_read,
    find_run,
    replay_slice,
    write_notebook,
)
from nbmlops.core.lineage.store import LineageStore
from nbmlops.core.pipeline.formatting import short_digest
from nbmlops.core.pipeline.reproduce_report import Check
from nbmlops.core.tracking.store import quiet_artifact_downloads
from nbmlops.exceptions import PipelineError, UsageError

__all__ = ["full_run_id", "model_checks", "model_digests", "prepare_replay", "unseeded_calls"]

# numpy's legacy global generator and the random module: seeded only by their seed() call.
_GLOBAL_DRAWS = frozenset(
    {
        "rand",
        "randn",
        "randint",
        "random",
        "random_sample",
        "choice",
        "shuffle",
        "permutation",
        "normal",
        "uniform",
        "sample",
        "integers",
    }
)
# Calls that draw at random unless given random_state=.
_STATE_CALLS = frozenset({"train_test_split", "sample", "shuffle", "ShuffleSplit", "KFold"})


def full_run_id(run_id: str, settings: Settings) -> str:
    """The run id a prefix stands for, when the lineage knows exactly one such run."""
    store = LineageStore(settings.home_dir / "lineage.db")
    try:
        return str(find_run(store, run_id)["run_id"])
    except UsageError as err:
        if "ambiguous" in err.what:
            raise PipelineError(err.what, fix=err.fix) from None
        return run_id  # MLflow says whether it exists
    finally:
        store.close()


def prepare_replay(settings: Settings, run_id: str, folder: Path) -> tuple[ReplaySlice, Path]:
    """The slice of ``run_id``, its notebook in ``folder``, and each file it reads by a
    relative path copied into ``folder/work`` (the replay's working folder, so the user's files
    are never written)."""
    store = LineageStore(settings.home_dir / "lineage.db")
    try:
        piece = replay_slice(store, run_id, settings.project_dir)
    finally:
        store.close()
    work = folder / "work"
    work.mkdir(parents=True, exist_ok=True)
    for record in piece.cells:
        for path in files_read(record.get("source") or ""):
            src = Path(path)
            if src.is_absolute() or ".." in src.parts or not (settings.project_dir / src).is_file():
                continue
            dest = work / src
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(settings.project_dir / src, dest)
    return piece, write_notebook(piece, folder / "replay.ipynb")


def model_digests(client: Any, run: Any) -> dict[str, str]:
    """sha256 of the serialized model file (``model.*``) of each model ``run`` logged, by model
    name. Files are hashed, never loaded."""
    found = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    import mlflow.artifacts

    out: dict[str, str] = {}
    for model in found:
        if str(model.status).rsplit(".", 1)[-1] != "READY":
            continue
        with tempfile.TemporaryDirectory() as tmp, quiet_artifact_downloads():
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=model.artifact_location, dst_path=tmp
                )
            )
            h = hashlib.sha256()
            files = sorted(p for p in local.rglob("model.*") if p.is_file())
            for p in files:
                h.update(p.name.encode() + b"\0" + _content(p))
            if files:
                out[model.name] = h.hexdigest()
    return out


# A skops file names its members and nodes by the objects' id() in the process that saved it
# (15-digit numbers), and zip entries carry their write time: both change in every process
# while the model is the same, so they are renumbered in order of first use before hashing.
_OBJECT_ID = re.compile(rb"\d{13,}")


def _content(path: Path) -> bytes:
    """The bytes of a model file that depend on the model only."""
    data = path.read_bytes()
    if not zipfile.is_zipfile(path):
        return data
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    order: dict[bytes, bytes] = {}

    def renumber(text: bytes) -> bytes:
        return _OBJECT_ID.sub(lambda m: order.setdefault(m.group(), b"#%d" % len(order)), text)

    schema = renumber(members.pop("schema.json", b""))
    parts = [schema, *sorted(renumber(n.encode()) + b"\0" + v for n, v in members.items())]
    return b"\0".join(parts)


def model_checks(before: dict[str, str], after: dict[str, str]) -> list[Check]:
    """One check per model: its serialized file's digest as recorded and now."""
    return [
        Check(
            f"model {name}",
            short_digest(before[name]) if name in before else "(none)",
            short_digest(after[name]) if name in after else "(not logged)",
            before.get(name) == after.get(name),
        )
        for name in sorted(set(before) | set(after))
    ]


def unseeded_calls(sources: list[str]) -> list[str]:
    """Calls in ``sources`` that draw from an unseeded random generator:
    ``default_rng()``/``RandomState()`` without a seed, numpy's or ``random``'s global functions
    without a ``seed()`` call, and ``train_test_split``, ``.sample``, ``shuffle`` or a shuffling
    splitter without ``random_state``."""
    trees = []
    for source in sources:
        text = "\n".join(
            "" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines()
        )
        try:
            trees.append(ast.parse(text))
        except SyntaxError:
            continue
    calls = [n for t in trees for n in ast.walk(t) if isinstance(n, ast.Call)]
    seeded = any(isinstance(c.func, ast.Attribute) and c.func.attr == "seed" for c in calls)
    found: list[str] = []
    for call in calls:
        func = call.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        keywords = {k.arg for k in call.keywords}
        text = ast.unparse(call)
        module = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
        global_draw = module in ("np.random", "numpy.random", "random")
        if name in ("default_rng", "RandomState") and not call.args and "seed" not in keywords:
            found.append(text)
        elif global_draw and name in _GLOBAL_DRAWS:
            if not seeded:
                found.append(text)
        elif name in _STATE_CALLS and "random_state" not in keywords:
            found.append(text)
    return list(dict.fromkeys(t if len(t) <= 80 else t[:77] + "..." for t in found))
