"""cosign v3 signatures: a Sigstore bundle v0.3 stored as an OCI referrer of the signed manifest (key mode, offline).

Format (cosign ``specs/BUNDLE_SPEC.md``, ``protobuf-specs`` ``dev.sigstore.bundle.v1.Bundle``; shared/reference
signing.md §2, §3, §6):

* the signed content is an in-toto v1 statement whose subject digest is the manifest digest; for a plain signature
  its predicateType is :data:`COSIGN_SIGN_PREDICATE` and its predicate ``{}``;
* it is wrapped in a DSSE envelope (``payloadType`` :data:`INTOTO_PAYLOAD_TYPE`); the signature is ECDSA P-256 over
  SHA-256 of the DSSE pre-authentication encoding ``DSSEv1 <len(type)> <type> <len(body)> <body>``, ASN.1 DER,
  base64;
* the bundle JSON (media type :data:`BUNDLE_MEDIA_TYPE`) carries ``verificationMaterial.publicKey.hint`` = base64
  std of sha256(DER SPKI) as cosign writes it, and ``"tlogEntries": []``: this brick is offline, so there is no
  certificate, no transparency-log entry and no timestamp;
* the bundle is the single layer of an OCI manifest with ``artifactType`` :data:`BUNDLE_MEDIA_TYPE`, the empty
  config, ``subject`` = the signed manifest and the ``dev.sigstore.bundle.*`` annotations, pushed by digest and
  found through the referrers API or the ``sha256-<hex>`` fallback index.

Bundles are built and parsed with ``sigstore-models`` (the maintained pydantic models of the Sigstore protobuf specs),
with duplicate JSON keys and loose base64 in signed fields refused first. Verification trusts only the key it is
given: the hint (or any key or certificate in the bundle) is never used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sigstore_models import intoto as sm_intoto
from sigstore_models.bundle import v1 as sm

from ..errors import (
    InvalidContentError,
    NotFoundError,
    UsageError,
    VerificationError,
)
from ..oci import (
    OCI_EMPTY,
    OCI_MANIFEST,
    Content,
    Descriptor,
    Manifest,
)
from ..oci.digest import sha256_bytes
from ..oci.mediatypes import ANNOTATION_BUNDLE_CONTENT, ANNOTATION_BUNDLE_PREDICATE_TYPE, ANNOTATION_CREATED
from ..reference import check_digest
from ..targets.base import Target, bytes_opener
from ..targets.referrers import list_referrers
from ..transfer import push_manifest
from . import keys
from .common import no_duplicate_keys, read_verified_blob, where
from .signers import Signer, as_signer

BUNDLE_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"  # = oci.mediatypes.SIGSTORE_BUNDLE
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
#: The predicate type of ``cosign sign`` (a signature, not an attestation).
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
BUNDLE_CONTENT_DSSE = "dsse-envelope"
#: Refuse to read a bundle blob larger than this (cosign's are a few KiB; provenance predicates are larger).
MAX_BUNDLE_BYTES = 4 << 20


# -- models (exactly the fields used; unknown fields are kept, not interpreted) ----------------------
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


class StatementSubject(_Open):
    name: str | None = None
    digest: dict[str, str]
    annotations: dict[str, Any] | None = None


class Statement(_Open):
    """An in-toto v1 statement with any predicate (``ociart.lineage.statement`` models the SLSA one)."""

    type_: str = Field(alias="_type")
    subject: list[StatementSubject]
    predicateType: str
    predicate: dict[str, Any] | None = None


# -- building -----------------------------------------------------------------------------------------
def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: ``DSSEv1 <len(type)> <type> <len(body)> <body>`` (byte lengths)."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def key_hint(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """cosign's ``publicKey.hint``: base64 std of sha256(DER SubjectPublicKeyInfo). Informational only."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def statement_bytes(subject_digest: str, predicate_type: str = COSIGN_SIGN_PREDICATE,
                    predicate: dict[str, Any] | None = None, name: str | None = None) -> bytes:
    """The statement cosign signs for ``subject_digest`` (compact JSON; ``name`` only when given)."""
    check_digest(subject_digest)
    if not predicate_type:
        raise UsageError("a statement needs a predicateType")
    subject: dict[str, Any] = {"name": name} if name else {}
    subject |= {"digest": {"sha256": subject_digest.partition(":")[2]}, "annotations": {}}
    stmt = {"_type": STATEMENT_TYPE, "subject": [subject], "predicateType": predicate_type,
            "predicate": {} if predicate is None else predicate}
    try:
        return json.dumps(stmt, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"statement predicate is not JSON-serializable: {exc}") from None


