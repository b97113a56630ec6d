"""Artifact -> directory: choose layers (by category and glob), fetch them verified, restore the tree.

Understands ociart and ModelPack layers (``org.cncf.model.filepath``, raw or tar, file modes), KitOps ModelKits
(tar layers holding paths relative to the pack root) and plain ORAS artifacts (``org.opencontainers.image.title``).
Everything is fetched and extracted into a staging directory inside the target; files move into place only when
every blob is verified and every tar member has passed the safety checks.
"""

from __future__ import annotations

import dataclasses
import fcntl
import fnmatch
import json
import os
import posixpath
import re
import stat
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from pydantic import BaseModel

from .. import limits
from ..encryption import (DecryptionKey, LayerSecret, decrypt_file, is_encrypted, plain_media_type,
                          unwrap)
from ..errors import (AuthError, DecryptionError, Interrupted, InvalidContentError, LocalIOError, NetworkError,
                      OverwriteError, UnsafePathError, UsageError)
from ..oci import Descriptor, Manifest
from ..oci.mediatypes import IMAGE_CONFIG_TYPES, IMAGE_LAYER_TYPES
from ..oci.digest import sha256_file
from ..progress import Progress
from ..safepath import DirTree, safe_dest, safe_relpath
from ..targets.base import Target
from ..targets.layout import LayoutTarget
from ..transfer import copy_blobs, parallel
from .foreign import restored_names
from .kinds import FILTERS, category, is_tar
from .metadata import A_FILE_METADATA, A_FILEPATH, A_TITLE
from .tarlayer import Budget, changeset, extract, member_digests, tar_mode

LEGACY_FILEPATH = "org.cnai.model.filepath"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
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
    #: a filesystem changeset (an image layer type): applied in order with the other image layers, whiteouts too
    image: bool = False

    @property
    def tar(self) -> bool:
        return self.rel is None


@dataclass(frozen=True)
class ImageView:
    """How to read an image's layers: files are taken from under ``prefix`` (``models`` for ``/models``; ``""``:
    the whole tree) and renamed relative to it; the first ``skip`` layers (a ``--base`` image's) are not fetched."""

    prefix: str
    skip: int = 0

    def scope(self, name: str) -> bool:
        return not self.prefix or name.startswith(self.prefix + "/")

    def strip(self, name: str) -> str:
        return name[len(self.prefix) + 1:] if self.prefix else name


def image_view(target: Target, repo: str, manifest: Manifest) -> ImageView | None:
    """How to read an image: None unless the config is an image config and a layer has an image layer media type.
    In an image every such layer is a filesystem changeset, whatever its annotations say (olot titles each one with
    its file's name); the mount path and base layer count come from the labels (the image form's
    ``dev.ociart.mount-path`` and ``dev.ociart.base-layers``), else the mount path is KServe's ``/models``.
    In an artifact (any other config) a titled layer stays a file, as ORAS writes them: oras-py gives plain files
    the type ``application/vnd.oci.image.layer.v1.tar``."""
    if manifest.config.mediaType not in IMAGE_CONFIG_TYPES or not any(
            plain_media_type(layer.mediaType) in IMAGE_LAYER_TYPES for layer in manifest.layers):  # or encrypted
        return None
    from ..signing.common import read_verified_blob
    from .image import DEFAULT_MOUNT_PATH, L_BASE_LAYERS, L_MOUNT_PATH, image_labels, mount_path

    raw = read_verified_blob(target, repo, manifest.config, limits.CONFIG_BYTES,
                             f"image config {manifest.config.digest}")
    labels = image_labels(raw)
    try:
        mount = mount_path(labels.get(L_MOUNT_PATH, DEFAULT_MOUNT_PATH))
        skip = int(labels.get(L_BASE_LAYERS, "0"))
    except (UsageError, ValueError):
        raise InvalidContentError(f"image config {manifest.config.digest}: malformed {L_MOUNT_PATH} or "
                                  f"{L_BASE_LAYERS} label") from None
    if not 0 <= skip <= len(manifest.layers):
        raise InvalidContentError(f"image config {manifest.config.digest}: {L_BASE_LAYERS}={skip} but the image has "
                                  f"{len(manifest.layers)} layers")
    return ImageView(mount.lstrip("/"), skip)


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


