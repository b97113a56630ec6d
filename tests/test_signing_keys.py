"""Cosign-compatible signing keys (ociart.signing.keys) and ``ociart keygen``.

Most tests use a key made here (``keys.encrypt_private_key``, what ``ociart keygen`` writes). The two that prove
interop with cosign's own key envelope (decrypting cosign's test key, comparing our envelope with it) read the key
from ``$OCIART_SPEC_DIR/cosign/sigstore-encrypted-key.pem`` (cosign ``pkg/cosign/keys_test.go``, password ``hello``;
not part of this repository) and skip without it (``helpers.cosign_test_key``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import COSIGN_TEST_PASSWORD, cosign_test_key

from ociart.errors import (
    InvalidContentError,
    OverwriteError,
    UsageError,
    VerificationError,
)
from ociart.signing import keys

PASSWORD = b"s3cret"


@pytest.fixture(scope="module")
def cosign_key_pem() -> bytes:
    """cosign's own test key (external data; skips without it)."""
    return cosign_test_key().read_bytes()


@pytest.fixture(scope="module")
def key_pem() -> bytes:
    """A fresh key in cosign's encrypted format, password :data:`PASSWORD`."""
    return keys.encrypt_private_key(ec.generate_private_key(ec.SECP256R1()), PASSWORD)


def _envelope(pem: bytes) -> dict:
    lines = pem.decode().strip().splitlines()
    return json.loads(base64.b64decode("".join(lines[1:-1])))


def _shape(obj: object) -> object:
    """Field names (in order) and non-random values; random base64 fields reduced to their decoded length."""
    if isinstance(obj, dict):
        return [(k, _shape(v) if k not in ("salt", "nonce", "ciphertext") else len(base64.b64decode(v)))
                for k, v in obj.items()]
    return obj


# -- library ----------------------------------------------------------------------------------------
def test_cosign_test_key_decrypts(cosign_key_pem: bytes) -> None:
    key = keys.decrypt_private_key(cosign_key_pem, COSIGN_TEST_PASSWORD.encode())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    pub = keys.load_public_key_pem(keys.public_key_pem(key))
    assert pub.public_numbers() == key.public_key().public_numbers()


def test_cosign_type_pem_accepted(key_pem: bytes) -> None:
    legacy = key_pem.replace(b"SIGSTORE", b"COSIGN")
    assert b"ENCRYPTED COSIGN PRIVATE KEY" in legacy
    assert keys.decrypt_private_key(legacy, PASSWORD).private_numbers() == \
        keys.decrypt_private_key(key_pem, PASSWORD).private_numbers()


@pytest.mark.parametrize("password", [b"wrong", b"", PASSWORD + b" "])
def test_wrong_password_is_one_clear_error(key_pem: bytes, password: bytes) -> None:
    with pytest.raises(VerificationError) as exc:
        keys.decrypt_private_key(key_pem, password)
    assert type(exc.value) is VerificationError
    assert exc.value.exit_code == 5
    assert "wrong password" in str(exc.value) and "\n" not in str(exc.value)


def test_malformed_or_foreign_pem_rejected(key_pem: bytes) -> None:
    with pytest.raises(InvalidContentError, match="PEM type"):
        keys.decrypt_private_key(key_pem.replace(b"ENCRYPTED SIGSTORE PRIVATE KEY", b"PRIVATE KEY"), PASSWORD)
    with pytest.raises(InvalidContentError, match="no PEM block"):
        keys.decrypt_private_key(b"not a key", PASSWORD)
    env = _envelope(key_pem)
    env["kdf"]["params"]["N"] = 1 << 30  # a tampered file must not make us do unbounded work
    tampered = keys._pem_encode(keys.SIGSTORE_PEM_TYPE, json.dumps(env).encode())
    with pytest.raises(InvalidContentError, match="scrypt parameters"):
        keys.decrypt_private_key(tampered, PASSWORD)


