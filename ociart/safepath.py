"""Names from artifacts become paths only after these checks: nothing is written outside the target."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from .errors import UnsafePathError


def safe_relpath(name: str) -> PurePosixPath:
    """Validate a file name from an artifact: relative, no ``..``, no empty or odd components."""
    if not name or "\x00" in name or "\\" in name:
        raise UnsafePathError(f"unsafe file name {name!r} in artifact")
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
