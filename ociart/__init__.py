"""ociart: an artifact store for machine learning on OCI registries.

    import ociart
    client = ociart.Client()
    desc = client.push("localhost:5000/models/bert:v1", ["weights.safetensors"])
    client.pull("localhost:5000/models/bert@" + desc.digest, "out/")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AuthError,
    NetworkError,
    NotFoundError,
    OciartError,
    UsageError,
    VerificationError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .client import Client
    from .reference import Reference, parse_reference

__all__ = [
    "AuthError",
    "Client",
    "NetworkError",
    "NotFoundError",
    "OciartError",
    "Reference",
    "UsageError",
    "VerificationError",
    "parse_reference",
    "run",
    "Run",
]


def __getattr__(name: str) -> Any:  # lazy: `import ociart` stays cheap for the CLI
    if name == "Client":
        from .client import Client

        return Client
    if name in ("run", "Run"):
        from .lineage import run as run_module

        return getattr(run_module, name)
    if name in ("Reference", "parse_reference"):
        from . import reference

        return getattr(reference, name)
    raise AttributeError(name)
