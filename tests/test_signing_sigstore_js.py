"""Cross-check ociart's key and keyless Sigstore bundles with an independent verifier: npm ``@sigstore/verify`` 3.1.1.

``tests/support/node/verify-bundle.js`` parses the bundle with ``@sigstore/bundle`` ``bundleFromJSON`` and verifies
the DSSE signature with ``@sigstore/verify`` (trust material = only the given public key; tlog/CT/timestamp
thresholds 0), then checks the in-toto statement (``_type``, subject digest, predicateType).

Keyless bundles (Fulcio certificate + Rekor v1 entry, signed by ``ociart.signing.keyless.KeylessSigner`` against the
local mock Sigstore, fixtures ``sigstore_mock`` / ``sigstore_mock_skewed``) go through the same script in its keyless
mode (``--trusted-root FILE --identity SAN --issuer ISS``): trust material from the mock's ``trusted_root.json`` via
``toTrustMaterial(TrustedRoot.fromJSON(...))``, default thresholds (1 Rekor entry, 1 SCT, 1 timestamp), exact SAN +
issuer-extension policy. The mock's bundles verify fully; nothing is relaxed.

sigstore-js knows nothing about OCI, so the tests also check in Python that the DSSE payload names exactly the
digest that was signed. Node and ``tests/support/node/node_modules`` are required (CI installs them): when missing,
the tests FAIL with the command to run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from support.sigstore_mock import SigstoreMock

from ociart.errors import VerificationError
from ociart.signing import bundle, keyless, keys

NODE_DIR = Path(__file__).resolve().parent / "support" / "node"
SCRIPT = NODE_DIR / "verify-bundle.js"
PACKAGES = ("@sigstore/verify", "@sigstore/bundle")
PASSWORD = b"sigstore-js-test"
DIGEST = "sha256:" + hashlib.sha256(b"an OCI image manifest").hexdigest()
OTHER_DIGEST = "sha256:" + hashlib.sha256(b"another OCI image manifest").hexdigest()


@dataclass(frozen=True)
class KeyPair:
    private: ec.EllipticCurvePrivateKey
    pub_path: Path


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    missing = [p for p in PACKAGES if not (NODE_DIR / "node_modules" / p / "package.json").is_file()]
    if exe is None or missing or not SCRIPT.is_file():
        what = "node is not on PATH" if exe is None else (
            f"missing {', '.join(missing)} in {NODE_DIR / 'node_modules'}" if missing else f"missing {SCRIPT}")
        pytest.fail(f"sigstore-js verifier unavailable ({what}): install Node.js >= 20 and run "
                    "`npm ci --prefix tests/support/node`", pytrace=False)
    return exe


def _key_pair(directory: Path, name: str) -> KeyPair:
    """A cosign-style pair written by ociart (encrypted private key + ``PUBLIC KEY`` PEM), read back."""
    key_path, pub_path = keys.generate_key_pair(directory / name, PASSWORD)
    return KeyPair(keys.load_private_key(key_path, PASSWORD), pub_path)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return _key_pair(tmp_path_factory.mktemp("sigstore-js-keys"), "cosign")


@pytest.fixture(scope="module")
def other_signer(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return _key_pair(tmp_path_factory.mktemp("sigstore-js-other-keys"), "other")


def _verify_js(node: str, tmp: Path, bundle_json: bytes, pub_path: Path, expected_digest: str = "-",
               predicate_type: str | None = None) -> dict[str, Any]:
    path = tmp / f"bundle-{hashlib.sha256(bundle_json).hexdigest()[:12]}.json"
    path.write_bytes(bundle_json)
    args = [node, str(SCRIPT), str(path), str(pub_path), expected_digest]
    if predicate_type is not None:
        args.append(predicate_type)
    return _run_script(args)


def _run_script(args: list[str]) -> dict[str, Any]:
    """Run verify-bundle.js: exactly one JSON line on stdout, exit 0 when ``ok`` and 1 when not."""
    proc = subprocess.run(args, check=False, capture_output=True, text=True, timeout=60)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line, got stdout={proc.stdout!r} stderr={proc.stderr!r}"
    result = json.loads(lines[0])
    assert (proc.returncode == 0) == (result["ok"] is True), (proc.returncode, result, proc.stderr)
    assert proc.returncode in (0, 1), (proc.returncode, proc.stderr)
    return result


def _envelope(bundle_json: bytes) -> dict[str, Any]:
    return json.loads(bundle_json)["dsseEnvelope"]


def _with_envelope(bundle_json: bytes, **changes: Any) -> bytes:
    doc = json.loads(bundle_json)
    doc["dsseEnvelope"] |= changes
    return json.dumps(doc, separators=(",", ":")).encode()


def _flip_last_sig_byte(bundle_json: bytes) -> bytes:
    sig = bytearray(base64.b64decode(_envelope(bundle_json)["signatures"][0]["sig"]))
    sig[-1] ^= 0x01  # inside s: the DER structure stays well-formed, only the value changes
    return _with_envelope(bundle_json, signatures=[{"sig": base64.b64encode(bytes(sig)).decode()}])


def test_ociart_bundle_is_accepted_by_sigstore_js(node: str, signer: KeyPair, tmp_path: Path) -> None:
    body = bundle.statement_bytes(DIGEST)
    signed = bundle.bundle_bytes(body, signer.private)

    result = _verify_js(node, tmp_path, signed, signer.pub_path, DIGEST)
    assert result["ok"] is True, result
    assert result["subjects"] == [DIGEST]
    assert result["predicateType"] == bundle.COSIGN_SIGN_PREDICATE
    # sigstore-js handed the key finder exactly the hint ociart wrote (the finder ignores it: keys come from config)
    assert result["hints"] == [bundle.key_hint(signer.private)]

    # What sigstore-js cannot know: the signed payload is the statement for this OCI manifest digest, nothing else.
    env = _envelope(signed)
    assert env["payloadType"] == "application/vnd.in-toto+json"
    payload = base64.b64decode(env["payload"], validate=True)
    assert payload == body
    statement = json.loads(payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://sigstore.dev/cosign/sign/v1"
    assert [s["digest"] for s in statement["subject"]] == [{"sha256": DIGEST.removeprefix("sha256:")}]
    # and the signature is over the DSSE PAE of exactly those bytes (checked with the same public key file)
    pub = keys.load_public_key(signer.pub_path)
    keys.verify(pub, bundle.pae(env["payloadType"], payload), base64.b64decode(env["signatures"][0]["sig"]))


def test_named_subject_and_attestation_predicate_are_accepted(node: str, signer: KeyPair, tmp_path: Path) -> None:
    predicate_type = "https://slsa.dev/provenance/v1"
    body = bundle.statement_bytes(DIGEST, predicate_type, {"buildDefinition": {"buildType": "https://example/x"}},
                                  name="registry.example.com/models/bert")
    signed = bundle.bundle_bytes(body, signer.private)
    result = _verify_js(node, tmp_path, signed, signer.pub_path, DIGEST, predicate_type)
    assert result["ok"] is True, result
    assert json.loads(base64.b64decode(_envelope(signed)["payload"]))["subject"][0] == {
        "name": "registry.example.com/models/bert", "digest": {"sha256": DIGEST.removeprefix("sha256:")},
        "annotations": {}}


@pytest.mark.parametrize("case", ["flipped-signature-byte", "changed-payload", "wrong-public-key"])
def test_tampered_bundle_is_rejected_by_sigstore_js(node: str, signer: KeyPair, other_signer: KeyPair,
                                                    tmp_path: Path, case: str) -> None:
    signed = bundle.bundle_bytes(bundle.statement_bytes(DIGEST), signer.private)
    pub_path, expected = signer.pub_path, DIGEST
    if case == "flipped-signature-byte":
        signed = _flip_last_sig_byte(signed)
    elif case == "changed-payload":
        # the statement for another digest, with the signature made over the original one
        forged = bundle.statement_bytes(OTHER_DIGEST)
        signed = _with_envelope(signed, payload=base64.b64encode(forged).decode())
        expected = OTHER_DIGEST  # so the only thing that can fail is the signature
        assert json.loads(base64.b64decode(_envelope(signed)["payload"]))["subject"][0]["digest"] == {
            "sha256": OTHER_DIGEST.removeprefix("sha256:")}
    else:
        pub_path = other_signer.pub_path

    result = _verify_js(node, tmp_path, signed, pub_path, expected)
    assert result["ok"] is False, result
    assert result["code"] == "SIGNATURE_ERROR", result
    # ociart's own verifier agrees
    with pytest.raises(VerificationError, match="signature"):
        bundle.verify_bundle_bytes(signed, expected, keys.load_public_key(pub_path))


def test_statement_for_another_digest_is_rejected_by_the_script(node: str, signer: KeyPair, tmp_path: Path) -> None:
    """A correctly signed bundle for another manifest: the signature is fine, the subject is not."""
    signed = bundle.bundle_bytes(bundle.statement_bytes(OTHER_DIGEST), signer.private)
    result = _verify_js(node, tmp_path, signed, signer.pub_path, DIGEST)
    assert result == {"ok": False, "error": result["error"], "code": "STATEMENT_ERROR"}
    assert "subject mismatch" in result["error"] and OTHER_DIGEST in result["error"]


# -- keyless bundles (Fulcio certificate + Rekor entry) from the local mock Sigstore -------------------------------
@dataclass(frozen=True)
class KeylessSigned:
    mock: SigstoreMock
    bundle: bytes
    statement: bytes


def _keyless_sign(mock: SigstoreMock, digest: str = DIGEST) -> KeylessSigned:
    signer = keyless.KeylessSigner(keyless.identity_token(mock.token()), keyless.load_trust_config(mock.trust_config))
    body = bundle.statement_bytes(digest)
    return KeylessSigned(mock, signer.sign_statement(body), body)


@pytest.fixture(scope="module")
def keyless_signed(sigstore_mock: SigstoreMock) -> KeylessSigned:
    return _keyless_sign(sigstore_mock)


def _verify_js_keyless(node: str, tmp: Path, bundle_json: bytes, trusted_root: Path, identity: str, issuer: str,
                       expected_digest: str = "-", *, ctlog_threshold: int | None = None) -> dict[str, Any]:
    path = tmp / f"keyless-{hashlib.sha256(bundle_json).hexdigest()[:12]}.json"
    path.write_bytes(bundle_json)
    args = [node, str(SCRIPT), str(path), "--trusted-root", str(trusted_root), "--identity", identity,
            "--issuer", issuer]
    if ctlog_threshold is not None:
        args += ["--ctlog-threshold", str(ctlog_threshold)]
    args.append(expected_digest)
    return _run_script(args)


def _leaf_certificate(bundle_json: bytes) -> x509.Certificate:
    raw = json.loads(bundle_json)["verificationMaterial"]["certificate"]["rawBytes"]
    return x509.load_der_x509_certificate(base64.b64decode(raw))


def test_keyless_bundle_is_accepted_by_sigstore_js(node: str, keyless_signed: KeylessSigned, tmp_path: Path) -> None:
    """Full sigstore-js keyless verification of an ociart bundle signed against the local mock Sigstore.

    Trust material is only the mock's ``trusted_root.json``; thresholds are sigstore-js's defaults (1 Rekor entry,
    1 SCT, 1 verified timestamp): sigstore-js checks the Fulcio chain at Rekor's integratedTime, the mock CT log's
    embedded SCT, the Rekor SET, checkpoint and Merkle inclusion proof, that the canonicalized dsse body matches the
    envelope, the DSSE signature, and the identity policy (exact SAN + issuer extension). Nothing had to be relaxed.
    """
    mock = keyless_signed.mock
    result = _verify_js_keyless(node, tmp_path, keyless_signed.bundle, mock.trusted_root, mock.identity,
                                mock.issuer, DIGEST)
    assert result == {"ok": True, "subjects": [DIGEST], "predicateType": bundle.COSIGN_SIGN_PREDICATE,
                      "signer": {"subjectAlternativeName": mock.identity, "issuer": mock.issuer},
                      "tlogThreshold": 1, "ctlogThreshold": 1}

    # The mock Fulcio puts the token's ``sub`` into a URI SAN even though it looks like an e-mail address;
    # sigstore-js reports URI (then rfc822Name) SANs as "subjectAlternativeName", so the exact policy still matches.
    san = _leaf_certificate(keyless_signed.bundle).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [mock.identity]
    assert san.value.get_values_for_type(x509.RFC822Name) == []
    # the signed bytes are the ociart statement for exactly this digest, and ociart's own verifier agrees
    assert base64.b64decode(_envelope(keyless_signed.bundle)["payload"]) == keyless_signed.statement
    root = keyless.load_trusted_root(mock.trusted_root)
    identities = [keyless.TrustedIdentity(subject=mock.identity, issuer=mock.issuer)]
    assert keyless.verify_bundle(keyless_signed.bundle, root, identities) == keyless_signed.statement


@pytest.mark.parametrize(("case", "code", "message"), [
    ("wrong-identity", "UNTRUSTED_SIGNER_ERROR", "certificate identity error"),
    ("identity-prefix", "UNTRUSTED_SIGNER_ERROR", "certificate identity error"),
    ("wrong-issuer", "UNTRUSTED_SIGNER_ERROR", "invalid certificate extension"),
    ("changed-payload", "TLOG_BODY_ERROR", "DSSE payload hash mismatch"),
    ("other-trusted-root", "CERTIFICATE_ERROR", "Failed to verify certificate chain: no valid certificate path found"),
])
def test_keyless_bundle_is_rejected_by_sigstore_js(node: str, keyless_signed: KeylessSigned,
                                                   sigstore_mock_skewed: SigstoreMock, tmp_path: Path,
                                                   case: str, code: str, message: str) -> None:
    mock = keyless_signed.mock
    signed, root, identity, issuer, expected = (keyless_signed.bundle, mock.trusted_root, mock.identity,
                                                mock.issuer, DIGEST)
    if case == "wrong-identity":
        identity = "mallory@example.com"
    elif case == "identity-prefix":
        # the policy is an exact string: a prefix (or a regular expression such as ".*") must not match
        identity = mock.identity[:-1]
    elif case == "wrong-issuer":
        issuer = "https://other-issuer.ociart.test"
    elif case == "changed-payload":
        # the statement for another digest, with the signature (and the Rekor entry) made over the original one
        signed = _with_envelope(signed, payload=base64.b64encode(bundle.statement_bytes(OTHER_DIGEST)).decode())
        expected = OTHER_DIGEST  # so the statement check cannot be what fails
    else:
        # another Sigstore instance (other Fulcio, CT and Rekor keys): both mock roots have the same subject name,
        # so the leaf's issuer name matches the other root, but the chain's signature does not verify
        root = sigstore_mock_skewed.trusted_root

    result = _verify_js_keyless(node, tmp_path, signed, root, identity, issuer, expected)
    assert result["ok"] is False, result
    assert result["code"] == code, result
    assert message in result["error"], result
    # ociart's own verifier agrees
    with pytest.raises(VerificationError):
        keyless.verify_bundle(signed, keyless.load_trusted_root(root),
                              [keyless.TrustedIdentity(subject=identity, issuer=issuer)])


def test_keyless_regex_identity_is_not_a_wildcard(node: str, keyless_signed: KeylessSigned, tmp_path: Path) -> None:
    """sigstore-js treats its SAN policy as a regular expression; the script anchors and escapes it."""
    mock = keyless_signed.mock
    result = _verify_js_keyless(node, tmp_path, keyless_signed.bundle, mock.trusted_root, ".*", mock.issuer)
    assert result["ok"] is False and result["code"] == "UNTRUSTED_SIGNER_ERROR", result
    dotted = mock.identity.replace(".", "_")  # "." would match "_" if it were not escaped
    assert dotted != mock.identity
    result = _verify_js_keyless(node, tmp_path, keyless_signed.bundle, mock.trusted_root, dotted, mock.issuer)
    assert result["ok"] is False and result["code"] == "UNTRUSTED_SIGNER_ERROR", result


def test_keyless_bundle_logged_after_certificate_expiry_is_rejected(node: str, sigstore_mock_skewed: SigstoreMock,
                                                                   tmp_path: Path) -> None:
    """Against its own root: Rekor's integratedTime (the only verified timestamp) is two hours after the 10-minute
    certificate expired, so the chain is not valid at signing time, for sigstore-js as for ociart."""
    signed = _keyless_sign(sigstore_mock_skewed)
    mock = sigstore_mock_skewed
    result = _verify_js_keyless(node, tmp_path, signed.bundle, mock.trusted_root, mock.identity, mock.issuer, DIGEST)
    assert result["ok"] is False, result
    assert result["code"] == "CERTIFICATE_ERROR", result
    assert "certificate is not valid or expired at the specified date" in result["error"], result
    with pytest.raises(VerificationError):
        keyless.verify_bundle(signed.bundle, keyless.load_trusted_root(mock.trusted_root),
                              [keyless.TrustedIdentity(subject=mock.identity, issuer=mock.issuer)])
