"""Artifact -> directory: choose layers (by category and glob), fetch them verified, restore the tree.

Understands ociart and ModelPack layers (``org.cncf.model.filepath``, raw or tar, file modes), KitOps ModelKits
(tar layers holding paths relative to the pack root) and plain ORAS artifacts (``org.opencontainers.image.title``).
Everything is fetched and extracted into a staging directory inside the target; files move into place only when
every blob is verified and every tar member has passed the safety checks.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel

from ..errors import AuthError, InvalidContentError, NetworkError, OverwriteError, UnsafePathError, UsageError
from ..oci import Descriptor, Manifest
from ..oci.digest import sha256_file
from ..progress import Progress
from ..safepath import safe_dest, safe_relpath
from ..targets.base import Target
from ..targets.layout import LayoutTarget
from ..transfer import copy_blobs
from .kinds import FILTERS, category, is_tar
from .metadata import A_FILE_METADATA, A_FILEPATH, A_TITLE
from .tarlayer import extract, member_digests

LEGACY_FILEPATH = "org.cnai.model.filepath"
LEGACY_FILE_METADATA = "org.cnai.model.file.metadata+json"


class PulledFile(BaseModel):
    path: str
    digest: str
    size: int
    mode: int = 0o644
    #: True when an identical file was already there.
    skipped: bool = False


@dataclass
class Entry:
    desc: Descriptor
    rel: PurePosixPath | None  # raw layers: the file; tar layers: None
    mode: int = 0o644

    @property
    def tar(self) -> bool:
        return self.rel is None


def layer_path(layer: Descriptor) -> str | None:
    ann = layer.annotations or {}
    return ann.get(A_FILEPATH) or ann.get(LEGACY_FILEPATH) or ann.get(A_TITLE)


def _mode(layer: Descriptor) -> int:
    ann = layer.annotations or {}
    raw = ann.get(A_FILE_METADATA) or ann.get(LEGACY_FILE_METADATA)
    if raw:
        try:
            return 0o755 if int(json.loads(raw).get("mode", 0o644)) & 0o100 else 0o644
        except (ValueError, TypeError, AttributeError):
            raise InvalidContentError(f"layer {layer.digest}: malformed {A_FILE_METADATA} annotation") from None
    return 0o644


def check_filters(filters: Sequence[str]) -> list[str]:
    out = [f.strip() for group in filters for f in group.split(",") if f.strip()]
    bad = [f for f in out if f not in FILTERS]
    if bad:
        raise UsageError(f"unknown --filter {', '.join(bad)}: choose from {', '.join(FILTERS)}")
    return out


def _matcher(include: Sequence[str]) -> Callable[[str], bool]:
    if not include:
        return lambda _: True
    return lambda name: any(fnmatch.fnmatchcase(name, g) for g in include)


def _tar_may_match(filepath: str | None, include: Sequence[str]) -> bool:
    """Whether a tar layer can hold a member ``include`` selects. Its members are named from the root, under its
    ``org.cncf.model.filepath`` (ociart, ModelPack, KitOps); a layer of the root (``.``) may hold any name."""
    base = (filepath or "").strip()
    while base.startswith("./"):
        base = base[2:]
    base = base.rstrip("/")
    if not include or base in ("", "."):
        return True
    under = base + "/"
    literal = [re.split(r"[*?\[]", g, maxsplit=1)[0] for g in include]  # what every match starts with
    return any(lit.startswith(under) or under.startswith(lit) for lit in literal)


def select(manifest: Manifest, filters: Sequence[str] = (), include: Sequence[str] = ()) -> list[Entry]:
    """Layers to fetch. Tar layers are kept whole here (unless no member under their filepath can match
    ``include``); ``include`` applies to their members at extraction."""
    wanted = set(check_filters(filters))
    match = _matcher(include)
    chosen: list[Entry] = []
    names: set[str] = set()
    for layer in manifest.layers:
        if wanted and category(layer.mediaType) not in wanted:
            continue
        ann = layer.annotations or {}
        path = layer_path(layer)
        if is_tar(layer.mediaType) and (A_FILEPATH in ann or LEGACY_FILEPATH in ann or A_TITLE not in ann):
            if _tar_may_match(ann.get(A_FILEPATH) or ann.get(LEGACY_FILEPATH), include):
                chosen.append(Entry(layer, None))
            continue
        if path is None:
            continue  # no name: nothing to restore (as ORAS does)
        rel = safe_relpath(path)
        if str(rel) in names:
            raise UnsafePathError(f"artifact has two layers named {path!r} (colliding names)")
        names.add(str(rel))
        if match(str(rel)):
            chosen.append(Entry(layer, rel, _mode(layer)))
    return chosen


def pull(target: Target, repo: str, manifest: Manifest, out_dir: Path, *, filters: Sequence[str] = (),
         include: Sequence[str] = (), overwrite: bool = False, concurrency: int = 4,
         progress: Progress | None = None) -> list[PulledFile]:
    """Copy the selected layers from ``target`` into the staging store ``out_dir/.ociart-pull`` (verified, resumable
    across processes), then restore files from it; nothing is moved into ``out_dir`` before everything checks out."""
    entries = select(manifest, filters, include)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _restore(target, repo, entries, out_dir, _matcher(include), overwrite, concurrency, progress)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # leave no trace of a failed pull
        raise


#: Pull's staging store inside the destination: an OCI layout whose ingest area holds resumable partial blobs.
STAGING = ".ociart-pull"
#: Failures after which the staging store stays for the next pull to resume; any other removes it.
RESUMABLE: tuple[type[BaseException], ...] = (NetworkError, AuthError, KeyboardInterrupt, SystemExit)


@contextmanager
def staging_store(out_dir: Path, wanted: Sequence[Descriptor]) -> Iterator[LayoutTarget]:
    """Lock and open ``out_dir/.ociart-pull`` as a layout holding only ``wanted`` blobs (what an earlier, interrupted
    pull left is kept when wanted and still verifies; the rest is removed). Removed again on leaving, unless the
    pull was interrupted by the network or a signal (:data:`RESUMABLE`)."""
    root = out_dir / STAGING
    while True:  # one pull at a time per destination; a finished one removes the directory under the next
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            raise UnsafePathError(f"{root} is a symlink or a file, not pull's staging directory: remove it")
        root.mkdir(exist_ok=True)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)  # no symlink swapped in meanwhile
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(root).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    keep = False
    try:
        store = LayoutTarget(root)
        want = {d.digest: d.size for d in wanted}
        store.ingest.sweep(keep=set(want))
        blobs = root / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(root):
            if name.startswith("restore-"):  # extraction trees of a killed pull
                shutil.rmtree(root / name, ignore_errors=True)
        for name in os.listdir(blobs):
            path = blobs / name
            digest = "sha256:" + name
            if digest not in want or sha256_file(path) != (digest, want[digest]):  # re-verified, never trusted
                path.unlink()
        yield store
    except RESUMABLE:
        keep = True
        raise
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        os.close(fd)


def _same(dest: Path, digest: str, size: int) -> bool:
    return dest.is_file() and dest.stat().st_size == size and sha256_file(dest)[0] == digest


def _check_dest(dest: Path, digest: str, size: int, overwrite: bool) -> bool:
    """True when ``dest`` already holds exactly this content; raise when it holds something else."""
    if not dest.exists():
        return False
    if _same(dest, digest, size):
        return True
    if dest.is_dir():
        raise OverwriteError(f"{dest} is a directory; cannot replace it with a file")
    if not overwrite:
        raise OverwriteError(f"{dest} exists with different content; use --overwrite to replace it")
    return False


def _restore(target: Target, repo: str, entries: list[Entry], out_dir: Path, match: Callable[[str], bool],
             overwrite: bool, concurrency: int, progress: Progress | None) -> list[PulledFile]:
    results: list[PulledFile] = []
    moves: list[tuple[Path, Path, int, bool]] = []  # staged, dest, mode, copy (blob used twice)
    fetch: dict[str, Descriptor] = {}
    raw_plan: list[tuple[Entry, Path]] = []
    checked: set[Path] = set()  # parent directories already found safe
    for e in entries:
        if e.tar:
            fetch[e.desc.digest] = e.desc
            continue
        assert e.rel is not None
        dest = safe_dest(out_dir, e.rel, checked)
        if _check_dest(dest, e.desc.digest, e.desc.size, overwrite):
            results.append(PulledFile(path=str(e.rel), digest=e.desc.digest, size=e.desc.size, mode=e.mode,
                                      skipped=True))
            if (dest.stat().st_mode & 0o777) != e.mode:
                os.chmod(dest, e.mode)
            continue
        fetch[e.desc.digest] = e.desc
        raw_plan.append((e, dest))
    with staging_store(out_dir, list(fetch.values())) as store:
        copy_blobs(target, repo, store, "", list(fetch.values()), concurrency, progress)
        staging = Path(tempfile.mkdtemp(prefix="restore-", dir=store.root))
        try:
            _unpack_staged(store.root / "blobs" / "sha256", staging, entries, raw_plan, results, moves, out_dir,
                           match, overwrite, checked)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(results, key=lambda r: r.path)


def _unpack_staged(blobs: Path, staging: Path, entries: list[Entry], raw_plan: list[tuple[Entry, Path]],
                   results: list[PulledFile], moves: list[tuple[Path, Path, int, bool]], out_dir: Path,
                   match: Callable[[str], bool], overwrite: bool, checked: set[Path]) -> None:
    """Extract tar layers and check every destination, then move everything into place."""
    uses: dict[str, int] = {}
    for e, _ in raw_plan:
        uses[e.desc.digest] = uses.get(e.desc.digest, 0) + 1
    names = {str(e.rel) for e, _ in raw_plan} | {r.path for r in results}
    for e, dest in raw_plan:
        moves.append((blobs / e.desc.digest.removeprefix("sha256:"), dest, e.mode, uses[e.desc.digest] > 1))
        results.append(PulledFile(path=str(e.rel), digest=e.desc.digest, size=e.desc.size, mode=e.mode))
    for i, e in enumerate(x for x in entries if x.tar):
        tree = staging / f"tree{i}"
        what = f"layer {e.desc.digest} ({layer_path(e.desc) or 'tar'})"
        for name, size, mode, digest in extract(blobs / e.desc.digest.removeprefix("sha256:"), tree,
                                                e.desc.mediaType, what, match):
            if name in names:
                raise UnsafePathError(f"{what}: {name!r} is also in another layer (colliding names)")
            names.add(name)
            rel = safe_relpath(name)
            staged = tree / name
            dest = safe_dest(out_dir, rel, checked)
            if _check_dest(dest, digest, size, overwrite):
                results.append(PulledFile(path=name, digest=digest, size=size, mode=mode, skipped=True))
                continue
            moves.append((staged, dest, -1, False))  # created with its mode by extract
            results.append(PulledFile(path=name, digest=digest, size=size, mode=mode))
    # everything fetched, verified and checked: make it visible
    made: set[Path] = set()
    for staged, dest, mode, copy in moves:
        if dest.parent not in made:
            dest.parent.mkdir(parents=True, exist_ok=True)
            made.add(dest.parent)
        if copy:
            tmp = staging / "copy.tmp"
            shutil.copyfile(staged, tmp)
            staged = tmp
        if mode >= 0:
            os.chmod(staged, mode)
        os.replace(staged, dest)


def file_digests(target: Target, repo: str, manifest: Manifest) -> dict[str, tuple[str, int]]:
    """path -> (digest, size) for every file; tar layers are fetched (verified) and their members hashed."""
    out: dict[str, tuple[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="ociart-diff-") as tmp:
        for e in select(manifest):
            if not e.tar:
                out[str(e.rel)] = (e.desc.digest, e.desc.size)
                continue
            blob = Path(tmp) / e.desc.digest.removeprefix("sha256:")
            if not blob.exists():
                target.fetch_blob(repo, e.desc, blob)
            for name, digest, size in member_digests(blob, e.desc.mediaType, f"layer {e.desc.digest}"):
                out[name] = (digest, size)
    return out
