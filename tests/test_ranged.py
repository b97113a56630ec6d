"""Parallel ranged download of one large blob (``ociart/targets/ranged.py`` inside ``RegistryTarget.fetch_blob``).

Blobs of 64 MiB or more come in ranged GETs over an adaptive number of streams: a lead stream writes and hashes the
prefix inline; a probe stream shows whether more streams help (a per-connection cap) or would only compete (a shared
bottleneck); the others ``pwrite`` parts of at most 16 MiB into the ingest partial, and a hashing thread follows the
written prefix, so the digest is verified before the file is visible. The decision itself is checked here against
an in-process range source with a per-stream cap and with a shared cap. Against a real registry, through the fault
proxy's per-response rate cap (each connection serves one response at a time, so it is a per-connection cap like an
object store's): bytes identical and verified, several streams used,
straight from the registry and after a 307 to S3; completed ranges survive an interrupted run and a SIGTERM and
are not fetched again; a SIGKILL keeps the verified prefix; a server that ignores ``Range`` still works. The
speedup itself is measured in ``benchmarks/transfer.py --throttle`` (no timing assertions here).
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import threading
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
from ociart.oci import Descriptor
from ociart.targets.ingest import RangesRecord, temporary
from ociart.targets.ranged import MAX_RUN_PARTS, PART_BYTES, RangedStats, fetch_ranges, plan_parts

MiB = 1 << 20
SIZE = 96 * MiB + 12345  # over the 64 MiB threshold: 7 parts, the last one short


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(4 * MiB):
            h.update(data)
    return "sha256:" + h.hexdigest()


def _push(registry: RunningRegistry, repo: str, src: Path, size: int = SIZE) -> tuple[str, str]:
    write_random(src / "weights.bin", size, seed=size % 1000)
    ref = f"{registry.host}/{repo}:v1"
    with ociart.Client(plain_http=True) as c:
        c.push(ref, [src])
    return ref, _sha256(src / "weights.bin")


def _record(out: Path, digest: str) -> RangesRecord:
    path = out / STAGING / ".ociart-tmp" / "ingest" / (digest.removeprefix("sha256:") + ".ranges.json")
    return RangesRecord.model_validate_json(path.read_bytes())


def _covered(rec: RangesRecord) -> int:
    return sum(r.end - r.start for r in rec.ranges)


def _ranges(entries: list[dict]) -> list[tuple[int, int]]:
    out = []
    for e in entries:
        lo, _, hi = e["headers"]["range"].removeprefix("bytes=").partition("-")
        out.append((int(lo), int(hi) + 1))
    return sorted(out)


def _settle(proxy: FaultProxy) -> None:
    """Wait until the proxy's relays of a killed client have noticed (their last counted piece is in)."""
    last = -1
    while proxy.sent() != last:
        last = proxy.sent()
        time.sleep(0.5)


def test_plan_parts_skips_done_ranges() -> None:
    parts = plan_parts(5, 100, [(20, 30), (60, 100)], part_bytes=10)
    assert [(p.start, p.end) for p in parts] == [(5, 15), (15, 20), (30, 40), (40, 50), (50, 60)]
    assert plan_parts(0, 0, []) == []


class _Source:
    """An in-process range server over a local file: each stream capped at ``per_stream`` bytes/s, or all of them
    sharing ``shared`` bytes/s (one bottleneck), in 256 KiB pieces. Records every range asked for."""

    def __init__(self, path: Path, *, per_stream: float | None = None, shared: float | None = None) -> None:
        self.path, self.per_stream, self.shared = path, per_stream, shared
        self.asked: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def _pace(self, n: int, started: float, sent: int) -> None:
        if self.shared is not None:  # a token bucket all streams draw from
            with self._lock:
                self._next = max(self._next, time.monotonic()) + n / self.shared
                until = self._next
        else:
            assert self.per_stream is not None
            until = started + (sent + n) / self.per_stream
        time.sleep(max(0.0, until - time.monotonic()))

    @contextmanager
    def open_range(self, start: int, end: int) -> Iterator[Iterator[bytes]]:
        with self._lock:
            self.asked.append((start, end))

        def pieces() -> Iterator[bytes]:
            started, sent = time.monotonic(), 0
            with open(self.path, "rb") as f:
                f.seek(start)
                while sent < end - start:
                    n = min(256 << 10, end - start - sent)
                    self._pace(n, started, sent)
                    data = f.read(n)
                    sent += len(data)
                    yield data

        yield pieces()


def _fetch(src: _Source, size: int, tmp_path: Path, max_streams: int = 8) -> RangedStats:
    digest = _sha256(src.path)
    desc = Descriptor(mediaType="application/octet-stream", digest=digest, size=size)
    with temporary(tmp_path, desc) as part:
        stats = fetch_ranges(part, src.open_range, max_streams=max_streams, retryable=(), wait=lambda: False)
        assert part.digester.size == size and part.digester.digest == digest  # hashed whole, in order
        assert _sha256(part.path) == digest
    covered = sorted(src.asked)  # every byte asked for exactly once
    assert covered[0][0] == 0 and covered[-1][1] == size and all(a[1] == b[0] for a, b in zip(covered, covered[1:]))
    assert stats.received == size
    return stats


