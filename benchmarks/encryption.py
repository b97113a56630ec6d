#!/usr/bin/env python3
"""Encryption benchmark: encrypted vs plain push and pull of one large model file, and where the time goes.

    python benchmarks/encryption.py [--size-mib 1024] [--rounds 3] [--json] [--tmpdir DIR] [--keep]

Starts its own ``docker-registry`` (distribution 2.8.2, through ``benchmarks/transfer.py``'s ``Registry``) on a free
loopback port, writes a model directory (``model.safetensors`` of ``--size-mib`` MiB of ``os.urandom`` data and a
``config.json``) and a fresh RSA-2048 key pair. Each round runs four contenders, interleaved (the order rotates per
round), each as its own subprocess under ``/usr/bin/time -v`` for its peak RSS:

* ``push``: ``Client.push(ref, [dir], kind="model", lineage=False)`` into a fresh repository, fresh ``OCIART_HOME``;
* ``push encrypted``: the same with ``encrypt_recipients=["jwe:PUB.pem"]`` (the weights layer encrypted);
* ``pull``: ``Client.pull(ref, out)`` of an artifact pushed (untimed) at setup;
* ``pull encrypted``: ``Client.pull(ref, out, decryption_keys=[KEY.pem])`` of the encrypted one.

Timed: client creation + the call + close, inside the runner (imports done before). After every pull the file is
checked against the source's sha256 (untimed) and deleted; the encrypted artifact's weights blob on the registry is
checked to differ from the plaintext. Then, in this process, the three primitives run over the same 256 MiB of
random data in 4 MiB chunks (the chunk size of the streams): SHA-256 (hashlib), AES-256-CTR and HMAC-SHA256
(``cryptography``), each reported in GiB/s, which says what an encrypted push (SHA-256 of the plaintext and of the
ciphertext, AES-CTR, HMAC) and pull (digest of the ciphertext, HMAC, AES-CTR, digest of the plaintext) add.

Target (issue 11): encrypted ≤ 1.3× plain for push and pull, peak RSS flat (as plain: ≤ 120 MB).
Run it on a quiet machine; under load the ratios mean nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
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

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from benchlib import load_transfer, log  # noqa: E402

GNU_TIME = "/usr/bin/time"
CONTENDERS = ("push", "push encrypted", "pull", "pull encrypted")
RATIO_MAX = 1.3
RSS_MB_MAX = 120.0
PRIMITIVE_MIB = 256
CHUNK = 4 << 20


# ------------------------------------------------------------------------------------------------ runner mode
def _runner(spec_path: str) -> int:
    import resource

    spec = json.loads(Path(spec_path).read_text())
    import ociart  # noqa: F401 - imports outside the timed region
    import ociart.encryption  # noqa: F401
    import ociart.packaging.pack  # noqa: F401
    import ociart.packaging.unpack  # noqa: F401
    from ociart import Client

    t0 = time.perf_counter()
    with Client(plain_http=True) as c:
        if spec["op"] == "push":
            c.push(spec["ref"], [spec["dir"]], kind="model", lineage=False,
                   encrypt_recipients=spec.get("recipients", []))
        else:
            c.pull(spec["ref"], spec["out"], decryption_keys=spec.get("keys", []))
    seconds = time.perf_counter() - t0
    Path(spec["result"]).write_text(json.dumps({
        "seconds": seconds, "self_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    return 0


# ------------------------------------------------------------------------------------------------ the bench
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _keys(work: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv, pub = work / "key.pem", work / "pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def primitives(mib: int = PRIMITIVE_MIB) -> dict[str, float]:
    """GiB/s of each primitive over ``mib`` MiB of random data in 4 MiB chunks, in this process (one core)."""
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    data = [os.urandom(CHUNK) for _ in range(max(1, mib * (1 << 20) // CHUNK))]
    total = len(data) * CHUNK / (1 << 30)
    out: dict[str, float] = {}

    def run(name: str, fn: Any) -> None:
        t0 = time.perf_counter()
        fn()
        out[name] = total / (time.perf_counter() - t0)

    def sha() -> None:
        h = hashlib.sha256()
        for c in data:
            h.update(c)
        h.digest()

    def ctr() -> None:
        enc = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor()
        for c in data:
            enc.update(c)
        enc.finalize()

    def mac() -> None:
        m = hmac.HMAC(os.urandom(32), hashes.SHA256())
        for c in data:
            m.update(c)
        m.finalize()

    for name, fn in (("sha256", sha), ("aes-256-ctr", ctr), ("hmac-sha256", mac)):
        run(name, fn)
    return out


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work, self.seq = args, work, 0
        self.tx = load_transfer()
        self.use_gnu_time = os.access(GNU_TIME, os.X_OK)
        if not self.use_gnu_time:
            log(f"note: {GNU_TIME} not found (apt-get install time); peak RSS is the runner's own ru_maxrss")
        self.env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def contender(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        spec_path, result = self.work / f"spec-{self.seq}.json", self.work / f"result-{self.seq}.json"
        home = self.work / f"home-{self.seq}"
        home.mkdir()
        spec_path.write_text(json.dumps({**spec, "result": str(result)}))
        rss_file = self.work / f"rss-{self.seq}.txt"
        cmd = [sys.executable, str(HERE), "_run", str(spec_path)]
        if self.use_gnu_time:
            cmd = [GNU_TIME, "-v", "-o", str(rss_file), *cmd]
        os.sync()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env={**self.env, "OCIART_HOME": str(home)}, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{spec['op']} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        out = json.loads(result.read_text())
        rss = self.tx._parse_gnu_time(rss_file.read_text()) if self.use_gnu_time else out["self_rss_kb"]
        shutil.rmtree(home, ignore_errors=True)
        return {"seconds": out["seconds"], "process_seconds": wall, "peak_rss_kb": rss}

    def run(self) -> dict[str, Any]:
        reg = self.tx.Registry(self.work / "registry")
        try:
            return self._run(reg)
        finally:
            reg.stop()

    def _run(self, reg: Any) -> dict[str, Any]:
        model = self.work / "model"
        model.mkdir()
        with open(model / "model.safetensors", "wb") as f:
            for _ in range(self.args.size_mib):
                f.write(os.urandom(1 << 20))
        (model / "config.json").write_text('{"hidden_size": 256}')
        want = _sha256_file(model / "model.safetensors")
        priv, pub = _keys(self.work)
        host = reg.host
        log(f"setup: {self.args.size_mib} MiB model, registry {host}")
        self.contender({"op": "push", "ref": f"{host}/bench/source:plain", "dir": str(model)})
        self.contender({"op": "push", "ref": f"{host}/bench/source:enc", "dir": str(model),
                        "recipients": [f"jwe:{pub}"]})
        self._check_ciphertext(host, want)
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONTENDERS}
        for rnd in range(self.args.rounds):
            order = CONTENDERS[rnd % len(CONTENDERS):] + CONTENDERS[:rnd % len(CONTENDERS)]
            for name in order:
                encrypted = name.endswith("encrypted")
                if name.startswith("push"):
                    spec = {"op": "push", "ref": f"{host}/bench/r{rnd}-{name.replace(' ', '-')}:v1", "dir": str(model),
                            "recipients": [f"jwe:{pub}"] if encrypted else []}
                    res = self.contender(spec)
                else:
                    out = self.work / "out"
                    spec = {"op": "pull", "ref": f"{host}/bench/source:{'enc' if encrypted else 'plain'}",
                            "out": str(out), "keys": [str(priv)] if encrypted else []}
                    res = self.contender(spec)
                    got = _sha256_file(out / "model.safetensors")
                    if got != want:
                        raise RuntimeError(f"{name}: pulled file hashes to {got}, expected {want}")
                    shutil.rmtree(out)
                log(f"round {rnd + 1}: {name:15s} {res['seconds']:.2f} s, peak RSS {res['peak_rss_kb'] / 1e3:.0f} MB")
                runs[name].append(res)
        log("primitives ...")
        return {"runs": runs, "primitives": primitives()}

    def _check_ciphertext(self, host: str, plain_sha: str) -> None:
        """The encrypted artifact's weights blob on the registry is ciphertext (not the plaintext's digest)."""
        sys.path.insert(0, str(self.tx.REPO_ROOT))
        from ociart import Client

        with Client(plain_http=True) as c:
            info = c.inspect(f"{host}/bench/source:enc")
        weights = next(f for f in info.files if f.path == "model.safetensors")
        if not weights.encrypted or weights.digest == f"sha256:{plain_sha}":
            raise RuntimeError("the encrypted push stored the weights in plaintext")


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    runs = raw["runs"]
    med = {n: statistics.median(r["seconds"] for r in rs) for n, rs in runs.items()}
    rss = {n: max(r["peak_rss_kb"] for r in rs) * 1024 / 1e6 for n, rs in runs.items()}
    return {"median_seconds": med, "peak_rss_mb": rss,
            "ratio": {"push": med["push encrypted"] / med["push"], "pull": med["pull encrypted"] / med["pull"]},
            "primitives_gib_s": raw["primitives"],
            "targets": {"ratio_max": RATIO_MAX, "rss_mb_max": RSS_MB_MAX}}


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "_run":
        return _runner(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="machine-readable results on stdout")
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.rounds < 1:
        parser.error("--size-mib and --rounds must be >= 1")
    work = Path(tempfile.mkdtemp(prefix="ociart-bench-enc-", dir=args.tmpdir))
    try:
        summary = summarise(Bench(args, work).run())
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "size_mib": args.size_mib,
            "rounds": args.rounds, "nproc": os.cpu_count(), "python": platform.python_version(),
            "load": os.getloadavg()}
    if args.json:
        print(json.dumps({**meta, **summary}, indent=2))
        return 0
    print(f"{meta['date']}, {args.size_mib} MiB, {args.rounds} round(s), {meta['nproc']} CPUs, "
          f"load {meta['load'][0]:.1f}")
    print(f"{'contender':16s} {'median s':>9s} {'peak RSS MB':>12s}")
    for n in CONTENDERS:
        print(f"{n:16s} {summary['median_seconds'][n]:9.2f} {summary['peak_rss_mb'][n]:12.0f}")
    for op, r in summary["ratio"].items():
        print(f"encrypted/plain {op}: {r:.2f}x (target <= {RATIO_MAX}x)")
    print("primitives (one core): " + ", ".join(f"{k} {v:.2f} GiB/s" for k, v in summary["primitives_gib_s"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
