"""A local digest cache: (path, device, inode, size, mtime_ns) -> sha256, so unchanged files are not re-hashed.

Entries are written only when the file's stat is identical before and after hashing, and never for files
modified within the last 2 seconds (a later write in the same timestamp tick would go unnoticed).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from .reference import default_home

RACY_SECONDS = 2.0


def is_racy(key: tuple[str, int, int, int, int]) -> bool:
    """Modified so recently that a later write could keep the same size and mtime."""
    return time.time() - key[4] / 1e9 < RACY_SECONDS


def stat_key(path: Path) -> tuple[str, int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class DigestCache:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_home() / "digest-cache.sqlite"
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER,"
                       " size INTEGER, mtime_ns INTEGER, digest TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS derived (key TEXT PRIMARY KEY, digest TEXT, size INTEGER)")
            self._db = db
        return self._db

    def get(self, path: Path) -> tuple[str, int] | None:
        key = stat_key(path)
        if key is None:
            return None
        with self._lock:
            row = self._conn().execute("SELECT dev, ino, size, mtime_ns, digest FROM digests WHERE path = ?",
                                       (key[0],)).fetchone()
        if row and tuple(row[:4]) == key[1:]:
            return row[4], key[3]
        return None

    def put(self, path: Path, digest: str, before: tuple[str, int, int, int, int] | None) -> None:
        after = stat_key(path)
        if before is None or after is None or after != before or is_racy(after):
            return
        with self._lock:
            self._conn().execute("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?)", (*after, digest))

    # -- derived blobs (e.g. tar layers), keyed by a digest of their inputs' stat keys --------------
    def get_key(self, key: str) -> tuple[str, int] | None:
        with self._lock:
            row = self._conn().execute("SELECT digest, size FROM derived WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else None

    def put_key(self, key: str, digest: str, size: int) -> None:
        with self._lock:
            self._conn().execute("INSERT OR REPLACE INTO derived VALUES (?, ?, ?)", (key, digest, size))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
