"""Partial downloads that survive the process: ``<hex>.partial`` plus ``<hex>.ranges.json``, keyed by digest.

An :class:`Ingest` is a directory of partial blobs (a layout's ``.ociart-tmp/ingest/``; pull's staging store is
such a layout). The record lists the byte ranges of the partial file that are complete, each with the sha256 of
its own bytes, so one format serves a sequential download (one range from 0 that grows) and N parallel ranged
downloads writing at offsets (one range each). Nothing in the record is trusted blindly: on resume every range is
hashed again from the file and a range that does not match is dropped; the contiguous verified prefix's hash state
continues the whole-blob digest, and verified ranges beyond it are kept as :attr:`Partial.done` (a ranged
download fetches only what they do not cover; a sequential one rewrites them). The blob is still verified whole
before it is renamed into place.

Write policy: the record is replaced atomically (temp file + rename) every :data:`CHECKPOINT_BYTES` of progress
and when a transfer stops; it is not fsynced, and the data file is not fsynced for it either — after a power loss
the record may name bytes that never reached the disk, which the re-hash on resume detects (the range is refetched).
A SIGKILL loses at most the bytes since the last checkpoint. Partials older than :data:`MAX_AGE` seconds are
removed by :meth:`Ingest.sweep`.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from ..errors import InvalidContentError, VerificationError
from ..fsutil import publish, temp_file, write_all, writer_alive
from ..oci import Descriptor
from ..oci.digest import CHUNK, Digester
from ..reference import is_digest

#: Progress between two record updates (a SIGKILL loses at most this much).
CHECKPOINT_BYTES = 4 << 20
#: Partials untouched for longer than this (seconds) are stale.
MAX_AGE = 24 * 3600
PARTIAL = ".partial"
RECORD = ".ranges.json"


class ByteRange(BaseModel):
    """Bytes ``[start, end)`` of the blob are in the partial file at the same offsets; ``sha256`` is their hash."""

    start: int
    end: int
    sha256: str


class RangesRecord(BaseModel):
    """``<hex>.ranges.json``: which byte ranges of ``<hex>.partial`` are complete."""

    digest: str
    size: int
    ranges: list[ByteRange] = []


#: :meth:`Partial.append` starts the kernel's writeback every this many bytes, so the final fsync has little left.
WRITEBACK_BYTES = 64 << 20
_ADVISE = getattr(os, "posix_fadvise", None)


class Partial:
    """One blob being downloaded: ``digester`` hashed ``[0, digester.size)`` of the file, the verified prefix, and
    :meth:`append` writes at its end (``pwrite``: the file position is not used).

    ``done`` lists ranges beyond that prefix known to be complete in the file (``(start, end)``, from an earlier
    process's record or written by parallel ranged GETs), with the sha256 of their own bytes in ``hashes`` when
    known. A periodic checkpoint records the prefix and the ranges whose hash is known; the final one (the transfer
    stops) hashes the others from the file first, so every completed range survives a restart."""

    def __init__(self, desc: Descriptor, fd: int, path: Path, record: Path | None, durable: bool = True) -> None:
        self.durable = durable  # fsync before the rename (see Ingest)
        self.desc = desc
        self.fd = fd
        self.path = path
        self.record = record
        self.digester = Digester()
        self.resumed = 0  # bytes taken over from an earlier process
        self.done: list[tuple[int, int]] = []
        self.hashes: dict[tuple[int, int], str] = {}
        self._recorded = 0
        self._flushed = 0  # writeback started up to here

    def append(self, piece: bytes | memoryview) -> None:
        """Write ``piece`` at the end of the verified prefix and hash it: the one step of a sequential fetch
        (``registry._pump``) and of the ranged download's lead. Records progress every :data:`CHECKPOINT_BYTES`
        and starts writeback every :data:`WRITEBACK_BYTES`."""
        d = self.digester
        write_all(self.fd, piece, d.size)
        d.update(piece)
        if d.size - self._recorded >= CHECKPOINT_BYTES:
            self.checkpoint()
        if _ADVISE is not None and d.size - self._flushed >= WRITEBACK_BYTES:
            _ADVISE(self.fd, self._flushed, d.size - self._flushed, os.POSIX_FADV_DONTNEED)
            self._flushed = d.size

    def reset(self) -> None:
        """Start again from byte 0 (the server ignored ``Range``, or a resumed blob failed verification)."""
        os.ftruncate(self.fd, 0)
        self.digester = Digester()
        self.done = []
        self.hashes = {}
        self._recorded = self._flushed = 0
        if self.record is not None:
            self.record.unlink(missing_ok=True)

    def resumed_bytes(self) -> int:
        """Bytes already in the file: the verified prefix and the completed ranges beyond it."""
        return self.digester.size + sum(e - s for s, e in self.done)

    def maybe_checkpoint(self) -> None:
        if self.digester.size - self._recorded >= CHECKPOINT_BYTES:
            self.checkpoint()

    def checkpoint(self, final: bool = False) -> None:
        """Record the contiguous prefix and the completed ranges beyond it (atomic replace). Periodic checkpoints
        (``final`` False) skip ranges whose hash is not known yet; the final one hashes them from the file."""
        if self.record is None or (self.digester.size == self._recorded and not self.done):
            return
        d = self.digester
        ranges = [ByteRange(start=0, end=d.size, sha256=d.digest.removeprefix("sha256:"))] if d.size else []
        for start, end in sorted(self.done):
            if start < d.size:
                continue  # covered by the prefix
            sha = self.hashes.get((start, end))
            if sha is None and final:
                own = Digester()
                if hash_into(self.fd, start, end, own):
                    sha = self.hashes[(start, end)] = own.digest.removeprefix("sha256:")
            if sha is not None:
                ranges.append(ByteRange(start=start, end=end, sha256=sha))
        rec = RangesRecord(digest=self.desc.digest, size=self.desc.size, ranges=ranges)
        tmp = self.record.with_name(self.record.name + ".tmp")
        tmp.write_bytes(rec.model_dump_json().encode())
        os.replace(tmp, self.record)
        self._recorded = d.size

    def publish(self, dest: Path) -> None:
        """fsync and rename the (verified) partial to ``dest``; drop the record."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        publish(self.fd, self.path, dest, sync=self.durable)
        if self.record is not None:
            self.record.unlink(missing_ok=True)


class Ingest:
    """A directory of resumable partial blobs, keyed by digest (see the module docstring)."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = Path(root)
        #: fsync each blob before it is renamed into the store. Pull's staging store says no: it re-verifies every
        #: blob it finds before use, and what it makes final is fsynced where it lands (unpack.place).
        self.durable = durable
        self._swept = False

    def paths(self, digest: str) -> tuple[Path, Path]:
        if not is_digest(digest):
            raise InvalidContentError(f"unsupported or malformed digest {digest!r}")
        hexd = digest.removeprefix("sha256:")
        return self.root / (hexd + PARTIAL), self.root / (hexd + RECORD)

    @contextmanager
    def open(self, desc: Descriptor) -> Iterator[Partial]:
        """The partial of ``desc``, locked against other processes, its verified prefix hashed and kept.

        On leaving with an error the progress is recorded and the files stay (the next open resumes), except after
        a verification error, which removes them.
        """
        if not self._swept:
            self._swept = True
            self.sweep()
        self.root.mkdir(parents=True, exist_ok=True)
        path, record = self.paths(desc.digest)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)  # two processes fetching the same digest take turns
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # the holder published or removed it meanwhile: open the new one
        part = Partial(desc, fd, path, record, self.durable)
        done = False
        try:
            _resume(part, record)
            yield part
            done = True
        except VerificationError:
            self._drop(path, record)
            raise
        finally:
            if not done and path.exists():
                try:
                    part.checkpoint(final=True)
                except OSError:
                    pass
            try:
                os.close(fd)
            except OSError:
                pass

    def _drop(self, path: Path, record: Path) -> None:
        record.unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    def sweep(self, keep: set[str] | None = None, max_age: float = MAX_AGE,
              sizes: dict[str, int] | None = None) -> list[Path]:
        """Remove partials older than ``max_age`` seconds and, when ``keep`` is given, those of other digests;
        a partial another process holds (locked) is left alone. Returns what was removed (and records each file's
        size in ``sizes`` when given, by name)."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        now = time.time()
        removed: list[Path] = []
        for name in sorted(names):
            hexd = name.split(".", 1)[0]
            p = self.root / name
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            stale = now - st.st_mtime > max_age
            unwanted = keep is not None and "sha256:" + hexd not in keep
            if (stale or unwanted) and not writer_alive(self.root / (hexd + PARTIAL)):
                p.unlink(missing_ok=True)
                removed.append(p)
                if sizes is not None:
                    sizes[name] = st.st_size
        return removed


@contextmanager
def temporary(directory: Path, desc: Descriptor) -> Iterator[Partial]:
    """A partial that does not outlive the call: a temp file in ``directory``, no record."""
    with temp_file(directory) as (fd, tmp):
        yield Partial(desc, fd, tmp, None)


def _resume(part: Partial, record: Path) -> None:
    """Keep the longest prefix of the partial whose recorded ranges hash as recorded, and every later range that
    hashes as recorded (as ``part.done``); truncate after the last kept byte."""
    try:
        rec = RangesRecord.model_validate_json(record.read_bytes())
    except (FileNotFoundError, ValueError):
        rec = None
    d = Digester()
    done: list[tuple[int, int]] = []
    hashes: dict[tuple[int, int], str] = {}
    if rec is not None and rec.digest == part.desc.digest and rec.size == part.desc.size:
        size = os.fstat(part.fd).st_size
        chained = True
        covered = 0
        for r in sorted(rec.ranges, key=lambda r: r.start):
            if r.end <= r.start or r.end > min(size, part.desc.size) or r.start < covered:
                continue  # empty, past the file, or overlapping a kept range: fetched again
            own = Digester()
            if chained and r.start == d.size:
                trial = d.copy()
                if hash_into(part.fd, r.start, r.end, trial, own) and own.digest == "sha256:" + r.sha256:
                    d = trial
                    covered = r.end
                    continue
                chained = False
                own = Digester()
            if hash_into(part.fd, r.start, r.end, own) and own.digest == "sha256:" + r.sha256:
                done.append((r.start, r.end))  # a parallel fetcher's range beyond the prefix
                hashes[(r.start, r.end)] = r.sha256
                covered = r.end
    keep = max([d.size] + [e for _, e in done])
    os.ftruncate(part.fd, keep)
    part.digester = d
    part.done, part.hashes = done, hashes
    part.resumed = keep and part.resumed_bytes()
    part._recorded = d.size
    if keep == 0:
        record.unlink(missing_ok=True)


def hash_into(fd: int, start: int, end: int, *digesters: Digester) -> bool:
    """Feed bytes ``[start, end)`` of ``fd`` to ``digesters`` (read back in CHUNK pieces); False on a short file."""
    pos = start
    while pos < end:
        data = os.pread(fd, min(CHUNK, end - pos), pos)
        if not data:
            return False
        for dg in digesters:
            dg.update(data)
        pos += len(data)
    return True

