"""Keyless signing and verification (``ociart.signing.keyless``) against a local Sigstore from npm ``@sigstore/mock``.

Everything runs offline: the mock Fulcio, CT log and Rekor v1 listen on 127.0.0.1 (fixtures ``sigstore_mock`` and
``sigstore_mock_skewed`` in conftest.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import ValidationError
from support.sigstore_mock import SigstoreMock, make_identity_token

from ociart.errors import AuthError, InvalidContentError, UsageError, VerificationError
from ociart.signing import identity as identity_mod
from ociart.signing import keyless
from ociart.signing.keyless import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    SIGNATURE_ANNOTATION,
    KeylessSigner,
    TrustedIdentity,
)

DIGEST_HEX = hashlib.sha256(b"a model manifest").hexdigest()
#: cosign's ``cosign sign`` statement: the subject has no ``name``.
STATEMENT = json.dumps({
    "_type": "https://in-toto.io/Statement/v1",
    "subject": [{"digest": {"sha256": DIGEST_HEX}, "annotations": {}}],
    "predicateType": "https://sigstore.dev/cosign/sign/v1",
    "predicate": {},
}, separators=(",", ":")).encode()
PAYLOAD = ('{"critical":{"identity":{"docker-reference":"registry.test/ns/model"},"image":{"docker-manifest-digest":'
           f'"sha256:{DIGEST_HEX}"}},"type":"cosign container image signature"}},"optional":null}}').encode()


# -- helpers / module fixtures --------------------------------------------------------------------------
def identity_of(mock: SigstoreMock) -> TrustedIdentity:
    return TrustedIdentity(subject=mock.identity, issuer=mock.issuer)


def new_signer(mock: SigstoreMock, **claims: Any) -> KeylessSigner:
    token = keyless.identity_token(mock.token(**claims))
    return KeylessSigner(token, keyless.load_trust_config(mock.trust_config))


class Signed:
    """One signing session's outputs: a DSSE bundle and legacy annotations from the same certificate."""

    def __init__(self, mock: SigstoreMock) -> None:
        self.mock = mock
        self.signer = new_signer(mock)
        self.bundle = self.signer.sign_statement(STATEMENT)
        self.annotations = self.signer.sign_legacy_payload(PAYLOAD)
        self.root = keyless.load_trusted_root(mock.trusted_root)


@pytest.fixture(scope="module")
def signed(sigstore_mock: SigstoreMock) -> Signed:
    return Signed(sigstore_mock)


@pytest.fixture(scope="module")
def signed_skewed(sigstore_mock_skewed: SigstoreMock) -> Signed:
    return Signed(sigstore_mock_skewed)


def edit_bundle(data: bytes, edit: Any) -> bytes:
    doc = json.loads(data)
    edit(doc)
    return json.dumps(doc).encode()


