"""Interoperability with independent clients: skopeo (containers/image) and oras-py.

* An artifact pushed by ociart (library and CLI) is copied registry-to-registry by ``skopeo copy
  --preserve-digests`` with its manifest digest unchanged and pulls back byte-identical; skopeo's OCI layout copy
  keeps the digest and ``ociart copy`` pushes that skopeo-written layout back unchanged.
* An artifact pushed by oras-py pulls with ociart, files byte-identical.
* skopeo reads ociart's embedded store (``oci:$OCIART_HOME/store:<repo>:<tag>``) with the same bytes and digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.registry import RunningRegistry

import ociart
from ociart.oci import ANNOTATION_REF_NAME, ANNOTATION_TITLE

SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
pytestmark = pytest.mark.skipif(not os.access(SKOPEO, os.X_OK), reason="skopeo is not installed")


# -- helpers ----------------------------------------------------------------------------------------
def _cli_cmd() -> list[str]:
    if (Path(ociart.__file__).parent / "__main__.py").exists():
        return [sys.executable, "-m", "ociart"]
    return [str(Path(sys.executable).with_name("ociart"))]


def run_ociart(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*_cli_cmd(), *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def skopeo(*args: str, policy: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([SKOPEO, "--policy", str(policy), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"skopeo {' '.join(args)} failed:\n{proc.stderr}"
    return proc


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    """A containers signature policy accepting anything (skopeo refuses to run without one)."""
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    return path


def make_files(root: Path, seed: str) -> dict[str, bytes]:
    """A small tree of distinct files (one nested, one > 1 MiB); returns title -> content."""
    files = {
        "weights.bin": hashlib.sha256(seed.encode()).digest() * (40_000 + len(seed)),  # ~1.3 MB
        "config.json": json.dumps({"seed": seed, "layers": 12}).encode(),
        "tokenizer/vocab.txt": "\n".join(f"{seed}-{i}" for i in range(500)).encode(),
    }
    for title, data in files.items():
        (root / title).parent.mkdir(parents=True, exist_ok=True)
        (root / title).write_bytes(data)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- ociart -> skopeo -> ociart ---------------------------------------------------------------------
@pytest.mark.parametrize("via", ["library", "cli"])
def test_skopeo_copies_ociart_artifact_with_same_digest(
    via: str, registry: RunningRegistry, unique_repo: str, tmp_path: Path, policy: Path
) -> None:
    src = tmp_path / "src"
    files = make_files(src, f"{via}-{unique_repo}")
    host = registry.host
    ref = f"{host}/{unique_repo}/one:v1"
    client = ociart.Client(plain_http=True)

    if via == "library":
        digest = client.push(ref, [src]).digest
    else:
        proc = run_ociart("push", "--plain-http", ref, *sorted(files), cwd=src)
        assert proc.returncode == 0, proc.stderr
        digest = proc.stdout.strip()
    assert digest.startswith("sha256:") and len(digest) == 71
    pushed = client.inspect(ref)
    assert pushed.descriptor.digest == digest
    assert sorted(layer["annotations"][ANNOTATION_TITLE] for layer in pushed.manifest["layers"]) == sorted(files)

    # registry -> registry with skopeo: same manifest digest, and skopeo reads the exact bytes we pushed
    other = f"{host}/{unique_repo}/other:v1"
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{ref}", f"docker://{other}", policy=policy)
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{other}", policy=policy).stdout
    assert sha256(raw.encode()) == digest
    assert client.resolve(other).digest == digest

    out = tmp_path / "pulled"
    result = client.pull(other, out)
    assert result.digest == digest
    assert read_tree(out) == files

    # registry -> OCI layout with skopeo: index.json names the same digest under the tag
    layout = tmp_path / "layout"
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false", f"docker://{other}", f"oci:{layout}:v1",
           policy=policy)
    index = json.loads((layout / "index.json").read_text())
    entries = [m for m in index["manifests"] if (m.get("annotations") or {}).get(ANNOTATION_REF_NAME) == "v1"]
    assert [m["digest"] for m in entries] == [digest]
    assert sha256((layout / "blobs" / "sha256" / digest[7:]).read_bytes()) == digest

    # ... and ociart pushes the skopeo-written layout back, digest unchanged
    third = f"{host}/{unique_repo}/three:v1"
    if via == "library":
        assert ociart.Client(plain_http=True).copy(f"oci:{layout}:v1", third).digest == digest
    else:
        proc = run_ociart("copy", "--plain-http", f"oci:{layout}:v1", third)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == digest
    assert client.resolve(third).digest == digest
    out3 = tmp_path / "pulled3"
    client.pull(third, out3)
    assert read_tree(out3) == files


# -- oras-py -> ociart ------------------------------------------------------------------------------
def test_oras_py_push_pulls_with_ociart(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    oras_client = pytest.importorskip("oras.client")
    src = tmp_path / "oras-src"
    src.mkdir()
    files = {
        "model.safetensors": os.urandom(3 * 1024 * 1024 + 17),
        "README.md": b"# pushed by oras-py\n",
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
    monkeypatch.chdir(src)  # oras-py insists on paths under the working directory
    ref = f"{registry.host}/{unique_repo}:v1"
    oras = oras_client.OrasClient(hostname=registry.host, insecure=True)
    resp = oras.push(target=ref, files=sorted(files), quiet=True)
    assert resp.status_code == 201, resp.text
    oras_digest = resp.headers["Docker-Content-Digest"]

    client = ociart.Client(plain_http=True)
    info = client.inspect(ref)
    assert info.descriptor.digest == oras_digest
    assert sorted(layer["annotations"][ANNOTATION_TITLE] for layer in info.manifest["layers"]) == sorted(files)

    out = tmp_path / "out"
    result = client.pull(ref, out)
    assert result.digest == oras_digest
    assert sorted(f.path for f in result.files) == sorted(files)
    assert read_tree(out) == files


# -- skopeo reads the embedded store ----------------------------------------------------------------
def test_skopeo_reads_embedded_store(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                     policy: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src, f"embedded-{unique_repo}")
    digest = ociart.Client().push(f"{unique_repo}:v2", [src]).digest  # no host: the embedded layout

    store = Path(os.environ["OCIART_HOME"]) / "store"
    assert (store / "oci-layout").is_file()
    raw = subprocess.run([SKOPEO, "--policy", str(policy), "inspect", "--raw", f"oci:{store}:{unique_repo}:v2"],
                         capture_output=True, timeout=60)
    assert raw.returncode == 0, raw.stderr.decode()
    assert sha256(raw.stdout) == digest
    assert json.loads(raw.stdout)["layers"][0]["annotations"][ANNOTATION_TITLE] in files

    dest = f"{registry.host}/{unique_repo}/from-store:v2"
    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{store}:{unique_repo}:v2",
           f"docker://{dest}", policy=policy)
    client = ociart.Client(plain_http=True)
    assert client.resolve(dest).digest == digest
    out = tmp_path / "out"
    client.pull(dest, out)
    assert read_tree(out) == files
