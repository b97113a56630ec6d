"""`ociart sign`, `attest`, `verify`, `push --sign`, `copy` and `pull --verify-key/--policy`, key mode, end to end:
against distribution 2.8.2 (referrers through the ``sha256-<hex>`` fallback index), the in-process registry with the
native referrers API, and the embedded store. Every rejection must exit non-zero with one line naming the reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import COSIGN_TEST_PASSWORD, cosign_test_key, run_cli, write_random
from support.ocifake import OciFake
from support.registry import RunningRegistry
from support.sigstore_mock import SigstoreMock

from ociart import Client
from ociart.errors import VerificationError
from ociart.signing import bundle, keys, legacy
from ociart.signing.signers import KeySigner
from ociart.signing.verify import Trust, TrustedKey

PASSWORD = "correct horse"
SLSA = "https://slsa.dev/provenance/v1"
EVAL = "https://ociart.dev/evaluation/v1"


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two ociart key pairs (a, b) made by `ociart keygen`, and the cosign test-suite key (public key derived)."""
    d = tmp_path_factory.mktemp("keys")
    for name in ("a", "b"):
        r = run_cli("keygen", "--output-key-prefix", str(d / name), env={"COSIGN_PASSWORD": PASSWORD})
        assert r.returncode == 0, r.stderr
    return d


def env() -> dict[str, str]:
    return {"COSIGN_PASSWORD": PASSWORD}


def ok(*args: str, **kw: object) -> str:
    r = run_cli(*args, env=env(), **kw)  # type: ignore[arg-type]
    assert r.returncode == 0, f"ociart {' '.join(args)} failed: {r.stderr}"
    return r.stdout


def fails(code: int, needle: str, *args: str) -> str:
    r = run_cli(*args, env=env())
    assert r.returncode == code, f"expected exit {code}, got {r.returncode}: {r.stdout}{r.stderr}"
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr  # one error line, last
    assert needle in errors[0], errors[0]
    assert "Traceback" not in r.stderr
    return errors[0]


def model_dir(root: Path, seed: int = 0) -> Path:
    d = root / f"model-{seed}"
    write_random(d / "model.safetensors", 300_000, seed=seed)
    (d / "config.json").write_text(json.dumps({"hidden": 64, "seed": seed}))
    return d


def verify_json(ref: str, *args: str) -> dict:
    return json.loads(ok("verify", ref, *args, "--json"))


def test_sign_verify_distribution_fallback(registry: RunningRegistry, unique_repo: str, keydir: Path,
                                           tmp_path: Path) -> None:
    ref = f"{registry.host}/{unique_repo}:v1"
    digest = ok("push", ref, str(model_dir(tmp_path)), "--kind", "model", "--no-provenance").strip()
    signed = json.loads(ok("sign", ref, "--key", str(keydir / "a.key"), "--json"))
    assert signed["digest"] == digest and signed["bundle"] and signed["legacy_tag"] == legacy.signature_tag(digest)

    result = verify_json(ref, "--key", str(keydir / "a.pub"))
    assert result["digest"] == digest
    assert sorted(s["format"] for s in result["signatures"]) == ["bundle", "legacy"]
    assert all(s["predicateType"] == bundle.COSIGN_SIGN_PREDICATE for s in result["signatures"])
    # stored the cosign way: the fallback index tag and the legacy signature tag exist
    tags = json.loads(ok("tags", f"{registry.host}/{unique_repo}", "--all", "--json"))["tags"]
    hex_ = digest.partition(":")[2]
    assert f"sha256-{hex_}" in tags and f"sha256-{hex_}.sig" in tags

    # human output: a table on stderr, the digest on stdout
    r = run_cli("verify", ref, "--key", str(keydir / "a.pub"))
    assert r.returncode == 0 and r.stdout.strip() == digest and "legacy" in r.stderr and "bundle" in r.stderr

    # the wrong key: rejected, naming the reason for both formats
    line = fails(5, "no valid signature", "verify", ref, "--key", str(keydir / "b.pub"))
    assert "does not verify with the trusted key" in line and "bundle" in line and ".sig" in line

    # re-signing with the same key adds nothing
    again = json.loads(ok("sign", ref, "--key", str(keydir / "a.key"), "--json"))
    assert again.get("bundle") is None and again["legacy"] == signed["legacy"]


