"""W&B helpers: record ociart artifacts as W&B *reference* artifacts (no bytes copied), with lineage edges.

    run = wandb.init(project="sst2")
    ociart.integrations.wandb.use_artifact(run, "registry.example/data/sst2:v3")      # input edge
    ...
    ociart.integrations.wandb.log_artifact(run, "registry.example/models/bert:v1")   # output edge

The W&B artifact holds one reference, ``oci://<reference>@sha256:<digest>``, and metadata with the digest and
artifactType, so the W&B lineage graph points at the exact bytes in the registry.
"""

from __future__ import annotations

from typing import Any

from ..client import Client


def _artifact(ref: str, name: str | None, type: str | None, client: Client | None) -> Any:  # noqa: A002
    import wandb

    own = client is None
    c = client or Client()
    try:
        pinned, content = c.manifest(ref)
        node = content.parse()
    finally:
        if own:
            c.close()
    artifact_type = getattr(node, "artifactType", None)
    kind = (node.annotations or {}).get("dev.ociart.kind") or "ociart"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in (name or pinned.repository or "artifact"))
    art = wandb.Artifact(safe[:128], type=type or kind,
                         metadata={"ociart.ref": str(pinned), "ociart.digest": content.digest,
                                   "ociart.artifactType": artifact_type})
    art.add_reference(f"oci://{pinned}", name="manifest", checksum=False)
    return art


def log_artifact(run: Any, ref: str, *, name: str | None = None, type: str | None = None,  # noqa: A002
                 aliases: list[str] | None = None, client: Client | None = None) -> Any:
    """Log ``ref`` (pinned to its digest) as an output of ``run``."""
    art = _artifact(ref, name, type, client)
    run.log_artifact(art, aliases=aliases)
    return art


def use_artifact(run: Any, ref: str, *, name: str | None = None, type: str | None = None,  # noqa: A002
                 client: Client | None = None) -> Any:
    """Record ``ref`` (pinned to its digest) as an input of ``run``.

    Offline, W&B refuses ``use_artifact``: the artifact is logged flagged ``use_after_commit`` instead, the record
    ``use_artifact`` itself writes for a new artifact online, which ``wandb sync`` turns into the input edge."""
    art = _artifact(ref, name, type, client)
    if getattr(run, "offline", False):
        run._log_artifact(art, is_user_created=True, use_after_commit=True)
    else:
        run.use_artifact(art)
    return art
