"""The small interface every store implements: a registry over HTTP or an OCI image-layout directory.

A target holds content-addressed blobs and manifests per repository, and tags pointing at manifests.
Copy, push and pull (see :mod:`ociart.transfer`) are written once against this interface.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import ConflictError, DigestMismatchError, InvalidContentError, NotFoundError, UsageError
from ..oci import INDEX_TYPES, MANIFEST_TYPES, Content, Descriptor
from ..oci.digest import sha256_bytes
from ..oci.models import MAX_MANIFEST_BYTES, detect_media_type
from .ingest import Ingest

if TYPE_CHECKING:
    from .referrers import Deletion

#: Called with the number of bytes just moved.
ProgressFn = Callable[[int], None]
#: Opens a fresh stream of a blob's bytes (called again when an upload is retried).
Opener = Callable[[], AbstractContextManager[Iterator[bytes]]]


def check_manifest(content: Content) -> None:
    """Size cap, a manifest or index media type agreeing with the body, and the digest of the exact bytes."""
    if content.size > MAX_MANIFEST_BYTES:
        raise InvalidContentError(f"manifest {content.digest} is {content.size} bytes, over the "
                                  f"{MAX_MANIFEST_BYTES}-byte limit")
    if content.media_type not in MANIFEST_TYPES | INDEX_TYPES:
        raise InvalidContentError(f"manifest {content.digest}: {content.media_type!r} is not a manifest media type")
    if detect_media_type(content.data, content.media_type) != content.media_type:
        raise InvalidContentError(f"manifest {content.digest}: body's mediaType disagrees with {content.media_type}")
    if sha256_bytes(content.data) != content.digest:
        raise DigestMismatchError(f"manifest bytes hash to {sha256_bytes(content.data)}, not {content.digest}")


class Absent(enum.Enum):
    """Type of :data:`ABSENT`."""

    ABSENT = "absent"


#: ``expect=ABSENT`` in :meth:`Target.tag`: the tag must not exist yet.
ABSENT = Absent.ABSENT
#: What a compare-and-set expects a tag to point at: a digest, :data:`ABSENT`, or None (no check).
Expect = str | Absent | None


def parse_expect(value: str) -> Expect:
    """``--expect``'s value: ``absent`` → :data:`ABSENT`, else a digest."""
    if value == ABSENT.value:
        return ABSENT
    from ..reference import check_digest

    return check_digest(value)


def check_expected(where: str, tag: str, expect: Expect, current: str | None, wanted: str) -> None:
    """Raise :class:`ConflictError` naming ``current`` unless the tag is where ``expect`` says.

    A tag already at ``wanted`` passes whatever was expected: the caller's intent holds, and a retried request
    whose first answer was lost stays a success.
    """
    if expect is None or current == wanted:
        return
    if expect is ABSENT and current is None:
        return
    if isinstance(expect, str) and current == expect:
        return
    was = "absent" if expect is ABSENT else expect
    now = current if current is not None else "absent (no such tag)"
    raise ConflictError(f"{where}: tag {tag!r} is at {now}, expected {was}; not moved", current)


@dataclass(frozen=True)
class ListedManifest:
    """A manifest a store holds for a repository, with the tags that point at it (none: untagged)."""

    descriptor: Descriptor
    tags: tuple[str, ...] = ()


@runtime_checkable
class RepositoryLister(Protocol):
    """Optional capability: a store that can name its repositories (a registry's catalog, a layout's index)."""

    def repositories(self) -> list[str]: ...


@runtime_checkable
class ManifestLister(Protocol):
    """Optional capability: a store that knows every manifest of a repository, untagged ones included
    (layouts). Registries do not: their manifests are found through tags and referrers."""

    def manifests(self, repo: str) -> list[ListedManifest]: ...


