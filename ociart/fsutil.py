"""Files that appear only when complete and verified: temp file, hash, check, fsync, atomic rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DigestMismatchError
from .oci.digest import CHUNK, Digester


def verify(d: Digester, expected_digest: str | None, expected_size: int | None, what: str) -> None:
    if expected_size is not None and d.size != expected_size:
        raise DigestMismatchError(f"{what}: size mismatch: expected {expected_size} bytes, got {d.size}")
    if expected_digest is not None and d.digest != expected_digest:
        raise DigestMismatchError(f"{what}: digest mismatch: expected {expected_digest}, got {d.digest}")


@contextmanager
def temp_file(directory: Path, prefix: str = ".ociart-", suffix: str = ".partial") -> Iterator[tuple[int, Path]]:
    """An open fd to a new temp file in ``directory``; the file is removed unless renamed away."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    path = Path(name)
    try:
        yield fd, path
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
        path.unlink(missing_ok=True)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def publish(fd: int, tmp: Path, dest: Path) -> None:
    """fsync ``fd`` and atomically move ``tmp`` to ``dest``."""
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


def read_file_chunks(path: Path, chunk: int = CHUNK) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        while data := f.read(chunk):
            yield data
