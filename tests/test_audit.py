"""The hash-chained audit log (ociart/audit.py): chain, tamper detection, concurrent writers, what the verbs log."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import ociart
from ociart import audit
from ociart.errors import VerificationError


def _lines(p: Path) -> list[bytes]:
    return p.read_bytes().splitlines()


def _write(p: Path, lines: list[bytes]) -> None:
    p.write_bytes(b"".join(line + b"\n" for line in lines))


def _log_of(n: int, p: Path) -> None:
    for i in range(n):
        audit.append("tag", f"models/m{i % 3}:v{i}", before=None, after="sha256:" + f"{i:064x}", path=p)


def test_chain_is_sha256_of_previous_line_bytes(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    _log_of(3, p)
    raw = _lines(p)
    entries = [json.loads(line) for line in raw]
    assert entries[0]["prev"] == "0" * 64
    assert entries[1]["prev"] == hashlib.sha256(raw[0]).hexdigest()
    assert entries[2]["prev"] == hashlib.sha256(raw[1]).hexdigest()
    assert list(entries[0]) == ["time", "actor", "action", "reference", "before", "after", "result", "detail", "prev"]
    report = audit.verify(p)
    assert report.lines == 3 and report.head == hashlib.sha256(raw[2]).hexdigest() == audit.head(p)


@pytest.mark.parametrize("tamper, broken_at", [
    ("edit", 3),      # line 2 edited: line 3's prev no longer matches
    ("drop", 2),      # line 2 dropped: the old line 3 (now 2) chains to a line that is gone
    ("reorder", 2),   # lines 2 and 3 swapped
    ("first", 1),     # the first line dropped: the new first line does not chain to 64 zeros
])
def test_verify_names_where_the_chain_breaks(tmp_path: Path, tamper: str, broken_at: int) -> None:
    p = tmp_path / "audit.jsonl"
    _log_of(5, p)
    raw = _lines(p)
    if tamper == "edit":
        raw[1] = raw[1].replace(b'"result":"ok"', b'"result":"no"')
        assert raw[1] != _lines(p)[1]
    elif tamper == "drop":
        del raw[1]
    elif tamper == "reorder":
        raw[1], raw[2] = raw[2], raw[1]
    else:
        del raw[0]
    _write(p, raw)
    with pytest.raises(VerificationError, match=f"chain broken at line {broken_at}:"):
        audit.verify(p)


def test_torn_and_foreign_lines_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    _log_of(2, p)
    with p.open("ab") as f:
        f.write(b'{"time": "x"')  # a write cut short
    with pytest.raises(VerificationError, match="line 3 is incomplete"):
        audit.verify(p)
    _log_of(2, q := tmp_path / "b.jsonl")
    with q.open("ab") as f:
        f.write(b'{"hello": 1}\n')
    with pytest.raises(VerificationError, match="line 3 is not a valid audit entry"):
        audit.verify(q)


_WRITER = """
import sys
from pathlib import Path
from ociart import audit
for i in range(int(sys.argv[2])):
    audit.append("push", f"proc{sys.argv[3]}/m:v{i}", after="sha256:" + "a" * 64, path=Path(sys.argv[1]))
"""


def test_concurrent_processes_and_threads_keep_one_chain(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(p), "40", str(i)]) for i in range(3)]
    threads = [threading.Thread(target=_log_of, args=(40, p)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(proc.wait(60) == 0 for proc in procs)
    report = audit.verify(p)
    assert report.lines == 240
    prevs = [json.loads(line)["prev"] for line in _lines(p)]
    assert len(set(prevs)) == 240  # no two lines chained to the same predecessor


def test_show_filters(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    audit.append("push", "reg.example:5000/models/bert:v1", actor="alice", path=p)
    audit.append("tag", "reg.example:5000/models/bert:prod", actor="bob", path=p)
    audit.append("push", "data/sst2@sha256:" + "b" * 64, actor="alice", path=p)
    assert [e.reference for e in audit.show(p, repository="reg.example:5000/models/bert")] == [
        "reg.example:5000/models/bert:v1", "reg.example:5000/models/bert:prod"]
    assert [e.action for e in audit.show(p, actor="alice")] == ["push", "push"]
    assert [e.repository for e in audit.show(p, action="push", repository="data/*")] == ["data/sst2"]
    assert audit.show(p, since="2999-01-01T00:00:00Z") == []
    assert len(audit.show(p, until="2999-01-01T00:00:00Z")) == 3


def test_push_tag_delete_are_logged_with_digests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("OCIART_HOME", str(home))
    monkeypatch.setenv("OCIART_ACTOR", "ci-job-7")
    (tmp_path / "w.bin").write_bytes(b"weights")
    client = ociart.Client()
    pushed = client.push("models/a:v1", [tmp_path / "w.bin"])
    client.tag("models/a:v1", "prod")
    (tmp_path / "w.bin").write_bytes(b"weights 2")
    second = client.push("models/a:v2", [tmp_path / "w.bin"])
    client.tag("models/a:v2", "prod")
    client.delete(f"models/a@{pushed.digest}")
    entries = list(audit.read(home / "audit.jsonl"))
    assert [(e.action, e.before, e.after) for e in entries] == [
        ("push", None, pushed.digest),
        ("tag", None, pushed.digest),
        ("push", None, second.digest),
        ("tag", pushed.digest, second.digest),
        ("delete", pushed.digest, None),
    ]
    assert {e.actor for e in entries} == {"ci-job-7"}
    assert entries[1].reference == "models/a:prod"
    assert audit.verify(home / "audit.jsonl").lines == 5


def test_a_failed_action_is_logged_as_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("OCIART_HOME", str(home))
    (tmp_path / "w.bin").write_bytes(b"weights")
    client = ociart.Client()
    client.push("models/a:v1", [tmp_path / "w.bin"])
    with pytest.raises(ociart.ConflictError):
        client.tag("models/a:v1", "prod", expect="sha256:" + "c" * 64)
    last = list(audit.read(home / "audit.jsonl"))[-1]
    assert (last.action, last.result, last.after) == ("tag", "failed", None)
    assert last.detail and last.detail["error"].startswith("ConflictError: ")


def test_unwritable_log_warns_and_the_push_stands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "home" / "audit.jsonl"
        blocker.mkdir(parents=True)  # root ignores permissions: a directory where the file should be
    else:
        (tmp_path / "home").mkdir()
        (tmp_path / "home" / "audit.jsonl").write_bytes(b"")
        (tmp_path / "home" / "audit.jsonl").chmod(0o400)
    monkeypatch.setenv("OCIART_HOME", str(tmp_path / "home"))
    (tmp_path / "w.bin").write_bytes(b"weights")
    pushed = ociart.Client().push("models/a:v1", [tmp_path / "w.bin"])
    assert ociart.Client().resolve("models/a:v1").digest == pushed.digest
    assert any("audit log" in r.getMessage() and "push itself succeeded" in r.getMessage() for r in caplog.records)