def self_signed_cert(key: ec.EllipticCurvePrivateKey, identity: str, issuer: str) -> x509.Certificate:
    """A certificate that looks like a Fulcio one (same SAN, issuer extensions, usages) but is self-signed."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "sigstore")])
    issuer_der = b"\x0c" + bytes([len(issuer)]) + issuer.encode()
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(minutes=10))
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
            .add_extension(x509.UnrecognizedExtension(identity_mod.OIDC_ISSUER_V1_OID, issuer.encode()), critical=False)
            .add_extension(x509.UnrecognizedExtension(identity_mod.OIDC_ISSUER_V2_OID, issuer_der), critical=False)
            .sign(key, hashes.SHA256()))


# -- bundles (DSSE, cosign v3) ----------------------------------------------------------------------------
def test_sign_statement_bundle_shape_and_verify(signed: Signed) -> None:
    doc = json.loads(signed.bundle)
    assert doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    material = doc["verificationMaterial"]
    assert "certificate" in material and "x509CertificateChain" not in material
    [entry] = material["tlogEntries"]
    assert entry["kindVersion"] == {"kind": "dsse", "version": "0.0.1"}
    assert entry["inclusionPromise"]["signedEntryTimestamp"] and entry["inclusionProof"]["checkpoint"]
    body = json.loads(base64.b64decode(entry["canonicalizedBody"]))
    assert body["spec"]["payloadHash"] == {"algorithm": "sha256", "value": hashlib.sha256(STATEMENT).hexdigest()}
    envelope = doc["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(envelope["payload"]) == STATEMENT  # exact bytes, no "name" added

    assert keyless.verify_bundle(signed.bundle, signed.root, [identity_of(signed.mock)]) == STATEMENT


def test_statement_with_subject_name_is_signed_as_is(signed: Signed) -> None:
    statement = STATEMENT.replace(b'"subject":[{', b'"subject":[{"name":"registry.test/ns/model",')
    bundle = signed.signer.sign_statement(statement)
    assert keyless.verify_bundle(bundle, signed.root, [identity_of(signed.mock)]) == statement


def test_sign_statement_rejects_non_statement(signed: Signed) -> None:
    with pytest.raises(UsageError, match="statement"):
        signed.signer.sign_statement(b'{"_type":"https://in-toto.io/Statement/v1"}')
    with pytest.raises(UsageError, match="not JSON"):
        signed.signer.sign_statement(b"not json")


@pytest.mark.parametrize("identity", [
    TrustedIdentity(subject_regexp=r"^alice@example\.com$", issuer_regexp=r"^https://issuer\.ociart\.test$"),
    TrustedIdentity(subject_regexp=r"@example\.com", issuer="https://issuer.ociart.test"),  # search, not fullmatch
    TrustedIdentity(subject="alice@example.com", issuer_regexp=r"ociart"),
])
def test_verify_bundle_regexp_identities(signed: Signed, identity: TrustedIdentity) -> None:
    assert keyless.verify_bundle(signed.bundle, signed.root, [identity]) == STATEMENT


def test_verify_bundle_any_of_several_identities(signed: Signed) -> None:
    identities = [TrustedIdentity(subject="bob@example.com", issuer=signed.mock.issuer), identity_of(signed.mock)]
    assert keyless.verify_bundle(signed.bundle, signed.root, identities) == STATEMENT


def test_verify_bundle_wrong_identity(signed: Signed) -> None:
    wrong = TrustedIdentity(subject="bob@example.com", issuer=signed.mock.issuer)
    with pytest.raises(VerificationError, match=r"certificate identity alice@example\.com does not match "
                                                r"bob@example\.com") as info:
        keyless.verify_bundle(signed.bundle, signed.root, [wrong])
    assert "\n" not in str(info.value)
    with pytest.raises(VerificationError, match="does not match any trusted identity"):
        keyless.verify_bundle(signed.bundle, signed.root, [
            wrong, TrustedIdentity(subject_regexp="^mallory@", issuer_regexp=".*")])
    with pytest.raises(VerificationError, match="does not match"):  # regexps use search, but must still match
        keyless.verify_bundle(signed.bundle, signed.root, [
            TrustedIdentity(subject_regexp=r"^alice@example\.org$", issuer=signed.mock.issuer)])


def test_verify_bundle_wrong_issuer(signed: Signed) -> None:
    for wrong in (TrustedIdentity(subject=signed.mock.identity, issuer="https://token.actions.githubusercontent.com"),
                  TrustedIdentity(subject=signed.mock.identity, issuer_regexp=r"^https://accounts\.google\.com$")):
        with pytest.raises(VerificationError, match=r"certificate issuer https://issuer\.ociart\.test does not "
                                                    r"match"):
            keyless.verify_bundle(signed.bundle, signed.root, [wrong])


def test_verify_bundle_certificate_not_valid_at_log_time(signed_skewed: Signed) -> None:
    with pytest.raises(VerificationError, match="not valid at the transparency log time"):
        keyless.verify_bundle(signed_skewed.bundle, signed_skewed.root, [identity_of(signed_skewed.mock)])


def test_verify_bundle_tampered(signed: Signed) -> None:
    ids = [identity_of(signed.mock)]
    other = STATEMENT.replace(DIGEST_HEX.encode(), b"0" * 64)

    def payload(doc: dict[str, Any]) -> None:
        doc["dsseEnvelope"]["payload"] = base64.b64encode(other).decode()

    def signature(doc: dict[str, Any]) -> None:
        sig = bytearray(base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"]))
        sig[-1] ^= 1
        doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()

    def log_time(doc: dict[str, Any]) -> None:
        entry = doc["verificationMaterial"]["tlogEntries"][0]
        entry["integratedTime"] = str(int(entry["integratedTime"]) + 1)

    for edit, reason in ((payload, "DSSE: invalid signature"), (signature, "DSSE: invalid signature"),
                         (log_time, "inclusion promise")):
        with pytest.raises(VerificationError, match=reason):
            keyless.verify_bundle(edit_bundle(signed.bundle, edit), signed.root, ids)


def test_verify_bundle_unrelated_trusted_root(signed: Signed, signed_skewed: Signed) -> None:
    # the skewed mock is another instance: other CA, CT log and Rekor keys
    with pytest.raises(VerificationError, match="certificate does not chain to a trusted Fulcio CA"):
        keyless.verify_bundle(signed.bundle, signed_skewed.root, [identity_of(signed.mock)])


def test_verify_bundle_malformed_or_not_keyless(signed: Signed) -> None:
    ids = [identity_of(signed.mock)]
    with pytest.raises(InvalidContentError, match="malformed keyless Sigstore bundle"):
        keyless.verify_bundle(b"{}", signed.root, ids)
    from ociart.signing.bundle import bundle_bytes

    key_bundle = bundle_bytes(STATEMENT, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(VerificationError, match="signed with a key, not keyless"):
        keyless.verify_bundle(key_bundle, signed.root, ids)
    no_cert = edit_bundle(signed.bundle, lambda doc: doc["verificationMaterial"].pop("certificate"))
    with pytest.raises(InvalidContentError, match="malformed keyless Sigstore bundle: verificationMaterial"):
        keyless.verify_bundle(no_cert, signed.root, ids)
    with pytest.raises(UsageError, match="at least one trusted identity"):
        keyless.verify_bundle(signed.bundle, signed.root, [])


# -- legacy (.sig layer annotations) ------------------------------------------------------------------------
def test_legacy_annotations_shape_and_verify(signed: Signed) -> None:
    ann = signed.annotations
    assert set(ann) == {SIGNATURE_ANNOTATION, CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION, BUNDLE_ANNOTATION}
    cert = x509.load_pem_x509_certificate(ann[CERTIFICATE_ANNOTATION].encode())
    # one signing session: the bundle's certificate is the legacy signature's
    bundle_cert = base64.b64decode(json.loads(signed.bundle)["verificationMaterial"]["certificate"]["rawBytes"])
    assert cert.public_bytes(serialization.Encoding.DER) == bundle_cert
    chain = x509.load_pem_x509_certificates(ann[CHAIN_ANNOTATION].encode())
    assert [c.subject for c in chain] == [cert.issuer]
    raw = ann[BUNDLE_ANNOTATION]
    rekor = json.loads(raw)
    assert raw.startswith('{"SignedEntryTimestamp":"') and ',"Payload":{"body":"' in raw and " " not in raw
    assert list(rekor["Payload"]) == ["body", "integratedTime", "logIndex", "logID"]
    assert isinstance(rekor["Payload"]["integratedTime"], int) and isinstance(rekor["Payload"]["logIndex"], int)
    rekor_key = base64.b64decode(signed.mock.info["rekor_key_der"])
    assert rekor["Payload"]["logID"] == hashlib.sha256(rekor_key).hexdigest()
    body = json.loads(base64.b64decode(rekor["Payload"]["body"]))
    assert body["kind"] == "hashedrekord" and body["apiVersion"] == "0.0.1"
    assert body["spec"]["data"]["hash"] == {"algorithm": "sha256", "value": hashlib.sha256(PAYLOAD).hexdigest()}
    assert body["spec"]["signature"]["content"] == ann[SIGNATURE_ANNOTATION]

    keyless.verify_legacy(PAYLOAD, ann, signed.root, [identity_of(signed.mock)])
    keyless.verify_legacy(PAYLOAD, ann, signed.root, [TrustedIdentity(subject_regexp="^alice@",
                                                                      issuer_regexp="^https://issuer")])
    keyless.verify_legacy(PAYLOAD, ann | {CHAIN_ANNOTATION: ""}, signed.root, [identity_of(signed.mock)])


def test_legacy_wrong_identity_or_issuer(signed: Signed) -> None:
    with pytest.raises(VerificationError, match=r"certificate identity alice@example\.com does not match"):
        keyless.verify_legacy(PAYLOAD, signed.annotations, signed.root,
                              [TrustedIdentity(subject="bob@example.com", issuer=signed.mock.issuer)])
    with pytest.raises(VerificationError, match="certificate issuer .* does not match"):
        keyless.verify_legacy(PAYLOAD, signed.annotations, signed.root,
                              [TrustedIdentity(subject=signed.mock.identity, issuer="https://other.test")])


def test_legacy_tampered(signed: Signed) -> None:
    ids = [identity_of(signed.mock)]
    ann = signed.annotations
    with pytest.raises(VerificationError, match="does not match the payload"):
        keyless.verify_legacy(PAYLOAD.replace(b"null", b"{}"), ann, signed.root, ids)
    sig = bytearray(base64.b64decode(ann[SIGNATURE_ANNOTATION]))
    sig[-1] ^= 1
    with pytest.raises(VerificationError, match="does not match the layer's signature"):
        keyless.verify_legacy(PAYLOAD, ann | {SIGNATURE_ANNOTATION: base64.b64encode(bytes(sig)).decode()},
                              signed.root, ids)
    rekor = json.loads(ann[BUNDLE_ANNOTATION])
    rekor["Payload"]["integratedTime"] += 60
    with pytest.raises(VerificationError, match="invalid signed entry timestamp"):
        keyless.verify_legacy(PAYLOAD, ann | {BUNDLE_ANNOTATION: json.dumps(rekor)}, signed.root, ids)
    for missing, reason in ((CERTIFICATE_ANNOTATION, "no certificate"), (BUNDLE_ANNOTATION, "no Rekor bundle"),
                            (SIGNATURE_ANNOTATION, "no signature")):
        with pytest.raises(VerificationError, match=reason):
            keyless.verify_legacy(PAYLOAD, {k: v for k, v in ann.items() if k != missing}, signed.root, ids)
    with pytest.raises(InvalidContentError, match="malformed Rekor bundle"):
        keyless.verify_legacy(PAYLOAD, ann | {BUNDLE_ANNOTATION: '{"Payload":{}}'}, signed.root, ids)


def test_legacy_certificate_swapped_for_self_signed(signed: Signed) -> None:
    """A self-signed certificate with the right SAN and issuer is refused, even with a genuine log entry for it."""
    mock, ids = signed.mock, [identity_of(signed.mock)]
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed_cert(key, mock.identity, mock.issuer)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    sig = key.sign(PAYLOAD, ec.ECDSA(hashes.SHA256()))
    forged = signed.annotations | {SIGNATURE_ANNOTATION: base64.b64encode(sig).decode(),
                                   CERTIFICATE_ANNOTATION: cert_pem.decode(), CHAIN_ANNOTATION: cert_pem.decode()}
    # (a) with the genuine Rekor bundle of the real signature: the log entry names another certificate
    with pytest.raises(VerificationError, match="does not match the layer's"):
        keyless.verify_legacy(PAYLOAD, forged, signed.root, ids)
    # (b) with a genuine log entry for the forged certificate (Rekor logs any certificate): the chain check refuses
    entry = {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(PAYLOAD).hexdigest()}},
        "signature": {"content": base64.b64encode(sig).decode(),
                      "publicKey": {"content": base64.b64encode(cert_pem).decode()}}}}
    resp = httpx.post(f"{mock.url}/api/v1/log/entries", json=entry, timeout=10)
    assert resp.status_code == 201, resp.text
    [logged] = resp.json().values()
    rekor = {"SignedEntryTimestamp": logged["verification"]["signedEntryTimestamp"],
             "Payload": {"body": logged["body"], "integratedTime": logged["integratedTime"],
                         "logIndex": logged["logIndex"], "logID": logged["logID"]}}
    forged[BUNDLE_ANNOTATION] = json.dumps(rekor, separators=(",", ":"))
    with pytest.raises(VerificationError, match="does not chain to a trusted Fulcio CA"):
        keyless.verify_legacy(PAYLOAD, forged, signed.root, ids)


def test_legacy_certificate_not_valid_at_log_time(signed_skewed: Signed) -> None:
    with pytest.raises(VerificationError, match="certificate not valid at the transparency log time"):
        keyless.verify_legacy(PAYLOAD, signed_skewed.annotations, signed_skewed.root,
                              [identity_of(signed_skewed.mock)])


def test_legacy_unrelated_trusted_root(signed: Signed, signed_skewed: Signed) -> None:
    with pytest.raises(VerificationError, match="is not in the trusted root"):
        keyless.verify_legacy(PAYLOAD, signed.annotations, signed_skewed.root, [identity_of(signed.mock)])


# -- identities, tokens, trust files ------------------------------------------------------------------------
def test_trusted_identity_validation() -> None:
    for kwargs in ({"issuer": "https://x"}, {"subject": "a", "subject_regexp": "a", "issuer": "https://x"},
                   {"subject": "a"}, {"subject": "a", "issuer": "https://x", "issuer_regexp": "x"},
                   {"subject_regexp": "(", "issuer": "https://x"}):
        with pytest.raises(ValidationError, match="trusted identity needs|invalid identity regexp"):
            TrustedIdentity(**kwargs)
    ident = TrustedIdentity(subject="a", issuer_regexp="^https://")
    assert ident.describe() == "identity a, issuer ~ ^https://"
    with pytest.raises(ValidationError):
        ident.subject = "b"  # type: ignore[misc]  # frozen


def test_identity_token_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    def tok(who: str) -> str:
        return make_identity_token(who)

    monkeypatch.setattr(keyless, "_detect_ambient", lambda: tok("ambient@example.com"))
    monkeypatch.setenv("OCIART_IDENTITY_TOKEN", tok("ociart@example.com"))
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", tok("sigstore@example.com"))
    assert keyless.identity_token(tok("explicit@example.com")).identity == "explicit@example.com"
    assert keyless.identity_token().identity == "sigstore@example.com"
    monkeypatch.delenv("SIGSTORE_ID_TOKEN")
    assert keyless.identity_token().identity == "ociart@example.com"
    monkeypatch.delenv("OCIART_IDENTITY_TOKEN")
    assert keyless.identity_token().identity == "ambient@example.com"
    monkeypatch.setattr(keyless, "_detect_ambient", lambda: None)
    with pytest.raises(AuthError, match="no OIDC identity token: pass --identity-token, set SIGSTORE_ID_TOKEN"):
        keyless.identity_token()


def test_identity_token_unusable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyless, "_detect_ambient", lambda: None)
    with pytest.raises(AuthError, match="from --identity-token is unusable"):
        keyless.identity_token("not-a-jwt")
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", make_identity_token(aud="someone-else"))
    with pytest.raises(AuthError, match=r"from \$SIGSTORE_ID_TOKEN is unusable: (?i:.*audience)"):
        keyless.identity_token()
    with pytest.raises(AuthError, match="unusable"):
        keyless.identity_token(make_identity_token(lifetime=-60))


def test_load_trust_files(sigstore_mock: SigstoreMock, tmp_path: Path) -> None:
    config = keyless.load_trust_config(sigstore_mock.trust_config)
    assert config.trusted_root.get_fulcio_certs()
    assert keyless.load_trusted_root(sigstore_mock.trust_config).get_fulcio_certs()
    assert keyless.load_trusted_root(sigstore_mock.trusted_root).get_fulcio_certs()
    # a bare trusted root verifies but cannot sign
    bare = keyless.load_trust_config(sigstore_mock.trusted_root)
    with pytest.raises(UsageError, match="cannot be used to sign"):
        KeylessSigner(keyless.identity_token(sigstore_mock.token()), bare)

    with pytest.raises(UsageError, match="does not exist"):
        keyless.load_trust_config(tmp_path / "missing.json")
    with pytest.raises(UsageError, match="does not exist"):
        keyless.load_trusted_root(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidContentError, match="not valid JSON"):
        keyless.load_trusted_root(bad)
    bad.write_text('{"mediaType": "application/vnd.example+json"}')
    with pytest.raises(InvalidContentError, match="unsupported mediaType"):
        keyless.load_trust_config(bad)
    bad.write_text(json.dumps({"mediaType": keyless.TRUSTED_ROOT_MEDIA_TYPE, "tlogs": "nope"}))
    with pytest.raises(InvalidContentError, match="malformed trusted root"):
        keyless.load_trusted_root(bad)


def test_signing_with_unreachable_services(sigstore_mock: SigstoreMock, tmp_path: Path) -> None:
    doc = json.loads(sigstore_mock.trust_config.read_text())
    for service in doc["signingConfig"]["caUrls"] + doc["signingConfig"]["rekorTlogUrls"]:
        service["url"] = "http://127.0.0.1:9"  # discard port: connection refused
    path = tmp_path / "trust_config.json"
    path.write_text(json.dumps(doc))
    signer = KeylessSigner(keyless.identity_token(sigstore_mock.token()), keyless.load_trust_config(path))
    with pytest.raises(Exception, match="Sigstore service unreachable") as info:
        signer.sign_statement(STATEMENT)
    assert type(info.value).__name__ == "NetworkError"
