#!/usr/bin/env python3
"""``ociart ui`` benchmark: the first page of a 10,000-artifact embedded store, and the lineage layout of 500 nodes.

    python benchmarks/ui.py [--artifacts 10000] [--repos 100] [--nodes 500] [--rounds 5] [--json]

Targets (issue 18): first page < 1 s; a 500-node graph laid out in < 2 s.

* **Store.** An embedded store (``$OCIART_HOME/store``, a fresh temp ``OCIART_HOME``) with ``--artifacts`` tagged
  artifacts in ``--repos`` repositories, half of them ociart datasets, each a manifest with an empty config and one
  small layer. It is written as an OCI image layout directly (blobs, then one ``index.json``): pushing 10,000
  artifacts one by one would take long and measure pushes, not the page. Every row shown is then checked against
  ``Client.inspect`` of its digest (kind, digest), and the count against the entries of ``index.json``.
* **Page.** ``GET /artifacts`` (the HTML page: 50 rows with kind, size, created and signature status) through
  Starlette's TestClient in this process, timed ``--rounds`` times: *cold* is a new app each round (no cache; the
  ``index.json`` parse and the 50 manifests read), *warm* the same app again (``index.json`` unchanged: the cached
  entries, the page's descriptions cached by digest). ``kind=dataset`` on a cold app reads every manifest once
  (the kind is in the manifest), reported separately.
* **Layout.** A synthetic lineage graph shaped like real ones: datasets -> preprocessors -> models (some with a base
  model) -> reports, ``--nodes`` nodes, laid out by :func:`ociart.ui.layout.layout` (grandalf Sugiyama) ``--rounds``
  times; checked: every node placed, no two boxes overlapping, every edge routed from its input's right side to its
  consumer's left side.

The machine's load average is printed with the figures: timings taken while other work runs are not figures to
quote (``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def write_store(root: Path, n: int, repos: int) -> list[dict[str, Any]]:
    """An OCI image layout named as the embedded store names entries (``<repo>:<tag>``)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def blob(data: bytes) -> tuple[str, int]:
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / hexd).write_bytes(data)
        return "sha256:" + hexd, len(data)

    config, csize = blob(b"{}")
    entries = []
    for i in range(n):
        layer, lsize = blob(f"file {i}\n".encode())
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "artifactType": ("application/vnd.ociart.dataset.manifest.v1+json" if i % 2 else
                                     "application/vnd.example.thing"),
                    "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": csize},
                    "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": lsize,
                                "annotations": {"org.opencontainers.image.title": f"f{i}.txt"}}],
                    "annotations": {"org.opencontainers.image.created": "2026-11-01T00:00:00Z", "n": str(i)}}
        data = json.dumps(manifest, separators=(",", ":")).encode()
        digest, size = blob(data)
        entries.append({"mediaType": manifest["mediaType"], "digest": digest, "size": size,
                        "annotations": {"org.opencontainers.image.ref.name": f"bench/r{i % repos:03d}:v{i}"}})
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2,
                                                 "mediaType": "application/vnd.oci.image.index.v1+json",
                                                 "manifests": entries}))
    return entries


def bench_page(n: int, repos: int, rounds: int) -> dict[str, Any]:
    from starlette.testclient import TestClient

    import ociart
    from ociart.reference import embedded_store_path
    from ociart.ui.app import create_app
    from ociart.ui.service import View

    store = embedded_store_path()
    t0 = time.perf_counter()
    entries = write_store(store, n, repos)
    log(f"wrote {n} artifacts in {repos} repositories in {time.perf_counter() - t0:.1f} s")

    def fresh() -> TestClient:
        return TestClient(create_app(View([]), allowed_hosts=["testserver"]))

    # correctness: the count, and every row of the first page against inspect
    api = fresh()
    page = api.get("/api/artifacts").json()
    assert page["total"] == len(entries), (page["total"], len(entries))
    assert len(page["items"]) == 50
    with ociart.Client() as c:
        for row in page["items"]:
            i = c.inspect(f"{row['repository']}@{row['digest']}")
            assert (i.descriptor.digest, i.kind) == (row["digest"], row["kind"]), row
            assert row["signature"] == "unsigned"
    assert api.get("/artifacts").text.count('class="artifact"') == 50

    cold, warm = [], []
    for _ in range(rounds):
        client = fresh()
        t = time.perf_counter()
        r = client.get("/artifacts")
        cold.append(time.perf_counter() - t)
        assert r.status_code == 200
        t = time.perf_counter()
        client.get("/artifacts")
        warm.append(time.perf_counter() - t)
    client = fresh()
    t = time.perf_counter()
    by_kind = client.get("/api/artifacts", params={"kind": "dataset"}).json()
    kind_cold = time.perf_counter() - t
    assert by_kind["total"] == n // 2, by_kind["total"]
    return {"artifacts": n, "repositories": repos, "first_page_cold_s": statistics.median(cold),
            "first_page_warm_s": statistics.median(warm), "kind_filter_cold_s": kind_cold,
            "cold_rounds": cold, "warm_rounds": warm}


