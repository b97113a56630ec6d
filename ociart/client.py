"""The library API: one :class:`Client`, the same verbs as the CLI, returning pydantic models."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, JsonValue

from . import audit, limits
from .errors import InvalidContentError, InvalidReferenceError, NotFoundError, OciartError, UsageError
from .oci import Content, Descriptor, Index, Manifest
from .progress import Progress
from .reference import TAG_RE, Reference, check_digest, embedded_store_path, parse_reference
from .targets.auth import Credentials, remove_credentials, store_credentials
from .targets.base import Target
from .targets.layout import SWEEP_GRACE_SECONDS, LayoutTarget
from .targets.referrers import attach, is_scheme_tag, list_referrers
from .targets.referrers import delete as delete_graph
from .lineage.record import LineageOptions
from .packaging.image import FormLink
from .packaging.unpack import PulledFile
from .signing.results import Verification
from .transfer import collect_files, copy_graph, push_files
from .listing import Listing, list_store, parse_scope
from .targets.base import ABSENT, Absent, Expect, parse_expect  # noqa: F401 - re-exported for Client.tag

if TYPE_CHECKING:
    import httpx

    from .deploy.fetch import FetchResult
    from cryptography.hazmat.primitives.asymmetric import ec

    from .lineage.graph import Node
    from .lineage.record import Captured
    from .lifecycle import GcResult, RetentionPolicy
    from .lineage.statement import Statement
    from .promotion.models import HistoryEntry
    from .promotion.promote import PromotionResult
    from .signing.policy import Policy
    from .signing.service import AttestResult, SignResult
    from .signing.signers import Signer
    from .signing.verify import Trust

    #: What ``sign=`` accepts: a signer, a private key, or the path of a cosign key file (password from
    #: ``COSIGN_PASSWORD``).
    SignWith = Signer | ec.EllipticCurvePrivateKey | str | Path


def _audited(action: str, facts: Callable[[Any], dict[str, Any]]) -> Callable[[Any], Any]:
    """Log the decorated Client verb to the audit log (:mod:`ociart.audit`) when it returns or raises."""
    def wrap(fn: Any) -> Any:
        @functools.wraps(fn)
        def run(self: Any, ref: Any, *args: Any, **kwargs: Any) -> Any:
            with audit.action(action, str(ref)) as logged:
                result = fn(self, ref, *args, **kwargs)
                logged.update(facts(result))
            return result
        return run
    return wrap


class PushResult(Descriptor):
    """The pushed manifest's descriptor, and ``reference``: where it was pushed, pinned to its digest."""

    reference: str

    @property
    def ref(self) -> str:
        """The pinned ``repo@digest`` reference (``repo:tag@digest`` when a tag was pushed), for pull or verify."""
        return self.reference


class PullResult(BaseModel):
    reference: str
    digest: str
    files: list[PulledFile]
    #: What verified before pulling (``keys``/``trust``/``policy`` given to :meth:`Client.pull`).
    verification: Verification | None = None
    #: What a killed earlier pull of the same destination left in its staging store and this pull removed
    #: (paths relative to the destination; partial blobs still wanted are kept and resumed instead).
    cleaned: list[str] = []


class FileInfo(BaseModel):
    """A file (raw layer) or a packed directory (tar layer) as listed by inspect."""

    path: str
    size: int
    digest: str
    mediaType: str
    category: str | None = None
    packed: bool = False
    #: An ocicrypt-encrypted layer (``+encrypted``): ``digest`` and ``size`` are the ciphertext's.
    encrypted: bool = False
    #: How many recipients its layer key is wrapped for (read without a key).
    recipients: int | None = None


class Inspection(BaseModel):
    reference: str
    descriptor: Descriptor
    #: ociart kind, or ``model`` (ModelPack), ``modelkit`` (KitOps), ``generic`` (ORAS and others).
    kind: str
    manifest: dict[str, JsonValue]
    config: JsonValue = None
    files: list[FileInfo] = []
    #: ``image`` for a runnable image (the image form, a modelcar); its files are under ``mount_path``.
    form: str | None = None
    mount_path: str | None = None
    #: The other form of the same files (``push --with-image``, ``convert``): its artifactType says which.
    links: list[FormLink] = []


class FileChange(BaseModel):
    path: str
    old: str | None = None
    new: str | None = None


class DiffResult(BaseModel):
    old: str
    new: str
    added: list[FileChange]
    removed: list[FileChange]
    changed: list[FileChange]
    unchanged: int


class DeleteResult(BaseModel):
    reference: str
    digest: str
    #: Tags that pointed at the deleted manifest (they are gone with it).
    tags: list[str]
    tag_only: bool = False
    #: Referrers deleted with it (signatures, attestations, provenance, reports; recursively).
    referrers: list[str] = []
    #: Scheme tags removed with it: ``sha256-<hex>`` referrer indexes and legacy ``.sig``/``.att`` tags.
    scheme_tags: list[str] = []
    #: Blobs freed in a local store (embedded store, ``oci:`` layouts) and their total size in bytes.
    blobs: int = 0
    freed_bytes: int = 0


class TagResult(BaseModel):
    #: The source, pinned to the digest it resolved to once.
    reference: str
    digest: str
    #: The tags now pointing at ``digest``.
    tags: list[str]


