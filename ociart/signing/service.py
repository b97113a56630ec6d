"""Sign, attest and verify references through a :class:`~ociart.client.Client` (what the CLI and the public
``Client.sign``/``attest``/``verify`` methods call)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from ..errors import InvalidContentError, NotFoundError, UsageError
from ..oci import Descriptor
from ..reference import Reference
from . import bundle as bundles
from . import legacy
from .signers import KeySigner, Signer, as_signer
from .verify import Trust, TrustedKey, Verification, collect
from .verify import verify as verify_digest

if TYPE_CHECKING:
    from ..client import Client
    from ..targets.base import Target

LegacyMode = Literal["always", "never"]


class SignResult(BaseModel):
    reference: str
    digest: str
    signer: str
    #: Referrer manifest holding the Sigstore bundle (None when an equal signature was already there).
    bundle: str | None
    #: Digest of the ``sha256-<hex>.sig`` manifest, when a legacy signature was written.
    legacy: str | None = None
    legacy_tag: str | None = None


class AttestResult(BaseModel):
    reference: str
    digest: str
    signer: str
    predicateType: str
    bundle: str


def docker_reference(r: Reference) -> str:
    """The simple-signing ``docker-reference``: registry/repository (the repository alone in the embedded store)."""
    return f"{r.registry}/{r.repository}" if r.registry else r.repository


def policy_name(r: Reference) -> str:
    """The name a policy's repository patterns are matched against: the canonical name
    (:func:`ociart.reference.canonical_name`), so another spelling of the same registry or layout matches the same
    rules."""
    from ..reference import canonical_name

    return canonical_name(r)


def _already_signed(target: Target, repo: str, digest: str, signer: Signer) -> bool:
    """A key signer's bundle signature is already attached (re-running ``sign`` or ``push --sign`` adds nothing)."""
    if not isinstance(signer, KeySigner):
        return False
    trust = Trust(keys=[TrustedKey(signer.name, signer.public_key)])
    return bool(collect(target, repo, digest, trust, legacy_signatures=False).signatures)


def sign_digest(target: Target, r: Reference, desc: Descriptor, signer: Signer, *, legacy_mode: LegacyMode = "always",
                annotations: dict[str, Any] | None = None) -> SignResult:
    """Sign the manifest ``desc`` in ``r``'s repository: a bundle referrer, and the legacy ``.sig`` unless told not to.

    ``desc`` must come from ``target`` itself (just resolved or pushed): it is not looked up again."""
    if legacy_mode not in ("always", "never"):
        raise UsageError(f"--legacy-signature {legacy_mode!r}: choose always or never")
    repo = r.repository
    bundle_digest = None
    if not _already_signed(target, repo, desc.digest, signer):
        bundle_digest = bundles.sign_bundle(target, repo, desc, signer, name=docker_reference(r),
                                            check_subject=False).digest
    result = SignResult(reference=str(r.with_digest(desc.digest)), digest=desc.digest, signer=signer.describe(),
                        bundle=bundle_digest)
    if legacy_mode == "always":
        content = legacy.sign_legacy(target, repo, desc.digest, signer, docker_reference(r), annotations,
                                     check_subject=False)
        result.legacy, result.legacy_tag = content.digest, legacy.signature_tag(desc.digest)
    return result


def attest_digest(target: Target, r: Reference, desc: Descriptor, signer: Signer, statement: bytes,
                  predicate_type: str) -> AttestResult:
    """Attach a signed in-toto ``statement`` (already naming ``desc``) as a bundle referrer."""
    bundles.check_statement(statement, desc.digest, predicate_type)
    content = bundles.attach_bundle(target, r.repository, desc, signer.sign_statement(statement), predicate_type)
    return AttestResult(reference=str(r.with_digest(desc.digest)), digest=desc.digest, signer=signer.describe(),
                        predicateType=predicate_type, bundle=content.digest)


