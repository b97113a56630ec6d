"""``promotedTo`` (a verification policy rule's field): a digest passes only while it is promoted into one of the
named tags of its repository (docs/promotion.md "Deploy-time check"). For a tag, all three must hold:

* the tag points at the digest now;
* the newest entry of the tag's history names the digest (after a rollback the demoted digest no longer passes);
* the promotion record that entry names is attached to the digest, is an attestation of
  :data:`~ociart.promotion.models.PROMOTION_PREDICATE` into that tag, and verifies under the rule's trust (an unsigned
  record, or one by another signer, does not count).

``verify``, ``pull --policy`` and ``fetch`` reach this through :func:`ociart.signing.service.verify`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from ..errors import VerificationError
from ..targets.base import Target
from .history import history
from .models import PROMOTION_PREDICATE, Promotion

if TYPE_CHECKING:
    from ..signing.verify import Trust


def promoted_reason(target: Target, repo: str, digest: str, tag: str, trust: Trust) -> str | None:
    """None when ``repo@digest`` is currently promoted into ``tag`` by a signed record; else why not."""
    from ..signing.verify import verified_statements

    current = target.current_tag(repo, tag)
    if current != digest:
        return f"tag {tag!r} points at {current or 'nothing (no such tag)'}"
    entries = history(target, repo, tag)
    if not entries:
        return f"no promotion into {tag!r} is recorded (the tag was not moved by `ociart promote`)"
    newest = entries[0]
    if newest.digest != digest:
        return f"the newest promotion into {tag!r} names {newest.digest}"
    if newest.record is None:
        return f"the newest promotion into {tag!r} has no record"
    rejected: list[str] = []
    for verified, stmt in verified_statements(target, repo, digest, trust, PROMOTION_PREDICATE, rejected):
        if verified.source != newest.record:
            continue
        try:
            pred = Promotion.model_validate(stmt.predicate or {})
        except ValidationError:
            return f"promotion record {newest.record} is malformed"
        if pred.target.tag != tag:
            return f"promotion record {newest.record} is into tag {pred.target.tag!r}, not {tag!r}"
        return None
    why = f" ({'; '.join(rejected)})" if rejected else ""
    return (f"promotion record {newest.record} into {tag!r} is not signed by a trusted signer"
            f"{' (it is unsigned)' if not newest.signed else ''}{why}")


def check_promoted(target: Target, repo: str, digest: str, tags: Sequence[str], trust: Trust,
                   label: str) -> list[str]:
    """The tags of ``tags`` into which ``repo@digest`` is currently promoted (at least one, else
    :class:`VerificationError` naming each tag's reason)."""
    ok: list[str] = []
    reasons: list[str] = []
    for tag in tags:
        why = promoted_reason(target, repo, digest, tag, trust)
        if why is None:
            ok.append(tag)
        else:
            reasons.append(why)
    if not ok:
        raise VerificationError(f"{label}: not promoted to {' or '.join(tags)}: {'; '.join(reasons)}", reasons)
    return ok


__all__ = ["check_promoted", "promoted_reason"]
