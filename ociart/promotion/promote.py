"""``promote`` and ``rollback``: move a tag to a digest by compare-and-set once its gates pass, record the move (an
in-toto promotion statement attached to the digest, signed when a signer is given) and append it to the tag's
history (docs/promotion.md).

Order of a promotion, so that a failure never leaves a record of a move that did not happen:

1. the source is resolved once; every gate is checked against that digest; the target tag's current value is read
   (the expected value of the compare-and-set unless ``expect`` is given);
2. into another repository or registry, the graph (blobs mounted or copied, referrers, legacy signatures) is copied
   by digest, untagged;
3. the tag moves by compare-and-set to the identical manifest bytes (the store's answered digest checked);
4. the promotion record is attached to the digest, then the history appended, then the local audit log.

``with_image`` also moves the same tag in the repository of the source's image form (docs/spec.md §9: the
``application/vnd.ociart.image-form.v1`` referrer names it, and the image must name the source back with its
``application/vnd.ociart.artifact-form.v1`` referrer). The image passes the signature gate under the same trust
(metric and attestation gates are about the artifact, whose files the image carries); every gate of both is checked
before either tag moves. OCI has no multi-tag transaction: the artifact's tag moves first, then the image's, each by
compare-and-set with its own record and history; a lost race on the second names it and leaves the first moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..errors import NotFoundError, UsageError, VerificationError
from ..reference import TAG_RE, Reference, canonical_name, check_digest, parse_reference
from ..targets.base import ABSENT, Expect, Target, check_expected
from .gates import MetricGate, check_metric, evaluations, metric_values, parse_gate
from .history import append, history
from .models import (
    PROMOTION_PREDICATE,
    GateResult,
    HistoryEntry,
    Promotion,
    PromotionSource,
    PromotionTarget,
)

if TYPE_CHECKING:
    from ..client import Client
    from ..signing.policy import Policy
    from ..signing.signers import Signer
    from ..signing.verify import Trust


class PromotionResult(BaseModel):
    """What a promotion (or rollback, or dry run) did."""

    #: The target, pinned: ``repo:tag@digest``.
    reference: str
    #: The source as resolved once, pinned.
    source: str
    digest: str
    repository: str
    tag: str
    #: The target tag's digest before and after (None: absent). After a dry run or refusal ``after == before``.
    before: str | None
    after: str | None
    gates: list[GateResult]
    passed: bool
    dry_run: bool = False
    rollback: bool = False
    #: The promotion record (referrer manifest digest) and whether it is signed.
    record: str | None = None
    signed: bool = False
    actor: str
    #: With ``with_image``: the promotion of the image form into the same tag of its own repository.
    image: PromotionResult | None = None


@dataclass
class GateSpec:
    """What a promotion checks: from flags (``trust``, attestations, metric gates) or from a policy entry."""

    trust: Trust | None = None
    #: Who must have signed evaluations (None: ``trust``).
    evaluation_trust: Trust | None = None
    attestations: list[str] = field(default_factory=list)
    metrics: list[MetricGate] = field(default_factory=list)
    #: The policy entry's ``from`` globs (empty: any source).
    sources: list[str] = field(default_factory=list)
    #: Where the gates came from, for messages: ``flags`` or ``policy rule <name>``.
    origin: str = "flags"


def target_of(src: Reference, to: str) -> Reference:
    """``--to``: a bare tag (no ``/``, ``:`` or ``@``) is a tag in the source's repository; anything else is a
    reference to another repository or registry, which must name a tag."""
    if not any(c in to for c in "/:@"):
        if not TAG_RE.fullmatch(to):
            from ..errors import InvalidReferenceError

            raise InvalidReferenceError(f"invalid tag {to!r}: letters, digits, _ . - (up to 128)")
        return Reference(repository=src.repository, tag=to, registry=src.registry, layout=src.layout,
                         embedded=src.embedded)
    dst = parse_reference(to)
    if dst.digest or not dst.tag:
        raise UsageError(f"--to {to}: name the target tag (REPO:TAG), not a digest")
    return dst


def actor_name(signer: Signer | None) -> str:
    """Who acts: the signer's identity, else the OS user."""
    if signer is not None:
        return signer.describe()
    from ..audit import default_actor

    return default_actor()


