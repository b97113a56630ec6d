"""Signing and deploy-time verification, interoperable with cosign, Sigstore, Kyverno and policy-controller.

* :mod:`~ociart.signing.keys` — cosign key pairs (``ENCRYPTED SIGSTORE PRIVATE KEY``), ECDSA P-256;
* :mod:`~ociart.signing.signers` — who signs: :class:`KeySigner` or a keyless Sigstore identity; key URIs;
* :mod:`~ociart.signing.bundle` — cosign v3 signatures: Sigstore bundle v0.3 (DSSE, in-toto) as OCI referrers;
* :mod:`~ociart.signing.legacy` — cosign v2 signatures: simple-signing payloads at ``sha256-<hex>.sig``;
* :mod:`~ociart.signing.identity` — keyless identities (certificate SAN + OIDC issuer) a verifier trusts;
* :mod:`~ociart.signing.keyless` — Fulcio certificates + Rekor entries through sigstore-python; trust roots;
* :mod:`~ociart.signing.verify` — discovering and verifying both formats against a :class:`Trust`;
* :mod:`~ociart.signing.policy` — YAML verification policies per repository pattern;
* :mod:`~ociart.signing.service` — what ``Client.sign``/``attest``/``verify`` and the CLI call.

Formats and rules are written down in docs/signing.md.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .identity import TrustedIdentity
    from .policy import Policy, load_policy
    from .keys import generate_key_pair
    from .service import AttestResult, SignResult
    from .signers import KeySigner, Signer, keyless_signer, load_signing_key, load_verification_key
    from .results import Verification, Verified
    from .verify import Trust, TrustedKey, build_trust

#: Exported name -> submodule. Loaded on first use: importing ``ociart`` or pushing without signing must not pay for
#: cryptography's x509 stack, PyYAML and sigstore-models (~80 ms).
_EXPORTS = {
    "AttestResult": "service", "SignResult": "service",
    "KeySigner": "signers", "Signer": "signers", "keyless_signer": "signers", "load_signing_key": "signers",
    "load_verification_key": "signers",
    "Policy": "policy", "load_policy": "policy",
    "Trust": "verify", "TrustedKey": "verify", "Verification": "results", "Verified": "results",
    "build_trust": "verify", "generate_key_pair": "keys",
    "TrustedIdentity": "identity",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)


__all__ = [
    "AttestResult",
    "KeySigner",
    "Policy",
    "SignResult",
    "Signer",
    "Trust",
    "TrustedIdentity",
    "TrustedKey",
    "Verification",
    "Verified",
    "build_trust",
    "generate_key_pair",
    "keyless_signer",
    "load_policy",
    "load_signing_key",
    "load_verification_key",
]

