"""Transfer at the limit: typed pushes read each file once, tar layers stream.

Reads are counted with the kernel's per-process counter (``rchar`` in ``/proc/self/io``: bytes returned by
``read``/``pread`` on files and sockets), so the tests hold whatever the code path: a hash pre-pass, a second open
or a buffered copy would all show up as a second pass over the weights.
"""

from __future__ import annotations

import json
import os
import shutil
import tracemalloc
from pathlib import Path

import pytest
from helpers import write_random

import ociart

MiB = 1 << 20


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def _model(root: Path, weights: int, seed: int) -> Path:
    write_random(root / "model.safetensors", weights, seed=seed)
    (root / "config.json").write_text(json.dumps({"architectures": ["BenchForCausalLM"], "hidden_size": 64}))
    (root / "tokenizer.json").write_text(json.dumps({"version": "1.0"}))
    old = os.stat(root / "config.json").st_mtime - 60  # not "racy": the digest cache may remember them
    for p in root.iterdir():
        os.utime(p, (old, old))
    return root


def _push_reads(ref: str, root: Path, kind: str) -> int:
    with ociart.Client(plain_http=True) as c:
        before = _rchar()
        c.push(ref, [root], kind=kind, lineage=False)
        return _rchar() - before


@pytest.mark.parametrize("repo_state", ["new", "with-versions"])
def test_typed_model_push_reads_the_weights_once(repo_state: str, registry, unique_repo: str,
                                                 tmp_path: Path) -> None:
    size = 48 * MiB
    base = f"{registry.host}/{unique_repo}"
    if repo_state == "with-versions":  # an earlier version, from another directory: the digest cache knows nothing
        _push_reads(f"{base}:v0", _model(tmp_path / "v0", 5 * MiB, seed=1), "model")
    root = _model(tmp_path / "v1", size, seed=2)
    read = _push_reads(f"{base}:v1", root, "model")
    assert size <= read < 1.2 * size, f"{read / size:.2f} x the weights read"
    # control: the same count sees a re-push of the unchanged directory read nothing (the digest cache)
    again = _push_reads(f"{base}:v1", root, "model")
    assert again < MiB, again
    # and the pushed blob is the file
    with ociart.Client(plain_http=True) as c:
        c.pull(f"{base}:v1", tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (root / "model.safetensors").read_bytes()


def test_generic_and_typed_pushes_read_the_same(registry, unique_repo: str, tmp_path: Path) -> None:
    root = _model(tmp_path / "m", 32 * MiB, seed=3)
    typed = _push_reads(f"{registry.host}/{unique_repo}-t:v1", root, "model")
    copy = tmp_path / "g"
    shutil.copytree(root, copy)  # a new path: not in the digest cache
    generic = _push_reads(f"{registry.host}/{unique_repo}-g:v1", copy, "generic")
    assert abs(typed - generic) < 2 * MiB, (typed, generic)


def test_tar_layers_of_small_files_stream(registry, unique_repo: str, tmp_path: Path) -> None:
    """2,000 files of 16 KiB (31 MiB) in one directory become one tar layer: read once (it is over
    ``PREHASH_MAX_BYTES``), never held in memory whole."""
    root = tmp_path / "ds"
    for i in range(2000):
        d = root / "rows"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"row{i:05d}.bin").write_bytes(os.urandom(16 * 1024))
        os.utime(d / f"row{i:05d}.bin", (1_700_000_000, 1_700_000_000))
    total = 2000 * 16 * 1024
    base = f"{registry.host}/{unique_repo}"
    _push_reads(f"{base}:v0", _model(tmp_path / "other", MiB, seed=4), "model")  # the repository has versions
    tracemalloc.start()
    try:
        read = _push_reads(f"{base}:v1", root, "dataset")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total <= read < 1.2 * total, f"{read / total:.2f} x the files read"
    assert peak < 16 * MiB, f"peak traced allocation {peak / MiB:.1f} MiB for {total / MiB:.0f} MiB of tar"
