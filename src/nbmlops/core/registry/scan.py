"""Security scan of a model folder, without importing or unpickling anything in it.

Three checks, one report:

* **structure**: :func:`nbmlops.core.registry.safety.inspect_model_dir` (paths inside the
  folder, declared loader modules only);
* **serialized content**: every file that may hold a pickle (by extension, by magic bytes,
  zip members, ``.npy`` object arrays, and whatever MLmodel points at) is disassembled with
  `picklescan <https://github.com/mmaitre314/picklescan>`_, which lists the globals a pickle
  would import without running it. Every global must be on the allow list of
  :mod:`nbmlops.core.registry.allowlist` (known reconstructors, model classes of
  scikit-learn, numpy, scipy and pandas, numpy ufuncs, and the exact globals of
  ``registry.scan.trusted_pickle_globals``); anything else flags the model, and a global
  picklescan knows as dangerous (``os.system``, ``builtins.eval``, ...) is labelled so.
  ``.skops`` files are checked with skops's own schema reader (``get_untrusted_types``),
  and their types, like the types MLmodel declares trusted for skops, go through the same
  allow list;
* **requirements**: the model's pinned ``requirements.txt`` is audited with ``pip-audit``
  when its vulnerability database answers. It is probed first with a short, bounded timeout
  (DNS included), and pip-audit runs in a subprocess killed at ``audit_timeout_seconds``, so
  an unreachable or silent database never hangs a registration: it makes the scan
  ``incomplete`` and the report says so.

Status: ``flagged`` when anything unsafe was found, else ``incomplete`` when something could
not be checked, else ``clean``.

Why picklescan: it is small (no dependencies), maintained, and reports the imports of a
pickle by walking its opcodes; fickling's verdicts are heuristics over a decompiled AST and
flag ordinary scikit-learn pickles, and modelscan wraps the same opcode walk in a large CLI.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from nbmlops.config import RegistryScanSettings
from nbmlops.core.registry.allowlist import AllowList, Verdict, normalize
from nbmlops.exceptions import UnsafeModelError

__all__ = ["Finding", "ScanReport", "audit_requirements", "scan_model_dir"]

# Labelled "dangerous" (not just "untrusted") in the report, beyond picklescan's own list;
# both are refused.
_DANGEROUS_MODULES = {
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "socket",
    "shutil",
    "runpy",
    "importlib",
    "pickle",
    "_pickle",
    "marshal",
    "webbrowser",
    "pty",
    "ctypes",
    "code",
    "codeop",
    "pdb",
    "asyncio",
    "multiprocessing",
    "requests",
    "urllib",
    "http",
}
_DANGEROUS_BUILTINS = {"eval", "exec", "compile", "open", "getattr", "__import__", "breakpoint"}
# Standard MLflow metadata files: text, never unpickled (scanned anyway if MLmodel points
# at one of them as model data).
_METADATA_FILES = {
    "MLmodel",
    "conda.yaml",
    "python_env.yaml",
    "requirements.txt",
    "input_example.json",
    "serving_input_example.json",
    "registered_model_meta",
}
_DATA_KEYS = {"pickled_model", "model_path", "data", "path", "artifacts", "model_code_path"}
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_SERVICE_HOSTS = {"osv": ("api.osv.dev", 443), "pypi": ("pypi.org", 443)}
UNREACHABLE_NOTE = "pip-audit: vulnerability database unreachable, requirements not checked"
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;#]+)\s*(;.*)?$")

log = logging.getLogger("nbmlops.registry.scan")


@dataclass(frozen=True)
class Finding:
    """One thing the scan found. ``severity``: dangerous | untrusted | vulnerable flag the
    model; incomplete means a part was not checked; info is for the record."""

    file: str
    severity: str
    kind: str  # structure | pickle-import | skops-type | skops-trust | parse | vulnerability | ...
    detail: str


@dataclass
class ScanReport:
    status: str  # clean | flagged | incomplete
    findings: list[Finding] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)  # per scanned file: format, imports
    requirements: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def flagged(self) -> list[Finding]:
        return [f for f in self.findings if f.severity in ("dangerous", "untrusted", "vulnerable")]

    @property
    def incomplete(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "incomplete"]

    @property
    def loadable(self) -> bool:
        """Nothing flagged and every model file checked: only then is anything in the folder
        imported or unpickled (an unchecked requirements audit does not stop that)."""
        return not self.flagged and all(f.kind == "requirements" for f in self.incomplete)

    def summary(self) -> list[str]:
        """One line per finding that matters (flagged first), for messages and cards."""
        lines = [f"{f.file}: {f.detail}" for f in self.flagged]
        lines += [f"{f.detail}" for f in self.incomplete]
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "findings": [asdict(f) for f in self.findings],
            "files": self.files,
            "requirements": self.requirements,
            "tools": self.tools,
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScanReport:
        return cls(
            status=d["status"],
            findings=[Finding(**f) for f in d.get("findings", [])],
            files=list(d.get("files", [])),
            requirements=dict(d.get("requirements", {})),
            tools=dict(d.get("tools", {})),
            seconds=float(d.get("seconds", 0.0)),
        )


def _dangerous(module: str, name: str) -> bool:
    top = module.split(".", 1)[0]
    if top in _DANGEROUS_MODULES:
        return True
    return top in ("builtins", "__builtin__") and name in _DANGEROUS_BUILTINS


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """picklescan logs every dangerous import as a warning: our report says it instead."""
    logger = logging.getLogger(logger_name)
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


def _referenced_files(root: Path) -> set[str]:
    """Files MLmodel names as model data, which a loader deserializes (scanned whatever their
    name or extension). Environment files (conda, requirements, ...) are only read as text."""
    import yaml

    from nbmlops.core.registry.safety import paths_in

    try:
        spec = yaml.safe_load((root / "MLmodel").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return set()
    return {
        os.path.normpath(rel)
        for where, rel in paths_in(spec)
        if rel and "://" not in rel and where.rsplit(".", 1)[-1].split("[")[0] in _DATA_KEYS
    }


def _skops_trust(root: Path) -> list[str]:
    import yaml

    try:
        spec = yaml.safe_load((root / "MLmodel").read_text(encoding="utf-8")) or {}
        trusted = ((spec.get("flavors") or {}).get("sklearn") or {}).get("skops_trusted_types")
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    return [str(t) for t in trusted] if isinstance(trusted, list) else []


def _split_type(qualname: str) -> tuple[str, str]:
    module, _, name = qualname.rpartition(".")
    return module, name


class _Judge:
    """The allow list's verdicts on the globals of one scan, each decided once."""

    def __init__(self, allow: AllowList):
        self.allow = allow
        self._seen: dict[tuple[str, str], Verdict] = {}

    def finding(
        self, file: str, kind: str, module: str, name: str, doing: str, dangerous: bool = False
    ) -> Finding | None:
        """None when the global is allowed, else the finding that refuses it (``doing``: what
        the file does with it, ``{}`` standing for its name)."""
        key = (module, name)
        if key not in self._seen:
            self._seen[key] = self.allow.check(module, name)
        verdict = self._seen[key]
        qual = f"{module}.{name}"
        what = doing.format(qual)
        if verdict.allowed:
            # The allow list decides: picklescan also calls functools.partial dangerous, which
            # only wraps callables that are themselves checked globals.
            return None
        if dangerous or _dangerous(*normalize(module, name)):
            return Finding(file, "dangerous", kind, f"{what} (code execution)")
        return Finding(
            file,
            "untrusted",
            kind,
            f"{what} ({verdict.why}), which is not on the allow list of what a model "
            f"may load: save the model with skops, which stores no code, or if you trust "
            f"{qual}, add it to registry.scan.trusted_pickle_globals in nbmlops.yaml",
        )


