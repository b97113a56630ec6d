"""Move graphs of content between targets; push and pull of files are special cases.

* :func:`copy_graph` copies a manifest or index and everything it references from one target to another:
  blobs already present are skipped, blobs on the same registry are mounted, the rest stream through
  (verified by digest); children before parents; the root manifest's bytes and digest are unchanged.
* :func:`push_files` stores files as one layer each (title = relative path) and writes the manifest
  (the ``generic`` kind; typed kinds are packed by :mod:`ociart.packaging`).
* :func:`copy_blobs` is also how pull fetches: the layers it needs are copied into a staging store (an OCI layout
  inside the destination, resumable through its ingest area), then restored from there
  (:mod:`ociart.packaging.unpack`). The source may be any target: a registry, the embedded store, a layout cache.
* :func:`parallel` is the one thread fan-out (push, pack, copy, pull, MLflow).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from . import cancel, limits
from .cache import DigestCache, StatKey, check_unchanged, stat_key
from .safepath import safe_relpath
from .errors import DigestMismatchError, NotFoundError, TooLargeError, UsageError
from .oci import ANNOTATION_TITLE, EMPTY_JSON, OCI_EMPTY, Content, Descriptor, Index, Manifest
from .oci.digest import sha256_file
from .oci.mediatypes import DEFAULT_ARTIFACT_TYPE, DEFAULT_FILE_TYPE
from .progress import Progress
from .targets.base import Target, bytes_opener
from .targets.layout import LayoutTarget
from .targets.referrers import attach, attach_many, list_referrers
from .text import escaped_name

if TYPE_CHECKING:
    from .encryption import EncryptionPlan

log = logging.getLogger("ociart")
T = TypeVar("T")
R = TypeVar("R")


def parallel(fn: Callable[[T], R], items: Sequence[T], concurrency: int) -> list[R]:
    """``[fn(item) for item in items]`` on up to ``concurrency`` threads, results in order: the one fan-out.

    The first error cancels the tasks not started yet and stops the running ones between two chunks
    (:mod:`ociart.cancel`), waits for them to end, and is re-raised; an interrupt of the waiting caller (SIGINT,
    SIGTERM) does the same, so Ctrl-C takes effect within about a chunk. No task is left running behind the caller.
    """
    if len(items) <= 1 or concurrency <= 1:
        return [fn(item) for item in items]
    token = cancel.Token(cancel.current())
    task = cancel.bind(token, fn)
    pool = ThreadPoolExecutor(max_workers=min(concurrency, len(items)), thread_name_prefix="ociart-transfer")
    try:
        futures = [pool.submit(task, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:  # the first failure in submission order
            exc = f.exception() if f in done else None
            if exc is not None:
                token.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
                raise exc
        return [f.result() for f in futures]
    except BaseException:
        token.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def copy_blob(src: Target, src_repo: str, dst: Target, dst_repo: str, desc: Descriptor,
              progress: Progress | None = None, *, link: bool = False) -> None:
    """One blob from ``src`` to ``dst`` unless there: mounted within a store, else streamed and verified. Into a
    layout the bytes go through its ingest area, so an interrupted copy (or pull) resumes where it stopped; from a
    layout into a layout they are materialised (:meth:`LayoutTarget.materialise`: hardlink with ``link``, reflink,
    else a verified copy)."""
    if dst.has_blob(dst_repo, desc):
        return
    if dst.same_store(src) and dst.mount_blob(dst_repo, desc, src_repo):
        return
    if progress is None:
        _copy_one(src, src_repo, dst, dst_repo, desc, None, link)
        return
    with progress.transfer(desc.title or desc.digest[7:19], desc.digest, desc.size) as cb:
        _copy_one(src, src_repo, dst, dst_repo, desc, cb, link)


def _copy_one(src: Target, src_repo: str, dst: Target, dst_repo: str, desc: Descriptor,
              cb: Callable[[int], None] | None, link: bool) -> None:
    if isinstance(dst, LayoutTarget):
        if isinstance(src, LayoutTarget) and dst.materialise(src, desc, link=link):
            if cb:
                cb(desc.size)
            return
        src.fetch_blob(src_repo, desc, dst.blob_path(desc.digest), cb, ingest=dst.ingest)
    else:
        dst.push_blob_stream(dst_repo, desc, lambda: src.open_blob(src_repo, desc), cb)


def copy_blobs(src: Target, src_repo: str, dst: Target, dst_repo: str, descs: Sequence[Descriptor],
               concurrency: int = 4, progress: Progress | None = None, *, link: bool = False) -> None:
    """:func:`copy_blob` for each distinct blob of ``descs``, in parallel (copy, and pull into its staging store)."""
    parallel(lambda d: copy_blob(src, src_repo, dst, dst_repo, d, progress, link=link), _unique(descs), concurrency)


def copy_graph(src: Target, src_repo: str, dst: Target, dst_repo: str, root: Descriptor, *,
               tag: str | None = None, concurrency: int = 4, progress: Progress | None = None,
               referrers: bool = False) -> Content:
    """Copy ``root`` (a manifest or index) and all it references; tag it at the destination if asked.

    With ``referrers``, manifests that refer to ``root`` (signatures, attestations, provenance, reports) are copied
    too, recursively, and attached at the destination (through the referrers API or the tag-schema index, which is
    updated once per subject for all of them). The graph is discovered first, iteratively, with a visited set and
    the :data:`ociart.limits.GRAPH_DEPTH` / :data:`ociart.limits.GRAPH_MANIFESTS` bounds, so a refused graph writes nothing.
    """
    seen = {root.digest}
    order = [root]  # graph roots in copy order: subjects before their referrers (breadth first)
    level = [root]
    depth = 0
    while referrers and level:
        depth += 1
        nxt: list[Descriptor] = []
        for d in level:
            for ref in list_referrers(src, src_repo, d.digest):
                if ref.digest in seen:
                    continue
                if depth > limits.GRAPH_DEPTH:
                    raise TooLargeError(f"{root.digest}: referrers nest deeper than {limits.GRAPH_DEPTH} levels; "
                                        f"copy with --no-referrers")
                seen.add(ref.digest)
                nxt.append(ref)
                if len(seen) > limits.GRAPH_MANIFESTS:
                    raise TooLargeError(f"{root.digest}: more than {limits.GRAPH_MANIFESTS} referrers; copy with "
                                        f"--no-referrers")
        order += nxt
        level = nxt
    with dst.writing():
        content = _copy_tree(src, src_repo, dst, dst_repo, root, tag, concurrency, progress)
        attached = [_copy_tree(src, src_repo, dst, dst_repo, d, None, concurrency, progress, write_referrer=False)
                    for d in order[1:]]
        attach_many(dst, dst_repo, [c for c in attached if c.parse().subject is not None])
    return content


def _copy_tree(src: Target, src_repo: str, dst: Target, dst_repo: str, root: Descriptor, tag: str | None,
               concurrency: int, progress: Progress | None, *, write_referrer: bool = True) -> Content:
    """Copy one manifest and, for an index, its children first (iteratively, bounded like the referrer walk).
    The manifest itself is written unless it is an untagged referrer and ``write_referrer`` is False (the
    caller batches those)."""
    stack: list[tuple[Descriptor, int, Content | None]] = [(root, 0, None)]
    result: Content | None = None
    count = 0
    while stack:
        desc, depth, content = stack.pop()
        if content is None:  # first visit: fetch, then its children (if any) before it
            count += 1
            if depth > limits.GRAPH_DEPTH or count > limits.GRAPH_MANIFESTS:
                raise TooLargeError(f"{root.digest}: index nests deeper than {limits.GRAPH_DEPTH} levels or holds more "
                                    f"than {limits.GRAPH_MANIFESTS} manifests")
            content = src.get_manifest(src_repo, desc.digest)
            node = content.parse()
            stack.append((desc, depth, content))
            if isinstance(node, Index):
                stack += [(child, depth + 1, None) for child in reversed(node.manifests)]
            else:
                copy_blobs(src, src_repo, dst, dst_repo, [node.config, *node.layers], concurrency, progress)
            continue
        node = content.parse()
        if desc is root:
            result = content
            if node.subject is not None:  # a referrer stays attached even when also tagged
                if write_referrer or tag is not None:
                    attach(dst, dst_repo, content, tag)
                continue
        elif node.subject is not None:
            attach(dst, dst_repo, content)
            continue
        dst.put_manifest(dst_repo, content, tag if desc is root else None)
    assert result is not None
    return result


def push_manifest(target: Target, repo: str, *, artifact_type: str | None, layers: Sequence[Descriptor],
                  config: Content | Descriptor | None = None, subject: Descriptor | None = None,
                  annotations: Mapping[str, str] | None = None, tag: str | None = None) -> Content:
    """The one manifest builder: store the config (``None``: the empty JSON ``{}``; a :class:`Descriptor`: already
    stored), build the OCI image manifest over ``layers`` (blobs already stored) and write it through the one
    write path, attached as a referrer of ``subject`` (which then needs an ``artifact_type``) when given."""
    if subject is not None and not artifact_type:
        raise UsageError("a manifest with a subject (a referrer) needs an artifactType")
    with target.writing():
        if config is None:
            config = Content.of(EMPTY_JSON, OCI_EMPTY)
        if isinstance(config, Content):
            config_desc = Descriptor(mediaType=config.media_type, digest=config.digest, size=config.size)
            target.push_blob_stream(repo, config_desc, bytes_opener(config.data))
        else:
            config_desc = config
        manifest = Manifest(artifactType=artifact_type or None, config=config_desc, layers=list(layers),
                            subject=Descriptor(mediaType=subject.mediaType, digest=subject.digest, size=subject.size)
                            if subject is not None else None,
                            annotations=dict(annotations) if annotations else None)
        content = Content.from_model(manifest)
        if subject is not None:
            attach(target, repo, content, tag)
        else:
            target.put_manifest(repo, content, tag)
    return content


def _unique(descs: Sequence[Descriptor]) -> list[Descriptor]:
    seen: dict[str, Descriptor] = {}
    for d in descs:
        seen.setdefault(d.digest, d)
    return list(seen.values())


# -- push -------------------------------------------------------------------------------------------
@dataclass
class FileSpec:
    path: Path
    title: str
    media_type: str = DEFAULT_FILE_TYPE


def check_local_file(root: Path, path: Path, rel: str, real_root: str, follow_symlinks: bool) -> None:
    """A file to push, titled ``rel``: the title must be UTF-8 (OCI titles are), and unless ``follow_symlinks`` the
    file must not be reached through a symlink that leaves the pushed directory ``root`` (resolved: ``real_root``)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"file name '{escaped_name(path)}' is not valid UTF-8: rename it to push it") from None
    if not follow_symlinks:
        real = os.path.realpath(path)
        if os.path.commonpath([real, real_root]) != real_root:
            raise UsageError(f"{escaped_name(path)} is reached through a symlink that leaves {escaped_name(root)} "
                             f"(to {escaped_name(real)}); refusing to push it (--follow-symlinks to push it anyway)")


