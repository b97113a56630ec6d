"""``ociart fetch``: the deploy-time fetcher an init container or KServe storage initializer runs.

Resolve the reference once, verify that digest once (keys, identities or a policy, exactly as ``pull --policy``),
then fetch strictly by that digest: a tag moved meanwhile changes nothing. The blobs go (verified, resumable across
restarts) into a download store ``DIR/.ociart/download`` or, with ``cache``, into the node cache
(:mod:`ociart.deploy.nodecache`); files are then restored through pull's machinery
(:func:`ociart.packaging.unpack.pull`, staging ``DIR/.ociart/staging``), moved into DIR entry by entry, and the
completion marker ``DIR/.ociart/fetched.json`` is written last. A reader that checks the marker never sees a mix.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from ..encryption import DecryptionKey, open_layers
from ..errors import LocalIOError, OverwriteError, UnsafePathError, UsageError
from ..fsutil import publish, temp_file
from ..oci import Descriptor
from ..oci.digest import sha256_file
from ..packaging.unpack import PulledFile, check_filters, image_view, select, staging_store
from ..packaging.unpack import pull as unpack
from ..progress import Progress
from ..safepath import safe_relpath
from ..signing.results import Verification
from ..targets.base import Target
from ..transfer import copy_blobs
from .nodecache import Eviction, NodeCache, evict

if TYPE_CHECKING:
    from ..client import Client
    from ..reference import Reference
    from ..signing.policy import Policy
    from ..signing.verify import Trust

#: Fetch's own directory inside DIR: the marker, the download store and the staging store.
META = ".ociart"
MARKER = f"{META}/fetched.json"
#: The previous marker while its files are being replaced (an interrupted replacement resumes from it).
REPLACING = f"{META}/replacing.json"
LOCK = f"{META}/lock"
DOWNLOAD = f"{META}/download"
STAGING = f"{META}/staging"
#: The KServe storage-initializer URI scheme (beside KServe's ``oci://`` and ``oci+native://``).
SCHEME = "oci+ociart://"
#: KitOps' ``--filter`` / ``UNPACK_FILTER`` words -> ociart's filters.
KITOPS_FILTERS: Mapping[str, tuple[str, ...]] = {"model": ("weights", "config"), "datasets": ("dataset",),
                                                 "code": ("code",), "docs": ("docs",)}
VERIFY_OPTIONS = ("--policy FILE", "--verify-key PUB", "--certificate-identity/--certificate-oidc-issuer")


class MarkerFile(BaseModel):
    path: str
    digest: str
    size: int
    mode: int
    #: The file's mtime when fetched (ns): with the size, the fast up-to-date check.
    mtime_ns: int


class Marker(BaseModel):
    """``DIR/.ociart/fetched.json``: what DIR holds, written last by a completed fetch."""

    digest: str
    reference: str
    #: What verified (None: fetched with ``--no-verify``).
    verification: Verification | None = None
    fetched_at: str
    filters: list[str] = []
    include: list[str] = []
    files: list[MarkerFile]


class FetchResult(BaseModel):
    reference: str
    digest: str
    output: str
    files: list[PulledFile]
    verification: Verification | None = None
    #: DIR already held this digest (marker and files matched): nothing was fetched.
    up_to_date: bool = False
    #: Files of the previous marker that were removed for the new ones.
    replaced: list[str] = []
    #: What an interrupted earlier fetch left and this one removed (partials still wanted are resumed).
    cleaned: list[str] = []
    #: Blobs taken from the node cache / fetched from the registry.
    cache_hits: list[str] = []
    downloaded: list[str] = []
    eviction: Eviction | None = None


def source_reference(src: str) -> str:
    """The reference in a fetch source: ``oci+ociart://REF`` (KServe's storage-URI form) or ``REF``."""
    src = src.strip()
    if src.startswith(SCHEME):
        src = src[len(SCHEME):]
        if not src:
            raise UsageError(f"{SCHEME}: no reference after the scheme")
    elif "://" in src:
        raise UsageError(f"unsupported source {src!r}: give REF or {SCHEME}REF")
    return src


def kitops_filters(value: str) -> list[str]:
    """KitOps filter words (``model,datasets``) as ociart filters (``weights,config,dataset``)."""
    out: list[str] = []
    for word in (w.strip() for w in value.split(",") if w.strip()):
        if ":" in word:
            raise UsageError(f"KitOps filter {word!r}: named filters are not supported; use --include GLOB")
        if word not in KITOPS_FILTERS:
            raise UsageError(f"unknown KitOps filter {word!r}: choose from {', '.join(KITOPS_FILTERS)}")
        out += [f for f in KITOPS_FILTERS[word] if f not in out]
    return out


def read_marker(out_dir: Path, name: str = MARKER) -> Marker | None:
    """The marker of a completed fetch into ``out_dir``, or None (none, or unreadable: treated as no fetch)."""
    try:
        return Marker.model_validate_json((Path(out_dir) / name).read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValidationError, ValueError):
        return None