def test_written_key_decrypts() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = keys.encrypt_private_key(key, PASSWORD)
    assert pem.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert pem.endswith(b"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert all(len(ln) <= 64 for ln in pem.splitlines())
    assert keys.decrypt_private_key(pem, PASSWORD).private_numbers() == key.private_numbers()
    with pytest.raises(VerificationError):
        keys.decrypt_private_key(pem, b"wrong")
    env = _envelope(pem)
    assert env["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert _shape(env)[0][1][2] == ("salt", 32) and _shape(env)[1][1][1] == ("nonce", 24)


def test_written_key_matches_cosign_envelope(key_pem: bytes, cosign_key_pem: bytes) -> None:
    ours, theirs = _envelope(key_pem), _envelope(cosign_key_pem)
    assert ours["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1} == theirs["kdf"]["params"]
    assert _shape(ours) == _shape(theirs)  # same field names, order, names, params, salt/nonce sizes
    # Same compact JSON encoding as Go's json.Marshal: the text before the random salt is byte-identical.
    ours_raw, theirs_raw = (base64.b64decode(b"".join(p.strip().splitlines()[1:-1])) for p in (key_pem, cosign_key_pem))
    assert ours_raw.split(b'"salt"')[0] == theirs_raw.split(b'"salt"')[0]


def test_sign_verify_round_trip(key_pem: bytes) -> None:
    key = keys.decrypt_private_key(key_pem, PASSWORD)
    pub = keys.load_public_key_pem(keys.public_key_pem(key))
    payload = b'{"critical":{"image":{"docker-manifest-digest":"sha256:' + b"a" * 64 + b'"}}}'
    sig = keys.sign(key, payload)
    assert sig[0] == 0x30  # ASN.1 DER SEQUENCE
    keys.verify(pub, payload, sig)
    digest = hashlib.sha256(payload).digest()
    keys.verify_digest(pub, digest, sig)
    keys.verify(pub, payload, keys.sign_digest(key, digest))

    with pytest.raises(VerificationError, match="does not verify"):
        keys.verify(pub, payload.replace(b"aaaa", b"aaab", 1), sig)
    tampered = bytes([digest[0] ^ 1]) + digest[1:]
    with pytest.raises(VerificationError):
        keys.verify_digest(pub, tampered, sig)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(VerificationError):
        keys.verify(other, payload, sig)
    with pytest.raises(UsageError):
        keys.sign_digest(key, b"short")


def test_raw_r_s_signature_accepted() -> None:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key = ec.generate_private_key(ec.SECP256R1())
    r, s = decode_dss_signature(keys.sign(key, b"x"))
    keys.verify(key.public_key(), b"x", r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def test_generate_key_pair(tmp_path: Path) -> None:
    key_path, pub_path = keys.generate_key_pair(tmp_path / "k", b"pw")
    assert (key_path, pub_path) == (tmp_path / "k.key", tmp_path / "k.pub")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    key = keys.load_private_key(key_path, b"pw")
    assert keys.load_public_key(pub_path).public_numbers() == key.public_key().public_numbers()
    before = key_path.read_bytes()
    with pytest.raises(OverwriteError, match="already exists"):
        keys.generate_key_pair(tmp_path / "k", b"pw")
    assert key_path.read_bytes() == before
    (tmp_path / "only.pub").write_text("keep")
    with pytest.raises(OverwriteError):
        keys.generate_key_pair(tmp_path / "only", b"pw")
    assert not (tmp_path / "only.key").exists() and (tmp_path / "only.pub").read_text() == "keep"


def test_read_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    assert keys.read_password() == b""  # set but empty: the empty password, as cosign
    monkeypatch.setenv("COSIGN_PASSWORD", "pässword")
    assert keys.read_password(confirm=True) == "pässword".encode()
    monkeypatch.delenv("COSIGN_PASSWORD")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    with pytest.raises(UsageError, match="COSIGN_PASSWORD"):
        keys.read_password()


# -- CLI --------------------------------------------------------------------------------------------
def _keygen(cwd: Path, *args: str, password: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COSIGN_PASSWORD"}
    if password is not None:
        env["COSIGN_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "ociart", "keygen", *args], check=False, cwd=cwd, env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=120)


def test_cli_keygen(tmp_path: Path) -> None:
    proc = _keygen(tmp_path, password="pw1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    key_path, pub_path = tmp_path / "cosign.key", tmp_path / "cosign.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = keys.load_private_key(key_path, b"pw1")
    assert keys.load_public_key(pub_path).public_numbers() == key.public_key().public_numbers()

    before = (key_path.read_bytes(), pub_path.read_bytes())
    proc = _keygen(tmp_path, password="pw2")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "already exists" in lines[0]
    assert (key_path.read_bytes(), pub_path.read_bytes()) == before

    proc = _keygen(tmp_path, "--output-key-prefix", str(tmp_path / "sub-k"), "--json", password="")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {"private_key": str(tmp_path / "sub-k.key"), "public_key": str(tmp_path / "sub-k.pub")}
    keys.load_private_key(Path(out["private_key"]), b"")


def test_cli_keygen_without_password_or_tty(tmp_path: Path) -> None:
    proc = _keygen(tmp_path, password=None)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "COSIGN_PASSWORD" in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []
