"""Legacy cosign signatures (``sha256-<hex>.sig``) against an independent implementation: skopeo / containers/image.

containers/image reads and writes cosign's legacy format as "sigstore attachments" (enabled per registry in
``registries.d`` with ``use-sigstore-attachments: true``). It looks **only** at the ``sha256-<hex>.sig`` tag of the
digest the tag resolves to: a signature that exists only as a Sigstore bundle referrer (``ociart sign
--legacy-signature never``) is invisible to it, as is the old signature once the tag moves to an unsigned push.

**Debian's skopeo cannot verify or create these signatures.** Debian builds containers/image with
``disable-sigstore.patch`` (golang-github-containers-image 5.22.0-1 and later, so skopeo 1.9.3+ds1 in bookworm):
"Attempting to sign or verify images will fail with an error until Debian ships with a copy of
github.com/sigstore/sigstore". A ``sigstoreSigned`` policy fails with ``Debian-local change: sigstore disabled``
once per signature it found, and so does ``skopeo copy --sign-by-sigstore-private-key``. Reading, parsing and
copying the attachments is not disabled. So this module checks:

* ociart signs, skopeo reads: with a ``sigstoreSigned`` policy (``matchRepository``: cosign-style payloads name only
  the repository, see containers-policy.json(5)) skopeo finds ociart's ``.sig`` manifest and fetches exactly its
  payload layers. With Debian's build it then stops at the disabled verifier (one reason per signature); with a
  sigstore-enabled skopeo the right key must pass and another key must be rejected. Without a ``.sig`` (bundle only,
  or the tag moved to an unsigned push) every build says "A signature was required, but no signature exists".
* skopeo copies, ociart verifies: ``skopeo copy`` registry to registry carries ociart's legacy signatures; the
  destination ``.sig`` manifest is assembled by containers/image (its own config), the digest is unchanged and
  ``ociart verify`` accepts it (format ``legacy``; the bundle referrer is not copied by skopeo 1.9.3). ociart then
  appends a signature to that containers/image-written manifest and skopeo copies both.
* skopeo signs, ociart verifies (``--sign-by-sigstore-private-key`` with an ``ociart keygen`` key and with cosign's
  test-suite key, read from ``$OCIART_SPEC_DIR`` by ``helpers.cosign_test_key``): skipped with the reason when
  skopeo's sigstore support is disabled, i.e. always with Debian's skopeo.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from helpers import COSIGN_TEST_PASSWORD, cosign_test_key, run_cli, write_random
from support.registry import RunningRegistry

from ociart import Client
from ociart.oci import Descriptor
from ociart.signing import keys, legacy

SKOPEO = shutil.which("skopeo")
PASSWORD = "correct horse"
#: the third signer's key has a password of its own (each ``sign`` below passes the right one)
OTHER_PASSWORD = "battery staple"
#: Debian's containers/image disable-sigstore.patch: returned for every sigstore verification and signing.
SIGSTORE_DISABLED = "Debian-local change: sigstore disabled"
NO_SIGNATURE = "A signature was required, but no signature exists"


# -- fixtures and helpers ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def skopeo_bin() -> str:
    if SKOPEO is None:
        pytest.fail("skopeo is not on PATH: apt-get install skopeo (CI installs it)", pytrace=False)
    return SKOPEO



@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``a``/``b``/``c``: key pairs from ``ociart keygen`` (password :data:`PASSWORD`, ``c``: :data:`OTHER_PASSWORD`);
    ``*.pw``: the passwords as files."""
    d = tmp_path_factory.mktemp("keys")
    for name, password in (("a", PASSWORD), ("b", PASSWORD), ("c", OTHER_PASSWORD)):
        r = run_cli("keygen", "--output-key-prefix", str(d / name), env={"COSIGN_PASSWORD": password})
        assert r.returncode == 0, r.stderr
        (d / f"{name}.pw").write_text(password)
    return d


def cosign_keys(d: Path) -> Path:
    """cosign's test-suite key as ``d/cosign.key`` with its public key and password file beside it (external data:
    skips without ``$OCIART_SPEC_DIR``)."""
    cosign_key = cosign_test_key()
    shutil.copyfile(cosign_key, d / "cosign.key")
    (d / "cosign.pub").write_bytes(keys.public_key_pem(keys.load_private_key(cosign_key,
                                                                             COSIGN_TEST_PASSWORD.encode())))
    (d / "cosign.pw").write_text(COSIGN_TEST_PASSWORD)
    return d