def collect_files(paths: Sequence[str | Path], cwd: Path | None = None, *,
                  follow_symlinks: bool = False) -> list[FileSpec]:
    """Expand push arguments: a directory contributes its files titled relative to itself; a file is
    titled by its path relative to the current directory. Titles must be unique and safe. A symlink inside a
    directory that leads outside it is refused unless ``follow_symlinks``."""
    cwd = cwd or Path.cwd()
    specs: list[FileSpec] = []
    for arg in paths:
        p = Path(arg)
        if not p.exists():
            raise NotFoundError(f"{arg}: no such file or directory")
        if p.is_dir():
            real_root = os.path.realpath(p)
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for name in sorted(files):
                    f = Path(root) / name
                    if f.is_file():
                        rel = f.relative_to(p).as_posix()
                        check_local_file(p, f, rel, real_root, follow_symlinks)
                        specs.append(FileSpec(f, rel))
        elif p.is_file():
            try:
                title = p.resolve().relative_to(cwd.resolve()).as_posix()
            except ValueError:
                title = p.name
            check_local_file(p.parent, p, title, "", True)
            specs.append(FileSpec(p, title))
        else:
            raise UsageError(f"{arg}: not a regular file or directory")
    seen: set[str] = set()
    for s in specs:
        safe_relpath(s.title)
        if s.title in seen:
            raise UsageError(f"two files would both be titled {s.title!r}")
        seen.add(s.title)
    if not specs:
        raise UsageError("nothing to push: no files found")
    return specs