def synthetic_graph(n: int, seed: int = 1) -> Any:
    from ociart.ui.service import GraphEdge, GraphNode, LineageGraph

    rng = random.Random(seed)
    sizes = {"dataset": n // 10, "preprocessor": n // 5, "model": 2 * n // 5}
    sizes["report"] = n - sum(sizes.values())
    ids: dict[str, list[str]] = {}
    nodes, edges = [], []
    for kind, count in sizes.items():
        ids[kind] = []
        for _ in range(count):
            nid = f"n{len(nodes)}"
            nodes.append(GraphNode(id=nid, kind=kind, name=f"{kind}-{len(ids[kind])}",
                                   digest="sha256:" + hashlib.sha256(nid.encode()).hexdigest()))
            ids[kind].append(nid)
    for p in ids["preprocessor"]:
        edges.append(GraphEdge(source=rng.choice(ids["dataset"]), target=p))
    for i, m in enumerate(ids["model"]):
        edges.append(GraphEdge(source=rng.choice(ids["preprocessor"]), target=m))
        edges.append(GraphEdge(source=rng.choice(ids["dataset"]), target=m))
        if i and rng.random() < 0.3:  # fine-tuned from an earlier model
            edges.append(GraphEdge(source=ids["model"][rng.randrange(i)], target=m))
    for r in ids["report"]:
        edges.append(GraphEdge(source=rng.choice(ids["model"]), target=r))
    unique = {(e.source, e.target): e for e in edges}
    return LineageGraph(root=nodes[0].id, nodes=nodes, edges=list(unique.values()))


def bench_layout(n: int, rounds: int) -> dict[str, Any]:
    from ociart.ui.layout import NODE_H, NODE_W, layout

    graph = synthetic_graph(n)
    times = []
    drawing = None
    for _ in range(rounds):
        t = time.perf_counter()
        drawing = layout(graph)
        times.append(time.perf_counter() - t)
    assert drawing is not None
    assert len(drawing.nodes) == len(graph.nodes) and len(drawing.edges) == len(graph.edges)
    boxes = sorted((p.x, p.y) for p in drawing.nodes)
    cols: dict[float, list[float]] = {}
    for x, y in boxes:
        cols.setdefault(round(x, 1), []).append(y)
    for ys in cols.values():  # boxes in one layer never overlap
        ys.sort()
        assert all(b - a >= NODE_H for a, b in pairwise(ys)), "overlapping boxes"
    xs = sorted(cols)
    assert all(b - a >= NODE_W for a, b in pairwise(xs)), "overlapping layers"
    return {"nodes": len(graph.nodes), "edges": len(graph.edges), "layers": len(cols),
            "layout_s": statistics.median(times), "rounds": times}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=int, default=10_000)
    ap.add_argument("--repos", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ociart-ui-bench-") as home:
        os.environ["OCIART_HOME"] = home
        os.environ.pop("OCIART_REGISTRY", None)
        load = os.getloadavg()
        page = bench_page(args.artifacts, args.repos, args.rounds)
        graph = bench_layout(args.nodes, args.rounds)
        out = {"load_average": load, "page": page, "layout": graph}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 CPUs)")
        print(f"first page of {page['artifacts']} artifacts ({page['repositories']} repositories): "
              f"cold {page['first_page_cold_s']:.3f} s, warm {page['first_page_warm_s']:.3f} s "
              f"(target < 1 s); kind filter, cold: {page['kind_filter_cold_s']:.2f} s")
        print(f"layout of {graph['nodes']} nodes, {graph['edges']} edges, {graph['layers']} layers: "
              f"{graph['layout_s']:.3f} s (target < 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
