"""Signing support (issue 5, in progress): cosign-compatible key pairs and ECDSA P-256 signatures
(:mod:`ociart.signing.keys`) and the legacy cosign signature at ``sha256-<hex>.sig`` (:mod:`ociart.signing.legacy`).
Sigstore bundles, keyless signing, attestations and policies come later.
"""
