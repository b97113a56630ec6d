"""A local digest cache: (path, device, inode, size, mtime_ns, ctime_ns) -> sha256, so unchanged files are not
re-hashed.

Entries are written only when the file's stat is identical before and after hashing, and never for files
modified within the last 2 seconds (a later write in the same timestamp tick would go unnoticed). The ctime is part
of the key because a file rewritten in place with its mtime restored (``cp -p``, tar extraction over it) keeps its
size, inode and mtime; only the ctime, which no user call can set back, tells.

:func:`check_unchanged` is the one check that a file pushed is the file that was stat-ed: push calls it after a
file's upload ends, before any manifest is written.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from .errors import UsageError
from .reference import default_home

RACY_SECONDS = 2.0
#: (absolute path, device, inode, size, mtime_ns, ctime_ns)
StatKey = tuple[str, int, int, int, int, int]


def is_racy(key: StatKey) -> bool:
    """Modified so recently that a later write could keep the same size and mtime (any later write also moves the
    ctime, which is part of the key)."""
    return time.time() - key[4] / 1e9 < RACY_SECONDS


def key_of(path: str | Path, st: os.stat_result) -> StatKey:
    return (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stat_key(path: str | Path) -> StatKey | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return key_of(path, st)


def check_unchanged(path: str | Path, before: StatKey | None, now: os.stat_result | None = None) -> None:
    """Raise :class:`UsageError` when ``path`` vanished or its size, mtime, ctime or inode differ from ``before``;
    ``now``: the ``fstat`` of the file as it was read, instead of a fresh ``stat`` of ``path``."""
    after = key_of(path, now) if now is not None else stat_key(path)
    if before is None or after is None:
        raise UsageError(f"{path} vanished while it was being pushed; nothing was published")
    if after != before:
        what = (f"size {before[3]} -> {after[3]} bytes" if after[3] != before[3] else
                "modification time changed" if after[4] != before[4] else
                "replaced by another file" if after[1:3] != before[1:3] else "rewritten in place")
        raise UsageError(f"{path} changed while it was being pushed ({what}); nothing was published: "
                         "push again once it is no longer written to")


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
            # digests2: keyed on ctime too (the older ``digests`` table, without it, is no longer read)
            db.execute("CREATE TABLE IF NOT EXISTS digests2 (path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER,"
                       " size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, digest TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS derived (key TEXT PRIMARY KEY, digest TEXT, size INTEGER)")
            self._db = db
        return self._db

    def get(self, path: Path) -> tuple[str, int] | None:
        key = stat_key(path)
        if key is None:
            return None
        with self._lock:
            row = self._conn().execute("SELECT dev, ino, size, mtime_ns, ctime_ns, digest FROM digests2 WHERE path = ?",
                                       (key[0],)).fetchone()
        if row and tuple(row[:5]) == key[1:]:
            return row[5], key[3]
        return None

    def put(self, path: Path, digest: str, before: StatKey | None) -> None:
        after = stat_key(path)
        if before is None or after is None or after != before or is_racy(after):
            return
        with self._lock:
            self._conn().execute("INSERT OR REPLACE INTO digests2 VALUES (?, ?, ?, ?, ?, ?, ?)", (*after, digest))

    def drop(self, path: Path) -> None:
        """Forget ``path`` (its cached digest was refused by a registry)."""
        with self._lock:
            self._conn().execute("DELETE FROM digests2 WHERE path = ?", (os.path.abspath(path),))

    def prune(self) -> int:
        """Drop the rows of files that no longer exist (``gc --local``); returns how many went."""
        with self._lock:
            db = self._conn()
            gone = [(path,) for (path,) in db.execute("SELECT path FROM digests2") if not os.path.exists(path)]
            db.executemany("DELETE FROM digests2 WHERE path = ?", gone)
        return len(gone)

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
