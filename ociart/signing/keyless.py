"""Keyless (Sigstore) signing and verification: a Fulcio certificate for an OIDC identity plus a Rekor v1 entry.

Two outputs from one signing session (one ephemeral key, one certificate):

* :meth:`KeylessSigner.sign_statement` — a Sigstore bundle v0.3 (``dsseEnvelope`` over an in-toto statement,
  ``certificate``, one ``dsse/0.0.1`` tlog entry with inclusion proof and promise), what cosign v3 stores as a referrer;
* :meth:`KeylessSigner.sign_legacy_payload` — the layer annotations of a legacy cosign ``.sig`` signature
  (``hashedrekord/0.0.1`` entry; signature, PEM certificate and chain, Rekor bundle with the SET).

Verification trusts only the trusted root it is given (``trusted_root.json``, a ClientTrustConfig, or the Sigstore
public-good root embedded in sigstore-python): the certificate must chain to one of its Fulcio CAs and be valid at the
time the log integrated the entry (signed by a log key of the trusted root), carry a valid SCT from one of its CT logs,
and match one of the caller's :class:`TrustedIdentity` entries. Certificates, chains or keys carried by the signature
are never trusted by themselves. (shared/reference signing.md §1, §2, §5, §6.)

Built on sigstore-python 4.x: bundles are verified with ``sigstore.verify.Verifier.verify_dsse``. Legacy signatures
cannot go through ``Verifier.verify_artifact``: sigstore-python refuses any log entry without an inclusion proof and
checkpoint (``TransparencyLogEntry._validate``, even for v0.1 bundles), and cosign's Rekor bundle annotation only has
the SET. :func:`verify_legacy` therefore performs the same steps itself with ``cryptography`` + ``rfc8785`` (SET with
the trusted root's Rekor key, chain at the integrated time with the same X.509 policy as sigstore-python, SCT with
sigstore-python's ``verify_sct``, identity, signature, body consistency).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
)
from cryptography.x509.verification import VerificationError as X509VerificationError
from pydantic import BaseModel, ConfigDict, ValidationError
from sigstore import dsse
from sigstore._internal.sct import verify_sct
from sigstore._internal.trust import KeyringPurpose
from sigstore.errors import CertValidationError
from sigstore.errors import Error as SigstoreError
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.models import Bundle, ClientTrustConfig, TrustedRoot
from sigstore.oidc import IdentityError, IdentityToken, detect_credential
from sigstore.sign import Signer, SigningContext
from sigstore.verify import Verifier
from sigstore_models.trustroot import v1 as trustroot_v1

from ..errors import (
    AuthError,
    InvalidContentError,
    NetworkError,
    OciartError,
    UsageError,
    VerificationError,
)
from .common import no_duplicate_keys
from .identity import TrustedIdentity, certificate_issuer, certificate_sans
from .signers import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    SIGNATURE_ANNOTATION,
)

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
TRUSTED_ROOT_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
TRUST_CONFIG_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"
SIGNING_CONFIG_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.signingconfig.v0.2+json"

#: Environment variables holding an OIDC identity token, in order of precedence (after an explicit token).
TOKEN_ENV_VARS = ("SIGSTORE_ID_TOKEN", "OCIART_IDENTITY_TOKEN")
NO_TOKEN_MESSAGE = ("no OIDC identity token: pass --identity-token, set SIGSTORE_ID_TOKEN, "
                    "or run in a CI with ambient credentials")

#: Trust files are small (the public-good trusted root is ~10 KiB); refuse anything much larger.
MAX_TRUST_FILE_BYTES = 4 << 20
MAX_ANNOTATION_BYTES = 1 << 20


# -- identities ------------------------------------------------------------------------------------
class _IdentityPolicy:
    """A sigstore-python verification policy: the certificate matches at least one trusted identity."""

    def __init__(self, identities: Sequence[TrustedIdentity]) -> None:
        self._identities = list(identities)

    def verify(self, cert: x509.Certificate) -> None:
        reason = _identity_mismatch(cert, self._identities)
        if reason is not None:
            raise SigstoreVerificationError(reason)


def _identity_mismatch(cert: x509.Certificate, identities: Sequence[TrustedIdentity]) -> str | None:
    reasons = []
    for identity in identities:
        reason = identity.matches(cert)
        if reason is None:
            return None
        reasons.append(reason)
    sans = ", ".join(certificate_sans(cert)) or "(none)"
    if len(identities) == 1:
        return f"{reasons[0]} (expected {identities[0].describe()})"
    expected = "; ".join(i.describe() for i in identities)
    return (f"certificate identity {sans} (issuer {certificate_issuer(cert) or 'none'}) does not match any "
            f"trusted identity (expected one of: {expected})")


def _require_identities(identities: Sequence[TrustedIdentity]) -> None:
    if not identities:
        raise UsageError("keyless verification needs at least one trusted identity "
                         "(certificate identity and OIDC issuer)")


# -- trust configuration ---------------------------------------------------------------------------
def _read_trust_file(path: Path, what: str) -> tuple[dict[str, Any], str]:
    try:
        if path.stat().st_size > MAX_TRUST_FILE_BYTES:
            raise InvalidContentError(f"{what} {path} is over the {MAX_TRUST_FILE_BYTES}-byte limit")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a directory") from None
    except UnicodeDecodeError:
        raise InvalidContentError(f"{what} {path} is not UTF-8 JSON") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        obj = json.loads(text, object_pairs_hook=no_duplicate_keys)
    except ValueError as exc:
        raise InvalidContentError(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidContentError(f"{what} {path} is not a JSON object")
    media_type = obj.get("mediaType")
    if not isinstance(media_type, str):
        raise InvalidContentError(f"{what} {path} has no mediaType")
    return obj, text


def _model_error(exc: BaseException) -> str:
    """One line for a (pydantic or sigstore-wrapped pydantic) parse error."""
    inner = next((e for e in (exc, exc.__cause__, exc.__context__) if isinstance(e, ValidationError)), None)
    if inner is not None and inner.errors():
        first = inner.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return f"{loc}: {first['msg']}" if loc else str(first["msg"])
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _parse_trusted_root(text: str, path: Path) -> TrustedRoot:
    try:
        return TrustedRoot(trustroot_v1.TrustedRoot.from_json(text))
    except (ValueError, SigstoreError) as exc:
        raise InvalidContentError(f"malformed trusted root {path}: {_model_error(exc)}") from None


def _parse_trust_config(text: str, path: Path) -> ClientTrustConfig:
    try:
        config = ClientTrustConfig.from_json(text)
        config.trusted_root  # noqa: B018 - validates the media type
    except (ValueError, SigstoreError) as exc:
        raise InvalidContentError(f"malformed Sigstore trust config {path}: {_model_error(exc)}") from None
    return config


def _load_trust_file(path: Path, what: str) -> ClientTrustConfig | TrustedRoot:
    """A ClientTrustConfig or a bare trusted root, by its ``mediaType``."""
    obj, text = _read_trust_file(path, what)
    media_type = obj["mediaType"]
    if media_type == TRUST_CONFIG_MEDIA_TYPE:
        return _parse_trust_config(text, path)
    if media_type == TRUSTED_ROOT_MEDIA_TYPE:
        return _parse_trusted_root(text, path)
    raise InvalidContentError(f"{what} {path} has unsupported mediaType {media_type!r} "
                              f"(expected {TRUST_CONFIG_MEDIA_TYPE!r} or {TRUSTED_ROOT_MEDIA_TYPE!r})")


def load_trust_config(path: Path | None) -> ClientTrustConfig:
    """The Sigstore instance to sign with (and its trusted root).

    ``path`` is a ClientTrustConfig (``application/vnd.dev.sigstore.clienttrustconfig.v0.1+json``: trusted root +
    signing config with Fulcio and Rekor URLs) or a bare ``trusted_root.json`` (then the config has no services:
    verification works, :class:`KeylessSigner` refuses it). ``None`` is the Sigstore public-good instance, refreshed
    from its TUF repository (network).
    """
    if path is None:
        try:
            return ClientTrustConfig.production()
        except SigstoreError as exc:
            raise NetworkError(f"cannot load the Sigstore public-good trust config: {exc}") from None
    loaded = _load_trust_file(path, "Sigstore trust config")
    if isinstance(loaded, ClientTrustConfig):
        return loaded
    return ClientTrustConfig(trustroot_v1.ClientTrustConfig(
        media_type=TRUST_CONFIG_MEDIA_TYPE,
        trusted_root=loaded._inner,
        signing_config=trustroot_v1.SigningConfig(media_type=SIGNING_CONFIG_MEDIA_TYPE),
    ))


def load_trusted_root(path: Path | None) -> TrustedRoot:
    """The roots keyless signatures are verified against.

    ``path`` is a ``trusted_root.json`` or a ClientTrustConfig (its trusted root is used). ``None`` is the Sigstore
    public-good root embedded in sigstore-python (offline: no TUF refresh, no network).
    """
    if path is None:
        try:
            return ClientTrustConfig.production(offline=True).trusted_root
        except SigstoreError as exc:
            raise UsageError(f"cannot load the embedded Sigstore public-good trusted root: {exc}") from None
    loaded = _load_trust_file(path, "Sigstore trusted root")
    return loaded.trusted_root if isinstance(loaded, ClientTrustConfig) else loaded


# -- identity tokens -------------------------------------------------------------------------------
def _detect_ambient() -> str | None:
    """An ambient CI credential (GitHub Actions, GitLab, Google Cloud, Buildkite, CircleCI) via the ``id`` package."""
    return detect_credential()


def identity_token(explicit: str | None = None) -> IdentityToken:
    """The OIDC token to request a certificate with: ``explicit`` > ``$SIGSTORE_ID_TOKEN`` >
    ``$OCIART_IDENTITY_TOKEN`` > ambient CI credentials. :class:`AuthError` when there is none or it is malformed.

    The token is decoded, not verified (Fulcio verifies it); it must carry ``aud=sigstore``, ``iss``, ``sub``, ``iat``
    and ``exp`` and be within its validity period.
    """
    source, raw = "--identity-token", (explicit or "").strip()
    if not raw:
        for name in TOKEN_ENV_VARS:
            if value := os.environ.get(name, "").strip():
                source, raw = f"${name}", value
                break
    if not raw:
        try:
            ambient = _detect_ambient()
        except IdentityError as exc:
            raise AuthError(f"cannot get an ambient OIDC identity token: {exc}") from None
        if not ambient:
            raise AuthError(NO_TOKEN_MESSAGE)
        source, raw = "ambient CI credentials", ambient.strip()
    try:
        return IdentityToken(raw)
    except IdentityError as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        raise AuthError(f"OIDC identity token from {source} is unusable: {exc}{cause}") from None


# -- signing ---------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _statement(data: bytes) -> dsse.Statement:
    """``data`` as a sigstore-python Statement, signing exactly these bytes.

    sigstore-python's statement model requires ``subject[].name`` (nullable), which cosign's own ``cosign sign``
    statement omits; for such a statement the check runs on a copy with ``name: null`` and the original bytes are
    signed (verified below through the PAE, so a change in sigstore-python's internals fails loudly).
    """
    try:
        obj = json.loads(data, object_pairs_hook=no_duplicate_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"in-toto statement is not JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("subject"), list):
        raise UsageError("in-toto statement has no subject list")
    copy = dict(obj, subject=[({"name": None} | s) if isinstance(s, dict) else s for s in obj["subject"]])
    try:
        stmt = dsse.Statement(data if copy == obj else json.dumps(copy).encode())
    except SigstoreError as exc:
        raise UsageError(f"invalid in-toto statement: {_model_error(exc)}") from None
    stmt._contents = data
    type_ = INTOTO_PAYLOAD_TYPE.encode()
    if stmt._pae() != b"DSSEv1 %d %s %d %s" % (len(type_), type_, len(data), data):
        raise OciartError("sigstore-python would not sign the statement bytes as given (unsupported version?)")
    return stmt


def _signing_error(exc: Exception) -> OciartError:
    """A sigstore/requests failure during signing as one ociart error."""
    import requests  # sigstore-python's HTTP client
    from sigstore._internal.fulcio.client import ExpiredCertificate, FulcioClientError
    from sigstore._internal.rekor import RekorClientError
    from sigstore.oidc import ExpiredIdentity

    if isinstance(exc, ExpiredIdentity):
        return AuthError("the OIDC identity token has expired")
    if isinstance(exc, ExpiredCertificate):
        return AuthError("the signing certificate has expired; sign again with a fresh identity token")
    if isinstance(exc, FulcioClientError):
        detail = str(exc) or str(exc.__cause__ or "") or "request refused"
        return AuthError(f"Fulcio did not issue a signing certificate: {detail}")
    if isinstance(exc, RekorClientError):
        return OciartError(f"Rekor did not log the signature: {exc}")
    if isinstance(exc, requests.exceptions.RequestException):
        return NetworkError(f"Sigstore service unreachable: {exc}")
    if isinstance(exc, SigstoreVerificationError):
        return VerificationError(f"Sigstore service response did not verify: {exc}")
    return OciartError(f"keyless signing failed: {type(exc).__name__}: {exc}")


class KeylessSigner:
    """One keyless signing session: the first signature requests an ephemeral key's certificate from Fulcio; every
    signature of this signer uses that key and certificate (valid for ~10 minutes) and gets its own Rekor entry.

    ``tlog_version`` restricts the signing config to Rekor major API version 1 or 2 (None: sigstore-python's choice).
    Legacy signatures need a Rekor v1 entry (its signed entry timestamp): pass ``tlog_version=1`` when the trust
    config also lists a Rekor v2 log and :meth:`sign_legacy_payload` will be used.
    """

    def __init__(self, token: IdentityToken, trust_config: ClientTrustConfig, *,
                 tlog_version: Literal[1, 2] | None = None) -> None:
        saved = trust_config.force_tlog_version
        trust_config.force_tlog_version = tlog_version
        try:
            self._context = SigningContext.from_trust_config(trust_config)
        except (SigstoreError, ValueError) as exc:
            raise UsageError(f"the Sigstore trust config cannot be used to sign: {exc} "
                             "(a bare trusted root only verifies)") from None
        finally:
            trust_config.force_tlog_version = saved
        self._trusted_root = trust_config.trusted_root
        self._token = token
        self._signer: Signer | None = None

    @property
    def identity(self) -> str:
        """The identity of the token (what the certificate's SAN will be)."""
        return self._token.identity

    @property
    def issuer(self) -> str:
        """The token's OIDC issuer (recorded in the certificate)."""
        return self._token.issuer

    def describe(self) -> str:
        """``keyless alice@example.com (issuer https://…)``, for messages and ``--json`` output."""
        return f"keyless {self.identity} (issuer {self.issuer})"

    def prepare(self) -> None:
        """Obtain the certificate now (``push --sign`` does this before uploading, so that a refused token or an
        unreachable Fulcio fails before anything is pushed)."""
        self._session()

    def _session(self) -> Signer:
        if self._signer is None:
            try:
                self._signer = Signer(self._token, self._context, cache=True)
            except OciartError:
                raise
            except Exception as exc:
                raise _signing_error(exc) from exc
        return self._signer

    def sign_statement(self, statement: bytes) -> bytes:
        """Sign an in-toto statement (exact bytes) as a DSSE envelope → Sigstore bundle v0.3 JSON bytes."""
        stmt = _statement(statement)
        signer = self._session()
        try:
            bundle = signer.sign_dsse(stmt)
        except Exception as exc:
            raise _signing_error(exc) from exc
        return bundle.to_json().encode()

    def sign_legacy_payload(self, payload: bytes) -> dict[str, str]:
        """Sign a simple-signing payload (ECDSA P-256/SHA-256 over the bytes, ``hashedrekord`` in Rekor v1) → the
        layer annotations of a legacy cosign keyless signature (signature, certificate, chain, Rekor bundle)."""
        signer = self._session()
        try:
            bundle = signer.sign_artifact(payload)
        except Exception as exc:
            raise _signing_error(exc) from exc
        doc = json.loads(bundle.to_json())
        material = doc["verificationMaterial"]
        entry = material["tlogEntries"][0]
        kind = entry["kindVersion"]
        if "inclusionPromise" not in entry or "integratedTime" not in entry:
            raise UsageError(f"the transparency log returned a {kind['kind']}/{kind['version']} entry without a "
                             "signed entry timestamp (Rekor v2?): legacy keyless signatures need a Rekor v1 log")
        cert_der = base64.b64decode(material["certificate"]["rawBytes"])
        cert = x509.load_der_x509_certificate(cert_der)
        rekor_bundle = {
            "SignedEntryTimestamp": entry["inclusionPromise"]["signedEntryTimestamp"],
            "Payload": {
                "body": entry["canonicalizedBody"],
                "integratedTime": int(entry["integratedTime"]),
                "logIndex": int(entry["logIndex"]),
                "logID": base64.b64decode(entry["logId"]["keyId"]).hex(),
            },
        }
        return {
            SIGNATURE_ANNOTATION: doc["messageSignature"]["signature"],
            CERTIFICATE_ANNOTATION: cert.public_bytes(serialization.Encoding.PEM).decode(),
            CHAIN_ANNOTATION: self._chain_pem(cert),
            BUNDLE_ANNOTATION: json.dumps(rekor_bundle, separators=(",", ":")),
        }

    def _chain_pem(self, cert: x509.Certificate) -> str:
        """Intermediates and root (PEM) from the trusted root, as cosign stores Fulcio's chain."""
        try:
            chain = _verify_chain(cert, self._trusted_root, datetime.now(UTC), [])
        except VerificationError as exc:
            raise VerificationError(f"the certificate Fulcio issued does not chain to the trusted root: {exc}") \
                from None
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain)


# -- verification ----------------------------------------------------------------------------------
def _when(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _validity(cert: x509.Certificate) -> str:
    return f"{_when(cert.not_valid_before_utc)} to {_when(cert.not_valid_after_utc)}"


def _verify_chain(cert: x509.Certificate, trusted_root: TrustedRoot, at: datetime,
                  untrusted: list[x509.Certificate]) -> list[x509.Certificate]:
    """Path-validate ``cert`` at ``at`` against the trusted root's Fulcio certificates (sigstore-python's policy:
    WebPKI defaults with the code-signing EKU allowed); ``untrusted`` may supply intermediates. → the chain above
    ``cert``."""
    try:
        anchors = trusted_root.get_fulcio_certs()
    except SigstoreError as exc:
        raise VerificationError(f"trusted root has no Fulcio certificate authority: {exc}") from None
    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None)
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None)
    verifier = (PolicyBuilder().store(Store(anchors)).time(at)
                .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy).build_client_verifier())
    try:
        return list(verifier.verify(cert, untrusted).chain[1:])
    except (X509VerificationError, x509.UnsupportedGeneralNameType) as exc:
        raise VerificationError(f"certificate does not chain to a trusted Fulcio CA at {_when(at)}: {exc}") \
            from None


