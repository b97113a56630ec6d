"""Small helpers shared by tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The shared specs (JSON schemas, CRDs, cosign's test key) are not copied into this repository: they are read from
#: ``$OCIART_SPEC_DIR``, else ``../shared/spec`` next to the repository root, else ``/work/shared/spec``. Tests that
#: need them fail (never skip) when none exists.
SPEC_DIR = next((p for p in (Path(os.environ["OCIART_SPEC_DIR"]) if os.environ.get("OCIART_SPEC_DIR") else None,
                             REPO_ROOT.parent / "shared" / "spec", Path("/work/shared/spec"))
                 if p is not None and p.is_dir()), REPO_ROOT.parent / "shared" / "spec")


def write_random(path: Path, size: int, seed: int = 0) -> Path:
    """Deterministic pseudo-random content (fast, incompressible enough)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(f"seed-{seed}".encode()).digest() * 2048  # 64 KiB
    with open(path, "wb") as f:
        left = size
        i = 0
        while left > 0:
            chunk = hashlib.sha256(block[:64] + i.to_bytes(8, "big")).digest() + block[32:]
            f.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
            i += 1
    return path


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file under root (ignores nothing)."""
    out: dict[str, str] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(*args: str, input: str | None = None, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ociart", *args], capture_output=True, text=True, input=input,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=300)


def push_subject(target: Any, repo: str, note: bytes, tag: str = "v1") -> Any:
    """A one-layer artifact (empty config, ``note`` as its layer) pushed to ``target`` at ``repo:tag``, to sign or
    attach to; returns its descriptor."""
    from ociart.oci import (
        EMPTY_JSON,
        EMPTY_JSON_DIGEST,
        OCI_EMPTY,
        Content,
        Descriptor,
        Manifest,
    )
    from ociart.oci.digest import sha256_bytes
    from ociart.targets.base import bytes_opener

    layer = Descriptor(mediaType="application/vnd.example.file", digest=sha256_bytes(note), size=len(note))
    target.push_blob_stream(repo, layer, bytes_opener(note))
    target.push_blob_stream(repo, Descriptor(mediaType=OCI_EMPTY, digest=EMPTY_JSON_DIGEST, size=2),
                            bytes_opener(EMPTY_JSON))
    content = Content.from_model(Manifest(artifactType="application/vnd.example.model",
                                          config=Descriptor(mediaType=OCI_EMPTY, digest=EMPTY_JSON_DIGEST, size=2),
                                          layers=[layer]))
    target.put_manifest(repo, content, tag)
    return content.descriptor()
