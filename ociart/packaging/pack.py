"""Directory -> typed artifact: plan the layers, push them (deduplicated), write config and manifest."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..cache import DigestCache, StatKey, check_unchanged, is_racy, key_of
from ..errors import UsageError
from ..oci.digest import Digester
from ..oci import EMPTY_JSON_DIGEST, OCI_LAYER, Content, Descriptor
from ..progress import Progress
from ..targets.base import Target
from ..transfer import (PREHASH_MAX_BYTES, check_local_file, parallel, push_file_cached, push_file_encrypted,
                        push_manifest)
from .kinds import (
    KIND_SPECS,
    REPORT_METRICS,
    WEIGHT,
    WEIGHT_CONFIG,
    Kind,
    classify,
    layer_media_type,
    weight_format,
)
from .metadata import (
    A_FILE_METADATA,
    A_FILEPATH,
    A_TITLE,
    A_UNTESTED,
    METADATA_FILE,
    Metadata,
    build_config,
    created_timestamp,
    file_metadata,
    manifest_annotations,
)
from .tarlayer import BLOCK, TarMember, iter_tar, normal_mode

if TYPE_CHECKING:
    from ..encryption import EncryptionPlan

#: Files under this size that share a directory and a role are packed into one tar layer.
DEFAULT_SMALL_FILE_THRESHOLD = 1 << 20
#: Version of the tar writer; part of the tar digest-cache key.
TAR_FORMAT_VERSION = "1"


@dataclass(slots=True)
class FileEntry:
    path: str  # absolute
    rel: str
    size: int
    mode: int
    role: str
    untested: bool
    stat: StatKey


@dataclass
class LayerPlan:
    """One raw file, or a tar of several small files of one role (docs/spec.md §2.2)."""

    role: str
    filepath: str
    files: list[FileEntry] = field(default_factory=list)
    tar: bool = False


@dataclass
class PackPlan:
    kind: Kind
    layers: list[LayerPlan]
    files: int
    size: int
    newest_mtime: float | None


def walk(root: Path, follow_symlinks: bool = False) -> list[tuple[str, str, os.stat_result]]:
    """Regular files under ``root`` as (absolute path, relative ``/``-path, stat), sorted by the relative path's
    UTF-8 bytes. Symlinks inside ``root`` are followed and stored as regular files, loops refused; a file reached
    through a symlink leading outside ``root`` is refused unless ``follow_symlinks``. ``realpath`` runs once per
    directory and per symlink, not per file: a plain file in a directory inside ``root`` is inside ``root``."""
    out: list[tuple[str, str, os.stat_result]] = []
    seen_dirs: set[str] = set()
    top = os.path.abspath(root)
    real_root = os.path.realpath(top)

    def visit(dirpath: str, rel_dir: str) -> None:
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            raise UsageError(f"{dirpath}: directory symlink loop")
        seen_dirs.add(real)
        inside = real == real_root or real.startswith(real_root.rstrip("/") + "/")
        try:
            with os.scandir(dirpath) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise UsageError(f"{dirpath}: cannot read directory ({exc.strerror or exc})") from None
        for ent in found:
            rel = f"{rel_dir}/{ent.name}" if rel_dir else ent.name
            link = ent.is_symlink()
            try:
                isdir = ent.is_dir()
            except OSError:
                isdir = False
            if isdir:
                visit(ent.path, rel)
                continue
            if link or not inside or not rel.isascii():
                check_local_file(root, Path(ent.path), rel, real_root, follow_symlinks)
            if rel == METADATA_FILE:
                continue
            try:
                st = ent.stat()
            except FileNotFoundError:
                raise UsageError(f"{ent.path}: broken symlink") from None
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(f"{ent.path}: not a regular file (devices, FIFOs and sockets cannot be packed)")
            out.append((ent.path, rel, st))

    visit(top, "")
    out.sort(key=lambda t: t[1].encode())
    return out


#: Roughly the most file bytes (with their tar headers) that small files of several directories share a tar
#: layer with (docs/spec.md §2.2).
GROUP_BYTES = 64 << 20


def _tar_bytes(e: FileEntry) -> int:
    return BLOCK + e.size + (-e.size % BLOCK)


def _anchor(name: str) -> bool:
    """A name after which a group may end early (one in four, by its hash): cuts that depend on names, not on
    what came before, so an edit moves the boundaries of its own group only."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()[0] < 64