def _check_code_signing(cert: x509.Certificate) -> None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise VerificationError(f"certificate is not a code-signing certificate: {exc}") from None
    if not usage.digital_signature or ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise VerificationError("certificate is not a code-signing certificate (key usage / extended key usage)")


def _bundle_time_hint(bundle: Bundle) -> str:
    """' (certificate valid … , logged at …)' when the log time lies outside the certificate's validity."""
    t = bundle.log_entry._inner.integrated_time
    if t is None:
        return ""
    at = datetime.fromtimestamp(int(t), tz=UTC)
    cert = bundle.signing_certificate
    if cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        return ""
    return f"certificate not valid at the transparency log time {_when(at)} (valid {_validity(cert)}): "


def verify_bundle(data: bytes, trusted_root: TrustedRoot, identities: Sequence[TrustedIdentity]) -> bytes:
    """Verify a keyless Sigstore v0.3 DSSE bundle; return the DSSE payload (the in-toto statement bytes).

    Checked (sigstore-python ``Verifier.verify_dsse``): the certificate chains to a Fulcio CA of ``trusted_root`` and
    was valid when the log integrated the entry, its SCT, the tlog entry (inclusion proof, checkpoint, promise) with a
    log key of ``trusted_root``, the DSSE signature, the entry's consistency with the envelope, and the certificate
    matches at least one of ``identities``. The payload type must be in-toto. The caller checks the statement
    (subject digest, predicateType). :class:`VerificationError` (one line, the reason) on any failure.
    """
    _require_identities(identities)
    try:
        material = json.loads(data).get("verificationMaterial")
    except (ValueError, UnicodeDecodeError, AttributeError):
        material = None
    if isinstance(material, dict) and "publicKey" in material and "certificate" not in material:
        raise VerificationError("Sigstore bundle is signed with a key, not keyless (verify it with the public key)")
    try:
        bundle = Bundle.from_json(data)
    except (SigstoreError, ValueError) as exc:
        raise InvalidContentError(f"malformed keyless Sigstore bundle: {_model_error(exc)}") from None
    if bundle._inner.dsse_envelope is None:
        raise VerificationError("keyless Sigstore bundle has no DSSE envelope (message signatures are not "
                                "supported here)")
    try:
        payload_type, payload = Verifier(trusted_root=trusted_root).verify_dsse(bundle, _IdentityPolicy(identities))
    except OciartError:
        raise
    except CertValidationError as exc:
        hint = _bundle_time_hint(bundle) or "certificate does not chain to a trusted Fulcio CA: "
        raise VerificationError(f"keyless signature: {hint}{exc}") from None
    except SigstoreError as exc:
        raise VerificationError(f"keyless signature: {_bundle_time_hint(bundle)}{exc}") from None
    except Exception as exc:  # noqa: BLE001 - fail closed: anything unexpected from the verifier is a failure
        raise VerificationError(f"keyless signature: {type(exc).__name__}: {exc}") from None
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise VerificationError(f"keyless signature: DSSE payloadType is {payload_type!r}, "
                                f"expected {INTOTO_PAYLOAD_TYPE!r}")
    return bytes(payload)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True)


