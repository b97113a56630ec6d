"""Client-side layer encryption in ocicrypt's format (docs/encryption.md), against a real registry and skopeo 1.9.3.

* Round trips: encrypted model (raw weights), dataset (packed tar layers) and generic pushes pull back identical;
  the registry holds ciphertext only; configs and docs stay readable; inspect counts recipients without a key.
* Keys: a missing or wrong key fails with the verification exit code and writes nothing; a filter that selects
  only plaintext layers needs no key.
* Tampering: a flipped ciphertext byte is refused by the digest check; with the digest recomputed and the manifest
  rewritten to match (pulled without signature verification), by the HMAC, and nothing is written.
* Recipients: ``ociart encrypt`` re-wraps (blobs unchanged, shared) or ``--rotate``s (fresh blobs); ``decrypt``
  restores the plaintext layer digests.
* Interop with skopeo both ways, and skopeo decrypting ociart's artifact-form ciphertext relabelled as image layers.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from helpers import run_cli, tree_digest, write_random
from support.registry import RunningRegistry

from ociart import Client
from ociart.encryption import A_KEYS_JWE, A_PUBOPTS, CIPHER, recipient_count
from ociart.errors import DecryptionError, HmacMismatchError, NotFoundError
from ociart.oci import Content, Descriptor, Manifest
from ociart.oci.digest import sha256_bytes
from ociart.reference import parse_reference
from ociart.targets.base import bytes_opener

SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
needs_skopeo = pytest.mark.skipif(not os.access(SKOPEO, os.X_OK), reason="skopeo is not installed")


# -- helpers ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """RSA-2048 and EC P-256 key pairs in PEM (PKCS#8 private keys, SubjectPublicKeyInfo public keys, as openssl
    genpkey writes them: skopeo ignores SEC1 "EC PRIVATE KEY" files), and rsa2's private key password-protected."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    d = tmp_path_factory.mktemp("keys")
    out: dict[str, Path] = {}
    made = {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "rsa2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1())}
    for name, key in made.items():
        out[f"{name}.pem"], out[f"{name}.pub"] = d / f"{name}.pem", d / f"{name}.pub"
        out[f"{name}.pem"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
        out[f"{name}.pub"].write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    out["rsa2-locked.pem"] = d / "rsa2-locked.pem"
    out["rsa2-locked.pem"].write_bytes(made["rsa2"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"hunter2")))
    return out


def _model_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_random(root / "model.safetensors", 3 << 20, seed=1)
    (root / "config.json").write_text('{"hidden": 768}')
    (root / "README.md").write_text("# a model\n")
    return root


def _dataset_dir(root: Path) -> Path:
    for i in range(12):
        write_random(root / "shards" / f"part-{i:03d}.csv", 2000 + i, seed=10 + i)
    write_random(root / "big.parquet", (1 << 20) + 7, seed=99)
    (root / "README.md").write_text("# a dataset\n")
    return root


def _manifest(reg: RunningRegistry, ref: str) -> tuple[Manifest, Content]:
    with Client() as c:
        _, content = c.manifest(f"{reg.host}/{ref}")
    node = content.parse()
    assert isinstance(node, Manifest)
    return node, content


def _blob(reg: RunningRegistry, repo: str, desc: Descriptor) -> bytes:
    with Client() as c:
        t = c.target(parse_reference(f"{reg.host}/{repo}:x"))
        with t.open_blob(repo, desc) as chunks:
            return b"".join(chunks)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def _refused(proc: subprocess.CompletedProcess[str], code: str) -> dict[str, object]:
    """A --json failure: exit 5 (verification), one error object naming ``code``, no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 5, (proc.returncode, proc.stdout, proc.stderr)
    err = json.loads(proc.stdout)
    assert err["code"] == code, err
    return err


# -- round trips --------------------------------------------------------------------------------------------
def test_encrypted_model_round_trip(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                    keys: dict[str, Path]) -> None:
    src = _model_dir(tmp_path / "model")
    ref = f"{registry.host}/{unique_repo}:v1"
    _ok(run_cli("push", ref, str(src), "--kind", "model", "--no-git", "-q",
                "--encrypt-recipient", f"jwe:{keys['rsa.pub']}", "--encrypt-recipient", f"jwe:{keys['ec.pub']}"))
    node, _ = _manifest(registry, f"{unique_repo}:v1")
    by_title = {layer.title: layer for layer in node.layers}
    weights = by_title["model.safetensors"]
    assert weights.mediaType == "application/vnd.cncf.model.weight.v1.raw+encrypted"
    assert by_title["config.json"].mediaType == "application/vnd.cncf.model.weight.config.v1.raw"  # readable
    assert by_title["README.md"].mediaType == "application/vnd.cncf.model.doc.v1.raw"
    pub = json.loads(base64.b64decode(weights.annotations[A_PUBOPTS]))  # type: ignore[index]
    assert list(pub) == ["cipher", "hmac", "cipheroptions"] and pub["cipher"] == CIPHER
    jwe = json.loads(base64.b64decode(weights.annotations[A_KEYS_JWE]))  # type: ignore[index]
    assert [r["header"]["alg"] for r in jwe["recipients"]] == ["RSA-OAEP", "ECDH-ES+A256KW"]
    assert json.loads(base64.urlsafe_b64decode(jwe["protected"] + "==")) == {"enc": "A256GCM"}
    plain = (src / "model.safetensors").read_bytes()
    stored = _blob(registry, unique_repo, weights)
    assert len(stored) == len(plain) and stored != plain and stored[:4096] != plain[:4096]
    assert weights.digest == sha256_bytes(stored)
    # the config stays readable and names the plaintext digests (diffIds)
    info = json.loads(_ok(run_cli("inspect", ref, "--json")))
    files = {f["path"]: f for f in info["files"]}
    assert files["model.safetensors"]["encrypted"] is True and files["model.safetensors"]["recipients"] == 2
    assert files["config.json"]["encrypted"] is False
    assert sha256_bytes(plain) in info["config"]["modelfs"]["diffIds"]
    human = _ok(run_cli("inspect", ref))
    assert "encrypted (2 recipients)" in human
    # each recipient's key restores the tree exactly
    for key in (keys["rsa.pem"], keys["ec.pem"]):
        out = tmp_path / f"out-{key.stem}"
        _ok(run_cli("pull", ref, "-o", str(out), "-q", "--decryption-key", str(key)))
        assert tree_digest(out) == tree_digest(src)
    # the environment variable, comma-separated, works as the flag does
    out = tmp_path / "out-env"
    _ok(run_cli("pull", ref, "-o", str(out), "-q",
                env={"OCIART_DECRYPTION_KEY": f"{keys['rsa2.pem']},{keys['ec.pem']}"}))
    assert tree_digest(out) == tree_digest(src)
    # a filter selecting only plaintext layers needs no key
    out = tmp_path / "out-config"
    _ok(run_cli("pull", ref, "-o", str(out), "-q", "--filter", "config,docs"))
    assert sorted(os.listdir(out)) == ["README.md", "config.json"]


def test_encrypted_fetch_round_trip_and_missing_key_changes_nothing(registry: RunningRegistry, unique_repo: str,
                                                                     tmp_path: Path, keys: dict[str, Path]) -> None:
    """``ociart fetch`` decrypts as pull does (through the node cache too, which holds only ciphertext); a missing
    key fails before a fetched DIR changes: its files and marker stay those of the earlier fetch."""
    old_src = _model_dir(tmp_path / "old")
    new_src = _dataset_dir(tmp_path / "new")
    base = f"{registry.host}/{unique_repo}"
    _ok(run_cli("push", f"{base}:v0", str(old_src), "--kind", "model", "-q", "--no-git"))
    _ok(run_cli("push", f"{base}:v1", str(new_src), "--kind", "dataset", "-q", "--no-git",
                "--encrypt-recipient", f"jwe:{keys['rsa.pub']}"))
    out = tmp_path / "serve"
    _ok(run_cli("fetch", f"{base}:v0", "-o", str(out), "--no-verify", "-q"))
    before = tree_digest(out)
    err = _refused(run_cli("fetch", f"{base}:v1", "-o", str(out), "--no-verify", "--json"), "decryption")
    assert "is encrypted" in str(err["error"])
    assert tree_digest(out) == before
    _refused(run_cli("fetch", f"{base}:v1", "-o", str(out), "--no-verify", "--json", "--decryption-key",
                     str(keys["ec.pem"])), "decryption")
    assert tree_digest(out) == before
    cache = tmp_path / "cache"
    _ok(run_cli("fetch", f"{base}:v1", "-o", str(out), "--no-verify", "-q", "--cache", str(cache),
                env={"OCIART_DECRYPTION_KEY": str(keys["rsa.pem"])}))
    got = {k: v for k, v in tree_digest(out).items() if not k.startswith(".ociart/")}
    assert got == tree_digest(new_src)
    payload = {hashlib.sha256((new_src / p).read_bytes()).hexdigest() for p in tree_digest(new_src)
               if p != "README.md"}  # docs stay readable by default
    cached = {hashlib.sha256(p.read_bytes()).hexdigest() for p in cache.rglob("*") if p.is_file()}
    assert len(cached) >= 3 and not payload & cached  # the node cache holds the payload as ciphertext only


def test_encrypted_dataset_and_generic_round_trip(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                  keys: dict[str, Path]) -> None:
    src = _dataset_dir(tmp_path / "data")
    ref = f"{registry.host}/{unique_repo}:data"
    with Client() as c:
        c.push(ref, [src], kind="dataset", lineage=False, encrypt_recipients=[f"jwe:{keys['ec.pub']}"])
    node, _ = _manifest(registry, f"{unique_repo}:data")
    types = sorted(layer.mediaType for layer in node.layers)
    assert "application/vnd.cncf.model.dataset.v1.tar+encrypted" in types  # the packed shards
    assert "application/vnd.cncf.model.dataset.v1.raw+encrypted" in types
    assert "application/vnd.cncf.model.doc.v1.raw" in types
    out = tmp_path / "out"
    with Client() as c:
        c.pull(ref, out, decryption_keys=[f"{keys['rsa2-locked.pem']}:hunter2", str(keys["ec.pem"])])
    assert tree_digest(out) == tree_digest(src)

    # a generic push: plain files are payload, encrypted by default; --encrypt-filter all changes nothing more
    gen = tmp_path / "gen"
    write_random(gen / "blob.bin", 100_000, seed=5)
    gref = f"{registry.host}/{unique_repo}:generic"
    _ok(run_cli("push", gref, str(gen), "-q", "--no-git", "--encrypt-recipient", f"jwe:{keys['rsa.pub']}"))
    gnode, _ = _manifest(registry, f"{unique_repo}:generic")
    assert [layer.mediaType for layer in gnode.layers] == ["application/octet-stream+encrypted"]
    out = tmp_path / "gout"
    _ok(run_cli("pull", gref, "-o", str(out), "-q", "--decryption-key", str(keys["rsa.pem"])))
    assert tree_digest(out) == tree_digest(gen)


def test_encrypt_filter_all_and_usage_errors(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                             keys: dict[str, Path]) -> None:
    src = _model_dir(tmp_path / "model")
    ref = f"{registry.host}/{unique_repo}:all"
    _ok(run_cli("push", ref, str(src), "--kind", "model", "-q", "--no-git",
                "--encrypt-recipient", f"jwe:{keys['rsa.pub']}", "--encrypt-filter", "all"))
    node, _ = _manifest(registry, f"{unique_repo}:all")
    assert all(layer.mediaType.endswith("+encrypted") for layer in node.layers)
    assert not node.config.mediaType.endswith("+encrypted")  # the config is never encrypted (ocicrypt)
    # a filter that selects nothing, an unknown filter, a filter without recipient, a private key as recipient
    for args, needle in ((["--encrypt-filter", "code"], "selects none"),
                         (["--encrypt-filter", "secrets"], "unknown --encrypt-filter"),
                         (["--encrypt-recipient", f"jwe:{keys['rsa.pem']}"], "not an RSA or EC public key"),
                         (["--encrypt-recipient", f"pgp:{keys['rsa.pub']}"], "only the JWE scheme")):
        recipient = [] if "--encrypt-recipient" in args else ["--encrypt-recipient", f"jwe:{keys['rsa.pub']}"]
        proc = run_cli("push", f"{registry.host}/{unique_repo}:bad", str(src), "--kind", "model", "-q",
                       "--no-git", *recipient, *args)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = run_cli("push", f"{registry.host}/{unique_repo}:bad", str(src), "--kind", "model", "-q", "--no-git",
                   "--encrypt-filter", "weights")
    assert proc.returncode == 2 and "needs --encrypt-recipient" in proc.stderr


# -- keys -----------------------------------------------------------------------------------------------------
def test_missing_and_wrong_keys_refused_nothing_written(registry: RunningRegistry, unique_repo: str,
                                                        tmp_path: Path, keys: dict[str, Path]) -> None:
    src = _model_dir(tmp_path / "model")
    ref = f"{registry.host}/{unique_repo}:v1"
    _ok(run_cli("push", ref, str(src), "--kind", "model", "-q", "--no-git",
                "--encrypt-recipient", f"jwe:{keys['rsa.pub']}"))
    missing = _refused(run_cli("pull", ref, "-o", str(tmp_path / "a"), "--json"), "decryption")
    assert "is encrypted: give --decryption-key" in str(missing["error"])
    assert not (tmp_path / "a").exists()
    wrong = _refused(run_cli("pull", ref, "-o", str(tmp_path / "b"), "--json", "--decryption-key",
                             str(keys["ec.pem"])), "decryption")
    assert "none of the 1 decryption key(s) is one of its 1 recipient(s)" in str(wrong["error"])
    assert not (tmp_path / "b").exists()
    # an existing destination keeps exactly what it had
    existing = tmp_path / "c"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    _refused(run_cli("pull", ref, "-o", str(existing), "--json", "--decryption-key", str(keys["rsa2.pem"])),
             "decryption")
    assert sorted(os.listdir(existing)) == ["keep.txt"]
    # a password-protected key without its password, or with a wrong one: a usage error naming it
    proc = run_cli("pull", ref, "-o", str(tmp_path / "d"), "--decryption-key", str(keys["rsa2-locked.pem"]))
    assert proc.returncode == 2 and "needs a password" in proc.stderr and not (tmp_path / "d").exists()
    for password, needle in (("wrong", "wrong password"), ("filename=/nonexistent/pw", "cannot read it")):
        proc = run_cli("pull", ref, "-o", str(tmp_path / "d"), "--decryption-key",
                       f"{keys['rsa2-locked.pem']}:{password}")
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "d").exists()


# -- tampering ------------------------------------------------------------------------------------------------
def _registry_blob_path(reg: RunningRegistry, digest: str) -> Path:
    hexd = digest.removeprefix("sha256:")
    return reg.root / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data"


def test_flipped_ciphertext_byte_refused_by_digest(registry_factory, unique_repo: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                   keys: dict[str, Path]) -> None:
    reg = registry_factory()
    src = _model_dir(tmp_path / "model")
    ref = f"{reg.host}/{unique_repo}:v1"
    _ok(run_cli("push", ref, str(src), "--kind", "model", "-q", "--no-git",
                "--encrypt-recipient", f"jwe:{keys['rsa.pub']}"))
    node, _ = _manifest(reg, f"{unique_repo}:v1")
    weights = next(x for x in node.layers if x.mediaType.endswith("+encrypted"))
    path = _registry_blob_path(reg, weights.digest)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x01
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    _refused(run_cli("pull", ref, "-o", str(out), "--json", "--decryption-key", str(keys["rsa.pem"])),
             "digest-mismatch")
    assert not out.exists()


def test_flipped_byte_with_rewritten_manifest_refused_by_hmac(registry: RunningRegistry, unique_repo: str,
                                                              tmp_path: Path, keys: dict[str, Path]) -> None:
    """The attacker controls the registry: flips a ciphertext byte, stores the altered blob under its new digest and
    rewrites the manifest to match. Pulled without signature verification, only the HMAC can catch it."""
    src = _model_dir(tmp_path / "model")
    ref = f"{registry.host}/{unique_repo}:v1"
    with Client() as c:
        c.push(ref, [src], kind="model", lineage=False, encrypt_recipients=[f"jwe:{keys['ec.pub']}"])
        node, _ = _manifest(registry, f"{unique_repo}:v1")
        t = c.target(parse_reference(ref))
        layers = []
        for layer in node.layers:
            if layer.mediaType.endswith("+encrypted"):
                data = bytearray(_blob(registry, unique_repo, layer))
                data[len(data) // 2] ^= 0x80
                forged = Descriptor(mediaType=layer.mediaType, digest=sha256_bytes(bytes(data)), size=len(data),
                                    annotations=layer.annotations)
                t.push_blob_stream(unique_repo, forged, bytes_opener(bytes(data)))
                layer = forged
            layers.append(layer)
        t.put_manifest(unique_repo, Content.from_model(node.model_copy(update={"layers": layers})), "forged")
        out = tmp_path / "out"
        with pytest.raises(HmacMismatchError, match="HMAC mismatch"):
            c.pull(f"{ref.rsplit(':', 1)[0]}:forged", out, decryption_keys=[str(keys["ec.pem"])])
    assert not out.exists()
    # the CLI says the same with the verification exit code, and an existing destination is untouched
    out.mkdir()
    err = _refused(run_cli("pull", f"{registry.host}/{unique_repo}:forged", "-o", str(out), "--json",
                           "--decryption-key", str(keys["ec.pem"])), "hmac-mismatch")
    assert "HMAC mismatch" in str(err["error"])
    assert os.listdir(out) == []
    # ociart decrypt refuses it too, and writes no manifest
    proc = run_cli("decrypt", f"{registry.host}/{unique_repo}:forged", f"{registry.host}/{unique_repo}:plain",
                   "--json", "--decryption-key", str(keys["ec.pem"]))
    _refused(proc, "hmac-mismatch")
    with Client() as c, pytest.raises(Exception, match="not found|unknown"):
        c.resolve(f"{registry.host}/{unique_repo}:plain")


def test_hmac_is_checked_before_rename(tmp_path: Path, keys: dict[str, Path]) -> None:
    """Library level: decrypt_file leaves nothing behind when the HMAC fails (no plaintext file, no temp file)."""
    from ociart.encryption import LayerSecret, decrypt_file, encrypting_opener

    plain = os.urandom(300_000)
    secret = LayerSecret()
    with encrypting_opener(bytes_opener(plain), secret)() as chunks:
        cipher = bytearray(b"".join(chunks))
    desc = Descriptor(mediaType="application/octet-stream+encrypted", digest=sha256_bytes(bytes(cipher)),
                      size=len(cipher))
    (tmp_path / "c").write_bytes(bytes(cipher))
    dest = tmp_path / "dest"
    dest.mkdir()
    out = decrypt_file(tmp_path / "c", desc, secret, dest)
    assert out.digest == sha256_bytes(plain) and (dest / out.digest[7:]).read_bytes() == plain
    shutil.rmtree(dest)
    dest.mkdir()
    cipher[-1] ^= 1
    (tmp_path / "c").write_bytes(bytes(cipher))
    with pytest.raises(HmacMismatchError):
        decrypt_file(tmp_path / "c", desc, secret, dest)
    assert os.listdir(dest) == []


# -- recipients -----------------------------------------------------------------------------------------------
def test_rewrap_keeps_blobs_rotate_replaces_them(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                 keys: dict[str, Path]) -> None:
    src = _model_dir(tmp_path / "model")
    base = f"{registry.host}/{unique_repo}"
    _ok(run_cli("push", f"{base}:v1", str(src), "--kind", "model", "-q", "--no-git",
                "--encrypt-recipient", f"jwe:{keys['rsa.pub']}"))
    old, _ = _manifest(registry, f"{unique_repo}:v1")
    # re-wrap for a new list (ec + rsa2), opened with the current recipient's key
    proc = run_cli("encrypt", f"{base}:v1", f"{base}:v2", "--json", "--encrypt-recipient", f"jwe:{keys['ec.pub']}",
                   "--encrypt-recipient", f"jwe:{keys['rsa2.pub']}", "--decryption-key", str(keys["rsa.pem"]))
    _ok(proc)
    new, _ = _manifest(registry, f"{unique_repo}:v2")
    assert [x.digest for x in new.layers] == [x.digest for x in old.layers]  # every blob shared
    assert new.config.digest == old.config.digest
    enc = [x for x in new.layers if x.mediaType.endswith("+encrypted")]
    assert enc and all(recipient_count(x) == 2 for x in enc)
    assert all(x.annotations[A_KEYS_JWE] != y.annotations[A_KEYS_JWE]  # type: ignore[index]
               for x, y in zip(enc, [x for x in old.layers if x.mediaType.endswith("+encrypted")], strict=True))
    for key in (keys["ec.pem"], keys["rsa2.pem"]):
        out = tmp_path / f"v2-{key.stem}"
        _ok(run_cli("pull", f"{base}:v2", "-o", str(out), "-q", "--decryption-key", str(key)))
        assert tree_digest(out) == tree_digest(src)
    # the removed recipient cannot open the new manifest's wrapped keys
    _refused(run_cli("pull", f"{base}:v2", "-o", str(tmp_path / "x"), "--json", "--decryption-key",
                     str(keys["rsa.pem"])), "decryption")
    # without any current recipient's key, re-wrapping is refused before anything is written
    _refused(run_cli("encrypt", f"{base}:v1", f"{base}:v3", "--json", "--encrypt-recipient", f"jwe:{keys['ec.pub']}"),
             "decryption")
    # --rotate: fresh layer keys, so new blobs; the plaintext digests (config diffIds) stay
    _ok(run_cli("encrypt", f"{base}:v2", f"{base}:v4", "--rotate", "-q", "--encrypt-recipient", f"jwe:{keys['ec.pub']}",
                "--decryption-key", str(keys["ec.pem"])))
    rotated, _ = _manifest(registry, f"{unique_repo}:v4")
    old_enc = {x.title: x.digest for x in old.layers if x.mediaType.endswith("+encrypted")}
    new_enc = {x.title: x.digest for x in rotated.layers if x.mediaType.endswith("+encrypted")}
    assert old_enc.keys() == new_enc.keys() and not set(old_enc.values()) & set(new_enc.values())
    assert rotated.config.digest == old.config.digest
    out = tmp_path / "v4"
    _ok(run_cli("pull", f"{base}:v4", "-o", str(out), "-q", "--decryption-key", str(keys["ec.pem"])))
    assert tree_digest(out) == tree_digest(src)
    _refused(run_cli("pull", f"{base}:v4", "-o", str(tmp_path / "y"), "--json", "--decryption-key",
                     str(keys["rsa2.pem"])), "decryption")


def test_encrypt_existing_artifact_and_decrypt_back(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                    keys: dict[str, Path]) -> None:
    src = _model_dir(tmp_path / "model")
    base = f"{registry.host}/{unique_repo}"
    _ok(run_cli("push", f"{base}:plain", str(src), "--kind", "model", "-q", "--no-git"))
    plain, _ = _manifest(registry, f"{unique_repo}:plain")
    with Client() as c:
        c.encrypt(f"{base}:plain", f"{base}:enc", recipients=[f"jwe:{keys['rsa.pub']}"])
        enc, _ = _manifest(registry, f"{unique_repo}:enc")
        assert [x.mediaType.endswith("+encrypted") for x in enc.layers] == \
            [x.title == "model.safetensors" for x in plain.layers]
        # decrypt restores the exact plaintext layers (digests, media types, annotations)
        c.decrypt(f"{base}:enc", f"{base}:dec", decryption_keys=[str(keys["rsa.pem"])])
        dec, _ = _manifest(registry, f"{unique_repo}:dec")
        assert dec.layers == plain.layers and dec.config == plain.config
        # copy --decryption-key is the same rewrite
        d = c.copy(f"{base}:enc", f"oci:{tmp_path / 'layout'}:v1", decryption_keys=[str(keys["rsa.pem"])])
    assert d.digest == _manifest(registry, f"{unique_repo}:dec")[1].digest
    # copy --decryption-key of an artifact with nothing encrypted is a plain copy: same digest
    proc = run_cli("copy", f"{base}:plain", f"oci:{tmp_path / 'layout2'}:v1", "-q", "--decryption-key",
                   str(keys["rsa.pem"]))
    assert _ok(proc).strip() == _manifest(registry, f"{unique_repo}:plain")[1].digest
    with pytest.raises(DecryptionError), Client() as c:
        c.decrypt(f"{base}:enc", f"{base}:dec2", decryption_keys=[str(keys["ec.pem"])])


def test_signed_encrypted_artifact_verifies_and_copies(registry: RunningRegistry, unique_repo: str,
                                                        tmp_path: Path, keys: dict[str, Path]) -> None:
    """Signing, verification, lineage and copy work unchanged: the signature covers the encrypted manifest."""
    env = {"COSIGN_PASSWORD": "pw"}
    _ok(run_cli("keygen", "--output-key-prefix", str(tmp_path / "cosign"), env=env))
    src = _model_dir(tmp_path / "model")
    ref = f"{registry.host}/{unique_repo}:v1"
    digest = _ok(run_cli("push", ref, str(src), "--kind", "model", "-q", "--sign", "--key",
                         str(tmp_path / "cosign.key"), "--encrypt-recipient", f"jwe:{keys['ec.pub']}",
                         env=env)).strip()
    out = tmp_path / "out"
    _ok(run_cli("pull", ref, "-o", str(out), "-q", "--verify-key", str(tmp_path / "cosign.pub"),
                "--decryption-key", str(keys["ec.pem"])))
    assert tree_digest(out) == tree_digest(src)
    lineage = json.loads(_ok(run_cli("lineage", ref, "--json")))
    assert lineage["digest"] == digest
    # a plain copy moves the ciphertext and the signatures; they verify at the destination
    dst = f"{registry.host}/{unique_repo}-copy:v1"
    assert _ok(run_cli("copy", ref, dst, "-q")).strip() == digest
    _ok(run_cli("verify", dst, "--key", str(tmp_path / "cosign.pub")))
    # the diff of two encrypted versions compares ciphertext digests without a key
    diff = json.loads(_ok(run_cli("diff", ref, dst, "--json")))
    assert diff["changed"] == [] and diff["unchanged"] == 3


def test_promotion_and_gc_of_encrypted_artifacts_need_no_key(registry: RunningRegistry, unique_repo: str,
                                                              tmp_path: Path, keys: dict[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Promotion and gc work on the ciphertext manifests, with no decryption key anywhere: a promotion (in the
    repository and into another) moves the tag to the identical bytes, which still decrypt with the key; gc keeps
    the protected model and the encrypted dataset it was made from, deletes what the policy lets go."""
    monkeypatch.delenv("OCIART_DECRYPTION_KEY", raising=False)
    base, data, prod = f"{registry.host}/{unique_repo}", f"{registry.host}/{unique_repo}-data", \
        f"{registry.host}/{unique_repo}-prod"
    day = 86400

    def source(name: str, days: int, seed: int) -> Path:
        d = tmp_path / name
        write_random(d / "part-0.bin", 64 << 10, seed=seed)
        (d / "config.json").write_text(json.dumps({"name": name}))
        t = time.time() - days * day
        for f in (d, *d.iterdir()):
            os.utime(f, (t, t))
        return d

    digest: dict[str, str] = {}
    for name, ref, days, seed, args in (
            ("d1", f"{data}:d1", 50, 51, ("--kind", "dataset")),
            ("d2", f"{data}:d2", 40, 52, ("--kind", "dataset")),
            ("d3", f"{data}:d3", 30, 53, ("--kind", "dataset")),
            ("v1", f"{base}:v1", 20, 54, ("--kind", "model", "--input", f"train={data}:d1")),
            ("v2", f"{base}:v2", 15, 55, ("--kind", "model", "--input", f"train={data}:d2")),
            ("v3", f"{base}:v3", 10, 56, ("--kind", "model", "--input", f"train={data}:d3"))):
        digest[name] = _ok(run_cli("push", ref, str(source(name, days, seed)), "-q", "--no-git", *args,
                                   "--encrypt-recipient", f"jwe:{keys['rsa.pub']}")).strip()
        node, _ = _manifest(registry, ref.split("/", 1)[1])
        assert any(layer.mediaType.endswith("+encrypted") for layer in node.layers), node.layers

    # promotion: within the repository and into another; the same ciphertext manifest bytes under the new tag
    assert _ok(run_cli("promote", f"{base}:v1", "--to", "prod")).strip() == digest["v1"]
    assert _ok(run_cli("promote", f"{base}:prod", "--to", f"{prod}:prod")).strip() == digest["v1"]
    _, v1 = _manifest(registry, f"{unique_repo}:v1")
    for ref in (f"{unique_repo}:prod", f"{unique_repo}-prod:prod"):
        _, promoted = _manifest(registry, ref)
        assert promoted.digest == digest["v1"] and promoted.data == v1.data
    # still encrypted (no key: refused, nothing written), and it decrypts with the key
    _refused(run_cli("pull", f"{prod}:prod", "-o", str(tmp_path / "nokey"), "--json"), "decryption")
    assert not (tmp_path / "nokey" / "part-0.bin").exists()
    for ref in (f"{base}:prod", f"{prod}:prod"):
        out = tmp_path / "pulled" / ref.rsplit("/", 1)[1].replace(":", "-")
        _ok(run_cli("pull", ref, "-o", str(out), "-q", "--decryption-key", str(keys["rsa.pem"])))
        assert tree_digest(out) == tree_digest(tmp_path / "v1")

    # gc: prod protected, the newest model kept, the encrypted dataset prod was made from is in use
    policy = tmp_path / "retention.yaml"
    policy.write_text(f"apiVersion: ociart.dev/v1alpha1\nkind: RetentionPolicy\nrules:\n"
                      f"  - repositories: ['{base}']\n    protectTags: [prod]\n    keepLast: 1\n"
                      f"  - repositories: ['{data}']\n    keepLast: 1\n")
    planned = json.loads(_ok(run_cli("gc", "--policy", str(policy), base, data, "--json")))
    actions = {(i["repository"].rsplit("/", 1)[1], i["digest"]): (i["action"], i["reasons"])
               for i in planned["plan"]["items"]}
    repo, data_repo = unique_repo.rsplit("/", 1)[1], unique_repo.rsplit("/", 1)[1] + "-data"
    assert actions[(repo, digest["v1"])] == ("keep", ["protected: prod"])
    assert actions[(repo, digest["v3"])] == ("keep", ["newest 1"])
    assert actions[(repo, digest["v2"])][0] == "delete"
    assert actions[(data_repo, digest["d1"])] == ("keep", [f"input of {unique_repo}@{digest['v1']}"])
    assert actions[(data_repo, digest["d3"])][0] == "keep"
    assert actions[(data_repo, digest["d2"])][0] == "delete"
    applied = json.loads(_ok(run_cli("gc", "--policy", str(policy), base, data, "--apply", "--json")))
    assert sorted(a["digest"] for a in applied["applied"]) == sorted([digest["v2"], digest["d2"]])
    with Client() as c:
        assert set(c.tags(base)) == {"v1", "prod", "v3"} and set(c.tags(data)) == {"d1", "d3"}
        for ref in (f"{base}@{digest['v2']}", f"{data}@{digest['d2']}"):
            with pytest.raises(NotFoundError):
                c.resolve(ref)
    for ref, name in ((f"{base}:prod", "v1"), (f"{data}:d1", "d1"), (f"{base}:v3", "v3")):
        out = tmp_path / "after-gc" / name
        _ok(run_cli("pull", ref, "-o", str(out), "-q", "--decryption-key", str(keys["rsa.pem"])))
        assert tree_digest(out) == tree_digest(tmp_path / name)


# -- interop with skopeo ---------------------------------------------------------------------------------------
@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    return path


def skopeo(policy: Path, *args: str) -> str:
    proc = subprocess.run([SKOPEO, "--policy", str(policy), *args], check=False, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"skopeo {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def _tar_layer(files: dict[str, bytes], gz: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def push_model_image(reg: RunningRegistry, repo: str, tag: str, files: dict[str, list[tuple[str, bytes]]],
                     arch: str = "amd64") -> Manifest:
    """A minimal runnable-form image of a model (the image form before ``push --as-image``): an OCI image config
    and one tar layer per group of files (gzip and plain tar), written through the library."""
    with Client() as c:
        t = c.target(parse_reference(f"{reg.host}/{repo}:{tag}"))
        layers, diff_ids = [], []
        for i, (_, group) in enumerate(sorted(files.items())):
            raw = _tar_layer(dict(group), gz=False)
            blob = _tar_layer(dict(group), gz=True) if i % 2 == 0 else raw
            mt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if i % 2 == 0 else "")
            d = Descriptor(mediaType=mt, digest=sha256_bytes(blob), size=len(blob))
            t.push_blob_stream(repo, d, bytes_opener(blob))
            layers.append(d)
            diff_ids.append(sha256_bytes(raw))
        config = json.dumps({"architecture": arch, "os": "linux", "config": {"Labels": {"model": "tiny"}},
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        cfg = Content.of(config, "application/vnd.oci.image.config.v1+json")
        t.push_blob_stream(repo, cfg.descriptor(), bytes_opener(config))
        manifest = Manifest(config=cfg.descriptor(), layers=layers)
        t.put_manifest(repo, Content.from_model(manifest), tag)
    return manifest


def _image_files() -> dict[str, list[tuple[str, bytes]]]:
    weights = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(40_000))  # incompressible
    return {"a-weights": [("models/tiny/model.safetensors", weights)],
            "b-config": [("models/tiny/config.json", b'{"hidden": 8}'),
                         ("models/tiny/tokenizer.json", b'{"v": [1, 2]}')]}


def _layout_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def _layout_manifest(layout: Path) -> dict[str, object]:
    index = json.loads((layout / "index.json").read_text())
    return json.loads(_layout_blob(layout, index["manifests"][0]["digest"]))


@needs_skopeo
def test_skopeo_encrypted_image_pulls_with_ociart(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                  keys: dict[str, Path], policy: Path) -> None:
    files = _image_files()
    push_model_image(registry, unique_repo, "plain", files)
    plain_out = tmp_path / "plain"
    _ok(run_cli("pull", f"{registry.host}/{unique_repo}:plain", "-o", str(plain_out), "-q"))
    for pub, priv, tag in ((keys["rsa.pub"], keys["rsa.pem"], "enc-rsa"), (keys["ec.pub"], keys["ec.pem"], "enc-ec")):
        skopeo(policy, "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--encryption-key", f"jwe:{pub}",
               f"docker://{registry.host}/{unique_repo}:plain", f"docker://{registry.host}/{unique_repo}:{tag}")
        enc, _ = _manifest(registry, f"{unique_repo}:{tag}")
        assert all(x.mediaType.endswith("+encrypted") for x in enc.layers)
        out = tmp_path / tag
        _ok(run_cli("pull", f"{registry.host}/{unique_repo}:{tag}", "-o", str(out), "-q", "--decryption-key",
                    str(priv)))
        # the same files as the unencrypted image pulls to (an image's files are read under its mount path)
        assert tree_digest(out) == tree_digest(plain_out)
        assert sorted(p.read_bytes() for p in out.rglob("*") if p.is_file()) == \
            sorted(data for g in files.values() for _, data in g)
        info = json.loads(_ok(run_cli("inspect", f"{registry.host}/{unique_repo}:{tag}", "--json")))
        assert [f["recipients"] for f in info["files"]] == [1, 1]
        _refused(run_cli("pull", f"{registry.host}/{unique_repo}:{tag}", "-o", str(tmp_path / f"no-{tag}"),
                         "--json"), "decryption")


@needs_skopeo
def test_ociart_encrypted_image_decrypts_with_skopeo(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                     keys: dict[str, Path], policy: Path) -> None:
    plain = push_model_image(registry, unique_repo, "plain", _image_files())
    base = f"{registry.host}/{unique_repo}"
    _ok(run_cli("encrypt", f"{base}:plain", f"{base}:enc", "-q", "--encrypt-recipient", f"jwe:{keys['rsa.pub']}",
                "--encrypt-recipient", f"jwe:{keys['ec.pub']}"))
    enc, _ = _manifest(registry, f"{unique_repo}:enc")
    assert [x.mediaType for x in enc.layers] == [x.mediaType + "+encrypted" for x in plain.layers]
    for key in (keys["rsa.pem"], keys["ec.pem"]):
        layout = tmp_path / f"layout-{key.stem}"
        skopeo(policy, "copy", "--src-tls-verify=false", "--decryption-key", str(key), f"docker://{base}:enc",
               f"oci:{layout}:v1")
        m = _layout_manifest(layout)
        got = [(x["mediaType"], x["digest"]) for x in m["layers"]]  # type: ignore[index,union-attr]
        assert got == [(x.mediaType, x.digest) for x in plain.layers]
        for x in plain.layers:  # byte-identical to the unencrypted image's layers
            assert sha256_bytes(_layout_blob(layout, x.digest)) == x.digest


@needs_skopeo
def test_encrypt_image_index_shares_encrypted_layers(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                     keys: dict[str, Path], policy: Path) -> None:
    """An index of per-platform images (the image form's shape) is encrypted child by child, each shared layer
    once, so the images keep sharing blobs; skopeo --all decrypts every image; ociart decrypt restores the index."""
    from ociart.oci import Index
    from ociart.oci.models import Platform

    base = f"{registry.host}/{unique_repo}"
    images = {arch: push_model_image(registry, unique_repo, arch, _image_files(), arch) for arch in ("amd64", "arm64")}
    with Client() as c:
        t = c.target(parse_reference(f"{base}:x"))
        children = []
        for arch, m in images.items():
            content = Content.from_model(m)
            children.append(content.descriptor(platform=Platform(architecture=arch, os="linux")))
        t.put_manifest(unique_repo, Content.from_model(Index(manifests=children)), "index")
        c.encrypt(f"{base}:index", f"{base}:index-enc", recipients=[f"jwe:{keys['ec.pub']}"])
        _, raw = c.manifest(f"{base}:index-enc")
        enc_index = raw.parse()
        assert isinstance(enc_index, Index)
        assert [m.platform.architecture for m in enc_index.manifests] == ["amd64", "arm64"]  # type: ignore[union-attr]
        enc_children = [t.get_manifest(unique_repo, m.digest).parse() for m in enc_index.manifests]
        assert enc_index.manifests[0].digest != enc_index.manifests[1].digest
        assert enc_children[0].layers == enc_children[1].layers  # type: ignore[union-attr]
        assert all(x.mediaType.endswith("+encrypted") for x in enc_children[0].layers)  # type: ignore[union-attr]
        c.decrypt(f"{base}:index-enc", f"{base}:index-dec", decryption_keys=[str(keys["ec.pem"])])
        _, dec = c.manifest(f"{base}:index-dec")
    assert dec.digest == Content.from_model(Index(manifests=children)).digest  # byte for byte the original index
    layout = tmp_path / "layout"
    skopeo(policy, "copy", "--all", "--src-tls-verify=false", "--decryption-key", str(keys["ec.pem"]),
           f"docker://{base}:index-enc", f"oci:{layout}:v1")
    plain = images["amd64"]
    for x in plain.layers:
        assert sha256_bytes(_layout_blob(layout, x.digest)) == x.digest


@needs_skopeo
def test_push_as_image_encrypted_pulls_and_decrypts_with_skopeo(registry: RunningRegistry, unique_repo: str,
                                                                tmp_path: Path, keys: dict[str, Path],
                                                                policy: Path) -> None:
    """``push --as-image`` with a recipient: the weights' layer (an image layer) is encrypted once for every platform,
    configs and docs stay readable, diff_ids name the plaintext tars; ociart pull restores the files, and skopeo
    decrypts every platform's image to exactly the layers of the same push without encryption."""
    src = _model_dir(tmp_path / "model")
    base = f"{registry.host}/{unique_repo}"
    _ok(run_cli("push", f"{base}:plain", str(src), "--kind", "model", "--as-image", "--reproducible", "-q",
                "--no-git"))
    _ok(run_cli("push", f"{base}:enc", str(src), "--kind", "model", "--as-image", "--reproducible", "-q", "--no-git",
                "--encrypt-recipient", f"jwe:{keys['rsa.pub']}"))
    from ociart.oci import Index

    with Client() as c:
        t = c.target(parse_reference(f"{base}:x"))
        indexes = {tag: c.manifest(f"{base}:{tag}")[1].parse() for tag in ("plain", "enc")}
        assert all(isinstance(i, Index) for i in indexes.values())
        images = {tag: [t.get_manifest(unique_repo, m.digest).parse() for m in idx.manifests]  # type: ignore[union-attr]
                  for tag, idx in indexes.items()}
    plain, enc = images["plain"][0], images["enc"][0]
    assert all(m.layers == enc.layers for m in images["enc"])  # type: ignore[union-attr]
    types = [x.mediaType for x in enc.layers]  # type: ignore[union-attr]
    assert types.count("application/vnd.oci.image.layer.v1.tar+encrypted") == 1, types
    assert types.count("application/vnd.oci.image.layer.v1.tar") == len(types) - 1
    enc_cfg = json.loads(_blob(registry, unique_repo, enc.config))  # type: ignore[union-attr]
    plain_cfg = json.loads(_blob(registry, unique_repo, plain.config))  # type: ignore[union-attr]
    assert enc_cfg["rootfs"]["diff_ids"] == plain_cfg["rootfs"]["diff_ids"]
    out = tmp_path / "out"
    _ok(run_cli("pull", f"{base}:enc", "-o", str(out), "-q", "--decryption-key", str(keys["rsa.pem"])))
    assert tree_digest(out) == tree_digest(src)
    _refused(run_cli("pull", f"{base}:enc", "-o", str(tmp_path / "nokey"), "--json"), "decryption")
    assert not (tmp_path / "nokey").exists()
    layout = tmp_path / "layout"
    skopeo(policy, "copy", "--all", "--src-tls-verify=false", "--decryption-key", str(keys["rsa.pem"]),
           f"docker://{base}:enc", f"oci:{layout}:v1")
    index = json.loads((layout / "index.json").read_text())
    top = json.loads(_layout_blob(layout, index["manifests"][0]["digest"]))
    assert len(top["manifests"]) == len(images["enc"])
    for child in top["manifests"]:
        got = json.loads(_layout_blob(layout, child["digest"]))["layers"]
        for i, (p_layer, e_layer) in enumerate(zip(plain.layers, enc.layers, strict=True)):  # type: ignore[union-attr]
            if e_layer.mediaType.endswith("+encrypted"):  # decrypted by skopeo: byte for byte the plaintext tar
                assert (got[i]["mediaType"], got[i]["digest"]) == (p_layer.mediaType, p_layer.digest)
                assert sha256_bytes(_layout_blob(layout, p_layer.digest)) == p_layer.digest
            else:  # skopeo may gzip a plain layer while it rewrites the manifest; the tar inside is the same
                blob = _layout_blob(layout, got[i]["digest"])
                tar = gzip.decompress(blob) if got[i]["mediaType"].endswith("+gzip") else blob
                assert sha256_bytes(tar) == p_layer.digest


@needs_skopeo
def test_skopeo_decrypts_artifact_form_ciphertext(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                  keys: dict[str, Path], policy: Path) -> None:
    """skopeo refuses media types it does not know, so a copy of the manifest relabels the encrypted layers as
    image layers (``tar+encrypted``; the blobs do not change) and skopeo decrypts that: the decrypted blobs must
    equal our plaintext layers, which checks ociart's ciphertext and key wrapping with ocicrypt itself."""
    src = _dataset_dir(tmp_path / "data")
    base = f"{registry.host}/{unique_repo}"
    with Client() as c:
        c.push(f"{base}:v1", [src], kind="dataset", lineage=False,
               encrypt_recipients=[f"jwe:{keys['rsa.pub']}", f"jwe:{keys['ec.pub']}"])
        node, _ = _manifest(registry, f"{unique_repo}:v1")
        c.push(f"{base}:plain", [src], kind="dataset", lineage=False)  # the same content, unencrypted
        plain, _ = _manifest(registry, f"{unique_repo}:plain")
        t = c.target(parse_reference(f"{base}:v1"))
        relabelled = [x.model_copy(update={"mediaType": "application/vnd.oci.image.layer.v1.tar+encrypted"})
                      if x.mediaType.endswith("+encrypted") else x for x in node.layers]
        cfg = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        cfg_desc = Content.of(cfg, "application/vnd.oci.image.config.v1+json").descriptor()
        t.push_blob_stream(unique_repo, cfg_desc, bytes_opener(cfg))
        t.put_manifest(unique_repo, Content.from_model(Manifest(config=cfg_desc, layers=relabelled)), "relabelled")
    encrypted = [i for i, x in enumerate(node.layers) if x.mediaType.endswith("+encrypted")]
    assert len(encrypted) >= 2
    for key in (keys["rsa.pem"], keys["ec.pem"]):
        layout = tmp_path / f"layout-{key.stem}"
        skopeo(policy, "copy", "--src-tls-verify=false", "--decryption-key", str(key), f"docker://{base}:relabelled",
               f"oci:{layout}:v1")
        m = _layout_manifest(layout)
        for i in encrypted:
            out = m["layers"][i]  # type: ignore[index]
            assert out["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
            assert out["digest"] == plain.layers[i].digest  # ocicrypt's plaintext is ours, digest for digest
            assert sha256_bytes(_layout_blob(layout, out["digest"])) == plain.layers[i].digest
