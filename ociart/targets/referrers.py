"""Referrers (OCI 1.1 ``subject``), written once: attach, list, detach, the tag-schema fallback index, cascade delete.

Signing, lineage, reports, copy, delete and retention all go through these functions; the stores only provide
hooks (:meth:`~ociart.targets.base.Target.native_referrers`, :meth:`~ociart.targets.base.Target.attach_native`,
:meth:`~ociart.targets.base.Target.delete_local`):

* a registry with the referrers API lists them itself (``GET /v2/<repo>/referrers/<digest>``, paginated, with the
  ``artifactType`` filter); one without it (distribution 2.8.2) gets the distribution-spec v1.1.1 tag schema: an
  OCI index at ``sha256-<subject hex>`` listing each referrer's descriptor (:func:`fallback_tag`);
* a layout (the embedded store, ``oci:`` directories) lists every ``index.json`` entry whose manifest has the
  subject, tagged or not; attaching adds an untagged entry.

Tag names of the schemes live here too: :func:`fallback_tag` and the legacy cosign ``sha256-<hex>.sig`` /
``.att`` tags (:func:`legacy_tag`), hidden by ``tags`` (:func:`is_scheme_tag`) and removed by a cascading delete.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Sequence

from pydantic import BaseModel

from ..errors import InvalidContentError, NotFoundError, RegistryError
from ..oci import Content, Descriptor, Index, Manifest
from .base import Target

#: Suffixes of cosign's tag-based attachments (signatures, attestations) next to ``sha256-<hex>``.
LEGACY_SUFFIXES = (".sig", ".att")
_SCHEME_TAG = re.compile(r"sha(256|512)-[0-9a-f]{64,128}(\.[a-z]+)?")
_FALLBACK_TAG = re.compile(r"sha256-[0-9a-f]{64}")


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for a subject (distribution-spec v1.1.1): ``sha256-<hex>``."""
    alg, _, hex_ = digest.partition(":")
    return f"{alg}-{hex_}"


def legacy_tag(digest: str, suffix: str = ".sig") -> str:
    """cosign's tag-based attachment of ``digest``: ``sha256-<hex>.sig`` (signatures), ``.att`` (attestations)."""
    return fallback_tag(digest) + suffix


def legacy_subject(tag: str, suffix: str = ".sig") -> str | None:
    """The subject digest a cosign legacy tag names (``sha256-<hex>.sig`` → ``sha256:<hex>``), else None."""
    m = _SCHEME_TAG.fullmatch(tag)
    if m is None or not tag.endswith(suffix) or m.group(2) != suffix:
        return None
    return "sha" + m.group(1) + ":" + tag[len("sha") + len(m.group(1)) + 1:-len(suffix)]


def scheme_tags(digest: str) -> list[str]:
    """Every tag a scheme derives from ``digest``: the fallback index and the legacy ``.sig``/``.att`` tags."""
    return [fallback_tag(digest), *(legacy_tag(digest, s) for s in LEGACY_SUFFIXES)]


#: Tag prefix of a tag's promotion history artifact (:mod:`ociart.promotion.history`): machinery, not a version.
HISTORY_TAG_PREFIX = "_promotions."


def is_scheme_tag(tag: str) -> bool:
    """A tag of ociart's or cosign's machinery, not a version someone pushed: a referrer or signature scheme tag
    (``sha256-<hex>``, ``sha256-<hex>.sig``, ...) or a promotion history (``_promotions.<tag>``). Hidden by ``ls`` and
    ``tags`` unless asked for, never counted as an artifact by gc."""
    return bool(_SCHEME_TAG.fullmatch(tag)) or tag.startswith(HISTORY_TAG_PREFIX)


def is_fallback_tag(tag: str) -> bool:
    """A tag of the referrers tag schema itself: exactly ``sha256-<hex>`` (no ``.sig``/``.att`` suffix)."""
    return bool(_FALLBACK_TAG.fullmatch(tag))


def referrer_descriptor(content: Content) -> Descriptor:
    """The entry a referrers index lists for ``content``: artifactType (else config mediaType), annotations copied."""
    node = content.parse()
    if not isinstance(node, Manifest):
        artifact_type = node.artifactType
    else:
        artifact_type = node.artifactType or node.config.mediaType
    return content.descriptor(artifactType=artifact_type, annotations=dict(node.annotations) if node.annotations
                              else None)