def select(manifest: Manifest, filters: Sequence[str] = (), include: Sequence[str] = (),
           view: ImageView | None = None) -> list[Entry]:
    """Layers to fetch. Tar layers are kept whole here (unless no member under their filepath can match
    ``include``); ``include`` applies to their members at extraction. With ``view``, the layers after its ``skip``
    first ones that have an image layer type are image entries (filters and globs apply to their members)."""
    wanted = set(check_filters(filters))
    match = _matcher(include)
    chosen: list[Entry] = []
    names: set[str] = set()
    fixed = restored_names(manifest, {i for i, layer in enumerate(manifest.layers) if layer_path(layer)})
    for i, layer in enumerate(manifest.layers):
        if view is not None and plain_media_type(layer.mediaType) in IMAGE_LAYER_TYPES:
            if i >= view.skip:
                chosen.append(Entry(layer, None, image=True))
            continue
        if wanted and category(layer.mediaType) not in wanted:
            continue
        ann = layer.annotations or {}
        path = layer_path(layer) or fixed.get(i)
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


def layer_limit(desc: Descriptor) -> int:
    """The most a tar layer may restore: its size, times :data:`ociart.limits.GZIP_RATIO` when gzip-compressed."""
    return desc.size * limits.GZIP_RATIO if tar_mode(desc.mediaType) == "r:gz" else desc.size


def pull(target: Target, repo: str, manifest: Manifest, out_dir: Path, *, filters: Sequence[str] = (),
         include: Sequence[str] = (), overwrite: bool = False, concurrency: int = 4,
         progress: Progress | None = None, max_size: int | None = None,
         cleaned: list[str] | None = None, staging: str | None = None,
         link: bool = False, view: ImageView | None = None,
         decryption_keys: Sequence[DecryptionKey] = ()) -> list[PulledFile]:
    """Copy the selected layers from ``target`` into the staging store ``out_dir/.ociart-pull`` (verified, resumable
    across processes), then restore files from it; nothing is moved into ``out_dir`` before everything checks out.

    What the pull writes is bounded by the sizes the artifact declares (raw layers: their size; tar layers:
    :func:`layer_limit`) or, when given, by ``max_size`` bytes in all. What a killed earlier pull left in the staging
    store and is not kept for resume is removed and named in ``cleaned``. ``staging``: the staging store's path
    inside ``out_dir`` (fetch uses ``.ociart/staging``); ``link``: from a layout ``target`` (a fetch's download
    store or node cache) blobs may be hardlinked into the staging store (:func:`ociart.transfer.copy_blob`).
    ``view``: how to read an image (:func:`image_view`), when the caller read its config from the origin (fetch's
    download store holds only the layers); else it is read from ``target`` here.
    Encrypted layers (ocicrypt) are opened with ``decryption_keys`` before anything is written and decrypted in the
    staging store (:func:`_decrypt_plan`).
    """
    view = view or image_view(target, repo, manifest)
    entries = select(manifest, filters, include, view)
    budget = Budget(max_size, "--max-size") if max_size is not None else None
    if budget is not None:
        for e in entries:
            if not e.tar:
                budget.take(e.desc.size, f"file {e.rel}")
    created = not out_dir.exists()
    if not created and not out_dir.is_dir():
        raise LocalIOError(f"output {out_dir} is not a directory")
    # a directory the pull makes, or an empty one of this user's that is no mount point, may be replaced by the
    # extracted tree (_adopt)
    # (not the working directory: a shell sitting in it would be left in the replaced, empty one)
    adopt = staging is None and (created or (not out_dir.is_symlink() and out_dir.stat().st_uid == os.getuid()
                                             and not os.path.ismount(out_dir) and not os.path.samefile(out_dir, ".")
                                             and not any(out_dir.iterdir())))
    cleaned = cleaned if cleaned is not None else []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalIOError(f"cannot create output directory {out_dir}: {exc.strerror or exc}") from None
    side = adopted_name(out_dir)
    try:
        st = os.lstat(side)  # an adoption killed halfway: the tree of a pull that never finished
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            shutil.rmtree(side)
            cleaned.append(str(side))
    except FileNotFoundError:
        pass
    try:
        return _restore(target, repo, entries, out_dir, _matcher(include), overwrite, concurrency, progress,
                        budget, cleaned, staging or STAGING, link, view, check_filters(filters), decryption_keys,
                        adopt=adopt)
    except BaseException:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # leave no trace of a failed pull
        raise


