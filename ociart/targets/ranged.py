"""Parallel ranged download of one large blob into a :class:`~ociart.targets.ingest.Partial` (no HTTP here).

The registry's blob fetch (:meth:`RegistryTarget.fetch_blob`, the one fetch primitive) calls :func:`fetch_ranges`
for blobs of at least :data:`PARALLEL_MIN_BYTES` with a function that opens one ranged GET. What is missing from
the partial (after its verified prefix and the completed ranges of ``Partial.done``) is cut into parts of at most
:data:`PART_BYTES`; worker threads take the next part, GET it with ``Range`` and ``pwrite`` each piece at its offset
as it arrives (flat memory: no piece is kept after it is written). One hashing thread follows the contiguous written
prefix, reading it back from the page cache, so the whole-blob digest is ready when the last byte lands and is
verified before the file becomes visible. The number of streams adapts: it starts at 2 and doubles every
:data:`DECIDE_SECONDS` while the received throughput still grows by :data:`GROWTH` or more, up to ``max_streams``
(the first window without growth ends the ramp).

While the hashing thread waits for the prefix to grow (the streams are slower than hashing: a throttled or
redirected download), it hashes what the parts beyond the prefix hold (each part's own digest, continued every
4 MiB) and records those ranges, so a SIGKILL loses at most about 4 MiB per stream. A dropped part resumes at its own offset (within the caller's retry budget). A server that answers a ranged GET
with 200 (no ranges) raises :class:`RangesUnsupported` before any byte is written; the caller falls back to one
sequential stream.
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
from .ingest import CHECKPOINT_BYTES, Partial

#: Blobs at least this large are fetched in parallel ranges (when ``max_streams`` > 1).
PARALLEL_MIN_BYTES = 64 << 20
#: Largest part of one ranged GET: a 256 MiB blob spreads over 16 parts, enough for every stream.
PART_BYTES = 16 << 20
#: Default upper bound on concurrent ranged GETs of one blob (``--max-streams``).
DEFAULT_MAX_STREAMS = 8
#: The stream count is reconsidered this often.
DECIDE_SECONDS = 0.5
#: Another stream is added while throughput grew by at least this factor over the last window.
GROWTH = 1.10

#: ``open_range(start, end)`` → a context manager yielding the body pieces of bytes ``[start, end)``.
OpenRange = Callable[[int, int], AbstractContextManager[Iterator[bytes]]]


def _hash_range(fd: int, start: int, end: int, digester: Digester) -> None:
    pos = start
    while pos < end:
        data = os.pread(fd, min(CHUNK, end - pos), pos)
        if not data:
            raise OSError(f"short read at {pos} of the partial blob")
        digester.update(data)
        pos += len(data)


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
    prefix = part.digester.size
    todo = plan_parts(prefix, size, part.done, part_bytes)
    # every interval of [prefix, size), in order: what the hasher walks through
    intervals = sorted(todo + [_Part(s, e, e) for s, e in part.done if s >= prefix], key=lambda p: p.start)
    os.ftruncate(part.fd, size)
    stats = RangedStats(parts=len(todo))
    cond = threading.Condition()
    queue = deque(todo)
    failure: list[BaseException] = []
    stop = threading.Event()
    retry_lock = threading.Lock()

    def note(n: int) -> None:
        if progress is not None:
            with retry_lock:
                progress(n)

    def work() -> None:
        try:
            while not stop.is_set():
                with cond:
                    if not queue:
                        return
                    p = queue.popleft()
                while not p.complete:
                    try:
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
                        with retry_lock:
                            again = not stop.is_set() and wait()
                        if not again:
                            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            with cond:
                if not failure:
                    failure.append(exc)
                stop.set()
                cond.notify_all()

    #: part start -> (digest of the part's bytes hashed so far, the end of those bytes): see hash_prefix
    hashed: dict[int, tuple[Digester, int]] = {}

    def hash_prefix() -> None:
        try:
            d = part.digester
            i = 0
            while d.size < size:
                while intervals[i].end <= d.size:
                    i += 1
                cur = intervals[i]
                with cond:
                    # less than a read's worth of new prefix (and the interval not finished): idle
                    while cur.pos - d.size < min(CHUNK, cur.end - d.size) and not stop.is_set():
                        spare = next((p for p in todo if p.start > d.size and (
                            p.pos - hashed.get(p.start, (None, p.start))[1] >= CHECKPOINT_BYTES
                            or (p.complete and hashed.get(p.start, (None, p.start))[1] < p.end))), None)
                        if spare is None:
                            cond.wait(DECIDE_SECONDS)
                            continue
                        upto = spare.pos
                        cond.release()
                        try:  # idle: hash what a part beyond the prefix holds, so a SIGKILL cannot lose it
                            own, start = hashed.get(spare.start, (Digester(), spare.start))
                            _hash_range(part.fd, start, upto, own)
                            hashed[spare.start] = (own, upto)
                            if (spare.start, start) in part.hashes:
                                del part.hashes[(spare.start, start)]
                                part.done.remove((spare.start, start))
                            part.hashes[(spare.start, upto)] = own.digest.removeprefix("sha256:")
                            part.done.append((spare.start, upto))
                            part.checkpoint()
                        finally:
                            cond.acquire()
                    if cur.pos <= d.size:
                        return  # stopped
                    avail = cur.pos - d.size
                pos = d.size
                while avail > 0:
                    data = os.pread(part.fd, min(CHUNK, avail), pos)
                    if not data:
                        raise OSError(f"short read at {pos} of the partial blob")
                    d.update(data)
                    pos += len(data)
                    avail -= len(data)
                part.maybe_checkpoint()
        except BaseException as exc:  # noqa: BLE001
            with cond:
                if not failure:
                    failure.append(exc)
                stop.set()
                cond.notify_all()

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

    hasher = spawn(hash_prefix)
    workers = [spawn(work) for _ in range(min(2, max_streams, len(todo)) or 1)] if todo else []
    stats.streams = len(workers)
    last_bytes, last_t, best = 0, time.monotonic(), 0.0
    growing = True
    try:
        while any(w.is_alive() for w in workers):
            cancel.check()
            with cond:
                cond.wait(DECIDE_SECONDS / 5)
                if stop.is_set():
                    break
            now = time.monotonic()
            if now - last_t < DECIDE_SECONDS:
                continue
            rate = (stats.received - last_bytes) / (now - last_t)
            last_bytes, last_t = stats.received, now
            if growing and len(workers) < max_streams and queue:
                if rate >= best * GROWTH:  # still growing: double the streams (2, 4, 8, ...)
                    best = max(best, rate)
                    for _ in range(min(len(workers), max_streams - len(workers), len(queue))):
                        workers.append(spawn(work))
                    stats.streams = max(stats.streams, sum(w.is_alive() for w in workers))
                else:
                    growing = False
    except BaseException:
        stop.set()
        raise
    finally:
        for w in workers:
            w.join()
        if failure or stop.is_set():
            stop.set()
            with cond:
                cond.notify_all()
        hasher.join()
        if part.digester.size < size:  # stopped: what was written beyond the prefix is kept for the next run
            moved = {p.start: p.pos for p in todo if p.pos > p.start}
            part.done = [r for r in part.done if r[0] not in moved] + sorted(moved.items())
    if failure:
        raise failure[0]
    part.done = []  # all in the prefix now
    return stats