def _read_as_pickle(scanner: Any, fh: Any, ext: str) -> bool:
    """Whether picklescan's ``scan_bytes`` read the file as one pickle stream from its start
    (it does unless the extension or the content makes it look inside instead)."""
    import zipfile

    other = getattr(scanner, "_numpy_file_extensions", {".npy"}) | getattr(
        scanner, "_pytorch_file_extensions", {".pt", ".pth", ".bin", ".ckpt"}
    )
    if ext in other or zipfile.is_zipfile(fh):
        return False
    fh.seek(0)
    is_7z = getattr(scanner, "_is_7z_file", None)
    return is_7z is not None and not is_7z(fh)


def _scan_pickles(root: Path, files: list[str], judge: _Judge, report: ScanReport) -> None:
    try:
        from picklescan import scanner
    except ImportError:
        report.findings.append(
            Finding(
                "*",
                "incomplete",
                "tool",
                "picklescan is not installed, pickled files not checked (pip install picklescan)",
            )
        )
        return
    from importlib.metadata import version

    report.tools["picklescan"] = version("picklescan")
    referenced = _referenced_files(root)
    for rel in files:
        path = root / rel
        name = path.name
        if name in _METADATA_FILES and os.path.normpath(rel) not in referenced:
            continue
        ext = path.suffix.lower()
        with open(path, "rb") as fh:
            head = fh.read(4)
            fh.seek(0)
            if (
                ext in (".json", ".yaml", ".yml", ".txt", ".md")
                and not head.startswith(_PICKLE_MAGIC)
                and os.path.normpath(rel) not in referenced
            ):
                continue
            try:
                with _quiet("picklescan"):
                    result = scanner.scan_bytes(fh, rel, ext or None)
                    # picklescan reads a zip (or .npy, .pt) as its members only, but
                    # pickle.load reads any file from its first byte: a pickle with a zip
                    # appended would pass unread.
                    fh.seek(0)
                    if not _read_as_pickle(scanner, fh, ext):
                        fh.seek(0)
                        result.merge(scanner.scan_pickle_bytes(fh, rel))
            except Exception as err:  # a file picklescan cannot read at all
                report.findings.append(
                    Finding(rel, "incomplete", "parse", f"could not be scanned: {err}")
                )
                continue
        imports = sorted({f"{g.module}.{g.name}" for g in result.globals})
        entry: dict[str, Any] = {"path": rel, "imports": imports}
        if result.globals or head.startswith(_PICKLE_MAGIC):
            entry["format"] = "pickle"
        if ext == ".skops":
            entry["format"] = "skops"
        if "format" in entry:
            report.files.append(entry)
        for g in sorted(
            {(g.module, g.name): g for g in result.globals}.values(),
            key=lambda g: (g.module, g.name),
        ):
            found = judge.finding(
                rel,
                "pickle-import",
                g.module,
                g.name,
                "imports {}",
                dangerous=g.safety.value == "dangerous",
            )
            if found is not None:
                report.findings.append(found)
        if result.scan_err:
            report.findings.append(
                Finding(
                    rel,
                    "dangerous",
                    "parse",
                    "pickle stream could not be fully parsed after finding imports "
                    "(a malformed or obfuscated pickle)",
                )
            )