#: Pull's staging store inside the destination: an OCI layout whose ingest area holds resumable partial blobs.
STAGING = ".ociart-pull"
#: Failures after which the staging store stays for the next pull to resume; any other removes it.
RESUMABLE: tuple[type[BaseException], ...] = (NetworkError, AuthError, Interrupted, KeyboardInterrupt, SystemExit)


@contextmanager
def staging_store(out_dir: Path, wanted: Sequence[Descriptor],
                  cleaned: list[str] | None = None, staging: str = STAGING) -> Iterator[LayoutTarget]:
    """Lock and open ``out_dir/.ociart-pull`` as a layout holding only ``wanted`` blobs; removed again on leaving,
    unless the pull was interrupted by the network or a signal (:data:`RESUMABLE`).

    The lock (``flock`` on the directory) is held for the whole pull, so the staging store is stale exactly when
    its owner is gone: a concurrent pull of the same destination waits, never touches the live one. What a dead
    pull left is taken over: partial and whole blobs still wanted (re-verified) are kept for resume, everything
    else is removed and its name appended to ``cleaned``.
    """
    root = out_dir / staging
    removed: list[str] = cleaned if cleaned is not None else []
    while True:  # one pull at a time per destination; a finished one removes the directory under the next
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            raise UnsafePathError(f"{root} is a symlink or a file, not pull's staging directory: remove it")
        root.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)  # no symlink swapped in meanwhile
        if os.fstat(fd).st_uid != os.getuid():
            os.close(fd)
            raise UnsafePathError(f"{root} belongs to another user, not to this pull: remove it")
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(root).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    keep = False
    try:
        store = LayoutTarget(root, durable=False)  # blobs re-verified below; outputs fsynced by place()
        want = {d.digest: d.size for d in wanted}
        removed += [f"{staging}/{p.relative_to(root)}" for p in store.ingest.sweep(keep=set(want))]
        blobs = root / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        for name in sorted(os.listdir(root)):
            if name.startswith("restore-"):  # extraction trees of a killed pull
                shutil.rmtree(root / name, ignore_errors=True)
                removed.append(f"{staging}/{name}")
        for name in sorted(os.listdir(blobs)):
            path = blobs / name
            digest = "sha256:" + name
            if digest not in want or sha256_file(path) != (digest, want[digest]):  # re-verified, never trusted
                path.unlink()
                removed.append(f"{staging}/blobs/sha256/{name}")
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


def _check_dest(dest: Path, digest: str, size: int, overwrite: bool, mode: int | None = None) -> bool:
    """True when ``dest`` already holds exactly this content (and ``mode``, when given); raise when it holds
    something else. An identical file of another mode is replaced, never chmod-ed (it may be a hardlink to a file
    outside the target)."""
    if not dest.exists():
        return False
    if _same(dest, digest, size):
        return mode is None or (dest.lstat().st_mode & 0o777) == mode
    if dest.is_dir():
        raise OverwriteError(f"{dest} is a directory; cannot replace it with a file")
    if not overwrite:
        raise OverwriteError(f"{dest} exists with different content; use --overwrite to replace it")
    return False


