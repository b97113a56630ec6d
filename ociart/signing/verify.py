"""Deploy-time verification: find every signature and attestation of a manifest digest, in both formats, and accept
only those that verify with the verifier's own trust configuration.

Rules (shared/reference signing.md §6, docs/signing.md):

* the reference is resolved once; everything is checked against that digest;
* Sigstore bundles attached as referrers and legacy ``sha256-<hex>.sig`` layers are both read;
* a bundle or layer signed with a key verifies only with a key the verifier was given (``--key``, policy ``keys``);
  one signed with a certificate verifies only if the certificate chains to the configured Sigstore trust root, was
  valid when the transparency log recorded it, and names a configured identity and issuer. Key material carried in
  a signature (key hints, embedded certificates) is never trusted by itself;
* a bundle's DSSE payload must be an in-toto v1 statement whose subject digest is the manifest digest; its
  predicateType decides what it is: ``https://sigstore.dev/cosign/sign/v1`` is a signature, anything else an
  attestation of that type;
* at least one signature must verify, and one attestation of every required type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ..oci.mediatypes import ANNOTATION_BUNDLE_PREDICATE_TYPE
from ..errors import InvalidContentError, NotFoundError, UsageError, VerificationError
from ..reference import check_digest
from ..targets.base import Target
from . import bundle as bundles
from . import legacy
from .common import where
from .results import Verification, Verified
from .identity import TrustedIdentity, certificate_issuer, certificate_sans
from .signers import CERTIFICATE_ANNOTATION


@dataclass(frozen=True)
class TrustedKey:
    """A public key the verifier trusts, and the name it was given by (path or key URI)."""

    name: str
    key: ec.EllipticCurvePublicKey


@dataclass
class Trust:
    """What a verifier trusts: public keys, and keyless identities under a Sigstore trust root."""

    keys: list[TrustedKey] = field(default_factory=list)
    identities: list[TrustedIdentity] = field(default_factory=list)
    #: A ClientTrustConfig or trusted_root.json; None means public-good Sigstore (embedded root, no network).
    trust_config: Path | None = None

    def __post_init__(self) -> None:
        if not self.keys and not self.identities:
            raise UsageError("nothing to verify with: give --key, or --certificate-identity[-regexp] with "
                             "--certificate-oidc-issuer[-regexp], or a --policy")

    @cached_property
    def trusted_root(self) -> Any:
        from . import keyless

        return keyless.load_trusted_root(self.trust_config)


def build_trust(*, keys: Sequence[str | Path] = (), certificate_identity: str | None = None,
                certificate_identity_regexp: str | None = None, certificate_oidc_issuer: str | None = None,
                certificate_oidc_issuer_regexp: str | None = None, trust_config: Path | None = None) -> Trust:
    """A :class:`Trust` from public key files (paths or key URIs) and at most one keyless identity, the way
    ``ociart verify`` takes them: an identity needs exactly one of the exact/regexp forms of both subject and issuer."""
    from .signers import load_verification_key

    identities = []
    given = (certificate_identity, certificate_identity_regexp, certificate_oidc_issuer, certificate_oidc_issuer_regexp)
    if any(v is not None for v in given):
        if (certificate_identity is None) == (certificate_identity_regexp is None):
            raise UsageError("give one of --certificate-identity, --certificate-identity-regexp")
        if (certificate_oidc_issuer is None) == (certificate_oidc_issuer_regexp is None):
            raise UsageError("give one of --certificate-oidc-issuer, --certificate-oidc-issuer-regexp")
        identities.append(TrustedIdentity(subject=certificate_identity, subject_regexp=certificate_identity_regexp,
                                          issuer=certificate_oidc_issuer,
                                          issuer_regexp=certificate_oidc_issuer_regexp))
    trusted = [TrustedKey(name=str(k), key=load_verification_key(k)) for k in keys]
    return Trust(keys=trusted, identities=identities, trust_config=trust_config)


def cert_identity(cert: x509.Certificate) -> str:
    """``SAN (issuer)`` of a Fulcio certificate, for messages."""
    issuer = certificate_issuer(cert)
    return (", ".join(certificate_sans(cert)) or "(no SAN)") + (f" ({issuer})" if issuer else "")


def _check_bundle(data: bytes, digest: str, trust: Trust) -> tuple[bundles.Statement, str]:
    """Verify one bundle blob; returns its statement and who signed it."""
    b, body = bundles.open_bundle(data)
    if bundles.is_keyless(b):
        if not trust.identities:
            raise VerificationError("signed with a certificate (keyless) but no certificate identity is trusted")
        from . import keyless

        body = keyless.verify_bundle(data, trust.trusted_root, trust.identities)
        der = bundles.bundle_certificate(b)
        signer = cert_identity(x509.load_der_x509_certificate(der)) if der else "certificate"
    else:
        if not trust.keys:
            raise VerificationError("signed with a key but no public key is trusted")
        signer = _first_key(trust.keys, lambda k: bundles.verify_envelope_key(b, body, k))
    return bundles.check_statement(body, digest, None), signer


def _first_key(trusted: Sequence[TrustedKey], check: Any) -> str:
    for tk in trusted:
        try:
            check(tk.key)
            return tk.name
        except VerificationError:
            continue
    names = ", ".join(tk.name for tk in trusted)
    raise VerificationError(f"bad signature: does not verify with the trusted key{'s' if len(trusted) > 1 else ''} "
                            f"({names})")


def _legacy_check(trust: Trust, signer: list[str]) -> legacy.SignatureCheck:
    def check(data: bytes, annotations: Mapping[str, str]) -> None:
        if annotations.get(CERTIFICATE_ANNOTATION):
            if not trust.identities:
                raise VerificationError("signed with a certificate (keyless) but no certificate identity is trusted")
            from . import keyless

            keyless.verify_legacy(data, annotations, trust.trusted_root, trust.identities)
            try:
                cert = x509.load_pem_x509_certificate(annotations[CERTIFICATE_ANNOTATION].encode())
                signer.append(cert_identity(cert))
            except ValueError:
                signer.append("certificate")
            return
        if not trust.keys:
            raise VerificationError("signed with a key but no public key is trusted")
        signer.append(_first_key(trust.keys, lambda k: legacy.key_check(k)(data, annotations)))
    return check


def verified_statements(target: Target, repo: str, digest: str, trust: Trust, predicate_type: str,
                        rejected: list[str] | None = None) -> list[tuple[Verified, bundles.Statement]]:
    """The attestations of ``predicate_type`` about ``repo@digest`` that verify under ``trust``, with their
    statements (what gates read metrics from); why others were not accepted is appended to ``rejected``."""
    check_digest(digest)
    reasons = rejected if rejected is not None else []
    out: list[tuple[Verified, bundles.Statement]] = []
    for entry, _layer, data in bundles.bundle_blobs(target, repo, digest, reasons):
        if (entry.annotations or {}).get(ANNOTATION_BUNDLE_PREDICATE_TYPE, predicate_type) != predicate_type:
            continue  # another kind of attestation: not read
        try:
            stmt, signer = _check_bundle(data, digest, trust)
        except VerificationError as exc:
            reasons.append(f"bundle {entry.digest}: {exc}")
            continue
        if stmt.predicateType == predicate_type:
            out.append((Verified(format="bundle", predicateType=stmt.predicateType, signer=signer,
                                 source=entry.digest), stmt))
    return out


def collect(target: Target, repo: str, digest: str, trust: Trust, *, legacy_signatures: bool = True) -> Verification:
    """Every signature and attestation of ``repo@digest`` that verifies under ``trust`` (nothing is required);
    ``legacy_signatures=False`` reads the bundle referrers only."""
    check_digest(digest)
    sigs: list[Verified] = []
    atts: list[Verified] = []
    rejected: list[str] = []
    for entry, layer, data in bundles.bundle_blobs(target, repo, digest, rejected):
        try:
            stmt, signer = _check_bundle(data, digest, trust)
        except VerificationError as exc:
            rejected.append(f"bundle {entry.digest}: {exc}")
            continue
        item = Verified(format="bundle", predicateType=stmt.predicateType, signer=signer, source=entry.digest)
        (sigs if stmt.predicateType == bundles.COSIGN_SIGN_PREDICATE else atts).append(item)
    try:
        layers = legacy.signature_layers(target, repo, digest) if legacy_signatures else []
    except VerificationError:
        layers = []  # no legacy signatures is normal
    except (NotFoundError, InvalidContentError) as exc:
        rejected.append(f"{legacy.signature_tag(digest)}: {exc}")
        layers = []
    for layer in layers:
        who: list[str] = []
        try:
            legacy.check_layer(target, repo, layer, digest, _legacy_check(trust, who))
        except VerificationError as exc:
            rejected.append(f"{legacy.signature_tag(digest)} layer {layer.digest}: {exc}")
            continue
        sigs.append(Verified(format="legacy", predicateType=bundles.COSIGN_SIGN_PREDICATE,
                             signer=who[-1] if who else "key", source=layer.digest))
    return Verification(reference="", digest=digest, signatures=sigs, attestations=atts, rejected=rejected)


def verify(target: Target, repo: str, digest: str, trust: Trust, *,
           require_attestations: Sequence[str] = (), label: str | None = None) -> Verification:
    """Verify ``repo@digest``: at least one signature, and an attestation of each required predicate type.

    Raises :class:`VerificationError` with one line naming what is missing and why each candidate was rejected.
    """
    result = collect(target, repo, digest, trust)
    name = label or where(repo, digest)
    result = result.model_copy(update={"reference": name})
    why = f" ({'; '.join(result.rejected)})" if result.rejected else ""
    if not result.signatures:
        found = "no signatures found" if not result.rejected else "no valid signature"
        raise VerificationError(f"{name}: {found}{why}", result.rejected)
    verified_types = sorted({a.predicateType for a in result.attestations})
    for wanted in require_attestations:
        if wanted not in verified_types:
            have = ", ".join(verified_types) or "none"
            raise VerificationError(f"{name}: no verified attestation of type {wanted} (verified: {have}){why}",
                                    result.rejected)
    return result


__all__ = ["Trust", "TrustedKey", "Verification", "Verified", "build_trust", "cert_identity", "collect",
           "verified_statements", "verify"]
