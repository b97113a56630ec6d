"""Parallel ranged download of one large blob into a :class:`~ociart.targets.ingest.Partial` (no HTTP here).

The registry's blob fetch (:meth:`RegistryTarget.fetch_blob`, the one fetch primitive) calls :func:`fetch_ranges`
for blobs of at least :data:`PARALLEL_MIN_BYTES` with a function that opens one ranged GET. What is missing from
the partial (after its verified prefix and the completed ranges of ``Partial.done``) is cut into parts of at most
:data:`PART_BYTES`.

One stream, the *lead*, starts alone. It takes runs of contiguous parts from the left (each run about one second
of its own measured rate, :data:`PART_BYTES` to :data:`MAX_RUN_PARTS` parts), GETs each run as one ranged request
and writes and hashes it inline: it extends the verified prefix exactly as a single-stream download does, so where
one stream is as fast as the link (loopback, an unthrottled registry) nothing is paid for parallelism. After
:data:`DECIDE_SECONDS` a *probe* stream starts, taking parts from the right, unless the lead already receives
:data:`PROBE_BELOW` bytes a second. At the next decision the streams grow only if the probe added throughput
(:data:`PROBE_GAIN`) without slowing the lead (:data:`LEAD_KEPT`): the signature of a per-connection cap (object
storage behind a redirect, a throttled proxy), not of a shared bottleneck (the CPU, one link). Growing: the
streams double every :data:`DECIDE_SECONDS` while throughput still grows by :data:`GROWTH`, up to
``max_streams``; the lead leaves after its current run. Otherwise the probe finishes its part and stops, and the
lead goes on alone.

Workers other than the lead ``pwrite`` each piece at its offset as it arrives (flat memory: no piece is kept after
it is written). When the lead leaves with bytes still missing, one hashing thread follows the contiguous written
prefix, reading it back from the page cache, so the whole-blob digest is ready when the last byte lands and is
verified before the file becomes visible. While it waits for the prefix to grow it hashes what parts beyond the
prefix hold (each part's own digest, continued every 4 MiB) and records those ranges, so a SIGKILL loses at most
about 4 MiB per stream. A dropped part resumes at its own offset (within the caller's retry budget). A server that
answers a ranged GET with 200 (no ranges) raises :class:`RangesUnsupported` before any byte is written; the caller
falls back to one sequential stream.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from contextvars import copy_context
from dataclasses import dataclass

from .. import cancel
from ..oci.digest import CHUNK, Digester
from .ingest import CHECKPOINT_BYTES, Partial, hash_into

#: Blobs at least this large are fetched in parallel ranges (when ``max_streams`` > 1).
PARALLEL_MIN_BYTES = 64 << 20
#: Largest part of one ranged GET: a 256 MiB blob spreads over 16 parts, enough for every stream.
PART_BYTES = 16 << 20
#: Default upper bound on concurrent ranged GETs of one blob (``--max-streams``).
DEFAULT_MAX_STREAMS = 8
#: The stream count is reconsidered this often (the first time this long after the lead's first byte).
DECIDE_SECONDS = 0.25
#: Another stream is added while throughput grew by at least this factor over the last window.
GROWTH = 1.10
#: The probe stream leads to growth when the two streams together beat the lead alone by this factor ...
PROBE_GAIN = 1.2
#: ... while the lead kept at least this share of its own rate (the streams do not share one bottleneck).
LEAD_KEPT = 0.85
#: No probe when the lead alone already receives this many bytes a second: no per-connection cap worth splitting
#: around (object stores cap a connection at tens of MB/s), and on loopback a probe only takes CPU from the lead
#: (1 GiB unthrottled, 5 rounds each, the same day: 1.12-1.17x one stream with the probe, at the commit before and
#: after the change that exposed it; benchmarks/README.md).
PROBE_BELOW = 200_000_000
#: The lead's run is at most this many parts (one ranged GET).
MAX_RUN_PARTS = 8
#: The lead aims at runs of about this many seconds of its measured rate.
RUN_SECONDS = 1.0
#: The lead counts its bytes (throughput, progress) in steps of this size, not per piece.
NOTE_BYTES = 1 << 20

#: ``open_range(start, end)`` → a context manager yielding the body pieces of bytes ``[start, end)``.
OpenRange = Callable[[int, int], AbstractContextManager[Iterator[bytes]]]


def _hash_range(fd: int, start: int, end: int, digester: Digester) -> None:
    if not hash_into(fd, start, end, digester):
        raise OSError(f"short read in [{start}, {end}) of the partial blob")


class RangesUnsupported(Exception):
    """The server ignored ``Range`` (answered 200): fetch the blob with one sequential stream instead."""


class ShortBody(Exception):
    """A ranged body ended before its last byte (the part is retried from where it stopped)."""


@dataclass
class _Part:
    start: int
    end: int
    pos: int  # next byte to write

    @property
    def complete(self) -> bool:
        return self.pos >= self.end


@dataclass
class RangedStats:
    """What one ranged download did (for tests and the benchmark)."""

    parts: int = 0
    streams: int = 0  # the most streams that ran at once
    requests: int = 0
    received: int = 0
    lead: int = 0  # bytes the lead stream wrote and hashed inline
    grew: bool = False  # the probe showed a per-connection cap: the streams grew


def plan_parts(start: int, size: int, done: list[tuple[int, int]], part_bytes: int = PART_BYTES) -> list[_Part]:
    """The parts of ``[start, size)`` not covered by ``done``, each at most ``part_bytes``."""
    parts: list[_Part] = []
    pos = start
    for s, e in sorted(done) + [(size, size)]:
        if e <= pos:
            continue
        gap_end = max(pos, s)
        while pos < gap_end:
            end = min(gap_end, pos + part_bytes)
            parts.append(_Part(pos, end, pos))
            pos = end
        pos = max(pos, e)
    return parts


def fetch_ranges(part: Partial, open_range: OpenRange, *, max_streams: int, retryable: tuple[type[BaseException], ...],
                 wait: Callable[[], bool], progress: Callable[[int], None] | None = None,
                 part_bytes: int = PART_BYTES) -> RangedStats:
    """Fill ``part`` with the blob's missing bytes using up to ``max_streams`` concurrent ranged GETs.

    On return ``part.digester`` has hashed the whole blob (the caller verifies and publishes). An exception in
    ``retryable`` from a part is retried (from the part's current offset) while ``wait()`` allows; anything else,
    or an exhausted budget, stops every stream and is raised; completed parts are then in ``part.done`` (the
    final checkpoint records them)."""
    size = part.desc.size
    todo = plan_parts(part.digester.size, size, part.done, part_bytes)
    stats = RangedStats(parts=len(todo))
    cond = threading.Condition()
    queue = deque(todo)
    failure: list[BaseException] = []
    stop = threading.Event()
    lead_leave = threading.Event()  # the streams grow: the lead hands over after its current run
    probe_stop = threading.Event()  # the probe did not help: it stops after its current part
    lead_alone = threading.Event()  # no stream will join the lead: it takes the rest in one request
    recorder_stop = threading.Event()  # the lead has handed over: the recorder ends
    from_right = [False]  # the probe takes parts from the right while the lead works from the left
    retry_lock = threading.Lock()

    def note(n: int) -> None:
        if progress is not None:
            with retry_lock:
                progress(n)

    def fail(exc: BaseException) -> None:
        with cond:
            if not failure:
                failure.append(exc)
            stop.set()
            cond.notify_all()

    def retry() -> bool:
        with retry_lock:
            return not stop.is_set() and wait()

    def work(probe: bool = False) -> None:
        try:
            while not stop.is_set() and not (probe and probe_stop.is_set()):
                with cond:
                    if not queue:
                        return
                    p = queue.pop() if probe and from_right[0] else queue.popleft()
                while not p.complete:
                    try:
                        with cond:
                            stats.requests += 1
                        with open_range(p.pos, p.end) as pieces:
                            for piece in pieces:
                                cancel.check()
                                if stop.is_set():
                                    return
                                view = memoryview(piece)[: p.end - p.pos]
                                while view:
                                    n = os.pwrite(part.fd, view, p.pos)
                                    view = view[n:]
                                    with cond:
                                        p.pos += n
                                        stats.received += n
                                        cond.notify_all()
                                note(len(piece))
                        if not p.complete:
                            raise ShortBody(f"range ended at {p.pos} of {p.end}")
                    except retryable:
                        if not retry():
                            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            fail(exc)

    def lead() -> None:
        """Runs of contiguous parts from the left, written and hashed inline (the prefix grows as it arrives)."""
        d = part.digester
        t0, run_bytes = time.monotonic(), part_bytes
        try:
            while not stop.is_set() and not lead_leave.is_set():
                with cond:
                    if not queue:
                        break
                    run = [queue.popleft()]
                    if lead_alone.is_set():  # nobody else will come: the rest in one request (each costs the
                        while queue and queue[0].start == run[-1].end:  # registry a lookup)
                            run.append(queue.popleft())
                    # contiguous, about RUN_SECONDS of its rate, and never more than it leaves to others
                    while (queue and queue[0].start == run[-1].end and len(run) < min(MAX_RUN_PARTS, len(queue))
                           and run[-1].end - run[0].start < run_bytes):
                        run.append(queue.popleft())
                if run[0].start > d.size:  # completed ranges of an earlier run lie before it: hash them
                    with ckpt:
                        _hash_range(part.fd, d.size, run[0].start, d)
                        part.maybe_checkpoint()
                end = run[-1].end
                try:
                    while d.size < end:
                        pending = 0  # bytes not yet counted: the counters and progress move every NOTE_BYTES
                        try:
                            with cond:
                                stats.requests += 1
                            with open_range(d.size, end) as pieces:
                                for piece in pieces:  # as lean as one sequential stream: write, hash, count
                                    cancel.check()
                                    if stop.is_set():
                                        return
                                    if len(piece) > end - d.size:
                                        piece = memoryview(piece)[: end - d.size]
                                    with ckpt:  # the recorder may write the record meanwhile: a consistent prefix
                                        part.append(piece)
                                    pending += len(piece)
                                    if pending >= NOTE_BYTES:
                                        stats.lead += pending
                                        stats.received += pending
                                        note(pending)
                                        pending = 0
                            if d.size < end:
                                raise ShortBody(f"range ended at {d.size} of {end}")
                        except retryable:
                            if not retry():
                                raise
                        finally:
                            stats.lead += pending
                            stats.received += pending
                            if pending:
                                note(pending)
                finally:
                    for p in run:  # the run's parts are the prefix up to d.size
                        p.pos = min(max(d.size, p.start), p.end)
                elapsed = time.monotonic() - t0
                if elapsed > 0:  # about RUN_SECONDS of the lead's own rate
                    run_bytes = max(part_bytes, int(stats.lead / elapsed * RUN_SECONDS))
        except BaseException as exc:  # noqa: BLE001
            fail(exc)
            return
        recorder_stop.set()  # the hasher records from here on
        for t in list(threads):
            t.join()
        if not stop.is_set() and d.size < size:  # others hold parts beyond the prefix: follow them, then help
            threads.append(spawn(hash_prefix))
            work()

    #: part start -> (digest of the part's bytes hashed so far, the end of those bytes): see hash_prefix
    hashed: dict[int, tuple[Digester, int]] = {}

    ckpt = threading.Lock()  # the record: the lead's prefix and the ranges hashed beyond it, written by one at a time

    def spare() -> _Part | None:
        """A part beyond the prefix holding CHECKPOINT_BYTES not yet recorded, or complete and not all recorded
        (called under ``cond``)."""
        d = part.digester
        return next((p for p in todo if p.start > d.size and (
            p.pos - hashed.get(p.start, (None, p.start))[1] >= CHECKPOINT_BYTES
            or (p.complete and hashed.get(p.start, (None, p.start))[1] < p.end))), None)

    def record(p: _Part, upto: int) -> None:
        """Hash what ``p`` holds up to ``upto`` (continuing its own digest) and record it, so a SIGKILL cannot lose
        it (called without ``cond``)."""
        own, start = hashed.get(p.start, (Digester(), p.start))
        _hash_range(part.fd, start, upto, own)
        hashed[p.start] = (own, upto)
        with ckpt:
            if (p.start, start) in part.hashes:
                del part.hashes[(p.start, start)]
                part.done.remove((p.start, start))
            part.hashes[(p.start, upto)] = own.digest.removeprefix("sha256:")
            part.done.append((p.start, upto))
            part.checkpoint()

    def recorder() -> None:
        """While the lead extends the prefix, record what the other streams wrote beyond it."""
        try:
            while not stop.is_set() and not recorder_stop.is_set():
                with cond:
                    p = spare()
                    if p is None:
                        cond.wait(DECIDE_SECONDS)
                        continue
                    upto = p.pos
                record(p, upto)
        except BaseException as exc:  # noqa: BLE001
            fail(exc)

    def hash_prefix() -> None:
        try:
            d = part.digester
            # every interval of [prefix, size), in order: what the hasher walks through
            intervals = sorted([p for p in todo if p.end > d.size] + [_Part(s, e, e) for s, e in part.done
                                                                     if s >= d.size], key=lambda p: p.start)
            i = 0
            while d.size < size:
                while intervals[i].end <= d.size:
                    i += 1
                cur = intervals[i]
                with cond:
                    # less than a read's worth of new prefix (and the interval not finished): idle
                    while cur.pos - d.size < min(CHUNK, cur.end - d.size) and not stop.is_set():
                        p = spare()
                        if p is None:
                            cond.wait(DECIDE_SECONDS)
                            continue
                        upto = p.pos
                        cond.release()
                        try:  # idle: record what a part beyond the prefix holds
                            record(p, upto)
                        finally:
                            cond.acquire()
                    if cur.pos <= d.size:
                        return  # stopped
                    avail = cur.pos - d.size
                _hash_range(part.fd, d.size, d.size + avail, d)
                with ckpt:
                    part.maybe_checkpoint()
        except BaseException as exc:  # noqa: BLE001
            fail(exc)

    def spawn(fn: Callable[[], None]) -> threading.Thread:
        token = cancel.current()
        ctx = copy_context()

        def run() -> None:
            if token is not None:
                cancel.bind(token, lambda _: fn())(None)
            else:
                ctx.run(fn)

        t = threading.Thread(target=run, daemon=True, name="ociart-range")
        t.start()
        return t

    threads: list[threading.Thread] = []  # the hasher, once the lead hands over
    if max_streams <= 1:
        lead_alone.set()
    workers = [spawn(lead)] if todo else []
    stats.streams = len(workers)
    mode = "lead"  # -> "probe" -> "grow" | "alone"
    last_bytes, last_lead, last_t = 0, 0, time.monotonic()
    alone_rate = lead_rate = best = 0.0
    try:
        while any(w.is_alive() for w in workers) or any(t.is_alive() for t in threads):
            cancel.check()
            if stop.wait(DECIDE_SECONDS / 5):  # not the condition: the streams' notifications are for the hasher
                break
            now = time.monotonic()
            if now - last_t < DECIDE_SECONDS:
                continue
            if mode == "lead" and not stats.lead:  # the lead's rate counts from its first byte (a redirect
                last_t = now  # or an object store's time to first byte is latency, not throughput)
                continue
            rate = (stats.received - last_bytes) / (now - last_t)
            own = (stats.lead - last_lead) / (now - last_t)
            last_bytes, last_lead, last_t = stats.received, stats.lead, now
            if mode == "lead":
                if max_streams > 1 and queue and workers[0].is_alive() and own < PROBE_BELOW:
                    mode, alone_rate, lead_rate = "probe", rate, own
                    from_right[0] = True
                    workers.append(spawn(lambda: work(probe=True)))
                else:
                    mode = "alone"
                    lead_alone.set()
            elif mode == "probe":
                if rate >= alone_rate * PROBE_GAIN and own >= lead_rate * LEAD_KEPT and queue:
                    mode, best, stats.grew = "grow", rate, True
                    from_right[0] = False
                    lead_leave.set()
                    # until the lead hands over, record the others' parts (a probe that stops is not worth it: it
                    # ran a quarter second, and on a fast link the hashing would only compete with the lead)
                    threads.append(spawn(recorder))
                    for _ in range(min(2, max_streams - 2, len(queue))):
                        workers.append(spawn(work))
                else:
                    mode = "alone"
                    probe_stop.set()
                    lead_alone.set()
            elif mode == "grow" and len(workers) < max_streams and queue:
                if rate >= best * GROWTH:  # still growing: double the streams (2, 4, 8, ...)
                    best = max(best, rate)
                    for _ in range(min(len(workers), max_streams - len(workers), len(queue))):
                        workers.append(spawn(work))
                else:
                    mode = "grown"
            stats.streams = max(stats.streams, sum(w.is_alive() for w in workers))
    except BaseException:
        stop.set()
        raise
    finally:
        if failure or stop.is_set():
            stop.set()
            with cond:
                cond.notify_all()
        for w in workers:
            w.join()
        for t in threads:
            t.join()
        d = part.digester
        if d.size < size:  # stopped: what was written beyond the prefix is kept for the next run
            moved = {p.start: p.pos for p in todo if p.start >= d.size and p.pos > p.start}
            part.done = [r for r in part.done if r[0] not in moved and r[1] > d.size] + sorted(moved.items())
    if failure:
        raise failure[0]
    part.done = []  # all in the prefix now
    return stats
