"""The security scan: malicious pickles flagged without ever being unpickled, imports outside
the expected packages flagged, and the requirements audit reported, never hung, when its
vulnerability database cannot be reached."""

from __future__ import annotations

import pickle
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path, PosixPath

import pytest
import yaml

from nbmlops.config import RegistryScanSettings
from nbmlops.core.registry.scan import UNREACHABLE_NOTE, audit_requirements, scan_model_dir
from nbmlops.exceptions import GateRefused
from tests.core.registry.conftest import RunsCode, Zoo, malicious_copy, unique

OFF = RegistryScanSettings(pip_audit="off")


def test_a_clean_model_is_clean(zoo: Zoo, tmp_path: Path):
    report = scan_model_dir(zoo.model_dir("good", tmp_path), OFF)
    assert report.status == "clean", report.summary()
    assert report.tools["picklescan"] and report.tools["skops"]
    assert [f["path"] for f in report.files] == ["model.skops"]
    assert report.requirements["skipped"]


def test_a_malicious_pickle_is_flagged_and_never_unpickled(zoo: Zoo, tmp_path: Path):
    marker = tmp_path / "ran"
    folder = malicious_copy(zoo, tmp_path / "evil", marker)
    report = scan_model_dir(folder, OFF)
    assert report.status == "flagged"
    [finding] = report.flagged
    assert finding.file == "model.pkl" and finding.severity == "dangerous"
    assert "imports posix.system (code execution)" in finding.detail
    assert report.to_dict()["findings"][0]["kind"] == "pickle-import"
    assert not marker.exists()


def test_pickles_hidden_under_other_names_are_found(zoo: Zoo, tmp_path: Path):
    marker = tmp_path / "ran"
    folder = zoo.model_dir("good", tmp_path / "copy")
    (folder / "blob").write_bytes(pickle.dumps(RunsCode(f"touch {marker}"), protocol=4))
    # a protocol-0 pickle (no magic bytes) named like text, which MLmodel says to unpickle
    (folder / "notes.txt").write_bytes(pickle.dumps(RunsCode(f"touch {marker}"), protocol=0))
    spec = yaml.safe_load((folder / "MLmodel").read_text())
    spec["flavors"]["sklearn"]["pickled_model"] = "notes.txt"
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))
    report = scan_model_dir(folder, OFF)
    assert {f.file for f in report.flagged} == {"blob", "notes.txt"}
    assert not marker.exists()


def test_globals_off_the_allow_list_are_flagged_unless_trusted_one_by_one(zoo: Zoo, tmp_path: Path):
    folder = zoo.model_dir("good", tmp_path / "copy")
    (folder / "extra.pkl").write_bytes(pickle.dumps(PosixPath("/tmp")))
    report = scan_model_dir(folder, OFF)
    assert report.status == "flagged"
    assert "imports pathlib.PosixPath" in report.flagged[0].detail
    assert "trusted_pickle_globals" in report.flagged[0].detail
    trusted = RegistryScanSettings(pip_audit="off", trusted_pickle_globals=["pathlib.PosixPath"])
    assert scan_model_dir(folder, trusted).status == "clean"
    # a module is not a global: trusting pathlib's PurePath does not trust PosixPath
    other = RegistryScanSettings(pip_audit="off", trusted_pickle_globals=["pathlib.PurePath"])
    assert scan_model_dir(folder, other).status == "flagged"


def test_skops_types_declared_trusted_must_be_expected(zoo: Zoo, tmp_path: Path):
    folder = zoo.model_dir("good", tmp_path / "copy")
    spec = yaml.safe_load((folder / "MLmodel").read_text())
    spec["flavors"]["sklearn"]["skops_trusted_types"] = ["builtins.eval"]
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))
    report = scan_model_dir(folder, OFF)
    assert report.status == "flagged"
    assert "declares builtins.eval trusted" in report.flagged[0].detail


def test_structural_problems_are_flagged_without_reading_further(zoo: Zoo, tmp_path: Path):
    folder = zoo.model_dir("good", tmp_path / "copy")
    spec = yaml.safe_load((folder / "MLmodel").read_text())
    spec["flavors"]["sklearn"]["pickled_model"] = "../../etc/passwd"
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))
    report = scan_model_dir(folder, OFF)
    assert report.status == "flagged" and report.flagged[0].kind == "structure"
    assert report.files == []


# --- the requirements audit ------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_proxy() -> Iterator[int]:
    """A proxy on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _addr = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def requirements(tmp_path: Path) -> Path:
    req = tmp_path / "requirements.txt"
    req.write_text("scikit-learn==1.5.0\nnumpy==2.0.0\nsomething-unpinned>=1\n")
    return req


def test_unreachable_vulnerability_database_is_reported_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    result = audit_requirements(requirements(tmp_path), RegistryScanSettings())
    assert time.monotonic() - started < 5
    assert result["checked"] is False
    assert result["note"] == UNREACHABLE_NOTE
    assert result["requirements"] == ["scikit-learn==1.5.0", "numpy==2.0.0"]
    assert result["not_pinned"] == ["something-unpinned>=1"]


def test_this_machine_without_a_proxy_is_not_hung(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for var in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    started = time.monotonic()
    result = audit_requirements(
        requirements(tmp_path), RegistryScanSettings(audit_timeout_seconds=20)
    )
    assert time.monotonic() - started < 30
    if not result["checked"]:
        assert "requirements not checked" in result["note"]


def test_a_database_that_never_answers_is_cut_off_at_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, silent_proxy: int
):
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{silent_proxy}")
    settings = RegistryScanSettings(audit_timeout_seconds=3, probe_timeout_seconds=1)
    started = time.monotonic()
    result = audit_requirements(requirements(tmp_path), settings)
    elapsed = time.monotonic() - started
    assert elapsed < 12, elapsed
    assert result["checked"] is False
    assert "requirements not checked" in result["note"]


def test_an_incomplete_scan_is_refused_unless_the_gate_accepts_it(
    zoo: Zoo, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")
    name = unique("audited")
    strict = {
        "scan": {"pip_audit": "auto"},
        "models": {"audited-*": {"gates": {"champion": ["scan"]}}},
    }
    reg = zoo.registry(registry=strict)
    rv = reg.register("good", name)
    assert rv.scan.status == "incomplete"
    assert rv.scan.summary() == [UNREACHABLE_NOTE]
    assert zoo.client().get_model_version(name, "1").tags["nbmlops.scan"] == "incomplete"
    with pytest.raises(GateRefused, match="security scan incomplete: pip-audit: vulnerability"):
        reg.promote(name, 1)
    lenient = {
        "scan": {"pip_audit": "auto"},
        "models": {"audited-*": {"gates": {"champion": [{"scan": {"allow_incomplete": True}}]}}},
    }
    assert zoo.registry(registry=lenient).promote(name, 1).after == 1
