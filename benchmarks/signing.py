#!/usr/bin/env python3
"""Signing benchmark: what signing adds to a push and verification adds to a pull, against the unsigned baseline.

    python benchmarks/signing.py [--rounds 7] [--model-kib 4096] [--json] [--keep] [--tmpdir DIR]

Two stores: a local CNCF distribution 2.8.2 (``docker-registry``, started through ``benchmarks/transfer.py``'s
``Registry`` on a free loopback port, storage in a temp dir; it has no referrers API, so every bundle referrer goes
through the ``sha256-<hex>`` fallback index) and the embedded store (``$OCIART_HOME/store``, refs without a host).
The model is a directory of ``model.safetensors`` (``--model-kib`` KiB random bytes) and ``config.json``. The key
is a fresh ECDSA P-256 key (``KeySigner``), trusted on verification as ``Trust(keys=[TrustedKey("k", pub)])``.

Contenders, per store (all interleaved: every round runs each once, in this order rotated by one per round):

* ``push`` / ``push --sign``: ``Client.push(ref, [dir], kind="model", lineage=False)``, without and with
  ``sign=KeySigner(key)`` (bundle referrer + legacy ``sha256-<hex>.sig`` tag);
* ``push +lineage`` / ``push +lineage --sign``: the same with lineage on: an unsigned provenance statement vs a
  signature plus a signed provenance attestation (a second bundle referrer);
* ``resolve`` / ``verify``: ``Client.resolve(ref)`` (one manifest request, the floor) vs ``Client.verify(ref,
  trust)`` of an artifact carrying a bundle, a legacy signature and a signed provenance attestation;
* ``pull`` / ``verify + pull``: ``Client.pull(ref, out)`` vs ``Client.verify`` then ``pull`` of exactly the verified
  digest on the same client (what ``ociart pull --verify-key`` does).

Every measurement uses its own repository (on the embedded store also its own ``OCIART_HOME``) and a freshly
written model directory; read contenders get their artifact from an untimed signed push (lineage on) just before.
Timed: creating a fresh ``Client``, the call(s), ``close``. The calls run *in this process* (imports done and every
contender run once untimed before the rounds, so lazily imported modules, pydantic schemas and the lineage
environment scan are warm, as in a long-lived process using the library); the import cost a CLI process pays for
signing is measured separately, in fresh interpreters. HTTP requests are counted by wrapping ``httpx.Client.send``
(method + kind of path). Everything is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import load_transfer, log, repo_cwd, write_model

HERE = Path(__file__).resolve()

STORES = ("registry", "embedded")
#: (label, operation, lineage, sign); the baseline of each pair comes first.
OPS = [
    ("push", "push", False, False),
    ("push --sign", "push", False, True),
    ("push +lineage", "push", True, False),
    ("push +lineage --sign", "push", True, True),
    ("resolve", "resolve", None, None),
    ("verify", "verify", None, None),
    ("pull", "pull", None, None),
    ("verify + pull", "verify+pull", None, None),
]
PAIRS = [("push", "push --sign"), ("push +lineage", "push +lineage --sign"), ("resolve", "verify"),
         ("pull", "verify + pull")]
CONTENDERS = [(store, op) for op in OPS for store in STORES]

BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
INTOTO = "application/vnd.in-toto+json"


def _name(store: str, label: str) -> str:
    return f"{store}: {label}"


# ------------------------------------------------------------------------------------------------ request counter
_MANIFEST = re.compile(r"^/v2/.+/manifests/(?P<ref>[^/]+)$")


def _kind(method: str, path: str) -> str:
    if path == "/v2/":
        return f"{method} /v2/"
    if "/blobs/uploads/" in path:
        return f"{method} upload"
    if "/blobs/" in path:
        return f"{method} blob"
    if "/referrers/" in path:
        return f"{method} referrers API"
    if path.endswith("/tags/list"):
        return f"{method} tags/list"
    m = _MANIFEST.match(path)
    if m:
        ref = m["ref"]
        if ref.startswith("sha256-") and ref.endswith(".sig"):
            what = ".sig tag"
        elif ref.startswith("sha256-"):
            what = "fallback index"
        elif ref.startswith("sha256:"):
            what = "manifest by digest"
        else:
            what = "manifest by tag"
        return f"{method} {what}"
    return f"{method} other"


class RequestCounter:
    """Counts requests sent by any ``httpx.Client`` in this process (wraps ``httpx.Client.send``)."""

    def __init__(self) -> None:
        import httpx

        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        original = httpx.Client.send
        counter = self

        def send(client: Any, request: Any, **kw: Any) -> Any:
            kind = _kind(request.method, request.url.path)
            with counter._lock:
                counter.counts[kind] += 1
            return original(client, request, **kw)

        httpx.Client.send = send  # type: ignore[method-assign]

    def take(self) -> dict[str, int]:
        with self._lock:
            out = dict(self.counts)
            self.counts.clear()
        return out


# ------------------------------------------------------------------------------------------------ driver
class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, registry_host: str) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        import ociart
        from ociart.signing import KeySigner, Trust, TrustedKey

        self.ociart = ociart
        self.args = args
        self.work = work
        self.host = registry_host
        key = ec.generate_private_key(ec.SECP256R1())
        self.signer = KeySigner(key)
        self.trust = Trust(keys=[TrustedKey("k", key.public_key())])
        self.counter = RequestCounter()
        self.seq = 0

    def _prepare(self, store: str, tag: str) -> tuple[str, Path]:
        """A fresh repository (and on the embedded store a fresh OCIART_HOME) and model directory: (ref, run dir)."""
        self.seq += 1
        run_dir = self.work / f"{self.seq:04d}-{tag}"
        os.environ["OCIART_HOME"] = str(run_dir / "home")
        write_model(run_dir / "model", self.args.model_kib, small_files=False)
        repo = f"bench/{self.seq:04d}-{tag}"
        return (f"{self.host}/{repo}:v1" if store == "registry" else f"{repo}:v1"), run_dir

    def one(self, store: str, op: tuple[str, str, bool | None, bool | None]) -> dict[str, Any]:
        label, kind, lineage, sign = op
        Client = self.ociart.Client
        ref, run_dir = self._prepare(store, re.sub(r"[^a-z]+", "-", f"{store}-{label}").strip("-"))
        if kind != "push":  # the artifact to read: signed, with a signed provenance attestation (untimed)
            with Client(plain_http=True) as c:
                c.push(ref, [run_dir / "model"], kind="model", lineage=True, sign=self.signer)
        out_dir = run_dir / "out"
        checked = None
        self.counter.take()
        t0 = time.perf_counter()
        client = Client(plain_http=True)
        try:
            if kind == "push":
                desc = client.push(ref, [run_dir / "model"], kind="model", lineage=bool(lineage),
                                   sign=self.signer if sign else None)
                digest = desc.digest
            elif kind == "resolve":
                digest = client.resolve(ref).digest
            elif kind == "verify":
                checked = client.verify(ref, self.trust)
                digest = checked.digest
            elif kind == "pull":
                digest = client.pull(ref, out_dir).digest
            else:  # verify+pull
                checked = client.verify(ref, self.trust)
                digest = client.pull(str(client.ref(ref).with_digest(checked.digest)), out_dir).digest
        finally:
            client.close()
        seconds = time.perf_counter() - t0
        requests = self.counter.take()
        res: dict[str, Any] = {"seconds": seconds, "requests": sum(requests.values()), "by_kind": requests}
        self._check(store, op, ref, digest, checked, out_dir, res)
        self.counter.take()  # the checks' own requests
        if not self.args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        return res

    def _check(self, store: str, op: tuple[str, str, bool | None, bool | None], ref: str, digest: str,
               checked: Any, out_dir: Path, res: dict[str, Any]) -> None:
        """Untimed: the call did what it is meant to (referrers written, signatures verified, files pulled)."""
        label, kind, lineage, sign = op
        name = _name(store, label)
        if checked is not None:
            ok = (len(checked.signatures) == 2 and {s.format for s in checked.signatures} == {"bundle", "legacy"}
                  and len(checked.attestations) == 1 and not checked.rejected)
            if not ok:
                raise SystemExit(f"{name}: unexpected verification {checked.model_dump()}")
            res["verified"] = {"signatures": len(checked.signatures), "attestations": len(checked.attestations)}
        if kind in ("pull", "verify+pull"):
            got = sorted(p.name for p in out_dir.iterdir())
            if got != ["config.json", "model.safetensors"]:
                raise SystemExit(f"{name}: pulled {got}")
        if kind != "push":
            return
        with self.ociart.Client(plain_http=True) as c:
            pinned = str(c.ref(ref).with_digest(digest))
            types = sorted(d.artifactType or "" for d in c.referrers(pinned))
            tags = c.tags(c.ref(ref), all=True)
        expected = sorted(([BUNDLE] if sign else []) + ([BUNDLE if sign else INTOTO] if lineage else []))
        has_sig = any(t.endswith(".sig") for t in tags)
        if types != expected or has_sig != bool(sign):
            raise SystemExit(f"{name}: referrers {types} (expected {expected}), tags {tags}")
        res["referrers"] = types


def run(args: argparse.Namespace) -> dict[str, Any]:
    tx = load_transfer()
    work = Path(tempfile.mkdtemp(prefix="ociart-bench-signing-", dir=args.tmpdir))
    saved_env = {k: v for k, v in os.environ.items() if k.startswith(("OCIART_", "MLFLOW_", "WANDB_"))
                 or k == "SOURCE_DATE_EPOCH"}
    for k in saved_env:
        del os.environ[k]
    old_cwd = Path.cwd()
    registry = None
    try:
        registry = tx.Registry(work / "registry")
        os.chdir(repo_cwd())
        bench = Bench(args, work / "runs", registry.host)
        log("warm-up: every contender once, untimed")
        for store, op in CONTENDERS:
            bench.one(store, op)
        results: dict[str, list[dict[str, Any]]] = {_name(s, op[0]): [] for s, op in CONTENDERS}
        n = len(CONTENDERS)
        for rnd in range(args.rounds):
            order = CONTENDERS[rnd % n:] + CONTENDERS[:rnd % n]
            for store, op in order:
                res = bench.one(store, op)
                results[_name(store, op[0])].append(res)
                log(f"round {rnd + 1}/{args.rounds} {_name(store, op[0]):34s} {res['seconds'] * 1000:7.1f} ms "
                     f"{res['requests']:3d} requests")
        imports = _import_costs(work)
        return {"results": results, "imports": imports, "cwd": str(Path.cwd())}
    finally:
        os.chdir(old_cwd)
        os.environ.pop("OCIART_HOME", None)
        os.environ.update(saved_env)
        if registry is not None:
            registry.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


_IMPORT_PROBE = """
import json, sys, time
import ociart, ociart.client, ociart.packaging.pack, ociart.targets.registry
import ociart.cli.app
before = "ociart.signing.service" in sys.modules
t0 = time.perf_counter()
import ociart.signing.service, ociart.signing.bundle, ociart.signing.legacy, ociart.signing.verify
print(json.dumps({"loaded_before": before, "seconds": time.perf_counter() - t0}))
"""


def _import_costs(work: Path, n: int = 5) -> dict[str, Any]:
    """Import time of the signing modules in a fresh interpreter that already imported the client and the CLI."""
    secs, before = [], False
    env = {**os.environ, "OCIART_HOME": str(work / "import-home")}
    for _ in range(n):
        proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, check=True,
                              env=env)
        out = json.loads(proc.stdout)
        secs.append(out["seconds"])
        before = before or out["loaded_before"]
    return {"median_s": statistics.median(secs), "runs_s": secs, "loaded_by_cli": before}


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, runs in data["results"].items():
        secs = [r["seconds"] for r in runs]
        reqs = [r["requests"] for r in runs]
        out[name] = {"median_s": statistics.median(secs), "per_round_s": secs, "requests": statistics.median(reqs),
                     "requests_min": min(reqs), "requests_max": max(reqs), "by_kind": runs[-1]["by_kind"]}
    for store in STORES:
        for base, other in PAIRS:
            b, o = out[_name(store, base)], out[_name(store, other)]
            extra = collections.Counter(o["by_kind"])
            extra.subtract(b["by_kind"])
            out[f"{store}: {other} − {base}"] = {
                "seconds": o["median_s"] - b["median_s"], "percent": 100 * (o["median_s"] - b["median_s"])
                / b["median_s"], "extra_requests": o["requests"] - b["requests"],
                "extra_by_kind": {k: v for k, v in sorted(extra.items()) if v}}
    return out


def render(summary: dict[str, Any], data: dict[str, Any], args: argparse.Namespace) -> str:
    lines = ["| contender | median ms | requests | per round ms |", "|---|---:|---:|---|"]
    for store in STORES:
        for label, *_ in OPS:
            s = summary[_name(store, label)]
            reqs = "—" if store == "embedded" else (f"{s['requests']:.0f}" if s["requests_min"] == s["requests_max"]
                                                    else f"{s['requests_min']}–{s['requests_max']}")
            lines.append(f"| {_name(store, label)} | {s['median_s'] * 1000:.1f} | {reqs} | "
                         + " / ".join(f"{x * 1000:.0f}" for x in s["per_round_s"]) + " |")
    lines.append("")
    lines.append("| overhead (difference of medians) | registry ms | registry extra requests | embedded ms |")
    lines.append("|---|---:|---:|---:|")
    for base, other in PAIRS:
        r, e = summary[f"registry: {other} − {base}"], summary[f"embedded: {other} − {base}"]
        lines.append(f"| {other} − {base} | {r['seconds'] * 1000:+.1f} ({r['percent']:+.0f} %) | "
                     f"{r['extra_requests']:+.0f} | {e['seconds'] * 1000:+.1f} ({e['percent']:+.0f} %) |")
    lines.append("")
    for base, other in PAIRS:
        r = summary[f"registry: {other} − {base}"]
        parts = ", ".join(f"{k} {v:+d}" for k, v in r["extra_by_kind"].items())
        lines.append(f"* registry, {other} vs {base}: {parts or 'no difference'}")
    for label in ("push", "push --sign", "verify", "pull", "verify + pull"):
        s = summary[_name("registry", label)]
        parts = ", ".join(f"{k} {v}" for k, v in sorted(s["by_kind"].items()))
        lines.append(f"* registry, {label}, all requests: {parts}")
    imp = data["imports"]
    lines.append(f"* importing the signing modules in a fresh process after `ociart.client` and the CLI: "
                 f"{imp['median_s'] * 1000:.0f} ms median of {len(imp['runs_s'])} "
                 f"({'already imported by the CLI' if imp['loaded_by_cli'] else 'not imported by the CLI otherwise'})")
    lines.append(f"* model: {args.model_kib} KiB weights + config.json; {args.rounds} rounds, in-process, "
                 "one untimed warm-up of every contender")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="rounds (at least 5)")
    ap.add_argument("--model-kib", type=int, default=4096, help="size of model.safetensors in KiB")
    ap.add_argument("--tmpdir", default=None, help="where to put the registry storage and the model dirs")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--json", action="store_true", help="print JSON on stdout")
    args = ap.parse_args(argv)
    if args.rounds < 5:
        ap.error("--rounds must be at least 5")
    load0 = os.getloadavg()
    data = run(args)
    summary = summarise(data)
    meta = {"when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "python": platform.python_version(),
            "cpus": os.cpu_count(), "load_before": load0, "load_after": os.getloadavg()}
    if args.json:
        print(json.dumps({"meta": meta, "summary": summary, "imports": data["imports"]}, indent=2))
    else:
        print(f"{meta['when']}; {meta['cpus']} CPUs; Python {meta['python']}; load {load0[0]:.2f} → "
              f"{meta['load_after'][0]:.2f}\n")
        print(render(summary, data, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