def _scan_skops(root: Path, files: list[str], judge: _Judge, report: ScanReport) -> None:
    skops_files = [rel for rel in files if rel.lower().endswith(".skops")]
    for qual in _skops_trust(root):
        module, name = _split_type(qual)
        found = judge.finding(
            "MLmodel", "skops-trust", module, name, "declares {} trusted for skops loading"
        )
        if found is not None:
            report.findings.append(found)
    if not skops_files:
        return
    try:
        import skops.io as sio
    except ImportError:
        report.findings.append(
            Finding("*", "incomplete", "tool", "skops is not installed, .skops files not checked")
        )
        return
    from importlib.metadata import version

    report.tools["skops"] = version("skops")
    for rel in skops_files:
        try:
            types = sio.get_untrusted_types(file=root / rel)
        except Exception as err:
            report.findings.append(
                Finding(rel, "incomplete", "parse", f"skops schema unreadable: {err}")
            )
            continue
        for entry in report.files:
            if entry["path"] == rel:
                entry["skops_untrusted_types"] = list(types)
        for qual in types:
            module, name = _split_type(qual)
            found = judge.finding(rel, "skops-type", module, name, "holds an object of type {}")
            if found is not None:
                report.findings.append(found)


def scan_model_dir(
    path: str | os.PathLike[str],
    settings: RegistryScanSettings | None = None,
    trusted_loader_modules: Iterable[str] = (),
    *,
    audit: bool = True,
) -> ScanReport:
    """Scan a model folder (nothing in it is imported or unpickled) and return the report.
    ``audit=False`` leaves the requirements out (a scan before loading)."""
    from nbmlops.core.registry.safety import inspect_model_dir

    settings = settings or RegistryScanSettings()
    started = time.monotonic()
    root = Path(path)
    report = ScanReport(status="clean")
    try:
        manifest = inspect_model_dir(root, trusted_loader_modules)
    except UnsafeModelError as err:
        report.findings.append(Finding("MLmodel", "dangerous", "structure", err.what))
        report.status = "flagged"
        report.seconds = time.monotonic() - started
        return report  # paths may lead outside the folder: read nothing more
    judge = _Judge(AllowList(settings.trusted_pickle_globals))
    _scan_pickles(root, manifest.files, judge, report)
    _scan_skops(root, manifest.files, judge, report)
    if audit:
        _audit(root, settings, report)
    if report.flagged:
        report.status = "flagged"
    elif report.incomplete:
        report.status = "incomplete"
    report.seconds = time.monotonic() - started
    return report


