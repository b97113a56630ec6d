"""Interrupting a push while it uploads (issue 17, "Interrupts and leftovers").

A real ``ociart push`` subprocess uploads 256 MiB (two 128 MiB files, so the blob threads of the one fan-out run)
to distribution 2.8.2 through the fault proxy, whose request bodies are slowed here so that the signal lands while
both blobs are on the wire. SIGINT and SIGTERM must end the push at once with the documented exit code (130 / 143,
README "Exit codes", ``ociart.errors.Interrupted``) and one ``error: interrupted`` line (the JSON error under
``--json``), leave no tag behind, and a re-run must push it all and pull back the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import support.faultproxy as faultproxy_mod
from helpers import run_cli, write_random
from support.fakeserver import BodyReader
from support.faultproxy import FaultProxy
from support.registry import RunningRegistry

import ociart
from ociart.errors import NotFoundError

MiB = 1 << 20
UPLOAD_RATE = 4 * MiB  # request-body bytes per second the slowed proxy reads, all uploads together


class _SlowUploads:
    """Request bodies read through the fault proxy at about :data:`UPLOAD_RATE` in total, counted as they are read.

    The proxy has no request-side rate limit, so its body reader is swapped for :meth:`reader` (a ``BodyReader``
    that sleeps to hold the rate); :meth:`when_read` fires once that many body bytes reached the proxy.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self.read = 0
        self._watches: list[tuple[int, threading.Event]] = []

    def when_read(self, nbytes: int) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._watches.append((nbytes, event))
        return event

    def _account(self, n: int) -> None:
        with self._lock:
            self.read += n
            ahead = self.read / UPLOAD_RATE - (time.monotonic() - self._start)
            fired = [e for limit, e in self._watches if self.read >= limit]
        for event in fired:
            event.set()
        if ahead > 0:
            time.sleep(ahead)

    def reader(self, rfile: BinaryIO, headers: Any) -> BodyReader:
        owner = self

        class Slow(BodyReader):
            def read(self, n: int = -1) -> bytes:
                data = super().read(min(n, 16 * 1024) if n > 0 else n)
                owner._account(len(data))
                return data

        return Slow(rfile, headers)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@pytest.mark.parametrize(("signum", "code", "as_json"), [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, True)],
                         ids=["SIGINT", "SIGTERM-json"])
def test_signal_during_push_upload_exits_cleanly_and_leaves_no_tag(
        signum: int, code: int, as_json: bool, registry: RunningRegistry, unique_repo: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    write_random(src / "a.bin", 128 * MiB, seed=21)
    write_random(src / "b.bin", 128 * MiB, seed=22)
    want = {name: _sha256(src / name) for name in ("a.bin", "b.bin")}
    ref = f"{registry.host}/{unique_repo}:v1"
    slow = _SlowUploads()
    monkeypatch.setattr(faultproxy_mod, "BodyReader", slow.reader)
    with FaultProxy(registry.url) as proxy:
        via = ref.replace(registry.host, proxy.host)
        started = slow.when_read(8 * MiB)
        args = [sys.executable, "-m", "ociart", "push", "--plain-http", "--concurrency", "2", via, str(src)]
        proc = subprocess.Popen(args + (["--json"] if as_json else []), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OCIART_PROGRESS_INTERVAL": "3600"})  # no progress line by chance
        try:
            assert started.wait(180), "the upload never got going"
            at_signal = slow.read
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        after = slow.read - at_signal
        uploads = [e for e in proxy.find(path_substring="/blobs/uploads/") if e["method"] in ("PATCH", "PUT")]
        manifests = proxy.find("PUT", "/manifests/")
    assert proc.returncode == code, err
    assert err == "error: interrupted\n"  # one line, no traceback
    if as_json:
        assert json.loads(out) == {"error": "interrupted", "code": "interrupted", "exit_code": code}
    else:
        assert out == ""
    # the signal landed mid-upload: both blobs were on the wire, and the blob threads stopped at once (far less
    # than the ~248 MiB still to go reached the proxy after the signal; socket buffers account for a few MiB)
    assert len({e["path"].split("?")[0] for e in uploads}) >= 2, uploads
    assert after < 32 * MiB, after
    # nothing half-written: no manifest was sent, the tag does not exist
    assert manifests == []
    with ociart.Client(plain_http=True) as c, pytest.raises(NotFoundError):
        c.resolve(ref)
    # the same push run again completes, and the pull verifies and restores the same bytes
    again = run_cli("push", "--plain-http", ref, str(src))
    assert again.returncode == 0, again.stderr
    dest = tmp_path / "out"
    pulled = run_cli("pull", "--plain-http", "-o", str(dest), ref)
    assert pulled.returncode == 0, pulled.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["a.bin", "b.bin"]
    assert {name: _sha256(dest / name) for name in want} == want
