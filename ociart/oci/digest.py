"""SHA-256 digests, computed in streams."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 4 << 20


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str, chunk: int = CHUNK) -> tuple[str, int]:
    """Return (digest, size) of a file, reading it in chunks (flat memory)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(max(1, min(chunk, os.fstat(f.fileno()).st_size + 1)))  # small files: small buffer
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
    return "sha256:" + h.hexdigest(), size


class Digester:
    """Incremental sha256 + byte count."""

    __slots__ = ("_h", "size")

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)
        self.size += len(data)

    def copy(self) -> Digester:
        d = Digester()
        d._h = self._h.copy()
        d.size = self.size
        return d

    @property
    def digest(self) -> str:
        return "sha256:" + self._h.hexdigest()
