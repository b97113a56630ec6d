"""Names from artifacts become paths only after these checks: nothing is written outside the target."""

from __future__ import annotations

import functools
import os
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


def check_name_length(name: str, what: str = "artifact", root: Path | None = None) -> None:
    """Refuse a file name from an artifact that the file system cannot hold: a component longer than NAME_MAX
    bytes, or (with ``root``, the pull's target) a full path longer than PATH_MAX less the staging reserve. Pull
    calls it for every title and tar member before anything is written, so the error is one line, not ``OSError:
    File name too long`` halfway through."""
    name_max = _limit(root, "PC_NAME_MAX", NAME_MAX)
    for part in name.split("/"):
        n = len(part.encode("utf-8", "surrogateescape"))
        if n > name_max:
            raise UnsafePathError(f"{what}: file name {part[:40]!r}… ({n} bytes) is longer than the file system "
                                  f"allows ({name_max} bytes per name)")
    if root is not None:
        path_max = _limit(root, "PC_PATH_MAX", 4096) - STAGING_RESERVE
        n = len(os.fsencode(os.path.abspath(root))) + 1 + len(name.encode("utf-8", "surrogateescape"))
        if n > path_max:
            raise UnsafePathError(f"{what}: path {name[:40]!r}… would be {n} bytes long under {root}, longer than "
                                  f"the file system allows ({path_max} bytes)")


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
    """The destination path, refusing symlinked parents that would lead outside ``root``.

    ``checked`` remembers parent directories already found safe during one restore (many files, few dirs).
    """
    check_name_length(rel.as_posix(), str(rel), root)
    cur = root
    parent = root.joinpath(*rel.parts[:-1])
    if checked is not None and parent in checked:
        dest = parent / rel.parts[-1]
        if dest.is_symlink():
            raise UnsafePathError(f"{rel}: destination {dest} is a symlink; refusing to write through it")
        return dest
    real_root = Path(os.path.realpath(root))
    for part in rel.parts[:-1]:
        cur = cur / part
        if cur.is_symlink() or (cur.exists() and not cur.is_dir()):
            real = Path(os.path.realpath(cur))
            if not cur.is_dir() or not real.is_relative_to(real_root):
                raise UnsafePathError(f"{rel}: parent {cur} is not a directory inside {root}")
    if checked is not None:
        checked.add(parent)
    dest = cur / rel.parts[-1]
    if dest.is_symlink():
        raise UnsafePathError(f"{rel}: destination {dest} is a symlink; refusing to write through it")
    return dest