def bundle_bytes(body: bytes, private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """A v0.3 bundle: DSSE envelope over ``body`` signed with ``private_key``, key hint, no tlog entries.

    Built with ``sigstore-models`` (the pydantic models of the Sigstore protobuf specs), serialised as protojson.
    """
    sig = keys.sign(private_key, pae(INTOTO_PAYLOAD_TYPE, body))
    bundle = sm.Bundle(
        media_type=BUNDLE_MEDIA_TYPE,
        verification_material=sm.VerificationMaterial(public_key=sm.PublicKeyIdentifier(hint=key_hint(private_key)),
                                                      tlog_entries=[]),
        dsse_envelope=sm_intoto.Envelope(payload=base64.b64encode(body), payload_type=INTOTO_PAYLOAD_TYPE,
                                         signatures=[sm_intoto.Signature(sig=base64.b64encode(sig))]))
    return bundle.to_json().encode()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def attach_bundle(target: Target, repo: str, subject: Descriptor, bundle: bytes,
                  predicate_type: str, created: str | None = None) -> Content:
    """Push ``bundle`` as the single layer of a referrer manifest of ``subject`` and attach it (by digest)."""
    layer = Descriptor(mediaType=BUNDLE_MEDIA_TYPE, digest=sha256_bytes(bundle), size=len(bundle))
    with target.writing():
        target.push_blob_stream(repo, layer, bytes_opener(bundle))
        return push_manifest(target, repo, artifact_type=BUNDLE_MEDIA_TYPE, layers=[layer], subject=subject,
                             annotations={ANNOTATION_BUNDLE_CONTENT: BUNDLE_CONTENT_DSSE,
                                          ANNOTATION_BUNDLE_PREDICATE_TYPE: predicate_type,
                                          ANNOTATION_CREATED: created or _now()})


def sign_bundle(target: Target, repo: str, subject: Descriptor, signer: Signer | ec.EllipticCurvePrivateKey,
                predicate_type: str = COSIGN_SIGN_PREDICATE, predicate: dict[str, Any] | None = None,
                name: str | None = None, created: str | None = None, check_subject: bool = True) -> Content:
    """Sign ``repo@subject.digest`` the cosign v3 way: a DSSE bundle attached as an OCI referrer.

    ``signer`` is a :class:`~ociart.signing.signers.Signer` (key or keyless) or a private key. ``subject`` must be
    the descriptor of a manifest that exists in ``repo`` (:class:`NotFoundError` otherwise; :class:`UsageError` if
    its size or media type disagrees; ``check_subject=False`` skips the request when the caller just resolved it).
    Returns the referrer manifest.
    """
    check_digest(subject.digest)
    found = target.resolve(repo, subject.digest) if check_subject else subject
    if found.size != subject.size or found.mediaType != subject.mediaType:
        raise UsageError(f"{repo}@{subject.digest}: subject descriptor says {subject.mediaType} ({subject.size} "
                         f"bytes), the registry has {found.mediaType} ({found.size} bytes)")
    body = statement_bytes(subject.digest, predicate_type, predicate, name)
    return attach_bundle(target, repo, subject, as_signer(signer).sign_statement(body), predicate_type, created)


# -- verification -------------------------------------------------------------------------------------
def _parse(model: type[BaseModel], data: bytes, what: str) -> Any:
    try:
        obj = json.loads(data, object_pairs_hook=no_duplicate_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidContentError(f"malformed {what}: {exc}") from None
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise InvalidContentError(f"malformed {what}: {where}: {first['msg']}") from None


def open_bundle(data: bytes) -> tuple[sm.Bundle, bytes]:
    """Parse a bundle blob holding a DSSE in-toto envelope; returns it and the (not yet verified) payload bytes.

    The JSON is read with duplicate keys refused, then validated by ``sigstore-models``. Go and protojson writers omit
    an empty ``tlogEntries``, which the model requires, so it is filled in as ``[]`` (as model-signing does).
    """
    try:
        obj = json.loads(data, object_pairs_hook=no_duplicate_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidContentError(f"malformed bundle: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidContentError("malformed bundle: not a JSON object")
    if obj.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise InvalidContentError(f"bundle mediaType is {obj.get('mediaType')!r}, expected {BUNDLE_MEDIA_TYPE!r}")
    env_obj = obj.get("dsseEnvelope")
    if isinstance(env_obj, dict):  # sigstore-models decodes base64 leniently; signed bytes must be unambiguous
        _strict_b64(env_obj.get("payload"), "DSSE payload")
        for sig in env_obj.get("signatures") or []:
            _strict_b64(sig.get("sig") if isinstance(sig, dict) else None, "DSSE signature")
    material = obj.get("verificationMaterial")
    if isinstance(material, dict) and "tlogEntries" not in material:
        obj["verificationMaterial"] = {**material, "tlogEntries": []}
    try:
        bundle = sm.Bundle.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise InvalidContentError(f"malformed bundle: {loc}: {first['msg']}") from None
    env = bundle.dsse_envelope
    if env is None:
        raise VerificationError("bundle has no dsseEnvelope (message signatures are not supported)")
    if env.payload_type != INTOTO_PAYLOAD_TYPE:
        raise VerificationError(f"payloadType is {env.payload_type!r}, expected {INTOTO_PAYLOAD_TYPE!r}")
    if not env.signatures:
        raise VerificationError("DSSE envelope has no signatures")
    return bundle, env.payload


def _strict_b64(value: object, what: str) -> None:
    if not isinstance(value, str):
        return  # the model reports a missing or mistyped field
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidContentError(f"{what} is not valid base64") from None


def is_keyless(bundle: sm.Bundle) -> bool:
    """Signed with a certificate (Fulcio), not a bare key."""
    vm = bundle.verification_material
    return vm.certificate is not None or vm.x509_certificate_chain is not None


def bundle_certificate(bundle: sm.Bundle) -> bytes | None:
    """DER of the signing certificate (leaf), if the bundle has one. Not trusted by itself."""
    vm = bundle.verification_material
    if vm.certificate is not None:
        return vm.certificate.raw_bytes
    if vm.x509_certificate_chain is not None and vm.x509_certificate_chain.certificates:
        return vm.x509_certificate_chain.certificates[0].raw_bytes
    return None


def verify_envelope_key(bundle: sm.Bundle, body: bytes, public_key: ec.EllipticCurvePublicKey) -> None:
    """Some signature of the envelope verifies with ``public_key``; key material in the bundle is ignored."""
    assert bundle.dsse_envelope is not None
    message = pae(bundle.dsse_envelope.payload_type, body)
    for s in bundle.dsse_envelope.signatures:
        try:
            keys.verify(public_key, message, s.sig)
            return
        except VerificationError:
            continue
    raise VerificationError("bad signature: DSSE signature does not verify with the given public key")


def check_statement(body: bytes, subject_digest: str, predicate_type: str | None = COSIGN_SIGN_PREDICATE) -> Statement:
    """The signed statement is an in-toto v1 statement about ``subject_digest`` (and of ``predicate_type``)."""
    stmt = _parse(Statement, body, "in-toto statement")
    if stmt.type_ != STATEMENT_TYPE:
        raise VerificationError(f"statement _type is {stmt.type_!r}, expected {STATEMENT_TYPE!r}")
    hex_ = subject_digest.partition(":")[2]
    if not any(s.digest.get("sha256") == hex_ for s in stmt.subject):
        named = ", ".join(f"sha256:{s.digest['sha256']}" for s in stmt.subject if "sha256" in s.digest) or "none"
        raise VerificationError(f"subject mismatch: statement names {named}, not {subject_digest}")
    if predicate_type is not None and stmt.predicateType != predicate_type:
        raise VerificationError(f"predicateType is {stmt.predicateType!r}, expected {predicate_type!r}")
    return stmt


def verify_bundle_bytes(data: bytes, subject_digest: str, public_key: ec.EllipticCurvePublicKey,
                        predicate_type: str = COSIGN_SIGN_PREDICATE) -> Statement:
    """Check one bundle blob against ``public_key`` (only), ``subject_digest`` and ``predicate_type``.

    Raises :class:`VerificationError` (or its :class:`InvalidContentError`) naming the reason.
    """
    bundle, body = open_bundle(data)
    verify_envelope_key(bundle, body, public_key)
    return check_statement(body, subject_digest, predicate_type)


def bundle_blobs(target: Target, repo: str, subject_digest: str,
                 reasons: list[str]) -> Iterator[tuple[Descriptor, Descriptor, bytes]]:
    """(referrer, layer, blob) for every Sigstore bundle attached to ``subject_digest``; referrers or blobs that
    cannot be read are skipped with their reason appended to ``reasons``."""
    try:
        entries = list_referrers(target, repo, subject_digest)
    except NotFoundError:
        entries = []
    for entry in entries:
        try:
            layers = _bundle_layers(target, repo, entry)
        except (NotFoundError, VerificationError) as exc:
            reasons.append(f"referrer {entry.digest}: {exc}")
            continue
        for layer in layers:
            try:
                yield entry, layer, read_verified_blob(target, repo, layer, MAX_BUNDLE_BYTES, "bundle")
            except (NotFoundError, VerificationError) as exc:
                reasons.append(f"bundle {layer.digest} (referrer {entry.digest}): {exc}")


def _bundle_layers(target: Target, repo: str, entry: Descriptor) -> list[Descriptor]:
    """The bundle layers of a referrer, or [] for a referrer that is not a bundle (tolerating old cosign)."""
    if entry.artifactType not in (None, BUNDLE_MEDIA_TYPE, OCI_EMPTY) or entry.mediaType != OCI_MANIFEST:
        return []
    node = target.get_manifest(repo, entry.digest).parse()
    if not isinstance(node, Manifest):
        return []
    if (node.artifactType or node.config.mediaType) not in (BUNDLE_MEDIA_TYPE, OCI_EMPTY):
        return []
    return [ly for ly in node.layers if ly.mediaType == BUNDLE_MEDIA_TYPE]


def verify_bundles(target: Target, repo: str, subject_digest: str, public_key: ec.EllipticCurvePublicKey,
                   predicate_type: str = COSIGN_SIGN_PREDICATE) -> list[Statement]:
    """The statements of the bundle referrers of ``subject_digest`` that verify with ``public_key``.

    As cosign, one valid bundle suffices and bundles that fail are skipped. Raises :class:`VerificationError`
    when there is no bundle referrer, or none verifies (the message gives each bundle's reason).
    """
    check_digest(subject_digest)
    verified: list[Statement] = []
    reasons: list[str] = []
    for entry, layer, data in bundle_blobs(target, repo, subject_digest, reasons):
        try:
            verified.append(verify_bundle_bytes(data, subject_digest, public_key, predicate_type))
        except VerificationError as exc:
            reasons.append(f"bundle {layer.digest} (referrer {entry.digest}): {exc}")
    if verified:
        return verified
    if not reasons:
        raise VerificationError(f"{where(repo, subject_digest)}: no signatures (no sigstore bundle referrers)")
    raise VerificationError(f"{where(repo, subject_digest)}: no valid bundle among {len(reasons)}: "
                            + "; ".join(reasons))


__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "COSIGN_SIGN_PREDICATE",
    "INTOTO_PAYLOAD_TYPE",
    "Statement",
    "attach_bundle",
    "bundle_blobs",
    "bundle_bytes",
    "bundle_certificate",
    "check_statement",
    "is_keyless",
    "key_hint",
    "open_bundle",
    "pae",
    "sign_bundle",
    "statement_bytes",
    "verify_bundle_bytes",
    "verify_bundles",
    "verify_envelope_key",
]
