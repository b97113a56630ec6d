"""cosign v3 bundle signatures (Sigstore bundle v0.3 referrers, key mode, offline): sign/verify against distribution
2.8.2 (referrers fallback index), the in-memory registry with the referrers API, and an OCI layout.

The expected shapes are those of shared/reference/signing.md §2 (cosign ``specs/BUNDLE_SPEC.md``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import push_subject
from support.ocifake import OciFake
from support.registry import RunningRegistry

from ociart.errors import NotFoundError, UsageError, VerificationError
from ociart.oci import (
    EMPTY_JSON_DIGEST,
    OCI_EMPTY,
    Content,
    Descriptor,
)
from ociart.oci.mediatypes import OCI_MANIFEST
from ociart.signing import bundle, keys
from ociart.targets.layout import LayoutTarget
from ociart.targets.referrers import list_referrers
from ociart.targets.registry import RegistryTarget

D = "sha256:d34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33f"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


@pytest.fixture(scope="module")
def keypairs() -> list[tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey]]:
    out = []
    for _ in range(2):
        k = ec.generate_private_key(ec.SECP256R1())
        out.append((k, k.public_key()))
    return out


@pytest.fixture
def target(registry: RunningRegistry) -> Iterator[RegistryTarget]:
    t = RegistryTarget(registry.host, plain_http=True)
    yield t
    t.close()


@pytest.fixture
def api_target(fake_registry: OciFake) -> Iterator[RegistryTarget]:
    t = RegistryTarget(fake_registry.host, plain_http=True)
    yield t
    t.close()


# -- offline pieces -----------------------------------------------------------------------------------
def test_pae_matches_dsse_spec() -> None:
    assert bundle.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert bundle.pae("t", "é".encode()) == "DSSEv1 1 t 2 é".encode()  # byte lengths


def test_statement_shape() -> None:
    stmt = json.loads(bundle.statement_bytes(D))
    assert stmt == {"_type": "https://in-toto.io/Statement/v1",
                    "subject": [{"digest": {"sha256": D.partition(":")[2]}, "annotations": {}}],
                    "predicateType": "https://sigstore.dev/cosign/sign/v1",
                    "predicate": {}}
    named = json.loads(bundle.statement_bytes(D, "https://example.com/p/v1", {"a": 1}, name="r.example/x"))
    assert named["subject"][0]["name"] == "r.example/x"
    assert named["predicateType"] == "https://example.com/p/v1" and named["predicate"] == {"a": 1}
    with pytest.raises(UsageError, match="sha256"):
        bundle.statement_bytes("sha256:ABC")
    with pytest.raises(UsageError, match="JSON"):
        bundle.statement_bytes(D, predicate={"x": object()})


def test_bundle_json_shape_matches_reference(keypairs: list) -> None:
    key, pub = keypairs[0]
    body = bundle.statement_bytes(D)
    data = bundle.bundle_bytes(body, key)
    b = json.loads(data)
    assert list(b) == ["mediaType", "verificationMaterial", "dsseEnvelope"]
    assert b["mediaType"] == BUNDLE_TYPE
    vm = b["verificationMaterial"]
    assert list(vm) == ["publicKey", "tlogEntries"] and vm["tlogEntries"] == []
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert vm["publicKey"] == {"hint": base64.b64encode(hashlib.sha256(der).digest()).decode()}
    env = b["dsseEnvelope"]
    assert list(env) == ["payload", "payloadType", "signatures"]
    assert base64.b64decode(env["payload"]) == body
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert len(env["signatures"]) == 1 and list(env["signatures"][0]) == ["sig"]
    sig = base64.b64decode(env["signatures"][0]["sig"])
    assert sig[0] == 0x30  # ASN.1 DER SEQUENCE
    keys.verify(pub, b"DSSEv1 28 application/vnd.in-toto+json %d " % len(body) + body, sig)
    assert "certificate" not in vm and "x509CertificateChain" not in vm
    assert bundle.verify_bundle_bytes(data, D, pub).subject[0].digest == {"sha256": D.partition(":")[2]}


def test_verify_bundle_bytes_rejects(keypairs: list) -> None:
    (key, pub), (_, pub2) = keypairs
    good = json.loads(bundle.bundle_bytes(bundle.statement_bytes(D), key))

    def check(b: dict, needle: str, public_key: ec.EllipticCurvePublicKey = pub) -> None:
        with pytest.raises(VerificationError) as err:
            bundle.verify_bundle_bytes(json.dumps(b).encode(), D, public_key)
        assert needle in str(err.value), str(err.value)

    check(good, "does not verify with the given public key", pub2)
    check({**good, "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1"}, "mediaType")
    check({**good, "dsseEnvelope": {**good["dsseEnvelope"], "payloadType": "text/plain"}}, "payloadType")
    check({**good, "dsseEnvelope": {**good["dsseEnvelope"], "signatures": []}}, "no signatures")
    check({**good, "dsseEnvelope": {**good["dsseEnvelope"], "payload": "%%%"}}, "base64")
    check({k: v for k, v in good.items() if k != "dsseEnvelope"}, "dsseEnvelope")
    with pytest.raises(VerificationError, match="malformed bundle"):
        bundle.verify_bundle_bytes(b"{not json", D, pub)
    # a statement with another _type, correctly signed
    stmt = json.loads(bundle.statement_bytes(D))
    stmt["_type"] = "https://in-toto.io/Statement/v0.1"
    other = json.loads(bundle.bundle_bytes(json.dumps(stmt).encode(), key))
    check(other, "_type")


# -- round trips --------------------------------------------------------------------------------------
def _round_trip(t: RegistryTarget | LayoutTarget, repo: str, keypairs: list) -> Content:
    (key, pub), (_, pub2) = keypairs
    subject = push_subject(t, repo, b"weights v1")
    content = bundle.sign_bundle(t, repo, subject, key, created="2026-01-01T00:00:00Z")
    assert content.media_type == OCI_MANIFEST
    found = list_referrers(t, repo, subject.digest, BUNDLE_TYPE)
    assert [e.digest for e in found] == [content.digest]
    assert found[0].annotations == {"dev.sigstore.bundle.content": "dsse-envelope",
                                    "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1",
                                    "org.opencontainers.image.created": "2026-01-01T00:00:00Z"}
    stmts = bundle.verify_bundles(t, repo, subject.digest, pub)
    assert len(stmts) == 1
    assert stmts[0].predicateType == bundle.COSIGN_SIGN_PREDICATE and stmts[0].predicate == {}
    with pytest.raises(VerificationError, match="does not verify with the given public key"):
        bundle.verify_bundles(t, repo, subject.digest, pub2)
    return content


def test_round_trip_distribution_fallback_index(target: RegistryTarget, unique_repo: str, keypairs: list) -> None:
    content = _round_trip(target, unique_repo, keypairs)
    subject = json.loads(content.data)["subject"]["digest"]
    index = json.loads(target.get_manifest(unique_repo, "sha256-" + subject.partition(":")[2]).data)
    [entry] = index["manifests"]
    assert entry["digest"] == content.digest and entry["artifactType"] == BUNDLE_TYPE
    assert entry["annotations"]["dev.sigstore.bundle.predicateType"] == bundle.COSIGN_SIGN_PREDICATE


def test_round_trip_referrers_api(fake_registry: OciFake, api_target: RegistryTarget, unique_repo: str,
                                  keypairs: list) -> None:
    _round_trip(api_target, unique_repo, keypairs)
    assert fake_registry.requests("GET", "/referrers/")
    assert not [r for r in fake_registry.requests("PUT", "/manifests/sha256-")]  # no fallback tag written


def test_round_trip_layout(tmp_path: Path, keypairs: list) -> None:
    _round_trip(LayoutTarget(tmp_path / "layout"), "", keypairs)


def test_referrer_manifest_shape(target: RegistryTarget, unique_repo: str, keypairs: list) -> None:
    key, pub = keypairs[0]
    subject = push_subject(target, unique_repo, b"shape")
    content = bundle.sign_bundle(target, unique_repo, subject, key)
    m = json.loads(content.data)
    assert m["schemaVersion"] == 2 and m["mediaType"] == OCI_MANIFEST and m["artifactType"] == BUNDLE_TYPE
    assert m["config"] == {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2}
    [layer] = m["layers"]
    assert layer["mediaType"] == BUNDLE_TYPE and set(layer) == {"mediaType", "digest", "size"}
    assert m["subject"] == {"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": subject.size}
    assert set(m["annotations"]) == {"dev.sigstore.bundle.content", "dev.sigstore.bundle.predicateType",
                                     "org.opencontainers.image.created"}
    assert m["annotations"]["org.opencontainers.image.created"].endswith("Z")
    with target.open_blob(unique_repo, Descriptor.model_validate(layer)) as chunks:
        blob = b"".join(chunks)
    assert json.loads(blob)["mediaType"] == BUNDLE_TYPE
    bundle.verify_bundle_bytes(blob, subject.digest, pub)


def test_custom_predicate_type(api_target: RegistryTarget, unique_repo: str, keypairs: list) -> None:
    key, pub = keypairs[0]
    subject = push_subject(api_target, unique_repo, b"attested")
    p = "https://slsa.dev/provenance/v1"
    content = bundle.sign_bundle(api_target, unique_repo, subject, key, predicate_type=p,
                                 predicate={"buildDefinition": {"buildType": "x"}})
    assert json.loads(content.data)["annotations"]["dev.sigstore.bundle.predicateType"] == p
    [stmt] = bundle.verify_bundles(api_target, unique_repo, subject.digest, pub, predicate_type=p)
    assert stmt.predicate == {"buildDefinition": {"buildType": "x"}}


# -- rejections -----------------------------------------------------------------------------------------
def test_rejects_no_bundles(target: RegistryTarget, unique_repo: str, keypairs: list) -> None:
    subject = push_subject(target, unique_repo, b"unsigned")
    with pytest.raises(VerificationError, match="no signatures"):
        bundle.verify_bundles(target, unique_repo, subject.digest, keypairs[0][1])


def test_rejects_statement_naming_another_digest(target: RegistryTarget, unique_repo: str, keypairs: list) -> None:
    key, pub = keypairs[0]
    subject = push_subject(target, unique_repo, b"mine")
    other = push_subject(target, unique_repo, b"other", tag="v2")
    forged = bundle.bundle_bytes(bundle.statement_bytes(other.digest), key)  # validly signed, wrong subject
    bundle.attach_bundle(target, unique_repo, subject, forged, bundle.COSIGN_SIGN_PREDICATE)
    with pytest.raises(VerificationError) as err:
        bundle.verify_bundles(target, unique_repo, subject.digest, pub)
    msg = str(err.value)
    assert "subject mismatch" in msg and other.digest in msg and subject.digest in msg, msg


def test_rejects_wrong_predicate_type(api_target: RegistryTarget, unique_repo: str, keypairs: list) -> None:
    key, pub = keypairs[0]
    subject = push_subject(api_target, unique_repo, b"typed")
    bundle.sign_bundle(api_target, unique_repo, subject, key, predicate_type="https://example.com/other/v1")
    with pytest.raises(VerificationError) as err:
        bundle.verify_bundles(api_target, unique_repo, subject.digest, pub)
    msg = str(err.value)
    assert "predicateType is 'https://example.com/other/v1'" in msg and bundle.COSIGN_SIGN_PREDICATE in msg, msg


def test_rejects_tampered_layer_blob(fake_registry: OciFake, api_target: RegistryTarget, unique_repo: str,
                                     keypairs: list) -> None:
    key, pub = keypairs[0]
    subject = push_subject(api_target, unique_repo, b"tampered")
    content = bundle.sign_bundle(api_target, unique_repo, subject, key)
    layer_digest = json.loads(content.data)["layers"][0]["digest"]
    blobs = fake_registry.repos[unique_repo].blobs
    original = blobs[layer_digest]
    b = json.loads(original)
    stmt = base64.b64decode(b["dsseEnvelope"]["payload"]).replace(b"cosign/sign/v1", b"cosign/sign/v2")
    b["dsseEnvelope"]["payload"] = base64.b64encode(stmt).decode()
    blobs[layer_digest] = json.dumps(b, separators=(",", ":")).encode()
    assert len(blobs[layer_digest]) == len(original) and blobs[layer_digest] != original
    with pytest.raises(VerificationError) as err:
        bundle.verify_bundles(api_target, unique_repo, subject.digest, pub)
    msg = str(err.value)
    assert "digest mismatch" in msg and layer_digest in msg, msg
    # and the same bytes presented without the digest check fail on the signature
    with pytest.raises(VerificationError, match="does not verify"):
        bundle.verify_bundle_bytes(blobs[layer_digest], subject.digest, pub)


def test_bad_bundle_does_not_hide_a_good_one(api_target: RegistryTarget, unique_repo: str, keypairs: list) -> None:
    (key, pub), (key2, _) = keypairs
    subject = push_subject(api_target, unique_repo, b"two bundles")
    bundle.sign_bundle(api_target, unique_repo, subject, key2)
    bundle.sign_bundle(api_target, unique_repo, subject, key, created="2026-01-02T00:00:00Z")
    assert len(bundle.verify_bundles(api_target, unique_repo, subject.digest, pub)) == 1


def test_sign_refuses_unknown_or_mismatched_subject(target: RegistryTarget, unique_repo: str,
                                                    keypairs: list) -> None:
    key = keypairs[0][0]
    with pytest.raises(NotFoundError):
        bundle.sign_bundle(target, unique_repo, Descriptor(mediaType=OCI_MANIFEST, digest=D, size=10), key)
    subject = push_subject(target, unique_repo, b"sized")
    with pytest.raises(UsageError, match="bytes"):
        bundle.sign_bundle(target, unique_repo, subject.model_copy(update={"size": subject.size + 1}), key)
