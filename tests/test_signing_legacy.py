"""Legacy cosign signatures (``sha256-<hex>.sig``): payload bytes, sign/verify against distribution 2.8.2.

Golden payloads are the expected strings of sigstore/sigstore ``pkg/signature/payload/payload_test.go``
(``TestMarshalCosign``), i.e. what cosign's Go code marshals.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import push_subject
from support.registry import RunningRegistry

import ociart
from ociart.errors import (
    InvalidContentError,
    NotFoundError,
    UsageError,
    VerificationError,
)
from ociart.oci import (
    Descriptor,
)
from ociart.oci.digest import sha256_bytes
from ociart.oci.mediatypes import OCI_CONFIG, OCI_MANIFEST
from ociart.signing import keys, legacy
from ociart.targets.layout import LayoutTarget
from ociart.targets.registry import RegistryTarget

D = "sha256:d34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33f"


# -- payload bytes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("ref", "annotations", "expected"), [
    ("example.com/test/image", None,
     ('{"critical":{"identity":{"docker-reference":"example.com/test/image"},"image":{"docker-manifest-digest":'
     '"sha256:d34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33f"},'
     '"type":"cosign container image signature"},"optional":null}')),
    ("example.com/atomic/test/image", {"creator": "atomic", "timestamp": 1458239713},
     ('{"critical":{"identity":{"docker-reference":"example.com/atomic/test/image"},"image":{"docker-manifest-digest":'
     '"sha256:d34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33f"},'
     '"type":"cosign container image signature"},"optional":{"creator":"atomic","timestamp":1458239713}}')),
    ("example.com/cosign/test/image",
     {"creator": "anyone", "some_struct": {"foo": "bar", "false": True, "nothing": None}, "CamelCase WithSpace": 8.314},
     ('{"critical":{"identity":{"docker-reference":"example.com/cosign/test/image"},"image":{"docker-manifest-digest":'
     '"sha256:d34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33f"},'
     '"type":"cosign container image signature"},'
     '"optional":{"CamelCase WithSpace":8.314,"creator":"anyone","some_struct":{"false":true,"foo":"bar","nothing":null}}}')),
], ids=["no-claims", "atomic", "arbitrary"])
def test_payload_matches_cosign_bytes(ref: str, annotations: dict | None, expected: str) -> None:
    data = legacy.simple_signing_payload(ref, D, annotations)
    assert data == expected.encode()
    parsed = legacy.parse_payload(data)
    assert (parsed.docker_reference, parsed.manifest_digest, parsed.optional) == (ref, D, annotations)
    assert parsed.to_bytes() == data


def test_payload_go_json_escaping_and_numbers() -> None:
    data = legacy.simple_signing_payload("r/x", D, {"a<b>&c": "\u2028é\n\x01", "f": [1e21, 1e-7, 1e20, 3.0, 0.5]})
    assert data.endswith(b'"optional":{"a\\u003cb\\u003e\\u0026c":"\\u2028\xc3\xa9\\n\\u0001",'
                         b'"f":[1e+21,1e-7,100000000000000000000,3,0.5]}}')
    assert json.loads(data)["optional"]["a<b>&c"] == "\u2028é\n\x01"
    with pytest.raises(UsageError):
        legacy.simple_signing_payload("r/x", D, {"x": float("nan")})


@pytest.mark.parametrize(("payload", "needle"), [
    (b"not json", "malformed signature payload"),
    (b'{"critical":{"identity":{"docker-reference":"r"},"image":{},"type":"cosign container image signature"}}',
     "docker-manifest-digest"),
    ((b'{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"sha256:00"},'
     b'"type":"atomic container signature"},"optional":{}}'), "unknown type"),
    ((b'{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"a",'
     b'"docker-manifest-digest":"b"},"type":"cosign container image signature"}}'), "duplicate key"),
])
def test_parse_payload_rejects(payload: bytes, needle: str) -> None:
    with pytest.raises(InvalidContentError, match=needle):
        legacy.parse_payload(payload)


def test_signature_tag_and_config() -> None:
    assert legacy.signature_tag(D) == "sha256-" + D[7:] + ".sig"
    with pytest.raises(UsageError):
        legacy.signature_tag("sha256:ABC")
    cfg = legacy.signature_config(["sha256:" + "1" * 64])
    assert cfg == (b'{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],'
                   b'"os":"","rootfs":{"type":"layers","diff_ids":["sha256:' + b"1" * 64 + b'"]},"config":{}}')
    assert len(cfg) == 233  # the config size in the reference's cosign manifest example


# -- against a registry -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keypairs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[ec.EllipticCurvePrivateKey,
                                                                       ec.EllipticCurvePublicKey]]:
    out = []
    for name in ("one", "two"):
        key_path, pub_path = keys.generate_key_pair(tmp_path_factory.mktemp("keys") / name, b"pw")
        out.append((keys.load_private_key(key_path, b"pw"), keys.load_public_key(pub_path)))
    return out


@pytest.fixture
def target(registry: RunningRegistry) -> Iterator[RegistryTarget]:
    t = RegistryTarget(registry.host, plain_http=True)
    yield t
    t.close()


def test_sign_and_verify_round_trip(registry: RunningRegistry, target: RegistryTarget, unique_repo: str,
                                    keypairs: list) -> None:
    (key, pub), (key2, pub2) = keypairs
    subject = push_subject(target, unique_repo, b"weights v1").digest
    docker_ref = f"{registry.host}/{unique_repo}"
    content = legacy.sign_legacy(target, unique_repo, subject, key, docker_ref)

    tag = "sha256-" + subject.removeprefix("sha256:") + ".sig"
    assert target.get_manifest(unique_repo, tag).data == content.data
    manifest = json.loads(content.data)
    assert manifest["mediaType"] == OCI_MANIFEST and manifest["config"]["mediaType"] == OCI_CONFIG
    [layer] = manifest["layers"]
    payload = legacy.simple_signing_payload(docker_ref, subject, None)
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert (layer["digest"], layer["size"]) == (sha256_bytes(payload), len(payload))
    keys.verify(pub, payload, base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"]))
    config_desc = Descriptor.model_validate(manifest["config"])
    with target.open_blob(unique_repo, config_desc) as chunks:
        assert b"".join(chunks) == legacy.signature_config([layer["digest"]])

    [ok] = legacy.verify_legacy(target, unique_repo, subject, pub)
    assert ok.data == payload and ok.payload.manifest_digest == subject
    assert ok.payload.docker_reference == docker_ref and ok.layer.digest == layer["digest"]

    # signing again with the same key adds nothing; a second key appends a layer and both verify
    assert legacy.sign_legacy(target, unique_repo, subject, key, docker_ref).digest == content.digest
    second = legacy.sign_legacy(target, unique_repo, subject, key2, docker_ref, annotations={"env": "prod"})
    layers = json.loads(second.data)["layers"]
    assert len(layers) == 2 and layers[0] == layer
    assert json.loads(target.get_manifest(unique_repo, tag).data)["layers"] == layers
    assert [v.payload.optional for v in legacy.verify_legacy(target, unique_repo, subject, pub2)] == [{"env": "prod"}]
    assert [v.payload.optional for v in legacy.verify_legacy(target, unique_repo, subject, pub)] == [None]
    with target.open_blob(unique_repo, Descriptor.model_validate(json.loads(second.data)["config"])) as chunks:
        assert json.loads(b"".join(chunks))["rootfs"]["diff_ids"] == [ly["digest"] for ly in layers]

    # the .sig tag is scheme metadata: listed with all=True only
    c = ociart.Client(plain_http=True)
    assert c.tags(docker_ref) == ["v1"]
    assert sorted(c.tags(docker_ref, all=True)) == sorted(["v1", tag])


def test_verify_rejects_wrong_key(target: RegistryTarget, unique_repo: str, keypairs: list) -> None:
    (key, _), (_, pub2) = keypairs
    subject = push_subject(target, unique_repo, b"wrong key").digest
    legacy.sign_legacy(target, unique_repo, subject, key, f"example.com/{unique_repo}")
    with pytest.raises(VerificationError) as err:
        legacy.verify_legacy(target, unique_repo, subject, pub2)
    msg = str(err.value)
    assert "no valid signature" in msg and "bad signature" in msg and "public key" in msg, msg
    assert "\n" not in msg


def test_verify_rejects_no_signatures(target: RegistryTarget, unique_repo: str, keypairs: list) -> None:
    subject = push_subject(target, unique_repo, b"unsigned").digest
    with pytest.raises(VerificationError, match="no signatures"):
        legacy.verify_legacy(target, unique_repo, subject, keypairs[0][1])


def test_verify_rejects_payload_for_another_digest(target: RegistryTarget, unique_repo: str, keypairs: list) -> None:
    key, pub = keypairs[0]
    a = push_subject(target, unique_repo, b"artifact a", tag="a").digest
    b = push_subject(target, unique_repo, b"artifact b", tag="b").digest
    sig_b = legacy.sign_legacy(target, unique_repo, b, key, f"example.com/{unique_repo}")
    target.put_manifest(unique_repo, sig_b, legacy.signature_tag(a))  # b's valid signature replayed for a
    with pytest.raises(VerificationError) as err:
        legacy.verify_legacy(target, unique_repo, a, pub)
    msg = str(err.value)
    assert "digest mismatch" in msg and f"payload signs {b}" in msg and a in msg, msg
    assert len(legacy.verify_legacy(target, unique_repo, b, pub)) == 1


def test_verify_rejects_tampered_payload_blob(registry_factory, unique_repo: str, keypairs: list) -> None:
    reg = registry_factory()  # own registry: its storage is edited
    key, pub = keypairs[0]
    t = RegistryTarget(reg.host, plain_http=True)
    try:
        subject = push_subject(t, unique_repo, b"tampered").digest
        content = legacy.sign_legacy(t, unique_repo, subject, key, f"{reg.host}/{unique_repo}")
        layer_digest = json.loads(content.data)["layers"][0]["digest"]
        path = reg.blob_data_path(layer_digest)
        original = path.read_bytes()
        forged = subject[:-1] + ("1" if subject.endswith("0") else "0")
        path.write_bytes(original.replace(subject.encode(), forged.encode()))  # same length, other digest
        assert len(path.read_bytes()) == len(original) and path.read_bytes() != original
        with pytest.raises(VerificationError) as err:
            legacy.verify_legacy(t, unique_repo, subject, pub)
    finally:
        t.close()
    msg = str(err.value)
    assert "digest mismatch" in msg and layer_digest in msg, msg


def test_sign_refuses_unknown_subject(target: RegistryTarget, unique_repo: str, keypairs: list) -> None:
    push_subject(target, unique_repo, b"exists").digest
    with pytest.raises(NotFoundError):
        legacy.sign_legacy(target, unique_repo, D, keypairs[0][0], "example.com/x")


def test_sign_and_verify_in_a_layout(tmp_path: Path, keypairs: list) -> None:
    (key, pub), (_, pub2) = keypairs
    t = LayoutTarget(tmp_path / "layout")
    subject = push_subject(t, "", b"layout artifact").digest
    legacy.sign_legacy(t, "", subject, key, "example.com/model")
    assert legacy.signature_tag(subject) in t.tags("")
    [ok] = legacy.verify_legacy(t, "", subject, pub)
    assert ok.payload.docker_reference == "example.com/model"
    with pytest.raises(VerificationError, match="bad signature"):
        legacy.verify_legacy(t, "", subject, pub2)
