"""An OCI image-layout directory as a target (image-spec v1.1.1 ``image-layout.md``).

The embedded default store is one layout shared by all repositories, so blobs dedupe across them; its
``index.json`` entries are named ``<repo>:<tag>`` (``org.opencontainers.image.ref.name``), which is how
skopeo addresses them (``oci:DIR:<repo>:<tag>``). A plain ``oci:DIR`` layout uses the bare name.
Writers of ``index.json`` hold a file lock (``index.json.lock``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ..errors import DigestMismatchError, InvalidContentError, NotFoundError
from ..fsutil import publish, read_file_chunks, temp_file, write_all, write_stream_verified
from ..oci import ANNOTATION_REF_NAME, Content, Descriptor, ImageLayout, Index
from ..oci.digest import Digester
from ..oci.models import MAX_MANIFEST_BYTES, detect_media_type, parse_manifest_content, referrer_descriptor
from ..reference import is_digest
from .base import Expect, ListedManifest, Opener, ProgressFn, Target, check_expected
from .ingest import Ingest


class LayoutTarget(Target):
    def __init__(self, root: Path, *, create: bool = True, embedded: bool = False) -> None:
        self.root = Path(root)
        self.embedded = embedded
        self.name = "embedded store" if embedded else f"oci:{self.root}"
        self._tmp = self.root / ".ociart-tmp"
        #: Resumable partial downloads into this layout (``copy`` and pull's staging store write through it).
        self.ingest = Ingest(self._tmp / "ingest")
        if not (self.root / "oci-layout").exists():
            if not create:
                raise NotFoundError(f"{self.root}: not an OCI image layout (no oci-layout file)")
            self._init()

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

    def put_manifest(self, repo: str, content: Content, tag: str | None = None, expect: Expect = None) -> None:
        """``expect`` is compared under the ``index.json`` lock: one winner among processes sharing the layout."""
        path = self.blob_path(content.digest)
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
        # a local read: nothing worth resuming, so ``ingest`` is not used
        with self.open_blob(repo, desc) as chunks:
            write_stream_verified(dest, _counting(chunks, progress), desc.digest, desc.size, f"blob {desc.digest}")

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

    # -- referrers: untagged index.json entries, found by the subject of the manifest they point at ----
    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        found: list[Descriptor] = []
        for entry in self._read_index().manifests:
            if ANNOTATION_REF_NAME in (entry.annotations or {}):
                continue  # tagged; an untagged referrer may lack artifactType (an index without one)
            if artifact_type and entry.artifactType != artifact_type:
                continue
            path = self.blob_path(entry.digest)
            if not path.exists() or path.stat().st_size > MAX_MANIFEST_BYTES:
                continue
            node = parse_manifest_content(path.read_bytes(), entry.mediaType)
            if node.subject is not None and node.subject.digest == digest:
                found.append(entry)
        return found

    def attach(self, repo: str, content: Content) -> None:
        node = content.parse()
        if node.subject is None:
            raise InvalidContentError(f"manifest {content.digest} has no subject to attach to")
        self.put_manifest(repo, content)
        entry = referrer_descriptor(content)
        with self._edit_index() as index:
            if not any(m.digest == content.digest and ANNOTATION_REF_NAME not in (m.annotations or {})
                       for m in index.manifests):
                index.manifests.append(entry)

    def tags(self, repo: str) -> list[str]:
        prefix = f"{repo}:" if repo else ""
        names = {
            (m.annotations or {}).get(ANNOTATION_REF_NAME, "") for m in self._read_index().manifests
        }
        return sorted(n[len(prefix):] for n in names if n and n.startswith(prefix) and n != prefix)

    def delete_manifest(self, repo: str, digest: str) -> None:
        prefix = f"{repo}:" if repo else ""
        with self._edit_index() as index:
            keep = [
                m for m in index.manifests
                if not (m.digest == digest and (m.annotations or {}).get(ANNOTATION_REF_NAME, "").startswith(prefix))
            ]
            if len(keep) == len(index.manifests):  # not tagged here: an attached referrer (untagged entries)
                keep = [m for m in index.manifests
                        if not (m.digest == digest and ANNOTATION_REF_NAME not in (m.annotations or {}))]
            if len(keep) == len(index.manifests):
                raise NotFoundError(f"{self._where(repo)}: manifest {digest} not found")
            index.manifests = keep

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
        if progress:
            progress(len(c))
        yield c