def ok(*args: str, password: str = PASSWORD) -> str:
    r = run_cli(*args, env={"COSIGN_PASSWORD": password})
    assert r.returncode == 0, f"ociart {' '.join(args)} failed: {r.stderr}"
    return r.stdout


def verify_json(ref: str, *pubs: Path) -> dict:
    return json.loads(ok("verify", ref, *(a for p in pubs for a in ("--key", str(p))), "--json"))


def push(ref: str, kind: str, root: Path, seed: int) -> str:
    """An ociart push: ``generic`` (one file) or ``model`` (``--kind model``, a directory); returns the digest."""
    if kind == "generic":
        path = write_random(root / f"generic-{seed}" / "weights.bin", 50_000, seed=seed)
        return ok("push", ref, str(path)).strip()
    d = root / f"model-{seed}"
    write_random(d / "model.safetensors", 200_000, seed=seed)
    (d / "config.json").write_text(json.dumps({"hidden": 64, "seed": seed}))
    return ok("push", ref, str(d), "--kind", "model", "--no-provenance").strip()


def sig_layers(ref_repo: str, digest: str) -> list[Descriptor]:
    with Client() as c:
        r = c.ref(f"{ref_repo}@{digest}")
        return legacy.signature_layers(c.target(r), r.repository, digest)


def sig_manifest(ref_repo: str, digest: str) -> bytes:
    with Client() as c:
        return c.manifest(f"{ref_repo}:{legacy.signature_tag(digest)}")[1].data


def registries_d(tmp_path: Path, host: str) -> Path:
    """A registries.d enabling sigstore attachments (cosign's ``.sig`` tags) for ``host``, reading and writing."""
    d = tmp_path / "registries.d"
    d.mkdir(exist_ok=True)
    (d / "ociart-test.yaml").write_text(json.dumps({"docker": {host: {"use-sigstore-attachments": True}}}))
    return d


def accept_anything(tmp_path: Path) -> Path:
    path = tmp_path / "accept-anything.json"
    path.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    return path


def sigstore_policy(tmp_path: Path, host: str, pub: Path) -> Path:
    """Reject everything except images in ``host`` signed (cosign legacy format) by ``pub``, any tag of the repo."""
    path = tmp_path / f"policy-{uuid.uuid4().hex[:8]}.json"
    requirement = {"type": "sigstoreSigned", "keyPath": str(pub), "signedIdentity": {"type": "matchRepository"}}
    path.write_text(json.dumps({"default": [{"type": "reject"}], "transports": {"docker": {host: [requirement]}}}))
    return path


def skopeo(binary: str, policy: Path, regd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, "--policy", str(policy), "--registries.d", str(regd), *args],
                          capture_output=True, text=True, timeout=60)


def skopeo_verify(binary: str, tmp_path: Path, registry: RunningRegistry, ref: str,
                  pub: Path) -> subprocess.CompletedProcess[str]:
    """``skopeo copy`` from the registry to an OCI layout under a ``sigstoreSigned`` policy (``--debug``, to see which
    attachments it fetched). ``--remove-signatures``: an OCI layout cannot store them, the policy is still applied."""
    out = tmp_path / f"layout-{uuid.uuid4().hex[:8]}"
    return skopeo(binary, sigstore_policy(tmp_path, registry.host, pub), registries_d(tmp_path, registry.host),
                  "--debug", "copy", "--remove-signatures", "--src-tls-verify=false",
                  f"docker://{ref}", f"oci:{out}:v1")


def fetched_attachments(stderr: str) -> list[str]:
    """Digests of the sigstore attachment payloads skopeo fetched (from its ``--debug`` log)."""
    return re.findall(r"Fetching sigstore attachment \d+/\d+: (sha256:[0-9a-f]{64})", stderr)


