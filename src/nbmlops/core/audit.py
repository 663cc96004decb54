"""A hash-chained, append-only audit log: who did what to which dataset or model, and when.

The log is a JSON-lines file (``<home>/audit.jsonl``). Each line is one entry::

    {"action":"data.commit","details":{...},"hash":"…","prev":"…","seq":3,
     "target":"sales@3","ts":1718000000.25,"user":"alice"}

``hash`` is the SHA-256 (hex) of the canonical JSON of the other seven fields:
``json.dumps(fields, sort_keys=True, separators=(",", ":"))`` (ASCII-escaped, no NaN).
``prev`` is the previous entry's ``hash`` (``"0" * 64`` for entry 0) and ``seq`` counts
0, 1, 2, … So editing any field of an entry breaks its hash, and removing, reordering or
inserting entries breaks the ``seq`` run or the ``prev`` chain; ``verify()`` names the entry.

What a chain cannot see: entries cut off the *end* leave a shorter chain that is still
intact. So every append also rewrites a small head file ``<log>.head`` (seq and hash of the
last entry, atomically by temp file and rename), and ``verify()`` reports a log that ends
before its head says it should. An append that finds the head and the log in disagreement
records it in the new entry (``details["head_mismatch"]``, and the new ``seq`` continues
after the head's, leaving a visible gap), so the evidence survives later appends.

The chain has no secret key. It makes accidents and naive edits evident; someone who can
rewrite the log, re-hash every later entry and rewrite the head (or delete both files) is
not caught by the files alone. Copy the last hash (``VerifyReport.last_hash``) somewhere
they cannot write (a commit, a ticket, another machine) to anchor the log against that.

Appends are safe across threads and processes: each takes an exclusive ``flock`` on
``<log>.lock``, reads only the tail of the log (or trusts its cached last entry while the
file is unchanged), writes the entry as one line with one ``os.write`` on an ``O_APPEND``
descriptor, fsyncs it, then rewrites the head. A process killed mid-write leaves at most
one torn last line; ``verify()`` reports it and the next append cuts it off and says so
(``details["repaired_torn_tail"] = True``).
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.exceptions import StoreError, UsageError

ZERO_HASH = "0" * 64
HEAD_SUFFIX = ".head"
LOCK_SUFFIX = ".lock"

_CHAINED = ("seq", "ts", "user", "action", "target", "details", "prev")
_ALL_FIELDS = frozenset((*_CHAINED, "hash"))
_TAIL_BLOCK = 64 * 1024


@dataclass(frozen=True)
class AuditEntry:
    seq: int  # 0, 1, 2, ...
    ts: float  # epoch seconds
    user: str
    action: str  # "data.commit", "data.checkout", "model.register", ...
    target: str  # "sales@3"
    details: dict[str, Any]  # JSON-serialisable
    prev: str  # hash of the previous entry (ZERO_HASH for the first)
    hash: str  # sha256 hex of the canonical JSON of the fields above


@dataclass
class VerifyReport:
    ok: bool
    entries: int  # lines that parse as entries (torn or garbled lines are not counted)
    problems: list[str]  # one human sentence each
    first_bad: int | None  # lowest entry number a problem names (None when ok)
    last_hash: str | None = field(default=None)  # hash of the last entry, to anchor elsewhere


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def entry_hash(fields: dict[str, Any]) -> str:
    """The hash of an entry given its fields (``hash`` itself, if present, is ignored)."""
    return hashlib.sha256(_canonical({k: fields[k] for k in _CHAINED})).hexdigest()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _decode(raw: bytes) -> dict[str, Any] | None:
    """The fields of one line, or None when it is not a well-formed entry."""
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict) or set(obj) != _ALL_FIELDS:
        return None
    ok = (
        type(obj["seq"]) is int
        and type(obj["ts"]) in (int, float)
        and all(isinstance(obj[k], str) for k in ("user", "action", "target", "prev", "hash"))
        and isinstance(obj["details"], dict)
    )
    return obj if ok else None


def _intact(obj: dict[str, Any]) -> bool:
    try:
        return entry_hash(obj) == obj["hash"]
    except (ValueError, TypeError):
        return False


def _to_entry(obj: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        seq=obj["seq"],
        ts=float(obj["ts"]),
        user=obj["user"],
        action=obj["action"],
        target=obj["target"],
        details=obj["details"],
        prev=obj["prev"],
        hash=obj["hash"],
    )


def _read_tail(fd: int, size: int) -> tuple[bytes | None, bytes]:
    """(last complete line or None, bytes after the last newline) read backwards in blocks."""
    buf = b""
    pos = size
    while pos > 0:
        start = max(0, pos - _TAIL_BLOCK)
        buf = os.pread(fd, pos - start, start) + buf
        pos = start
        last_nl = buf.rfind(b"\n")
        if last_nl == -1:
            continue
        prev_nl = buf.rfind(b"\n", 0, last_nl)
        if prev_nl == -1 and pos > 0:
            continue
        return buf[prev_nl + 1 : last_nl], buf[last_nl + 1 :]
    return None, buf


def _ranges(seqs: list[int]) -> str:
    parts: list[str] = []
    start = prev = seqs[0]
    for s in [*seqs[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        parts.append(str(start) if start == prev else f"{start}..{prev}")
        if s is not None:
            start = prev = s
    return ", ".join(parts)


def _matches(value: str, pattern: str) -> bool:
    return value == pattern or fnmatch.fnmatchcase(value, pattern)


class AuditLog:
    """The audit log at ``path`` (created with its folder on the first append)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.head_path = Path(str(self.path) + HEAD_SUFFIX)
        self.lock_path = Path(str(self.path) + LOCK_SUFFIX)
        self._mutex = threading.Lock()
        # (inode, size, mtime_ns) of the log as this object last left it -> (last seq, hash)
        self._cache: tuple[tuple[int, int, int], int, str] | None = None

    # -- writing ------------------------------------------------------------------------

    def append(
        self, action: str, target: str, *, user: str, details: dict[str, Any] | None = None
    ) -> AuditEntry:
        """Append one entry and return it. Safe across threads and processes."""
        for name, value in (("action", action), ("target", target), ("user", user)):
            if not isinstance(value, str) or not value:
                raise UsageError(
                    f"Audit {name} must be a non-empty string, got {value!r}",
                    where="AuditLog.append",
                )
        try:  # normalise (tuples -> lists, keys -> str) so the hash survives a re-read
            clean = json.loads(json.dumps(dict(details or {}), allow_nan=False))
        except (TypeError, ValueError) as err:
            raise UsageError(
                f"Audit details must be JSON-serialisable: {err}",
                where=f"AuditLog.append({action!r}, {target!r})",
                fix="Pass plain str/int/float/bool/None values, lists and dicts.",
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._mutex:
            lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                return self._append_locked(action, target, user, clean)
            finally:
                os.close(lock_fd)  # releases the flock

    def _append_locked(
        self, action: str, target: str, user: str, details: dict[str, Any]
    ) -> AuditEntry:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            st = os.fstat(fd)
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            repaired = False
            if self._cache is not None and self._cache[0] == key:
                last_seq, last_hash = self._cache[1], self._cache[2]
            else:
                last_seq, last_hash, repaired = self._last_entry(fd, st.st_size)

            head, head_err = self._read_head()
            if head is None and head_err is None and last_seq == -1:
                # A fresh log: write an "empty" head first, so a crash after the first line
                # leaves a head that is merely behind, never a missing one.
                self._write_head(-1, ZERO_HASH)
                head = {"seq": -1, "hash": ZERO_HASH}
            seq = last_seq + 1
            notes: dict[str, Any] = {}
            if repaired:
                notes["repaired_torn_tail"] = True
            if (
                head is None
                or head["seq"] > last_seq
                or (head["seq"] == last_seq and head["hash"] != last_hash)
            ):
                notes["head_mismatch"] = {
                    "head_seq": None if head is None else head["seq"],
                    "head_hash": None if head is None else head["hash"],
                    "log_seq": last_seq,
                    "log_hash": last_hash,
                }
                if head is not None and head["seq"] > last_seq:
                    seq = head["seq"] + 1  # leave the cut-off entries as a visible gap

            fields: dict[str, Any] = {
                "seq": seq,
                "ts": time.time(),
                "user": user,
                "action": action,
                "target": target,
                "details": {**details, **notes},
                "prev": last_hash,
            }
            fields["hash"] = entry_hash(fields)
            line = _canonical(fields) + b"\n"
            written = os.write(fd, line)
            if written != len(line):  # disk full: cut the partial line off again
                os.ftruncate(fd, os.fstat(fd).st_size - written)
                raise StoreError(
                    f"Could not write the audit entry ({written} of {len(line)} bytes written)",
                    where=str(self.path),
                    fix="Free disk space and retry.",
                )
            os.fsync(fd)
            st = os.fstat(fd)
            self._cache = ((st.st_ino, st.st_size, st.st_mtime_ns), seq, fields["hash"])
            self._write_head(seq, fields["hash"])
            return _to_entry(fields)
        except BaseException:
            self._cache = None
            raise
        finally:
            os.close(fd)

    def _last_entry(self, fd: int, size: int) -> tuple[int, str, bool]:
        """(seq, hash, repaired) of the last entry, cutting a torn tail off first."""
        line, torn = _read_tail(fd, size)
        repaired = False
        if torn:
            obj = _decode(torn)
            if obj is not None and _intact(obj):
                os.write(fd, b"\n")  # a whole entry that only lost its line end
                line = torn
            else:
                os.ftruncate(fd, size - len(torn))
                repaired = True
        if line is None:
            return -1, ZERO_HASH, repaired
        obj = _decode(line)
        if obj is None:
            raise StoreError(
                "The audit log's last line is not a readable entry, so the next entry "
                "cannot be chained to it",
                where=str(self.path),
                fix="Run 'nbmlops audit verify' to see what is wrong, and restore the log "
                "from a backup.",
            )
        return obj["seq"], obj["hash"], repaired

    def _read_head(self) -> tuple[dict[str, Any] | None, str | None]:
        """(head, None), (None, None) when there is none, or (None, why) when unreadable."""
        try:
            raw = self.head_path.read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError as err:
            return None, str(err)
        try:
            head = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None, "not JSON"
        if (
            not isinstance(head, dict)
            or type(head.get("seq")) is not int
            or not isinstance(head.get("hash"), str)
        ):
            return None, "not a {seq, hash} record"
        return {"seq": head["seq"], "hash": head["hash"]}, None

    def _write_head(self, seq: int, hash_: str) -> None:
        tmp = Path(f"{self.head_path}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(_canonical({"seq": seq, "hash": hash_}) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.head_path)
        dir_fd = os.open(self.head_path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # -- reading ------------------------------------------------------------------------

    def _lines(self) -> tuple[list[bytes], bytes]:
        """Complete lines, and the torn bytes after the last line end (b"" when none)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], b""
        lines = data.split(b"\n")
        torn = lines.pop()
        return lines, torn

    def entries(self) -> list[AuditEntry]:
        """Every readable entry in file order (a torn or garbled line is skipped; see verify)."""
        out = []
        for raw in self._lines()[0]:
            obj = _decode(raw)
            if obj is not None:
                out.append(_to_entry(obj))
        return out

    def tail(
        self, n: int = 20, action: str | None = None, target: str | None = None
    ) -> list[AuditEntry]:
        """The last ``n`` entries, oldest first. ``action`` and ``target`` match exactly or
        as fnmatch patterns (``data.*``); a ``target`` without ``@`` also matches every
        version of that name (``sales`` matches ``sales@3``)."""
        found = [
            e
            for e in self.entries()
            if (action is None or _matches(e.action, action))
            and (
                target is None
                or _matches(e.target, target)
                or ("@" not in target and e.target.split("@", 1)[0] == target)
            )
        ]
        return found[-n:] if n > 0 else []

    def verify(self) -> VerifyReport:
        """Check every entry's hash, the seq run, the prev chain and the head file.

        Never raises on a damaged log: every problem is a sentence in the report."""
        problems: list[str] = []
        bad_seqs: list[int] = []

        def bad(msg: str, seq: int | None) -> None:
            problems.append(msg)
            if seq is not None:
                bad_seqs.append(seq)

        try:
            lines, torn = self._lines()
        except OSError as err:
            return VerifyReport(False, 0, [f"the audit log cannot be read: {err}"], None)

        parsed = [(no, _decode(raw)) for no, raw in enumerate(lines, 1)]
        present = Counter(obj["seq"] for _, obj in parsed if obj is not None)
        seen: set[int] = set()
        hash_of: dict[int, str] = {}
        count = 0
        prev_seq: int | None = None
        prev_hash = ZERO_HASH
        resync = False  # after a garbled line, the next entry cannot be checked against it

        for no, obj in parsed:
            expected = 0 if prev_seq is None else prev_seq + 1
            if obj is None:
                bad(f"line {no} is not a valid audit entry", expected)
                resync = True
                continue
            count += 1
            seq = obj["seq"]
            label = f"entry {seq}" if seq == no - 1 else f"entry {seq} (line {no})"
            after = "the start of the log" if prev_seq is None else f"entry {prev_seq}"
            if not _intact(obj):
                bad(f"{label} was edited (hash mismatch)", seq)
            seq_problem = True
            if resync:
                seq_problem = False
            elif seq in seen:
                bad(f"{label} appears twice (a copy or a forged entry)", seq)
            elif seq < expected:
                bad(f"{label} is out of order (it comes after {after})", seq)
            elif seq > expected:
                gone = [s for s in range(expected, seq) if s not in present]
                if not gone:
                    bad(f"{label} is out of order (it comes after {after})", seq)
                else:
                    what = (
                        f"entry {gone[0]} is" if len(gone) == 1 else f"entries {_ranges(gone)} are"
                    )
                    how = (
                        f"the log starts at entry {seq}"
                        if prev_seq is None
                        else f"seq jumps {prev_seq} -> {seq}"
                    )
                    bad(f"{what} missing ({how})", gone[0])
            else:
                seq_problem = False
            if not seq_problem and not resync and obj["prev"] != prev_hash:
                if prev_seq is None:
                    bad(f"{label} does not start the chain (its prev hash is not zero)", seq)
                else:
                    bad(
                        f"{label} does not follow entry {prev_seq} (prev hash mismatch: "
                        f"entry {prev_seq} was rewritten, or entries between them were "
                        "removed or inserted)",
                        seq,
                    )
            mismatch = obj["details"].get("head_mismatch")
            if isinstance(mismatch, dict):
                head_seq = mismatch.get("head_seq")
                said = (
                    "the head file was missing or unreadable"
                    if head_seq is None
                    else f"the head said the log ended at entry {head_seq}"
                )
                bad(
                    f"{label} was appended while the head file disagreed with the log "
                    f"({said}, the log ended at entry {mismatch.get('log_seq')})",
                    seq,
                )
            seen.add(seq)
            hash_of[seq] = obj["hash"]
            prev_seq, prev_hash, resync = seq, obj["hash"], False

        if torn:
            nxt = 0 if prev_seq is None else prev_seq + 1
            bad(
                "last line is torn (a write was cut off; the next append will remove it)",
                nxt,
            )

        head, head_err = self._read_head()
        last = -1 if prev_seq is None else prev_seq
        if head_err is not None:
            bad(f"the head file {self.head_path.name} is unreadable ({head_err})", None)
        elif head is None:
            if count:
                bad(
                    f"the head file {self.head_path.name} is missing, so entries cut off "
                    "the end of the log cannot be detected",
                    None,
                )
        elif head["seq"] > last:
            cut = (
                f"entry {head['seq']} was"
                if head["seq"] == last + 1
                else f"entries {last + 1}..{head['seq']} were"
            )
            ends = "the log is empty" if prev_seq is None else f"the log ends at entry {last}"
            bad(f"{ends} but the head says {head['seq']} ({cut} cut off the end)", last + 1)
        elif head["seq"] >= 0 and hash_of.get(head["seq"], head["hash"]) != head["hash"]:
            bad(
                f"entry {head['seq']} does not match the head file (its hash changed after "
                "it was written: the log was rewritten)",
                head["seq"],
            )

        return VerifyReport(
            ok=not problems,
            entries=count,
            problems=problems,
            first_bad=min(bad_seqs) if bad_seqs else None,
            last_hash=None if prev_seq is None else prev_hash,
        )