class _RekorPayload(_Strict):
    body: str
    integratedTime: int
    logIndex: int
    logID: str


class _RekorBundle(_Strict):
    SignedEntryTimestamp: str
    Payload: _RekorPayload


class _HashedRekordHash(BaseModel):
    algorithm: str
    value: str


class _HashedRekordData(BaseModel):
    hash: _HashedRekordHash


class _HashedRekordKey(BaseModel):
    content: str


class _HashedRekordSignature(BaseModel):
    content: str
    publicKey: _HashedRekordKey


class _HashedRekordSpec(BaseModel):
    data: _HashedRekordData
    signature: _HashedRekordSignature


class _HashedRekord(BaseModel):
    apiVersion: str
    kind: str
    spec: _HashedRekordSpec


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidContentError(f"{what} is not valid base64") from None


def _tlog_key(trusted_root: TrustedRoot, log_id: bytes, at: datetime) -> ec.EllipticCurvePublicKey:
    """The trusted root's transparency log key with this log ID, valid at ``at``."""
    for tlog in trusted_root._inner.tlogs:
        if tlog.log_id.key_id != log_id:
            continue
        valid = tlog.public_key.valid_for
        if valid is not None and (at < valid.start or (valid.end is not None and at > valid.end)):
            raise VerificationError(f"transparency log {log_id.hex()} key was not valid at {_when(at)}")
        if tlog.public_key.raw_bytes is None:
            break
        key = serialization.load_der_public_key(tlog.public_key.raw_bytes)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise VerificationError(f"transparency log {log_id.hex()} key is not an ECDSA key (unsupported)")
        return key
    raise VerificationError(f"transparency log {log_id.hex()} is not in the trusted root")


