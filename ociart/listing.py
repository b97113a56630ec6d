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
        listed = [(m.descriptor, list(m.tags)) for m in target.manifests(repo)]
    else:
        listed = _tagged(target, repo, all)
    out: list[tuple[ListedArtifact, dict[str, int]]] = []
    seen: set[str] = set()
    queue = list(listed)
    while queue:
        desc, tags = queue.pop(0)
        shown_tags = sorted(t for t in tags if all or not is_scheme_tag(t))
        if desc.digest in seen or not (all or shown_tags):
            continue  # without --all: only what has a tag of its own (not sha256-*)
        seen.add(desc.digest)
        found = describe(target, repo, desc, tags, all=all)
        if found is None:
            continue  # an index entry whose manifest blob is gone
        if all and not isinstance(target, ManifestLister):
            queue += [(r, []) for r in list_referrers(target, repo, desc.digest) if r.digest not in seen]
        out.append(found)
    return out


def describe(target: Target, repo: str, desc: Descriptor, tags: list[str], *,
             all: bool = False) -> tuple[ListedArtifact, dict[str, int]] | None:
    """One artifact as ``ls`` lists it (its manifest read once), with the digest -> size of what it references;
    None when its manifest is gone. ``tags``: the tags pointing at it (scheme tags shown only with ``all``)."""
    try:
        content = target.get_manifest(repo, desc.digest)
    except NotFoundError:
        return None
    node = content.parse()
    subject = node.subject.digest if node.subject is not None else None
    parts = _parts(target, repo, content, node, 0)
    return ListedArtifact(
        repository=repo, tags=sorted(t for t in tags if all or not is_scheme_tag(t)), digest=content.digest,
        mediaType=content.media_type, artifactType=node.artifactType, kind=artifact_kind(node, tags),
        created=(node.annotations or {}).get(ANNOTATION_CREATED), size=sum(parts.values()), subject=subject), parts


def entries(target: Target, repositories: list[str] | None = None) -> list[tuple[str, Descriptor, list[str]]]:
    """(repository, descriptor, tags) of every manifest a store names, without reading any manifest: for a
    layout one read of ``index.json`` (untagged entries, the referrers, come with repository ''), for a registry
    each repository's tags resolved. None: every repository the store can name. For paging through large stores
    (``ociart ui``): :func:`describe` then reads only the manifests shown."""
    if repositories is None and not isinstance(target, RepositoryLister):
        raise UsageError(f"{target.name} cannot list its repositories; name one")
    out: list[tuple[str, Descriptor, list[str]]] = []
    if isinstance(target, ManifestLister):
        embedded = getattr(target, "embedded", False)
        wanted = None if repositories is None else set(repositories)
        for m in target.manifests(""):  # one pass: every entry, tags as index.json names them
            if not m.tags:
                out.append(("", m.descriptor, []))
                continue
            by_repo: dict[str, list[str]] = {}
            for name in m.tags:
                repo, _, tag = name.rpartition(":") if embedded else ("", "", name)
                by_repo.setdefault(repo, []).append(tag)
            out += [(repo, m.descriptor, tags) for repo, tags in by_repo.items() if wanted is None or repo in wanted]
        return out
    assert isinstance(target, RepositoryLister) or repositories is not None
    for repo in repositories if repositories is not None else target.repositories():  # type: ignore[union-attr]
        try:
            out += [(repo, d, sorted(t)) for d, t in _tagged(target, repo, False)]
        except NotFoundError:
            continue  # in the catalog, but without tags now
    return out


def _tagged(target: Target, repo: str, all: bool) -> list[tuple[Descriptor, list[str]]]:
    """A registry repository's manifests by digest, with their tags (scheme tags only with ``all``)."""
    by_digest: dict[str, tuple[Descriptor, list[str]]] = {}
    for tag in target.tags(repo):
        if not all and is_scheme_tag(tag):
            continue  # not shown: spare the request
        try:
            desc = target.resolve(repo, tag)
        except NotFoundError:
            continue  # deleted meanwhile
        by_digest.setdefault(desc.digest, (desc, []))[1].append(tag)
    return list(by_digest.values())


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
