"""Small pieces both signature formats (legacy ``.sig`` and Sigstore bundles) read with."""

from __future__ import annotations

from typing import Any

from ..errors import DigestMismatchError, InvalidContentError
from ..oci import Descriptor
from ..oci.digest import sha256_bytes
from ..targets.base import Target


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: a signed document with a repeated key is ambiguous, so it is refused."""
    obj: dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def read_verified_blob(target: Target, repo: str, layer: Descriptor, limit: int, what: str) -> bytes:
    """A small signature blob, read whole (at most ``limit`` bytes) and checked against its descriptor here too:
    a registry target verifies at the end of the stream, a layout target does not."""
    if layer.size > limit:
        raise InvalidContentError(f"{what} is {layer.size} bytes, over the {limit}-byte limit")
    buf = bytearray()
    with target.open_blob(repo, layer) as chunks:
        for chunk in chunks:
            buf += chunk
            if len(buf) > limit:
                raise InvalidContentError(f"{what} is over the {limit}-byte limit")
    data = bytes(buf)
    got = sha256_bytes(data)
    if got != layer.digest or len(data) != layer.size:
        raise DigestMismatchError(f"blob digest mismatch: expected {layer.digest} ({layer.size} bytes), "
                                  f"got {got} ({len(data)} bytes)")
    return data


def where(repo: str, digest: str) -> str:
    return f"{repo}@{digest}" if repo else digest