def push_file_encrypted(target: Target, repo: str, path: Path, media_type: str, annotations: dict[str, str] | None,
                        plan: EncryptionPlan, cache: DigestCache, progress: Progress | None, label: str,
                        expected: StatKey | None = None) -> tuple[Descriptor, str]:
    """Push one file as an encrypted layer (:func:`ociart.encryption.push_encrypted`: a fresh layer key, so nothing
    is skipped or mounted); returns its descriptor and the plaintext digest, which the digest cache learns. The file
    must be unchanged at the end, as in :func:`push_file_cached`."""
    from .encryption import push_encrypted
    from .targets.base import file_opener

    before = expected or stat_key(path)
    if before is None:
        raise NotFoundError(f"{path}: no such file")
    cb = progress.task(label, before[3]) if progress else None
    desc, plain = push_encrypted(target, repo, media_type, annotations, file_opener(path), plan.recipients, cb)
    check_unchanged(path, before)
    known = cache.get(path)
    if known is None or known[0] != plain:
        cache.put(path, plain, before)
    return desc, plain


#: A blob this large whose digest is not cached is hashed while it is sent, never before (one read of the file),
#: even where a pre-pass could find it already in the repository: re-pushes of the same path are the digest cache's.
#: Smaller ones in a repository that has versions are hashed first, so an unchanged file in a new directory is
#: skipped (reading a few MiB twice costs less than one upload request).
PREHASH_MAX_BYTES = 16 << 20