# -- ociart signs, skopeo reads (and verifies, where its build can) ------------------------------------------------
@pytest.mark.parametrize("kind", ["generic", "model"])
def test_skopeo_finds_and_checks_ociart_legacy_signature(kind: str, skopeo_bin: str, registry: RunningRegistry,
                                                         unique_repo: str, keydir: Path, tmp_path: Path) -> None:
    repo = f"{registry.host}/{unique_repo}"
    digest = push(f"{repo}:v1", kind, tmp_path, seed=1)
    ok("sign", f"{repo}:v1", "--key", str(keydir / "a.key"))
    ok("sign", f"{repo}:v1", "--key", str(keydir / "c.key"), password=OTHER_PASSWORD)
    layers = sig_layers(repo, digest)
    assert len(layers) == 2

    good = skopeo_verify(skopeo_bin, tmp_path, registry, f"{repo}:v1", keydir / "a.pub")
    # skopeo located ociart's .sig manifest for this digest and fetched exactly its payload layers
    assert f"Looking for sigstore attachments in {repo}:{legacy.signature_tag(digest)}" in good.stderr, good.stderr
    assert "Found a sigstore attachment manifest with 2 layers" in good.stderr, good.stderr
    assert fetched_attachments(good.stderr) == [layer.digest for layer in layers]
    wrong = skopeo_verify(skopeo_bin, tmp_path, registry, f"{repo}:v1", keydir / "b.pub")
    assert wrong.returncode != 0 and "Source image rejected" in wrong.stderr, wrong.stderr
    if SIGSTORE_DISABLED in good.stderr:
        # Debian's build: both signatures parsed and handed to the (disabled) verifier, one reason each
        assert good.returncode != 0
        assert "None of the signatures were accepted" in good.stderr and good.stderr.count(SIGSTORE_DISABLED) >= 2
        assert NO_SIGNATURE not in good.stderr
    else:
        assert good.returncode == 0, good.stderr
        assert "signature" in wrong.stderr.lower(), wrong.stderr


def test_skopeo_sees_no_signature_without_legacy_sig(skopeo_bin: str, registry: RunningRegistry, unique_repo: str,
                                                     keydir: Path, tmp_path: Path) -> None:
    """skopeo reads only ``sha256-<hex>.sig``: a bundle-only signature (``--legacy-signature never``) and a tag moved
    to an unsigned push both leave it with nothing to verify (ociart still verifies the bundle)."""
    repo = f"{registry.host}/{unique_repo}"
    bundle_only = push(f"{repo}:bundle-only", "generic", tmp_path, seed=2)
    ok("sign", f"{repo}:bundle-only", "--key", str(keydir / "a.key"), "--legacy-signature", "never")
    assert [s["format"] for s in verify_json(f"{repo}:bundle-only", keydir / "a.pub")["signatures"]] == ["bundle"]
    r = skopeo_verify(skopeo_bin, tmp_path, registry, f"{repo}:bundle-only", keydir / "a.pub")
    assert r.returncode != 0 and NO_SIGNATURE in r.stderr, r.stderr
    assert f"{repo}:{legacy.signature_tag(bundle_only)}" in r.stderr  # it looked, and found no .sig

    # signed, then the tag moves to new unsigned bytes: skopeo follows the tag to the new digest's (absent) .sig
    signed = push(f"{repo}:prod", "model", tmp_path, seed=3)
    ok("sign", f"{repo}:prod", "--key", str(keydir / "a.key"))
    assert NO_SIGNATURE not in skopeo_verify(skopeo_bin, tmp_path, registry, f"{repo}:prod", keydir / "a.pub").stderr
    moved = push(f"{repo}:prod", "model", tmp_path, seed=4)
    assert moved != signed
    r = skopeo_verify(skopeo_bin, tmp_path, registry, f"{repo}:prod", keydir / "a.pub")
    assert r.returncode != 0 and NO_SIGNATURE in r.stderr, r.stderr
    assert f"{repo}:{legacy.signature_tag(moved)}" in r.stderr
    assert fetched_attachments(r.stderr) == []


