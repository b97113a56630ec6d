"""The node-level cache: a verified content store that many fetches on one node share (``fetch --cache DIR``).

It is an OCI image layout (:class:`~ociart.targets.layout.LayoutTarget`) holding blobs by digest. A blob becomes
visible only whole and digest-verified (the layout's ingest area, then an atomic rename), so a reader never sees a
half-written blob; an interrupted download resumes from the cache's ingest area.

One lock per blob (``flock`` on ``.ociart-locks/<hex>.lock``): exclusive while the blob is fetched, so two pods
asking for the same blob download it once (the second waits, then finds it there); shared while a fetch uses it, so
eviction never removes a blob a running fetch is materialising. The lock file's mtime is the blob's last use, for
LRU eviction (:func:`evict`), the cleanup a ``gc --local`` calls.
"""

from __future__ import annotations

import fcntl
import os
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

from pydantic import BaseModel

from ..errors import LocalIOError
from ..oci import Descriptor
from ..progress import Progress
from ..targets.base import Target
from ..targets.layout import LayoutTarget
from ..transfer import copy_blob, parallel

LOCKS = ".ociart-locks"


class Eviction(BaseModel):
    """What :func:`evict` removed, and the cache's blob bytes before and after."""

    removed: list[str] = []
    freed_bytes: int = 0
    size_before: int = 0
    size_after: int = 0


class NodeCache:
    """A node cache rooted at ``root`` (created when missing)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.store = LayoutTarget(self.root)
            (self.root / LOCKS).mkdir(exist_ok=True)
        except PermissionError as exc:
            raise LocalIOError(f"cache {self.root}: {exc.strerror}") from None
        #: Blobs this process holds shared (in use) until :meth:`release`.
        self._held = ExitStack()
        #: Blobs found in the cache / fetched into it by :meth:`ensure`.
        self.hits: list[str] = []
        self.fetched: list[str] = []

    def _lock_path(self, digest: str) -> Path:
        return self.root / LOCKS / (digest.removeprefix("sha256:") + ".lock")

    def missing(self, descs: Sequence[Descriptor]) -> list[Descriptor]:
        return [d for d in descs if not self.store.has_blob("", d)]

    def ensure(self, src: Target, repo: str, descs: Sequence[Descriptor], concurrency: int = 4,
               progress: Progress | None = None) -> None:
        """Make every blob of ``descs`` present (fetched verified from ``src`` when missing, once per node) and hold
        it in use until :meth:`release`."""
        unique = list({d.digest: d for d in descs}.values())
        parallel(lambda d: self._ensure_one(src, repo, d, progress), unique, concurrency)

    def _ensure_one(self, src: Target, repo: str, desc: Descriptor, progress: Progress | None) -> None:
        path = self._lock_path(desc.digest)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self._acquire(fd, src, repo, desc, progress)
            os.utime(fd)  # last use, for LRU
        except BaseException:
            os.close(fd)
            raise
        self._held.callback(os.close, fd)

    def _acquire(self, fd: int, src: Target, repo: str, desc: Descriptor, progress: Progress | None) -> None:
        """Leave ``fd`` locked shared with the blob present, fetching it under the exclusive lock when missing.

        A fetch holds blobs shared while it waits for others, so waiting for the exclusive lock could deadlock
        (two fetches each holding the blob the other waits for). The exclusive lock is therefore only ever *tried*;
        blocking waits are for the shared lock, which only a downloader (a holder that waits for nothing) delays.
        """
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fcntl.flock(fd, fcntl.LOCK_SH)  # waits for a download of this blob on the node, if one runs
                if self.store.has_blob("", desc):
                    self.hits.append(desc.digest)
                    return
                fcntl.flock(fd, fcntl.LOCK_UN)  # absent, and nobody fetching it: try to become the fetcher
                time.sleep(0.01 + random.random() * 0.05)
                continue
            if self.store.has_blob("", desc):
                self.hits.append(desc.digest)
            else:
                copy_blob(src, repo, self.store, "", desc, progress)
                self.fetched.append(desc.digest)
            fcntl.flock(fd, fcntl.LOCK_SH)  # in use: eviction skips it (conversion may let an evictor in...)
            if self.store.has_blob("", desc):  # ...so check it is still there
                return

    def release(self) -> None:
        """Let go of every blob :meth:`ensure` holds."""
        self._held.close()

    def __enter__(self) -> NodeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _blobs(root: Path) -> Iterator[tuple[str, Path, os.stat_result, float]]:
    """(digest, path, stat, last use) of every blob in the cache."""
    blobs = root / "blobs" / "sha256"
    try:
        names = os.listdir(blobs)
    except FileNotFoundError:
        return
    for name in names:
        path = blobs / name
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        try:
            used = (root / LOCKS / (name + ".lock")).stat().st_mtime
        except FileNotFoundError:
            used = st.st_mtime
        yield "sha256:" + name, path, st, used


def cache_size(root: Path) -> int:
    """Bytes of the blobs in the cache at ``root``."""
    return sum(st.st_size for _, _, st, _ in _blobs(Path(root)))


def evict(root: Path, max_size: int) -> Eviction:
    """Remove least recently used, unreferenced blobs from the cache at ``root`` until its blobs add up to at most
    ``max_size`` bytes (as far as unreferenced blobs allow).

    Unreferenced: no running fetch holds it (its lock is taken without waiting; a holder keeps it) and no fetched
    directory shares its inode (a hardlink count of 1: removing a linked blob would free nothing). This is the
    library function behind ``fetch --cache-max-size`` and a ``gc --local``.
    """
    root = Path(root)
    entries = sorted(_blobs(root), key=lambda e: e[3])
    total = sum(st.st_size for _, _, st, _ in entries)
    result = Eviction(size_before=total, size_after=total)
    for digest, path, st, _ in entries:
        if result.size_after <= max_size:
            break
        if st.st_nlink > 1 or not path.is_file():
            continue
        lock = root / LOCKS / (digest.removeprefix("sha256:") + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # in use by a running fetch
            try:
                if path.lstat().st_nlink > 1:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            result.removed.append(digest)
            result.freed_bytes += st.st_size
            result.size_after -= st.st_size
        finally:
            os.close(fd)
    return result

