"""The small interface every store implements: a registry over HTTP or an OCI image-layout directory.

A target holds content-addressed blobs and manifests per repository, and tags pointing at manifests.
Copy, push and pull (see :mod:`ociart.transfer`) are written once against this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ..errors import UsageError
from ..oci import Content, Descriptor
from .ingest import Ingest

#: Called with the number of bytes just moved.
ProgressFn = Callable[[int], None]
#: Opens a fresh stream of a blob's bytes (called again when an upload is retried).
Opener = Callable[[], AbstractContextManager[Iterator[bytes]]]


def file_opener(path: Path) -> Opener:
    @contextmanager
    def cm() -> Iterator[Iterator[bytes]]:
        from ..oci.digest import CHUNK

        try:
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise UsageError(f"{path} vanished while it was being pushed; nothing was published") from None
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
        with f:
            yield iter(lambda: f.read(CHUNK), b"")

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

    @abstractmethod
    def put_manifest(self, repo: str, content: Content, tag: str | None = None) -> None:
        """Store manifest bytes by digest, and point ``tag`` at them when given."""

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

    @abstractmethod
    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``digest`` (OCI 1.1 referrers), optionally of one artifactType."""

    @abstractmethod
    def attach(self, repo: str, content: Content) -> None:
        """Store a manifest that has a ``subject`` so that :meth:`referrers` finds it."""

    @abstractmethod
    def tags(self, repo: str) -> list[str]: ...

    @abstractmethod
    def delete_manifest(self, repo: str, digest: str) -> None: ...

    @abstractmethod
    def delete_tag(self, repo: str, tag: str) -> None: ...

    def same_store(self, other: Target) -> bool:
        """True when blobs can be shared between the two without copying bytes."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