def _groups(files: list[FileEntry], cap: int) -> list[list[FileEntry]]:
    """Cut the small files of one role into tar groups (docs/spec.md §2.2): a directory whose files, all the way
    down, add up to at most ``cap`` tar bytes stays in one group; siblings (files and such directories, in byte
    order of their names) share a group until it would exceed ``cap``, or at an anchor name once it holds a
    quarter of ``cap``; a directory over ``cap`` is cut the same way inside."""
    tree: dict[str, dict] = {}  # name -> subtree (dict) or FileEntry
    for e in files:
        node = tree
        *dirs, leaf = e.rel.split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = e
    sizes: dict[int, int] = {}

    def total(node: dict) -> int:
        n = sum(total(v) if isinstance(v, dict) else _tar_bytes(v) for v in node.values())
        sizes[id(node)] = n
        return n

    def flat(node: dict) -> list[FileEntry]:
        return [x for v in node.values() for x in (flat(v) if isinstance(v, dict) else [v])]

    out: list[list[FileEntry]] = []

    def cut(node: dict) -> None:
        cur: list[FileEntry] = []
        acc = 0
        for name in sorted(node, key=lambda k: k.encode("utf-8", "surrogateescape")):
            child = node[name]
            size = sizes[id(child)] if isinstance(child, dict) else _tar_bytes(child)
            if isinstance(child, dict) and size > cap:
                if cur:
                    out.append(cur)
                cur, acc = [], 0
                cut(child)
                continue
            if cur and (acc + size > cap or (acc >= cap // 4 and _anchor(name))):
                out.append(cur)
                cur, acc = [], 0
            cur.extend(flat(child) if isinstance(child, dict) else [child])
            acc += size
        if cur:
            out.append(cur)

    if total(tree) <= cap:
        return [flat(tree)]
    cut(tree)
    return out


def plan(root: Path, kind: Kind, threshold: int = DEFAULT_SMALL_FILE_THRESHOLD,
         follow_symlinks: bool = False, group_bytes: int | None = None) -> PackPlan:
    if not root.is_dir():
        raise UsageError(f"{root}: --kind {kind.value} needs a directory")
    entries: list[FileEntry] = []
    for path, rel, st in walk(root, follow_symlinks):
        role, untested = classify(kind, rel, bool(st.st_mode & 0o100))
        entries.append(FileEntry(path, rel, st.st_size, normal_mode(st.st_mode), role, untested, key_of(path, st)))
    if not entries:
        raise UsageError(f"{root}: no files to pack")
    small: dict[str, list[FileEntry]] = {}
    layers: list[LayerPlan] = []
    for e in entries:
        # weights and their configs stay raw, where ModelPack readers look them up by filepath
        if kind is not Kind.REPORT and e.role not in (WEIGHT, WEIGHT_CONFIG) and e.size < threshold:
            small.setdefault(e.role, []).append(e)
        else:
            layers.append(LayerPlan(e.role, e.rel, [e]))
    for role, files in small.items():
        for members in _groups(files, group_bytes or GROUP_BYTES):
            if len(members) == 1:
                layers.append(LayerPlan(role, members[0].rel, members))
            else:
                where = os.path.commonpath([os.path.dirname(m.rel) for m in members]) or "."
                layers.append(LayerPlan(role, where, members, tar=True))
    layers.sort(key=lambda lp: (lp.filepath.encode(), lp.tar, lp.role, lp.files[0].rel.encode()))
    newest = max(e.stat[4] for e in entries) / 1e9  # mtime_ns from the walk's stat
    return PackPlan(kind, layers, len(entries), sum(e.size for e in entries), newest)


def report_metrics(root: Path) -> dict[str, float]:
    """Top-level numbers of a report's ``metrics.json`` (nested values stay in the file only)."""
    path = root / "metrics.json"
    if not path.is_file() or path.stat().st_size > 1 << 20:
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _raw_media_type(kind: Kind, e: FileEntry) -> str:
    if kind is Kind.REPORT:
        if os.path.basename(e.rel) == "metrics.json":
            return REPORT_METRICS
        guessed, _ = mimetypes.guess_type(e.rel)
        return guessed or ("text/markdown" if e.rel.endswith(".md") else "application/octet-stream")
    return layer_media_type(kind, e.role, "raw")


def _tar_key(layer: LayerPlan, prefix: str = "") -> str | None:
    keys = [(m.rel, *m.stat, m.mode) for m in layer.files]
    if any(is_racy(m.stat) for m in layer.files):
        return None
    scope = ("image:" + prefix + ":") if prefix else ""
    return "tar" + TAR_FORMAT_VERSION + ":" + scope + hashlib.sha256(json.dumps(keys).encode()).hexdigest()


def push_layer(target: Target, repo: str, kind: Kind, layer: LayerPlan, cache: DigestCache,
               progress: Progress | None, prehash: bool = False, image_prefix: str | None = None,
               encryption: EncryptionPlan | None = None) -> tuple[Descriptor, str]:
    """Push one layer; returns its descriptor and its plaintext digest (the ModelPack ``diffId`` and the image
    form's ``rootfs.diff_ids``: the same unless the layer is encrypted). ``prehash``: hash layers under
    :data:`~ociart.transfer.PREHASH_MAX_BYTES` the cache does not know before sending, so blobs the repository
    already has (an earlier version in another directory) are skipped instead of streamed; larger ones are hashed
    while they are sent (read once).

    ``image_prefix`` (the image form, :mod:`ociart.packaging.image`): every layer, a single file too, is an
    uncompressed tar (``application/vnd.oci.image.layer.v1.tar``) whose members are named ``prefix/<path>``.
    ``encryption``: the layers it selects (by their role, in both forms) are encrypted (:mod:`ociart.encryption`)
    with fresh keys."""
    if not layer.tar and image_prefix is None:
        e = layer.files[0]
        media_type = _raw_media_type(kind, e)
        annotations = {A_TITLE: e.rel, A_FILEPATH: e.rel,
                       A_FILE_METADATA: file_metadata(os.path.basename(e.rel), e.mode, e.size)}
        if e.untested:
            annotations[A_UNTESTED] = "true"
        if encryption is not None and encryption.selects(media_type):
            return push_file_encrypted(target, repo, Path(e.path), media_type, annotations, encryption, cache, progress,
                                       e.rel, e.stat)
        out = push_file_cached(target, repo, Path(e.path), media_type, cache, prehash, progress, e.rel, e.stat)
        return Descriptor(mediaType=out.mediaType, digest=out.digest, size=out.size, annotations=annotations), \
            out.digest
    prefix = (image_prefix + "/") if image_prefix else ""
    # each member is checked against the walk's stat as it is read (tarlayer._read_fd): what is sent is what the
    # tar headers and the digest-cache key describe
    members = [TarMember(m.path, prefix + m.rel, m.size, m.mode, stat=m.stat) for m in layer.files]
    role_type = _role_media_type(kind, layer)
    media_type = OCI_LAYER if image_prefix is not None else role_type

    def opener():  # type: ignore[no-untyped-def]
        from contextlib import contextmanager

        @contextmanager
        def cm():  # type: ignore[no-untyped-def]
            yield iter_tar(members)

        return cm()

    annotations = {A_FILEPATH: layer.filepath}  # the image form: for inspect (pull reads the members' names)
    if image_prefix is None and any(m.untested for m in layer.files):
        annotations[A_UNTESTED] = "true"
    if encryption is not None and encryption.selects(role_type):
        from ..encryption import push_encrypted

        cb = progress.task(layer.filepath, sum(m.size for m in layer.files)) if progress else None
        return push_encrypted(target, repo, media_type, annotations, opener, encryption.recipients, cb)
    key = _tar_key(layer, prefix)
    known = cached = cache.get_key(key) if key else None
    if known is None and prehash and sum(m.size for m in layer.files) < PREHASH_MAX_BYTES:
        d = Digester()
        for chunk in iter_tar(members):
            d.update(chunk)
        known = (d.digest, d.size)
        if key:
            cache.put_key(key, d.digest, d.size)
    if known:
        out = Descriptor(mediaType=media_type, digest=known[0], size=known[1])
        target.push_blob_stream(repo, out, opener)
        if cached is not None:  # the registry may hold the blob already: then no member was read (and checked)
            for m in layer.files:
                check_unchanged(m.path, m.stat)
    else:
        out = target.push_blob_chunks(repo, opener, media_type)
        if key:  # every member matched the stats in the key as it was read (tarlayer._read_fd)
            cache.put_key(key, out.digest, out.size)
    return Descriptor(mediaType=media_type, digest=out.digest, size=out.size, annotations=annotations), out.digest


def _role_media_type(kind: Kind, layer: LayerPlan) -> str:
    """The artifact-form media type of a planned layer: what --encrypt-filter chooses by, in both forms."""
    return _raw_media_type(kind, layer.files[0]) if not layer.tar else layer_media_type(kind, layer.role, "tar")


def push_directory(target: Target, repo: str, tag: str | None, root: Path, kind: Kind, meta: Metadata, *,
                   reproducible: bool = False, threshold: int = DEFAULT_SMALL_FILE_THRESHOLD,
                   annotations: dict[str, str] | None = None, base_annotations: dict[str, str] | None = None,
                   subject: Descriptor | None = None, prehash: bool = False, concurrency: int = 4,
                   progress: Progress | None = None, cache: DigestCache | None = None,
                   follow_symlinks: bool = False, encryption: EncryptionPlan | None = None) -> Content:
    """Pack ``root`` as an artifact of ``kind`` and push it; returns the manifest content.

    ``base_annotations`` (lineage) are overridden by metadata annotations, which ``annotations`` override.
    With ``subject`` (a report's evaluated model) the manifest is also attached as a referrer of it.
    ``encryption``: encrypt the layers it selects (weights and datasets by default); the config stays readable and
    its ``diffIds`` name the plaintext digests.
    """
    cache = cache if cache is not None else DigestCache()
    p = plan(root, kind, threshold, follow_symlinks)
    if kind is Kind.REPORT:
        meta = meta.model_copy(update={"metrics": {**report_metrics(root), **meta.metrics}})
    if encryption is not None:
        encryption.require_any([_role_media_type(kind, lp) for lp in p.layers])
    with target.writing():
        pushed = parallel(lambda lp: push_layer(target, repo, kind, lp, cache, progress, prehash,
                                                encryption=encryption),
                          p.layers, concurrency)
        descs = [d for d, _ in pushed]
        created = created_timestamp(reproducible, p.newest_mtime)
        spec = KIND_SPECS[kind]
        config: Content | None = None
        if spec.config_media_type is not None:
            weights = [e.rel for lp in p.layers for e in lp.files if e.role == "weight"]
            config_bytes = build_config(kind.value, meta, created, [diff for _, diff in pushed], p.files, p.size,
                                        weight_format(weights))
            config = Content.of(config_bytes, spec.config_media_type)
            if config.digest == EMPTY_JSON_DIGEST:
                config = None  # the empty JSON is typed application/vnd.oci.empty.v1+json
        return push_manifest(target, repo, artifact_type=spec.artifact_type, layers=descs, config=config,
                             subject=subject, tag=tag,
                             annotations={**(base_annotations or {}), **manifest_annotations(kind.value, meta, created),
                                          **(annotations or {})})