def gate_spec(*, trust: Trust | None = None, policy: Policy | None = None, require_attestations: Sequence[str] = (),
              gates: Sequence[str] = (), target: Reference, tag: str) -> GateSpec:
    """The gates of a promotion into ``target``'s repository at ``tag``: from flags, or from the policy rule of the
    target repository and its first ``promotion`` entry whose ``to`` glob matches ``tag`` (none: refused)."""
    if policy is not None:
        if trust is not None or require_attestations or gates:
            raise UsageError("--policy excludes --key, --certificate-*, --require-attestation and --gate")
        from ..signing.policy import glob_regex

        rule_trust, rule = policy.trust_for(canonical_name(target))
        name = f"policy rule {rule.name or rule.repositories[0]!r}"
        entry = next((e for e in rule.promotion if glob_regex(e.to).fullmatch(tag)), None)
        if entry is None:
            raise VerificationError(f"{canonical_name(target)}:{tag}: {name} allows no promotion into tag {tag!r} "
                                    "(no promotion entry's `to` matches)")
        return GateSpec(trust=rule_trust, evaluation_trust=policy.signers_trust(rule, entry),
                        attestations=[*rule.attestations, *(a for a in entry.attestations
                                                            if a not in rule.attestations)],
                        metrics=[parse_gate(g) for g in entry.gates], sources=list(entry.from_), origin=name)
    metrics = [parse_gate(g) for g in gates]
    if trust is None and (require_attestations or metrics):
        raise UsageError("--require-attestation and --gate need a trusted signer: give --key, "
                         "--certificate-identity[-regexp] with --certificate-oidc-issuer[-regexp], or --policy")
    return GateSpec(trust=trust, attestations=list(require_attestations), metrics=metrics)


def check_gates(spec: GateSpec, target: Target, src: Reference, digest: str, *,
                rollback: bool = False) -> list[GateResult]:
    """Every gate of ``spec`` against ``src``'s repository at ``digest``; nothing short-circuits, so a refusal
    names every failing gate. A rollback's source is the tag's own earlier digest: the policy's ``from`` (where a
    promotion may come from) passes for it; every other gate is checked again."""
    from ..signing.policy import glob_regex
    from ..signing.verify import collect

    results: list[GateResult] = []
    if spec.sources and rollback:
        results.append(GateResult(gate="from", passed=True,
                                  detail="rollback to the digest the tag held before (recorded in its history)"))
    elif spec.sources:
        names = [n for n in (src.tag, canonical_name(src.with_tag(None)),
                             f"{canonical_name(src.with_tag(None))}:{src.tag}" if src.tag else None) if n]
        ok = any(glob_regex(p).fullmatch(n) for p in spec.sources for n in names)
        results.append(GateResult(gate="from", passed=ok,
                                  detail=f"source {' / '.join(names)} {'matches' if ok else 'matches none of'} "
                                         f"{', '.join(spec.sources)}"))
    if spec.trust is None:
        return results
    found = collect(target, src.repository, digest, spec.trust)
    if found.signatures:
        signers = sorted({s.signer for s in found.signatures})
        results.append(GateResult(gate="signature", passed=True, detail=f"signed by {', '.join(signers)}"))
    else:
        why = "; ".join(found.rejected) if found.rejected else "no signatures found"
        results.append(GateResult(gate="signature", passed=False, detail=f"no signature by a trusted signer ({why})"))
    have = {a.predicateType for a in found.attestations}
    for wanted in spec.attestations:
        ok = wanted in have
        results.append(GateResult(gate=f"attestation:{wanted}", passed=ok,
                                  detail="verified attestation found" if ok else
                                  f"no verified attestation of type {wanted} (verified: "
                                  f"{', '.join(sorted(have)) or 'none'})"))
    if spec.metrics:
        rejected: list[str] = []
        measured = metric_values(evaluations(target, src.repository, digest, spec.evaluation_trust or spec.trust,
                                             rejected))
        for gate in spec.metrics:
            results.append(check_metric(gate, measured))
    return results