def test_streams_grow_when_each_connection_is_capped(tmp_path: Path) -> None:
    """A per-connection cap (object storage): the probe adds throughput without slowing the lead, so they grow."""
    write_random(tmp_path / "blob", SIZE, seed=3)
    stats = _fetch(_Source(tmp_path / "blob", per_stream=16 * MiB), SIZE, tmp_path)
    assert stats.grew and stats.streams >= 4, stats
    assert 0 < stats.lead < SIZE


def test_streams_do_not_grow_on_a_shared_bottleneck(tmp_path: Path) -> None:
    """One bottleneck for all streams (the CPU, one link): the probe only takes from the lead; it stops after its
    part and the lead fetches the rest alone, hashing inline."""
    write_random(tmp_path / "blob", SIZE, seed=4)
    stats = _fetch(_Source(tmp_path / "blob", shared=32 * MiB), SIZE, tmp_path)
    assert not stats.grew and stats.streams == 2, stats
    assert stats.lead >= SIZE - 2 * PART_BYTES, stats


def test_no_probe_when_the_lead_alone_is_fast(tmp_path: Path) -> None:
    """A lead receiving 300 MB/s (over PROBE_BELOW) is left alone: no probe, one stream, although each connection
    is capped (a probe would find the cap and grow the streams)."""
    size = 160 * MiB  # about half a second at 300 MB/s: past the first decision
    write_random(tmp_path / "blob", size, seed=8)
    stats = _fetch(_Source(tmp_path / "blob", per_stream=300_000_000), size, tmp_path)
    assert stats.streams == 1 and not stats.grew and stats.lead == size, stats


def test_one_stream_is_the_lead_alone(tmp_path: Path) -> None:
    write_random(tmp_path / "blob", SIZE, seed=5)
    src = _Source(tmp_path / "blob", per_stream=64 * MiB)
    stats = _fetch(src, SIZE, tmp_path, max_streams=1)
    assert stats.streams == 1 and stats.lead == SIZE and not stats.grew
    assert src.asked == [(0, SIZE)]  # nobody will join: the lead asks for the rest at once


def test_a_lead_that_may_be_joined_asks_in_runs(tmp_path: Path) -> None:
    """Before the decision the lead takes runs (about a second of its rate, at most MAX_RUN_PARTS parts, never more
    than it leaves), so a probe and growing streams find parts left to take."""
    write_random(tmp_path / "blob", SIZE, seed=6)
    src = _Source(tmp_path / "blob", per_stream=128 * MiB)  # the first run ends before the first decision
    stats = _fetch(src, SIZE, tmp_path)
    lead = sorted(r for r in src.asked if r[1] <= stats.lead)
    assert lead[0] == (0, PART_BYTES) and len(lead) >= 2, src.asked  # the first run is one part: no rate yet
    second = lead[1]
    assert PART_BYTES < second[1] - second[0] <= MAX_RUN_PARTS * PART_BYTES  # then a second's worth of parts,
    assert SIZE - second[1] >= second[1] - second[0] - PART_BYTES  # never more than it leaves to others


