#!/usr/bin/env python3
"""Deploy-time fetch benchmark: what verification and the marker add to a pull, and what a warm node cache costs.

    python benchmarks/fetch.py [--size-mib 1024] [--rounds 3] [--json] [--keep] [--tmpdir DIR]

Against a local CNCF distribution 2.8.2 (``docker-registry``, through ``benchmarks/transfer.py``'s ``Registry``). The
model is ``model.safetensors`` (``--size-mib`` MiB of random bytes) + ``config.json``, pushed with ``kind="model"``
and signed with a fresh key (untimed). Every contender runs as its own CLI subprocess, as an init container would,
interleaved (the order rotates per round), each into a fresh output directory (deleted, untimed, after its output
was checked against the source):

* ``pull``: ``ociart pull --plain-http REF@DIGEST -o OUT`` — the baseline;
* ``fetch``: ``ociart fetch --plain-http REF@DIGEST -o OUT --verify-key PUB`` — verification, download store,
  marker; the claim to check is overhead ≤ 5 % over ``pull``;
* ``fetch warm cache``: ``ociart fetch … --cache CACHE`` into a fresh OUT with every blob already in CACHE (filled
  once, untimed): no blob crosses the network; the copy (or reflink) from the cache is the work;
* ``cp -r``: ``cp -r SRC OUT`` of the same tree — the floor for the warm-cache fetch.

Reports the median wall time per contender and the ratios fetch/pull and warm-cache/cp. Timing figures are only
meaningful on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, load_transfer, log, sha256_hex

PASSWORD = "bench"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--tmpdir", type=Path, default=None)
    args = ap.parse_args()
    transfer = load_transfer()
    work = Path(tempfile.mkdtemp(prefix="ociart-bench-fetch-", dir=args.tmpdir))
    registry = transfer.Registry(work / "registry")
    env = {**os.environ, "COSIGN_PASSWORD": PASSWORD, "OCIART_HOME": str(work / "home"),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        import ociart

        src = work / "src"
        src.mkdir()
        with open(src / "model.safetensors", "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        (src / "config.json").write_text(json.dumps({"hidden_size": 256}))
        expected = {p.name: sha256_hex(p) for p in src.iterdir()}
        key, pub = ociart.generate_key_pair(work / "k", password=PASSWORD)
        with ociart.Client(plain_http=True) as c:
            d = c.push(f"{registry.host}/bench/model:v1", [src], kind="model")
            os.environ["COSIGN_PASSWORD"] = PASSWORD
            c.sign(d.ref, str(key))
        ref = f"{registry.host}/bench/model@{d.digest}"
        cache = work / "cache"
        cli = [sys.executable, "-m", "ociart"]
        contenders: dict[str, list[str]] = {
            "pull": [*cli, "pull", "--plain-http", "-q", ref, "-o"],
            "fetch": [*cli, "fetch", "--plain-http", "-q", ref, "--verify-key", str(pub), "-o"],
            "fetch warm cache": [*cli, "fetch", "--plain-http", "-q", ref, "--verify-key", str(pub), "--cache",
                                 str(cache), "-o"],
            "cp -r": ["cp", "-r", str(src)],
        }
        fill = subprocess.run([*contenders["fetch warm cache"], str(work / "fill")], env=env, capture_output=True,
                              text=True, check=False)
        if fill.returncode != 0:
            raise SystemExit(f"filling the cache failed: {fill.stderr}")
        shutil.rmtree(work / "fill")
        times: dict[str, list[float]] = {k: [] for k in contenders}
        names = list(contenders)
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[: rnd % len(names)]
            for name in order:
                out = work / f"out-{rnd}-{name.replace(' ', '-')}"
                os.sync()
                t0 = time.perf_counter()
                r = subprocess.run([*contenders[name], str(out)], env=env, capture_output=True, text=True,
                                   check=False)
                elapsed = time.perf_counter() - t0
                if r.returncode != 0:
                    raise SystemExit(f"{name} failed: {r.stderr}")
                got = {n: sha256_hex(out / n) for n in expected}
                if got != expected:
                    raise SystemExit(f"{name}: output differs from the source")
                times[name].append(elapsed)
                log(f"round {rnd + 1}: {name}: {elapsed:.2f} s")
                shutil.rmtree(out)
        med = {k: statistics.median(v) for k, v in times.items()}
        result: dict[str, Any] = {
            "size_mib": args.size_mib, "rounds": args.rounds, "median_seconds": med,
            "fetch_over_pull": med["fetch"] / med["pull"] - 1,
            "warm_cache_over_cp": med["fetch warm cache"] / med["cp -r"],
        }
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            for k, v in med.items():
                print(f"{k:18} {v:8.2f} s")
            print(f"fetch vs pull: {result['fetch_over_pull']:+.1%} (claim: <= +5 %)")
            print(f"warm-cache fetch vs cp -r: {result['warm_cache_over_cp']:.2f}x")
        return 0
    finally:
        registry.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
