"""An OCI image-layout directory as a target (image-spec v1.1.1 ``image-layout.md``).

The embedded default store is one layout shared by all repositories, so blobs dedupe across them; its
``index.json`` entries are named ``<repo>:<tag>`` (``org.opencontainers.image.ref.name``), which is how
skopeo addresses them (``oci:DIR:<repo>:<tag>``). A plain ``oci:DIR`` layout uses the bare name.
Writers of ``index.json`` hold a file lock (``index.json.lock``). Writers of content hold the store lock
(``.ociart-store.lock``, flock(2)) shared from their first blob check until their manifest is written; delete and
:meth:`LayoutTarget.sweep` hold it exclusively, so a blob a push found present is never removed under it, and
concurrent pushes never wait for each other (see docs/transport.md, "Deleting from a local store").
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from .. import cancel
from ..errors import DigestMismatchError, InvalidContentError, NotFoundError
from ..fsutil import (copy_file_verified, publish, read_file_chunks, sweep_temps, temp_file, write_all,
                      write_stream_verified)
from ..oci import ANNOTATION_REF_NAME, INDEX_TYPES, MANIFEST_TYPES, Content, Descriptor, ImageLayout, Index
from ..oci.digest import Digester
from ..oci.models import MAX_MANIFEST_BYTES, detect_media_type, parse_manifest_content
from ..reference import is_digest
from .base import Expect, ListedManifest, Opener, ProgressFn, Target, check_expected
from .ingest import Ingest
from .referrers import Deletion, referrer_descriptor, scheme_tags

#: A sweep leaves unreferenced blobs younger than this alone (a push places blobs before its index entry).
SWEEP_GRACE_SECONDS = 300.0


class StoreLock:
    """Shared/exclusive lock of one store, across threads (a condition) and processes (flock(2) on a file).

    The threads of one process share one shared flock; an exclusive holder waits until no thread of this process
    holds it shared, then takes the flock exclusively (which waits for other processes' shared holders).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._fd: int | None = None

    def _open(self) -> int:
        return os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            if self._readers == 0:
                fd = self._open()
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0 and self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    os.close(self._fd)
                    self._fd = None
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


log = logging.getLogger("ociart")


class LayoutTarget(Target):
    def __init__(self, root: Path, *, create: bool = True, embedded: bool = False, durable: bool = True) -> None:
        self.root = Path(root)
        self.embedded = embedded
        self.name = "embedded store" if embedded else f"oci:{self.root}"
        self._tmp = self.root / ".ociart-tmp"
        #: Resumable partial downloads into this layout (``copy`` and pull's staging store write through it);
        #: ``durable``: see :attr:`Ingest.durable`.
        self.ingest = Ingest(self._tmp / "ingest", durable=durable)
        self._lock = StoreLock(self.root / ".ociart-store.lock")
        #: digest -> (subject digest, referrer descriptor) of manifests read from this store (they never change)
        self._manifest_info: dict[str, tuple[str | None, Descriptor]] = {}
        if not (self.root / "oci-layout").exists():
            if not create:
                raise NotFoundError(f"{self.root}: not an OCI image layout (no oci-layout file)")
            self._init()
        #: Temp files a killed writer (push, copy) left in ``.ociart-tmp`` (lock free), removed on opening.
        self.swept = sweep_temps(self._tmp)
        if self.swept:
            log.warning("removed %d stale temp file(s) left by an interrupted write in %s: %s", len(self.swept),
                        self.name, ", ".join(p.name for p in self.swept))

    # -- layout files -------------------------------------------------------------------------------
    def _init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        from filelock import FileLock

        with FileLock(str(self.root / "index.json.lock")):
            if not (self.root / "oci-layout").exists():
                (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
                self._write_json(self.root / "index.json", Index().to_json_bytes())
                self._write_json(self.root / "oci-layout", ImageLayout().to_json_bytes())

    def _write_json(self, path: Path, data: bytes) -> None:
        with temp_file(path.parent, suffix=".tmp") as (fd, tmp):
            write_all(fd, data)
            publish(fd, tmp, path)

    def _read_index(self) -> Index:
        try:
            data = (self.root / "index.json").read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{self.root}: not an OCI image layout (no index.json)") from None
        try:
            return Index.model_validate_json(data)
        except ValueError as exc:
            raise InvalidContentError(f"{self.root}/index.json is malformed: {exc.__class__.__name__}") from None

    @contextmanager
    def _edit_index(self) -> Iterator[Index]:
        from filelock import FileLock

        with FileLock(str(self.root / "index.json.lock")):
            index = self._read_index()
            yield index
            self._write_json(self.root / "index.json", index.to_json_bytes())

    def blob_path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise InvalidContentError(f"unsupported or malformed digest {digest!r}")
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def ref_name(self, repo: str, tag: str) -> str:
        return f"{repo}:{tag}" if repo else tag

    # -- Target -------------------------------------------------------------------------------------
    def resolve(self, repo: str, reference: str) -> Descriptor:
        if is_digest(reference):
            path = self.blob_path(reference)
            if not path.exists():
                raise NotFoundError(f"{self._where(repo)}: manifest {reference} not found")
            size = path.stat().st_size
            if size > MAX_MANIFEST_BYTES:
                raise InvalidContentError(f"manifest {reference} is {size} bytes, over the limit")
            return Descriptor(mediaType=detect_media_type(path.read_bytes()), digest=reference, size=size)
        name = self.ref_name(repo, reference)
        for entry in reversed(self._read_index().manifests):
            if (entry.annotations or {}).get(ANNOTATION_REF_NAME) == name:
                return Descriptor(mediaType=entry.mediaType, digest=entry.digest, size=entry.size)
        raise NotFoundError(f"{self._where(repo)}: tag {reference!r} not found")

    def _where(self, repo: str) -> str:
        return f"{self.name} {repo}" if repo else self.name

    def get_manifest(self, repo: str, reference: str) -> Content:
        desc = self.resolve(repo, reference)
        path = self.blob_path(desc.digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{self._where(repo)}: manifest blob {desc.digest} missing") from None
        content = Content.of(data, desc.mediaType)
        if content.digest != desc.digest:
            raise DigestMismatchError(f"manifest {desc.digest}: stored bytes hash to {content.digest}")
        return content

    def writing(self) -> AbstractContextManager[None]:
        return self._lock.shared()

    def _store_manifest(self, repo: str, content: Content, tag: str | None,
                        expect: Expect = None) -> Mapping[str, str]:
        """``expect`` is compared under the ``index.json`` lock: one winner among processes sharing the layout."""
        path = self.blob_path(content.digest)
        with self._lock.shared():
            if not path.exists():
                write_stream_verified(path, [content.data], content.digest, content.size, "manifest", self._tmp)
            if tag is not None:
                name = self.ref_name(repo, tag)
                with self._edit_index() as index:
                    if expect is not None:
                        current = next((m.digest for m in reversed(index.manifests)
                                        if (m.annotations or {}).get(ANNOTATION_REF_NAME) == name), None)
                        check_expected(self._where(repo), tag, expect, current, content.digest)
                    index.manifests = [
                        m for m in index.manifests if (m.annotations or {}).get(ANNOTATION_REF_NAME) != name
                    ]
                    index.manifests.append(content.descriptor(annotations={ANNOTATION_REF_NAME: name}))
        return {}

    def has_blob(self, repo: str, desc: Descriptor) -> bool:
        path = self.blob_path(desc.digest)
        try:
            return path.stat().st_size == desc.size
        except FileNotFoundError:
            return False

    def open_blob(self, repo: str, desc: Descriptor) -> AbstractContextManager[Iterator[bytes]]:
        path = self.blob_path(desc.digest)
        if not path.exists():
            raise NotFoundError(f"{self._where(repo)}: blob {desc.digest} not found")

        @contextmanager
        def opener() -> Iterator[Iterator[bytes]]:
            yield read_file_chunks(path)

        return opener()

    def fetch_blob(self, repo: str, desc: Descriptor, dest: Path, progress: ProgressFn | None = None, *,
                   ingest: Ingest | None = None) -> None:
        # a local read: nothing worth resuming, so ``ingest`` is not used; copied in the kernel, hashed from the copy
        path = self.blob_path(desc.digest)
        try:
            copy_file_verified(path, dest, desc.digest, desc.size, f"blob {desc.digest}", progress=progress)
        except FileNotFoundError:
            raise NotFoundError(f"{self._where(repo)}: blob {desc.digest} not found") from None

    def push_blob_chunks(self, repo: str, opener: Opener, media_type: str,
                         progress: ProgressFn | None = None) -> Descriptor:
        d = Digester()
        with temp_file(self._tmp) as (fd, tmp), opener() as chunks:
            for chunk in chunks:
                d.update(chunk)
                write_all(fd, chunk)
                if progress:
                    progress(len(chunk))
            final = self.blob_path(d.digest)
            if not final.exists():
                final.parent.mkdir(parents=True, exist_ok=True)
                publish(fd, tmp, final)
        return Descriptor(mediaType=media_type, digest=d.digest, size=d.size)

    def push_blob_stream(self, repo: str, desc: Descriptor, opener: Opener,
                         progress: ProgressFn | None = None) -> None:
        if self.has_blob(repo, desc):
            return
        with opener() as chunks:
            write_stream_verified(self.blob_path(desc.digest), _counting(chunks, progress), desc.digest, desc.size,
                                  f"blob {desc.digest}", self._tmp)

    def mount_blob(self, repo: str, desc: Descriptor, from_repo: str) -> bool:
        return self.has_blob(repo, desc)

    def materialise(self, src: LayoutTarget, desc: Descriptor, *, link: bool = False) -> bool:
        """Put ``src``'s blob ``desc`` here without streaming it: a hardlink when ``link`` (same filesystem), else a
        reflink (``FICLONE``) where the filesystem supports it. False when neither applies (or ``src`` lacks the blob
        whole): the caller copies, verified. ``src`` is a verified store (its blobs became visible only verified),
        so the result is as verified as it is; the name appears atomically either way."""
        if self.has_blob("", desc):
            return True
        path = src.blob_path(desc.digest)
        try:
            if path.stat().st_size != desc.size:
                return False
        except FileNotFoundError:
            return False
        dest = self.blob_path(desc.digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if link:
            try:
                os.link(path, dest)  # a name for complete content, atomically
                return True
            except FileExistsError:
                return True
            except OSError:
                pass  # another filesystem, or links refused: try a reflink
        if not sys.platform.startswith("linux"):
            return False
        try:
            with open(path, "rb") as s, temp_file(self._tmp) as (fd, tmp):
                fcntl.ioctl(fd, getattr(fcntl, "FICLONE", 0x40049409), s.fileno())
                publish(fd, tmp, dest)
            return True
        except OSError:
            return False

    # -- referrers: index.json entries (tagged or not) whose manifest has the subject; attach adds an untagged one --
    def _info(self, entry: Descriptor) -> tuple[str | None, Descriptor] | None:
        """(subject digest, referrer descriptor) of an entry's manifest; None when unreadable."""
        info = self._manifest_info.get(entry.digest)
        if info is None:
            path = self.blob_path(entry.digest)
            try:
                if path.stat().st_size > MAX_MANIFEST_BYTES:
                    return None
                content = Content.of(path.read_bytes(), entry.mediaType)
                node = content.parse()
            except (FileNotFoundError, InvalidContentError):
                return None
            info = (node.subject.digest if node.subject else None, referrer_descriptor(content))
            self._manifest_info[entry.digest] = info
        return info

    def native_referrers(self, repo: str, digest: str, artifact_type: str | None) -> list[Descriptor]:
        found: dict[str, Descriptor] = {}
        for entry in self._read_index().manifests:
            info = self._info(entry)
            if info is None or info[0] != digest:
                continue
            untagged = ANNOTATION_REF_NAME not in (entry.annotations or {})
            desc = entry if untagged and entry.artifactType else info[1]  # a tagged entry: as a referrers index would
            if artifact_type and desc.artifactType != artifact_type:
                continue
            if untagged or entry.digest not in found:
                found[entry.digest] = desc
        return list(found.values())

    def attach_native(self, repo: str, content: Content, tag: str | None) -> bool:
        self.put_manifest(repo, content, tag)
        entry = referrer_descriptor(content)
        with self._edit_index() as index:
            if not any(m.digest == content.digest and ANNOTATION_REF_NAME not in (m.annotations or {})
                       for m in index.manifests):
                index.manifests.append(entry)
        return True

    def tags(self, repo: str) -> list[str]:
        prefix = f"{repo}:" if repo else ""
        names = {
            (m.annotations or {}).get(ANNOTATION_REF_NAME, "") for m in self._read_index().manifests
        }
        return sorted(n[len(prefix):] for n in names if n and n.startswith(prefix) and n != prefix)

    def delete_manifest(self, repo: str, digest: str) -> None:
        self.delete_local(repo, digest, referrers=False)

    def delete_local(self, repo: str, digest: str, referrers: bool) -> Deletion:
        """Remove ``repo``'s entries of ``digest`` (an untagged referrer entry when it is not tagged here) and, with
        ``referrers``, recursively: this repository's entries whose manifest refers to a removed digest, its scheme
        tags (``sha256-<hex>``, ``.sig``, ``.att``) of removed digests, and untagged referrer entries whose subject
        no remaining entry reaches. Then the blobs only removed entries reached are deleted. All under the
        exclusive store lock; reachability is computed over the whole ``index.json`` (every repository)."""
        prefix = f"{repo}:" if repo else ""

        def name(e: Descriptor) -> str | None:
            return (e.annotations or {}).get(ANNOTATION_REF_NAME)

        def here(e: Descriptor) -> bool:
            n = name(e)
            return n is not None and n.startswith(prefix) and n != prefix

        def subject(e: Descriptor) -> str | None:
            info = self._info(e)
            return info[0] if info else None

        with self._lock.exclusive(), self._edit_index() as index:
            entries = list(index.manifests)
            dropped: list[Descriptor] = [e for e in entries if here(e) and e.digest == digest]
            if not dropped:  # not tagged here: an attached referrer (untagged entries)
                dropped = [e for e in entries if name(e) is None and e.digest == digest]
            if not dropped:
                raise NotFoundError(f"{self._where(repo)}: manifest {digest} not found")
            out = Deletion()
            pending = {digest}
            while referrers:
                left = [e for e in entries if not any(e is d for d in dropped)]
                tags = {t for d in pending for t in scheme_tags(d)}
                more = [e for e in left if here(e) and (e.digest in pending or name(e)[len(prefix):] in tags
                                                        or subject(e) in pending)]
                # untagged entries stay while their subject is reachable from a remaining tagged entry
                alive = {e.digest for e in left if name(e) is not None and not any(e is m for m in more)}
                untagged = [e for e in left if name(e) is None and e.digest != digest]
                grown = True
                while grown:
                    grown = False
                    for e in untagged:
                        if e.digest not in alive and subject(e) in alive:
                            alive.add(e.digest)
                            grown = True
                more += [e for e in left if name(e) is None and e.digest not in alive
                         and (e.digest in pending or subject(e) in pending)]
                if not more:
                    break
                for e in more:
                    dropped.append(e)
                    n = name(e)
                    if n is not None and n[len(prefix):] in tags:
                        out.scheme_tags.append(n[len(prefix):])
                    elif e.digest not in pending:
                        out.referrers.append(e.digest)
                    pending.add(e.digest)
            index.manifests = [e for e in entries if not any(e is d for d in dropped)]
            out.blobs, out.freed_bytes = self._free(dropped, index.manifests)
        return out

    def _reach(self, entries: list[Descriptor]) -> dict[str, int]:
        """Blob digest -> size of every blob the entries reach (manifests, configs, layers, children of indexes)."""
        seen: dict[str, int] = {}
        stack = list(entries)
        while stack:
            d = stack.pop()
            if d.digest in seen:
                continue
            seen[d.digest] = d.size
            if d.mediaType not in INDEX_TYPES | MANIFEST_TYPES:
                continue
            path = self.blob_path(d.digest)
            try:
                if path.stat().st_size > MAX_MANIFEST_BYTES:
                    continue
                node = parse_manifest_content(path.read_bytes(), d.mediaType)
            except (FileNotFoundError, InvalidContentError):
                continue
            stack += node.manifests if isinstance(node, Index) else [node.config, *node.layers]
        return seen

    def _free(self, dropped: list[Descriptor], remaining: list[Descriptor]) -> tuple[int, int]:
        """Delete the blobs that only ``dropped`` entries reached; returns (count, bytes)."""
        keep = self._reach(remaining)
        count = freed = 0
        for digest in self._reach(dropped).keys() - keep.keys():
            path = self.blob_path(digest)
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            self._manifest_info.pop(digest, None)
            count += 1
            freed += size
        return count, freed

    def sweep(self, grace_seconds: float = SWEEP_GRACE_SECONDS) -> tuple[int, int]:
        """Delete blobs no index entry reaches (left by killed pushes or tag-only deletes) and stale temp files, when
        older than ``grace_seconds`` (mtime), so an in-flight writer that places blobs before its index entry and
        does not hold the store lock (another tool) loses nothing. Returns (count, bytes)."""
        cutoff = time.time() - grace_seconds
        count = freed = 0
        with self._lock.exclusive():
            keep = self._reach(self._read_index().manifests)
            for d in (self.root / "blobs" / "sha256", self._tmp):
                if not d.is_dir():
                    continue
                for path in d.iterdir():
                    try:
                        st = path.stat()
                        if not path.is_file() or st.st_mtime > cutoff or (d != self._tmp and
                                                                           "sha256:" + path.name in keep):
                            continue
                        path.unlink()
                    except FileNotFoundError:
                        continue
                    count += 1
                    freed += st.st_size
        return count, freed

    def delete_tag(self, repo: str, tag: str) -> None:
        name = self.ref_name(repo, tag)
        with self._edit_index() as index:
            keep = [m for m in index.manifests if (m.annotations or {}).get(ANNOTATION_REF_NAME) != name]
            if len(keep) == len(index.manifests):
                raise NotFoundError(f"{self._where(repo)}: tag {tag!r} not found")
            index.manifests = keep

    # -- listing (RepositoryLister, ManifestLister) ---------------------------------------------------
    def repositories(self) -> list[str]:
        """The embedded store: the ``<repo>`` part of every ``<repo>:<tag>`` name. A plain layout is one
        repository, ``''``."""
        names = [(m.annotations or {}).get(ANNOTATION_REF_NAME) for m in self._read_index().manifests]
        if not self.embedded:
            return [""] if names else []
        return sorted({n.rpartition(":")[0] for n in names if n and ":" in n})

    def manifests(self, repo: str) -> list[ListedManifest]:
        """Every manifest of ``repo`` in ``index.json``: tagged ones, and untagged entries (referrers) whose
        subject chain leads to one of them. In a plain layout (``repo`` '') every entry."""
        prefix = f"{repo}:" if repo else ""
        order: list[str] = []
        found: dict[str, tuple[Descriptor, list[str]]] = {}
        untagged: list[Descriptor] = []
        for entry in self._read_index().manifests:
            name = (entry.annotations or {}).get(ANNOTATION_REF_NAME)
            if name is None:
                untagged.append(entry)
                continue
            if self.embedded and not name.startswith(prefix):
                continue
            if entry.digest not in found:
                order.append(entry.digest)
                found[entry.digest] = (entry, [])
            found[entry.digest][1].append(name[len(prefix):])
        pending = [e for e in untagged if e.digest not in found]
        while pending:  # referrers of referrers (a signature on a provenance statement) join in later rounds
            rest: list[Descriptor] = []
            for entry in pending:
                if repo and self.embedded and self._subject(entry) not in found:
                    rest.append(entry)
                    continue
                if entry.digest not in found:
                    order.append(entry.digest)
                    found[entry.digest] = (entry, [])
            if len(rest) == len(pending):
                break
            pending = rest
        return [ListedManifest(descriptor=found[d][0].model_copy(update={"annotations": _without_ref_name(
            found[d][0].annotations)}), tags=tuple(sorted(found[d][1]))) for d in order]

    def _subject(self, entry: Descriptor) -> str | None:
        path = self.blob_path(entry.digest)
        try:
            if path.stat().st_size > MAX_MANIFEST_BYTES:
                return None
            node = parse_manifest_content(path.read_bytes(), entry.mediaType)
        except (FileNotFoundError, InvalidContentError):
            return None
        return node.subject.digest if node.subject is not None else None

    def same_store(self, other: Target) -> bool:
        return isinstance(other, LayoutTarget) and os.path.realpath(other.root) == os.path.realpath(self.root)


def _without_ref_name(annotations: dict[str, str] | None) -> dict[str, str] | None:
    rest = {k: v for k, v in (annotations or {}).items() if k != ANNOTATION_REF_NAME}
    return rest or None


def _counting(chunks: Iterator[bytes], progress: ProgressFn | None) -> Iterator[bytes]:
    for c in chunks:
        cancel.check()
        if progress:
            progress(len(c))
        yield c
