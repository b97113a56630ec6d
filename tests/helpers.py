"""Small helpers shared by tests."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

#: External reference data (JSON schemas, CRDs, cosign's test key) is not part of this repository: tests that check
#: ociart against it read it from this directory only. Unset or incomplete: they skip, naming the variable and the
#: files; with ``OCIART_REQUIRE_SPEC=1`` (what ``.ci/run`` sets) a missing file is a failure instead.
SPEC_ENV = "OCIART_SPEC_DIR"
REQUIRE_SPEC_ENV = "OCIART_REQUIRE_SPEC"
#: cosign's test-suite key (``pkg/cosign/keys_test.go`` ``pemsigstorekey``), relative to the spec dir, and its password.
COSIGN_TEST_KEY = "cosign/sigstore-encrypted-key.pem"
COSIGN_TEST_PASSWORD = "hello"
#: Where pytest started: a relative ``$OCIART_SPEC_DIR`` is read from there (tests run in a temp working directory).
_START_DIR = Path.cwd()


def _spec_lookup(files: tuple[str, ...]) -> tuple[Path | None, str]:
    """(the spec dir, "") when it holds every file in ``files`` (paths relative to it), else (None, the reason)."""
    value = os.environ.get(SPEC_ENV, "")
    root = _START_DIR / value if value else None
    missing = list(files) if root is None else [f for f in files if not (root / f).is_file()]
    if root is not None and not missing:
        return root, ""
    why = f"{SPEC_ENV} is not set" if root is None else f"{SPEC_ENV}={value} lacks {', '.join(missing)}"
    return None, (f"external reference data: {why}; set {SPEC_ENV} to a directory holding {', '.join(files)} "
                  f"(README, 'Run the tests')")


def _spec_required() -> bool:
    return os.environ.get(REQUIRE_SPEC_ENV, "") not in ("", "0")


def spec_dir(*files: str) -> Path:
    """``$OCIART_SPEC_DIR``, checked to hold ``files`` (relative paths). Otherwise the calling test is skipped with
    the reason (variable and files), or fails with it when ``OCIART_REQUIRE_SPEC=1``."""
    root, reason = _spec_lookup(files)
    if root is None:
        if _spec_required():
            pytest.fail(f"{reason} ({REQUIRE_SPEC_ENV}=1)", pytrace=False)
        pytest.skip(reason)
    return root


def optional_spec_dir(*files: str) -> Path | None:
    """As :func:`spec_dir` for checks that are extra to a test: ``None`` (the test goes on without them) instead of
    a skip; still a failure when ``OCIART_REQUIRE_SPEC=1``."""
    root, reason = _spec_lookup(files)
    if root is None and _spec_required():
        pytest.fail(f"{reason} ({REQUIRE_SPEC_ENV}=1)", pytrace=False)
    return root


def cosign_test_key() -> Path:
    """cosign's own test key file (password :data:`COSIGN_TEST_PASSWORD`), for the tests that prove interop with
    cosign's key envelope; tests that need just *a* cosign-format key make one with ``ociart keygen``."""
    return spec_dir(COSIGN_TEST_KEY) / COSIGN_TEST_KEY


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


def make_tar(entries: list[tuple[str, bytes | None]], fmt: int = tarfile.PAX_FORMAT, mode: int = 0o644) -> bytes:
    """A tar written by ``tarfile`` in ``fmt``: each entry a regular file of ``mode``, or a directory (data None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), mode
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()