def file_opener(path: Path) -> Opener:
    @contextmanager
    def cm() -> Iterator[Iterator[bytes]]:
        from ..fsutil import read_file_chunks

        # the one chunked file reader: it checks for cancellation between chunks, so an interrupted push's blob
        # threads stop at once (ociart.cancel); its first chunk is read here, where the file is opened
        chunks = read_file_chunks(path)
        try:
            first = next(chunks, b"")
        except FileNotFoundError:
            raise UsageError(f"{path} vanished while it was being pushed; nothing was published") from None
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
        with closing(chunks):
            yield chain((first,) if first else (), chunks)

    return cm


def bytes_opener(data: bytes) -> Opener:
    @contextmanager
    def cm() -> Iterator[Iterator[bytes]]:
        yield iter([data])

    return cm


class Target(ABC):
    """A place content lives. ``repo`` is the repository name ('' for a plain ``oci:`` layout)."""

    #: Human-readable location for messages.
    name: str

    @abstractmethod
    def resolve(self, repo: str, reference: str) -> Descriptor:
        """Tag or digest → the manifest's descriptor (media type, digest, size)."""

    @abstractmethod
    def get_manifest(self, repo: str, reference: str) -> Content:
        """Raw manifest bytes; verified against the digest when ``reference`` is a digest."""

    def put_manifest(self, repo: str, content: Content, tag: str | None = None,
                     expect: Expect = None) -> Mapping[str, str]:
        """The one write path of manifests: store the bytes by digest, and point ``tag`` at them when given.

        Every writer (generic and typed push, signing, lineage, MLflow, copy, referrers) goes through here: the size
        cap, the content type (a manifest or index type that the body's ``mediaType`` agrees with) and the digest
        are checked before sending, and the digest the store answers (``Docker-Content-Digest``) after. Returns the
        store's response headers (``OCI-Subject`` tells the referrers module whether a registry indexed a subject).
        """
        check_manifest(content)
        headers = self._store_manifest(repo, content, tag, expect)
        got = headers.get("docker-content-digest")
        if got and got != content.digest:
            raise DigestMismatchError(f"{self.name}: stored manifest {repo}:{tag or content.digest} as {got}, "
                                      f"expected {content.digest}")
        return headers

    @abstractmethod
    def _store_manifest(self, repo: str, content: Content, tag: str | None,
                        expect: Expect = None) -> Mapping[str, str]:
        """Store checked manifest bytes (see :meth:`put_manifest`); returns the response headers (lower-case keys
        or case-insensitive), or an empty mapping.

        ``expect`` (with ``tag``): move the tag only if it points at that digest now (:data:`ABSENT`: only if it
        does not exist), checked atomically where the store can (a layout's ``index.json`` lock, a registry's
        ``If-Match``), raising :class:`ConflictError`; a registry that ignores the condition writes anyway, which
        :meth:`tag` then detects by reading back."""

    @abstractmethod
    def has_blob(self, repo: str, desc: Descriptor) -> bool: ...

    @abstractmethod
    def open_blob(self, repo: str, desc: Descriptor) -> AbstractContextManager[Iterator[bytes]]:
        """Stream a blob's bytes (the caller verifies, or the receiving target does)."""

    @abstractmethod
    def fetch_blob(self, repo: str, desc: Descriptor, dest: Path, progress: ProgressFn | None = None, *,
                   ingest: Ingest | None = None) -> None:
        """Write the blob to ``dest`` atomically, digest- and size-verified before it becomes visible.

        With ``ingest`` (on the filesystem of ``dest``) an interrupted download leaves its partial there and the next
        call for the same digest, in this process or another, resumes it."""

    def push_blob_file(self, repo: str, path: Path, desc: Descriptor | None, progress: ProgressFn | None = None,
                       media_type: str = "application/octet-stream") -> Descriptor:
        """Store a local file as a blob. ``desc`` None means the digest is not yet known (hash while sending)."""
        if desc is not None:
            self.push_blob_stream(repo, desc, file_opener(path), progress)
            return desc
        return self.push_blob_chunks(repo, file_opener(path), media_type, progress)

    @abstractmethod
    def push_blob_stream(self, repo: str, desc: Descriptor, opener: Opener,
                         progress: ProgressFn | None = None) -> None:
        """Store a blob of known digest and size (skipped when present); the stream is re-opened on retry."""

    @abstractmethod
    def push_blob_chunks(self, repo: str, opener: Opener, media_type: str,
                         progress: ProgressFn | None = None) -> Descriptor:
        """Store a blob whose digest is not known yet, hashing it as it is stored; returns its descriptor."""

    def mount_blob(self, repo: str, desc: Descriptor, from_repo: str) -> bool:
        """Make a blob of another repository of the same store available in ``repo``; False if not done."""
        return False

    # -- hooks of :mod:`ociart.targets.referrers` (the one referrers module; use its functions) --------------
    def native_referrers(self, repo: str, digest: str, artifact_type: str | None) -> list[Descriptor] | None:
        """The store's own list of referrers of ``digest`` (a registry's referrers API, a layout's index), or None
        when it has none and the ``sha256-<hex>`` tag-schema index is the list."""
        return None

    def attach_native(self, repo: str, content: Content, tag: str | None) -> bool:
        """Write a manifest that has a ``subject`` (and ``tag``); True when the store itself now lists it as a
        referrer, False when the tag-schema index must record it."""
        self.put_manifest(repo, content, tag)
        return False

    def delete_local(self, repo: str, digest: str, referrers: bool) -> Deletion | None:
        """A store that computes reachability itself (a layout) deletes here and reports what went; None means the
        generic cascade of :func:`ociart.targets.referrers.delete` applies."""
        return None

    def writing(self) -> AbstractContextManager[None]:
        """Held by a writer from its first blob check until its manifest is written, so that a concurrent delete
        of a local store cannot remove a blob the writer found present (shared; delete takes it exclusively)."""
        return nullcontext()

    @abstractmethod
    def tags(self, repo: str) -> list[str]: ...

    def current_tag(self, repo: str, tag: str) -> str | None:
        """The digest ``tag`` points at now, None when it does not exist."""
        try:
            return self.resolve(repo, tag).digest
        except NotFoundError:
            return None

    def tag(self, repo: str, tag: str, desc: Descriptor, expect: Expect = None) -> None:
        """Point ``tag`` at the existing manifest ``desc`` (nothing is uploaded but the manifest's own bytes).

        ``expect`` makes it a compare-and-set: a digest the tag must point at now, :data:`ABSENT` (it must not
        exist), or None (no check). A lost compare-and-set raises :class:`ConflictError` naming the digest now
        there: read and compare, write with the expectation (:meth:`put_manifest`, atomic where the store can),
        read back (for registries that ignore conditional writes).
        """
        content = self.get_manifest(repo, desc.digest)  # the stored bytes, verified; never re-serialised
        where = self._tag_where(repo)
        if expect is not None:
            check_expected(where, tag, expect, self.current_tag(repo, tag), desc.digest)
        try:
            self.put_manifest(repo, content, tag, expect)
        except ConflictError:  # the store's own precondition check failed: name what is there now
            check_expected(where, tag, desc.digest, self.current_tag(repo, tag), desc.digest)
            return  # it is at our digest after all (e.g. a retried request)
        if expect is not None:  # another writer's PUT may have replaced ours
            check_expected(where, tag, desc.digest, self.current_tag(repo, tag), desc.digest)

    def _tag_where(self, repo: str) -> str:
        return f"{self.name}/{repo}" if repo else self.name

    @abstractmethod
    def delete_manifest(self, repo: str, digest: str) -> None: ...

    @abstractmethod
    def delete_tag(self, repo: str, tag: str) -> None: ...

    def same_store(self, other: Target) -> bool:
        """True when blobs can be shared between the two without copying bytes."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