def push_file_cached(target: Target, repo: str, path: Path, media_type: str, cache: DigestCache, prehash: bool,
                     progress: Progress | None, label: str, expected: StatKey | None = None) -> Descriptor:
    """Push one file, using the digest cache: a known digest is HEAD-checked and skipped when present; an unknown
    one is hashed first when ``prehash`` and the file is under :data:`PREHASH_MAX_BYTES` (so blobs the repository
    already has are skipped), else while sending (one read).

    ``expected`` is the stat the caller built metadata from (default: taken now). When the upload ends the file must
    still have it (:func:`~ociart.cache.check_unchanged`): a file that shrank, grew, vanished or was rewritten fails
    the push before any manifest is written. A cached digest the registry refuses (``DIGEST_INVALID``) is dropped,
    the file re-hashed and the upload retried once."""
    before = expected or stat_key(path)
    if before is None:
        raise NotFoundError(f"{path}: no such file")
    known = cache.get(path)
    from_cache = known is not None
    if known is None and prehash and before[3] < PREHASH_MAX_BYTES:
        known = sha256_file(path)
        cache.put(path, known[0], before)
    desc = Descriptor(mediaType=media_type, digest=known[0], size=known[1]) if known else None
    cb = progress.task(label, before[3]) if progress else None
    try:
        out = target.push_blob_file(repo, path, desc, cb, media_type)
    except DigestMismatchError as exc:
        if not from_cache or known is None:
            raise
        cache.drop(path)
        log.warning("%s: the registry refused the cached digest %s (%s); dropped it from the digest cache, "
                    "re-hashing and retrying once", path, known[0], exc)
        known, from_cache = sha256_file(path), False
        out = target.push_blob_file(repo, path, Descriptor(mediaType=media_type, digest=known[0], size=known[1]),
                                    cb, media_type)
    check_unchanged(path, before)
    if not from_cache:
        cache.put(path, out.digest, before)
    return out


def push_files(target: Target, repo: str, tag: str | None, files: Sequence[FileSpec], *,
               artifact_type: str | None = None, annotations: dict[str, str] | None = None,
               config: tuple[Path, str] | None = None, concurrency: int = 4,
               progress: Progress | None = None, cache: DigestCache | None = None,
               manifest_annotations_extra: dict[str, str] | None = None, prehash: bool = False,
               encryption: EncryptionPlan | None = None) -> Content:
    """One layer per file (``encryption``: the layers it selects are encrypted; the config never is)."""
    cache = cache if cache is not None else DigestCache()

    def push_one(path: Path, media_type: str, annotations: dict[str, str] | None,
                 encrypt: bool = False) -> Descriptor:
        if encrypt and encryption is not None and encryption.selects(media_type):
            return push_file_encrypted(target, repo, path, media_type, annotations, encryption, cache, progress,
                                       path.name)[0]
        out = push_file_cached(target, repo, path, media_type, cache, prehash, progress, path.name)
        return Descriptor(mediaType=media_type, digest=out.digest, size=out.size, annotations=annotations)

    if encryption is not None:
        encryption.require_any([f.media_type for f in files])
    with target.writing():
        layers = parallel(lambda f: push_one(f.path, f.media_type, {ANNOTATION_TITLE: f.title}, True), files,
                          concurrency)
        config_desc = push_one(config[0], config[1], None) if config is not None else None
        if config is None and not artifact_type:
            artifact_type = DEFAULT_ARTIFACT_TYPE
        return push_manifest(target, repo, artifact_type=artifact_type, layers=layers, config=config_desc, tag=tag,
                             annotations={**(manifest_annotations_extra or {}), **(annotations or {})})