def promote(client: Client, src: str | Reference, to: str, *, trust: Trust | None = None,
            policy: Policy | None = None, require_attestations: Sequence[str] = (), gates: Sequence[str] = (),
            expect: Expect = None, dry_run: bool = False, signer: Signer | None = None,
            with_image: bool = False, _rollback: bool = False) -> PromotionResult:
    """Promote ``src`` to ``to`` (a tag of its repository, or ``REPO:TAG`` elsewhere); see the module docstring.

    Raises :class:`VerificationError` naming every failing gate (nothing changed), :class:`ConflictError` naming the
    digest that won when the tag is not where it was expected."""
    s = src if isinstance(src, Reference) else parse_reference(src)
    d = target_of(s, to)
    client._bind_credentials(s, d)  # -u credentials are for both registries, as for copy
    tag = d.tag
    assert tag is not None
    if isinstance(expect, str):
        check_digest(expect)
    spec = gate_spec(trust=trust, policy=policy, require_attestations=require_attestations, gates=gates, target=d,
                     tag=tag)
    src_t = client.target(s, create=False)
    root = src_t.resolve(s.repository, s.reference)  # once: every gate and the move use this digest
    if s.digest and root.digest != s.digest:
        from ..errors import InvalidContentError

        raise InvalidContentError(f"{s}: resolved to {root.digest}")
    digest = root.digest
    dst_t = client.target(d, create=True)
    try:
        before = dst_t.current_tag(d.repository, tag)
    except NotFoundError:
        before = None
    where = f"{d.with_tag(None)}"
    if expect is not None:
        check_expected(where, tag, expect, before, digest)
    expected: Expect = expect if expect is not None else (before if before is not None else ABSENT)
    results = check_gates(spec, src_t, s, digest, rollback=_rollback)
    image_src: Reference | None = None
    if with_image:
        if any(c in to for c in "/:@"):
            raise UsageError("--with-image moves the same tag in the image form's own repository: give --to as a tag")
        image_src, image_gates = _image_form(client, src_t, s, digest, spec)
        results += image_gates
    failing = [g for g in results if not g.passed]
    actor = actor_name(signer)
    pinned_src = str(s.with_digest(digest))
    result = PromotionResult(reference=str(d.with_digest(digest)), source=pinned_src, digest=digest,
                             repository=canonical_name(d.with_tag(None)), tag=tag, before=before, after=before,
                             gates=results, passed=not failing, dry_run=dry_run, rollback=_rollback, actor=actor)
    if dry_run:
        return result
    image_before = None
    if image_src is not None:  # read both tags before either moves: the image's is its compare-and-set value
        image_before = client.target(image_src, create=False).current_tag(image_src.repository, tag)
    if failing:
        reasons = [f"{g.gate}: {g.detail}" for g in failing]
        _audit(client, "rollback" if _rollback else "promote", d, before, before, actor, "refused",
               {"source": pinned_src, "digest": digest, "failing": [g.gate for g in failing]})
        raise VerificationError(f"{d}: promotion of {digest} refused by {len(failing)} gate(s) ({spec.origin}): "
                                + "; ".join(reasons), reasons)
    if signer is not None and hasattr(signer, "prepare"):
        signer.prepare()  # keyless: the certificate before anything moves
    if (d.registry, d.layout, d.repository) != (s.registry, s.layout, s.repository):
        _carry(client, src_t, s, dst_t, d, root)
    from ..errors import ConflictError

    try:
        dst_t.tag(d.repository, tag, root, expected)
    except ConflictError as exc:
        _audit(client, "rollback" if _rollback else "promote", d, before, exc.current, actor, "conflict",
               {"source": pinned_src, "digest": digest})
        raise
    now = datetime.now(UTC).replace(microsecond=0)
    predicate = Promotion(source=PromotionSource(reference=str(s), digest=digest),
                          target=PromotionTarget(repository=canonical_name(d.with_tag(None)), tag=tag),
                          previous=before, gates=results, actor=actor, time=now, rollback=_rollback)
    record, signed = write_record(dst_t, d, root, predicate, signer)
    append(dst_t, d.repository, tag, HistoryEntry(time=now, digest=digest, previous=before, source=str(s),
                                                   actor=actor, rollback=_rollback, record=record, signed=signed,
                                                   gates=results))
    _audit(client, "rollback" if _rollback else "promote", d, before, digest, actor, "ok",
           {"source": pinned_src, "record": record, "signed": signed})
    image = None
    if image_src is not None:  # its gates passed above; this checks the signature once more as it moves
        image = promote(client, image_src, tag, trust=spec.trust, signer=signer, _rollback=_rollback,
                        expect=image_before if image_before is not None else ABSENT)
    return result.model_copy(update={"after": digest, "record": record, "signed": signed, "image": image})