def _restore(target: Target, repo: str, entries: list[Entry], out_dir: Path, match: Callable[[str], bool],
             overwrite: bool, concurrency: int, progress: Progress | None, budget: Budget | None,
             cleaned: list[str], staging_name: str = STAGING, link: bool = False, view: ImageView | None = None,
             filters: Sequence[str] = (), decryption_keys: Sequence[DecryptionKey] = (),
             adopt: bool = False) -> list[PulledFile]:
    """``adopt``: ``out_dir`` was made by this pull or found empty: the extracted tree may take its place whole
    (:func:`_adopt`)."""
    entries, encrypted = _decrypt_plan(entries, decryption_keys)
    results: list[PulledFile] = []
    fetch: dict[str, Descriptor] = {}
    raw_plan: list[tuple[Entry, Path]] = []
    checked: set[Path] = set()  # parent directories already found safe
    for e in entries:
        if e.tar:
            fetch[e.desc.digest] = e.desc
            continue
        assert e.rel is not None
        dest = safe_dest(out_dir, e.rel, checked)
        if _check_dest(dest, e.desc.digest, e.desc.size, overwrite, e.mode):
            results.append(PulledFile(path=str(e.rel), digest=e.desc.digest, size=e.desc.size, mode=e.mode,
                                      skipped=True))
            continue
        fetch[e.desc.digest] = e.desc
        raw_plan.append((e, dest))
    wanted = [encrypted[d.digest][0] if d.digest in encrypted else d for d in fetch.values()]
    with staging_store(out_dir, wanted, cleaned, staging_name) as store:
        copy_blobs(target, repo, store, "", wanted, concurrency, progress, link=link)

        def decrypt(digest: str) -> None:  # HMAC-checked, then in place of the ciphertext
            cipher_desc, secret = encrypted[digest]
            cipher_path = store.blob_path(cipher_desc.digest)
            decrypt_file(cipher_path, cipher_desc, secret, cipher_path.parent, name=digest.removeprefix("sha256:"),
                         strict=digest != cipher_desc.digest)
            if digest != cipher_desc.digest:
                cipher_path.unlink(missing_ok=True)

        parallel(decrypt, [d for d in fetch if d in encrypted], concurrency)
        staging = Path(tempfile.mkdtemp(prefix="restore-", dir=store.root))
        try:
            moves = _unpack_staged(staging, entries, raw_plan, results, out_dir, match, overwrite, budget, view,
                                   filters)
            if not (adopt and not raw_plan and not any(e.image for e in entries)
                    and _adopt(store.root, staging / TREES[0], out_dir)):
                place(store.root, out_dir, moves)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(results, key=lambda r: r.path)


def adopted_name(out_dir: Path) -> Path:
    """Where :func:`_adopt` puts the extracted tree for a moment: beside ``out_dir`` (its normalised absolute path,
    so ``.`` or ``a/..`` name the directory itself)."""
    out = Path(os.path.abspath(out_dir))
    return out.parent / f".{out.name}.ociart-pull-new"


def _adopt(store_root: Path, tree: Path, out_dir: Path) -> bool:
    """Make the extracted ``tree`` the output directory in three renames, when ``out_dir`` holds nothing but the
    staging store at ``store_root`` (the pull made it, or found it empty), keeping its mode and group: the tree
    goes beside ``out_dir``, the staging store (still locked, still in use) into the tree, and the tree over the
    then empty ``out_dir``, which ``rename`` replaces atomically: the whole directory appears at once, and not one
    file is renamed on its own. False, with everything put back, when any step fails (a name in the way,
    something written into ``out_dir`` meanwhile): the caller then moves entries one by one. A kill between the
    renames leaves ``.NAME.ociart-pull-new`` beside the output, which the next pull removes."""
    side = adopted_name(out_dir)
    if not tree.is_dir() or os.path.lexists(tree / store_root.name):
        return False
    try:
        st = os.stat(out_dir)
        os.chmod(tree, stat.S_IMODE(st.st_mode))  # the directory keeps its mode (setgid included) and group
        if os.stat(tree).st_gid != st.st_gid:
            os.chown(tree, -1, st.st_gid)
    except OSError:
        return False
    try:
        os.rename(tree, side)
    except OSError:
        return False
    try:
        os.rename(store_root, side / store_root.name)
    except OSError:
        os.rename(side, tree)
        return False
    try:
        os.rename(side, os.path.abspath(out_dir))
        return True
    except OSError:
        os.rename(side / store_root.name, store_root)
        os.rename(side, tree)
        return False


def _decrypt_plan(entries: list[Entry], keys: Sequence[DecryptionKey]
                  ) -> tuple[list[Entry], dict[str, tuple[Descriptor, LayerSecret]]]:
    """The restore-side hook of :mod:`ociart.encryption`: open every selected encrypted layer's key now, before
    anything is fetched or written (a missing or wrong key fails here), and describe the layer by its plaintext
    (digest from the wrapped options, the plain media type). Returns the entries so rewritten and, by plaintext
    digest, the ciphertext descriptor and layer secret to decrypt with once the ciphertext is staged. A tar layer
    keeps its ciphertext digest as its staged name: the plaintext digest in the wrapped options is the encryptor's
    unauthenticated claim (see :func:`ociart.encryption.decrypt_file`) and its members are what is restored."""
    out: list[Entry] = []
    encrypted: dict[str, tuple[Descriptor, LayerSecret]] = {}
    for e in entries:
        if not is_encrypted(e.desc):
            out.append(e)
            continue
        secret = LayerSecret.opened(e.desc, unwrap(e.desc, keys))
        digest = e.desc.digest  # a tar layer is staged under its ciphertext's name (its members are what counts)
        if not e.tar:  # a raw file is restored under the plaintext digest, which must then be right
            if not secret.plain_digest or not DIGEST_RE.match(secret.plain_digest):
                raise DecryptionError(f"layer {e.desc.digest}: its wrapped key names no sha256 plaintext digest")
            digest = secret.plain_digest
        plain = e.desc.model_copy(update={"mediaType": plain_media_type(e.desc.mediaType), "digest": digest})
        encrypted[plain.digest] = (e.desc, secret)
        out.append(dataclasses.replace(e, desc=plain))
    return out, encrypted


