"""Names from artifacts become paths only after these checks: nothing is written outside the target."""

from __future__ import annotations

import errno
import functools
import os
import posixpath
from pathlib import Path, PurePosixPath

from .errors import UnsafePathError


#: Bytes of a path component on every file system ociart writes to (ext4, xfs, btrfs, tmpfs, APFS: NAME_MAX 255).
NAME_MAX = 255
#: Bytes kept free below PATH_MAX for the staging directory a pull writes through.
STAGING_RESERVE = 64


def _limit(root: Path | None, name: str, default: int) -> int:
    return _pathconf(str(root), name, default) if root is not None else default


@functools.lru_cache(maxsize=64)
def _pathconf(root: str, name: str, default: int) -> int:
    """``os.pathconf`` of the nearest existing directory (cached: a pull asks once per target, not per file)."""
    if root:
        probe = Path(root)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            return os.pathconf(probe, name)
        except (OSError, ValueError):
            pass
    return default


class NameCheck:
    """Refuse a file name from an artifact that the file system cannot hold: a component longer than NAME_MAX
    bytes, or (with ``root``, the pull's target) a full path longer than PATH_MAX less the staging reserve. Pull
    checks every title and tar member before anything is written, so the error is one line, not ``OSError: File
    name too long`` halfway through. The limits are looked up once, at construction."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self.name_max = _limit(root, "PC_NAME_MAX", NAME_MAX)
        self.path_max = _limit(root, "PC_PATH_MAX", 4096) - STAGING_RESERVE
        self.base = len(os.fsencode(os.path.abspath(root))) + 1 if root is not None else 0

    def __call__(self, name: str, what: str = "artifact") -> None:
        raw = name.encode("utf-8", "surrogateescape")
        if len(raw) > self.name_max:  # else no component can be too long
            for part in name.split("/"):
                n = len(part.encode("utf-8", "surrogateescape"))
                if n > self.name_max:
                    raise UnsafePathError(f"{what}: file name {part[:40]!r}… ({n} bytes) is longer than the file "
                                          f"system allows ({self.name_max} bytes per name)")
        if self.root is not None and self.base + len(raw) > self.path_max:
            raise UnsafePathError(f"{what}: path {name[:40]!r}… would be {self.base + len(raw)} bytes long under "
                                  f"{self.root}, longer than the file system allows ({self.path_max} bytes)")


def check_name_length(name: str, what: str = "artifact", root: Path | None = None) -> None:
    """:class:`NameCheck` for one name."""
    NameCheck(root)(name, what)


def safe_relpath(name: str) -> PurePosixPath:
    """Validate a file name from an artifact: relative, no ``..``, no empty or odd components, not too long."""
    if not name or "\x00" in name or "\\" in name:
        raise UnsafePathError(f"unsafe file name {name!r} in artifact")
    check_name_length(name)
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("..", "") for part in name.split("/")) or name.startswith("./"):
        raise UnsafePathError(f"unsafe file name {name!r} in artifact: it would escape the target directory")
    parts = [x for x in p.parts if x != "."]
    if not parts:
        raise UnsafePathError(f"unsafe file name {name!r} in artifact")
    return PurePosixPath(*parts)


def safe_dest(root: Path, rel: PurePosixPath, checked: set[Path] | None = None) -> Path:
    """The destination path, refusing parents that are symlinks or not directories (an early check before
    anything is fetched; :class:`DirTree` enforces the same at placement, immune to a swap in between).

    ``checked`` remembers parent directories already found safe during one restore (many files, few dirs).
    """
    check_name_length(rel.as_posix(), str(rel), root)
    cur = root
    parent = root.joinpath(*rel.parts[:-1])
    if checked is None or parent not in checked:
        for part in rel.parts[:-1]:
            cur = cur / part
            if cur.is_symlink() or (cur.exists() and not cur.is_dir()):
                raise UnsafePathError(f"{rel}: parent {cur} is a symlink or not a directory; refusing to write "
                                      f"through it")
        if checked is not None:
            checked.add(parent)
    dest = parent / rel.parts[-1]
    if dest.is_symlink():
        raise UnsafePathError(f"{rel}: destination {dest} is a symlink; refusing to write through it")
    return dest


class DirTree:
    """Directories below ``root`` opened by descriptor, each relative to its parent with ``O_NOFOLLOW``: a symlink
    (or a file) anywhere below ``root`` is refused, not followed, even when swapped in after an earlier check.
    ``root`` itself is the caller's (trusted) path."""

    FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fds: dict[str, int] = {}  # directory below root ('' the root) -> descriptor
        self._created: list[tuple[int, str]] = []  # (parent fd, name) of directories made here, in order

    def __enter__(self) -> DirTree:
        self._fds[""] = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def parent(self, rel: str | PurePosixPath, *, create: bool) -> int:
        """The descriptor of ``rel``'s parent directory (cached), creating missing directories when asked."""
        return self._dir(posixpath.dirname(rel if isinstance(rel, str) else rel.as_posix()), rel, create)

    def _dir(self, key: str, rel: str | PurePosixPath, create: bool) -> int:
        fd = self._fds.get(key)
        if fd is not None:
            return fd
        up, _, part = key.rpartition("/")
        top = self._dir(up, rel, create)
        try:
            sub = os.open(part, self.FLAGS, dir_fd=top)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(part, 0o777, dir_fd=top)
            self._created.append((top, part))
            sub = os.open(part, self.FLAGS, dir_fd=top)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise UnsafePathError(f"{rel}: {self.root / key} is a symlink or not a directory (anymore); refusing to "
                                  f"write through it") from None
        self._fds[key] = sub
        return sub

    def rollback(self) -> None:
        """Remove the directories created here (deepest first; only while still empty)."""
        for fd, name in reversed(self._created):
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:
                pass
        self._created.clear()
