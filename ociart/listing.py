"""What a store holds: repositories, the artifacts in each (tagged, and with ``all`` untagged ones and
referrers), their kind, creation time and size.

Built on the optional target capabilities of :mod:`ociart.targets.base`: :class:`RepositoryLister` (a registry's
``/v2/_catalog``, a layout's ``index.json``) and :class:`ManifestLister` (layouts, which know untagged manifests).
A registry's manifests are found through its tags and, with ``all``, the referrers of what they point at.

Sizes: an artifact's ``size`` is its manifest plus every distinct blob it references (config and layers; for an
index, its child manifests and their blobs too), each counted once. The listing's ``total`` counts every manifest
and blob of the listed artifacts once, however many artifacts share it: the bytes the listed content occupies.

Without ``all`` only manifests with a tag of their own are listed (not ``sha256-*``: the referrers fallback index,
cosign's ``.sig``/``.att``): untagged referrers (signatures, attestations, provenance) and untagged manifests are not.
A report pushed by tag with a subject is listed, since it has a tag.
"""

from __future__ import annotations

from pydantic import BaseModel

from . import limits
from .errors import InvalidContentError, NotFoundError, UsageError
from .oci import Content, Descriptor, Index, Manifest
from .oci.mediatypes import ANNOTATION_CREATED
from .reference import Reference, _is_host, parse_reference
from .targets.base import ManifestLister, RepositoryLister, Target
from .targets.referrers import is_fallback_tag, is_scheme_tag, list_referrers

#: Layer media type of cosign's legacy ``.att`` attestations (a DSSE envelope).
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"


class ListedArtifact(BaseModel):
    """One manifest (or index) of a repository, as ``ls`` shows it."""

    repository: str
    #: Tags pointing at it (sorted); empty for an untagged manifest or a referrer.
    tags: list[str]
    digest: str
    mediaType: str
    artifactType: str | None = None
    #: ociart kind (model, dataset, ...), ``modelkit``, ``generic``, ``index``, ``signature``, ``attestation``,
    #: ``provenance`` or ``referrers-index`` (the ``sha256-<hex>`` fallback index).
    kind: str
    #: ``org.opencontainers.image.created`` of the manifest, when set.
    created: str | None = None
    #: The manifest plus its distinct blobs (and child manifests of an index), in bytes.
    size: int
    #: For a referrer: the digest of the manifest it refers to.
    subject: str | None = None


class Listing(BaseModel):
    #: The store listed: ``embedded store``, ``oci:PATH`` or the registry host.
    location: str
    repositories: list[str]
    artifacts: list[ListedArtifact]
    #: Bytes of every manifest and blob of the listed artifacts, each counted once.
    total: int


def parse_scope(where: str | None) -> Reference:
    """``ls``'s argument as a reference whose ``repository`` is '' for "every repository of this store".

    None: the default store (the embedded store, or ``OCIART_REGISTRY`` when set); ``HOST[:PORT]``: a whole
    registry; ``oci:PATH``: a layout; anything else: one repository (a tag or digest is refused).
    """
    if where is None or where == "":
        ref = parse_reference("x")
        return Reference(repository="", registry=ref.registry, layout=ref.layout, embedded=ref.embedded)
    host = where.rstrip("/")
    if "/" not in host and _is_host(host) and not where.startswith("oci:"):
        return Reference(repository="", registry=host)
    ref = parse_reference(where)
    if ref.tag or ref.digest:
        if ref.layout is not None and not ref.embedded:
            raise UsageError(f"{where}: list a layout as oci:PATH, without a name")
        raise UsageError(f"{where}: ls lists a repository or a store; use `ociart inspect` for one artifact")
    return ref


def list_store(target: Target, repositories: list[str] | None = None, *, all: bool = False) -> Listing:
    """List ``repositories`` of ``target`` (None: every repository the store can name)."""
    named = repositories is not None
    if repositories is None:
        if not isinstance(target, RepositoryLister):
            raise UsageError(f"{target.name} cannot list its repositories; name one")
        repositories = target.repositories()
    artifacts: list[ListedArtifact] = []
    counted: dict[str, int] = {}
    for repo in repositories:
        try:
            found = _list_repository(target, repo, all)
        except NotFoundError:
            if named:
                raise
            continue  # in the catalog, but without tags now (every manifest deleted)
        for item, parts in found:
            artifacts.append(item)
            counted.update(parts)
    return Listing(location=target.name, repositories=list(repositories), artifacts=artifacts,
                   total=sum(counted.values()))


