"""The hash-chained audit log, on real files, with real concurrent processes."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nbmlops.core.audit import ZERO_HASH, AuditLog
from nbmlops.exceptions import StoreError, UsageError


def make_log(tmp_path: Path, n: int = 10) -> AuditLog:
    log = AuditLog(tmp_path / "deep" / "er" / "audit.jsonl")
    for i in range(n):
        log.append("data.commit", f"sales@{i}", user="alice", details={"digest": f"d{i}"})
    return log


def lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines()


def write_lines(log: AuditLog, rows: list[str]) -> None:
    log.path.write_text("".join(r + "\n" for r in rows))


def rehash(obj: dict) -> dict:
    fields = {k: v for k, v in obj.items() if k != "hash"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return {**fields, "hash": hashlib.sha256(canonical.encode()).hexdigest()}


def problems_text(log: AuditLog) -> str:
    return "\n".join(log.verify().problems)


def test_a_fresh_chain_verifies_and_is_created_with_its_folder(tmp_path: Path):
    log = make_log(tmp_path, 10)
    report = log.verify()
    assert report.ok, report.problems
    assert (report.entries, report.first_bad, report.problems) == (10, None, [])
    entries = log.entries()
    assert [e.seq for e in entries] == list(range(10))
    assert entries[0].prev == ZERO_HASH
    assert all(b.prev == a.hash for a, b in itertools.pairwise(entries))
    assert report.last_hash == entries[-1].hash
    assert json.loads(log.head_path.read_text()) == {"seq": 9, "hash": entries[-1].hash}
    assert entries[3].target == "sales@3" and entries[3].details == {"digest": "d3"}


def test_the_hash_is_sha256_of_the_canonical_json_of_the_other_fields(tmp_path: Path):
    log = make_log(tmp_path, 2)
    for row in lines(log):
        obj = json.loads(row)
        assert rehash(obj)["hash"] == obj["hash"]


def test_an_empty_or_absent_log_verifies(tmp_path: Path):
    log = AuditLog(tmp_path / "none.jsonl")
    assert log.verify().ok and log.entries() == [] and log.tail() == []


@pytest.mark.parametrize(
    "field, value",
    [
        ("user", "mallory"),
        ("target", "sales@99"),
        ("details", {"digest": "forged"}),
        ("action", "data.checkout"),
        ("ts", 1.0),
        ("prev", "f" * 64),
    ],
)
def test_editing_any_field_of_a_middle_entry_is_caught_with_its_number(
    tmp_path: Path, field: str, value: object
):
    log = make_log(tmp_path)
    rows = lines(log)
    obj = json.loads(rows[5])
    obj[field] = value
    rows[5] = json.dumps(obj)
    write_lines(log, rows)
    report = log.verify()
    assert not report.ok
    assert "entry 5 was edited (hash mismatch)" in report.problems
    assert report.first_bad == 5


def test_an_edited_entry_with_a_recomputed_hash_breaks_the_next_link(tmp_path: Path):
    log = make_log(tmp_path)
    rows = lines(log)
    rows[5] = json.dumps(rehash({**json.loads(rows[5]), "user": "mallory"}))
    write_lines(log, rows)
    report = log.verify()
    assert not report.ok and report.first_bad == 6
    assert report.problems[0].startswith("entry 6 does not follow entry 5 (prev hash mismatch")


def test_deleting_a_middle_entry_is_caught(tmp_path: Path):
    log = make_log(tmp_path)
    rows = lines(log)
    del rows[5]
    write_lines(log, rows)
    report = log.verify()
    assert not report.ok and report.first_bad == 5
    assert report.problems == ["entry 5 is missing (seq jumps 4 -> 6)"]
    del rows[5:7]
    write_lines(log, rows)
    assert "entries 5..7 are missing (seq jumps 4 -> 8)" in log.verify().problems


def test_deleting_the_first_entry_is_caught(tmp_path: Path):
    log = make_log(tmp_path, 3)
    write_lines(log, lines(log)[1:])
    assert log.verify().problems == ["entry 0 is missing (the log starts at entry 1)"]


def test_cutting_entries_off_the_end_is_caught_by_the_head_and_survives_appends(tmp_path: Path):
    log = make_log(tmp_path)
    write_lines(log, lines(log)[:-1])
    report = log.verify()
    assert not report.ok and report.first_bad == 9
    assert report.problems == [
        "the log ends at entry 8 but the head says 9 (entry 9 was cut off the end)"
    ]
    write_lines(log, lines(log)[:-2])
    assert log.verify().problems == [
        "the log ends at entry 6 but the head says 9 (entries 7..9 were cut off the end)"
    ]

    # An append after the cut keeps the evidence: seq continues after the head's, leaving a gap.
    entry = AuditLog(log.path).append("data.commit", "sales@10", user="bob")
    assert entry.seq == 10
    assert entry.details["head_mismatch"]["head_seq"] == 9
    assert entry.details["head_mismatch"]["log_seq"] == 6
    report = log.verify()
    assert not report.ok and report.first_bad == 7
    assert report.problems[0] == "entries 7..9 are missing (seq jumps 6 -> 10)"
    assert "entry 10 (line 8) was appended while the head file disagreed" in report.problems[1]


def test_emptying_the_log_is_caught_by_the_head(tmp_path: Path):
    log = make_log(tmp_path, 3)
    log.path.write_text("")
    assert log.verify().problems == [
        "the log is empty but the head says 2 (entries 0..2 were cut off the end)"
    ]


def test_a_deleted_or_garbled_head_is_reported(tmp_path: Path):
    log = make_log(tmp_path, 3)
    log.head_path.unlink()
    assert "audit.jsonl.head is missing" in problems_text(log)
    log.head_path.write_text("{nope")
    assert "audit.jsonl.head is unreadable" in problems_text(log)


def test_a_rewritten_history_that_keeps_its_length_is_caught_by_the_head(tmp_path: Path):
    """Re-hash every entry from 5 on (a self-consistent chain), leave the head alone."""
    log = make_log(tmp_path)
    rows = [json.loads(r) for r in lines(log)]
    rows[5]["user"] = "mallory"
    for i in range(5, 10):
        rows[i]["prev"] = rows[i - 1]["hash"]
        rows[i] = rehash(rows[i])
    write_lines(log, [json.dumps(r) for r in rows])
    report = log.verify()
    assert not report.ok and report.first_bad == 9
    assert report.problems == [
        "entry 9 does not match the head file (its hash changed after it was written: "
        "the log was rewritten)"
    ]


def test_reordering_entries_is_caught(tmp_path: Path):
    log = make_log(tmp_path)
    rows = lines(log)
    rows[3], rows[4] = rows[4], rows[3]
    write_lines(log, rows)
    report = log.verify()
    assert not report.ok and report.first_bad == 3
    assert "entry 4 (line 4) is out of order (it comes after entry 2)" in report.problems
    assert "entry 3 (line 5) is out of order (it comes after entry 4)" in report.problems


def test_an_inserted_self_consistent_forged_entry_is_caught(tmp_path: Path):
    log = make_log(tmp_path)
    rows = lines(log)
    forged = rehash(
        {
            "seq": 5,
            "ts": time.time(),
            "user": "mallory",
            "action": "data.commit",
            "target": "sales@5",
            "details": {},
            "prev": hashlib.sha256(b"made up").hexdigest(),
        }
    )
    rows.insert(5, json.dumps(forged, sort_keys=True, separators=(",", ":")))
    write_lines(log, rows)
    report = log.verify()
    assert not report.ok and report.first_bad == 5
    assert report.problems[0].startswith("entry 5 does not follow entry 4 (prev hash mismatch")
    assert "entry 5 (line 7) appears twice (a copy or a forged entry)" in report.problems

    # Even one that chains correctly onto entry 4 collides with the real entry 5.
    rows[5] = json.dumps(rehash({**forged, "prev": json.loads(rows[4])["hash"]}))
    write_lines(log, rows)
    assert log.verify().problems == ["entry 5 (line 7) appears twice (a copy or a forged entry)"]


def test_a_torn_last_line_is_reported_skipped_and_repaired_on_the_next_append(tmp_path: Path):
    log = make_log(tmp_path, 5)
    with open(log.path, "ab") as fh:  # a crash half-way through writing entry 5
        fh.write(b'{"action":"data.commit","details":{},"hash":"ab')
    report = log.verify()
    assert not report.ok and report.first_bad == 5 and report.entries == 5
    assert report.problems == [
        "last line is torn (a write was cut off; the next append will remove it)"
    ]
    assert len(log.entries()) == 5

    entry = AuditLog(log.path).append("data.checkout", "sales@4", user="bob")
    assert entry.seq == 5 and entry.details == {"repaired_torn_tail": True}
    assert log.verify().ok
    assert all(json.loads(r) for r in lines(log))


def test_a_whole_first_line_torn_is_repaired(tmp_path: Path):
    log = AuditLog(tmp_path / "audit.jsonl")
    log.path.write_bytes(b'{"seq":0,"ts"')
    assert log.verify().problems[0].startswith("last line is torn")
    entry = log.append("a", "t", user="u")
    assert entry.seq == 0 and entry.prev == ZERO_HASH and entry.details["repaired_torn_tail"]
    assert log.verify().ok


def test_an_entry_that_only_lost_its_line_end_is_kept(tmp_path: Path):
    log = make_log(tmp_path, 3)
    log.path.write_bytes(log.path.read_bytes()[:-1])
    assert not log.verify().ok
    entry = AuditLog(log.path).append("a", "t", user="u")
    assert entry.seq == 3 and "repaired_torn_tail" not in entry.details
    assert log.verify().ok


def test_a_corrupt_file_gives_a_report_never_an_exception(tmp_path: Path):
    log = make_log(tmp_path, 5)
    rows = lines(log)
    rows[2] = "this is not json"
    write_lines(log, rows)
    report = log.verify()
    assert not report.ok and report.first_bad == 2
    assert report.problems == ["line 3 is not a valid audit entry"]
    assert [e.seq for e in log.entries()] == [0, 1, 3, 4]

    log.path.write_bytes(b"\x00\xff\xfe garbage\n[1,2]\n{}\nNaN\n")
    report = log.verify()
    assert not report.ok and report.entries == 0 and len(report.problems) >= 4
    assert log.entries() == []


def test_append_refuses_to_chain_onto_an_unreadable_last_line(tmp_path: Path):
    log = make_log(tmp_path, 2)
    with open(log.path, "a") as fh:
        fh.write("garbage\n")
    with pytest.raises(StoreError, match="last line is not a readable entry"):
        AuditLog(log.path).append("a", "t", user="u")


def test_details_must_be_json_and_are_normalised(tmp_path: Path):
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(UsageError, match="JSON-serialisable"):
        log.append("a", "t", user="u", details={"x": object()})
    with pytest.raises(UsageError, match="user"):
        log.append("a", "t", user="")
    entry = log.append("a", "t", user="u", details={"pair": (1, 2), 3: "x"})
    assert entry.details == {"pair": [1, 2], "3": "x"}
    assert log.entries()[0] == entry
    assert log.verify().ok


def test_entries_larger_than_the_tail_block_chain_correctly(tmp_path: Path):
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append("a", "t", user="u", details={"blob": "x" * 200_000})
    log.append("a", "t", user="u", details={"blob": "y" * 70_000})
    AuditLog(log.path).append("a", "t", user="u")  # a fresh instance reads the tail
    assert log.verify().ok and log.verify().entries == 3


def test_two_instances_interleaving_keep_one_chain(tmp_path: Path):
    a, b = AuditLog(tmp_path / "audit.jsonl"), AuditLog(tmp_path / "audit.jsonl")
    for i in range(10):
        (a if i % 3 else b).append("a", f"t@{i}", user="u")
    assert [e.seq for e in a.entries()] == list(range(10))
    assert a.verify().ok


def test_tail_filters_by_action_and_target(tmp_path: Path):
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(5):
        log.append("data.commit", f"sales@{i}", user="alice")
        log.append("data.checkout", f"sales@{i}", user="bob")
        log.append("model.register", f"churn@{i}", user="carol")
    assert [e.seq for e in log.tail(3)] == [12, 13, 14]
    assert [e.target for e in log.tail(2, action="data.commit")] == ["sales@3", "sales@4"]
    assert {e.action for e in log.tail(100, action="data.*")} == {"data.commit", "data.checkout"}
    assert len(log.tail(100, target="sales")) == 10
    assert [e.action for e in log.tail(100, target="sales@2")] == ["data.commit", "data.checkout"]
    assert [e.target for e in log.tail(100, target="churn@[34]")] == ["churn@3", "churn@4"]
    assert log.tail(0) == []


def test_threads_appending_at_once_keep_one_chain(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    shared = AuditLog(path)

    def work(k: int) -> None:
        log = shared if k % 2 else AuditLog(path)
        for i in range(50):
            log.append("thread.write", f"t{k}@{i}", user=f"thread{k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.seq for e in shared.entries()] == list(range(200))
    assert shared.verify().ok


CHILD = """
import os, sys, time
from nbmlops.core.audit import AuditLog
path, go, who = sys.argv[1:]
while not os.path.exists(go):
    time.sleep(0.001)
log = AuditLog(path)
for i in range(200):
    log.append("proc.write", f"{who}@{i}", user=who, details={"i": i})
"""


def test_four_processes_appending_200_each_give_800_contiguous_entries(tmp_path: Path):
    path, go = tmp_path / "audit" / "audit.jsonl", tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(go), f"p{k}"])
        for k in range(4)
    ]
    time.sleep(0.3)  # let them all import and wait at the gate
    go.touch()
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    log = AuditLog(path)
    entries = log.entries()
    assert [e.seq for e in entries] == list(range(800))
    for k in range(4):  # each writer's entries are all there, in its own order
        assert [e.details["i"] for e in entries if e.user == f"p{k}"] == list(range(200))
    assert len({e.user for e in entries[:50]}) > 1, "the writers did not overlap"
    report = log.verify()
    assert report.ok and report.entries == 800, report.problems
    assert json.loads(log.head_path.read_text())["seq"] == 799
    assert not os.path.exists(f"{log.head_path}.tmp")