class Client:
    """Entry point of the library.

    ``username``/``password`` apply only to ``registry`` (a ``host[:port]`` or several); without ``registry``, to
    the registry of the first reference given to this client (both registries of a :meth:`copy`). Every other
    registry gets credentials from the environment and Docker/containers credential files
    (see :mod:`ociart.targets.auth`). ``transport`` (an ``httpx.BaseTransport``) is used by every HTTP client
    ociart creates: registry requests and token fetches.
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
        registry: str | Sequence[str] | None = None,
        transport: httpx.BaseTransport | None = None,
        log_format: str = "text",
        mirrors: Sequence[str] = (),
        max_streams: int | None = None,
        chunk_size: int | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise UsageError("give both a username and a password, or neither")
        self._credentials = Credentials(username=username, password=password) if username is not None else None
        #: Hosts the explicit credentials are for; None until the first registry reference binds them.
        self._credential_hosts: frozenset[str] | None = (
            None if registry is None else frozenset([registry] if isinstance(registry, str) else registry))
        self._transport = transport
        self._plain_http = plain_http
        self._insecure = insecure
        self._ca_file = ca_file
        self._retry_budget = retry_budget
        self.concurrency = max(1, concurrency)
        #: Parallel ranged GETs per large blob (None: ``OCIART_MAX_STREAMS`` or 8; 1 = one stream).
        self.max_streams = max_streams
        #: Upload blobs to registries in resumable chunks of this many bytes (None: only blobs of 4 GiB or more).
        self.chunk_size = chunk_size
        self.progress_enabled = progress
        #: ``text`` or ``json`` (JSON event lines on stderr: :class:`~ociart.progress.Progress`).
        self.log_format = log_format
        #: ``host[:port]`` of registry mirrors, tried in order for manifests by digest and blobs
        #: (:mod:`ociart.targets.mirror`); tags, signatures and attestations always come from the origin.
        self.mirrors = [m.strip() for m in mirrors if m.strip()]
        self._active: Progress | None = None
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
        r = ref if isinstance(ref, Reference) else parse_reference(ref)
        self._bind_credentials(r)
        return r

    def _bind_credentials(self, *refs: Reference) -> None:
        """Explicit credentials without ``registry=`` are for the registry of the first reference given."""
        if self._credentials is not None and self._credential_hosts is None:
            hosts = frozenset(r.registry for r in refs if r.registry)
            if hosts:
                self._credential_hosts = hosts

    def _credentials_for(self, host: str) -> Credentials | None:
        return self._credentials if self._credential_hosts is not None and host in self._credential_hosts else None

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

            target: Target = RegistryTarget(
                ref.registry, credentials=self._credentials_for(ref.registry), plain_http=self._plain_http,
                insecure=self._insecure, ca_file=self._ca_file, retry_budget=self._retry_budget,
                transport=self._transport, max_streams=self.max_streams, chunk_size=self.chunk_size)
            if self.mirrors:
                from .targets.mirror import MirrorTarget

                target = MirrorTarget(target, [
                    RegistryTarget(m, credentials=self._credentials_for(m), plain_http=self._plain_http,
                                   insecure=self._insecure, ca_file=self._ca_file, retry_budget=self._retry_budget,
                                   transport=self._transport, max_streams=self.max_streams)
                    for m in self.mirrors if m != ref.registry],
                    on_skip=self._mirror_skipped)
            self._targets[key] = target
        return self._targets[key]

    def _mirror_skipped(self, mirror: str, what: str, error: str) -> None:
        message = f"mirror {mirror} skipped for {what}: {error}"
        if self._active is not None:
            self._active.warn(message, mirror=mirror, what=what, error=error)
        else:
            import logging

            logging.getLogger("ociart").warning("%s", message)

    def _progress(self) -> Progress:
        self._active = Progress(self.progress_enabled, log_format=self.log_format)
        return self._active

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

    @_audited("push", lambda r: {"reference": r.reference, "after": r.digest})
    def push(
        self,
        ref: str | Reference,
        paths: Sequence[str | Path],
        *,
        kind: str | None = None,
        artifact_type: str | None = None,
        annotations: dict[str, str] | None = None,
        config: str | Path | None = None,
        config_media_type: str = "application/vnd.oci.image.config.v1+json",
        metadata: Mapping[str, object] | None = None,
        reproducible: bool = False,
        small_file_threshold: int | None = None,
        lineage: LineageOptions | bool = True,
        subject: str | Reference | None = None,
        sign: SignWith | None = None,
        legacy_signature: str = "always",
        follow_symlinks: bool = False,
        as_image: bool = False,
        mount_path: str | None = None,
        platforms: Sequence[str] = (),
        base: str | Reference | None = None,
        with_image: str | Reference | None = None,
        encrypt_recipients: Sequence[str] = (),
        encrypt_filter: Sequence[str] = (),
    ) -> PushResult:
        """Push files. ``kind`` None or ``generic``: one layer per file (ORAS-style). Any other kind packs one
        directory as a typed artifact (models as CNCF ModelPack); ``metadata`` overrides ``ociart.yaml``.

        ``lineage`` (default on) records git state, run, parameters and inputs in annotations and attaches an
        in-toto/SLSA provenance statement as a referrer; ``subject`` attaches a report to the model it evaluated.
        ``sign`` (a :class:`~ociart.signing.Signer`, a private key, or a cosign key file path; its password from
        ``COSIGN_PASSWORD``) signs the pushed manifest (bundle referrer and, with ``legacy_signature="always"``, the
        ``.sig`` tag) and attaches the provenance as a signed attestation instead of an unsigned statement.

        ``as_image`` pushes the image form instead (:mod:`ociart.packaging.image`: an image index of runnable images
        holding the files under ``mount_path``, default ``/models``; ``platforms`` default ``linux/amd64`` and
        ``linux/arm64``; ``base`` a base image whose layers come first). ``with_image`` pushes the artifact form to
        ``ref`` and the image form to ``with_image``, each attached to the other as a referrer.

        Returns the manifest descriptor with ``.ref``, the pushed reference pinned to the digest.
        A symlink inside a pushed directory that leads outside it is refused unless ``follow_symlinks`` (symlinks
        inside the tree are followed and stored as regular files).

        ``encrypt_recipients`` (``jwe:PUB.pem``; RSA or EC) encrypt the layers ``encrypt_filter`` selects (default
        weights and datasets, and plain files of a generic push) in ocicrypt's format (docs/encryption.md).
        """
        r = self.ref(ref)
        if r.digest:
            raise UsageError(f"{r}: push to a tag, not a digest")
        from .lineage.record import LineageOptions as _Opts
        from .lineage.record import summary_annotations
        from .lineage.record import capture
        from .packaging import Kind, load_metadata

        dir_meta = load_metadata(Path(paths[0])) if len(paths) == 1 and Path(paths[0]).is_dir() else None
        chosen = kind or (dir_meta.kind if dir_meta else None) or "generic"
        try:
            k = Kind(chosen)
        except ValueError:
            raise UsageError(f"unknown kind {chosen!r}: choose from {', '.join(x.value for x in Kind)}") from None
        if subject is not None and k is not Kind.REPORT:
            raise UsageError("--subject attaches an evaluation report: use it with --kind report")
        from .encryption import EncryptionPlan

        encryption = EncryptionPlan.of(encrypt_recipients, encrypt_filter)
        signer = _signer(sign) if sign is not None else None
        if signer is not None and hasattr(signer, "prepare"):
            signer.prepare()  # keyless: get the certificate before uploading anything
        opts = lineage if isinstance(lineage, _Opts) else (_Opts() if lineage else None)
        captured = capture(self, opts) if opts else None
        extra = summary_annotations(captured) if captured else {}
        target = self.target(r)
        prehash = _has_versions(target, r.repository)
        subject_ref, subject_desc = None, None
        meta = None
        if subject is not None:
            subject_ref = self.ref(subject)
            subject_desc = self.resolve(subject_ref)
            if subject_ref.registry != r.registry or subject_ref.layout != r.layout:
                raise UsageError("--subject must be in the same registry or store as the report")
        if k is not Kind.GENERIC and dir_meta is None:
            missing = [str(p) for p in paths if not Path(p).exists()]
            if missing:
                raise NotFoundError(f"{missing[0]}: no such file or directory")
            raise UsageError(f"--kind {k.value} packs exactly one directory")
        image_opts = as_image or with_image is not None
        if (mount_path is not None or platforms or base is not None) and not image_opts:
            raise UsageError("--mount-path, --platform and --base shape the image form: add --as-image or --with-image")
        if image_opts and k in (Kind.GENERIC, Kind.REPORT):
            raise UsageError("--as-image and --with-image need a typed directory: add --kind model (or dataset, "
                             "preprocessor, checkpoint)")
        if as_image and with_image is not None:
            raise UsageError("--as-image pushes only the image form, --with-image both: choose one")
        if image_opts and subject is not None:
            raise UsageError("--subject attaches a report, which has no image form")
        base_image = None
        if base is not None:
            from .packaging.image import read_base

            base_ref = self.ref(base)
            base_image = read_base(self.target(base_ref), base_ref.repository, base_ref.digest or base_ref.tag
                                   or "latest", limits.CONFIG_BYTES)
        image_content: Content | None = None
        image_r, image_target = r, target
        with self._progress() as progress:
            if k is not Kind.GENERIC:
                assert dir_meta is not None
                if config is not None or artifact_type:
                    raise UsageError(f"--config and --artifact-type are set by --kind {k.value}")
                from .packaging.pack import DEFAULT_SMALL_FILE_THRESHOLD, push_directory

                meta = dir_meta.merged(dict(metadata or {}))
                if captured is not None:
                    captured.metrics = {**meta.metrics, **captured.metrics}
                if image_opts:
                    from .packaging.image import DEFAULT_MOUNT_PATH, DEFAULT_PLATFORMS, push_image

                    image_r = self.ref(with_image) if with_image is not None else r
                    if image_r.digest:
                        raise UsageError(f"{image_r}: push to a tag, not a digest")
                    image_target = self.target(image_r)
                    logged = audit.action("push", str(image_r)) if with_image is not None else nullcontext({})
                    with logged as facts:  # --with-image: the image form is a push of its own
                        image_content = push_image(
                            image_target, image_r.repository, image_r.tag or "latest", Path(paths[0]), k, meta,
                            mount=mount_path or DEFAULT_MOUNT_PATH,
                            platforms=list(platforms) or ([] if base_image is not None else list(DEFAULT_PLATFORMS)),
                            base=base_image, reproducible=reproducible, annotations=annotations,
                            base_annotations=extra, prehash=_has_versions(image_target, image_r.repository),
                            concurrency=self.concurrency, progress=progress, follow_symlinks=follow_symlinks,
                            threshold=DEFAULT_SMALL_FILE_THRESHOLD if small_file_threshold is None
                            else small_file_threshold, encryption=encryption)
                        facts.update({"reference": str(image_r.with_digest(image_content.digest)),
                                      "after": image_content.digest})
            if k is not Kind.GENERIC and as_image:
                assert image_content is not None
                content = image_content
            elif k is not Kind.GENERIC:
                content = push_directory(
                    target, r.repository, r.tag or "latest", Path(paths[0]), k, meta,
                    reproducible=reproducible, annotations=annotations, base_annotations=extra,
                    subject=subject_desc, prehash=prehash, concurrency=self.concurrency, progress=progress,
                    follow_symlinks=follow_symlinks, encryption=encryption,
                    threshold=DEFAULT_SMALL_FILE_THRESHOLD if small_file_threshold is None else small_file_threshold)
            else:
                files = collect_files(paths, follow_symlinks=follow_symlinks)
                cfg = None
                if config is not None:
                    if not Path(config).is_file():
                        raise NotFoundError(f"config file {config} not found")
                    cfg = (Path(config), config_media_type)
                content = push_files(target, r.repository, r.tag or "latest", files,
                                     artifact_type=artifact_type, annotations=annotations, config=cfg,
                                     concurrency=self.concurrency, progress=progress,
                                     manifest_annotations_extra=extra, prehash=prehash, encryption=encryption)
        if with_image is not None and image_content is not None:
            from .packaging.image import link_forms

            link_forms(target, r.repository, content.descriptor(), str(r.with_digest(content.digest)),
                       image_target, image_r.repository, image_content.descriptor(),
                       str(image_r.with_digest(image_content.digest)))
        if subject_ref is not None and subject_ref.repository != r.repository:
            # referrers are per repository: the report is also attached next to the model it evaluated
            copy_graph(target, r.repository, target, subject_ref.repository, content.descriptor(),
                       concurrency=self.concurrency)
        if signer is not None:
            from .signing.service import sign_digest

            sign_digest(target, r, content.descriptor(), signer, legacy_mode=legacy_signature)  # type: ignore[arg-type]
            if with_image is not None and image_content is not None:
                sign_digest(image_target, image_r, image_content.descriptor(), signer,  # type: ignore[arg-type]
                            legacy_mode=legacy_signature)
        if captured is not None and opts is not None and opts.provenance:
            self._record_provenance(target, r, content, captured, k.value, signer)
        if signer is not None and subject_ref is not None and subject_desc is not None and meta and meta.metrics:
            # a signed report attests its metrics about the model it evaluated: what promotion gates read
            from .promotion.gates import attest_evaluation

            dataset = next((i for i in (captured.inputs if captured else []) if i.uri and i.digest), None)
            attest_evaluation(self.target(subject_ref), subject_ref, subject_desc, signer, meta.metrics,
                              dataset_uri=dataset.uri if dataset else (meta.datasets[0] if meta.datasets else None),
                              dataset_digest="sha256:" + dataset.digest["sha256"] if dataset and dataset.digest
                              and "sha256" in dataset.digest else None, report=content.digest)
        if captured is not None and captured.tracker == "mlflow":
            _tag_mlflow_run(captured.run_id, r, content.digest)
        return PushResult(**content.descriptor().model_dump(exclude_none=True),
                          reference=str(r.with_digest(content.digest)))

    def _record_provenance(self, target: Target, r: Reference, content: Content, captured: Captured, kind: str,
                           signer: Signer | None = None) -> None:
        from .lineage.record import already_recorded, attach_statement, read_statements, statement

        name = f"{r.registry}/{r.repository}" if r.registry else (r.repository or str(r.layout))
        stmt = statement(captured, str(r), name, content.digest, kind)
        existing = read_statements(target, r.repository, content.digest, signed_only=signer is not None)
        if already_recorded(existing, stmt, captured.run_known):
            return
        if signer is None:
            attach_statement(target, r.repository, content.descriptor(), stmt)
        else:  # the signed attestation takes the place of the unsigned statement
            from .signing.service import attest_digest

            attest_digest(target, r, content.descriptor(), signer, stmt.to_bytes(), stmt.predicateType)

    def pull(self, ref: str | Reference, out_dir: str | Path = ".", *, include: Sequence[str] = (),
             filters: Sequence[str] = (), overwrite: bool = False, keys: Sequence[str | Path] = (),
             trust: Trust | None = None, policy: Policy | str | Path | None = None,
             max_size: int | None = None, decryption_keys: Sequence[str] = ()) -> PullResult:
        """Fetch (verified) and restore an artifact's files. ``filters``: weights, config, docs, code, dataset.

        With ``keys`` (public key files), ``trust`` or ``policy`` the signatures are verified first and exactly the
        verified digest is pulled (``result.verification`` says what verified). ``max_size``: the most bytes the
        restored files may add up to, replacing the default bound (the sizes the artifact declares; a gzip tar layer
        may expand :data:`~ociart.limits.GZIP_RATIO` times). ``decryption_keys`` (``KEY.pem[:PASSWORD]``; the CLI also
        ``OCIART_DECRYPTION_KEY``, comma-separated) open encrypted layers; they are needed only for encrypted layers
        the filters select."""
        from .encryption import decryption_keys as load_keys
        from .packaging.unpack import check_filters
        from .packaging.unpack import pull as unpack

        check_filters(filters)
        dec_keys = load_keys(decryption_keys)
        checked = None
        started = time.monotonic()
        with self._progress() as progress:
            if keys or trust is not None or policy is not None:
                checked = self.verify(ref, trust, keys=keys, policy=policy)
                ref = self.ref(ref).with_digest(checked.digest)
            pinned, node = self._image_manifest(ref)
            progress.event("resolved", reference=str(ref), digest=pinned.digest)
            if checked is not None:
                progress.event("verified", digest=checked.digest, signatures=len(checked.signatures),
                               attestations=len(checked.attestations))
            cleaned: list[str] = []
            files = unpack(self.target(pinned), pinned.repository, node, Path(out_dir), filters=filters,
                           include=include, overwrite=overwrite, concurrency=self.concurrency, progress=progress,
                           max_size=max_size, cleaned=cleaned, decryption_keys=dec_keys)
            progress.event("done", digest=pinned.digest, files=len(files),
                           bytes=sum(f.size for f in files if not f.skipped),
                           seconds=round(time.monotonic() - started, 3))
        return PullResult(reference=str(pinned), digest=pinned.digest or "", files=files, verification=checked,
                          cleaned=cleaned)

    def fetch(self, ref: str | Reference, out_dir: str | Path, *, keys: Sequence[str | Path] = (),
              trust: Trust | None = None, policy: Policy | str | Path | None = None,
              require_attestations: Sequence[str] = (), verify: bool = True, filters: Sequence[str] = (),
              include: Sequence[str] = (), verify_files: bool = False, replace: bool = True,
              cache: str | Path | None = None, link: bool = False,
              cache_max_size: int | None = None, decryption_keys: Sequence[str] = ()) -> FetchResult:
        """Deploy-time fetch (``ociart fetch``): resolve once, verify once, fetch by digest into ``out_dir``
        atomically and idempotently, optionally through a node cache; see :func:`ociart.deploy.fetch.fetch`."""
        from .deploy.fetch import fetch

        with self._progress() as progress:
            return fetch(self, str(ref), out_dir, keys=keys, trust=trust, policy=policy,
                         require_attestations=require_attestations, verify=verify, filters=filters,
                         include=include, verify_files=verify_files, replace=replace, cache=cache, link=link,
                         cache_max_size=cache_max_size, progress=progress, decryption_keys=decryption_keys)

    def _image_manifest(self, ref: str | Reference) -> tuple[Reference, Manifest]:
        """Resolve once; follow an index with a single child; return the pinned ref and the image manifest."""
        pinned, content = self.manifest(ref)
        node = content.parse()
        target = self.target(pinned)
        if isinstance(node, Index):
            from .packaging.image import choose_platform

            chosen = choose_platform(node) if len(node.manifests) > 1 else None
            if chosen is not None:
                node = Index(manifests=[chosen])
            if len(node.manifests) != 1:
                choices = ", ".join(m.digest for m in node.manifests[:5])
                raise UsageError(f"{pinned} is an index of {len(node.manifests)} manifests; pull one by digest "
                                 f"({choices})")
            child = node.manifests[0]
            content = target.get_manifest(pinned.repository, child.digest)
            node = content.parse()
            if not isinstance(node, Manifest):
                raise InvalidContentError(f"{pinned}: nested indexes are not supported by pull")
        return pinned, node

    def inspect(self, ref: str | Reference) -> Inspection:
        """Manifest, config, kind and layers. The image form (an index of one image per platform) is described by
        the image for this machine: its config, mount path and layers; the other form it is linked to, if any, is
        in ``links``."""
        pinned, content = self.manifest(ref)
        node = content.parse()
        target = self.target(pinned)
        config: JsonValue = None
        kind = "index"
        form: str | None = None
        mount: str | None = None
        files: list[FileInfo] = []
        image = node
        if isinstance(node, Index):
            from .packaging.image import choose_platform

            child = choose_platform(node)
            image = target.get_manifest(pinned.repository, child.digest).parse() if child is not None else node
        if isinstance(image, Manifest):
            from .encryption import is_encrypted, plain_media_type, recipient_count
            from .oci.mediatypes import IMAGE_CONFIG_TYPES, IMAGE_LAYER_TYPES
            from .packaging.image import L_MOUNT_PATH
            from .packaging.kinds import category, detect_kind, is_tar
            from .packaging.unpack import layer_path

            if image is node:
                kind = detect_kind(image.artifactType, image.config.mediaType, image.annotations or {},
                                   [layer.mediaType for layer in image.layers])
            if 2 < image.config.size <= limits.CONFIG_BYTES:
                from .signing.common import read_verified_blob

                raw = read_verified_blob(target, pinned.repository, image.config, limits.CONFIG_BYTES,
                                         f"config blob {image.config.digest}")
                try:
                    config = json.loads(raw)
                except ValueError:
                    config = None
            if image.config.mediaType in IMAGE_CONFIG_TYPES and any(
                    plain_media_type(layer.mediaType) in IMAGE_LAYER_TYPES for layer in image.layers):
                form = "image"
                kind = detect_kind(image.artifactType, image.config.mediaType, image.annotations or {})
                labels = (config.get("config") or {}).get("Labels") if isinstance(config, dict) else None
                mount = (labels or {}).get(L_MOUNT_PATH) if isinstance(labels, dict) else None  # type: ignore[assignment]
            from .packaging.foreign import restored_names

            fixed = restored_names(image, {i for i, layer in enumerate(image.layers) if layer_path(layer)})
            for i, layer in enumerate(image.layers):
                path = layer_path(layer) or fixed.get(i, "")
                packed = is_tar(layer.mediaType) and layer.title is None
                files.append(FileInfo(path=path,
                                      size=layer.size, digest=layer.digest, mediaType=layer.mediaType,
                                      category=category(layer.mediaType), packed=packed,
                                      encrypted=is_encrypted(layer),
                                      recipients=recipient_count(layer) if is_encrypted(layer) else None))
        from .packaging.image import form_links

        return Inspection(reference=str(pinned), descriptor=content.descriptor(), kind=kind,
                          manifest=json.loads(content.data), config=config, files=files, form=form,
                          mount_path=mount if isinstance(mount, str) else None,
                          links=form_links(target, pinned.repository, content.digest))

    def files(self, ref: str | Reference) -> tuple[Reference, dict[str, tuple[str, int]]]:
        """Every file of an artifact with its digest and size; packed (tar) layers are read to list members."""
        pinned, node = self._image_manifest(ref)
        from .packaging.unpack import file_digests

        return pinned, file_digests(self.target(pinned), pinned.repository, node)

    def diff(self, old: str | Reference, new: str | Reference) -> DiffResult:
        """Files added, removed and changed (by digest) between two artifacts."""
        old_ref, a = self.files(old)
        new_ref, b = self.files(new)
        added = [FileChange(path=p, new=b[p][0]) for p in sorted(b.keys() - a.keys())]
        removed = [FileChange(path=p, old=a[p][0]) for p in sorted(a.keys() - b.keys())]
        changed = [FileChange(path=p, old=a[p][0], new=b[p][0]) for p in sorted(a.keys() & b.keys())
                   if a[p][0] != b[p][0]]
        unchanged = len(a.keys() & b.keys()) - len(changed)
        return DiffResult(old=str(old_ref), new=str(new_ref), added=added, removed=removed, changed=changed,
                          unchanged=unchanged)

    def tags(self, repo: str | Reference, *, all: bool = False) -> list[str]:
        r = self.ref(repo)
        found = self.target(r, create=False).tags(r.repository)
        return found if all else [t for t in found if not is_scheme_tag(t)]

    def tag(self, src: str | Reference, tags: str | Sequence[str], *, expect: Expect = None) -> TagResult:
        """Point ``tags`` (in ``src``'s repository) at the manifest ``src`` resolves to, uploading nothing.

        ``expect`` makes it a compare-and-set, for exactly one tag: the digest the tag must point at now, or
        :data:`ABSENT` (it must not exist); a lost race raises :class:`~ociart.errors.ConflictError` whose
        ``current`` is the digest now there. ``None``: no check.
        """
        names = [tags] if isinstance(tags, str) else list(tags)
        if not names:
            raise UsageError("give at least one tag")
        for name in names:
            if not TAG_RE.fullmatch(name):
                raise InvalidReferenceError(f"invalid tag {name!r}: letters, digits, _ . - (up to 128)")
        if expect is not None:
            if len(names) != 1:
                raise UsageError("a compare-and-set (expect) moves exactly one tag")
            if isinstance(expect, str):
                check_digest(expect)
        r = self.ref(src)
        target = self.target(r, create=False)
        desc = target.resolve(r.repository, r.reference)  # once: every tag gets the same digest
        if r.digest and desc.digest != r.digest:
            raise InvalidContentError(f"{r}: resolved to {desc.digest}")
        for name in names:
            with audit.action("tag", str(r.with_tag(name))) as logged:
                logged["before"] = _tag_digest(target, r.repository, name) if expect is None else \
                    (None if isinstance(expect, Absent) else expect)
                target.tag(r.repository, name, desc, expect)
                logged["after"] = desc.digest
        return TagResult(reference=str(r.with_digest(desc.digest)), digest=desc.digest, tags=names)

    def ls(self, where: str | None = None, *, all: bool = False) -> Listing:
        """What a store holds: ``where`` None lists the default store (embedded, or ``OCIART_REGISTRY``),
        ``HOST[:PORT]`` every repository of a registry (``/v2/_catalog``), ``oci:PATH`` a layout, anything else one
        repository. ``all`` adds untagged manifests, referrers (signatures, attestations, provenance) and
        ``sha256-*`` scheme tags. See :mod:`ociart.listing` for how sizes are counted."""
        scope = parse_scope(where)
        target = self.target(scope, create=False)
        return list_store(target, [scope.repository] if scope.repository else None, all=all)

    @_audited("delete", lambda r: {"reference": r.reference, "before": r.digest,
                                   **({"tags": r.tags} if r.tags else {}), **({"tag_only": True} if r.tag_only else {})})
    def delete(self, ref: str | Reference, *, referrers: bool = True) -> DeleteResult:
        """Delete by digest (every tag on the manifest goes with it), or a tag alone where supported.

        By digest, ``referrers`` (default) also deletes what is attached to it, recursively, its legacy
        ``.sig``/``.att`` tags and its entry in a ``sha256-<hex>`` index; a local store frees at once the blobs
        only deleted manifests used (see :func:`ociart.targets.referrers.delete`)."""
        r = self.ref(ref)
        target = self.target(r, create=False)
        if r.digest:
            digest = r.digest
            target.resolve(r.repository, digest)  # clear not-found before deleting
            tags = [t for t in target.tags(r.repository)
                    if not is_scheme_tag(t) and _tag_points_at(target, r.repository, t, digest)]
            gone = delete_graph(target, r.repository, digest, referrers=referrers)
            return DeleteResult(reference=str(r), digest=digest, tags=tags, **gone.model_dump())
        if not r.tag:
            raise UsageError(f"{r}: give a tag or a digest to delete")
        digest = target.resolve(r.repository, r.tag).digest
        target.delete_tag(r.repository, r.tag)
        return DeleteResult(reference=str(r), digest=digest, tags=[r.tag], tag_only=True)

    def copy(self, src: str | Reference, dst: str | Reference, *, referrers: bool = True,
             decryption_keys: Sequence[str] = ()) -> Descriptor:
        """Copy an artifact with its referrers (signatures, attestations, provenance, reports) unless told not to.
        With ``decryption_keys`` an artifact with encrypted layers is decrypted instead (as :meth:`decrypt`: a new
        digest, no referrers); one with nothing encrypted is copied unchanged."""
        s, d = (parse_reference(x) if isinstance(x, str) else x for x in (src, dst))
        self._bind_credentials(s, d)  # credentials without registry= are for both registries of a copy
        if d.digest and s.digest and d.digest != s.digest:
            raise UsageError("destination digest differs from the source digest")
        src_t = self.target(s, create=False)
        dst_t = self.target(d)
        root = src_t.resolve(s.repository, s.reference)
        tag = d.tag or (s.tag if not d.digest else None) or (None if s.digest else "latest")
        with self._progress() as progress:
            if decryption_keys:
                from .encryption import decrypt_graph
                from .encryption import decryption_keys as load_keys

                content = decrypt_graph(src_t, s.repository, dst_t, d.repository, root, load_keys(decryption_keys),
                                        tag=tag, concurrency=self.concurrency, progress=progress,
                                        referrers=referrers)
                if content.digest != root.digest:
                    return content.descriptor()  # decrypted: a new artifact, the signatures are of the old one
            else:
                content = copy_graph(src_t, s.repository, dst_t, d.repository, root, tag=tag,
                                     concurrency=self.concurrency, progress=progress, referrers=referrers)
        if referrers:  # legacy cosign signatures live at a tag, not in the referrers graph
            from .signing.legacy import copy_legacy

            copy_legacy(src_t, s.repository, dst_t, d.repository, root.digest)
        return content.descriptor()

    def convert(self, src: str | Reference, dst: str | Reference, *, mount_path: str | None = None,
                platforms: Sequence[str] = (), base: str | Reference | None = None, link: bool = True) -> PushResult:
        """Push the image form of the artifact ``src`` to ``dst`` without its directory: layers are streamed from the
        source into tar layers (:func:`ociart.packaging.image.convert_to_image`). With ``link`` the two forms are
        attached to each other as referrers, as ``push --with-image`` does."""
        from .packaging.image import DEFAULT_MOUNT_PATH, DEFAULT_PLATFORMS, convert_to_image, link_forms, read_base

        s, d = self.ref(src), self.ref(dst)
        self._bind_credentials(s, d)
        if d.digest:
            raise UsageError(f"{d}: convert to a tag, not a digest")
        pinned, node = self._image_manifest(s)
        src_t = self.target(pinned, create=False)
        dst_t = self.target(d)
        base_image = None
        if base is not None:
            base_ref = self.ref(base)
            base_image = read_base(self.target(base_ref), base_ref.repository, base_ref.digest or base_ref.tag
                                   or "latest", limits.CONFIG_BYTES)
        with self._progress() as progress, audit.action("push", str(d)) as logged:
            content = convert_to_image(
                src_t, pinned.repository, node, dst_t, d.repository, d.tag or "latest",
                mount=mount_path or DEFAULT_MOUNT_PATH,
                platforms=list(platforms) or ([] if base_image is not None else list(DEFAULT_PLATFORMS)),
                base=base_image, concurrency=self.concurrency, progress=progress)
            logged.update({"reference": str(d.with_digest(content.digest)), "after": content.digest,
                           "converted_from": str(pinned)})
        if link:
            art_desc = src_t.resolve(pinned.repository, pinned.digest or pinned.reference)
            link_forms(src_t, pinned.repository, art_desc, str(pinned), dst_t, d.repository, content.descriptor(),
                       str(d.with_digest(content.digest)))
        return PushResult(**content.descriptor().model_dump(exclude_none=True),
                          reference=str(d.with_digest(content.digest)))

    def _rewrite_refs(self, src: str | Reference, dst: str | Reference
                      ) -> tuple[Reference, Reference, Target, Target, Descriptor, str | None]:
        s, d = (parse_reference(x) if isinstance(x, str) else x for x in (src, dst))
        self._bind_credentials(s, d)
        if d.digest:
            raise UsageError(f"{d}: the result has a new digest; give a tag")
        src_t = self.target(s, create=False)
        dst_t = self.target(d)
        root = src_t.resolve(s.repository, s.reference)
        return s, d, src_t, dst_t, root, d.tag or s.tag or "latest"

    def encrypt(self, src: str | Reference, dst: str | Reference, *, recipients: Sequence[str],
                filters: Sequence[str] = (), decryption_keys: Sequence[str] = (), rotate: bool = False) -> Descriptor:
        """Write ``dst``: ``src`` with its layers encrypted for exactly ``recipients`` (docs/encryption.md).

        Plaintext layers ``filters`` selects are encrypted; already encrypted layers have their keys re-wrapped
        (needs one current recipient's key in ``decryption_keys``; the blobs are shared) or, with ``rotate``,
        are re-encrypted with fresh keys (the way to revoke)."""
        from .encryption import EncryptionPlan, decryption_keys as load_keys, encrypt_graph

        plan = EncryptionPlan.of(recipients, filters)
        if plan is None:
            raise UsageError("ociart encrypt needs at least one --encrypt-recipient")
        keys = load_keys(decryption_keys)
        s, d, src_t, dst_t, root, tag = self._rewrite_refs(src, dst)
        with self._progress() as progress:
            content = encrypt_graph(src_t, s.repository, dst_t, d.repository, root, plan, keys=keys, rotate=rotate,
                                    tag=tag, concurrency=self.concurrency, progress=progress)
        return content.descriptor()

    def decrypt(self, src: str | Reference, dst: str | Reference, *, decryption_keys: Sequence[str] = ()
                ) -> Descriptor:
        """Write ``dst``: ``src`` with every encrypted layer replaced by its plaintext (HMAC- and digest-checked).
        With nothing encrypted, ``src`` is copied as it is."""
        from .encryption import decrypt_graph, decryption_keys as load_keys

        keys = load_keys(decryption_keys)
        s, d, src_t, dst_t, root, tag = self._rewrite_refs(src, dst)
        with self._progress() as progress:
            content = decrypt_graph(src_t, s.repository, dst_t, d.repository, root, keys, tag=tag,
                                    concurrency=self.concurrency, progress=progress)
        return content.descriptor()

    def sign(self, ref: str | Reference, signer: SignWith, *, legacy_signature: str = "always",
             annotations: Mapping[str, str] | None = None) -> SignResult:
        """Resolve ``ref`` once and sign its manifest digest: a Sigstore bundle referrer, and the legacy cosign
        ``.sig`` signature unless ``legacy_signature="never"``. ``signer``: a signer, a private key or a key file."""
        from .signing.service import sign

        return sign(self, ref, _signer(signer), legacy_mode=legacy_signature,  # type: ignore[arg-type]
                    annotations=dict(annotations) if annotations else None)

    def attest(self, ref: str | Reference, signer: SignWith, predicate_type: str,
               predicate: Mapping[str, JsonValue]) -> AttestResult:
        """Sign an in-toto ``predicate`` of ``predicate_type`` about ``ref``'s manifest digest (a bundle referrer)."""
        from .signing.service import attest

        return attest(self, ref, _signer(signer), predicate_type, dict(predicate))

    def verify(self, ref: str | Reference, trust: Trust | None = None, *, keys: Sequence[str | Path] = (),
               policy: Policy | str | Path | None = None, require_attestations: Sequence[str] = ()) -> Verification:
        """Verify ``ref``'s signatures and attestations with public key files (``keys``), a
        :class:`~ociart.signing.Trust`, or a policy (a :class:`~ociart.signing.Policy` or its YAML file); raises
        :class:`VerificationError` naming the reason."""
        from .signing.service import verify

        trust, policy = self._trust_or_policy(trust, keys, policy)
        return verify(self, ref, trust, policy=policy, require_attestations=tuple(require_attestations))

    def promote(self, src: str | Reference, to: str, trust: Trust | None = None, *, keys: Sequence[str | Path] = (),
                policy: Policy | str | Path | None = None, require_attestations: Sequence[str] = (),
                gates: Sequence[str] = (), expect: Expect = None, dry_run: bool = False,
                sign: SignWith | None = None, with_image: bool = False) -> PromotionResult:
        """Move tag ``to`` (in ``src``'s repository, or ``REPO:TAG`` elsewhere) to the digest ``src`` resolves to,
        once its gates pass (``keys``/``trust`` + ``require_attestations`` + ``gates`` like ``accuracy>=0.9``, or a
        ``policy``), by compare-and-set (``expect``; default: the value read first). Records a promotion statement
        (signed with ``sign``) and appends the tag's history. ``with_image`` moves the same tag of the linked image
        form too, after the same gates. See :mod:`ociart.promotion.promote`."""
        from .promotion.promote import promote

        trust, pol = self._trust_or_policy(trust, keys, policy)
        return promote(self, src, to, trust=trust, policy=pol, require_attestations=require_attestations,
                       gates=gates, expect=expect, dry_run=dry_run,
                       signer=_signer(sign) if sign is not None else None, with_image=with_image)

    def rollback(self, ref: str | Reference, trust: Trust | None = None, *, keys: Sequence[str | Path] = (),
                 policy: Policy | str | Path | None = None, require_attestations: Sequence[str] = (),
                 gates: Sequence[str] = (), expect: Expect = None, dry_run: bool = False,
                 sign: SignWith | None = None) -> PromotionResult:
        """Move ``REPO:TAG`` back to the digest before its current one, through the same gates; recorded as a
        promotion with ``rollback: true``."""
        from .promotion.promote import rollback

        trust, pol = self._trust_or_policy(trust, keys, policy)
        return rollback(self, ref, trust=trust, policy=pol, require_attestations=require_attestations, gates=gates,
                        expect=expect, dry_run=dry_run, signer=_signer(sign) if sign is not None else None)

    def history(self, ref: str | Reference) -> list[HistoryEntry]:
        """The promotions into ``REPO:TAG``, newest first (one read of the tag's history artifact)."""
        from .promotion.history import history

        r = self.ref(ref)
        if not r.tag or r.digest:
            raise UsageError(f"{r}: history takes REPO:TAG")
        return history(self.target(r, create=False), r.repository, r.tag)

    def _trust_or_policy(self, trust: Trust | None, keys: Sequence[str | Path],
                         policy: Policy | str | Path | None) -> tuple[Trust | None, Policy | None]:
        from .signing.verify import build_trust

        if keys:
            if trust is not None:
                raise UsageError("give keys or a trust, not both")
            trust = build_trust(keys=keys)
        if isinstance(policy, str | Path):
            from .signing.policy import load_policy

            policy = load_policy(Path(policy))
        return trust, policy

    def referrers(self, ref: str | Reference, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests that refer to ``ref`` (its subject), optionally of one artifactType."""
        r = self.ref(ref)
        target = self.target(r, create=False)
        digest = r.digest or target.resolve(r.repository, r.reference).digest
        return list_referrers(target, r.repository, digest, artifact_type)

    def attach(self, ref: str | Reference, content: Content) -> Descriptor:
        """Store a manifest with a ``subject`` next to ``ref``'s repository so that referrers finds it."""
        r = self.ref(ref)
        attach(self.target(r), r.repository, content)
        return content.descriptor()

    def sweep(self, store: str | Reference | None = None, *,
              grace_seconds: float = SWEEP_GRACE_SECONDS) -> tuple[int, int]:
        """Remove the blobs of a local store (default: the embedded store) that no manifest references and that are
        older than ``grace_seconds``, left by killed pushes or tag-only deletes; returns (blobs, bytes)."""
        r = self.ref(store) if store is not None else Reference(repository="", layout=embedded_store_path(),
                                                                 embedded=True)
        target = self.target(r, create=False)
        if not isinstance(target, LayoutTarget):
            raise UsageError(f"{r}: sweep works on the embedded store and oci: layouts; a registry has its own "
                             "garbage collection")
        return target.sweep(grace_seconds)

    def gc(self, policy: RetentionPolicy | str | Path, repositories: Sequence[str] | None = None, *,
           apply: bool = False, local: bool = False, grace_seconds: float | None = None,
           concurrency: int = 8) -> GcResult:
        """Retention (docs/lifecycle.md): plan what ``policy`` (a :class:`~ociart.lifecycle.RetentionPolicy` or its
        YAML file) keeps, archives and deletes in ``repositories`` (default: every repository of the registries the
        policy names, or with ``local`` of the embedded store); with ``apply`` carry the plan out, and with ``local``
        also sweep the store (unreferenced blobs, stale partial downloads, digest-cache rows of vanished files).
        ``concurrency``: parallel requests while planning and repairing."""
        from .lifecycle import collect, load_retention_policy

        if isinstance(policy, str | Path):
            policy = load_retention_policy(Path(policy))
        return collect(self, policy, repositories, apply=apply, local=local, grace_seconds=grace_seconds,
                       concurrency=concurrency)

    def provenance(self, ref: str | Reference) -> Statement:
        """The newest SLSA provenance statement attached to ``ref`` (an ``ociart.lineage.Statement``)."""
        from .lineage.record import read_statements

        pinned, content = self.manifest(ref)
        found = read_statements(self.target(pinned), pinned.repository, content.digest)
        if not found:
            raise NotFoundError(f"{pinned}: no provenance attached")
        return found[0]

    def lineage(self, ref: str | Reference, *, downstream: Sequence[str] | None = None, depth: int = 10) -> Node:
        """The lineage graph (``ociart.lineage.Node``): upstream from provenance statements, or with
        ``downstream`` (repositories to search) the artifacts whose recorded inputs include ``ref``."""
        from .lineage import graph

        if downstream is not None:
            return graph.downstream(self, str(self.ref(ref)), list(downstream), depth)
        return graph.upstream(self, str(self.ref(ref)), depth)

    def login(self, host: str, username: str, password: str) -> Path:
        """Check the credentials against the registry, then store them in Docker's config.json."""
        from .targets.registry import RegistryTarget

        probe = RegistryTarget(host, credentials=Credentials(username=username, password=password),
                               plain_http=self._plain_http, insecure=self._insecure, ca_file=self._ca_file,
                               retry_budget=self._retry_budget, transport=self._transport)
        try:
            probe.check_login()
        finally:
            probe.close()
        return store_credentials(host, username, password)

    def logout(self, host: str) -> bool:
        return remove_credentials(host)


def _signer(sign: SignWith) -> Signer:
    """A signer from what ``sign=`` accepts; a path is a cosign key file (password from ``COSIGN_PASSWORD``)."""
    from .signing.signers import as_signer, load_signing_key

    return load_signing_key(sign) if isinstance(sign, str | Path) else as_signer(sign)


def _has_versions(target: Target, repo: str) -> bool:
    """A registry repository that already has tags: files not in the digest cache are hashed before sending, so
    whatever an earlier version already uploaded is skipped. A new repository gets the faster streamed upload."""
    if isinstance(target, LayoutTarget):
        return False  # storing locally costs the same as hashing
    try:
        return bool(target.tags(repo))
    except OciartError:
        return False


def _tag_mlflow_run(run_id: str, ref: Reference, digest: str) -> None:
    """Link the MLflow run to the pushed digest: run tag ``ociart.<repository>`` = ``<ref>@<digest>``."""
    import sys

    mlflow: Any = sys.modules.get("mlflow")
    try:
        if mlflow is None:  # the run came from MLFLOW_RUN_ID (a job `mlflow run` started): tag it all the same
            import mlflow
        mlflow.MlflowClient().set_tag(run_id, f"ociart.{ref.repository}", str(ref.with_digest(digest)))
    except Exception:  # noqa: BLE001 - tracking is best effort; the push itself succeeded
        pass


def _tag_digest(target: Target, repo: str, tag: str) -> str | None:
    try:
        return target.resolve(repo, tag).digest
    except NotFoundError:
        return None


def _tag_points_at(target: Target, repo: str, tag: str, digest: str) -> bool:
    try:
        return target.resolve(repo, tag).digest == digest
    except NotFoundError:
        return False
