"""Layer encryption compatible with ocicrypt (containerd imgcrypt, CRI-O, skopeo, podman): docs/encryption.md.

The format is ocicrypt's (the Go sources of github.com/containers/ocicrypt; image-spec PR 775 ``layer.md``):

* an encrypted layer's media type is the plain one plus ``+encrypted``; its digest and size are the ciphertext's;
* the cipher is ``AES_256_CTR_HMAC_SHA256``: AES-256 in CTR mode with a random 32-byte key and 16-byte nonce (the
  whole block a big-endian counter, as Go's ``cipher.NewCTR``), then HMAC-SHA256 keyed with the same key over the
  ciphertext (encrypt-then-MAC);
* ``org.opencontainers.image.enc.pubopts`` is base64 of the public options JSON
  ``{"cipher":…,"hmac":<b64>,"cipheroptions":{}}``;
* ``org.opencontainers.image.enc.keys.jwe`` is base64 of a JWE (JSON serialization, ``A256GCM``; ``RSA-OAEP`` for
  RSA recipients, ``ECDH-ES+A256KW`` for EC ones) whose plaintext is the private options JSON
  ``{"symkey":<b64>,"digest":<plaintext digest>,"cipheroptions":{"nonce":<b64>}}``; several JWEs are comma-joined.

Encrypting is :func:`encrypting_opener` / :func:`push_encrypted` (the one push-side transform: push, pack and
``ociart encrypt`` call it); decrypting is :func:`decrypt_file` (the one restore-side transform: pull, fetch,
``ociart decrypt`` call it), which verifies the HMAC before the plaintext file is renamed into place. JOSE is
joserfc's, AES-CTR and HMAC are ``cryptography``'s: no primitive is written here.
"""

from __future__ import annotations

import base64
import binascii
import hmac as _hmac
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import DecryptionError, DigestMismatchError, HmacMismatchError, NotFoundError, UsageError
from .oci import Descriptor
from .oci.digest import CHUNK, Digester
from .targets.base import Opener, ProgressFn, Target

ENCRYPTED_SUFFIX = "+encrypted"
#: Annotation prefix of every ocicrypt annotation (``FilterOutAnnotations`` in ocicrypt's encryption.go).
A_ENC_PREFIX = "org.opencontainers.image.enc."
#: The key wrappers' annotations, as ocicrypt's code names them (PR 775's layer.md says ``keys.openpgp``; the code,
#: which every implementation follows, writes ``keys.pgp``).
A_KEYS_JWE = "org.opencontainers.image.enc.keys.jwe"
A_KEYS_PGP = "org.opencontainers.image.enc.keys.pgp"
A_KEYS_PKCS7 = "org.opencontainers.image.enc.keys.pkcs7"
A_KEYS_PREFIX = "org.opencontainers.image.enc.keys."
A_PUBOPTS = "org.opencontainers.image.enc.pubopts"
CIPHER = "AES_256_CTR_HMAC_SHA256"
KEY_BYTES = 32
NONCE_BYTES = 16

#: Key-encryption algorithms accepted on unwrap (ocicrypt's UnwrapKey list) and content encryptions (RFC 7518 5.1).
_KEY_ALGS = ["RSA-OAEP", "RSA-OAEP-256", "ECDH-ES+A128KW", "ECDH-ES+A192KW", "ECDH-ES+A256KW"]
_ENC_ALGS = ["A128CBC-HS256", "A192CBC-HS384", "A256CBC-HS512", "A128GCM", "A192GCM", "A256GCM"]

#: --encrypt-filter categories (those of ``pull --filter``) and ``all``.
ENCRYPT_FILTERS = ("weights", "config", "docs", "code", "dataset", "all")
#: What is encrypted when no --encrypt-filter is given: weights and datasets (and layers of no ML category, such as
#: plain files or image layers); configs, docs and code stay readable.
DEFAULT_FILTER = ("weights", "dataset")


# -- wire formats (field order and base64 as Go's encoding/json writes them) ---------------------------------
class _Opts(BaseModel):
    model_config = ConfigDict(extra="allow")


class PublicOptions(_Opts):
    """``PublicLayerBlockCipherOptions``: ``[]byte`` fields are standard base64 in Go's JSON."""

    cipher: str = ""
    hmac: str | None = None
    cipheroptions: dict[str, str] | None = None


