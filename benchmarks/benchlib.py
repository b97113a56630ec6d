"""Shared by the benchmark scripts: load ``transfer.py`` (the registry starter and measurement helpers) as a module,
log progress to stderr, write a small model directory, find this checkout."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent


def load_transfer() -> Any:
    spec = importlib.util.spec_from_file_location("ociart_bench_transfer", HERE / "transfer.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def sha256_hex(path: Path) -> str:
    """The sha256 of a file, hex (to check what a contender wrote; untimed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(1 << 22):
            h.update(data)
    return h.hexdigest()


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def write_model(root: Path, kib: int, *, small_files: bool = True) -> None:
    """``model.safetensors`` (``kib`` KiB of random bytes) + ``config.json``, and with ``small_files`` a tokenizer and
    a README; mtimes set 5 s in the past (settled files, as after training)."""
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(os.urandom(kib << 10))
    (root / "config.json").write_text(json.dumps({"hidden_size": 256, "layers": 4, "nonce": os.urandom(8).hex()}))
    if small_files:
        (root / "tokenizer.json").write_text(json.dumps({"vocab": {f"tok{i}": i for i in range(2000)}}))
        (root / "README.md").write_text("# a small model\n")
    old = time.time() - 5
    for p in root.iterdir():
        os.utime(p, (old, old))


def repo_cwd() -> Path:
    """This checkout, when it is a git repository (so that lineage's git capture has something to record)."""
    ok = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, check=False)
    return REPO_ROOT if ok.returncode == 0 else Path.cwd()