def sign(client: Client, ref: str | Reference, signer: Signer | Any, *, legacy_mode: LegacyMode = "always",
         annotations: dict[str, Any] | None = None) -> SignResult:
    """Resolve ``ref`` once and sign that manifest digest."""
    r = client.ref(ref)
    target = client.target(r, create=False)
    desc = target.resolve(r.repository, r.reference)
    return sign_digest(target, r, desc, as_signer(signer), legacy_mode=legacy_mode, annotations=annotations)


def read_predicate(path: Path, predicate_type: str | None) -> tuple[str, dict[str, Any]]:
    """A predicate file: a JSON object, or a whole in-toto statement whose predicate (and type) are taken."""
    try:
        with path.open("rb") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise NotFoundError(f"predicate file {path} not found") from None
    except (OSError, ValueError) as exc:
        raise InvalidContentError(f"predicate file {path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidContentError(f"predicate file {path}: expected a JSON object")
    if str(data.get("_type", "")).startswith("https://in-toto.io/Statement/") and "predicate" in data:
        inner = data.get("predicateType")
        if predicate_type and inner and predicate_type != inner:
            raise UsageError(f"--type {predicate_type} but the statement in {path} has predicateType {inner}")
        predicate_type = predicate_type or inner
        data = data["predicate"]
        if not isinstance(data, dict):
            raise InvalidContentError(f"predicate file {path}: the statement's predicate is not an object")
    if not predicate_type:
        raise UsageError("--type is required (the predicate type URI)")
    return predicate_type, data


def attest(client: Client, ref: str | Reference, signer: Signer | Any, predicate_type: str,
           predicate: dict[str, Any]) -> AttestResult:
    """Sign ``predicate`` about ``ref``'s manifest digest as an in-toto statement of ``predicate_type``; an
    evaluation (``https://ociart.dev/evaluation/v1``) must follow its schema (docs/spec.md), since gates read it."""
    from ..promotion.models import EVALUATION_PREDICATE, Evaluation

    if predicate_type == EVALUATION_PREDICATE:
        from pydantic import ValidationError

        try:
            Evaluation.model_validate(predicate)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise UsageError(f"evaluation predicate: {'.'.join(map(str, first['loc'])) or '(top)'}: "
                             f"{first['msg']}") from None
    r = client.ref(ref)
    target = client.target(r, create=False)
    desc = target.resolve(r.repository, r.reference)
    body = bundles.statement_bytes(desc.digest, predicate_type, predicate, docker_reference(r))
    return attest_digest(target, r, desc, as_signer(signer), body, predicate_type)


def verify(client: Client, ref: str | Reference, trust: Trust | None = None, *, policy: Any = None,
           require_attestations: list[str] | tuple[str, ...] = ()) -> Verification:
    """Resolve ``ref`` once and verify that digest with ``trust`` or the rule of ``policy`` for its repository."""
    r = client.ref(ref)
    required = list(require_attestations)
    if policy is not None:
        if trust is not None:
            raise UsageError("give a policy or keys/identities, not both")
        trust, rule = policy.trust_for(policy_name(r))
        required = [*rule.attestations, *(t for t in required if t not in rule.attestations)]
    if trust is None:
        raise UsageError("nothing to verify with: give --key, --certificate-identity or --policy")
    # the manifest itself is fetched and checked against its digest: bytes changed in the registry are refused here
    pinned, content = client.manifest(r)
    label = str(r) if r.digest else f"{r} ({content.digest})"
    target = client.target(pinned, create=False)
    result = verify_digest(target, r.repository, content.digest, trust, require_attestations=required, label=label)
    if policy is not None and rule.promotedTo:
        from ..promotion.records import check_promoted

        promoted = check_promoted(target, r.repository, content.digest, rule.promotedTo, trust, label)
        result = result.model_copy(update={"promotedTo": promoted})
    return result


__all__ = ["AttestResult", "SignResult", "attest", "attest_digest", "docker_reference", "policy_name",
           "read_predicate", "sign", "sign_digest", "verify"]
