"""Where the gateway asks which version a ref means, and gets its files: MLflow's registry.

Two ways to ask the same questions (:class:`ModelRegistry`):

* :class:`MlflowRegistry` uses ``MlflowClient`` in this process.
* :class:`RegistryWorker` sends them to a helper process running :class:`MlflowRegistry`
  (``python -P -m nbmlops.core.serving.registry``), one JSON line a question and an answer.

The gateway uses the helper process. Importing MLflow's client and SQLAlchemy store takes
about 2 s of CPU; in a helper process that time runs on another core while the gateway
imports the model's own libraries, and it never holds the serving process's GIL, neither at
start-up (while the first requests arrive) nor for the look-up every ``poll_seconds`` later.

The helper runs at the lowest CPU priority (nice 19) whenever nobody waits for it: from the
start when the gateway starts from its cache, else once the start-up questions are answered
and it has been idle for a moment. It stays in the gateway's session (a new session would be
a scheduling group of its own, where its nice value would not count against the gateway's)
but in a process group of its own (Ctrl-C in a terminal goes to the gateway only). It answers
look-ups and downloads on separate threads (a big download does not hold up an alias
look-up), exits when its standard input closes (so it never outlives the gateway) and after
``idle_exit`` seconds without questions; the next question starts a new one. It only
downloads into a folder the gateway names; the gateway checks every file before anything in
it is loaded.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nbmlops.core.serving.errors import (
    BadModelSpec,
    ModelLoadError,
    ModelNotFoundError,
    ServingError,
)
from nbmlops.exceptions import NbmlopsError, UnsafeModelError

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("nbmlops.serving")

DEFAULT_ALIAS = "champion"
_ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class ModelRef:
    """A registered model and which version of it: an alias (followed) or a fixed number."""

    name: str
    alias: str | None = None
    version: int | None = None

    @property
    def follows_alias(self) -> bool:
        return self.alias is not None

    def __str__(self) -> str:
        return f"{self.name}@{self.alias if self.alias is not None else self.version}"

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """``NAME@alias``, ``NAME@3``, ``models:/NAME@alias``, ``models:/NAME/3`` or ``NAME``
        (which means ``NAME@champion``)."""
        spec = text.strip()
        if spec.startswith("models:/"):
            spec = spec.removeprefix("models:/")
            if "@" not in spec and "/" in spec:
                spec = spec.replace("/", "@", 1)
        name, sep, which = spec.rpartition("@")
        if not sep:
            name, which = spec, DEFAULT_ALIAS
        if not name or not which or "/" in name:
            raise BadModelSpec(
                f"Cannot read the model spec {text!r}",
                fix="Write NAME@alias (e.g. churn@champion) or NAME@VERSION (e.g. churn@3).",
            )
        if which.isdigit():
            return cls(name, version=int(which))
        if not _ALIAS_RE.match(which):
            raise BadModelSpec(
                f"{which!r} in {text!r} is neither a version number nor an alias",
                fix="Aliases are letters, digits, '_' and '-', starting with a letter.",
            )
        return cls(name, alias=which)


@dataclass(frozen=True)
class ResolvedVersion:
    """What the registry says a ref points at now."""

    name: str
    version: int
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "tags": dict(self.tags),
            "source": self.source,
            "run_id": self.run_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResolvedVersion:
        tags = data.get("tags") or {}
        if not isinstance(tags, dict):
            raise ValueError("tags is not a mapping")
        return cls(
            name=str(data["name"]),
            version=int(data["version"]),
            tags={str(k): str(v) for k, v in tags.items()},
            source=str(data.get("source") or ""),
            run_id=None if data.get("run_id") is None else str(data["run_id"]),
        )


class ModelRegistry(Protocol):
    """The registry questions the gateway asks."""

    def resolve(self, ref: ModelRef) -> ResolvedVersion: ...

    def download(self, name: str, version: int, dst: Path) -> Path: ...

    def download_uri(self, name: str, version: int) -> str: ...


class MlflowRegistry:
    """MLflow's registry through ``MlflowClient`` in this process."""

    def __init__(self, tracking_uri: str, where: str | None = None):
        self.tracking_uri = tracking_uri
        self.where = where or tracking_uri
        self._client: MlflowClient | None = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    from mlflow import MlflowClient

                    self._client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def resolve(self, ref: ModelRef) -> ResolvedVersion:
        """The version ``ref`` points at now; ModelNotFoundError lists what exists."""
        from mlflow.exceptions import MlflowException

        try:
            if ref.alias is not None:
                mv = self.client.get_model_version_by_alias(ref.name, ref.alias)
            else:
                mv = self.client.get_model_version(ref.name, str(ref.version))
        except MlflowException as err:
            if getattr(err, "error_code", "") in (
                "RESOURCE_DOES_NOT_EXIST",
                "INVALID_PARAMETER_VALUE",
            ):
                raise self._not_found(ref) from None
            raise ServingError(
                f"Cannot read {ref} from the model registry: {err.message}",
                where=self.where,
                fix="Check that the tracking store is reachable (nbmlops status).",
            ) from None
        return ResolvedVersion(
            name=mv.name,
            version=int(mv.version),
            tags=dict(mv.tags or {}),
            source=str(mv.source or ""),
            run_id=mv.run_id,
        )

    def _not_found(self, ref: ModelRef) -> ModelNotFoundError:
        try:
            rm = self.client.get_registered_model(ref.name)
        except Exception:
            try:
                names = sorted(m.name for m in self.client.search_registered_models(max_results=20))
            except Exception:
                names = []
            return ModelNotFoundError(
                f"No registered model {ref.name!r}",
                where=self.where,
                fix=f"Registered models: {', '.join(names)}." if names else "Register one first.",
            )
        try:
            quoted = ref.name.replace("'", "\\'")
            found = self.client.search_model_versions(f"name = '{quoted}'", max_results=200)
            versions = sorted(int(v.version) for v in found)
        except Exception:
            versions = []
        aliases = ", ".join(f"@{a} -> {v}" for a, v in sorted((rm.aliases or {}).items()))
        what = (
            f"Model {ref.name!r} has no alias {ref.alias!r}"
            if ref.alias is not None
            else f"Model {ref.name!r} has no version {ref.version}"
        )
        return ModelNotFoundError(
            what,
            where=self.where,
            fix=f"Versions: {', '.join(map(str, versions)) or 'none'}; aliases: "
            f"{aliases or 'none'}. Serve one of them, e.g. {ref.name}@{versions[-1] if versions else 1}.",
        )

    def download_uri(self, name: str, version: int) -> str:
        return str(self.client.get_model_version_download_uri(name, str(version)))

    def download(self, name: str, version: int, dst: Path) -> Path:
        """The version's files, downloaded into ``dst``; the folder they are in."""
        import mlflow.artifacts

        from nbmlops.core.tracking.store import quiet_artifact_downloads

        try:
            # download_artifacts("models:/NAME/VERSION") resolves the name with the
            # process-wide registry URI, whatever registry_uri it is given (MLflow 3.17), so
            # the version's own artifact location is looked up with our client instead.
            source = self.download_uri(name, version)
            with quiet_artifact_downloads():
                return Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=source,
                        dst_path=str(dst),
                        tracking_uri=self.tracking_uri,
                        registry_uri=self.tracking_uri,
                    )
                )
        except Exception as err:
            raise ModelLoadError(
                f"Cannot download {name} version {version}: {err}",
                where=self.where,
                fix="Check that the version's artifacts exist and are readable.",
            ) from None


