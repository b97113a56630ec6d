#!/usr/bin/env python3
"""Retention planning benchmark: plan time and HTTP requests of ``ociart gc`` for N artifacts on distribution 2.8.2.

    python benchmarks/gc.py [--artifacts 500] [--concurrency 1,8] [--rounds 3] [--json]

Builds, untimed, on a local CNCF distribution 2.8.2 (``docker-registry``, started through ``transfer.py``'s starter on
a free loopback port, storage in a temp dir): one dataset ``data/bench:v1`` and ``--artifacts`` artifacts
``ckpt/bench:c-<i>`` (a tiny file each, generic push with lineage: the ``dev.ociart.inputs+json`` summary names the
dataset, and an in-toto provenance statement is attached as a referrer, listed in a ``sha256-<hex>`` index), with
``prod`` on one of them. Then plans (nothing is deleted) with the policy ``protectTags: [prod], keepLast: 5`` over
both repositories, ``--rounds`` times per concurrency, each plan with a fresh client (empty caches).

Reported per concurrency: the median plan time (seconds) and the HTTP requests one plan makes, by method. The request
count does not depend on load; the times do: on a shared machine they are only indicative (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from benchlib import REPO_ROOT, load_transfer, log

sys.path.insert(0, str(REPO_ROOT))


class Counting(httpx.BaseTransport):
    """Counts requests by method (thread-safe) and forwards them."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.counts[request.method] += 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def build(host: str, n: int, work: Path) -> None:
    import ociart
    from ociart.lineage.record import LineageOptions

    data = work / "data.bin"
    data.write_bytes(b"dataset\n" * 64)
    with ociart.Client() as c:
        c.push(f"{host}/data/bench:v1", [data], lineage=LineageOptions(git=False))
        opts = LineageOptions(git=False, inputs=[f"{host}/data/bench:v1"])

        def one(i: int) -> None:
            f = work / f"c-{i:04d}.bin"
            f.write_bytes(f"checkpoint {i}\n".encode() * 16)
            c.push(f"{host}/ckpt/bench:c-{i:04d}", [f], lineage=opts)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(n)))
        c.tag(f"{host}/ckpt/bench:c-{n // 2:04d}", "prod")


def plan_once(host: str, policy: Path, concurrency: int) -> tuple[float, dict[str, int], int]:
    import ociart
    from ociart.lifecycle import load_retention_policy, make_plan

    transport = Counting()
    with ociart.Client(transport=transport) as c:
        loaded = load_retention_policy(policy)
        start = time.perf_counter()
        plan = make_plan(c, loaded, [f"{host}/ckpt/bench", f"{host}/data/bench"], concurrency=concurrency)
        seconds = time.perf_counter() - start
    going = len(plan.going())
    return seconds, dict(transport.counts), going


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", type=int, default=500)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    tx = load_transfer()
    levels = [int(x) for x in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="ociart-bench-gc-") as tmp:
        work = Path(tmp)
        import os

        os.environ["OCIART_HOME"] = str(work / "home")
        registry = tx.Registry(work / "registry")
        try:
            log(f"building {args.artifacts} artifacts on {registry.host} (untimed)")
            t0 = time.perf_counter()
            build(registry.host, args.artifacts, work)
            log(f"built in {time.perf_counter() - t0:.1f} s")
            policy = work / "retention.yaml"
            policy.write_text("apiVersion: ociart.dev/v1alpha1\nkind: RetentionPolicy\nrules:\n"
                              f"  - repositories: ['{registry.host}/ckpt/*', '{registry.host}/data/*']\n"
                              "    protectTags: [prod]\n    keepLast: 5\n")
            results = {}
            for level in levels:
                times, counts, going = [], {}, 0
                for _ in range(args.rounds):
                    seconds, counts, going = plan_once(registry.host, policy, level)
                    times.append(seconds)
                results[level] = {"median_s": round(statistics.median(times), 3), "times_s": [round(t, 3) for t in times],
                                  "requests": sum(counts.values()), "by_method": counts, "planned_to_go": going}
                log(f"concurrency {level}: median {results[level]['median_s']} s, {results[level]['requests']} requests "
                    f"{counts}, {going} planned to go")
        finally:
            registry.stop()
    out = {"artifacts": args.artifacts, "rounds": args.rounds, "results": results,
           "note": "request counts are load-independent; times were measured on a shared machine unless stated"}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print("| concurrency | median plan s | requests per plan | of which GET / HEAD | planned to go |")
        print("|---:|---:|---:|---:|---:|")
        for level, r in results.items():
            print(f"| {level} | {r['median_s']} | {r['requests']} | {r['by_method'].get('GET', 0)} / "
                  f"{r['by_method'].get('HEAD', 0)} | {r['planned_to_go']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