def test_sign_verify_referrers_api_bundle_only(fake_registry: OciFake, unique_repo: str, keydir: Path,
                                              tmp_path: Path) -> None:
    ref = f"{fake_registry.host}/{unique_repo}:v1"
    digest = ok("push", ref, str(model_dir(tmp_path)), "--kind", "model", "--no-provenance").strip()
    ok("sign", ref, "--key", str(keydir / "a.key"), "--legacy-signature", "never")
    assert not any(t.endswith(".sig") for t in json.loads(ok("tags", f"{fake_registry.host}/{unique_repo}",
                                                                "--all", "--json"))["tags"])
    referrers = json.loads(ok("referrers", ref, "--json"))["referrers"]
    assert [r["artifactType"] for r in referrers] == [bundle.BUNDLE_MEDIA_TYPE]
    assert referrers[0]["annotations"]["dev.sigstore.bundle.predicateType"] == bundle.COSIGN_SIGN_PREDICATE
    result = verify_json(ref, "--key", str(keydir / "a.pub"))
    assert [s["format"] for s in result["signatures"]] == ["bundle"] and result["digest"] == digest
    fails(2, "choose always or never", "sign", ref, "--key", str(keydir / "a.key"), "--legacy-signature", "sometimes")


def test_cosign_test_key_signs_and_its_public_key_verifies(unique_repo: str, tmp_path: Path) -> None:
    """cosign's own test key (external data, ``helpers.cosign_test_key``) signs through the CLI."""
    cosign_key = cosign_test_key()
    pub = tmp_path / "cosign.pub"
    pub.write_bytes(keys.public_key_pem(keys.load_private_key(cosign_key, COSIGN_TEST_PASSWORD.encode())))
    ref = f"{unique_repo}:v1"  # the embedded store
    write_random(tmp_path / "w.bin", 1000)
    ok("push", ref, str(tmp_path / "w.bin"))
    r = run_cli("sign", ref, "--key", str(cosign_key), env={"COSIGN_PASSWORD": COSIGN_TEST_PASSWORD})
    assert r.returncode == 0, r.stderr
    assert len(verify_json(ref, "--key", str(pub))["signatures"]) == 2
    r = run_cli("sign", ref, "--key", str(cosign_key), env={"COSIGN_PASSWORD": "wrong"})
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "password" in r.stderr


def test_key_uris(unique_repo: str, keydir: Path, tmp_path: Path) -> None:
    ref = f"{unique_repo}:v1"
    write_random(tmp_path / "w.bin", 100)
    ok("push", ref, str(tmp_path / "w.bin"))
    ok("sign", ref, "--key", f"file://{keydir / 'a.key'}")
    verify_json(ref, "--key", f"file://{keydir / 'a.pub'}")
    fails(1, "awskms keys are not supported yet", "sign", ref, "--key", "awskms:///alias/release")
    fails(2, "unknown key URI scheme", "sign", ref, "--key", "ftp://x/key")
    fails(2, "no such file", "sign", ref, "--key", str(tmp_path / "missing.key"))


def test_tag_moved_to_unsigned_bytes(registry: RunningRegistry, unique_repo: str, keydir: Path,
                                     tmp_path: Path) -> None:
    """Changing the artifact (here a layer) makes a new manifest: the tag now names unsigned bytes."""
    ref = f"{registry.host}/{unique_repo}:prod"
    ok("push", ref, str(model_dir(tmp_path, 1)), "--kind", "model", "--no-provenance")
    ok("sign", ref, "--key", str(keydir / "a.key"))
    verify_json(ref, "--key", str(keydir / "a.pub"))
    changed = model_dir(tmp_path, 2)  # a different weights file
    new = ok("push", ref, str(changed), "--kind", "model", "--no-provenance").strip()
    line = fails(5, "no signatures found", "verify", ref, "--key", str(keydir / "a.pub"))
    assert new in line