def marker_matches(out_dir: Path, marker: Marker, rehash: bool = False) -> bool:
    """Whether every file the marker lists is there as fetched: size and mtime (``rehash``: and its digest)."""
    for f in marker.files:
        path = Path(out_dir) / f.path
        try:
            st = path.lstat()
        except OSError:
            return False
        if not os.path.isfile(path) or path.is_symlink() or st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
            return False
        if rehash and sha256_file(path) != (f.digest, f.size):
            return False
    return True


def _write_marker(out_dir: Path, marker: Marker) -> None:
    dest = out_dir / MARKER
    with temp_file(dest.parent, prefix=".fetched-", suffix=".json") as (fd, tmp):
        os.write(fd, marker.model_dump_json(indent=2).encode())
        publish(fd, tmp, dest)


def _remove_files(out_dir: Path, marker: Marker) -> list[str]:
    """Remove exactly the files ``marker`` lists (never through a symlinked directory), then the directories they
    leave empty. Returns the paths removed."""
    removed: list[str] = []
    dirs: set[PurePosixPath] = set()
    for f in marker.files:
        rel = safe_relpath(f.path)
        if rel.parts[0] == META:
            continue
        cur = out_dir
        for part in rel.parts[:-1]:
            cur = cur / part
            if cur.is_symlink() or not cur.is_dir():
                break
        else:
            try:
                (out_dir / rel).unlink()
                removed.append(f.path)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                continue
            dirs.update(rel.parents)
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        if d.parts:
            try:
                (out_dir / d).rmdir()
            except OSError:
                pass  # not empty: files no marker lists stay
    return removed


def _check_space(out_dir: Path, manifest_entries: Sequence[tuple[Descriptor, bool]],
                 cache: NodeCache | None, link: bool) -> None:
    """Refuse (local I/O) before downloading when the sizes the manifest declares do not fit: the blobs not yet
    in the cache go there (or to the download store in DIR); DIR gets the files (nothing more for hardlinks from
    the cache) and the extracted tar layers."""
    need: dict[int, tuple[Path, int]] = {}

    def add(where: Path, n: int) -> None:
        dev = os.stat(where).st_dev
        need[dev] = (need.get(dev, (where, 0))[0], need.get(dev, (where, 0))[1] + n)

    blobs = {d.digest: (d, tar) for d, tar in manifest_entries}
    missing = cache.missing([d for d, _ in blobs.values()]) if cache is not None else [d for d, _ in blobs.values()]
    add(cache.root if cache is not None else out_dir, sum(d.size for d in missing))
    files = sum(d.size for d, tar in blobs.values() if not tar) if cache is not None and not link else 0
    add(out_dir, files + sum(d.size for d, tar in blobs.values() if tar))
    for where, n in need.values():
        free = shutil.disk_usage(where).free
        if n > free:
            raise LocalIOError(f"not enough space in {where}: the artifact needs {n} bytes there, {free} are free")


