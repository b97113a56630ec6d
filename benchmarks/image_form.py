#!/usr/bin/env python3
"""Image-form benchmark: ``podman pull`` vs ``ociart pull`` of the same model image, and ``push --as-image`` vs the
artifact push of the same directory.

    python benchmarks/image_form.py [--size-mib 1024] [--rounds 3] [--json]

Starts its own ``docker-registry serve`` (``benchmarks/transfer.py``'s starter) on a free loopback port with storage
in a temp dir, writes a model directory (``--size-mib`` MiB random ``model.safetensors``, a config, a tokenizer and a
README), then per round, each contender a separate process, the order of each pair alternating per round:

* ``ociart push (artifact)``: ``ociart push REF DIR --kind model`` into a fresh repository with a fresh
  ``OCIART_HOME`` (cold digest cache: the file is hashed while it is sent);
* ``ociart push --as-image``: the same with ``--as-image`` (the tar layer is hashed while it is sent);
* ``podman pull``: of the image form, storage in a fresh temp root (``--root``/``--runroot``, ``--storage-driver
  vfs``: it copies the layers into its store and extracts them);
* ``ociart pull``: of the image form into a fresh directory (every blob digest-verified, then extracted and moved
  in place).

Every result is checked untimed: the pulled tree and ``podman image mount``'s ``models/`` are byte-identical to the
source. ``seconds`` is the process wall time; ``peak RSS`` the process's maximum resident set (``wait4``). The
registry runs on the same machine: on a loaded machine the figures say nothing; run it on a quiet one.
Everything it created is deleted at the end.
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
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO_ROOT, load_transfer, log  # noqa: E402

tx = load_transfer()

PUSH_ART, PUSH_IMG, PODMAN_PULL, OCIART_PULL = ("ociart push (artifact)", "ociart push --as-image", "podman pull",
                                                 "ociart pull (image form)")


def run_timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one process; raises with its stderr when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err.decode(errors='replace')}")
    return seconds, usage.ru_maxrss


def tree_digests(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            out[p.relative_to(root).as_posix()] = h.hexdigest()
    return out


def write_model(root: Path, size: int) -> None:
    root.mkdir(parents=True)
    tx._make_file(root / "model.safetensors", size)
    (root / "config.json").write_text(json.dumps({"hidden_size": 256, "nonce": os.urandom(8).hex()}))
    (root / "tokenizer.json").write_text(json.dumps({"vocab": {f"tok{i}": i for i in range(2000)}}))
    (root / "README.md").write_text("# a benchmark model\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the weights file (default 1024)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    podman = shutil.which("podman")
    if podman is None:
        raise SystemExit("podman is not installed (apt-get install podman)")
    work = Path(tempfile.mkdtemp(prefix="ociart-imgbench-"))
    short = Path(tempfile.mkdtemp(prefix="oib-", dir="/tmp"))  # podman: runroot under 50 characters
    registry = None
    try:
        registry = tx.Registry(work / "registry")
        src = work / "model"
        log(f"writing a {args.size_mib} MiB model ...")
        write_model(src, args.size_mib << 20)
        want = tree_digests(src)
        env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG")}
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        ociart = [sys.executable, "-m", "ociart"]
        results: dict[str, list[dict[str, Any]]] = {k: [] for k in (PUSH_ART, PUSH_IMG, PODMAN_PULL, OCIART_PULL)}
        for rnd in range(args.rounds):
            pushes = []
            for name, extra in ((PUSH_ART, []), (PUSH_IMG, ["--as-image"])):
                repo = f"bench/{'img' if extra else 'art'}{rnd}"
                home = work / f"home-{rnd}-{len(pushes)}"
                pushes.append((name, [*ociart, "push", f"{registry.host}/{repo}:v1", str(src), "--kind", "model",
                                      "--no-git", "--plain-http", "-q", *extra], {**env, "OCIART_HOME": str(home)}))
            for name, cmd, e in (pushes if rnd % 2 == 0 else pushes[::-1]):
                s, rss = run_timed(cmd, e)
                results[name].append({"seconds": s, "rss_kib": rss})
                log(f"round {rnd + 1}: {name}: {s:.2f} s, {rss // 1024} MiB")
            image = f"{registry.host}/bench/img{rnd}:v1"
            out = work / f"pulled-{rnd}"
            store = short / f"p{rnd}"
            pulls = [(PODMAN_PULL, [podman, "--root", str(store / "root"), "--runroot", str(store / "run"),
                                    "--storage-driver", "vfs", "pull", "-q", "--tls-verify=false", image]),
                     (OCIART_PULL, [*ociart, "pull", image, "-o", str(out), "--plain-http", "-q"])]
            for name, cmd in (pulls if rnd % 2 == 0 else pulls[::-1]):
                s, rss = run_timed(cmd, {**env, "OCIART_HOME": str(work / f"home-pull-{rnd}")})
                results[name].append({"seconds": s, "rss_kib": rss})
                log(f"round {rnd + 1}: {name}: {s:.2f} s, {rss // 1024} MiB")
            # untimed checks: both pulls gave the source tree, byte for byte
            if tree_digests(out) != want:
                raise SystemExit(f"round {rnd + 1}: ociart pull restored a different tree")
            base = [podman, "--root", str(store / "root"), "--runroot", str(store / "run"), "--storage-driver", "vfs"]
            mounted = subprocess.run([*base, "image", "mount", image], env=env, capture_output=True, text=True,
                                     check=True).stdout.strip()
            if tree_digests(Path(mounted) / "models") != want:
                raise SystemExit(f"round {rnd + 1}: podman's mount differs from the source")
            subprocess.run([*base, "image", "unmount", image], env=env, capture_output=True, check=True)
            shutil.rmtree(store, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
        summary = {name: {"median_s": statistics.median(r["seconds"] for r in rs),
                          "min_s": min(r["seconds"] for r in rs),
                          "peak_rss_mib": max(r["rss_kib"] for r in rs) / 1024, "rounds": len(rs)}
                   for name, rs in results.items()}
        summary["ratios"] = {
            "ociart pull / podman pull": summary[OCIART_PULL]["median_s"] / summary[PODMAN_PULL]["median_s"],
            "push --as-image / artifact push": summary[PUSH_IMG]["median_s"] / summary[PUSH_ART]["median_s"],
        }
        meta = {"size_mib": args.size_mib, "rounds": args.rounds, "cpus": os.cpu_count(),
                "ociart": tx._git_state(), "podman": tx._version([podman, "--version"]),
                "load_1min": os.getloadavg()[0]}
        if args.json:
            print(json.dumps({"meta": meta, "summary": summary}, indent=2))
        else:
            print(f"{args.size_mib} MiB model, {args.rounds} round(s), load {meta['load_1min']:.1f}, {meta['ociart']}")
            print(f"{'':28} {'median s':>9} {'min s':>7} {'peak RSS MiB':>13}")
            for name in (PUSH_ART, PUSH_IMG, PODMAN_PULL, OCIART_PULL):
                r = summary[name]
                print(f"{name:28} {r['median_s']:9.2f} {r['min_s']:7.2f} {r['peak_rss_mib']:13.0f}")
            for k, v in summary["ratios"].items():
                print(f"{k}: {v:.2f}x")
        return 0
    finally:
        if registry is not None:
            registry.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(short, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
