"""The step cache: a step is skipped when its notebook code, parameters, input digests and
environment match an earlier successful run whose outputs still exist with the recorded digests.

File digests are remembered by (size, mtime_ns, inode) so an unchanged file is not read again;
a changed file is always re-read (a same-size edit within one mtime tick is the blind spot every
stat cache shares, so a cache hit also requires the output digests recorded at write time).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import xxhash

from nbmlops.core.data.digest_files import digest_file

CACHE_VERSION = 1


def atomic_write(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON so a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class FileDigests:
    """Content digests of files, remembered by stat; shared by one pipeline run's threads."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._known: dict[str, list[Any]] = {}
        self._dirty = False
        data = read_json_file(path)
        if data and data.get("v") == CACHE_VERSION and isinstance(data.get("files"), dict):
            self._known = data["files"]

    def digest(self, path: str | Path) -> str:
        p = str(Path(path).resolve())
        st = os.stat(p)
        sig = [st.st_size, st.st_mtime_ns, st.st_ino]
        with self._lock:
            known = self._known.get(p)
            if known and known[:3] == sig:
                return str(known[3])
        d = digest_file(p).digest
        with self._lock:
            self._known[p] = [*sig, d]
            self._dirty = True
        return d

    def remember(self, path: str | Path, info: dict[str, Any]) -> None:
        """Take a digest computed elsewhere (a step's output, digested where it was written)."""
        p = str(Path(path).resolve())
        try:
            st = os.stat(p)
        except OSError:
            return
        if st.st_size == info.get("size") and st.st_mtime_ns == info.get("mtime_ns"):
            with self._lock:
                self._known[p] = [st.st_size, st.st_mtime_ns, st.st_ino, info["digest"]]
                self._dirty = True

    def save(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            data = {"v": CACHE_VERSION, "files": dict(self._known)}
            self._dirty = False
        try:
            atomic_write(self.path, data)
        except OSError:
            pass  # only a speed-up


_ENV_DIGESTS: dict[str, str] = {}


def environment_digest(kernel_spec: dict[str, Any]) -> str:
    """Python version, the installed distributions (their dist-info folder names carry name and
    version) and the kernel's command line. Listing folders costs a millisecond; reading every
    distribution's metadata would cost a hundred."""
    argv = [str(a) for a in kernel_spec.get("argv", [])]
    memo = json.dumps(argv)
    if memo in _ENV_DIGESTS:
        return _ENV_DIGESTS[memo]
    h = xxhash.xxh3_128()
    h.update(sys.version.encode())
    h.update(memo.encode())
    exe = argv[0] if argv else sys.executable
    if exe in ("python", "python3", "{python}"):
        exe = sys.executable
    h.update(os.path.realpath(exe).encode())
    for folder in sorted({p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}):
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
        h.update(folder.encode())
        for n in names:
            h.update(n.encode())
    _ENV_DIGESTS[memo] = h.hexdigest()
    return _ENV_DIGESTS[memo]


def cache_key(
    *,
    code: str,
    parameters: dict[str, Any],
    inputs: dict[str, str],
    outputs: dict[str, str],
    environment: str,
    kernel: str,
) -> str:
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "code": code,
            "parameters": parameters,
            "inputs": inputs,
            "outputs": outputs,
            "environment": environment,
            "kernel": kernel,
        },
        sort_keys=True,
        default=str,
    )
    return xxhash.xxh3_128_hexdigest(blob.encode())


class StepCache:
    """``<home>/pipelines/cache/<key>.json``: what a successful step run produced."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def lookup(self, key: str, digests: FileDigests) -> tuple[dict[str, Any] | None, str]:
        """The entry when every recorded output still has its digest; else (None, why)."""
        entry = read_json_file(self._path(key))
        if entry is None:
            return None, "no earlier successful run with this code, parameters and inputs"
        for name, info in entry.get("outputs", {}).items():
            path = info.get("path", "")
            if not os.path.isfile(path):
                return None, f"output {name!r} ({path}) is missing"
            try:
                if digests.digest(path) != info.get("digest"):
                    return None, f"output {name!r} ({path}) changed since it was written"
            except OSError as err:
                return None, f"output {name!r} cannot be read: {err}"
        return entry, f"cached (run {entry.get('run_key', '?')[:8]})"

    def store(self, key: str, entry: dict[str, Any]) -> None:
        atomic_write(self._path(key), {**entry, "key": key, "stored_at": time.time()})
