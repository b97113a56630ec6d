"""Cosign-compatible key pairs: ``ENCRYPTED SIGSTORE PRIVATE KEY`` files, ``PUBLIC KEY`` PEMs, ECDSA P-256 signatures.

The private key file is what ``cosign generate-key-pair`` writes (cosign ``pkg/cosign/keys.go`` with
go-securesystemslib ``encrypted``): a PEM block whose body is the JSON envelope

    {"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"<b64 32 bytes>"},
     "cipher":{"name":"nacl/secretbox","nonce":"<b64 24 bytes>"},"ciphertext":"<b64 secretbox(PKCS#8 DER)>"}

where the secretbox key is ``scrypt(password, salt, N, r, p, 32)``. Signatures are ECDSA P-256 over SHA-256, ASN.1
DER, as cosign writes them.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import InvalidContentError, OverwriteError, UsageError, VerificationError

SIGSTORE_PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_PEM_TYPE = "ENCRYPTED COSIGN PRIVATE KEY"  # older cosign keys; still read
PUBLIC_PEM_TYPE = "PUBLIC KEY"
PASSWORD_ENV = "COSIGN_PASSWORD"

# What we write: go-securesystemslib's legacy parameters, which every cosign version decrypts.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 32768, 8, 1
# What we read (legacy, default, OWASP); anything else is refused so a tampered file cannot demand huge work.
ACCEPTED_SCRYPT_N = (32768, 65536, 131072)
SALT_SIZE = 32
NONCE_SIZE = nacl.secret.SecretBox.NONCE_SIZE  # 24
KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE  # 32

_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


# -- PEM --------------------------------------------------------------------------------------------
def _pem_decode(data: bytes, what: str) -> tuple[str, bytes]:
    m = _PEM_RE.search(data)
    if not m:
        raise InvalidContentError(f"{what}: no PEM block found")
    try:
        body = base64.b64decode(b"".join(m.group(2).split()), validate=True)
    except binascii.Error as exc:
        raise InvalidContentError(f"{what}: PEM body is not valid base64") from exc
    return m.group(1).decode(), body


def _pem_encode(pem_type: str, body: bytes) -> bytes:
    b64 = base64.b64encode(body)
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return b"".join([f"-----BEGIN {pem_type}-----\n".encode(), *(ln + b"\n" for ln in lines),
                     f"-----END {pem_type}-----\n".encode()])


# -- encrypted private key --------------------------------------------------------------------------
def _scrypt_key(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=KEY_SIZE, n=n, r=r, p=p).derive(password)


def _b64field(obj: Any, name: str, size: int | None, what: str) -> bytes:
    try:
        raw = base64.b64decode(obj[name], validate=True)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise InvalidContentError(f"{what}: missing or invalid {name!r}") from exc
    if size is not None and len(raw) != size:
        raise InvalidContentError(f"{what}: {name!r} must be {size} bytes, got {len(raw)}")
    return raw


def parse_envelope(data: bytes, what: str = "private key") -> dict[str, Any]:
    """The JSON envelope of an encrypted private key PEM (either accepted PEM type), unverified."""
    pem_type, body = _pem_decode(data, what)
    if pem_type not in (SIGSTORE_PEM_TYPE, COSIGN_PEM_TYPE):
        raise InvalidContentError(f"{what}: unsupported PEM type {pem_type!r} (expected {SIGSTORE_PEM_TYPE!r})")
    try:
        env = json.loads(body)
    except ValueError as exc:
        raise InvalidContentError(f"{what}: encrypted key body is not JSON") from exc
    if not isinstance(env, dict):
        raise InvalidContentError(f"{what}: encrypted key body is not a JSON object")
    return env


def decrypt_private_key(data: bytes, password: bytes, what: str = "private key") -> ec.EllipticCurvePrivateKey:
    """Decrypt a cosign ``ENCRYPTED SIGSTORE/COSIGN PRIVATE KEY`` PEM into an ECDSA P-256 key.

    Raises :class:`VerificationError` for a wrong password, :class:`InvalidContentError` for a malformed file and
    :class:`UsageError` for a key that is not ECDSA P-256.
    """
    env = parse_envelope(data, what)
    kdf, cipher = env.get("kdf"), env.get("cipher")
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise InvalidContentError(f"{what}: unsupported key derivation (expected scrypt)")
    if not isinstance(cipher, dict) or cipher.get("name") != "nacl/secretbox":
        raise InvalidContentError(f"{what}: unsupported cipher (expected nacl/secretbox)")
    params = kdf.get("params")
    n, r, p = (params.get(k) for k in ("N", "r", "p")) if isinstance(params, dict) else (None, None, None)
    if n not in ACCEPTED_SCRYPT_N or r != SCRYPT_R or p != SCRYPT_P:
        raise InvalidContentError(f"{what}: unexpected scrypt parameters N={n} r={r} p={p}")
    salt = _b64field(kdf, "salt", None, what)
    nonce = _b64field(cipher, "nonce", NONCE_SIZE, what)
    ciphertext = _b64field(env, "ciphertext", None, what)
    box = nacl.secret.SecretBox(_scrypt_key(password, salt, n, r, p))
    try:
        der = box.decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError as exc:
        raise VerificationError(f"{what}: cannot decrypt: wrong password or corrupted key") from exc
    try:
        key = serialization.load_der_private_key(der, password=None)
    except ValueError as exc:
        raise InvalidContentError(f"{what}: decrypted content is not a PKCS#8 private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise UsageError(f"{what}: unsupported key type; ociart signs with ECDSA P-256 keys only")
    return key


def encrypt_private_key(key: ec.EllipticCurvePrivateKey, password: bytes) -> bytes:
    """The ``ENCRYPTED SIGSTORE PRIVATE KEY`` PEM of a key, byte-compatible with cosign's envelope."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    salt, nonce = os.urandom(SALT_SIZE), os.urandom(NONCE_SIZE)
    box = nacl.secret.SecretBox(_scrypt_key(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P))
    ciphertext = box.encrypt(der, nonce).ciphertext

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    # Field order and compact separators as Go's json.Marshal of go-securesystemslib's structs.
    env = {"kdf": {"name": "scrypt", "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}, "salt": b64(salt)},
           "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce)},
           "ciphertext": b64(ciphertext)}
    return _pem_encode(SIGSTORE_PEM_TYPE, json.dumps(env, separators=(",", ":")).encode())


def load_private_key(path: Path, password: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise UsageError(f"private key {path}: no such file") from exc
    return decrypt_private_key(data, password, what=f"private key {path}")


# -- public key -------------------------------------------------------------------------------------
def public_key_pem(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """``PUBLIC KEY`` PEM (SubjectPublicKeyInfo), as ``cosign.pub``."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key_pem(data: bytes, what: str = "public key") -> ec.EllipticCurvePublicKey:
    pem_type, der = _pem_decode(data, what)
    if pem_type != PUBLIC_PEM_TYPE:
        raise InvalidContentError(f"{what}: unsupported PEM type {pem_type!r} (expected {PUBLIC_PEM_TYPE!r})")
    try:
        pub = serialization.load_der_public_key(der)
    except ValueError as exc:
        raise InvalidContentError(f"{what}: not a SubjectPublicKeyInfo public key") from exc
    if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(pub.curve, ec.SECP256R1):
        raise UsageError(f"{what}: unsupported key type; ociart verifies ECDSA P-256 keys only")
    return pub


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise UsageError(f"public key {path}: no such file") from exc
    return load_public_key_pem(data, what=f"public key {path}")


# -- key pair ---------------------------------------------------------------------------------------
def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise OverwriteError(f"{path} already exists; not overwriting it") from exc
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def generate_key_pair(prefix: Path | str = "cosign", password: bytes | str | None = None) -> tuple[Path, Path]:
    """Write a new ECDSA P-256 pair to ``<prefix>.key`` (encrypted, mode 0600) and ``<prefix>.pub``.

    ``password`` defaults to ``$COSIGN_PASSWORD`` (or a terminal prompt), as for ``ociart keygen``.

    Refuses (:class:`OverwriteError`) if either file exists. Returns (private key path, public key path).
    """
    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for p in (key_path, pub_path):
        if p.exists() or p.is_symlink():
            raise OverwriteError(f"{p} already exists; not overwriting it")
    if password is None:
        password = read_password(confirm=True)
    key = ec.generate_private_key(ec.SECP256R1())
    _write_new(key_path, encrypt_private_key(key, password.encode() if isinstance(password, str) else password),
               0o600)
    try:
        _write_new(pub_path, public_key_pem(key), 0o644)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    return key_path, pub_path


# -- signatures -------------------------------------------------------------------------------------
def sign_digest(key: ec.EllipticCurvePrivateKey, digest: bytes) -> bytes:
    """ECDSA P-256 signature (ASN.1 DER) of a precomputed SHA-256 digest."""
    if len(digest) != 32:
        raise UsageError(f"sign: a SHA-256 digest is 32 bytes, got {len(digest)}")
    return key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256 over SHA-256(data), DER: what cosign stores for a payload (or DSSE PAE)."""
    return sign_digest(key, hashlib.sha256(data).digest())


def verify_digest(pub: ec.EllipticCurvePublicKey, digest: bytes, signature: bytes) -> None:
    """Check a signature over a SHA-256 digest; DER or IEEE P1363 ``r||s`` (as sigstore accepts).

    Raises :class:`VerificationError` when it does not verify.
    """
    sigs = [signature]
    if len(signature) == 64:  # raw r||s
        sigs.append(encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")))
    for sig in sigs:
        try:
            pub.verify(sig, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
            return
        except (InvalidSignature, ValueError):
            continue
    raise VerificationError("signature does not verify with the given public key")


def verify(pub: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> None:
    verify_digest(pub, hashlib.sha256(data).digest(), signature)


# -- password ---------------------------------------------------------------------------------------
def read_password(confirm: bool = False) -> bytes:
    """The key password: ``$COSIGN_PASSWORD`` if set (even empty, as cosign), else a terminal prompt.

    Without either, raises :class:`UsageError`.
    """
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env.encode()
    if not sys.stdin.isatty():
        raise UsageError(f"no password for the private key: set {PASSWORD_ENV} (no terminal to prompt on)")
    pw = getpass.getpass("Enter password for private key: ")
    if confirm and getpass.getpass("Enter password for private key again: ") != pw:
        raise UsageError("passwords do not match")
    return pw.encode()