# -- list, attach, detach ---------------------------------------------------------------------------------------
def list_referrers(target: Target, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
    """Manifests whose ``subject`` is ``digest``, optionally of one artifactType (the store's own list, else the
    ``sha256-<hex>`` index)."""
    native = target.native_referrers(repo, digest, artifact_type)
    if native is not None:
        return native
    return [e for e in _fallback_entries(target, repo, digest) if not artifact_type or e.artifactType == artifact_type]


def referrer_tree(target: Target, repo: str, digest: str) -> list[Descriptor]:
    """Every referrer of ``digest``, recursively (signatures of attestations, ...), deepest first."""
    out: list[Descriptor] = []
    seen = {digest}

    def walk(d: str) -> None:
        for ref in list_referrers(target, repo, d):
            if ref.digest in seen:
                continue
            seen.add(ref.digest)
            walk(ref.digest)
            out.append(ref)

    walk(digest)
    return out


def attach(target: Target, repo: str, content: Content, tag: str | None = None) -> None:
    """Write ``content`` (a manifest with a ``subject``; ``tag`` too when given) so that :func:`list_referrers`
    finds it: the store's own referrers list where there is one, else an entry in the ``sha256-<hex>`` index."""
    node = content.parse()
    if node.subject is None:
        raise InvalidContentError(f"manifest {content.digest} has no subject to attach to")
    if target.attach_native(repo, content, tag):
        return
    _edit_fallback(target, repo, node.subject.digest, add=referrer_descriptor(content))


def attach_many(target: Target, repo: str, contents: Sequence[Content]) -> None:
    """:func:`attach` each of ``contents`` (untagged, in order), with one ``sha256-<hex>`` index update per subject
    for all of them rather than one per referrer (``copy`` of many referrers)."""
    pending: dict[str, list[Descriptor]] = {}
    for content in contents:
        node = content.parse()
        if node.subject is None:
            raise InvalidContentError(f"manifest {content.digest} has no subject to attach to")
        if not target.attach_native(repo, content, None):
            pending.setdefault(node.subject.digest, []).append(referrer_descriptor(content))
    for subject, entries in pending.items():
        _edit_fallback(target, repo, subject, add=entries)


def detach(target: Target, repo: str, subject: str, referrer: str) -> bool:
    """Remove ``referrer`` from ``subject``'s ``sha256-<hex>`` index (deleted when it becomes empty); True when an
    entry went. The referrer manifest itself is left alone (see :func:`delete`)."""
    if not any(e.digest == referrer for e in _fallback_entries(target, repo, subject)):
        return False
    _edit_fallback(target, repo, subject, remove=referrer)
    return True


def _fallback_entries(target: Target, repo: str, subject: str) -> list[Descriptor]:
    try:
        index = target.get_manifest(repo, fallback_tag(subject)).parse()
    except NotFoundError:
        return []
    return list(index.manifests) if isinstance(index, Index) else []


def _edit_fallback(target: Target, repo: str, subject: str, *,
                   add: Descriptor | Sequence[Descriptor] | None = None, remove: str | None = None) -> None:
    """Add entries to (one write for all) or remove one entry from the ``sha256-<hex>`` index. Writers on this machine are serialised by a file lock;
    across machines the index is read back after each write and the update retried when another writer's version
    replaced it (the remaining window: two machines writing within one read-back)."""
    from filelock import FileLock

    from ..reference import default_home

    tag = fallback_tag(subject)
    lock_dir = default_home() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{target.name}/{repo}@{subject}".encode()).hexdigest()[:32]
    adds = [add] if isinstance(add, Descriptor) else list(add or [])

    def done(entries: list[Descriptor]) -> bool:
        have = {e.digest for e in entries}
        return all(a.digest in have for a in adds) if adds else remove not in have

    with FileLock(str(lock_dir / f"referrers-{key}.lock")):
        for _ in range(8):
            try:
                current = target.get_manifest(repo, tag)
            except NotFoundError:
                current = None
            node = current.parse() if current is not None else None
            entries = list(node.manifests) if isinstance(node, Index) else []
            if done(entries):
                return
            have = {e.digest for e in entries}
            entries = ([*entries, *(a for a in adds if a.digest not in have)] if adds
                       else [e for e in entries if e.digest != remove])
            if entries:
                target.put_manifest(repo, Content.from_model(Index(manifests=entries)), tag)
            elif current is not None:
                target.delete_manifest(repo, current.digest)  # the last referrer went: no empty index stays
            if done(_fallback_entries(target, repo, subject)):
                return
            time.sleep(random.uniform(0.05, 0.3))
    raise RegistryError(f"{target.name}: could not update the {tag} referrers index of {repo} "
                        "(concurrent writers kept replacing it)")


# -- cascading delete ---------------------------------------------------------------------------------------------
class Deletion(BaseModel):
    """What a delete removed besides the manifest itself."""

    #: Referrer manifests deleted with it (signatures, attestations, provenance, reports; recursively).
    referrers: list[str] = []
    #: Scheme tags removed: ``sha256-<hex>`` indexes and legacy ``.sig``/``.att`` tags.
    scheme_tags: list[str] = []
    #: Blobs removed from a local store (layouts only) and their total size.
    blobs: int = 0
    freed_bytes: int = 0


def delete(target: Target, repo: str, digest: str, *, referrers: bool = True) -> Deletion:
    """Delete the manifest ``repo@digest``; with ``referrers`` also everything attached to it (recursively), its
    scheme tags and, when it is itself a referrer, its entry in its subject's ``sha256-<hex>`` index.

    A layout decides reachability over its whole ``index.json`` and frees the blobs only deleted manifests used
    (:meth:`~ociart.targets.layout.LayoutTarget.delete_local`). On a registry the referrers go first, then the
    scheme tags, then the manifest; the registry collects blobs with its own garbage collection.
    """
    local = target.delete_local(repo, digest, referrers)
    if local is not None:
        return local
    if not referrers:
        target.delete_manifest(repo, digest)
        return Deletion()
    node = target.get_manifest(repo, digest).parse()
    tree = referrer_tree(target, repo, digest)
    out = Deletion()
    for ref in tree:
        _delete_if_present(target, repo, ref.digest)
        out.referrers.append(ref.digest)
    for d in [*(r.digest for r in tree), digest]:
        for tag in scheme_tags(d):
            try:
                found = target.resolve(repo, tag).digest
            except NotFoundError:
                continue
            _delete_if_present(target, repo, found)
            out.scheme_tags.append(tag)
    target.delete_manifest(repo, digest)
    if node.subject is not None:
        detach(target, repo, node.subject.digest, digest)
    return out


def _delete_if_present(target: Target, repo: str, digest: str) -> None:
    try:
        target.delete_manifest(repo, digest)
    except NotFoundError:
        pass


__all__ = [
    "Deletion",
    "LEGACY_SUFFIXES",
    "attach",
    "delete",
    "detach",
    "fallback_tag",
    "is_scheme_tag",
    "legacy_tag",
    "list_referrers",
    "referrer_descriptor",
    "referrer_tree",
    "scheme_tags",
]