def _load_pem_certs(text: str, what: str) -> list[x509.Certificate]:
    if not text.strip():
        return []
    try:
        return x509.load_pem_x509_certificates(text.encode())
    except ValueError as exc:
        raise InvalidContentError(f"{what} is not a PEM certificate: {exc}") from None


def verify_legacy(payload: bytes, annotations: Mapping[str, str], trusted_root: TrustedRoot,
                  identities: Sequence[TrustedIdentity]) -> None:
    """Verify a legacy keyless cosign signature layer (``payload`` = the layer blob, ``annotations`` = its
    annotations).

    Checked, trusting only ``trusted_root``: the Rekor bundle's SET with the log key named by its ``logID``; the logged
    ``hashedrekord/0.0.1`` body (sha256 of ``payload``, the layer's signature, the layer's certificate); the
    certificate chains to a Fulcio CA at the integrated time (the chain annotation only offers untrusted
    intermediates), is valid then, is a code-signing certificate with a valid SCT and matches at least one of
    ``identities``; the ECDSA signature over ``payload``. :class:`VerificationError` (one line) on any failure.
    """
    _require_identities(identities)
    for name in (SIGNATURE_ANNOTATION, CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION, BUNDLE_ANNOTATION):
        if len(annotations.get(name, "")) > MAX_ANNOTATION_BYTES:
            raise InvalidContentError(f"legacy signature annotation {name} is over the {MAX_ANNOTATION_BYTES}-byte "
                                      "limit")
    sig_b64 = annotations.get(SIGNATURE_ANNOTATION)
    if not sig_b64:
        raise VerificationError("legacy signature has no signature annotation")
    cert_pem = annotations.get(CERTIFICATE_ANNOTATION)
    if not cert_pem:
        raise VerificationError("legacy signature has no certificate (not a keyless signature)")
    bundle_json = annotations.get(BUNDLE_ANNOTATION)
    if not bundle_json:
        raise VerificationError("legacy keyless signature has no Rekor bundle (no transparency log entry)")
    signature = _b64decode(sig_b64, "legacy signature")
    certs = _load_pem_certs(cert_pem, "legacy signature certificate")
    if len(certs) != 1:
        raise InvalidContentError(f"legacy signature certificate annotation holds {len(certs)} certificates, "
                                  "expected 1")
    cert = certs[0]
    untrusted = _load_pem_certs(annotations.get(CHAIN_ANNOTATION, ""), "legacy signature chain")
    try:
        rekor = _RekorBundle.model_validate_json(bundle_json)
    except ValidationError as exc:
        raise InvalidContentError(f"malformed Rekor bundle annotation: {_model_error(exc)}") from None

    # (1) the signed entry timestamp, with a log key from the trusted root
    entry = rekor.Payload
    try:
        log_id = bytes.fromhex(entry.logID)
    except ValueError:
        raise InvalidContentError("Rekor bundle logID is not hex") from None
    logged_at = datetime.fromtimestamp(entry.integratedTime, tz=UTC)
    log_key = _tlog_key(trusted_root, log_id, logged_at)
    set_data = rfc8785.dumps({"body": entry.body, "integratedTime": entry.integratedTime,
                              "logID": entry.logID, "logIndex": entry.logIndex})
    try:
        log_key.verify(_b64decode(rekor.SignedEntryTimestamp, "Rekor SignedEntryTimestamp"), set_data,
                       ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VerificationError("Rekor bundle: invalid signed entry timestamp") from None

    # (2) the logged entry is this signature: payload digest, signature, certificate
    try:
        body = _HashedRekord.model_validate_json(_b64decode(entry.body, "Rekor entry body"))
    except ValidationError as exc:
        raise VerificationError(f"Rekor entry is not a hashedrekord: {_model_error(exc)}") from None
    if (body.kind, body.apiVersion) != ("hashedrekord", "0.0.1"):
        raise VerificationError(f"Rekor entry is {body.kind}/{body.apiVersion}, expected hashedrekord/0.0.1")
    digest = body.spec.data.hash
    if digest.algorithm != "sha256" or digest.value.lower() != hashlib.sha256(payload).hexdigest():
        raise VerificationError("Rekor entry does not match the payload (digest differs)")
    if _b64decode(body.spec.signature.content, "Rekor entry signature") != signature:
        raise VerificationError("Rekor entry does not match the layer's signature")
    logged_certs = _load_pem_certs(
        _b64decode(body.spec.signature.publicKey.content, "Rekor entry certificate").decode("utf-8", "replace"),
        "Rekor entry certificate")
    if len(logged_certs) != 1 or logged_certs[0] != cert:
        raise VerificationError("Rekor entry does not match the layer's certificate")

    # (3) the certificate: chain at the logged time, profile, SCT, identity
    if not cert.not_valid_before_utc <= logged_at <= cert.not_valid_after_utc:
        raise VerificationError(f"certificate not valid at the transparency log time {_when(logged_at)} "
                                f"(valid {_validity(cert)})")
    chain = _verify_chain(cert, trusted_root, logged_at, untrusted)
    _check_code_signing(cert)
    try:
        verify_sct(cert, chain, trusted_root.ct_keyring(KeyringPurpose.VERIFY))
    except SigstoreError as exc:
        raise VerificationError(f"certificate SCT does not verify: {exc}") from None
    reason = _identity_mismatch(cert, identities)
    if reason is not None:
        raise VerificationError(reason)

    # (4) the signature over the payload
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError(f"unsupported certificate key type {type(key).__name__}")
    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VerificationError("legacy keyless signature does not verify over the payload") from None