@dataclass(slots=True)
class Move:
    """Staged file (relative to the staging store) -> destination (relative to the output directory), ``/``-paths."""

    staged: str
    dest: str
    mode: int  # -1: keep the staged file's mode; DIRECTORY: a whole staged directory, new in the output
    copy: bool  # the blob serves more than one file: place a copy


DIRECTORY = -2


class DestDirs:
    """What the output directory already holds, listed once per directory: a pull into a fresh tree costs no
    ``stat`` per file. A parent that is a symlink or not a directory is refused (an early check before anything
    moves; :class:`~ociart.safepath.DirTree` enforces the same at placement, immune to a swap in between)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self._seen: dict[str, frozenset[str] | None] = {}

    def names(self, rel_dir: str, for_name: str) -> frozenset[str] | None:
        """The entries of ``rel_dir`` (``""``: the root); None when it does not exist yet."""
        if rel_dir in self._seen:
            return self._seen[rel_dir]
        path = os.path.join(self.root, rel_dir) if rel_dir else self.root
        out: frozenset[str] | None = None
        up, _, leaf = rel_dir.rpartition("/")
        if not rel_dir or leaf in (self.names(up, for_name) or ()):
            try:
                st = os.lstat(path)
                if not stat.S_ISDIR(st.st_mode):
                    raise UnsafePathError(f"{for_name}: parent {path} is a symlink or not a directory; refusing "
                                          f"to write through it")
                out = frozenset(os.listdir(path))
            except FileNotFoundError:
                out = None
        self._seen[rel_dir] = out
        return out


def _collisions(names: Sequence[str]) -> None:
    """Refuse a name that is a file in one place and a directory in another (raw ``x`` beside member ``x/y``)."""
    files = set(names)
    for name in sorted(files):
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in files:
                raise UnsafePathError(f"artifact has a file {parent!r} and a file {name!r} inside it "
                                      f"(colliding names)")


def _unpack_staged(staging: Path, entries: list[Entry], raw_plan: list[tuple[Entry, Path]],
                   results: list[PulledFile], out_dir: Path, match: Callable[[str], bool], overwrite: bool,
                   budget: Budget | None, view: ImageView | None = None,
                   filters: Sequence[str] = ()) -> list[Move]:
    """Extract tar layers (bounded) and check every destination and every name; returns what to move in place."""
    moves: list[Move] = []
    uses: dict[str, int] = {}
    for e, _ in raw_plan:
        uses[e.desc.digest] = uses.get(e.desc.digest, 0) + 1
    names = {str(e.rel) for e, _ in raw_plan} | {r.path for r in results}
    for e, _ in raw_plan:
        assert e.rel is not None
        moves.append(Move("blobs/sha256/" + e.desc.digest.removeprefix("sha256:"), str(e.rel), e.mode,
                          uses[e.desc.digest] > 1))
        results.append(PulledFile(path=str(e.rel), digest=e.desc.digest, size=e.desc.size, mode=e.mode))
    blobs = staging.parent / "blobs" / "sha256"
    image = [e for e in entries if e.image]
    owners = _overlay(blobs, image, view) if view is not None and image else {}
    keep = _member_filter(filters)
    nth_image = 0
    present = DestDirs(out_dir)
    fresh: list[tuple[int, str, str]] = []  # (tree, name, staged path) of the members to move
    for e in (x for x in entries if x.tar):
        # every layer into one tree (a name in two layers is a collision, found by the extraction), image layers
        # into another (their members are renamed by the view): so a new directory moves whole, whatever the
        # number of layers it came in
        i = 1 if e.image else 0
        tree = staging / TREES[i]
        staged = f"{staging.name}/{tree.name}"
        what = f"layer {e.desc.digest} ({layer_path(e.desc) or 'tar'})"
        want, scope, strip = match, None, _same_name
        if e.image and view is not None:
            want = partial(_image_wants, owners, nth_image, view, match, keep)
            scope, strip = view.scope, view.strip
            nth_image += 1
        for full, size, mode, digest in extract(blobs / e.desc.digest.removeprefix("sha256:"), tree,
                                                e.desc.mediaType, what, want, budget,
                                                None if budget is not None else layer_limit(e.desc), scope):
            name = strip(full)  # a member name: checked like safe_relpath's (tarlayer.check_members)
            if name in names:
                raise UnsafePathError(f"{what}: {name!r} is also in another layer (colliding names)")
            names.add(name)  # its length was checked by extract, under the longer staging path
            parent, _, leaf = name.rpartition("/")
            if leaf in (present.names(parent, name) or ()):
                dest = out_dir / name
                if dest.is_symlink():
                    raise UnsafePathError(f"{name}: destination {dest} is a symlink; refusing to write through it")
                if _check_dest(dest, digest, size, overwrite):
                    results.append(PulledFile(path=name, digest=digest, size=size, mode=mode, skipped=True))
                    continue
            fresh.append((i, name, f"{staged}/{full}"))
            results.append(PulledFile(path=name, digest=digest, size=size, mode=mode))
    _collisions(sorted(names))
    return moves + _whole_dirs(fresh, [str(e.rel) for e, _ in raw_plan], present)


def _whole_dirs(fresh: list[tuple[int, str, str]], raw: Sequence[str], present: DestDirs) -> list[Move]:
    """Moves for the staged tar members ``fresh`` ((tree, name, staged path)): a directory missing from the output
    directory whose files all come from one tree moves in one rename (the highest such directory), the other files
    one by one. 10,000 files in 100 new directories: 100 renames. ``raw`` files count as another tree each."""
    owner: dict[str, int] = {}  # new directory -> the one tree filling it, or -1: several (or a raw file)
    tops: dict[str, list[str]] = {}  # parent directory -> its directories missing from the output, top first

    def missing(parent: str) -> list[str]:
        found = tops.get(parent)
        if found is None:
            found = []
            at = parent
            while at and present.names(at, at) is None:
                found.append(at)
                at = at.rpartition("/")[0]
            found.reverse()
            tops[parent] = found
        return found

    for i, name, _ in fresh:
        for d in missing(name.rpartition("/")[0]):
            if owner.setdefault(d, i) != i:
                owner[d] = -1
    for name in raw:
        for d in missing(name.rpartition("/")[0]):
            owner[d] = -1
    moves: list[Move] = []
    whole: dict[str, str] = {}  # directory -> its staged path
    for _, name, staged in fresh:
        top = next((d for d in missing(name.rpartition("/")[0]) if owner[d] >= 0), None)
        if top is None:
            moves.append(Move(staged, name, -1, False))
        elif top not in whole:
            whole[top] = staged[:len(staged) - len(name)] + top
    return [Move(staged, d, DIRECTORY, False) for d, staged in whole.items()] + moves


#: Extraction trees in a pull's ``restore-*`` directory: artifact layers, image layers.
TREES = ("tree", "image")


def _same_name(name: str) -> str:
    return name


def _overlay(blobs: Path, image: Sequence[Entry], view: ImageView) -> dict[str, int]:
    """Apply the image layers' changesets in order (image-spec layer.md: a whiteout or an opaque directory hides
    what the layers *below* it hold): the file names in the mount path that the image ends with -> the position in
    ``image`` of the layer whose copy wins (two layers may be one blob). Names outside the mount path are not
    kept, but a whiteout of the mount path or of a directory above it still hides the files below."""
    owner: dict[str, int] = {}
    for i, e in enumerate(image):
        blob = blobs / e.desc.digest.removeprefix("sha256:")
        for op, name in changeset(blob, e.desc.mediaType, f"layer {e.desc.digest}"):
            if op == "file":
                if view.scope(name):
                    owner[name] = i
                continue
            under = name + "/" if name else ""
            hidden = [k for k, j in owner.items() if j < i and (k.startswith(under) or (op == "delete" and k == name))]
            for k in hidden:
                del owner[k]
    return owner


def _member_filter(filters: Sequence[str]) -> Callable[[str], bool]:
    """``--filter`` applied to the files of an image layer, by the role their name gives them."""
    if not filters:
        return lambda _: True
    from .kinds import Kind, classify

    roles = {"weights": "weight", "config": "weight.config", "docs": "doc", "code": "code", "dataset": "dataset"}
    wanted = {roles[f] for f in filters}
    return lambda name: classify(Kind.MODEL, name, False)[0] in wanted


def _image_wants(owners: dict[str, int], position: int, view: ImageView, match: Callable[[str], bool],
                 keep: Callable[[str], bool], name: str) -> bool:
    if owners.get(name) != position:
        return False
    rel = view.strip(name)
    return match(rel) and keep(rel)


def place(staging_root: Path, out_dir: Path, moves: Sequence[Move]) -> None:
    """Move staged files (and whole staged directories new in ``out_dir``) into ``out_dir``, immune to directories
    swapped for symlinks meanwhile.

    Every directory is opened relative to its parent's descriptor with ``O_NOFOLLOW`` (created if missing), on both
    sides; files are renamed between directory descriptors (``renameat``), which replaces whatever entry is at the
    destination (a symlink, a hardlink to a file elsewhere) instead of writing through it. All destination
    directories are opened before the first file moves; if one is not a plain directory (anymore), the
    directories this pull created are removed again and nothing is moved.
    """
    with DirTree(out_dir) as dst, DirTree(staging_root) as src:
        try:
            parents = [dst.parent(m.dest, create=True) for m in moves]
        except BaseException:
            dst.rollback()
            raise
        for m, dfd in zip(moves, parents, strict=True):
            sfd = src.parent(m.staged, create=False)
            name = posixpath.basename(m.staged)
            if m.copy:
                name = _copy_at(sfd, name)
            if m.mode >= 0:  # a raw blob becoming a file: its mode, and to disk before its name appears
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=sfd)
                try:
                    os.fchmod(fd, m.mode)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            if m.mode == DIRECTORY:  # renameat of a directory never writes through what is at the destination
                try:
                    os.rename(name, posixpath.basename(m.dest), src_dir_fd=sfd, dst_dir_fd=dfd)
                except OSError as exc:
                    raise LocalIOError(f"{out_dir / m.dest}: appeared while the pull ran, cannot put the pulled "
                                       f"directory there ({exc.strerror or exc})") from None
                continue
            os.rename(name, posixpath.basename(m.dest), src_dir_fd=sfd, dst_dir_fd=dfd)


def _copy_at(dir_fd: int, name: str) -> str:
    """Copy ``name`` to a new file beside it (all relative to ``dir_fd``); returns the copy's name."""
    tmp = f"{name}.copy"
    with os.fdopen(os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd), "rb") as f, \
            os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd),
                      "wb") as g:
        shutil.copyfileobj(f, g, 1 << 20)
    return tmp


