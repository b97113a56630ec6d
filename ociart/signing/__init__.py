"""Signing support (issue 5, in progress): cosign-compatible key pairs and ECDSA P-256 signatures
(:mod:`ociart.signing.keys`), the legacy cosign signature at ``sha256-<hex>.sig`` (:mod:`ociart.signing.legacy`), and
key-mode Sigstore bundle v0.3 referrers (:mod:`ociart.signing.bundle`, offline: no certificate or transparency log).
Keyless signing, attestations, policies and the CLI come later.
"""