def _image_form(client: Client, src_t: Target, s: Reference, digest: str,
                spec: GateSpec) -> tuple[Reference, list[GateResult]]:
    """The source's image form, pinned, and its gates: the link confirmed both ways, and its signature."""
    from ..packaging.image import ARTIFACT_FORM, IMAGE_FORM, form_links

    links = [link for link in form_links(src_t, s.repository, digest) if link.artifactType == IMAGE_FORM]
    if not links or not links[0].reference:
        raise NotFoundError(f"{s.with_digest(digest)}: no image form is linked to it (push it with --with-image)")
    image = parse_reference(links[0].reference).with_digest(links[0].digest)
    if image.embedded != s.embedded or (image.registry, image.layout) != (s.registry, s.layout):
        raise UsageError(f"{s}: its image form {image} is in another store; promote it there")
    img_t = client.target(image, create=False)
    back = [link for link in form_links(img_t, image.repository, image.digest or "")
            if link.artifactType == ARTIFACT_FORM]
    ok = any(link.digest == digest for link in back)
    gates = [GateResult(gate="image:link", passed=ok,
                        detail=f"{image} names {digest} as its artifact form" if ok else
                        f"{image} does not name {digest} back as its artifact form")]
    if spec.trust is not None:
        gates += [g.model_copy(update={"gate": f"image:{g.gate}"})
                  for g in check_gates(GateSpec(trust=spec.trust), img_t, image, image.digest or "")]
    return image, gates


def rollback(client: Client, ref: str | Reference, *, trust: Trust | None = None, policy: Policy | None = None,
             require_attestations: Sequence[str] = (), gates: Sequence[str] = (), expect: Expect = None,
             dry_run: bool = False, signer: Signer | None = None) -> PromotionResult:
    """Move ``REPO:TAG`` back to the digest it pointed at before its current one (from its history), through the
    same gates and compare-and-set, recording a promotion with ``rollback: true``."""
    r = client.ref(ref)
    if not r.tag or r.digest:
        raise UsageError(f"{r}: rollback takes REPO:TAG")
    target = client.target(r, create=False)
    current = target.current_tag(r.repository, r.tag)
    if current is None:
        raise NotFoundError(f"{r}: no such tag")
    entries = history(target, r.repository, r.tag)
    entry = next((e for e in entries if e.digest == current), None)
    if entry is None:
        raise VerificationError(f"{r}: the tag points at {current}, which no promotion into it recorded (moved "
                                "outside `ociart promote`?); not rolled back")
    if entry.previous is None:
        raise UsageError(f"{r}: nothing to roll back to: the tag did not exist before {current} was promoted")
    src = r.with_digest(entry.previous)
    return promote(client, src, r.tag, trust=trust, policy=policy, require_attestations=require_attestations,
                   gates=gates, expect=expect if expect is not None else current, dry_run=dry_run, signer=signer,
                   _rollback=True)


def write_record(target: Target, d: Reference, subject: Any, predicate: Promotion,
                 signer: Signer | None) -> tuple[str, bool]:
    """Attach the promotion statement to ``subject`` in ``d``'s repository: a signed bundle referrer with a signer,
    an unsigned in-toto statement referrer without. Returns (referrer digest, signed)."""
    from ..signing.bundle import statement_bytes
    from ..signing.service import attest_digest, docker_reference

    body = statement_bytes(subject.digest, PROMOTION_PREDICATE, predicate.model_dump(mode="json"),
                           docker_reference(d))
    if signer is not None:
        return attest_digest(target, d, subject, signer, body, PROMOTION_PREDICATE).bundle, True
    from ..lineage.record import attach_statement_bytes

    return attach_statement_bytes(target, d.repository, subject, body, PROMOTION_PREDICATE).digest, False


def _carry(client: Client, src_t: Target, s: Reference, dst_t: Target, d: Reference, root: Any) -> None:
    """Into another repository or registry: the graph by digest (untagged; blobs mounted or copied), referrers and
    legacy signatures along, as ``copy`` does."""
    from ..signing.legacy import copy_legacy
    from ..transfer import copy_graph

    copy_graph(src_t, s.repository, dst_t, d.repository, root, tag=None, concurrency=client.concurrency,
               referrers=True)
    copy_legacy(src_t, s.repository, dst_t, d.repository, root.digest)


def _audit(client: Client, action: str, d: Reference, before: str | None, after: str | None, actor: str,
           result: str, detail: dict[str, Any]) -> None:
    """One line in the audit log (and its registry copy when configured). The move has happened (or was refused)
    whatever the log says: a log that cannot be written is a warning, as for every other action."""
    from .. import audit

    audit.record(action, str(d), before=before, after=after, result=result, actor=actor, detail=detail)


__all__ = ["GateSpec", "PromotionResult", "actor_name", "check_gates", "gate_spec", "promote", "rollback",
           "target_of", "write_record"]