def test_changed_manifest_and_layer_in_storage(registry: RunningRegistry, unique_repo: str, keydir: Path,
                                              tmp_path: Path) -> None:
    """Bytes changed behind the registry's back: the manifest no longer matches the signed digest; a changed layer
    is refused by the verifying pull (digest check) and nothing is written."""
    ref = f"{registry.host}/{unique_repo}:v1"
    src = model_dir(tmp_path, 3)
    digest = ok("push", ref, str(src), "--kind", "model", "--no-provenance").strip()
    ok("sign", ref, "--key", str(keydir / "a.key"))
    with Client() as c:
        _, content = c.manifest(ref)
    weights = next(ly for ly in json.loads(content.data)["layers"] if ly["size"] == 300_000)

    layer_path = registry.blob_data_path(weights["digest"])
    saved = layer_path.read_bytes()
    layer_path.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
    out = tmp_path / "out"
    line = fails(5, "digest mismatch", "pull", ref, "-o", str(out), "--verify-key", str(keydir / "a.pub"))
    assert weights["digest"] in line
    assert not out.exists() or not any(out.iterdir())
    layer_path.write_bytes(saved)

    manifest_path = registry.blob_data_path(digest)
    data = manifest_path.read_bytes()
    manifest_path.write_bytes(data.replace(b'"schemaVersion":2', b'"schemaVersion": 2', 1))
    try:
        line = fails(5, "digest", "verify", f"{registry.host}/{unique_repo}@{digest}", "--key", str(keydir / "a.pub"))
        assert digest in line
    finally:
        manifest_path.write_bytes(data)
    ok("pull", ref, "-o", str(out), "--verify-key", str(keydir / "a.pub"))
    assert (out / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()


def test_signatures_naming_another_digest(fake_registry: OciFake, unique_repo: str, keydir: Path,
                                         tmp_path: Path) -> None:
    """A valid signature of artifact A, moved so that it appears to sign B, is rejected in both formats."""
    host = fake_registry.host
    a = ok("push", f"{host}/{unique_repo}:a", str(model_dir(tmp_path, 4)), "--kind", "model", "--no-provenance").strip()
    b = ok("push", f"{host}/{unique_repo}:b", str(model_dir(tmp_path, 5)), "--kind", "model", "--no-provenance").strip()
    ok("sign", f"{host}/{unique_repo}:a", "--key", str(keydir / "a.key"))
    with Client() as c:
        r = c.ref(f"{host}/{unique_repo}:b")
        target = c.target(r)
        # legacy: A's signature manifest re-tagged as B's
        sig = target.get_manifest(unique_repo, legacy.signature_tag(a))
        target.put_manifest(unique_repo, sig, legacy.signature_tag(b))
        # bundle: A's validly signed bundle attached to B
        signer = KeySigner(keys.load_private_key(keydir / "a.key", PASSWORD.encode()))
        forged = signer.sign_statement(bundle.statement_bytes(a))
        bundle.attach_bundle(target, unique_repo, c.resolve(r), forged, bundle.COSIGN_SIGN_PREDICATE)
    line = fails(5, "no valid signature", "verify", f"{host}/{unique_repo}:b", "--key", str(keydir / "a.pub"))
    assert f"payload signs {a}, not {b}" in line and f"subject mismatch: statement names {a}" in line


def test_attest_and_required_attestations(fake_registry: OciFake, unique_repo: str, keydir: Path,
                                          tmp_path: Path) -> None:
    ref = f"{fake_registry.host}/{unique_repo}:v1"
    ok("push", ref, str(model_dir(tmp_path, 6)), "--kind", "model", "--no-provenance")
    ok("sign", ref, "--key", str(keydir / "a.key"))
    pred = tmp_path / "eval.json"
    pred.write_text(json.dumps({"dataset": {"uri": "squad"}, "metrics": {"f1": 0.91},
                                "timestamp": "2026-12-01T00:00:00Z"}))
    att = json.loads(ok("attest", ref, "--predicate", str(pred), "--type", EVAL, "--key", str(keydir / "a.key"),
                        "--json"))
    assert att["predicateType"] == EVAL
    result = verify_json(ref, "--key", str(keydir / "a.pub"), "--require-attestation", EVAL)
    assert [a["predicateType"] for a in result["attestations"]] == [EVAL]
    line = fails(5, f"no verified attestation of type {SLSA}", "verify", ref, "--key", str(keydir / "a.pub"),
                 "--require-attestation", SLSA)
    assert EVAL in line  # names what was found instead
    # an attestation signed by another key does not count
    ok("attest", ref, "--predicate", str(pred), "--type", SLSA, "--key", str(keydir / "b.key"))
    fails(5, f"no verified attestation of type {SLSA}", "verify", ref, "--key", str(keydir / "a.pub"),
          "--require-attestation", SLSA)
    fails(2, "--type is required", "attest", ref, "--predicate", str(pred), "--key", str(keydir / "a.key"))
    (tmp_path / "bad.json").write_text("[1, 2")
    fails(5, "not valid JSON", "attest", ref, "--predicate", str(tmp_path / "bad.json"), "--type", EVAL,
          "--key", str(keydir / "a.key"))


def test_push_sign_replaces_unsigned_provenance(registry: RunningRegistry, unique_repo: str, keydir: Path,
                                                tmp_path: Path) -> None:
    ref = f"{registry.host}/{unique_repo}:v1"
    src = model_dir(tmp_path, 7)
    args = ("push", ref, str(src), "--kind", "model", "--run-id", "run-42", "--param", "lr=0.1",
            "--sign", "--key", str(keydir / "a.key"))
    digest = ok(*args).strip()
    types = sorted(r["artifactType"] for r in json.loads(ok("referrers", ref, "--json"))["referrers"])
    assert types == [bundle.BUNDLE_MEDIA_TYPE] * 2  # signature + signed provenance; no unsigned statement
    result = verify_json(ref, "--key", str(keydir / "a.pub"), "--require-attestation", SLSA)
    assert result["digest"] == digest and [a["predicateType"] for a in result["attestations"]] == [SLSA]
    # lineage still reads the (signed) provenance
    prov = json.loads(ok("provenance", ref))
    assert prov["predicate"]["runDetails"]["metadata"]["invocationId"].endswith("run-42")
    # pushing the same thing again signs nothing new
    assert ok(*args).strip() == digest
    assert len(json.loads(ok("referrers", ref, "--json"))["referrers"]) == 2
    fails(2, "add --sign", "push", ref, str(src), "--kind", "model", "--key", str(keydir / "a.key"))


def test_copy_carries_signatures_to_another_registry(registry: RunningRegistry, fake_registry: OciFake,
                                                    unique_repo: str, keydir: Path, tmp_path: Path) -> None:
    src = f"{registry.host}/{unique_repo}:v1"
    digest = ok("push", src, str(model_dir(tmp_path, 8)), "--kind", "model", "--run-id", "r1",
                "--sign", "--key", str(keydir / "a.key")).strip()
    for dst in (f"{fake_registry.host}/prod/{unique_repo}:v1",  # another registry, another repository
                f"{registry.host}/{unique_repo}-prod:v1",        # same registry, another repository
                f"prod/{unique_repo}:v1",                          # the embedded store
                f"oci:{tmp_path / 'layout'}:v1"):                  # an OCI layout directory
        assert ok("copy", src, dst).strip() == digest
        result = verify_json(dst, "--key", str(keydir / "a.pub"), "--require-attestation", SLSA)
        assert sorted(s["format"] for s in result["signatures"]) == ["bundle", "legacy"], dst
        # the legacy payload still names the source repository (informational, as in cosign)
        with Client() as c:
            r = c.ref(dst)
            [v] = legacy.verify_legacy(c.target(r), r.repository, digest,
                                       keys.load_public_key(keydir / "a.pub"))
        assert v.payload.docker_reference == f"{registry.host}/{unique_repo}"
    # copying twice does not duplicate the legacy signature layers
    ok("copy", src, f"prod/{unique_repo}:v1")
    with Client() as c:
        r = c.ref(f"prod/{unique_repo}:v1")
        assert len(legacy.signature_layers(c.target(r), r.repository, digest)) == 1
    # --no-referrers leaves them behind
    bare = f"oci:{tmp_path / 'bare'}:v1"
    ok("copy", src, bare, "--no-referrers")
    fails(5, "no signatures found", "verify", bare, "--key", str(keydir / "a.pub"))


def test_policy_file(fake_registry: OciFake, unique_repo: str, keydir: Path, tmp_path: Path) -> None:
    host = fake_registry.host
    ref = f"{host}/models/{unique_repo}:v1"
    ok("push", ref, str(model_dir(tmp_path, 9)), "--kind", "model", "--run-id", "r9",
       "--sign", "--key", str(keydir / "a.key"))
    shutil.copy(keydir / "a.pub", tmp_path / "release.pub")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""\
apiVersion: ociart.dev/v1alpha1
kind: VerificationPolicy
rules:
  - name: staging needs nothing more than a signature by b
    repositories: ["{host}/staging/**"]
    keys: [{keydir / 'b.pub'}]
  - name: production models
    repositories: ["{host}/models/**"]
    keys: [release.pub]
    attestations: ["{SLSA}"]
""")
    assert verify_json(ref, "--policy", str(policy))["attestations"][0]["predicateType"] == SLSA
    out = tmp_path / "deploy"
    ok("pull", ref, "-o", str(out), "--policy", str(policy))
    assert (out / "model.safetensors").is_file()

    fails(5, "no rule of the verification policy matches", "verify", f"{host}/other/{unique_repo}:v1",
          "--policy", str(policy))
    ok("copy", ref, f"{host}/staging/{unique_repo}:v1")
    fails(5, "no valid signature", "verify", f"{host}/staging/{unique_repo}:v1", "--policy", str(policy))

    strict = tmp_path / "strict.yaml"
    strict.write_text(policy.read_text().replace(f'["{SLSA}"]', f'["{SLSA}", "{EVAL}"]'))
    fails(5, f"no verified attestation of type {EVAL}", "verify", ref, "--policy", str(strict))
    out2 = tmp_path / "deploy2"
    fails(5, f"no verified attestation of type {EVAL}", "pull", ref, "-o", str(out2), "--policy", str(strict))
    assert not out2.exists()

    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: ociart.dev/v1alpha1\nkind: VerificationPolicy\nrules:\n  - repositories: [x]\n"
                   "    keys: [k.pub]\n    attestation: [typo]\n")
    fails(5, "rules.0.attestation: Extra inputs are not permitted", "verify", ref, "--policy", str(bad))
    fails(3, "policy file", "verify", ref, "--policy", str(tmp_path / "none.yaml"))
    fails(2, "--policy excludes", "verify", ref, "--policy", str(policy), "--key", str(keydir / "a.pub"))


def test_verify_needs_trust(unique_repo: str, tmp_path: Path) -> None:
    write_random(tmp_path / "w.bin", 10)
    ok("push", f"{unique_repo}:v1", str(tmp_path / "w.bin"))
    fails(2, "nothing to verify with", "verify", f"{unique_repo}:v1")
    fails(2, "give one of --certificate-oidc-issuer", "verify", f"{unique_repo}:v1",
          "--certificate-identity", "me@example.com")
    fails(2, "public key x.pub: no such file", "verify", f"{unique_repo}:nope", "--key", "x.pub")


def test_library_api(unique_repo: str, tmp_path: Path) -> None:
    """The same through the importable API: Client.sign / attest / verify with Trust."""
    key = KeySigner(_new_key())
    write_random(tmp_path / "w.bin", 10)
    with Client() as c:
        d = c.push(f"{unique_repo}:v1", [tmp_path / "w.bin"])
        c.sign(f"{unique_repo}:v1", key, legacy_signature="never")
        c.attest(f"{unique_repo}:v1", key, EVAL, {"metrics": {"f1": 1.0}, "timestamp": "2026-12-01T00:00:00Z"})
        trust = Trust(keys=[TrustedKey("k", key.public_key)])
        v = c.verify(f"{unique_repo}:v1", trust, require_attestations=[EVAL])
        assert v.digest == d.digest and len(v.signatures) == 1 and v.attestations[0].predicateType == EVAL
        with pytest.raises(VerificationError, match="no valid signature"):
            c.verify(f"{unique_repo}:v1", Trust(keys=[TrustedKey("other", _new_key().public_key())]))


def _new_key():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())



# -- keyless, end to end against the local mock Fulcio/Rekor --------------------------------------------------
def keyless_args(mock: SigstoreMock) -> tuple[str, ...]:
    return ("--identity-token", mock.token(), "--trust-config", str(mock.trust_config))


def identity_args(mock: SigstoreMock, identity: str | None = None, issuer: str | None = None) -> tuple[str, ...]:
    return ("--certificate-identity", identity or mock.identity, "--certificate-oidc-issuer", issuer or mock.issuer,
            "--trust-config", str(mock.trusted_root))


def test_keyless_sign_verify_copy(sigstore_mock: SigstoreMock, registry: RunningRegistry, fake_registry: OciFake,
                                  unique_repo: str, tmp_path: Path) -> None:
    mock = sigstore_mock
    ref = f"{registry.host}/{unique_repo}:v1"
    digest = ok("push", ref, str(model_dir(tmp_path, 10)), "--kind", "model", "--run-id", "k1",
                "--sign", *keyless_args(mock)).strip()
    result = verify_json(ref, *identity_args(mock), "--require-attestation", SLSA)
    assert result["digest"] == digest
    assert sorted(s["format"] for s in result["signatures"]) == ["bundle", "legacy"]
    assert all(mock.identity in s["signer"] for s in result["signatures"] + result["attestations"])
    # the legacy layer carries cosign's keyless annotations
    with Client() as c:
        r = c.ref(ref)
        [layer] = legacy.signature_layers(c.target(r), unique_repo, digest)
    assert {"dev.sigstore.cosign/certificate", "dev.sigstore.cosign/chain",
            "dev.sigstore.cosign/bundle"} <= set(layer.annotations or {})
    # regular expressions, as cosign's --certificate-identity-regexp
    verify_json(ref, "--certificate-identity-regexp", "@example\\.com$", "--certificate-oidc-issuer-regexp",
                "^https://issuer\\.ociart\\.", "--trust-config", str(mock.trusted_root))

    line = fails(5, "no valid signature", "verify", ref, *identity_args(mock, identity="mallory@example.com"))
    assert "does not match" in line and "mallory@example.com" in line
    line = fails(5, "no valid signature", "verify", ref, *identity_args(mock, issuer="https://other.example"))
    assert "issuer" in line
    # keys do not vouch for keyless signatures
    fails(5, "no valid signature", "verify", ref, "--key", str(_pub(tmp_path)))

    # a policy with identities, and a copy to another registry that still verifies
    dst = f"{fake_registry.host}/prod/{unique_repo}:v1"
    assert ok("copy", ref, dst).strip() == digest
    policy = tmp_path / "keyless.yaml"
    policy.write_text(f"""\
apiVersion: ociart.dev/v1alpha1
kind: VerificationPolicy
rules:
  - repositories: ["{fake_registry.host}/prod/**"]
    identities:
      - subjectRegExp: "^alice@"
        issuer: {mock.issuer}
    trustConfig: {mock.trusted_root}
    attestations: ["{SLSA}"]
""")
    assert len(verify_json(dst, "--policy", str(policy))["signatures"]) == 2


def test_keyless_certificate_outside_validity(sigstore_mock_skewed: SigstoreMock, registry: RunningRegistry,
                                              unique_repo: str, tmp_path: Path) -> None:
    """The transparency log recorded the signature two hours after the certificate expired: rejected."""
    mock = sigstore_mock_skewed
    ref = f"{registry.host}/{unique_repo}:v1"
    write_random(tmp_path / "w.bin", 100)
    ok("push", ref, str(tmp_path / "w.bin"))
    ok("sign", ref, *keyless_args(mock))
    line = fails(5, "no valid signature", "verify", ref, *identity_args(mock))
    assert "not valid at" in line


def test_keyless_needs_a_token(unique_repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_random(tmp_path / "w.bin", 100)
    ok("push", f"{unique_repo}:v1", str(tmp_path / "w.bin"))
    for name in ("SIGSTORE_ID_TOKEN", "OCIART_IDENTITY_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL", "GITHUB_ACTIONS",
                 "GITLAB_CI", "BUILDKITE", "CIRCLECI", "GOOGLE_SERVICE_ACCOUNT_NAME"):
        monkeypatch.delenv(name, raising=False)
    fails(4, "no OIDC identity token", "sign", f"{unique_repo}:v1")
    fails(4, "identity token", "sign", f"{unique_repo}:v1", "--identity-token", "not-a-jwt")


def _pub(tmp_path: Path) -> Path:
    p = tmp_path / "unrelated.pub"
    if not p.exists():
        p.write_bytes(keys.public_key_pem(_new_key()))
    return p


def test_push_sign_fails_before_uploading_when_fulcio_is_down(sigstore_mock: SigstoreMock, registry: RunningRegistry,
                                                            unique_repo: str, tmp_path: Path) -> None:
    """`push --sign` gets its certificate first: with Fulcio unreachable nothing is pushed."""
    from support.registry import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    config = json.loads(Path(sigstore_mock.trust_config).read_text())
    for ca in config["signingConfig"]["caUrls"]:
        ca["url"] = dead
    broken = tmp_path / "trust-config.json"
    broken.write_text(json.dumps(config))
    ref = f"{registry.host}/{unique_repo}:v1"
    r = run_cli("push", ref, str(model_dir(tmp_path, 11)), "--kind", "model", "--sign",
                "--identity-token", sigstore_mock.token(), "--trust-config", str(broken))
    assert r.returncode == 6, r.stderr  # NetworkError
    assert r.stderr.count("error: ") == 1 and "Traceback" not in r.stderr
    fails(3, "not found", "resolve", ref)