def _audit(root: Path, settings: RegistryScanSettings, report: ScanReport) -> None:
    req = root / "requirements.txt"
    if settings.pip_audit == "off" or req.is_file():
        report.requirements = audit_requirements(req, settings)
    else:
        report.requirements = {"checked": False, "note": "the model has no requirements.txt"}
    if not report.requirements.get("checked") and not report.requirements.get("skipped"):
        report.findings.append(
            Finding("requirements.txt", "incomplete", "requirements", report.requirements["note"])
        )
    unpinned = report.requirements.get("not_pinned") or []
    if report.requirements.get("checked") and unpinned:
        report.findings.append(
            Finding(
                "requirements.txt",
                "incomplete",
                "requirements",
                f"not pinned with ==, so not audited: {', '.join(unpinned)}",
            )
        )
    for vuln in report.requirements.get("vulnerabilities", []):
        fixes = ", ".join(vuln.get("fix_versions") or []) or "none yet"
        report.findings.append(
            Finding(
                "requirements.txt",
                "vulnerable",
                "vulnerability",
                f"{vuln['package']}=={vuln['version']} has {vuln['id']} (fixed in: {fixes})",
            )
        )


# --- requirements --------------------------------------------------------------------------


def _proxy_for(host: str) -> tuple[str, int] | None:
    """The HTTPS proxy requests would use for ``host`` (probing the host itself would be
    wrong behind a proxy)."""
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    if any(h.strip() and host.endswith(h.strip().lstrip(".")) for h in no_proxy.split(",")):
        return None
    url = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if not url:
        return None
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if not parsed.hostname:
        return None
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def probe(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to (host, port) opens within ``timeout`` seconds, DNS
    included (getaddrinfo has no timeout of its own, so the probe runs in a thread that is
    abandoned when it overruns); else why not."""
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as err:
            outcome.append(f"{type(err).__name__}: {err}")

    worker = threading.Thread(target=attempt, name="nbmlops-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return f"no answer from {host}:{port} within {timeout:g} s"
    return outcome[0]


def _pinned(req: Path) -> tuple[list[str], list[str]]:
    """(pinned ``name==version`` lines, other requirement lines) of a requirements file."""
    pinned, other = [], []
    for raw in req.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        m = _PIN.match(line)
        if m and not line.startswith("-"):
            pinned.append(f"{m.group(1)}=={m.group(3)}")
        else:
            other.append(line)
    return pinned, other


def _pip_audit_command() -> list[str] | None:
    import importlib.util
    import shutil

    if importlib.util.find_spec("pip_audit") is not None:
        return [sys.executable, "-m", "pip_audit"]
    exe = shutil.which("pip-audit")
    return [exe] if exe else None


def audit_requirements(req: Path, settings: RegistryScanSettings) -> dict[str, Any]:
    """Audit pinned requirements with pip-audit; never waits longer than the configured
    probe and audit timeouts. ``checked`` says whether the vulnerability database answered."""
    service = settings.vulnerability_service
    result: dict[str, Any] = {"checked": False, "tool": "pip-audit", "service": service}
    if settings.pip_audit == "off":
        result.update(skipped=True, note="pip-audit: off in nbmlops.yaml (registry.scan.pip_audit)")
        return result
    pinned, other = _pinned(req)
    result["requirements"] = pinned
    if other:
        result["not_pinned"] = other
    cmd = _pip_audit_command()
    if cmd is None:
        result["note"] = (
            "pip-audit is not installed, requirements not checked (pip install pip-audit)"
        )
        return result
    if not pinned:
        result["note"] = "no pinned requirements to audit"
        return result
    host, port = _SERVICE_HOSTS[service]
    target = _proxy_for(host) or (host, port)
    why = probe(*target, timeout=settings.probe_timeout_seconds)
    if why is not None:
        result["note"] = UNREACHABLE_NOTE
        result["detail"] = f"{service} ({target[0]}:{target[1]}): {why}"
        return result
    with tempfile.TemporaryDirectory(prefix="nbmlops-audit-") as tmp:
        req_file = Path(tmp) / "requirements.txt"
        req_file.write_text("\n".join(pinned) + "\n", encoding="utf-8")
        timeout = settings.audit_timeout_seconds
        argv = [
            *cmd,
            "-r",
            str(req_file),
            "--no-deps",
            "--disable-pip",
            "-s",
            service,
            "-f",
            "json",
            "--progress-spinner",
            "off",
            "--timeout",
            str(max(1, int(timeout))),
        ]
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # so a timeout can end pip-audit and anything it started
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            result["note"] = (
                f"pip-audit: vulnerability database did not answer within {timeout:g} s, "
                "requirements not checked"
            )
            return result
    text = err.decode("utf-8", "replace")
    try:
        data = json.loads(out.decode("utf-8", "replace") or "null")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        unreachable = any(
            t in text for t in ("ConnectionError", "NameResolution", "Max retries", "timed out")
        )
        result["note"] = (
            UNREACHABLE_NOTE
            if unreachable
            else f"pip-audit failed (exit {proc.returncode}), requirements not checked"
        )
        result["detail"] = text.strip().splitlines()[-1][:500] if text.strip() else ""
        return result
    vulns = []
    for dep in data.get("dependencies", []):
        for v in dep.get("vulns", []):
            vulns.append(
                {
                    "package": dep.get("name"),
                    "version": dep.get("version"),
                    "id": v.get("id"),
                    "aliases": v.get("aliases", []),
                    "fix_versions": v.get("fix_versions", []),
                    "description": (v.get("description") or "")[:500],
                }
            )
    from importlib.metadata import PackageNotFoundError, version

    try:
        result["version"] = version("pip-audit")
    except PackageNotFoundError:
        pass
    result.update(checked=True, vulnerabilities=vulns, note=f"{len(vulns)} known vulnerabilities")
    return result