class PrivateOptions(_Opts):
    """``PrivateLayerBlockCipherOptions``, the plaintext of the JWE."""

    symkey: str | None = None
    digest: str = ""
    cipheroptions: dict[str, str] | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: str | None, what: str) -> bytes:
    try:
        return base64.b64decode(value or "", validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError(f"{what}: not valid base64") from None


def is_encrypted(desc: Descriptor) -> bool:
    return desc.mediaType.endswith(ENCRYPTED_SUFFIX)


def plain_media_type(media_type: str) -> str:
    return media_type.removesuffix(ENCRYPTED_SUFFIX)


def recipient_count(desc: Descriptor) -> int:
    """How many recipients can open an encrypted layer, read without any key: the JWE recipients, plus one per
    wrapped key of the other schemes (pgp, pkcs7, ...)."""
    count = 0
    for name, value in (desc.annotations or {}).items():
        if not name.startswith(A_KEYS_PREFIX) or not value:
            continue
        for part in value.split(","):
            if name != A_KEYS_JWE:
                count += 1
                continue
            try:
                jwe = json.loads(base64.b64decode(part))
            except (binascii.Error, ValueError):
                continue
            if isinstance(jwe, dict):
                recipients = jwe.get("recipients")
                count += len(recipients) if isinstance(recipients, list) else 1
    return count


# -- keys -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipient:
    """A public key the layer keys are wrapped for (``jwe:PUB.pem``)."""

    spec: str
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class DecryptionKey:
    """A private key that may unwrap layer keys (``KEY.pem[:PASSWORD]``)."""

    spec: str
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def parse_recipient(spec: str) -> Recipient:
    """``jwe:PATH`` with a PEM or DER public key (RSA or EC), or an X.509 certificate carrying one."""
    scheme, sep, path = spec.partition(":")
    if not sep or scheme != "jwe":
        raise UsageError(f"--encrypt-recipient {spec!r}: expected jwe:PUBLIC_KEY.pem (only the JWE scheme is "
                         f"supported)")
    data = _read_key_file(path, "--encrypt-recipient")
    key: Any = None
    for load in (serialization.load_pem_public_key, serialization.load_der_public_key):
        try:
            key = load(data)
            break
        except (ValueError, TypeError):
            continue
    if key is None:
        from cryptography import x509

        for load_cert in (x509.load_pem_x509_certificate, x509.load_der_x509_certificate):
            try:
                key = load_cert(data).public_key()
                break
            except ValueError:
                continue
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise UsageError(f"--encrypt-recipient {spec!r}: not an RSA or EC public key")
    return Recipient(spec, key)


def parse_decryption_key(spec: str) -> DecryptionKey:
    """``PATH[:PASSWORD]``: a PEM or DER private key (RSA or EC), optionally encrypted. The password is taken as
    ocicrypt's helpers take it: ``pass=SECRET``, ``filename=FILE``, ``fd=N``, or the literal rest."""
    path, password = spec, None
    if not os.path.exists(spec) and ":" in spec:
        path, _, pw = spec.partition(":")
        password = _password(pw)
    data = _read_key_file(path, "--decryption-key")
    key: Any = None
    error = "not an RSA or EC private key"
    for load in (serialization.load_pem_private_key, serialization.load_der_private_key):
        try:
            key = load(data, password)
            break
        except TypeError as exc:  # encrypted without a password, or a password for a plain key
            error = "needs a password (KEY.pem:PASSWORD)" if password is None else str(exc)
        except ValueError as exc:
            if "password" in str(exc).lower() or "decrypt" in str(exc).lower():
                error = "wrong password"
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise UsageError(f"--decryption-key {path}: {error}")
    return DecryptionKey(path, key)


def _password(value: str) -> bytes:
    try:
        if value.startswith("pass="):
            return value[5:].encode()
        if value.startswith("filename="):
            return Path(value[9:]).read_bytes().rstrip(b"\r\n")
        if value.startswith("fd="):
            with os.fdopen(int(value[3:]), "rb", closefd=False) as f:
                return f.read().rstrip(b"\r\n")
    except (OSError, ValueError) as exc:
        raise UsageError(f"--decryption-key password {value.split('=', 1)[0]}=…: cannot read it: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    return value.encode()


def _read_key_file(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except FileNotFoundError:
        raise NotFoundError(f"{flag} {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot read: {exc.strerror or exc}") from None


def decryption_keys(specs: Sequence[str | DecryptionKey] = ()) -> list[DecryptionKey]:
    """Keys from ``--decryption-key`` values (the CLI also takes them from ``OCIART_DECRYPTION_KEY``, comma-separated,
    by its environment rule)."""
    return [s if isinstance(s, DecryptionKey) else parse_decryption_key(s) for s in specs]


# -- key wrapping (JWE) ------------------------------------------------------------------------------------
def _registry() -> Any:
    from joserfc.jwe import JWERegistry

    return JWERegistry(algorithms=_KEY_ALGS + _ENC_ALGS)


def _jose_key(key: Any) -> Any:
    from joserfc.jwk import ECKey, RSAKey

    return RSAKey.import_key(key) if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey) else ECKey.import_key(key)


def wrap(private: PrivateOptions, recipients: Sequence[Recipient]) -> str:
    """The ``enc.keys.jwe`` annotation: one JWE for all recipients (as ocicrypt's ``jose.NewMultiEncrypter``)."""
    from joserfc import jwe

    if not recipients:
        raise UsageError("encryption needs at least one --encrypt-recipient")
    obj = jwe.GeneralJSONEncryption({"enc": "A256GCM"}, _private_json(private))
    for r in recipients:
        alg = "ECDH-ES+A256KW" if isinstance(r.key, ec.EllipticCurvePublicKey) else "RSA-OAEP"
        obj.add_recipient({"alg": alg}, _jose_key(r.key))
    out = jwe.encrypt_json(obj, None, registry=_registry())
    return _b64(json.dumps(out, separators=(",", ":")).encode())


def _private_json(private: PrivateOptions) -> bytes:
    return private.model_dump_json(exclude_none=False).encode()


def unwrap(desc: Descriptor, keys: Sequence[DecryptionKey]) -> PrivateOptions:
    """The private options of an encrypted layer, opened with the first key that fits one of its JWE recipients."""
    from joserfc import jwe
    from joserfc.errors import JoseError

    what = f"layer {desc.digest}" + (f" ({desc.title})" if desc.title else "")
    annotations = desc.annotations or {}
    wrapped = annotations.get(A_KEYS_JWE, "")
    if not wrapped:
        other = sorted(k.removeprefix(A_KEYS_PREFIX) for k, v in annotations.items()
                       if k.startswith(A_KEYS_PREFIX) and v)
        if other:
            raise DecryptionError(f"{what} is encrypted for {', '.join(other)} recipients only; ociart unwraps JWE "
                                  f"keys")
        raise DecryptionError(f"{what} is marked encrypted but carries no wrapped keys ({A_KEYS_JWE})")
    if not keys:
        raise DecryptionError(f"{what} is encrypted: give --decryption-key KEY.pem (or OCIART_DECRYPTION_KEY)")
    registry = _registry()
    recipients = 0
    for part in wrapped.split(","):
        try:
            doc = json.loads(_unb64(part, f"{what}: {A_KEYS_JWE}"))
        except ValueError:
            raise DecryptionError(f"{what}: {A_KEYS_JWE} is not a JWE in JSON serialization") from None
        if not isinstance(doc, dict):
            raise DecryptionError(f"{what}: {A_KEYS_JWE} is not a JWE in JSON serialization")
        # one flattened JWE per recipient: joserfc stops at the first recipient a key does not fit
        common = {k: v for k, v in doc.items() if k != "recipients"}
        flats = [{**common, **r} for r in doc["recipients"] if isinstance(r, dict)] \
            if isinstance(doc.get("recipients"), list) else [doc]
        recipients += len(flats)
        for flat in flats:
            for k in keys:
                try:
                    plain = jwe.decrypt_json(flat, _jose_key(k.key), registry=registry).plaintext
                except (JoseError, ValueError, KeyError, TypeError):
                    continue
                if plain is None:
                    continue
                try:
                    return PrivateOptions.model_validate_json(plain)
                except ValidationError:
                    raise DecryptionError(f"{what}: the unwrapped layer key is not ocicrypt's private "
                                          f"options JSON") from None
    raise DecryptionError(f"{what}: none of the {len(keys)} decryption key(s) is one of its {recipients} "
                          f"recipient(s)")


# -- the cipher ---------------------------------------------------------------------------------------------
@dataclass
class LayerSecret:
    """A layer's symmetric key and nonce, and what is learnt while encrypting (plaintext digest, HMAC)."""

    symkey: bytes = field(default_factory=lambda: secrets.token_bytes(KEY_BYTES))
    nonce: bytes = field(default_factory=lambda: secrets.token_bytes(NONCE_BYTES))
    plain_digest: str | None = None
    plain_size: int | None = None
    mac: bytes | None = None

    @classmethod
    def opened(cls, desc: Descriptor, private: PrivateOptions) -> LayerSecret:
        """The secret of an encrypted layer from its unwrapped private options and its public options."""
        what = f"layer {desc.digest}"
        public = public_options(desc)
        if public.cipher != CIPHER:
            raise DecryptionError(f"{what}: cipher {public.cipher!r} is not supported (only {CIPHER})")
        symkey = _unb64(private.symkey, f"{what}: symkey")
        nonce = _unb64((private.cipheroptions or {}).get("nonce"), f"{what}: nonce")
        mac = _unb64(public.hmac, f"{what}: hmac")
        if len(symkey) != KEY_BYTES or len(nonce) != NONCE_BYTES:
            raise DecryptionError(f"{what}: key of {len(symkey)} bytes or nonce of {len(nonce)} bytes "
                                  f"(need {KEY_BYTES} and {NONCE_BYTES})")
        if not mac:
            raise DecryptionError(f"{what}: HMAC is not provided for decryption ({A_PUBOPTS})")
        return cls(symkey, nonce, private.digest or None, desc.size, mac)

    def cipher(self) -> Cipher[modes.CTR]:
        return Cipher(algorithms.AES(self.symkey), modes.CTR(self.nonce))

    def new_mac(self) -> crypto_hmac.HMAC:
        return crypto_hmac.HMAC(self.symkey, hashes.SHA256())

    def private(self) -> PrivateOptions:
        return PrivateOptions(symkey=_b64(self.symkey), digest=self.plain_digest or "",
                              cipheroptions={"nonce": _b64(self.nonce)})

    def public(self) -> PublicOptions:
        assert self.mac is not None
        return PublicOptions(cipher=CIPHER, hmac=_b64(self.mac), cipheroptions={})


def public_options(desc: Descriptor) -> PublicOptions:
    raw = (desc.annotations or {}).get(A_PUBOPTS)
    if not raw:
        return PublicOptions()
    try:
        return PublicOptions.model_validate_json(_unb64(raw, f"layer {desc.digest}: {A_PUBOPTS}"))
    except ValidationError:
        raise DecryptionError(f"layer {desc.digest}: {A_PUBOPTS} is not ocicrypt's public options JSON") from None


def encrypting_opener(plain: Opener, secret: LayerSecret, expect_digest: str | None = None) -> Opener:
    """An opener of the ciphertext of ``plain``: AES-256-CTR streamed chunk by chunk, HMAC-SHA256 over the
    ciphertext and SHA-256 over the plaintext computed on the way. Each open starts over with the same key and
    nonce (a retried upload sends the same bytes); a pass that reaches the end records the plaintext digest and
    the HMAC in ``secret``. ``expect_digest``: the plaintext must hash to it, else the stream fails before ending
    (an upload then never completes)."""

    @contextmanager
    def cm() -> Iterator[Iterator[bytes]]:
        with plain() as chunks:
            yield _encrypt_chunks(chunks, secret, expect_digest)

    return cm


def _encrypt_chunks(chunks: Iterator[bytes], secret: LayerSecret, expect: str | None) -> Iterator[bytes]:
    enc = secret.cipher().encryptor()
    mac = secret.new_mac()
    d = Digester()
    for chunk in chunks:
        d.update(chunk)
        out = enc.update(chunk)
        mac.update(out)
        yield out
    tail = enc.finalize()
    if tail:
        mac.update(tail)
        yield tail
    if expect is not None and d.digest != expect:
        raise DigestMismatchError(f"plaintext hashes to {d.digest}, expected {expect}; nothing was encrypted")
    secret.plain_digest, secret.plain_size, secret.mac = d.digest, d.size, mac.finalize()


def encrypted_descriptor(media_type: str, annotations: Mapping[str, str] | None, stored: Descriptor,
                         secret: LayerSecret, recipients: Sequence[Recipient]) -> Descriptor:
    """The descriptor of the stored ciphertext: the plain ``media_type`` plus ``+encrypted``, the ciphertext's
    digest and size, the plain ``annotations`` (minus any old ``enc.*``) plus the wrapped keys and public options."""
    out = {k: v for k, v in (annotations or {}).items() if not k.startswith(A_ENC_PREFIX)}
    out[A_KEYS_JWE] = wrap(secret.private(), recipients)
    out[A_PUBOPTS] = _b64(secret.public().model_dump_json().encode())
    return Descriptor(mediaType=plain_media_type(media_type) + ENCRYPTED_SUFFIX, digest=stored.digest,
                      size=stored.size, annotations=out)


def push_encrypted(target: Target, repo: str, media_type: str, annotations: Mapping[str, str] | None,
                   opener: Opener, recipients: Sequence[Recipient], progress: ProgressFn | None = None, *,
                   expect_digest: str | None = None) -> tuple[Descriptor, str]:
    """The one push-side transform: encrypt ``opener``'s bytes (a layer of ``media_type`` with ``annotations``)
    with a fresh layer key, upload the ciphertext hashing it on the way, wrap the key for ``recipients``.
    Returns the encrypted descriptor and the plaintext digest (for ModelPack ``diffIds`` and the digest cache).
    ``expect_digest``: the plaintext must hash to it (a blob read from a store), checked while streaming."""
    if not recipients:
        raise UsageError("encryption needs at least one --encrypt-recipient")
    secret = LayerSecret()
    enc_type = plain_media_type(media_type) + ENCRYPTED_SUFFIX
    stored = target.push_blob_chunks(repo, encrypting_opener(opener, secret, expect_digest), enc_type, progress)
    if secret.mac is None or secret.plain_digest is None:
        raise DecryptionError(f"{annotations and annotations.get('org.opencontainers.image.title') or media_type}: "
                              f"the ciphertext was not produced in full")
    return encrypted_descriptor(media_type, annotations, stored, secret, recipients), secret.plain_digest


def decrypt_file(cipher_path: Path, desc: Descriptor, secret: LayerSecret, dest_dir: Path, *,
                 name: str | None = None, strict: bool = True) -> Descriptor:
    """The one restore-side transform: decrypt the (digest-verified) ciphertext at ``cipher_path`` into
    ``dest_dir/<plaintext hex>`` and return the plaintext descriptor.

    One streaming pass: the plaintext goes to a private temporary file in ``dest_dir`` while the HMAC runs over the
    ciphertext and SHA-256 over the plaintext; only when the HMAC matches (and the plaintext hashes to the digest
    the wrapped options name, when ``strict``) is the file renamed to ``name`` (default: its digest's hex). A
    mismatch removes it and raises :class:`~ociart.errors.HmacMismatchError` (or
    :class:`~ociart.errors.DigestMismatchError`).

    The digest in the wrapped options is the encryptor's claim, not authenticated beyond the HMAC (anyone holding
    the public keys can write both), and containers/image (skopeo, podman) records the digest of the layer *before*
    it recompressed it. So ``strict=False`` (tar layers, ``ociart decrypt``) takes the plaintext as the HMAC
    authenticated it and describes it by its real digest; ``strict`` (a raw file restored under the digest the
    artifact announces) requires the two to agree."""
    what = f"layer {desc.digest}" + (f" ({desc.title})" if desc.title else "")
    assert secret.mac is not None
    dec = secret.cipher().decryptor()
    mac = secret.new_mac()
    d = Digester()
    fd, tmp = tempfile.mkstemp(prefix=".decrypt-", dir=dest_dir)
    ok = False
    try:
        with open(cipher_path, "rb", buffering=0) as src, os.fdopen(fd, "wb") as out:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := src.readinto(buf):
                mac.update(view[:n])
                plain = dec.update(view[:n])
                d.update(plain)
                out.write(plain)
            tail = dec.finalize()
            if tail:
                d.update(tail)
                out.write(tail)
        if not _hmac.compare_digest(mac.finalize(), secret.mac):
            raise HmacMismatchError(f"{what}: HMAC mismatch: the ciphertext was altered or the key is wrong; "
                                    f"nothing was written")
        if strict and secret.plain_digest and d.digest != secret.plain_digest:
            raise DigestMismatchError(f"{what}: decrypted layer hashes to {d.digest}, the wrapped key names "
                                      f"{secret.plain_digest}; nothing was written")
        final = dest_dir / (name or d.digest.removeprefix("sha256:"))
        os.replace(tmp, final)
        ok = True
    finally:
        if not ok:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    annotations = {k: v for k, v in (desc.annotations or {}).items() if not k.startswith(A_ENC_PREFIX)}
    return desc.model_copy(update={"mediaType": plain_media_type(desc.mediaType), "digest": d.digest,
                                   "size": d.size, "annotations": annotations or None})


# -- choosing layers ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncryptionPlan:
    """Who the layer keys are wrapped for, and which layers are encrypted (``--encrypt-filter``)."""

    recipients: tuple[Recipient, ...]
    filters: tuple[str, ...] = DEFAULT_FILTER

    @classmethod
    def of(cls, recipients: Sequence[str | Recipient], filters: Sequence[str] = ()) -> EncryptionPlan | None:
        """None without recipients (a filter alone is a usage error)."""
        chosen = check_encrypt_filters(filters)
        if not recipients:
            if filters:
                raise UsageError("--encrypt-filter needs --encrypt-recipient")
            return None
        parsed = tuple(r if isinstance(r, Recipient) else parse_recipient(r) for r in recipients)
        return cls(parsed, chosen or DEFAULT_FILTER)

    def selects(self, media_type: str) -> bool:
        """Whether a layer of ``media_type`` is encrypted. ``all``: every layer. Otherwise layers of the chosen
        categories; layers of no ML category (plain files, image layers) count as payload, like weights."""
        from .packaging.kinds import category

        if "all" in self.filters:
            return True
        cat = category(plain_media_type(media_type))
        return cat in self.filters if cat is not None else bool({"weights", "dataset"} & set(self.filters))


    def require_any(self, media_types: Sequence[str]) -> None:
        """Refuse an encryption that would encrypt nothing (a recipient given, but the filter selects no layer)."""
        if not any(self.selects(m) for m in media_types):
            raise UsageError(f"--encrypt-filter {','.join(self.filters)} selects none of the layers: nothing would be "
                             f"encrypted")


def check_encrypt_filters(filters: Sequence[str]) -> tuple[str, ...]:
    out = tuple(f.strip() for group in filters for f in group.split(",") if f.strip())
    bad = [f for f in out if f not in ENCRYPT_FILTERS]
    if bad:
        raise UsageError(f"unknown --encrypt-filter {', '.join(bad)}: choose from {', '.join(ENCRYPT_FILTERS)}")
    return out


def describe(desc: Descriptor) -> dict[str, Any]:
    """What inspect shows of a layer's encryption, without a key."""
    if not is_encrypted(desc):
        return {"encrypted": False}
    return {"encrypted": True, "recipients": recipient_count(desc), "cipher": public_options(desc).cipher or None}


__all__ = ["A_KEYS_JWE", "A_PUBOPTS", "CIPHER", "DecryptionKey", "EncryptionPlan", "LayerSecret",
           "Recipient", "decrypt_file", "decryption_keys", "encrypting_opener", "is_encrypted", "parse_recipient",
           "push_encrypted", "recipient_count", "unwrap"]


# -- graph rewrites: ociart encrypt / decrypt ---------------------------------------------------------------
def _decrypting_opener(opener: Opener, desc: Descriptor, secret: LayerSecret) -> Opener:
    """Plaintext of an encrypted blob, streamed for re-encryption (``--rotate``): the HMAC is checked when the
    ciphertext ends and a mismatch fails the stream, so the upload it feeds never completes."""
    assert secret.mac is not None
    expected_mac = secret.mac

    @contextmanager
    def cm() -> Iterator[Iterator[bytes]]:
        def chunks(src: Iterator[bytes]) -> Iterator[bytes]:
            dec = secret.cipher().decryptor()
            mac = secret.new_mac()
            for chunk in src:
                mac.update(chunk)
                yield dec.update(chunk)
            tail = dec.finalize()
            if not _hmac.compare_digest(mac.finalize(), expected_mac):
                raise HmacMismatchError(f"layer {desc.digest}: HMAC mismatch: the ciphertext was altered or the key "
                                        f"is wrong; nothing was written")
            if tail:
                yield tail

        with opener() as src:
            yield chunks(src)

    return cm


def _check_manifest(node: Any, digest: str) -> None:
    from .oci.mediatypes import OCI_MANIFEST

    if node.mediaType != OCI_MANIFEST:
        raise UsageError(f"{digest} is a {node.mediaType} manifest: ocicrypt layers need an OCI manifest "
                         f"(skopeo copy --format oci converts it)")


def open_layers(layers: Sequence[Descriptor], keys: Sequence[DecryptionKey]) -> dict[str, LayerSecret]:
    """Every encrypted layer's secret, by ciphertext digest; fails on the first layer no key opens."""
    return {d.digest: LayerSecret.opened(d, unwrap(d, keys)) for d in layers if is_encrypted(d)}


LayerRewrite = Callable[[Descriptor, LayerSecret | None], Descriptor]


def _rewrite_graph(src: Target, src_repo: str, dst: Target, dst_repo: str, root: Descriptor,
                   keys: Sequence[DecryptionKey], rewrite: LayerRewrite, tag: str | None, concurrency: int,
                   progress: Any, check: Callable[[list[Descriptor], dict[str, LayerSecret]], bool] | None = None
                   ) -> Any:
    """The one graph rewrite of ``encrypt`` and ``decrypt``: ``root`` is an OCI image manifest, or an index of them
    (the image form: one image per platform). Every layer's key is opened first (nothing is written when one does
    not open); then each distinct layer is rewritten once by ``rewrite`` (shared by every image of an index, so the
    images keep sharing blobs), the config copied, and the manifests (children first) written; the root is tagged.
    ``check`` sees the layers and opened keys first: it may raise, or return True to have nothing rewritten (the
    result is then None).
    """
    import threading

    from .oci import Content, Index, Manifest
    from .transfer import copy_blob, parallel, push_manifest

    top = src.get_manifest(src_repo, root.digest).parse()
    children: list[tuple[Descriptor, Manifest]] = []
    if isinstance(top, Index):
        for child in top.manifests:
            node = src.get_manifest(src_repo, child.digest).parse()
            if not isinstance(node, Manifest):
                raise UsageError(f"{root.digest}: nested indexes are not supported by encrypt and decrypt")
            _check_manifest(node, child.digest)
            children.append((child, node))
    else:
        _check_manifest(top, root.digest)
        children.append((root, top))
    layers = list({d.digest: d for _, node in children for d in node.layers}.values())  # each blob once
    opened = open_layers(layers, keys)
    if check is not None:
        if check(layers, opened):
            return None
    memo: dict[str, Descriptor] = {}
    lock = threading.Lock()

    def one(layer: Descriptor) -> None:
        out = rewrite(layer, opened.get(layer.digest))
        with lock:
            memo[layer.digest] = out

    def place(layer: Descriptor) -> Descriptor:
        """The rewritten layer; a layer left alone keeps this manifest's own descriptor of it."""
        out = memo[layer.digest]
        return layer if out is sources[layer.digest] else out

    sources = {d.digest: d for d in layers}
    with dst.writing():
        parallel(one, layers, concurrency)
        written: list[Descriptor] = []
        for desc, node in children:
            copy_blob(src, src_repo, dst, dst_repo, node.config, progress)
            content = push_manifest(dst, dst_repo, artifact_type=node.artifactType,
                                    layers=[place(d) for d in node.layers], config=node.config,
                                    subject=node.subject, annotations=node.annotations,
                                    tag=tag if not isinstance(top, Index) else None)
            written.append(desc.model_copy(update={"digest": content.digest, "size": content.size,
                                                   "mediaType": content.media_type}))
        if not isinstance(top, Index):
            return content
        index = Content.from_model(top.model_copy(update={"manifests": written}))
        dst.put_manifest(dst_repo, index, tag)
        return index


def encrypt_graph(src: Target, src_repo: str, dst: Target, dst_repo: str, root: Descriptor, plan: EncryptionPlan,
                  *, keys: Sequence[DecryptionKey] = (), rotate: bool = False, tag: str | None = None,
                  concurrency: int = 4, progress: Any = None) -> Any:
    """``ociart encrypt``: write a manifest (or image index) whose layers are encrypted for exactly
    ``plan.recipients``.

    * plaintext layers the plan selects are encrypted with fresh keys (streamed from the source, digest-checked);
    * already encrypted layers need one of ``keys``: their layer keys are re-wrapped for the new recipient list,
      and the blobs stay as they are (the new manifest shares them; this does not revoke a removed recipient who
      kept a layer key) -- unless ``rotate``, which decrypts (HMAC-checked) and re-encrypts them with fresh keys;
    * the config and every other layer are copied unchanged.

    Keys are opened before anything is uploaded. Referrers (signatures) are not carried: they are of the old
    digest. Returns the new root's content."""
    from .transfer import copy_blob

    def check(layers: list[Descriptor], opened: dict[str, LayerSecret]) -> bool:
        if not opened:
            plan.require_any([d.mediaType for d in layers])
        return False

    def rewrite(layer: Descriptor, secret: LayerSecret | None) -> Descriptor:
        cb = progress.task(layer.title or layer.digest[7:19], layer.size) if progress else None
        if secret is not None:
            if not rotate:  # re-wrap: same blob, new recipients
                copy_blob(src, src_repo, dst, dst_repo, layer, progress)
                return encrypted_descriptor(layer.mediaType, layer.annotations, layer, secret, plan.recipients)
            opener = _decrypting_opener(lambda: src.open_blob(src_repo, layer), layer, secret)
            return push_encrypted(dst, dst_repo, layer.mediaType, layer.annotations, opener, plan.recipients, cb)[0]
        if plan.selects(layer.mediaType):
            return push_encrypted(dst, dst_repo, layer.mediaType, layer.annotations,
                                  lambda: src.open_blob(src_repo, layer), plan.recipients, cb,
                                  expect_digest=layer.digest)[0]
        copy_blob(src, src_repo, dst, dst_repo, layer, progress)
        return layer

    return _rewrite_graph(src, src_repo, dst, dst_repo, root, keys, rewrite, tag, concurrency, progress, check)


def decrypt_graph(src: Target, src_repo: str, dst: Target, dst_repo: str, root: Descriptor,
                  keys: Sequence[DecryptionKey], *, tag: str | None = None, concurrency: int = 4,
                  progress: Any = None, referrers: bool = False) -> Any:
    """``ociart decrypt`` (and ``copy --decryption-key``): write a manifest (or image index) whose encrypted layers
    are replaced by their plaintext. Every key is opened first; each ciphertext is fetched (digest-verified) into a
    private temporary directory and decrypted there (:func:`decrypt_file`: HMAC-checked) before the plaintext is
    uploaded. A graph with no encrypted layer is copied as it is (:func:`~ociart.transfer.copy_graph`: same bytes
    and digest, with its referrers when ``referrers``). Returns the new root's content."""
    from .transfer import copy_blob, copy_graph

    def nothing_encrypted(layers: list[Descriptor], opened: dict[str, LayerSecret]) -> bool:
        return not opened

    def rewrite(layer: Descriptor, secret: LayerSecret | None) -> Descriptor:
        if secret is None:
            copy_blob(src, src_repo, dst, dst_repo, layer, progress)
            return layer
        with tempfile.TemporaryDirectory(prefix="ociart-decrypt-") as tmp:
            cipher_path = Path(tmp) / "ciphertext"
            cb = progress.task(layer.title or layer.digest[7:19], layer.size) if progress else None
            src.fetch_blob(src_repo, layer, cipher_path, cb)
            plain = decrypt_file(cipher_path, layer, secret, Path(tmp), strict=False)
            cipher_path.unlink()
            dst.push_blob_file(dst_repo, Path(tmp) / plain.digest.removeprefix("sha256:"), plain)
            return plain

    out = _rewrite_graph(src, src_repo, dst, dst_repo, root, keys, rewrite, tag, concurrency, progress,
                         nothing_encrypted)
    if out is None:
        return copy_graph(src, src_repo, dst, dst_repo, root, tag=tag, concurrency=concurrency, progress=progress,
                          referrers=referrers)
    return out
