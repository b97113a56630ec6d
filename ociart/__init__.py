"""ociart: an artifact store for machine learning on OCI registries.

    import ociart
    with ociart.Client() as c:
        d = c.push("localhost:5000/models/bert:v1", ["model/"], kind="model", sign="cosign.key")
        c.verify(d.ref, keys=["cosign.pub"])
        c.pull(d.ref, "out/")
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .errors import (
    AuthError,
    ConflictError,
    Interrupted,
    LocalIOError,
    NetworkError,
    NotFoundError,
    OciartError,
    UsageError,
    VerificationError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .client import (
        Client,
        DeleteResult,
        DiffResult,
        FileChange,
        FileInfo,
        Inspection,
        PullResult,
        PushResult,
        TagResult,
    )
    from .lineage.graph import Node
    from .lineage.record import LineageOptions
    from .lineage.run import CheckpointUploader, Run, run
    from .lineage.statement import Statement
    from .listing import ListedArtifact, Listing
    from .oci import Descriptor
    from .packaging.unpack import PulledFile
    from .reference import Reference, parse_reference
    from .signing.keys import generate_key_pair
    from .signing.policy import Policy, load_policy
    from .signing.results import Verification, Verified
    from .signing.service import AttestResult, SignResult
    from .signing.signers import load_signing_key, load_verification_key
    from .signing.verify import Trust, TrustedKey
    from .promotion.models import GateResult, HistoryEntry
    from .promotion.promote import PromotionResult
    from .targets.base import ABSENT

#: Public name -> module, imported on first use: `import ociart` stays cheap for the CLI.
_LAZY = {
    "Client": "client", "DeleteResult": "client", "DiffResult": "client", "FileChange": "client",
    "FileInfo": "client", "Inspection": "client", "PullResult": "client", "PushResult": "client",
    "Node": "lineage.graph", "LineageOptions": "lineage.record", "Statement": "lineage.statement",
    "CheckpointUploader": "lineage.run", "Run": "lineage.run", "run": "lineage.run",
    "Descriptor": "oci", "PulledFile": "packaging.unpack", "Reference": "reference", "parse_reference": "reference",
    "generate_key_pair": "signing.keys", "Policy": "signing.policy", "load_policy": "signing.policy",
    "Verification": "signing.results", "Verified": "signing.results", "AttestResult": "signing.service",
    "SignResult": "signing.service", "load_signing_key": "signing.signers",
    "load_verification_key": "signing.signers", "Trust": "signing.verify", "TrustedKey": "signing.verify",
    "TagResult": "client", "Listing": "listing", "ListedArtifact": "listing", "ABSENT": "targets.base",
    "PromotionResult": "promotion.promote", "HistoryEntry": "promotion.models", "GateResult": "promotion.models",
}

__all__ = [
    "AuthError", "ConflictError", "Interrupted", "LocalIOError", "NetworkError", "NotFoundError", "OciartError",
    "UsageError", "VerificationError", "__version__", *sorted(_LAZY),
]


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
