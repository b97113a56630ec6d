"""Pulls and copies that resume across processes: ``<hex>.partial`` + ``<hex>.ranges.json`` in an ingest area.

A pull killed with SIGKILL resumes with ``Range`` from its recorded prefix (the proxy's byte count shows how much
the second run fetched); a partial whose saved prefix was corrupted, or is stale, is fetched again from zero; a
registry that ignores ``Range`` restarts the blob correctly; ``copy`` into the embedded store resumes too. Every
result is digest-verified. Also: the one thread fan-out (:func:`ociart.transfer.parallel`) stops at the first error.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import write_random
from support.faultproxy import FaultProxy
from support.registry import RunningRegistry

import ociart
from ociart.errors import NetworkError
from ociart.packaging.unpack import STAGING
from ociart.targets.ingest import CHECKPOINT_BYTES, RangesRecord

MiB = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(4 * MiB):
            h.update(data)
    return "sha256:" + h.hexdigest()


def _push(registry: RunningRegistry, repo: str, src: Path, size: int) -> tuple[str, str]:
    """Push one file of ``size`` pseudo-random bytes; return (ref, blob digest)."""
    write_random(src / "weights.bin", size, seed=size)
    ref = f"{registry.host}/{repo}:v1"
    with ociart.Client(plain_http=True) as c:
        c.push(ref, [src])
    return ref, _sha256(src / "weights.bin")


def _partial(out: Path, digest: str) -> tuple[Path, Path]:
    ingest = out / STAGING / ".ociart-tmp" / "ingest"
    hexd = digest.removeprefix("sha256:")
    return ingest / f"{hexd}.partial", ingest / f"{hexd}.ranges.json"


def _reset(proxy: FaultProxy) -> None:
    proxy.clear()
    proxy.reset_counts()
    proxy.log.clear()


@contextmanager
def _blob_proxy(registry: RunningRegistry) -> Iterator[tuple[FaultProxy, str, str]]:
    """(fault proxy that blob bodies pass through, host to pull through, path substring of blob body requests).

    Filesystem registry: a proxy in front of the registry. S3 registry: blob GETs answer 307 to a presigned URL on
    the S3 origin, so the bodies pass through the proxy in front of the S3 server (``s3_server.proxy``) and the
    client talks to the registry itself."""
    if registry.s3 is None:
        with FaultProxy(registry.url) as proxy:
            yield proxy, proxy.host, "/blobs/sha256:"
        return
    proxy = registry.s3.proxy
    _reset(proxy)
    try:
        yield proxy, registry.host, "/data?X-Amz-"  # presigned blob GETs (the registry's own reads are unsigned)
    finally:
        _reset(proxy)


def _interrupted_pull(proxy: FaultProxy, via: str, out: Path, cut: int, monkeypatch: pytest.MonkeyPatch,
                      blobs: str) -> None:
    """A pull whose blob download is cut after ``cut`` bytes with no retry budget left: it fails, partial kept."""
    monkeypatch.setenv("OCIART_RETRY_BUDGET", "0")
    proxy.drop_after(blobs, cut)
    with pytest.raises(NetworkError):
        ociart.Client(plain_http=True).pull(via, out)
    monkeypatch.delenv("OCIART_RETRY_BUDGET")
    _reset(proxy)


def test_pull_killed_at_60_percent_resumes_after_restart(any_registry: RunningRegistry, unique_repo: str,
                                                          tmp_path: Path) -> None:
    registry = any_registry
    size = 256 * MiB if registry.s3 is None else 96 * MiB  # moto keeps up, but slowly
    ref, digest = _push(registry, unique_repo, tmp_path / "src", size)
    out = tmp_path / "out"
    with _blob_proxy(registry) as (proxy, host, blobs):
        via = ref.replace(registry.host, host)
        # one stream: the sequential download's record (ranged downloads: tests/test_ranged.py)
        cmd = [sys.executable, "-m", "ociart", "pull", "--plain-http", "--max-streams", "1", "-o", str(out), via]
        proxy.limit_rate(32 * MiB, blobs)  # so the kill lands near 60 %, not after the end
        at_60 = proxy.when_sent(blobs, int(size * 0.6))
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert at_60.wait(180), "the first pull never reached 60 %"
            first.send_signal(signal.SIGKILL)
        finally:
            first.kill()
            first.communicate(timeout=60)
        assert first.returncode == -signal.SIGKILL
        killed_at = proxy.sent(blobs)
        assert size * 0.6 <= killed_at < size, killed_at

        partial, record = _partial(out, digest)
        assert partial.exists() and record.exists()  # survived the process
        rec = RangesRecord.model_validate_json(record.read_bytes())
        assert rec.digest == digest and rec.size == size and len(rec.ranges) == 1
        assert rec.ranges[0].start == 0 and killed_at - 2 * CHECKPOINT_BYTES - MiB < rec.ranges[0].end <= killed_at
        assert not (out / "weights.bin").exists()  # nothing visible before it is verified

        proxy.clear()
        proxy.reset_counts()
        proxy.log.clear()
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        fetched = proxy.sent(blobs)
        gets = proxy.find("GET", blobs)
    assert fetched <= 0.45 * size, f"the second run fetched {fetched / size:.0%} of the blob"
    assert fetched == size - rec.ranges[0].end  # exactly the missing part: the prefix was re-hashed and kept
    assert gets[-1]["headers"]["range"] == f"bytes={rec.ranges[0].end}-{size - 1}" and gets[-1]["status"] == 206
    assert _sha256(out / "weights.bin") == digest
    assert sorted(p.name for p in out.iterdir()) == ["weights.bin"]  # staging gone after success


def test_corrupted_partial_is_refetched(any_registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    registry = any_registry
    size = 24 * MiB + 321
    ref, digest = _push(registry, unique_repo, tmp_path / "src", size)
    out = tmp_path / "out"
    with _blob_proxy(registry) as (proxy, host, blobs):
        via = ref.replace(registry.host, host)
        _interrupted_pull(proxy, via, out, 14 * MiB, monkeypatch, blobs)
        partial, record = _partial(out, digest)
        end = RangesRecord.model_validate_json(record.read_bytes()).ranges[0].end
        assert end >= 8 * MiB and partial.stat().st_size >= end
        with open(partial, "r+b") as f:  # flip one byte inside the recorded prefix
            f.seek(end // 2)
            byte = f.read(1)
            f.seek(end // 2)
            f.write(bytes([byte[0] ^ 0x01]))

        result = ociart.Client(plain_http=True).pull(via, out)
        gets = proxy.find("GET", blobs)
        fetched = proxy.sent(blobs)
    assert [f.path for f in result.files] == ["weights.bin"]
    assert len(gets) == 1 and "range" not in gets[0]["headers"]  # the bad prefix was detected, not resumed
    assert fetched == size
    assert _sha256(out / "weights.bin") == digest
    assert sorted(p.name for p in out.iterdir()) == ["weights.bin"]


def test_resume_when_the_registry_ignores_range(any_registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    registry = any_registry
    size = 12 * MiB + 7
    ref, digest = _push(registry, unique_repo, tmp_path / "src", size)
    out = tmp_path / "out"
    with _blob_proxy(registry) as (proxy, host, blobs):
        via = ref.replace(registry.host, host)
        _interrupted_pull(proxy, via, out, 9 * MiB, monkeypatch, blobs)
        assert _partial(out, digest)[1].exists()
        proxy.drop_request_header("range")
        ociart.Client(plain_http=True).pull(via, out)
        gets = proxy.find("GET", blobs)
        fetched = proxy.sent(blobs)
    assert gets[-1]["headers"].get("range", "").startswith("bytes=") and gets[-1]["status"] == 200
    assert fetched == size  # the whole blob again, written from byte 0
    assert _sha256(out / "weights.bin") == digest
    assert sorted(p.name for p in out.iterdir()) == ["weights.bin"]


def test_stale_and_unwanted_partials_are_removed(any_registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    registry = any_registry
    size = 10 * MiB
    ref, digest = _push(registry, unique_repo, tmp_path / "src", size)
    out = tmp_path / "out"
    with _blob_proxy(registry) as (proxy, host, blobs):
        via = ref.replace(registry.host, host)
        _interrupted_pull(proxy, via, out, 6 * MiB, monkeypatch, blobs)
        partial, record = _partial(out, digest)
        assert partial.exists()
        # a partial of a digest this pull does not want, and our own made two days old
        other = partial.with_name("0" * 64 + ".partial")
        other.write_bytes(b"x" * 100)
        old = time.time() - 2 * 24 * 3600
        for p in (partial, record):
            os.utime(p, (old, old))
        ociart.Client(plain_http=True).pull(via, out)
        gets = proxy.find("GET", blobs)
    assert len(gets) == 1 and "range" not in gets[0]["headers"]  # stale: not resumed
    assert not other.exists()
    assert _sha256(out / "weights.bin") == digest
    assert sorted(p.name for p in out.iterdir()) == ["weights.bin"]


def test_copy_into_the_embedded_store_resumes(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    size = 12 * MiB
    ref, digest = _push(registry, unique_repo, tmp_path / "src", size)
    with FaultProxy(registry.url) as proxy:
        via = ref.replace(registry.host, proxy.host)
        monkeypatch.setenv("OCIART_RETRY_BUDGET", "0")
        proxy.drop_after(digest, 9 * MiB)
        with pytest.raises(NetworkError):
            ociart.Client(plain_http=True).copy(via, f"{unique_repo}:v1")
        monkeypatch.delenv("OCIART_RETRY_BUDGET")
        proxy.clear()
        proxy.reset_counts()
        proxy.log.clear()
        with ociart.Client(plain_http=True) as c:
            c.copy(via, f"{unique_repo}:v1")
            store = Path(os.environ["OCIART_HOME"]) / "store"
            assert _sha256(store / "blobs" / "sha256" / digest.removeprefix("sha256:")) == digest
            result = c.pull(f"{unique_repo}:v1", tmp_path / "out")  # from the local store, through the same copy
        fetched = proxy.sent(digest)
        gets = proxy.find("GET", digest)
    assert len(gets) == 1 and gets[0]["headers"]["range"].startswith("bytes=") and fetched <= size - 8 * MiB
    assert not list((store / ".ociart-tmp" / "ingest").iterdir())
    assert [f.digest for f in result.files] == [digest]
    assert _sha256(tmp_path / "out" / "weights.bin") == digest


def test_record_is_json_with_ranges(tmp_path: Path) -> None:
    """The persisted format other fetchers (parallel ranged GETs) share: one JSON object, ranges with hashes."""
    from ociart.oci import Descriptor
    from ociart.targets.ingest import Ingest

    data = os.urandom(3 * CHECKPOINT_BYTES)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    desc = Descriptor(mediaType="application/octet-stream", digest=digest, size=len(data))
    ingest = Ingest(tmp_path)
    with pytest.raises(KeyboardInterrupt), ingest.open(desc) as part:
        part.append(data[:CHECKPOINT_BYTES + 5])
        raise KeyboardInterrupt  # an interrupt records the progress
    rec = json.loads((tmp_path / f"{digest[7:]}.ranges.json").read_text())
    assert rec == {"digest": digest, "size": len(data), "ranges": [
        {"start": 0, "end": CHECKPOINT_BYTES + 5, "sha256": hashlib.sha256(data[:CHECKPOINT_BYTES + 5]).hexdigest()}]}
    # a later range (as a parallel fetcher would write it) that is not contiguous with the prefix is not trusted
    rec["ranges"].append({"start": 2 * CHECKPOINT_BYTES, "end": 3 * CHECKPOINT_BYTES,
                          "sha256": hashlib.sha256(data[2 * CHECKPOINT_BYTES:]).hexdigest()})
    (tmp_path / f"{digest[7:]}.ranges.json").write_text(json.dumps(rec))
    with ingest.open(desc) as part:
        assert part.resumed == part.digester.size == CHECKPOINT_BYTES + 5
        assert os.fstat(part.fd).st_size == CHECKPOINT_BYTES + 5
        part.append(data[CHECKPOINT_BYTES + 5:])
        assert part.digester.digest == digest
        part.publish(tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob"]


def test_parallel_cancels_the_rest_on_first_error() -> None:
    """The one fan-out: the first error cancels the tasks not started, waits for the running ones, is re-raised."""
    import threading

    from ociart.transfer import parallel

    started: list[int] = []
    lock = threading.Lock()
    gate = threading.Event()

    def task(i: int) -> int:
        with lock:
            started.append(i)
        if i == 0:
            raise NetworkError("task 0 failed")
        gate.wait(0.2)  # the other running task is still busy when task 0 fails
        return i

    with pytest.raises(NetworkError, match="task 0 failed"):
        parallel(task, range(100), 2)
    assert 0 in started and len(started) < 50  # the rest were cancelled, not run
    assert not [t for t in threading.enumerate() if t.name.startswith("ociart-transfer")]  # none left running
    assert parallel(lambda i: i * i, range(10), 3) == [i * i for i in range(10)]  # results in order


def test_staging_directory_planted_as_a_symlink_is_refused(unique_repo: str, tmp_path: Path) -> None:
    from ociart.errors import UnsafePathError

    src = tmp_path / "src"
    write_random(src / "weights.bin", 1000)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / STAGING).symlink_to(elsewhere)
    with ociart.Client() as c:
        c.push(f"{unique_repo}:v1", [src])
        with pytest.raises(UnsafePathError, match="symlink"):
            c.pull(f"{unique_repo}:v1", out)
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in out.iterdir()) == [STAGING]
