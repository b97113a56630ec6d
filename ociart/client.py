"""The library API: one :class:`Client`, the same verbs as the CLI, returning pydantic models."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .errors import InvalidContentError, NotFoundError, UsageError
from .oci import Content, Descriptor, Index, Manifest
from .progress import Progress
from .reference import Reference, parse_reference
from .targets.auth import Credentials, remove_credentials, store_credentials
from .targets.base import Target
from .targets.layout import LayoutTarget
from .transfer import PulledFile, collect_files, copy_graph, pull_files, push_files

#: Tags of referrer and signature schemes (hidden by `tags` unless asked).
SCHEME_TAG_PREFIX = "sha256-"


class PullResult(BaseModel):
    reference: str
    digest: str
    files: list[PulledFile]


class Inspection(BaseModel):
    reference: str
    descriptor: Descriptor
    manifest: dict[str, Any]
    config: Any = None


class DeleteResult(BaseModel):
    reference: str
    digest: str
    #: Tags that pointed at the deleted manifest (they are gone with it).
    tags: list[str]
    tag_only: bool = False


class Client:
    """Entry point of the library.

    Credentials given here apply to every registry this client talks to; otherwise they come from the
    environment and Docker/containers credential files (see :mod:`ociart.targets.auth`).
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        plain_http: bool = False,
        insecure: bool = False,
        ca_file: str | Path | None = None,
        concurrency: int = 4,
        progress: bool | None = False,
        retry_budget: float | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise UsageError("give both a username and a password, or neither")
        self._credentials = Credentials(username=username, password=password) if username is not None else None
        self._plain_http = plain_http
        self._insecure = insecure
        self._ca_file = ca_file
        self._retry_budget = retry_budget
        self.concurrency = max(1, concurrency)
        self.progress_enabled = progress
        self._targets: dict[str, Target] = {}

    # -- plumbing ----------------------------------------------------------------------------------
    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for t in self._targets.values():
            t.close()
        self._targets.clear()

    def ref(self, ref: str | Reference) -> Reference:
        return ref if isinstance(ref, Reference) else parse_reference(ref)

    def target(self, ref: Reference, *, create: bool = True) -> Target:
        if ref.layout is not None:
            key = f"layout:{ref.layout.resolve()}"
            if key not in self._targets:
                self._targets[key] = LayoutTarget(ref.layout, create=create or ref.embedded, embedded=ref.embedded)
            return self._targets[key]
        assert ref.registry is not None
        key = f"registry:{ref.registry}"
        if key not in self._targets:
            from .targets.registry import RegistryTarget

            self._targets[key] = RegistryTarget(
                ref.registry, credentials=self._credentials, plain_http=self._plain_http,
                insecure=self._insecure, ca_file=self._ca_file, retry_budget=self._retry_budget)
        return self._targets[key]

    def _progress(self) -> Progress:
        return Progress(self.progress_enabled)

    # -- verbs -------------------------------------------------------------------------------------
    def resolve(self, ref: str | Reference) -> Descriptor:
        r = self.ref(ref)
        desc = self.target(r, create=False).resolve(r.repository, r.reference)
        if r.digest and desc.digest != r.digest:
            raise InvalidContentError(f"{r}: resolved to {desc.digest}")
        return desc

    def manifest(self, ref: str | Reference) -> tuple[Reference, Content]:
        """Resolve once, then fetch the manifest by digest (verified). Returns the pinned reference."""
        r = self.ref(ref)
        target = self.target(r, create=False)
        digest = r.digest or target.resolve(r.repository, r.reference).digest
        return r.with_digest(digest), target.get_manifest(r.repository, digest)

    def push(
        self,
        ref: str | Reference,
        paths: Sequence[str | Path],
        *,
        artifact_type: str | None = None,
        annotations: dict[str, str] | None = None,
        config: str | Path | None = None,
        config_media_type: str = "application/vnd.oci.image.config.v1+json",
    ) -> Descriptor:
        r = self.ref(ref)
        if r.digest:
            raise UsageError(f"{r}: push to a tag, not a digest")
        files = collect_files(paths)
        cfg = None
        if config is not None:
            if not Path(config).is_file():
                raise NotFoundError(f"config file {config} not found")
            cfg = (Path(config), config_media_type)
        with self._progress() as progress:
            content = push_files(self.target(r), r.repository, r.tag or "latest", files,
                                 artifact_type=artifact_type, annotations=annotations, config=cfg,
                                 concurrency=self.concurrency, progress=progress)
        return content.descriptor()

    def pull(self, ref: str | Reference, out_dir: str | Path = ".", *, include: Sequence[str] = (),
             overwrite: bool = False) -> PullResult:
        pinned, content = self.manifest(ref)
        node = content.parse()
        target = self.target(pinned)
        if isinstance(node, Index):
            if len(node.manifests) != 1:
                choices = ", ".join(m.digest for m in node.manifests[:5])
                raise UsageError(f"{pinned} is an index of {len(node.manifests)} manifests; pull one by digest "
                                 f"({choices})")
            child = node.manifests[0]
            content = target.get_manifest(pinned.repository, child.digest)
            node = content.parse()
            if not isinstance(node, Manifest):
                raise InvalidContentError(f"{pinned}: nested indexes are not supported by pull")
        with self._progress() as progress:
            files = pull_files(target, pinned.repository, node, Path(out_dir), include=include,
                               overwrite=overwrite, concurrency=self.concurrency, progress=progress)
        return PullResult(reference=str(pinned), digest=pinned.digest or "", files=files)

    def inspect(self, ref: str | Reference) -> Inspection:
        pinned, content = self.manifest(ref)
        node = content.parse()
        config: Any = None
        if isinstance(node, Manifest) and node.config.size <= 4 << 20:
            target = self.target(pinned)
            if node.config.data is None and node.config.size > 2:
                with target.open_blob(pinned.repository, node.config) as chunks:
                    raw = b"".join(chunks)
                try:
                    config = json.loads(raw)
                except ValueError:
                    config = None
        return Inspection(reference=str(pinned), descriptor=content.descriptor(),
                          manifest=json.loads(content.data), config=config)

    def tags(self, repo: str | Reference, *, all: bool = False) -> list[str]:
        r = self.ref(repo)
        found = self.target(r, create=False).tags(r.repository)
        return found if all else [t for t in found if not t.startswith(SCHEME_TAG_PREFIX)]

    def delete(self, ref: str | Reference) -> DeleteResult:
        """Delete by digest (every tag on the manifest goes with it), or a tag alone where supported."""
        r = self.ref(ref)
        target = self.target(r, create=False)
        if r.digest:
            digest = r.digest
            target.resolve(r.repository, digest)  # clear not-found before deleting
            tags = [t for t in target.tags(r.repository) if _tag_points_at(target, r.repository, t, digest)]
            target.delete_manifest(r.repository, digest)
            return DeleteResult(reference=str(r), digest=digest, tags=tags)
        if not r.tag:
            raise UsageError(f"{r}: give a tag or a digest to delete")
        digest = target.resolve(r.repository, r.tag).digest
        target.delete_tag(r.repository, r.tag)
        return DeleteResult(reference=str(r), digest=digest, tags=[r.tag], tag_only=True)

    def copy(self, src: str | Reference, dst: str | Reference) -> Descriptor:
        s, d = self.ref(src), self.ref(dst)
        if d.digest and s.digest and d.digest != s.digest:
            raise UsageError("destination digest differs from the source digest")
        src_t = self.target(s, create=False)
        dst_t = self.target(d)
        root = src_t.resolve(s.repository, s.reference)
        tag = d.tag or (s.tag if not d.digest else None) or (None if s.digest else "latest")
        with self._progress() as progress:
            content = copy_graph(src_t, s.repository, dst_t, d.repository, root, tag=tag,
                                 concurrency=self.concurrency, progress=progress)
        return content.descriptor()

    def login(self, host: str, username: str, password: str) -> Path:
        """Check the credentials against the registry, then store them in Docker's config.json."""
        from .targets.registry import RegistryTarget

        probe = RegistryTarget(host, credentials=Credentials(username=username, password=password),
                               plain_http=self._plain_http, insecure=self._insecure, ca_file=self._ca_file,
                               retry_budget=self._retry_budget)
        try:
            probe.check_login()
        finally:
            probe.close()
        return store_credentials(host, username, password)

    def logout(self, host: str) -> bool:
        return remove_credentials(host)


def _tag_points_at(target: Target, repo: str, tag: str, digest: str) -> bool:
    try:
        return target.resolve(repo, tag).digest == digest
    except NotFoundError:
        return False
