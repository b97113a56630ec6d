"""Who signs: a key (cosign key file, ECDSA P-256) or a keyless Sigstore identity (Fulcio certificate + Rekor).

Both produce the two things ociart stores: a Sigstore bundle v0.3 over an in-toto statement (DSSE) and the layer
annotations of a legacy cosign simple-signing signature. Keys are named by a path or a key URI; ``file://`` is the
only scheme implemented, the others (cosign's ``awskms://``, ``gcpkms://``, ``azurekms://``, ``hashivault://``,
``pkcs11:``, ``k8s://``) are recognised and refused (verification keys also take ``env://VAR``) with a clear error so that they can be added without changing
any caller.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import UnsupportedError, UsageError
from . import keys

#: Layer annotations of a legacy cosign signature (cosign ``pkg/oci/static``; the spelling mix is cosign's).
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
#: cosign's key-reference schemes that name a key held elsewhere (not implemented yet).
REMOTE_KEY_SCHEMES = ("awskms", "gcpkms", "azurekms", "hashivault", "pkcs11", "k8s", "gitlab")


@runtime_checkable
class Signer(Protocol):
    """Signs the two payload kinds ociart stores."""

    def sign_statement(self, statement: bytes) -> bytes:
        """A Sigstore bundle v0.3 (JSON bytes) holding a DSSE envelope over ``statement``."""
        ...

    def sign_legacy_payload(self, payload: bytes) -> dict[str, str]:
        """The layer annotations of a legacy cosign signature of ``payload`` (at least the signature)."""
        ...

    def describe(self) -> str:
        """Who signed, for messages and ``--json`` output."""
        ...


class KeySigner:
    """Signs with an ECDSA P-256 private key (no certificate, no transparency log: cosign ``--tlog-upload=false``)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, name: str = "key") -> None:
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self.name = name

    def sign_statement(self, statement: bytes) -> bytes:
        from .bundle import bundle_bytes

        return bundle_bytes(statement, self.private_key)

    def sign_legacy_payload(self, payload: bytes) -> dict[str, str]:
        return {SIGNATURE_ANNOTATION: base64.b64encode(keys.sign(self.private_key, payload)).decode()}

    def describe(self) -> str:
        return self.name


def as_signer(signer: Signer | ec.EllipticCurvePrivateKey) -> Signer:
    return KeySigner(signer) if isinstance(signer, ec.EllipticCurvePrivateKey) else signer


def key_path(ref: str | Path) -> Path:
    """A key reference (``PATH``, ``file://PATH`` or a cosign key URI) → the local file it names."""
    if isinstance(ref, Path):
        return ref
    if "://" in ref or ref.startswith("pkcs11:"):
        parts = urlsplit(ref)
        scheme = parts.scheme.lower()
        if scheme == "file":
            return Path(unquote(parts.netloc + parts.path))
        if scheme in REMOTE_KEY_SCHEMES:
            raise UnsupportedError(f"key {ref}: {scheme} keys are not supported yet (use a key file)")
        raise UsageError(f"key {ref}: unknown key URI scheme {scheme!r} (use a path or file://PATH)")
    return Path(ref)


def load_signing_key(ref: str | Path, password: bytes | None = None) -> KeySigner:
    """Read a cosign/ociart encrypted private key; the password comes from COSIGN_PASSWORD or a prompt."""
    path = key_path(ref)
    pw = keys.read_password() if password is None else password
    return KeySigner(keys.load_private_key(path, pw), name=str(ref))


def load_verification_key(ref: str | Path) -> ec.EllipticCurvePublicKey:
    """A public key file (``PATH``, ``file://PATH``), or ``env://VAR``: the PEM in environment variable ``VAR``
    (cosign's form; how a Kubernetes Secret reaches a container that cannot mount it, e.g. KServe's storage
    initializer)."""
    if isinstance(ref, str) and ref.lower().startswith("env://"):
        name = ref[len("env://"):]
        value = os.environ.get(name)
        if not name or not value:
            raise UsageError(f"key {ref}: environment variable {name or '(none)'} is not set")
        return keys.load_public_key_pem(value.encode(), f"public key in ${name}")
    return keys.load_public_key(key_path(ref))


def keyless_signer(identity_token: str | None = None, trust_config: Path | None = None) -> Signer:
    """A Sigstore keyless signer (Fulcio + Rekor from ``trust_config``, public-good Sigstore by default)."""
    from . import keyless

    token = keyless.identity_token(identity_token)
    return keyless.KeylessSigner(token, keyless.load_trust_config(trust_config))


__all__ = ["KeySigner", "Signer", "as_signer", "key_path", "keyless_signer", "load_signing_key",
           "load_verification_key"]
