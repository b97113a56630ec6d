"""Mirrors in front of a registry (``--mirror HOST[:PORT]``, env ``OCIART_MIRROR``): a pull-through cache
(distribution's ``proxy.remoteurl``, Harbor's proxy cache) or a P2P mirror (Dragonfly, Spegel), as containerd's
``hosts.toml`` mirrors.

:class:`MirrorTarget` wraps the origin target. Content addressed by digest (manifests by digest, blobs) is tried at
each mirror in order, then at the origin; everything a mirror serves is verified by digest (the wrapped targets
verify). A mirror that fails (unreachable, an error, wrong bytes) is skipped for the next one or the origin, with a
warning (:attr:`MirrorTarget.on_skip`). What a reference *means* is never asked of a mirror: tags, tag listing,
referrers (signatures, attestations) and every write go to the origin only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ..errors import OciartError, UnreachableError
from ..oci import Content, Descriptor
from ..reference import is_digest
from .base import Expect, Opener, ProgressFn, Target
from .ingest import Ingest

log = logging.getLogger("ociart")

#: Called with (mirror name, what, error message) when a mirror is skipped.
SkipFn = Callable[[str, str, str], None]


class MirrorTarget(Target):
    def __init__(self, origin: Target, mirrors: Sequence[Target], on_skip: SkipFn | None = None) -> None:
        self.origin = origin
        self.mirrors = list(mirrors)
        self.name = origin.name
        #: Where skipped-mirror warnings go (default: the ``ociart`` logger).
        self.on_skip = on_skip
        self._down: set[int] = set()

    def _live(self) -> list[Target]:
        """The mirrors to try: a mirror found down (unreachable) costs one connection error, then is left out."""
        return [m for m in self.mirrors if id(m) not in self._down]

    def _skip(self, mirror: Target, what: str, exc: OciartError) -> None:
        if isinstance(exc, UnreachableError):
            self._down.add(id(mirror))
        if self.on_skip is not None:
            self.on_skip(mirror.name, what, str(exc))
        else:
            log.warning("mirror %s skipped for %s: %s", mirror.name, what, exc)

    # -- by digest: mirrors first ----------------------------------------------------------------------
    def resolve(self, repo: str, reference: str) -> Descriptor:
        return self.origin.resolve(repo, reference)  # a tag's meaning (and a digest's existence) at the origin

    def get_manifest(self, repo: str, reference: str) -> Content:
        if is_digest(reference):
            for m in self._live():
                try:
                    return m.get_manifest(repo, reference)  # verified against ``reference``
                except OciartError as exc:
                    self._skip(m, f"manifest {reference}", exc)
        return self.origin.get_manifest(repo, reference)

    def fetch_blob(self, repo: str, desc: Descriptor, dest: Path, progress: ProgressFn | None = None, *,
                   ingest: Ingest | None = None) -> None:
        for m in self._live():
            moved = [0]

            def count(n: int) -> None:
                moved[0] += n
                if progress:
                    progress(n)

            try:
                m.fetch_blob(repo, desc, dest, count, ingest=ingest)  # verified before it is visible
                return
            except OciartError as exc:
                if progress and moved[0]:
                    progress(-moved[0])  # a wrong or partial mirror download does not count
                self._skip(m, f"blob {desc.digest}", exc)
        self.origin.fetch_blob(repo, desc, dest, progress, ingest=ingest)

    # -- everything else: the origin ---------------------------------------------------------------------
    def has_blob(self, repo: str, desc: Descriptor) -> bool:
        return self.origin.has_blob(repo, desc)

    def open_blob(self, repo: str, desc: Descriptor) -> AbstractContextManager[Iterator[bytes]]:
        return self.origin.open_blob(repo, desc)

    def _store_manifest(self, repo: str, content: Content, tag: str | None,
                        expect: Expect = None) -> Mapping[str, str]:
        return self.origin._store_manifest(repo, content, tag, expect)

    def push_blob_stream(self, repo: str, desc: Descriptor, opener: Opener,
                         progress: ProgressFn | None = None) -> None:
        self.origin.push_blob_stream(repo, desc, opener, progress)

    def push_blob_chunks(self, repo: str, opener: Opener, media_type: str,
                         progress: ProgressFn | None = None) -> Descriptor:
        return self.origin.push_blob_chunks(repo, opener, media_type, progress)

    def push_blob_file(self, repo: str, path: Path, desc: Descriptor | None, progress: ProgressFn | None = None,
                       media_type: str = "application/octet-stream") -> Descriptor:
        return self.origin.push_blob_file(repo, path, desc, progress, media_type)

    def mount_blob(self, repo: str, desc: Descriptor, from_repo: str) -> bool:
        return self.origin.mount_blob(repo, desc, from_repo)

    def native_referrers(self, repo: str, digest: str, artifact_type: str | None) -> list[Descriptor] | None:
        return self.origin.native_referrers(repo, digest, artifact_type)

    def attach_native(self, repo: str, content: Content, tag: str | None) -> bool:
        return self.origin.attach_native(repo, content, tag)

    def writing(self) -> AbstractContextManager[None]:
        return self.origin.writing()

    def tags(self, repo: str) -> list[str]:
        return self.origin.tags(repo)

    def current_tag(self, repo: str, tag: str) -> str | None:
        return self.origin.current_tag(repo, tag)

    def delete_manifest(self, repo: str, digest: str) -> None:
        self.origin.delete_manifest(repo, digest)

    def delete_tag(self, repo: str, tag: str) -> None:
        self.origin.delete_tag(repo, tag)

    def same_store(self, other: Target) -> bool:
        inner = other.origin if isinstance(other, MirrorTarget) else other
        return self.origin.same_store(inner)

    def close(self) -> None:
        for t in (*self.mirrors, self.origin):
            t.close()

    def __getattr__(self, name: str) -> Any:  # the origin's own API (repositories, check_login, ...)
        return getattr(self.origin, name)