def _list_repository(target: Target, repo: str, all: bool) -> list[tuple[ListedArtifact, dict[str, int]]]:
    if isinstance(target, ManifestLister):
        entries = [(m.descriptor, list(m.tags)) for m in target.manifests(repo)]
    else:
        by_digest: dict[str, tuple[Descriptor, list[str]]] = {}
        for tag in target.tags(repo):
            if not all and is_scheme_tag(tag):
                continue  # not shown: spare the request
            try:
                desc = target.resolve(repo, tag)
            except NotFoundError:
                continue  # deleted meanwhile
            by_digest.setdefault(desc.digest, (desc, []))[1].append(tag)
        entries = list(by_digest.values())
    out: list[tuple[ListedArtifact, dict[str, int]]] = []
    seen: set[str] = set()
    queue = list(entries)
    while queue:
        desc, tags = queue.pop(0)
        shown_tags = sorted(t for t in tags if all or not is_scheme_tag(t))
        if desc.digest in seen or not (all or shown_tags):
            continue  # without --all: only what has a tag of its own (not sha256-*)
        seen.add(desc.digest)
        try:
            content = target.get_manifest(repo, desc.digest)
        except NotFoundError:
            continue  # an index entry whose manifest blob is gone
        node = content.parse()
        subject = node.subject.digest if node.subject is not None else None
        if all and not isinstance(target, ManifestLister):
            queue += [(r, []) for r in list_referrers(target, repo, desc.digest) if r.digest not in seen]
        parts = _parts(target, repo, content, node, 0)
        out.append((ListedArtifact(
            repository=repo, tags=shown_tags, digest=content.digest, mediaType=content.media_type,
            artifactType=node.artifactType, kind=artifact_kind(node, tags),
            created=(node.annotations or {}).get(ANNOTATION_CREATED), size=sum(parts.values()), subject=subject),
            parts))
    return out


def _parts(target: Target, repo: str, content: Content, node: Manifest | Index, depth: int) -> dict[str, int]:
    """Digest -> size of the manifest and everything it references, each once."""
    parts = {content.digest: content.size}
    if isinstance(node, Manifest):
        for blob in [node.config, *node.layers]:
            parts.setdefault(blob.digest, blob.size)
        return parts
    for child in node.manifests:
        if child.digest in parts:
            continue
        if depth >= limits.INDEX_DEPTH:
            parts[child.digest] = child.size
            continue
        try:
            child_content = target.get_manifest(repo, child.digest)
            parts.update(_parts(target, repo, child_content, child_content.parse(), depth + 1))
        except (NotFoundError, InvalidContentError):
            parts[child.digest] = child.size  # not in this store (a partial copy) or not a manifest
    return parts


def artifact_kind(node: Manifest | Index, tags: list[str] | None = None) -> str:
    """A label for listings: signatures and attestations (both cosign formats), provenance statements, the
    referrers fallback index, else the artifact's kind as ``inspect`` names it."""
    from .lineage.statement import INTOTO_MEDIA_TYPE, SLSA_PROVENANCE
    from .oci.mediatypes import ANNOTATION_BUNDLE_PREDICATE_TYPE, SIGSTORE_BUNDLE

    annotations = node.annotations or {}
    if isinstance(node, Index):
        return "referrers-index" if any(is_fallback_tag(t) for t in tags or []) else "index"
    artifact_type = node.artifactType or node.config.mediaType
    if artifact_type == SIGSTORE_BUNDLE:
        from .signing.bundle import COSIGN_SIGN_PREDICATE

        signed = annotations.get(ANNOTATION_BUNDLE_PREDICATE_TYPE)
        return "signature" if signed in (None, COSIGN_SIGN_PREDICATE) else "attestation"
    if artifact_type == INTOTO_MEDIA_TYPE:
        from .lineage.record import A_PREDICATE_TYPE

        return "provenance" if annotations.get(A_PREDICATE_TYPE) == SLSA_PROVENANCE else "attestation"
    layer_types = {layer.mediaType for layer in node.layers}
    from .signing.legacy import SIMPLESIGNING_MEDIA_TYPE

    if layer_types and layer_types <= {SIMPLESIGNING_MEDIA_TYPE}:
        return "signature"
    if layer_types and layer_types <= {DSSE_ENVELOPE}:
        return "attestation"
    from .packaging.kinds import detect_kind

    return detect_kind(node.artifactType, node.config.mediaType, annotations)