def fetch(client: Client, ref: str, out_dir: str | Path, *, keys: Sequence[str | Path] = (),
          trust: Trust | None = None, policy: Policy | str | Path | None = None,
          require_attestations: Sequence[str] = (), verify: bool = True, filters: Sequence[str] = (),
          include: Sequence[str] = (), verify_files: bool = False, replace: bool = True,
          cache: str | Path | None = None, link: bool = False, cache_max_size: int | None = None,
          progress: Progress | None = None, decryption_keys: Sequence[str] = ()) -> FetchResult:
    """Fetch ``ref`` (``REF`` or ``oci+ociart://REF``) into ``out_dir``, verified, atomically and idempotently.

    ``verify`` (the default) needs ``keys``, ``trust`` or ``policy``: without them this is a usage error naming the
    options and ``--no-verify``. ``replace=False`` refuses when ``out_dir`` holds another digest. ``cache``: the node
    cache directory; ``link``: hardlink files from it (same filesystem; they then share the cache's inodes);
    ``cache_max_size``: evict least recently used unreferenced blobs down to that many bytes afterwards.
    ``decryption_keys`` (``KEY.pem[:PASSWORD]``) open encrypted layers (docs/encryption.md): every selected one is
    opened before anything in ``out_dir`` changes, and decrypted (HMAC-checked) in the staging store.
    """
    from ..encryption import decryption_keys as load_keys

    keys_dec = load_keys(decryption_keys)
    started = time.monotonic()
    progress = progress if progress is not None else Progress(False)
    filters = check_filters(filters)
    given = bool(keys) or trust is not None or policy is not None
    if verify and not given:
        raise UsageError(f"fetch verifies before it downloads: give {', '.join(VERIFY_OPTIONS)}, or --no-verify to "
                         f"fetch unverified")
    if not verify and (given or require_attestations):
        raise UsageError("--no-verify excludes --policy, --verify-key and the identity options")
    out = Path(out_dir)
    r = client.ref(source_reference(ref))
    target = client.target(r, create=False)
    digest = r.digest or target.resolve(r.repository, r.reference).digest
    pinned = r.with_digest(digest)
    progress.event("resolved", reference=str(r), digest=digest)

    verification = None
    if verify:
        verification = client.verify(pinned, trust, keys=keys, policy=policy,
                                     require_attestations=require_attestations)
        progress.event("verified", digest=digest, signatures=len(verification.signatures),
                       attestations=len(verification.attestations))

    try:
        (out / META).mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as exc:
        raise LocalIOError(f"cannot create {out / META}: {exc.strerror or exc}") from None
    with _locked(out):  # one fetch at a time per DIR: the marker, the replacement and the placing are its own
        return _fetch_locked(client, target, pinned, digest, out, verification, filters, list(include),
                             verify_files, replace, cache, link, cache_max_size, progress, started, keys_dec)


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    try:
        fd = os.open(out / LOCK, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise LocalIOError(f"cannot lock {out / LOCK}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fetch_locked(client: Client, target: Target, pinned: Reference, digest: str, out: Path,
                  verification: Verification | None, filters: list[str], include: list[str], verify_files: bool,
                  replace: bool, cache: str | Path | None, link: bool, cache_max_size: int | None,
                  progress: Progress, started: float, decryption_keys: Sequence[DecryptionKey] = ()) -> FetchResult:
    old = read_marker(out)
    # a replacement that was interrupted: its old files are still the ones to remove
    pending = old if old is not None else read_marker(out, REPLACING)
    same_selection = old is not None and old.filters == filters and old.include == list(include)
    if old is not None and old.digest == digest and same_selection and marker_matches(out, old, verify_files):
        files = [PulledFile(path=f.path, digest=f.digest, size=f.size, mode=f.mode, skipped=True) for f in old.files]
        progress.event("done", digest=digest, up_to_date=True, files=len(files), bytes=0,
                       seconds=round(time.monotonic() - started, 3))
        return FetchResult(reference=str(pinned), digest=digest, output=str(out), files=files,
                           verification=verification, up_to_date=True)
    if pending is not None and pending.digest != digest and not replace:
        raise OverwriteError(f"{out} holds {pending.reference} ({pending.digest}); refusing to replace it "
                             f"(--no-replace)")

    pinned, node = client._image_manifest(pinned)
    view = image_view(target, pinned.repository, node)  # an image: its config (mount path, base layers) is read here
    entries = select(node, filters, include, view)
    for e in entries:
        if e.rel is not None and e.rel.parts[0] == META:
            raise UnsafePathError(f"artifact file {str(e.rel)!r} would land in fetch's own directory {META}/")
    open_layers([e.desc for e in entries], decryption_keys)  # a missing or wrong key fails before DIR changes
    node_cache = NodeCache(Path(cache)) if cache is not None else None
    _check_space(out, [(e.desc, e.tar) for e in entries], node_cache, link)
    wanted = list({e.desc.digest: e.desc for e in entries}.values())
    cleaned: list[str] = []
    replaced: list[str] = []

    def place(source: Target, hardlink: bool) -> list[PulledFile]:
        if old is not None:  # from here until the new marker, DIR is not a completed fetch
            os.replace(out / MARKER, out / REPLACING)
        if pending is not None:
            replaced.extend(_remove_files(out, pending))
        return unpack(source, "", node, out, filters=filters, include=include, concurrency=client.concurrency,
                      cleaned=cleaned, staging=STAGING, link=hardlink, view=view,
                      decryption_keys=decryption_keys)

    result = FetchResult(reference=str(pinned), digest=digest, output=str(out), files=[], verification=verification)
    if node_cache is not None:
        with node_cache:
            node_cache.ensure(target, pinned.repository, wanted, client.concurrency, progress)
            files = place(node_cache.store, link)
            if cache_max_size is not None:
                result.eviction = evict(node_cache.root, cache_max_size)
        result.cache_hits, result.downloaded = sorted(node_cache.hits), sorted(node_cache.fetched)
    else:
        with staging_store(out, wanted, cleaned, DOWNLOAD) as store:
            copy_blobs(target, pinned.repository, store, "", wanted, client.concurrency, progress)
            result.downloaded = sorted(d.digest for d in wanted)
            files = place(store, True)
    marker_files = []
    for f in files:
        st = (out / f.path).lstat()
        marker_files.append(MarkerFile(path=f.path, digest=f.digest, size=f.size, mode=f.mode,
                                       mtime_ns=st.st_mtime_ns))
    _write_marker(out, Marker(digest=digest, reference=str(pinned), verification=verification,
                              fetched_at=datetime.now(UTC).isoformat(timespec="seconds"), filters=filters,
                              include=include, files=marker_files))
    (out / REPLACING).unlink(missing_ok=True)
    result.files, result.replaced, result.cleaned = files, replaced, cleaned
    progress.event("done", digest=digest, up_to_date=False, files=len(files),
                   bytes=sum(d.size for d in wanted if d.digest in result.downloaded),
                   seconds=round(time.monotonic() - started, 3))
    return result

