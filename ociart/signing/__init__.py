"""Signing support (issue 5): cosign-compatible key pairs and ECDSA P-256 signatures.

Only the key layer exists so far (:mod:`ociart.signing.keys`); signing artifacts comes later.
"""