def file_digests(target: Target, repo: str, manifest: Manifest) -> dict[str, tuple[str, int]]:
    """path -> (digest, size) for every file; tar layers are fetched (verified) and their members hashed (image
    layers as pull applies them)."""
    out: dict[str, tuple[str, int]] = {}
    view = image_view(target, repo, manifest)
    entries = select(manifest, view=view)
    with tempfile.TemporaryDirectory(prefix="ociart-diff-") as tmp:
        for e in entries:
            if e.tar:
                blob = Path(tmp) / e.desc.digest.removeprefix("sha256:")
                if not blob.exists():
                    target.fetch_blob(repo, e.desc, blob)
        image = [e for e in entries if e.image]
        owners = _overlay(Path(tmp), image, view) if view is not None and image else {}
        nth_image = 0
        for e in entries:
            if not e.tar:
                out[str(e.rel)] = (e.desc.digest, e.desc.size)
                continue
            if is_encrypted(e.desc):  # listed whole by its ciphertext: no key, no members
                out[layer_path(e.desc) or e.desc.digest] = (e.desc.digest, e.desc.size)
                continue
            blob = Path(tmp) / e.desc.digest.removeprefix("sha256:")
            if e.image and view is not None:
                wants = partial(_image_wants, owners, nth_image, view, _matcher(()), _member_filter(()))
                nth_image += 1
                for name, digest, size in member_digests(blob, e.desc.mediaType, f"layer {e.desc.digest}", wants,
                                                         view.scope):
                    out[view.strip(name)] = (digest, size)
                continue
            for name, digest, size in member_digests(blob, e.desc.mediaType, f"layer {e.desc.digest}"):
                out[name] = (digest, size)
    return out
