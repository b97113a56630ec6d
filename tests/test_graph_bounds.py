"""Unbounded graphs from a hostile or just large source (issue 17): ``copy`` of a 1,500-deep referrer chain, of
many referrers into a registry without the referrers API, and ``lineage --downstream`` over many tags.

Sources are an in-memory OCI 1.1 registry (``support/ocifake.py``) filled directly, and real distribution 2.8.2
registries; request counts are taken at the fake's log or a fault proxy (never timings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli
from support.faultproxy import FaultProxy
from support.ocifake import OciFake, Repo, StoredManifest

import ociart
from ociart import limits
from ociart.errors import UsageError
from ociart.lineage.record import A_INPUTS
from ociart.oci import EMPTY_JSON, EMPTY_JSON_DIGEST, OCI_EMPTY, Content, Manifest
from ociart.limits import GRAPH_DEPTH as MAX_GRAPH_DEPTH

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SIG_TYPE = "application/vnd.example.signature"


def _manifest(subject: dict[str, Any] | None, note: str, annotations: dict[str, str] | None = None) -> bytes:
    empty = {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": len(EMPTY_JSON)}
    obj: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SIG_TYPE,
                           "config": empty, "layers": [empty],
                           "annotations": {"note": note, **(annotations or {})}}
    if subject is not None:
        obj["subject"] = subject
    return json.dumps(obj, separators=(",", ":")).encode()


def _store(repo: Repo, data: bytes) -> dict[str, Any]:
    content = Content.of(data, OCI_MANIFEST)
    repo.manifests[content.digest] = StoredManifest(data, OCI_MANIFEST, json.loads(data))
    return {"mediaType": OCI_MANIFEST, "digest": content.digest, "size": content.size}


def fill(fake: OciFake, name: str, *, chain: int = 0, fan: int = 0) -> dict[str, Any]:
    """``name:v1`` plus either a chain of ``chain`` referrers (each refers to the one before) or ``fan``
    referrers of the root; returns the root descriptor."""
    repo = fake.repos.setdefault(name, Repo())
    repo.blobs[EMPTY_JSON_DIGEST] = EMPTY_JSON
    root = _store(repo, _manifest(None, "root"))
    repo.tags["v1"] = root["digest"]
    subject = root
    for i in range(chain):
        subject = _store(repo, _manifest(subject, f"link {i}"))
    for i in range(fan):
        _store(repo, _manifest(root, f"signature {i}"))
    return root


def test_deep_referrer_chain_is_refused_with_one_line_and_nothing_copied(fake_registry: OciFake,
                                                                         tmp_path: Path) -> None:
    fill(fake_registry, "deep/chain", chain=1500)
    dst = tmp_path / "layout"
    proc = run_cli("copy", "--plain-http", f"{fake_registry.host}/deep/chain:v1", f"oci:{dst}:copied")
    assert "Traceback" not in proc.stderr and "RecursionError" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 5, proc.stderr
    assert proc.stderr.count("\n") == 1 and f"deeper than {MAX_GRAPH_DEPTH} levels" in proc.stderr
    assert "--no-referrers" in proc.stderr
    # discovered first, refused before anything was written
    assert not (dst / "index.json").exists() or json.loads((dst / "index.json").read_text())["manifests"] == []
    assert len(fake_registry.requests("GET", "/referrers/")) == MAX_GRAPH_DEPTH + 1
    # without referrers the artifact itself copies
    proc = run_cli("copy", "--plain-http", "--no-referrers", f"{fake_registry.host}/deep/chain:v1",
                   f"oci:{dst}:copied")
    assert proc.returncode == 0, proc.stderr


def test_many_referrers_update_the_fallback_index_once(fake_registry: OciFake, registry, unique_repo: str) -> None:
    n = 120
    root = fill(fake_registry, "many/sigs", fan=n)
    with FaultProxy(registry.url) as proxy:  # distribution 2.8.2: no referrers API, the sha256-<hex> index
        dst = f"{proxy.host}/{unique_repo}:v1"
        proc = run_cli("copy", "--plain-http", f"{fake_registry.host}/many/sigs:v1", dst)
        assert proc.returncode == 0, proc.stderr
        index_tag = "sha256-" + root["digest"].removeprefix("sha256:")
        puts = proxy.find("PUT", f"/manifests/{index_tag}")
        assert len(puts) == 1, len(puts)  # once per copy, not once per referrer
    with ociart.Client(plain_http=True) as c:
        found = c.referrers(f"{registry.host}/{unique_repo}:v1")
    assert len(found) == n and {d.artifactType for d in found} == {SIG_TYPE}


def test_lineage_downstream_fetches_each_manifest_once(registry, unique_repo: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    n = 12
    repo = f"{registry.host}/{unique_repo}"
    with ociart.Client(plain_http=True) as c:
        target = c.target(c.ref(repo))
        target.push_blob_stream(unique_repo, Content.of(EMPTY_JSON, OCI_EMPTY).descriptor(),
                                lambda: _once(EMPTY_JSON))
        prev: str | None = None
        digests = []
        for i in range(n):  # a chain: each artifact records the one before as its input
            ann = {A_INPUTS: json.dumps([{"name": "base", "ref": f"{repo}:a{i - 1}", "digest": prev}])} if prev else {}
            content = Content.of(_manifest(None, f"artifact {i}", ann), OCI_MANIFEST)
            target.put_manifest(unique_repo, content, f"a{i}")
            prev = content.digest
            digests.append(content.digest)
    with FaultProxy(registry.url) as proxy:
        via = f"{proxy.host}/{unique_repo}"
        with ociart.Client(plain_http=True) as c:
            tree = c.lineage(f"{via}:a0", downstream=[via], depth=n + 5)
        gets = len(proxy.find("GET", "/manifests/"))
        heads = len(proxy.find("HEAD", "/manifests/"))
    chain = []
    node: Any = tree
    while node is not None:
        chain.append(node.digest)
        node = node.children[0] if node.children else None
    assert chain == digests
    assert gets + heads <= 2 * n + 4, (gets, heads)  # every tag once per query, not once per node (n * n)
    # and a bound on the size of the answer, with a clear error
    monkeypatch.setattr(limits, "LINEAGE_NODES", 5)
    with ociart.Client(plain_http=True) as c, pytest.raises(UsageError, match="more than 5 nodes"):
        c.lineage(f"{repo}:a0", downstream=[repo], depth=n + 5)


def _once(data: bytes) -> Any:
    from contextlib import nullcontext

    return nullcontext(iter([data]))


def test_manifest_model_roundtrip_of_fake_graph(fake_registry: OciFake) -> None:
    """The hand-written manifests above are valid OCI manifests for ociart's own model (a guard for the fixtures)."""
    root = fill(fake_registry, "check/model", chain=1)
    data = fake_registry.repos["check/model"].manifests[root["digest"]].data
    assert isinstance(Content.of(data, OCI_MANIFEST).parse(), Manifest)
