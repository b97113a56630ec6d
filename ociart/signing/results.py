"""Result models of verification, kept free of cryptography so that :mod:`ociart.client` can name them cheaply."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Verified(BaseModel):
    """One signature or attestation that verified."""

    model_config = ConfigDict(frozen=True)

    format: Literal["bundle", "legacy"]
    predicateType: str
    signer: str
    #: The referrer manifest (bundle) or the layer of the ``.sig`` manifest (legacy) that holds it.
    source: str


class Verification(BaseModel):
    """The result of :func:`verify`: what verified, and why everything else was not accepted."""

    reference: str
    digest: str
    signatures: list[Verified]
    attestations: list[Verified]
    rejected: list[str]
    #: Tags of the policy rule's ``promotedTo`` the digest is currently promoted into (by a signed record).
    promotedTo: list[str] = []


__all__ = ["Verification", "Verified"]