# -- skopeo copies ociart's signatures (containers/image rewrites the .sig manifest), ociart verifies ---------------
@pytest.mark.parametrize("kind", ["generic", "model"])
def test_skopeo_copied_legacy_signature_verifies_with_ociart(kind: str, skopeo_bin: str, registry: RunningRegistry,
                                                             unique_repo: str, keydir: Path, tmp_path: Path) -> None:
    host = registry.host
    src, dst, dst2 = f"{host}/{unique_repo}", f"{host}/{unique_repo}-copy", f"{host}/{unique_repo}-copy2"
    digest = push(f"{src}:v1", kind, tmp_path, seed=5)
    ok("sign", f"{src}:v1", "--key", str(keydir / "a.key"))
    ok("sign", f"{src}:v1", "--key", str(keydir / "c.key"), password=OTHER_PASSWORD)
    policy, regd = accept_anything(tmp_path), registries_d(tmp_path, host)

    r = skopeo(skopeo_bin, policy, regd, "copy", "--preserve-digests", "--src-tls-verify=false",
               "--dest-tls-verify=false", f"docker://{src}:v1", f"docker://{dst}:v1")
    assert r.returncode == 0, r.stderr
    assert "Storing signatures" in r.stdout
    with Client() as c:
        assert c.resolve(f"{dst}:v1").digest == digest
    # containers/image wrote its own .sig manifest (another config) carrying the same signature layers
    assert sig_manifest(dst, digest) != sig_manifest(src, digest)
    assert [(d.digest, d.mediaType, d.annotations) for d in sig_layers(dst, digest)] == \
        [(d.digest, d.mediaType, d.annotations) for d in sig_layers(src, digest)]

    for pub in ("a.pub", "c.pub"):
        result = verify_json(f"{dst}:v1", keydir / pub)
        assert result["digest"] == digest
        assert [s["format"] for s in result["signatures"]] == ["legacy"]  # skopeo 1.9.3 copies no referrers
        with Client() as c:
            ref = c.ref(f"{dst}@{digest}")
            [v] = legacy.verify_legacy(c.target(ref), ref.repository, digest, keys.load_public_key(keydir / pub))
        assert v.payload.manifest_digest == digest
        assert v.payload.docker_reference == src  # written by ociart at the source, as cosign does
    r = run_cli("verify", f"{dst}:v1", "--key", str(keydir / "b.pub"))
    assert r.returncode == 5 and "no valid signature" in r.stderr, r.stderr

    # ociart appends to the containers/image-written .sig manifest; skopeo carries all three on
    ok("sign", f"{dst}:v1", "--key", str(keydir / "b.key"))
    assert len(sig_layers(dst, digest)) == 3
    r = skopeo(skopeo_bin, policy, regd, "copy", "--preserve-digests", "--src-tls-verify=false",
               "--dest-tls-verify=false", f"docker://{dst}:v1", f"docker://{dst2}:v1")
    assert r.returncode == 0, r.stderr
    result = verify_json(f"{dst2}:v1", keydir / "a.pub", keydir / "b.pub", keydir / "c.pub")
    assert result["digest"] == digest
    assert sorted(Path(s["signer"]).name for s in result["signatures"]) == ["a.pub", "b.pub", "c.pub"]
    assert {s["format"] for s in result["signatures"]} == {"legacy"}


# -- skopeo signs, ociart verifies (needs a skopeo built with sigstore support) -----------------------------------
@pytest.mark.parametrize("key", ["a", "cosign"])
def test_skopeo_signature_verifies_with_ociart(key: str, skopeo_bin: str, registry: RunningRegistry,
                                               unique_repo: str, keydir: Path, tmp_path: Path) -> None:
    host = registry.host
    kd = cosign_keys(tmp_path) if key == "cosign" else keydir
    src, dst = f"{host}/{unique_repo}", f"{host}/{unique_repo}-signed"
    digest = push(f"{src}:v1", "model", tmp_path, seed=6)
    r = skopeo(skopeo_bin, accept_anything(tmp_path), registries_d(tmp_path, host), "copy", "--preserve-digests",
               "--sign-by-sigstore-private-key", str(kd / f"{key}.key"),
               "--sign-passphrase-file", str(kd / f"{key}.pw"),
               "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{src}:v1", f"docker://{dst}:v1")
    if r.returncode != 0 and SIGSTORE_DISABLED in r.stderr:
        pytest.skip(f"this skopeo cannot create sigstore signatures ({SIGSTORE_DISABLED!r}: Debian builds "
                    "containers/image with disable-sigstore.patch)")
    assert r.returncode == 0, r.stderr
    result = verify_json(f"{dst}:v1", kd / f"{key}.pub")
    assert result["digest"] == digest
    assert [s["format"] for s in result["signatures"]] == ["legacy"]
    with Client() as c:
        assert c.resolve(f"{dst}:v1").digest == digest
        ref = c.ref(f"{dst}@{digest}")
        [v] = legacy.verify_legacy(c.target(ref), ref.repository, digest, keys.load_public_key(kd / f"{key}.pub"))
    assert v.payload.manifest_digest == digest
    assert v.payload.docker_reference.startswith(dst)
    r = run_cli("verify", f"{dst}:v1", "--key", str(keydir / ("b.pub" if key == "a" else "a.pub")))
    assert r.returncode == 5, r.stderr
