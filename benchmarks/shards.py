#!/usr/bin/env python3
"""Many blobs and big blobs: a sharded model pushed and pulled by ociart, oras-py and skopeo; ociart's peak RSS.

    python benchmarks/shards.py [--shards 8] [--shard-mib 128] [--rounds 3] [--only NAME,...] [--json]
    python benchmarks/shards.py --shards 1 --shard-mib 4096 --rounds 1 --only "ociart push,ociart pull,ociart copy"

Against a local CNCF distribution 2.8.2 (``docker-registry``, through ``benchmarks/transfer.py``'s ``Registry``), a
second one as the destination of ``ociart copy``. The model is ``--shards`` files
``model-0000i-of-0000N.safetensors`` of ``--shard-mib`` MiB of random bytes and a ``config.json``. Every contender
runs as its own process under GNU ``time -v`` (wall time of the whole process, start-up included, and peak RSS),
with the default concurrency of each tool, interleaved (the order rotates per round), each push to its own
repository:

* ``ociart push``: ``ociart push --plain-http REF DIR --kind model`` (fresh ``OCIART_HOME``: no digest cache);
* ``oras-py push``: ``OrasClient(hostname, insecure=True).push(target=REF, files=[every file])``;
* ``skopeo push``: ``skopeo copy oci:LAYOUT:v1 docker://REF`` from an OCI layout of the same artifact (written by
  ``ociart copy``, untimed);
* ``ociart pull``: ``ociart pull --plain-http REF -o OUT`` (every blob digest-verified);
* ``oras-py pull``: ``OrasClient(...).pull(target=REF, outdir=OUT)`` (no digest check);
* ``skopeo pull``: ``skopeo copy docker://REF oci:OUT:v1`` (digest-verified, Go);
* ``ociart copy``: ``ociart copy --plain-http REF REF2`` to the second registry (streamed blob by blob).

Pulled trees are checked (sha256 of every shard, untimed) and deleted. MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, load_transfer, log, sha256_hex

ALL = ["ociart push", "oras-py push", "skopeo push", "ociart pull", "oras-py pull", "skopeo pull", "ociart copy"]
GNU_TIME = "/usr/bin/time"
ORAS_PUSH = """
import sys, oras.client
oc = oras.client.OrasClient(hostname=sys.argv[1], insecure=True)
oc.push(target=sys.argv[2], files=sys.argv[3:], quiet=True)
"""
ORAS_PULL = """
import sys, oras.client
oc = oras.client.OrasClient(hostname=sys.argv[1], insecure=True)
oc.pull(target=sys.argv[2], outdir=sys.argv[3])
"""


def _run(cmd: list[str], env: dict[str, str], work: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS kB) of ``cmd`` under GNU time, after an ``os.sync()``."""
    import time

    rss = work / "rss.txt"
    os.sync()
    t0 = time.perf_counter()
    proc = subprocess.run([GNU_TIME, "-v", "-o", str(rss), *cmd], env=env, cwd=work, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    for line in rss.read_text().splitlines():
        if "Maximum resident set size" in line:
            return wall, int(line.rsplit(":", 1)[1])
    raise RuntimeError("no peak RSS in GNU time's output")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--shard-mib", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default=",".join(ALL))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--tmpdir", type=Path, default=None)
    args = ap.parse_args()
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(only) - set(ALL)
    if unknown:
        ap.error(f"unknown contenders {sorted(unknown)}; known: {ALL}")
    if not os.access(GNU_TIME, os.X_OK):
        ap.error(f"{GNU_TIME} (GNU time) is needed for peak RSS: apt-get install time")
    transfer = load_transfer()
    work = Path(tempfile.mkdtemp(prefix="ociart-bench-shards-", dir=args.tmpdir))
    reg = transfer.Registry(work / "registry")
    reg2 = transfer.Registry(work / "registry2") if "ociart copy" in only else None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    for var in ("OCIART_MAX_STREAMS", "OCIART_CHUNK_SIZE", "OCIART_UPLOAD_CHUNK_SIZE", "OCIART_CONCURRENCY"):
        env.pop(var, None)
    py = sys.executable
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in only}
    try:
        src = work / "model"
        src.mkdir()
        names = [f"model-{i + 1:05d}-of-{args.shards:05d}.safetensors" for i in range(args.shards)]
        expected: dict[str, str] = {}
        for name in names:
            h = hashlib.sha256()
            with open(src / name, "wb") as f:
                for _ in range(args.shard_mib):
                    block = os.urandom(1 << 20)
                    h.update(block)
                    f.write(block)
            expected[name] = h.hexdigest()
        (src / "config.json").write_text(json.dumps({"architectures": ["BenchForCausalLM"]}))
        files = [str(src / n) for n in names] + [str(src / "config.json")]
        source = f"{reg.host}/bench/source:v1"
        home = work / "home"
        subprocess.run([py, "-m", "ociart", "push", "--plain-http", "-q", source, str(src), "--kind", "model"],
                       env={**env, "OCIART_HOME": str(home / "setup")}, check=True, capture_output=True)
        layout = work / "layout"
        if "skopeo push" in only:
            subprocess.run([py, "-m", "ociart", "copy", "--plain-http", "-q", "--no-referrers", source,
                            f"oci:{layout}:v1"], env={**env, "OCIART_HOME": str(home / "setup")}, check=True,
                           capture_output=True)
        oras_source = f"{reg.host}/bench/oras-source:v1"
        if "oras-py pull" in only:  # oras-py pulls what oras-py pushed (file names as annotations)
            subprocess.run([py, "-c", ORAS_PUSH, reg.host, oras_source, *files], env=env, cwd=src, check=True,
                           capture_output=True)
        log(f"registry {reg.url}; {args.shards} x {args.shard_mib} MiB; contenders {only}")

        def check(out: Path, name: str) -> None:
            for n, digest in expected.items():
                hits = list(out.rglob(n))
                if name == "skopeo pull":  # a layout: the shard is a blob named by its digest
                    hits = [out / "blobs" / "sha256" / digest]
                if len(hits) != 1 or sha256_hex(hits[0]) != digest:
                    raise RuntimeError(f"{name}: {n} missing or wrong in {out}")

        for rnd in range(args.rounds):
            order = only[rnd % len(only):] + only[:rnd % len(only)]
            for name in order:
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                repo = f"{reg.host}/bench/r{rnd}-{name.replace(' ', '-')}:v1"
                e = {**env, "OCIART_HOME": str(home / f"r{rnd}-{name.replace(' ', '-')}")}
                if name == "ociart push":
                    cmd = [py, "-m", "ociart", "push", "--plain-http", "-q", repo, str(src), "--kind", "model"]
                elif name == "oras-py push":
                    cmd = [py, "-c", ORAS_PUSH, reg.host, repo, *files]
                elif name == "skopeo push":
                    cmd = ["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{repo}"]
                elif name == "ociart pull":
                    cmd = [py, "-m", "ociart", "pull", "--plain-http", "-q", source, "-o", str(out)]
                elif name == "oras-py pull":
                    out.mkdir()
                    cmd = [py, "-c", ORAS_PULL, reg.host, oras_source, str(out)]
                elif name == "skopeo pull":
                    cmd = ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{source}", f"oci:{out}:v1"]
                else:  # ociart copy
                    assert reg2 is not None
                    cmd = [py, "-m", "ociart", "copy", "--plain-http", "-q", source,
                           f"{reg2.host}/bench/r{rnd}-copy:v1"]
                wall, rss = _run(cmd, e, work)
                if name.endswith("pull"):
                    check(out, name)
                    shutil.rmtree(out)
                results[name].append({"seconds": wall, "peak_rss_kb": rss})
                log(f"round {rnd + 1}: {name}: {wall:.2f} s, {rss / 1000:.1f} MB")
    finally:
        reg.stop()
        if reg2 is not None:
            reg2.stop()
        shutil.rmtree(work, ignore_errors=True)
    summary = {n: {"median_s": statistics.median(r["seconds"] for r in rs),
                   "per_round_s": [round(r["seconds"], 2) for r in rs],
                   "peak_rss_mb": max(r["peak_rss_kb"] for r in rs) / 1000} for n, rs in results.items()}
    if args.json:
        print(json.dumps({"shards": args.shards, "shard_mib": args.shard_mib, "rounds": args.rounds,
                          "results": summary}, indent=2))
        return 0
    print("| contender | median s | vs ociart | peak RSS MB | per round s |\n|---|---:|---:|---:|---|")
    for n, s in summary.items():
        base = summary.get("ociart " + n.split()[-1])
        ratio = f"{s['median_s'] / base['median_s']:.2f}×" if base else ""
        rounds = " / ".join(f"{x:.2f}" for x in s["per_round_s"])
        print(f"| {n} | {s['median_s']:.2f} | {ratio} | {s['peak_rss_mb']:.1f} | {rounds} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
