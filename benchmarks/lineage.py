#!/usr/bin/env python3
"""Lineage benchmark: what capturing lineage costs a push (the issue: "capture must not slow a push noticeably").

    python benchmarks/lineage.py [--rounds 7] [--model-kib 4096] [--json]

Pushes a small model directory (``model.safetensors`` of ``--model-kib`` KiB random bytes, ``config.json``,
``tokenizer.json``, ``README.md``) with ``Client.push(ref, [dir], kind="model")`` four ways, each round in this
order rotated by one per round (interleaved):

* ``embedded, lineage``     the embedded store (``$OCIART_HOME/store``), lineage on (the default)
* ``embedded, no lineage``  the same with ``lineage=False``
* ``registry, lineage``     a local CNCF distribution 2.8.2 (``docker-registry``, started by this script through
  ``benchmarks/transfer.py``'s starter on a free loopback port, storage in a temp dir), lineage on
* ``registry, no lineage``  the same with ``lineage=False``

"Lineage on" is what every push does by default: git state of the repository containing the working directory (the
runs use this checkout of ociart as their working directory, so there is a commit, branch, remote and dirty flag to
record), a generated run id, the environment (Python, platform, every installed distribution sorted and hashed),
the summary annotations, and the in-toto/SLSA statement attached as a referrer (on distribution 2.8.2: a referrers
API probe, two blobs, the statement manifest and the ``sha256-<hex>`` fallback index, read back).

Every push is its own Python process (``lineage.py _run SPEC``) with a fresh ``OCIART_HOME``, to its own
repository, of a freshly written directory (new random bytes, untimed), so that each one uploads the same bytes and
pays the per-process costs a CLI push pays (the environment scan is cached per process only). ``seconds`` is the
library call inside that process: client creation + push + close, imports done before the clock starts;
``process s`` is the whole process. A breakdown of the capture (git, environment scan, cached scan) is measured
once more in a separate process. Everything is deleted at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import load_transfer, log, repo_cwd, write_model

HERE = Path(__file__).resolve()

CONTENDERS = [("embedded", True), ("embedded", False), ("registry", True), ("registry", False)]


def _name(store: str, lineage: bool) -> str:
    return f"{store}, {'lineage' if lineage else 'no lineage'}"


# ------------------------------------------------------------------------------------------------ runner mode
def _runner(spec_path: str) -> int:
    """One timed push: ``spec`` = {ref, dir, lineage, result}."""
    spec = json.loads(Path(spec_path).read_text())
    import ociart
    import ociart.client  # imports outside the timed region (the lineage modules are imported by push itself)
    import ociart.packaging.pack
    import ociart.targets.layout
    import ociart.targets.registry

    t0 = time.perf_counter()
    client = ociart.Client(plain_http=True)
    try:
        desc = client.push(spec["ref"], [spec["dir"]], kind="model", lineage=spec["lineage"])
    finally:
        client.close()
    seconds = time.perf_counter() - t0
    with ociart.Client(plain_http=True) as c:  # untimed: what was written
        referrers = [d.artifactType for d in c.referrers(f"{spec['ref']}@{desc.digest}")]
        annotations = json.loads(c.manifest(f"{spec['ref']}@{desc.digest}")[1].data).get("annotations", {})
    Path(spec["result"]).write_text(json.dumps({"seconds": seconds, "digest": desc.digest, "referrers": referrers,
                                                "lineage_annotations": sorted(k for k in annotations if k in (
                                                    "org.opencontainers.image.revision",
                                                    "org.opencontainers.image.source",
                                                    "dev.ociart.git.branch", "dev.ociart.git.dirty"))}))
    return 0


def _breakdown_runner(result: str) -> int:
    """The parts of capture, timed once in a fresh process."""
    from ociart.lineage import capture

    out: dict[str, float | int] = {}
    t0 = time.perf_counter()
    info = capture.git_info(Path.cwd())
    out["git_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    env = capture.environment()
    out["environment_cold_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    capture.environment()
    out["environment_cached_s"] = time.perf_counter() - t0
    out["packages"] = len(env["packages"])
    out["git_found"] = int(info is not None)
    Path(result).write_text(json.dumps(out))
    return 0


# ------------------------------------------------------------------------------------------------ driver
def run(args: argparse.Namespace) -> dict[str, Any]:
    tx = load_transfer()
    work = Path(tempfile.mkdtemp(prefix="ociart-bench-lineage-", dir=args.tmpdir))
    registry = None
    try:
        registry = tx.Registry(work / "registry")
        cwd = repo_cwd()
        env_base = {k: v for k, v in os.environ.items()
                    if not k.startswith(("OCIART_", "MLFLOW_", "WANDB_")) and k not in ("SOURCE_DATE_EPOCH",)}
        results: dict[str, list[dict[str, Any]]] = {_name(*c): [] for c in CONTENDERS}
        for rnd in range(args.rounds):
            order = CONTENDERS[rnd % len(CONTENDERS):] + CONTENDERS[:rnd % len(CONTENDERS)]
            for store, lineage in order:
                name = _name(store, lineage)
                run_dir = work / f"r{rnd}-{store}-{int(lineage)}"
                write_model(run_dir / "model", args.model_kib)
                repo = f"bench/r{rnd}-{'lin' if lineage else 'nolin'}"
                ref = f"{registry.host}/{repo}:v1" if store == "registry" else f"{repo}:v1"
                spec = {"ref": ref, "dir": str(run_dir / "model"), "lineage": lineage,
                        "result": str(run_dir / "result.json")}
                (run_dir / "spec.json").write_text(json.dumps(spec))
                env = {**env_base, "OCIART_HOME": str(run_dir / "home")}
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, str(HERE), "_run", str(run_dir / "spec.json")], cwd=cwd,
                                      env=env, capture_output=True, text=True, check=False)
                process_s = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{proc.stderr}")
                res = json.loads((run_dir / "result.json").read_text())
                expected = ["application/vnd.in-toto+json"] if lineage else []
                if res["referrers"] != expected:
                    raise SystemExit(f"{name}: referrers {res['referrers']}, expected {expected}")
                res["process_s"] = process_s
                results[name].append(res)
                log(f"round {rnd + 1}/{args.rounds} {name:22s} {res['seconds']:.3f} s (process {process_s:.2f} s)")
                shutil.rmtree(run_dir / "model")
        bd = work / "breakdown.json"
        subprocess.run([sys.executable, str(HERE), "_breakdown", str(bd)], cwd=cwd, check=True,
                       env={**env_base, "OCIART_HOME": str(work / "bd-home")})
        breakdown = json.loads(bd.read_text())
        return {"results": results, "breakdown": breakdown, "git_annotations": results[_name("registry", True)][0][
            "lineage_annotations"], "cwd": str(cwd)}
    finally:
        if registry is not None:
            registry.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, runs in data["results"].items():
        secs = [r["seconds"] for r in runs]
        out[name] = {"median_s": statistics.median(secs), "process_median_s": statistics.median(
            r["process_s"] for r in runs), "per_round_s": secs}
    for store in ("embedded", "registry"):
        on, off = out[_name(store, True)]["median_s"], out[_name(store, False)]["median_s"]
        out[f"{store} overhead"] = {"seconds": on - off, "percent": 100 * (on - off) / off}
    return out


def render(summary: dict[str, Any], data: dict[str, Any], args: argparse.Namespace) -> str:
    lines = ["| contender | median s | process median s | per round s |", "|---|---:|---:|---|"]
    for store, lineage in CONTENDERS:
        s = summary[_name(store, lineage)]
        lines.append(f"| {_name(store, lineage)} | {s['median_s']:.3f} | {s['process_median_s']:.2f} | "
                     + " / ".join(f"{x:.3f}" for x in s["per_round_s"]) + " |")
    lines.append("")
    for store in ("embedded", "registry"):
        o = summary[f"{store} overhead"]
        lines.append(f"* {store}: lineage adds {o['seconds'] * 1000:+.0f} ms per push ({o['percent']:+.0f} %, "
                     "difference of medians)")
    b = data["breakdown"]
    lines.append(f"* capture parts (one fresh process): git {b['git_s'] * 1000:.0f} ms, environment scan "
                 f"{b['environment_cold_s'] * 1000:.0f} ms cold ({b['packages']} distributions), "
                 f"{b['environment_cached_s'] * 1e6:.0f} µs cached")
    lines.append(f"* model: {args.model_kib} KiB weights + 3 small files; {args.rounds} rounds; git annotations "
                 f"written: {', '.join(data['git_annotations']) or 'none'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_run"]:
        return _runner(argv[1])
    if argv[:1] == ["_breakdown"]:
        return _breakdown_runner(argv[1])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="rounds (at least 5)")
    ap.add_argument("--model-kib", type=int, default=4096, help="size of model.safetensors in KiB")
    ap.add_argument("--tmpdir", default=None, help="where to put the registry storage and the model dirs")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--json", action="store_true", help="print JSON on stdout")
    args = ap.parse_args(argv)
    if args.rounds < 5:
        ap.error("--rounds must be at least 5")
    data = run(args)
    summary = summarise(data)
    meta = {"when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "python": platform.python_version(),
            "cpus": os.cpu_count(), "load": os.getloadavg()}
    if args.json:
        print(json.dumps({"meta": meta, "summary": summary, "breakdown": data["breakdown"]}, indent=2))
    else:
        print(f"{meta['when']}; {meta['cpus']} CPUs; Python {meta['python']}; load {meta['load'][0]:.2f}\n")
        print(render(summary, data, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