def test_large_blob_comes_in_parallel_ranges(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    ref, digest = _push(registry, unique_repo, tmp_path / "src")
    with FaultProxy(registry.url) as proxy:
        proxy.limit_rate(16 * MiB, "/blobs/sha256:")  # per response: a capped object-store connection
        with ociart.Client(plain_http=True) as c:
            c.pull(ref.replace(registry.host, proxy.host), tmp_path / "out")
            stats = c.target(c.ref(ref.replace(registry.host, proxy.host))).last_ranged
        gets = [e for e in proxy.find("GET", f"/blobs/{digest}") if e["status"] == 206]
    assert _sha256(tmp_path / "out" / "weights.bin") == digest
    assert stats is not None and stats.streams >= 2 and stats.grew and stats.received == SIZE
    parts = _ranges(gets)  # the blob tiled exactly once: the lead's runs, then parts of at most 16 MiB
    assert parts[0][0] == 0 and parts[-1][1] == SIZE and all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    lead = [(s, e) for s, e in parts if e <= stats.lead]
    assert sum(e - s for s, e in lead) == stats.lead > 0  # the lead's runs are the verified prefix
    assert all(e - s <= MAX_RUN_PARTS * PART_BYTES for s, e in lead)
    assert all(e - s <= PART_BYTES for s, e in parts if s >= stats.lead) and len(parts) > len(lead)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["weights.bin"]


def test_ranges_after_a_redirect_to_object_storage(s3_registry: RunningRegistry, unique_repo: str,
                                                   tmp_path: Path) -> None:
    assert s3_registry.s3 is not None
    ref, digest = _push(s3_registry, unique_repo, tmp_path / "src")
    proxy = s3_registry.s3.proxy
    proxy.log.clear()
    proxy.limit_rate(16 * MiB, "/data?X-Amz-")
    try:
        with ociart.Client(plain_http=True) as c:
            c.pull(ref, tmp_path / "out")
            stats = c.target(c.ref(ref)).last_ranged
    finally:
        proxy.clear()
    gets = [e for e in proxy.find("GET", "/data?X-Amz-") if e["status"] == 206]
    assert _sha256(tmp_path / "out" / "weights.bin") == digest
    assert stats is not None and stats.streams >= 2
    parts = _ranges(gets)
    assert parts[0][0] == 0 and parts[-1][1] == SIZE and sum(e - s for s, e in parts) == SIZE
    assert all("authorization" not in e["headers"] for e in gets)


def test_interrupted_ranged_download_keeps_every_completed_range(registry: RunningRegistry, unique_repo: str,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection is cut while several streams run (the proxy goes away); with no retry budget the pull
    fails, and the record keeps the verified prefix and what each stream wrote; the next run fetches the rest."""
    ref, digest = _push(registry, unique_repo, tmp_path / "src")
    out = tmp_path / "out"
    monkeypatch.setenv("OCIART_RETRY_BUDGET", "0")
    failed: list[BaseException] = []
    with FaultProxy(registry.url) as proxy:
        via = ref.replace(registry.host, proxy.host)
        proxy.limit_rate(16 * MiB, "/blobs/sha256:")
        grown = proxy.when_sent(f"/blobs/{digest}", 40 * MiB)  # by then several streams run

        def pull() -> None:
            try:
                ociart.Client(plain_http=True).pull(via, out)
            except NetworkError as exc:
                failed.append(exc)

        t = threading.Thread(target=pull)
        t.start()
        assert grown.wait(120)
        proxy.stop()  # every connection cut at once
        t.join(180)
    assert failed, "the pull did not fail"
    monkeypatch.delenv("OCIART_RETRY_BUDGET")
    rec = _record(out, digest)
    assert len(rec.ranges) >= 2, rec  # beyond the verified prefix: the other streams' progress
    assert not (out / "weights.bin").exists()
    with FaultProxy(registry.url) as proxy:
        ociart.Client(plain_http=True).pull(ref.replace(registry.host, proxy.host), out)
        fetched = proxy.sent(f"/blobs/{digest}")
        asked = _ranges([e for e in proxy.find("GET", f"/blobs/{digest}") if e["status"] == 206])
    assert fetched == SIZE - _covered(rec)  # exactly what the record did not cover
    kept = [(r.start, r.end) for r in rec.ranges]
    assert not [(s, e) for s, e in asked for ks, ke in kept if s < ke and ks < e]  # no kept byte asked again
    assert _sha256(out / "weights.bin") == digest


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_ranged_pull_resumes(sig: signal.Signals, registry: RunningRegistry, unique_repo: str,
                                    tmp_path: Path) -> None:
    """SIGTERM: the run stops in an orderly way and records every completed range. SIGKILL: the periodic record
    (the verified prefix) survives. Either way the next run fetches only what the record does not cover."""
    ref, digest = _push(registry, unique_repo, tmp_path / "src")
    out = tmp_path / "out"
    with FaultProxy(registry.url) as proxy:
        via = ref.replace(registry.host, proxy.host)
        cmd = [sys.executable, "-m", "ociart", "pull", "--plain-http", "-o", str(out), via]
        proxy.limit_rate(8 * MiB, "/blobs/sha256:")
        half = proxy.when_sent("/blobs/sha256:", SIZE // 2)
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert half.wait(180), "the first pull never reached half the blob"
            first.send_signal(sig)
            first.communicate(timeout=60)
        finally:
            first.kill()
        assert first.returncode in (-sig, 128 + sig), first.returncode
        rec = _record(out, digest)
        assert rec.ranges and rec.ranges[0].start == 0
        if sig == signal.SIGTERM:
            assert len(rec.ranges) >= 2 and _covered(rec) >= SIZE // 3, rec
        assert not (out / "weights.bin").exists()
        _settle(proxy)
        proxy.clear()
        proxy.reset_counts()
        proxy.log.clear()
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        fetched = proxy.sent("/blobs/sha256:")
    assert fetched == SIZE - _covered(rec)
    assert _sha256(out / "weights.bin") == digest
    assert sorted(p.name for p in out.iterdir()) == ["weights.bin"]


def test_server_ignoring_range_falls_back_to_one_stream(registry: RunningRegistry, unique_repo: str,
                                                        tmp_path: Path) -> None:
    ref, digest = _push(registry, unique_repo, tmp_path / "src")
    with FaultProxy(registry.url) as proxy:
        proxy.drop_request_header("range")
        with ociart.Client(plain_http=True) as c:
            c.pull(ref.replace(registry.host, proxy.host), tmp_path / "out")
        gets = proxy.find("GET", f"/blobs/{digest}")
    assert gets and all(e["status"] == 200 for e in gets)
    assert gets[0]["headers"].get("range", "").startswith("bytes=")  # asked for a range, got the whole blob
    assert _sha256(tmp_path / "out" / "weights.bin") == digest
