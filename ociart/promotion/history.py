"""The append-only promotion history of a tag, kept in the registry beside it (docs/spec.md "Promotion history").

Every tag that promotions move has one history artifact in the same repository, at the tag
:func:`history_tag` (``_promotions.<tag>``): an OCI manifest (artifactType :data:`HISTORY_ARTIFACT_TYPE`, empty
config) whose single layer is the :class:`History` document, every promotion into the tag oldest first. A promotion
appends by writing a new document that extends the old one and moving the history tag with a compare-and-set from
the manifest it read (annotation :data:`ANNOTATION_HISTORY_PREVIOUS` names it), so concurrent appends never lose an
entry. Reading the history is one manifest and one blob: no scan of the repository's manifests.
"""

from __future__ import annotations

import hashlib
import json

from ..errors import ConflictError, InvalidContentError, NotFoundError
from ..oci import Content, Descriptor, Manifest
from ..oci.mediatypes import ANNOTATION_CREATED
from ..targets.base import ABSENT, Expect, Target, bytes_opener
from ..targets.referrers import HISTORY_TAG_PREFIX
from ..transfer import push_manifest
from .models import (
    ANNOTATION_HISTORY_PREVIOUS,
    HISTORY_ARTIFACT_TYPE,
    HISTORY_MEDIA_TYPE,
    History,
    HistoryEntry,
)

#: A history document is read whole; refuse one larger than this (about 20,000 promotions).
HISTORY_BYTES = 16 << 20
#: Appends retried after losing the history tag's compare-and-set to another writer.
APPEND_ATTEMPTS = 8


def history_tag(tag: str) -> str:
    """The tag of ``tag``'s history artifact: ``_promotions.<tag>``, or ``_promotions.<sha256 hex of tag>`` when that
    would exceed the 128 characters a tag may have."""
    name = HISTORY_TAG_PREFIX + tag
    return name if len(name) <= 128 else HISTORY_TAG_PREFIX + hashlib.sha256(tag.encode()).hexdigest()


def read_history(target: Target, repo: str, tag: str) -> tuple[History, Descriptor | None]:
    """The history document of ``repo:tag`` and the manifest it was read from (None, empty history: no promotion
    into the tag yet)."""
    from ..signing.common import read_verified_blob

    try:
        desc = target.resolve(repo, history_tag(tag))
    except NotFoundError:
        return History(repository=repo, tag=tag), None
    node = target.get_manifest(repo, desc.digest).parse()
    where = f"{repo}:{history_tag(tag)}"
    if not isinstance(node, Manifest) or node.artifactType != HISTORY_ARTIFACT_TYPE or len(node.layers) != 1 \
            or node.layers[0].mediaType != HISTORY_MEDIA_TYPE:
        raise InvalidContentError(f"{where}: not a promotion history ({HISTORY_ARTIFACT_TYPE} with one "
                                  f"{HISTORY_MEDIA_TYPE} layer)")
    data = read_verified_blob(target, repo, node.layers[0], HISTORY_BYTES, f"promotion history {where}")
    try:
        doc = History.model_validate_json(data)
    except ValueError as exc:
        raise InvalidContentError(f"{where}: malformed promotion history: {str(exc).splitlines()[0]}") from None
    if doc.tag != tag:
        raise InvalidContentError(f"{where}: the history is of tag {doc.tag!r}, not {tag!r}")
    return doc, desc


def history(target: Target, repo: str, tag: str) -> list[HistoryEntry]:
    """Every promotion into ``repo:tag`` (rollbacks included), newest first."""
    doc, _ = read_history(target, repo, tag)
    return list(reversed(doc.entries))


def append(target: Target, repo: str, tag: str, entry: HistoryEntry) -> Descriptor:
    """Append ``entry`` to the history of ``repo:tag``; returns the new history manifest's descriptor.

    The history tag moves by compare-and-set from the manifest that was read; a lost race re-reads and appends again
    (at most :data:`APPEND_ATTEMPTS` times), so two promotions never drop each other's entries."""
    last: ConflictError | None = None
    for _ in range(APPEND_ATTEMPTS):
        doc, current = read_history(target, repo, tag)
        doc = doc.model_copy(update={"entries": [*doc.entries, entry]})
        data = json.dumps(doc.model_dump(mode="json", exclude_none=True), separators=(",", ":"),
                          ensure_ascii=False).encode()
        blob = Content.of(data, HISTORY_MEDIA_TYPE)
        layer = Descriptor(mediaType=HISTORY_MEDIA_TYPE, digest=blob.digest, size=blob.size)
        annotations = {ANNOTATION_CREATED: entry.time.strftime("%Y-%m-%dT%H:%M:%SZ")}
        if current is not None:
            annotations[ANNOTATION_HISTORY_PREVIOUS] = current.digest
        with target.writing():
            target.push_blob_stream(repo, layer, bytes_opener(data))
            content = push_manifest(target, repo, artifact_type=HISTORY_ARTIFACT_TYPE, layers=[layer],
                                    annotations=annotations)
        expect: Expect = current.digest if current is not None else ABSENT
        try:
            target.tag(repo, history_tag(tag), content.descriptor(), expect)
            return content.descriptor()
        except ConflictError as exc:
            last = exc
    assert last is not None
    raise last


__all__ = ["HISTORY_BYTES", "HISTORY_TAG_PREFIX", "append", "history", "history_tag",
           "read_history"]