# --- the helper process: the parent's side -------------------------------------------------
_ERRORS: dict[str, type[NbmlopsError]] = {
    cls.__name__: cls
    for cls in (ModelNotFoundError, ModelLoadError, ServingError, UnsafeModelError, NbmlopsError)
}
RESOLVE_TIMEOUT = 120.0  # MLflow's HTTP client retries for about two minutes itself
DOWNLOAD_TIMEOUT = 1800.0
IDLE_EXIT_SECONDS = 300.0
PREFETCH_FRESH_SECONDS = 60.0  # an answer asked for at start-up is used only this long
LOWER_PRIORITY_AFTER = 2.0  # idle seconds after which an urgent helper steps back
_URI_VAR = "NBMLOPS_REGISTRY_HELPER_URI"
_WHERE_VAR = "NBMLOPS_REGISTRY_HELPER_WHERE"


class RegistryHelperGone(ServingError):
    """The helper process ended before it answered (it is started again on the next call)."""


@dataclass
class _Process:
    popen: subprocess.Popen[bytes]
    pending: dict[int, Future[dict[str, Any]]] = field(default_factory=dict)
    stderr_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=20)
    )
    gone: bool = False
    stderr_reader: threading.Thread | None = None


class RegistryWorker:
    """:class:`MlflowRegistry` in a helper process; one per tracking URI and process
    (:meth:`shared`), used from any thread."""

    _shared: dict[tuple[int, str], RegistryWorker] = {}
    _shared_lock = threading.Lock()

    def __init__(
        self, tracking_uri: str, where: str | None = None, idle_exit: float = IDLE_EXIT_SECONDS
    ):
        self.tracking_uri = tracking_uri
        self.where = where or tracking_uri
        self.idle_exit = idle_exit
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._proc: _Process | None = None
        self._early: dict[ModelRef, tuple[float, Future[dict[str, Any]]]] = {}
        self.started = 0  # helper processes started so far

    @classmethod
    def shared(cls, tracking_uri: str, where: str | None = None) -> RegistryWorker:
        key = (os.getpid(), tracking_uri)
        with cls._shared_lock:
            worker = cls._shared.get(key)
            if worker is None:
                worker = cls._shared[key] = cls(tracking_uri, where)
            return worker

    # --- process -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """A helper process is up (it may have exited on its own since: idle, or died)."""
        proc = self._proc
        return proc is not None and not proc.gone and proc.popen.poll() is None

    def start(self) -> RegistryWorker:
        """Start the helper process now, at low priority (it imports MLflow straight away),
        unless it runs."""
        with self._lock:
            self._running(urgent=False)
        return self

    def _running(self, urgent: bool = True) -> _Process:
        proc = self._proc
        if proc is not None and not proc.gone and proc.popen.poll() is None:
            return proc
        command = [
            sys.executable,
            "-P",  # not the working folder first on sys.path: a project's mlflow.py stays put
            "-m",
            __name__,
            "--idle-exit",
            str(self.idle_exit),
            *(["--urgent"] if urgent else []),
        ]
        # This very nbmlops, found where it was found here (installed or a source folder).
        package_root = str(Path(__file__).resolve().parents[3])
        pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        env = {
            **os.environ,
            "PYTHONPATH": pythonpath,
            # In the environment, not on the command line: a URI may hold a password, and
            # any local user can read another's command line.
            _URI_VAR: self.tracking_uri,
            _WHERE_VAR: self.where,
        }
        popen = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            process_group=0,  # Ctrl-C goes to the gateway; the helper ends on EOF
        )
        proc = self._proc = _Process(popen)
        self.started += 1
        threading.Thread(
            target=self._read_answers, args=(proc,), name="nbmlops-registry-answers", daemon=True
        ).start()
        proc.stderr_reader = threading.Thread(
            target=self._read_stderr, args=(proc,), name="nbmlops-registry-stderr", daemon=True
        )
        proc.stderr_reader.start()
        return proc

    def _read_answers(self, proc: _Process) -> None:
        assert proc.popen.stdout is not None
        for line in proc.popen.stdout:
            try:
                answer = json.loads(line)
                future = proc.pending.pop(int(answer["id"]))
            except (ValueError, KeyError, TypeError):
                log.warning("registry helper: unreadable answer %r", line[:200])
                continue
            future.set_result(answer)
        code = proc.popen.wait()
        if proc.stderr_reader is not None:
            proc.stderr_reader.join(timeout=5)  # its last words go into the error below
        with self._lock:
            proc.gone = True
            pending, proc.pending = proc.pending, {}
        if pending:
            tail = " | ".join(proc.stderr_tail)
            err = RegistryHelperGone(
                f"The registry helper process exited (code {code}) before it answered"
                + (f": {tail}" if tail else ""),
                where=self.where,
                fix="Check that the tracking store is reachable (nbmlops status).",
            )
            for future in pending.values():
                future.set_exception(err)

    def _read_stderr(self, proc: _Process) -> None:
        assert proc.popen.stderr is not None
        for raw in proc.popen.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                proc.stderr_tail.append(line)
                log.debug("registry helper: %s", line)

    def close(self) -> None:
        """End the helper process (questions still waiting fail)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.popen.stdin.close()  # type: ignore[union-attr]
        try:
            proc.popen.wait(5)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(5)

    # --- questions ---------------------------------------------------------------------------
    def submit(self, question: dict[str, Any]) -> Future[dict[str, Any]]:
        """Send one question; the future holds the raw answer."""
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            proc = self._running()
            qid = next(self._ids)
            proc.pending[qid] = future
            try:
                proc.popen.stdin.write(json.dumps({"id": qid, **question}).encode() + b"\n")  # type: ignore[union-attr]
                proc.popen.stdin.flush()  # type: ignore[union-attr]
            except OSError:
                proc.pending.pop(qid, None)
                proc.gone = True
                future.set_exception(RegistryHelperGone("The registry helper process is gone"))
        return future

    def _ask(self, question: dict[str, Any], timeout: float) -> dict[str, Any]:
        for attempt in (1, 2):  # once more if the helper had just exited (idle) or died
            try:
                return self._answer(self.submit(question), timeout)
            except RegistryHelperGone:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _answer(self, future: Future[dict[str, Any]], timeout: float) -> dict[str, Any]:
        try:
            answer = future.result(timeout)
        except FutureTimeout:
            self.close()  # a helper stuck on one question is replaced on the next
            raise ServingError(
                f"The model registry did not answer within {timeout:g} s",
                where=self.where,
                fix="Check that the tracking store is reachable (nbmlops status).",
            ) from None
        if answer.get("ok"):
            return dict(answer.get("result") or {})
        cls = _ERRORS.get(str(answer.get("error")), ServingError)
        raise cls(
            str(answer.get("what") or "The registry helper failed"),
            where=answer.get("where"),
            fix=answer.get("fix"),
        )

    def prefetch(self, ref: ModelRef) -> None:
        """Ask about ``ref`` now; the next :meth:`resolve` of it within
        ``PREFETCH_FRESH_SECONDS`` reads this answer (start-up asks before it imports the
        models' libraries)."""
        with self._lock:
            if ref in self._early:
                return
        raw = self.submit(_resolve_question(ref))
        with self._lock:
            self._early[ref] = (time.monotonic(), raw)

    def resolve(self, ref: ModelRef) -> ResolvedVersion:
        with self._lock:
            early = self._early.pop(ref, None)
        if early is not None and time.monotonic() - early[0] < PREFETCH_FRESH_SECONDS:
            try:
                return ResolvedVersion.from_json(self._answer(early[1], RESOLVE_TIMEOUT))
            except RegistryHelperGone:
                pass  # asked again below, of a new helper
        return ResolvedVersion.from_json(self._ask(_resolve_question(ref), RESOLVE_TIMEOUT))

    def download(self, name: str, version: int, dst: Path) -> Path:
        question = {"op": "download", "name": name, "version": version, "dst": str(dst)}
        path = Path(self._ask(question, DOWNLOAD_TIMEOUT)["path"])
        if not path.resolve().is_relative_to(Path(dst).resolve()):
            raise ModelLoadError(
                f"The registry helper put {name} version {version} outside {dst}", where=str(path)
            )
        return path

    def download_uri(self, name: str, version: int) -> str:
        question = {"op": "download_uri", "name": name, "version": version}
        return str(self._ask(question, RESOLVE_TIMEOUT)["uri"])


def _resolve_question(ref: ModelRef) -> dict[str, Any]:
    return {"op": "resolve", "name": ref.name, "alias": ref.alias, "version": ref.version}


# --- the helper process: its own side ------------------------------------------------------
def _handle(registry: MlflowRegistry, question: dict[str, Any]) -> dict[str, Any]:
    op = question.get("op")
    name = str(question.get("name"))
    if op == "resolve":
        version = question.get("version")
        ref = ModelRef(
            name, alias=question.get("alias"), version=None if version is None else int(version)
        )
        return registry.resolve(ref).to_json()
    if op == "download":
        return {
            "path": str(registry.download(name, int(question["version"]), Path(question["dst"])))
        }
    if op == "download_uri":
        return {"uri": registry.download_uri(name, int(question["version"]))}
    raise ServingError(f"Unknown registry question {op!r}")


def _answer_for(registry: MlflowRegistry, question: dict[str, Any]) -> dict[str, Any]:
    qid = question.get("id")
    try:
        return {"id": qid, "ok": True, "result": _handle(registry, question)}
    except NbmlopsError as err:
        return {
            "id": qid,
            "ok": False,
            "error": type(err).__name__,
            "what": err.what,
            "where": err.where,
            "fix": err.fix,
        }
    except Exception as err:
        return {
            "id": qid,
            "ok": False,
            "error": "ServingError",
            "what": f"The registry look-up failed: {type(err).__name__}: {err}",
            "where": registry.where,
        }


def _lower_priority(nice: int = 19) -> None:
    """Nice ``nice`` for every thread of this process (on Linux a nice value is per thread;
    threads started later inherit it from the thread that starts them)."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        with contextlib.suppress(OSError):
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)


def main(argv: list[str] | None = None) -> None:
    """The helper process: questions on stdin, answers on stdout, one JSON object a line."""
    import argparse
    import gc
    import signal
    from concurrent.futures import ThreadPoolExecutor

    gc.disable()  # start-up is imports: collections there cost ~15% and free nothing
    parser = argparse.ArgumentParser(
        prog="nbmlops-registry-helper",
        description=f"Answers registry questions for a gateway; the registry's URI is in {_URI_VAR}.",
    )
    parser.add_argument("--idle-exit", type=float, default=IDLE_EXIT_SECONDS)
    parser.add_argument(
        "--urgent", action="store_true", help="Someone waits: full priority until idle."
    )
    args = parser.parse_args(argv)
    uri = os.environ.pop(_URI_VAR, "")
    where = os.environ.pop(_WHERE_VAR, "") or None
    if not uri:
        parser.error(f"{_URI_VAR} is not set")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Answers go to the original stdout; whatever a library prints goes to stderr instead.
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if not args.urgent:
        _lower_priority()  # serving requests comes first on a busy machine
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    registry = MlflowRegistry(uri, where)
    write_lock = threading.Lock()
    last_question = [time.monotonic()]
    busy = [0]

    def answer(question: dict[str, Any]) -> None:
        reply = _answer_for(registry, question)
        with write_lock:
            answers.write(json.dumps(reply).encode() + b"\n")
            busy[0] -= 1
            last_question[0] = time.monotonic()

    def idle_watch() -> None:
        lowered = not args.urgent
        while True:
            time.sleep(0.5)
            with write_lock:
                idle = time.monotonic() - last_question[0] if busy[0] == 0 else 0.0
            if args.idle_exit > 0 and idle > args.idle_exit:
                os._exit(0)
            if not lowered and idle > LOWER_PRIORITY_AFTER:
                _lower_priority()
                lowered = True

    # MLflow, its client and its store are imported and built here, in one thread, before any
    # question is read (they wait in the pipe meanwhile): importing MLflow from two threads
    # at once can fail in protobuf's descriptor pool.
    import mlflow.artifacts  # noqa: F401

    with contextlib.suppress(Exception):
        registry.client.search_registered_models(max_results=1)
    gc.enable()
    gc.freeze()
    # Look-ups and downloads on their own threads: a big download never delays a look-up.
    lookups = ThreadPoolExecutor(1, thread_name_prefix="registry-lookup")
    downloads = ThreadPoolExecutor(1, thread_name_prefix="registry-download")
    threading.Thread(target=idle_watch, daemon=True).start()
    for line in sys.stdin.buffer:
        try:
            question = json.loads(line)
        except ValueError:
            continue
        with write_lock:
            busy[0] += 1
            last_question[0] = time.monotonic()
        pool = downloads if question.get("op") == "download" else lookups
        pool.submit(answer, question)
    # stdin closed: the gateway is gone or done with us.
    os._exit(0)


if __name__ == "__main__":
    main()
