"""Files that appear only when complete and verified: temp file, hash, check, fsync, atomic rename."""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import cancel
from .errors import DigestMismatchError
from .oci.digest import CHUNK, Digester


def verify(d: Digester, expected_digest: str | None, expected_size: int | None, what: str) -> None:
    if expected_size is not None and d.size != expected_size:
        raise DigestMismatchError(f"{what}: size mismatch: expected {expected_size} bytes, got {d.size}")
    if expected_digest is not None and d.digest != expected_digest:
        raise DigestMismatchError(f"{what}: digest mismatch: expected {expected_digest}, got {d.digest}")


TEMP_PREFIX = ".ociart-"


@contextmanager
def temp_file(directory: Path, prefix: str = TEMP_PREFIX, suffix: str = ".partial") -> Iterator[tuple[int, Path]]:
    """An open fd to a new temp file in ``directory``; the file is removed unless renamed away.

    The file is locked (``flock``) while the fd is open, so :func:`sweep_temps` can tell the leftovers of a killed
    process (lock free) from a live writer's file."""
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(name).st_ino == os.fstat(fd).st_ino:
                break  # not swept between mkstemp and the lock
        except FileNotFoundError:
            pass
        os.close(fd)
    path = Path(name)
    try:
        yield fd, path
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
        path.unlink(missing_ok=True)


def writer_alive(path: Path) -> bool | None:
    """Whether the process that wrote ``path`` (holding its ``flock``, as :func:`temp_file` and partial downloads
    do) is still at it: True (lock held), False (lock free: a leftover), None (not an openable regular file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def sweep_temps(directory: Path) -> list[Path]:
    """Remove the temp files (:func:`temp_file`) in ``directory`` whose writer is gone (lock not held); returns
    them. A live writer's file is never touched: staleness is the lock, not an age."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    removed: list[Path] = []
    for name in names:
        if not name.startswith(TEMP_PREFIX):
            continue
        path = directory / name
        if writer_alive(path) is not False:
            continue  # its writer is alive, or it is no temp file of ours
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def write_all(fd: int, data: bytes | memoryview, offset: int | None = None) -> None:
    """Write all of ``data`` at the file position, or at ``offset`` (``pwrite``: the position is left alone)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[n:]
        if offset is not None:
            offset += n


def publish(fd: int, tmp: Path, dest: Path, *, sync: bool = True) -> None:
    """fsync ``fd`` (unless not ``sync``: a store whose every file is re-verified before use) and atomically move
    ``tmp`` to ``dest``."""
    if sync:
        os.fsync(fd)
    os.replace(tmp, dest)


def write_stream_verified(
    dest: Path,
    chunks: Iterable[bytes],
    expected_digest: str | None,
    expected_size: int | None,
    what: str,
    tmp_dir: Path | None = None,
) -> Digester:
    """Write ``chunks`` to ``dest`` via a verified temp file; nothing appears at ``dest`` on failure."""
    d = Digester()
    with temp_file(tmp_dir or dest.parent) as (fd, tmp):
        for chunk in chunks:
            d.update(chunk)
            if expected_size is not None and d.size > expected_size:
                raise DigestMismatchError(f"{what}: more data than the expected {expected_size} bytes")
            write_all(fd, chunk)
        verify(d, expected_digest, expected_size, what)
        dest.parent.mkdir(parents=True, exist_ok=True)
        publish(fd, tmp, dest)
    return d


#: Bytes copied in the kernel per step of :func:`copy_file_verified` before they are hashed back.
COPY_PIECE = 8 << 20


def copy_file_verified(src: Path, dest: Path, expected_digest: str, expected_size: int, what: str,
                       tmp_dir: Path | None = None, progress: Callable[[int], None] | None = None) -> None:
    """Copy the local file ``src`` to ``dest`` via a verified temp file; nothing appears at ``dest`` on failure.

    Each piece is copied in the kernel (``copy_file_range``; read/write where that is refused) and then hashed
    from the copy itself (read back from the page cache), so what is checked is exactly what becomes visible, with
    no Python-level buffer per chunk. Never copies more than ``expected_size`` + 1 bytes of a growing source.
    """
    d = Digester()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    kernel = True
    with open(src, "rb", buffering=0) as s, temp_file(tmp_dir or dest.parent) as (fd, tmp):
        sfd = s.fileno()
        while True:
            cancel.check()
            want = min(COPY_PIECE, expected_size + 1 - d.size)
            n = 0
            if want > 0 and kernel:
                try:
                    n = os.copy_file_range(sfd, fd, want)
                except OSError:
                    kernel = False  # not across these filesystems, or not on this kernel: copy through a buffer
            if want > 0 and not kernel:
                n = os.readv(sfd, [view[:min(want, CHUNK)]])
                write_all(fd, view[:n])
            if n == 0:
                break
            start = d.size
            while d.size < start + n:  # hash what was written, from the copy
                k = os.preadv(fd, [view[:min(CHUNK, start + n - d.size)]], d.size)
                if k == 0:
                    raise DigestMismatchError(f"{what}: the copy is shorter than what was written")
                d.update(view[:k])
            if progress:
                progress(n)
            if d.size > expected_size:
                raise DigestMismatchError(f"{what}: more data than the expected {expected_size} bytes")
        verify(d, expected_digest, expected_size, what)
        dest.parent.mkdir(parents=True, exist_ok=True)
        publish(fd, tmp, dest)


def read_file_chunks(path: Path, chunk: int = CHUNK) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        while data := f.read(chunk):
            cancel.check()  # a push's blob threads stop between chunks when the fan-out is cancelled
            yield data
