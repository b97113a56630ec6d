"""Mirrors (``--mirror``, :mod:`ociart.targets.mirror`): a second distribution 2.8.2 started as a pull-through cache
(``proxy.remoteurl``) in front of the test registry. The origin sits behind the fault proxy, so its byte counts show
what did not come through the mirror: blobs come through the mirror (tags and signatures from the origin); a mirror
serving a corrupted blob is refused and the origin used, with a warning event; a mirror that is down costs one
connection error, not the fetch."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_cli, write_random
from support.faultproxy import FaultProxy
from support.registry import RunningRegistry, free_port, start_registry

import ociart

MiB = 1 << 20
PASSWORD = "mirror-test"


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def mirror(registry: RunningRegistry, tmp_path: Path) -> Iterator[RunningRegistry]:
    running = start_registry(tmp_path / "mirror", proxy_remoteurl=registry.url, delete=False)
    yield running
    running.stop()


def test_fetch_through_pull_through_mirror(registry: RunningRegistry, mirror: RunningRegistry, unique_repo: str,
                                           tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_random(src / "weights.bin", 3 * MiB, seed=7)
    (src / "config.json").write_text("{}")
    ociart.generate_key_pair(tmp_path / "k", password=PASSWORD)
    with ociart.Client(plain_http=True) as c:
        d = c.push(f"{registry.host}/{unique_repo}:v1", [src], kind="model")
    blob = _sha(src / "weights.bin")
    env = {"COSIGN_PASSWORD": PASSWORD}
    assert run_cli("sign", "--plain-http", d.ref, "--key", str(tmp_path / "k.key"), env=env).returncode == 0

    with FaultProxy(registry.url) as origin:
        ref = f"{origin.host}/{unique_repo}:v1"
        base = ["fetch", "--plain-http", ref, "--verify-key", str(tmp_path / "k.pub"), "--log-format", "json"]

        r = run_cli(*base, "-o", str(tmp_path / "a"), "--mirror", mirror.host, env=env)
        assert r.returncode == 0, r.stderr
        assert _sha(tmp_path / "a" / "weights.bin") == blob
        assert origin.sent(blob) == 0 and origin.find("GET", blob) == []  # the blob came through the mirror
        assert origin.find(None, "/manifests/v1")  # the tag was resolved at the origin
        assert mirror.blob_data_path(blob).exists()  # the mirror holds it now (pull-through)

        # a mirror that serves wrong bytes: refused, the origin serves the blob, a warning event says so
        data = mirror.blob_data_path(blob)
        raw = data.read_bytes()
        data.write_bytes(bytes(b ^ 0x33 for b in raw[:4096]) + raw[4096:])
        origin.reset_counts()
        r = run_cli(*base, "-o", str(tmp_path / "b"), "--mirror", mirror.host, env=env)
        assert r.returncode == 0, r.stderr
        assert _sha(tmp_path / "b" / "weights.bin") == blob
        assert origin.sent(blob) == 3 * MiB
        events = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
        warnings = [e for e in events if e["event"] == "warning"]
        assert any(e["mirror"] == mirror.host and blob in e["what"] and "mismatch" in e["error"] for e in warnings)

        # a mirror that is down (first in order) costs one connection error; OCIART_MIRROR lists both
        down = f"127.0.0.1:{free_port()}"
        data.write_bytes(raw)
        origin.reset_counts()
        r = run_cli(*base, "-o", str(tmp_path / "c"), env={**env, "OCIART_MIRROR": f"{down},{mirror.host}"})
        assert r.returncode == 0, r.stderr
        assert _sha(tmp_path / "c" / "weights.bin") == blob and origin.sent(blob) == 0
        events = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
        assert len([e for e in events if e["event"] == "warning" and e["mirror"] == down]) == 1


def test_pull_with_mirror_library(registry: RunningRegistry, mirror: RunningRegistry, unique_repo: str,
                                  tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_random(src / "data.bin", MiB, seed=9)
    with ociart.Client(plain_http=True) as c:
        c.push(f"{registry.host}/{unique_repo}:v1", [src])
    with FaultProxy(registry.url) as origin, ociart.Client(plain_http=True, mirrors=[mirror.host]) as c:
        result = c.pull(f"{origin.host}/{unique_repo}:v1", tmp_path / "out")
        assert origin.sent(_sha(src / "data.bin")) == 0
    assert _sha(tmp_path / "out" / "data.bin") == _sha(src / "data.bin") and result.files
