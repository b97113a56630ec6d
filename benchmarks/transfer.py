#!/usr/bin/env python3
"""Blob transfer benchmark: ociart vs curl vs oras-py vs skopeo against a local CNCF distribution registry.

    python benchmarks/transfer.py [--size-mib 1024] [--rounds 5] [--json] [--tmpdir DIR]
                                  [--throttle MBPS] [--s3] [--only NAME,...]

``--throttle MBPS``: every blob body (and, with ``--s3``, every object-store body) passes a fault proxy
(``tests/support/faultproxy.py``) that caps each response — so each connection while it serves one, like an object
store's per-connection cap — at MBPS MB/s; the pull ratios are then also given against ``ociart pull 1 stream``
(the parallel ranged download's speedup). ``--s3``: the registry stores blobs in S3 (``moto_server``, redirects on:
blob GETs answer 307 to a presigned URL), as in ``tests/support/s3.py``. Contenders: ``curl push/pull`` (baseline),
``ociart push``, ``ociart model push`` (the same bytes as ``model.safetensors`` in a ``--kind model`` directory),
``ociart pull`` (default: parallel ranges for blobs >= 64 MiB), ``ociart pull 1 stream`` (``max_streams=1``),
``oras-py push/pull`` (unverified pull), ``skopeo pull`` (``skopeo copy docker://… oci:DIR``, digest-verified, Go)
and ``ociart re-push``.

Starts its own ``docker-registry serve`` (Debian ``docker-registry``, distribution 2.8.2) on a free loopback port
with filesystem storage in a temp dir, writes a random file of ``--size-mib`` MiB, and then, for each round,
runs every contender as a separate subprocess (push contenders, pull contenders, then the ociart re-push), each
under ``/usr/bin/time -v`` for its peak RSS. Everything it created (the random file, registry storage, pulled
files, ``OCIART_HOME`` dirs) is deleted at the end.

Timing:
* ``seconds`` for curl = wall time of the curl process(es) (POST + PUT for a push, one GET for a pull);
* ``seconds`` for the Python contenders = time of the library call inside the runner process (client creation +
  push/pull + close), i.e. *without* interpreter start-up and imports. The wall time of the whole runner process
  (including start-up and imports) is reported separately as ``process s``.

Peak RSS is ``Maximum resident set size`` from GNU time (``ru_maxrss`` of the waited-for child); without
``/usr/bin/time`` the Python runners report their own ``RUSAGE_SELF.ru_maxrss`` and curl runs under a minimal
Python wrapper reporting ``RUSAGE_CHILDREN.ru_maxrss`` (``--rss-wrapper`` forces this mode). MB = 10^6 bytes.

See shared/reference/registry-protocol.md, §14 and the appendix (measured transfer strategies).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO_ROOT = HERE.parent.parent
REGISTRY_SECRET = "ociart-benchmark-secret"
FILE_NAME = "blob.bin"
WRITE_CHUNK = 16 << 20
HASH_CHUNK = 8 << 20
START_TIMEOUT = 15.0
GNU_TIME = "/usr/bin/time"

PUSH = ("curl push", "ociart push", "ociart model push", "oras-py push")
PULL = ("curl pull", "ociart pull", "ociart pull 1 stream", "oras-py pull", "skopeo pull")
REPUSH = "ociart re-push"
ALL = (*PUSH, *PULL, REPUSH)
BASELINE = {**{c: "curl push" for c in PUSH}, **{c: "curl pull" for c in PULL}}
#: Throttled runs: the parallel ranged pull against one stream of the same client.
ONE_STREAM = "ociart pull 1 stream"

#: Targets from the issue.
PUSH_RATIO_MAX = 1.10
PULL_RATIO_MAX = 1.15
RSS_MB_MAX = 120.0
#: A typed push within this factor of a generic push of the same bytes.
TYPED_VS_GENERIC_MAX = 1.05
#: Throttled: the parallel ranged pull at least this many times faster than one stream.
THROTTLED_SPEEDUP_MIN = 3.0


# ------------------------------------------------------------------------------------------------ runner mode
# `transfer.py _run SPEC.json` executes one Python contender and writes its result to spec["result"].

def _runner(spec_path: str) -> int:
    import resource

    spec = json.loads(Path(spec_path).read_text())
    kind: str = spec["kind"]
    out: dict[str, Any] = {}
    if kind.startswith("ociart"):
        import ociart
        import ociart.client  # noqa: F401 - import outside the timed region
        import ociart.targets.registry  # noqa: F401
        import ociart.transfer  # noqa: F401
    else:
        import oras.client
        import oras.provider  # noqa: F401

    t0 = time.perf_counter()
    if kind in ("ociart-push", "ociart-repush", "ociart-model-push"):
        client = ociart.Client(plain_http=True)
        try:
            if kind == "ociart-model-push":
                desc = client.push(spec["ref"], [spec["dir"]], kind="model", lineage=False)
            else:
                desc = client.push(spec["ref"], [spec["file"]])
            out["bytes_uploaded"] = client.target(client.ref(spec["ref"])).bytes_uploaded
            out["manifest_digest"] = desc.digest
        finally:
            client.close()
    elif kind == "ociart-pull":
        client = ociart.Client(plain_http=True, max_streams=spec.get("max_streams"))
        try:
            res = client.pull(spec["ref"], spec["outdir"])
            out["manifest_digest"] = res.digest
            ranged = client.target(client.ref(spec["ref"])).last_ranged
            out["streams"] = ranged.streams if ranged is not None else 1
        finally:
            client.close()
    elif kind == "oras-push":
        oc = oras.client.OrasClient(hostname=spec["host"], insecure=True)
        resp = oc.push(target=spec["ref"], files=[spec["file"]], quiet=True)
        out["status"] = resp.status_code
    elif kind == "oras-pull":
        oc = oras.client.OrasClient(hostname=spec["host"], insecure=True)
        out["files"] = oc.pull(target=spec["ref"], outdir=spec["outdir"])
    else:
        raise SystemExit(f"unknown runner kind {kind!r}")
    out["seconds"] = time.perf_counter() - t0
    out["self_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(spec["result"]).write_text(json.dumps(out))
    return 0


#: Fallback RSS wrapper for curl when GNU time is missing, run as ``python -I -S -c _WRAP RESULT CMD...``. It must
#: stay tiny: Linux folds the RSS of the forking process into the child's ru_maxrss (recorded at exec), so a
#: wrapper that imported this script (~20 MB) would inflate curl's ~11 MB. This one forks at ~7 MB.
_WRAP = """
import os, sys, resource
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status = os.waitpid(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


# ------------------------------------------------------------------------------------------------ registry

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with _NO_PROXY.open(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


class Registry:
    """``docker-registry serve`` with filesystem storage under ``workdir`` (reference §14)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        if not os.access(binary, os.X_OK):
            raise SystemExit("docker-registry is not installed (apt-get install docker-registry)")
        self.root = workdir / "storage"
        self.root.mkdir(parents=True)
        self.config_path = workdir / "config.yml"
        self.log_path = workdir / "registry.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.proc: subprocess.Popen[bytes] | None = None
        for _attempt in range(5):
            port = _free_port()
            config = {
                "version": 0.1,
                "log": {"level": "warn", "accesslog": {"disabled": True}},
                "storage": {"filesystem": {"rootdirectory": str(self.root)}, "delete": {"enabled": True},
                            "maintenance": {"uploadpurging": {"enabled": False}}},
                "http": {"addr": f"127.0.0.1:{port}", "secret": REGISTRY_SECRET},
            }
            self.config_path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is valid YAML
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen([binary, "serve", str(self.config_path)], stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
            self.host = f"127.0.0.1:{port}"
            self.url = f"http://{self.host}"
            if self._wait_ready():
                return
            self.stop()
            if "address already in use" not in self.log_path.read_text(errors="replace"):
                break
        raise SystemExit(f"docker-registry did not start; log:\n{self.log_path.read_text(errors='replace')}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                if _http("GET", f"{self.url}/v2/")[0] == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def has_blob(self, repo: str, digest: str) -> bool:
        return _http("HEAD", f"{self.url}/v2/{repo}/blobs/{digest}")[0] == 200

    def has_manifest(self, repo: str, tag: str) -> bool:
        accept = ("application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
                  "application/vnd.docker.distribution.manifest.v2+json")
        return _http("HEAD", f"{self.url}/v2/{repo}/manifests/{tag}", {"Accept": accept})[0] == 200

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _SupportRegistry:
    """The test suite's registry on S3 (``tests/support``), with this script's ``Registry`` interface."""

    def __init__(self, running: Any, s3: Any) -> None:
        self.running, self.s3 = running, s3
        self.host, self.url, self.proc = running.host, running.url, running.process

    has_blob = Registry.has_blob
    has_manifest = Registry.has_manifest

    def stop(self) -> None:
        self.running.stop()
        self.s3.stop()


# ------------------------------------------------------------------------------------------------ measuring

def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _make_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(WRITE_CHUNK, left))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return "sha256:" + h.hexdigest()


def _parse_gnu_time(text: str) -> int:
    for line in text.splitlines():
        if "Maximum resident set size" in line:
            return int(line.rsplit(":", 1)[1].strip())
    raise RuntimeError(f"no 'Maximum resident set size' in GNU time output:\n{text}")


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.size = args.size_mib << 20
        self.use_gnu_time = os.access(GNU_TIME, os.X_OK) and not args.rss_wrapper
        if not self.use_gnu_time and not args.rss_wrapper:
            _log(f"note: {GNU_TIME} not found (apt-get install time); peak RSS comes from a Python wrapper "
                 "reporting RUSAGE_CHILDREN.ru_maxrss of the contender")
        self.env = dict(os.environ)
        for var in ("NO_PROXY", "no_proxy"):
            self.env[var] = ",".join(filter(None, [self.env.get(var), "127.0.0.1", "localhost"]))
        self.env.pop("OCIART_UPLOAD_STRATEGY", None)  # measure the default strategy selection
        for var in ("OCIART_MAX_STREAMS", "OCIART_CHUNK_SIZE", "OCIART_UPLOAD_CHUNK_SIZE"):
            self.env.pop(var, None)
        # the runners import the ociart of this checkout (the one _git_state reports), not an installed one
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), self.env.get("PYTHONPATH")]))
        self.seq = 0

    # one measured subprocess ---------------------------------------------------------------------
    def measure(self, cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                self_reporting: bool = False) -> tuple[float, int | None]:
        """Run ``cmd``; return (wall seconds, peak RSS kB). Without GNU time, a ``self_reporting`` command (our
        Python runner, which reports its own RUSAGE_SELF.ru_maxrss) runs unwrapped and None is returned."""
        self.seq += 1
        rss_file = self.work / f"rss-{self.seq}.txt"
        if self.use_gnu_time:
            full = [GNU_TIME, "-v", "-o", str(rss_file), *cmd]
        elif self_reporting:
            full = cmd
        else:
            full = [sys.executable, "-I", "-S", "-c", _WRAP, str(rss_file), *cmd]
        if not self.args.no_sync:
            os.sync()  # flush the previous run's dirty pages so its writeback does not land in this run
        t0 = time.perf_counter()
        proc = subprocess.run(full, env=env or self.env, cwd=cwd or self.work, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n"
                               f"{proc.stdout.decode(errors='replace')[-3000:]}\n"
                               f"{proc.stderr.decode(errors='replace')[-3000:]}")
        if not self.use_gnu_time and self_reporting:
            return wall, None
        text = rss_file.read_text()
        rss_file.unlink()
        return wall, _parse_gnu_time(text) if self.use_gnu_time else int(text)

    def python_contender(self, spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
        self.seq += 1
        spec_path = self.work / f"spec-{self.seq}.json"
        result_path = self.work / f"result-{self.seq}.json"
        spec_path.write_text(json.dumps({**spec, "result": str(result_path)}))
        wall, rss = self.measure([sys.executable, str(HERE), "_run", str(spec_path)], env=env, cwd=self.data_dir,
                                 self_reporting=True)
        out = json.loads(result_path.read_text())
        if rss is None:
            rss = out["self_maxrss_kb"]
        spec_path.unlink()
        result_path.unlink()
        return {"seconds": out.pop("seconds"), "process_seconds": wall, "peak_rss_kb": rss, **out}

    # setup -----------------------------------------------------------------------------------------
    def setup(self) -> None:
        self.data_dir = self.work / "data"
        self.data_dir.mkdir()
        self.out_dir = self.work / "out"
        self.homes = self.work / "homes"
        self.homes.mkdir()
        self.file = self.data_dir / FILE_NAME
        _log(f"writing {self.args.size_mib} MiB of random data to {self.file} ...")
        self.digest = _make_file(self.file, self.size)
        self.model_dir = self.data_dir / "model"  # the same bytes as a --kind model directory (a hard link)
        self.model_dir.mkdir()
        os.link(self.file, self.model_dir / "model.safetensors")
        (self.model_dir / "config.json").write_text('{"architectures": ["BenchForCausalLM"], "hidden_size": 64}\n')
        self.s3 = self.proxy = None
        if self.args.s3:
            sys.path.insert(0, str(REPO_ROOT / "tests"))
            from support.registry import start_registry
            from support.s3 import start_s3

            self.s3 = start_s3(self.work / "s3")
            self.registry = _SupportRegistry(start_registry(self.work / "registry", s3=self.s3), self.s3)
        else:
            self.registry = Registry(self.work / "registry")
        self.pull_host = self.registry.host
        if self.args.throttle:
            sys.path.insert(0, str(REPO_ROOT / "tests"))
            from support.faultproxy import FaultProxy

            rate = self.args.throttle * 1e6
            if self.s3 is not None:  # blob bodies come from the object store, after a 307
                self.s3.proxy.limit_rate(rate, "/data?X-Amz-")
            else:
                self.proxy = FaultProxy(self.registry.url, timeout=600)
                self.proxy.limit_rate(rate, "/blobs/sha256:")
                self.pull_host = self.proxy.host
        _log(f"registry {self.registry.url}{' on S3 (moto)' if self.s3 else ''}; pulls via {self.pull_host}"
             f"{f', throttled to {self.args.throttle} MB/s per connection' if self.args.throttle else ''}; "
             f"blob {self.digest}")
        # Source artifact for the pull contenders (untimed), pushed by ociart with its own OCIART_HOME.
        self.source_repo = "bench/source"
        self.source_ref = f"{self.registry.host}/{self.source_repo}:v1"
        self.python_contender({"kind": "ociart-push", "ref": self.source_ref, "file": FILE_NAME},
                              env={**self.env, "OCIART_HOME": str(self.homes / "source")})
        if not self.registry.has_blob(self.source_repo, self.digest):
            raise RuntimeError("setup push of the source artifact did not store the blob")
        # ociart's digest cache ignores files modified within the last 2 s (racy mtime); make sure the re-push
        # contender sees a file older than that, as any real re-push would.
        age = time.time() - self.file.stat().st_mtime
        if age < 2.5:
            time.sleep(2.5 - age)

    def _fresh_out(self) -> Path:
        shutil.rmtree(self.out_dir, ignore_errors=True)
        self.out_dir.mkdir()
        return self.out_dir

    def _check_pulled(self, name: str) -> None:
        got = self.out_dir / FILE_NAME
        if not got.is_file() or got.stat().st_size != self.size:
            raise RuntimeError(f"{name}: pulled file missing or wrong size")
        if _sha256_file(got) != self.digest:
            raise RuntimeError(f"{name}: pulled file has the wrong content")
        shutil.rmtree(self.out_dir)  # delete the output before the next pull run

    # contenders ----------------------------------------------------------------------------------
    def run_one(self, name: str, rnd: int) -> dict[str, Any]:
        host = self.registry.host
        url = self.registry.url
        home = self.homes / f"round{rnd}"
        if name == "curl push":
            repo = f"bench/r{rnd}-curl"
            script = ('loc=$(curl -sS -f --noproxy "*" -D - -o /dev/null -X POST "$1" | tr -d "\\r" '
                      '| sed -n "s/^[Ll]ocation: *//p") || exit 1; [ -n "$loc" ] || exit 2; '
                      'case "$loc" in http*) ;; *) loc="$4$loc";; esac; '
                      'case "$loc" in *\\?*) sep="&";; *) sep="?";; esac; '
                      'exec curl -sS -f --noproxy "*" -o /dev/null -T "$2" -X PUT '
                      '-H "Content-Type: application/octet-stream" "$loc${sep}digest=$3"')
            wall, rss = self.measure(["sh", "-c", script, "sh", f"{url}/v2/{repo}/blobs/uploads/", str(self.file),
                                      self.digest, url])
            if not self.registry.has_blob(repo, self.digest):
                raise RuntimeError("curl push: blob not in the registry afterwards")
            return {"seconds": wall, "process_seconds": wall, "peak_rss_kb": rss}
        if name == "curl pull":
            self._fresh_out()
            wall, rss = self.measure(["curl", "-sS", "-f", "-L", "--noproxy", "*", "-o", str(self.out_dir / FILE_NAME),
                                      f"http://{self.pull_host}/v2/{self.source_repo}/blobs/{self.digest}"])
            self._check_pulled(name)
            return {"seconds": wall, "process_seconds": wall, "peak_rss_kb": rss}
        if name == "skopeo pull":
            self._fresh_out()
            layout = self.out_dir / "layout"
            wall, rss = self.measure(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                      f"docker://{self.pull_host}/{self.source_repo}:v1", f"oci:{layout}:v1"],
                                     env={**self.env, "REGISTRY_AUTH_FILE": str(self.work / "no-auth.json")})
            blob = layout / "blobs" / "sha256" / self.digest.removeprefix("sha256:")
            if not blob.is_file() or _sha256_file(blob) != self.digest:
                raise RuntimeError("skopeo pull: blob missing from the layout or wrong")
            shutil.rmtree(self.out_dir)
            return {"seconds": wall, "process_seconds": wall, "peak_rss_kb": rss}
        if name == "ociart model push":
            repo = f"bench/r{rnd}-model"
            mhome = self.homes / f"model{rnd}"
            shutil.rmtree(mhome, ignore_errors=True)
            mhome.mkdir()  # cold, as the generic push
            res = self.python_contender({"kind": "ociart-model-push", "ref": f"{host}/{repo}:v1",
                                         "dir": str(self.model_dir)}, env={**self.env, "OCIART_HOME": str(mhome)})
            if not (self.registry.has_blob(repo, self.digest) and self.registry.has_manifest(repo, "v1")):
                raise RuntimeError(f"{name}: blob or manifest missing afterwards")
            return res
        if name in ("ociart push", REPUSH):
            repo = f"bench/r{rnd}-ociart"
            if name == "ociart push":
                shutil.rmtree(home, ignore_errors=True)
                home.mkdir()  # fresh OCIART_HOME: a cold push (no digest cache)
            res = self.python_contender({"kind": "ociart-push" if name == "ociart push" else "ociart-repush",
                                         "ref": f"{host}/{repo}:v1", "file": FILE_NAME},
                                        env={**self.env, "OCIART_HOME": str(home)})
            if not (self.registry.has_blob(repo, self.digest) and self.registry.has_manifest(repo, "v1")):
                raise RuntimeError(f"{name}: blob or manifest missing afterwards")
            return res
        if name == "oras-py push":
            repo = f"bench/r{rnd}-oras"
            res = self.python_contender({"kind": "oras-push", "host": host, "ref": f"{host}/{repo}:v1",
                                         "file": FILE_NAME})
            if not (self.registry.has_blob(repo, self.digest) and self.registry.has_manifest(repo, "v1")):
                raise RuntimeError(f"{name}: blob or manifest missing afterwards")
            return res
        if name in ("ociart pull", ONE_STREAM, "oras-py pull"):
            self._fresh_out()
            kind = "oras-pull" if name == "oras-py pull" else "ociart-pull"
            res = self.python_contender({"kind": kind, "host": self.pull_host,
                                         "ref": f"{self.pull_host}/{self.source_repo}:v1",
                                         "outdir": str(self.out_dir), "max_streams": 1 if name == ONE_STREAM else None},
                                        env={**self.env, "OCIART_HOME": str(self.homes / "pull")})
            self._check_pulled(name)
            return res
        raise ValueError(name)

    def run(self) -> dict[str, list[dict[str, Any]]]:
        chosen = self.args.only
        push = [n for n in PUSH if n in chosen]
        pull = [n for n in PULL if n in chosen]
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in ALL if name in chosen}
        for rnd in range(self.args.rounds):
            # interleaved; the order inside each group rotates from round to round
            order = [*push[rnd % max(1, len(push)):], *push[:rnd % max(1, len(push))],
                     *pull[rnd % max(1, len(pull)):], *pull[:rnd % max(1, len(pull))],
                     *([REPUSH] if REPUSH in chosen else [])]
            for name in order:
                res = self.run_one(name, rnd)
                res["round"] = rnd
                results[name].append(res)
                extra = f", {res['bytes_uploaded']} blob bytes sent" if "bytes_uploaded" in res else ""
                extra += f", {res['streams']} streams" if "streams" in res else ""
                _log(f"round {rnd + 1}/{self.args.rounds}  {name:<14} {res['seconds']:7.2f} s  "
                     f"(process {res['process_seconds']:.2f} s)  peak RSS {res['peak_rss_kb'] / 1000 * 1.024:7.1f} MB"
                     f"{extra}")
        return results


# ------------------------------------------------------------------------------------------------ report

def _mb(kb: int) -> float:
    return kb * 1024 / 1e6


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        secs = [r["seconds"] for r in runs]
        summary[name] = {
            "seconds": secs,
            "median_s": statistics.median(secs),
            "process_seconds": [r["process_seconds"] for r in runs],
            "median_process_s": statistics.median(r["process_seconds"] for r in runs),
            "peak_rss_kb": [r["peak_rss_kb"] for r in runs],
            "peak_rss_mb": max(_mb(r["peak_rss_kb"]) for r in runs),
        }
        if any("bytes_uploaded" in r for r in runs):
            summary[name]["bytes_uploaded"] = [r.get("bytes_uploaded") for r in runs]
    for name, base in BASELINE.items():
        if name not in summary or base not in summary:
            continue
        s, b = summary[name], summary[base]
        s["ratio_vs_curl"] = s["median_s"] / b["median_s"]
        s["ratio_vs_curl_per_round"] = [x / y for x, y in zip(s["seconds"], b["seconds"])]
    if ONE_STREAM in summary:
        for name in PULL:
            if name in summary:
                summary[name]["ratio_vs_one_stream"] = summary[name]["median_s"] / summary[ONE_STREAM]["median_s"]
    return summary


def check_targets(summary: dict[str, Any], throttled: bool) -> list[dict[str, Any]]:
    """The issue's targets that this run measured (a contender left out with --only: its rows are left out)."""
    rows: list[tuple[str, str, float, str, bool]] = []

    def ratio(name: str) -> float | None:
        return summary.get(name, {}).get("ratio_vs_curl")

    if not throttled:
        if (r := ratio("ociart push")) is not None:
            rows.append(("ociart push time", f"<= {PUSH_RATIO_MAX:.2f}x curl push", r, f"{r:.2f}x",
                         r <= PUSH_RATIO_MAX))
        if (r := ratio("ociart model push")) is not None:
            rows.append(("ociart --kind model push time", f"<= {PUSH_RATIO_MAX:.2f}x curl push", r, f"{r:.2f}x",
                         r <= PUSH_RATIO_MAX))
        if "ociart model push" in summary and "ociart push" in summary:
            t = summary["ociart model push"]["median_s"] / summary["ociart push"]["median_s"]
            rows.append(("typed vs generic push", f"<= {TYPED_VS_GENERIC_MAX:.2f}x", t, f"{t:.2f}x",
                         t <= TYPED_VS_GENERIC_MAX))
        if (r := ratio("ociart pull")) is not None:
            rows.append(("ociart digest-verified pull time", f"<= {PULL_RATIO_MAX:.2f}x curl pull", r, f"{r:.2f}x",
                         r <= PULL_RATIO_MAX))
        if (r := ratio(ONE_STREAM)) is not None:
            rows.append(("ociart pull, one stream", f"<= {PULL_RATIO_MAX:.2f}x curl pull", r, f"{r:.2f}x",
                         r <= PULL_RATIO_MAX))
        if "ociart pull" in summary and ONE_STREAM in summary:
            t = summary["ociart pull"]["ratio_vs_one_stream"]
            rows.append(("unthrottled: ranged vs one stream", "<= 1.00x (no regression)", t, f"{t:.2f}x", t <= 1.0))
    elif "ociart pull" in summary and ONE_STREAM in summary:
        speedup = 1 / summary["ociart pull"]["ratio_vs_one_stream"]
        rows.append(("throttled: ranged pull speedup vs one stream", f">= {THROTTLED_SPEEDUP_MIN:.1f}x", speedup,
                     f"{speedup:.2f}x", speedup >= THROTTLED_SPEEDUP_MIN))
    ours = [n for n in ("ociart push", "ociart model push", "ociart pull", ONE_STREAM, REPUSH) if n in summary]
    if ours:
        rss = max(summary[n]["peak_rss_mb"] for n in ours)
        rows.append(("ociart peak RSS", f"<= {RSS_MB_MAX:.0f} MB", rss, f"{rss:.0f} MB", rss <= RSS_MB_MAX))
    if REPUSH in summary:
        repush_bytes = max(summary[REPUSH]["bytes_uploaded"])
        rows.append(("ociart re-push blob bytes", "0 bytes", repush_bytes, f"{repush_bytes} bytes",
                     repush_bytes == 0))
    return [{"name": n, "target": t, "measured": m, "measured_text": mt, "pass": ok} for n, t, m, mt, ok in rows]


def render(summary: dict[str, Any], targets: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    target_col = {
        "ociart push": f"<= {PUSH_RATIO_MAX:.2f}x, <= {RSS_MB_MAX:.0f} MB",
        "ociart model push": f"<= {PUSH_RATIO_MAX:.2f}x, <= {TYPED_VS_GENERIC_MAX:.2f}x generic",
        "ociart pull": f"<= {PULL_RATIO_MAX:.2f}x, <= {RSS_MB_MAX:.0f} MB",
        REPUSH: f"0 bytes, <= {RSS_MB_MAX:.0f} MB",
    }
    lines = [f"{meta['size_mib']} MiB random blob, {meta['rounds']} rounds, distribution {meta['registry_version']}"
             f"{' on S3 (moto, 307 redirects)' if meta['s3'] else ''}"
             f"{', throttled to %s MB/s per connection' % meta['throttle_mbps'] if meta['throttle_mbps'] else ''}, "
             f"nproc {meta['nproc']}, Python {meta['python']}, {meta['date']}",
             f"ociart {meta['ociart_git']}; load average (1 min) before/after "
             f"{meta['loadavg_1min_before_after'][0]}/{meta['loadavg_1min_before_after'][1]}",
             "",
             f"{'contender':<21} {'median s':>9} {'vs curl':>8} {'vs 1 str':>8} {'process s':>10} "
             f"{'peak RSS MB':>12}  {'per-round s':<22} target",
             "-" * 122]
    for name in ALL:
        if name not in summary:
            continue
        s = summary[name]
        ratio = f"{s['ratio_vs_curl']:.2f}x" if "ratio_vs_curl" in s else "-"
        vs_one = f"{s['ratio_vs_one_stream']:.2f}x" if "ratio_vs_one_stream" in s else "-"
        rounds = "/".join(f"{x:.2f}" for x in s["seconds"])
        target = target_col.get(name, "")
        if name == REPUSH:
            target = f"{target}  (sent {'/'.join(str(b) for b in s['bytes_uploaded'])} bytes)"
        elif name in ("ociart push", "ociart model push"):
            target = f"{target}  (sent {'/'.join(str(b) for b in s['bytes_uploaded'])} bytes)"
        lines.append(f"{name:<21} {s['median_s']:>9.2f} {ratio:>8} {vs_one:>8} {s['median_process_s']:>10.2f} "
                     f"{s['peak_rss_mb']:>12.1f}  {rounds:<22} {target}")
    lines += ["", "targets:"]
    for t in targets:
        lines.append(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['name']:<46} target {t['target']:<20} "
                     f"measured {t['measured_text']}")
    lines += ["", "seconds: curl = process wall time; Python contenders = library call inside the runner "
                  "(process s adds interpreter start-up and imports). Ratios = median / median of curl.",
              "sent = RegistryTarget.bytes_uploaded (blob bytes; a cold ociart push includes the 2-byte empty config)."]
    return "\n".join(lines)


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def _git_state() -> str:
    """Commit of the measured library and whether ``ociart/`` had uncommitted changes."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "ociart"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit or 'unknown'}{' + uncommitted changes in ociart/' if dirty else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the random blob in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every contender (default 5)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results on stdout only")
    parser.add_argument("--tmpdir", default=None, help="where to put the temp dir (default: system temp)")
    parser.add_argument("--no-sync", action="store_true", help="do not os.sync() before each measured run")
    parser.add_argument("--rss-wrapper", action="store_true",
                        help="measure peak RSS with the Python wrapper even if GNU time is installed")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (debugging)")
    parser.add_argument("--throttle", type=float, default=None, metavar="MBPS",
                        help="cap every blob response (each connection) at MBPS MB/s through a fault proxy")
    parser.add_argument("--s3", action="store_true", help="the registry stores blobs in S3 (moto_server, redirects)")
    parser.add_argument("--only", default=",".join(ALL),
                        help=f"comma-separated contenders to run (default all: {', '.join(ALL)})")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.rounds < 1:
        parser.error("--size-mib and --rounds must be >= 1")
    args.only = [n.strip() for n in args.only.split(",") if n.strip()]
    if unknown := [n for n in args.only if n not in ALL]:
        parser.error(f"unknown contenders {unknown}; choose from {', '.join(ALL)}")

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    git_state = _git_state()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="ociart-bench-", dir=args.tmpdir))
    bench: Bench | None = None
    try:
        bench = Bench(args, work)
        bench.setup()
        results = bench.run()
    finally:
        if bench is not None and getattr(bench, "proxy", None) is not None:
            bench.proxy.stop()
        if bench is not None and getattr(bench, "registry", None) is not None:
            bench.registry.stop()
        if args.keep:
            _log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    meta = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "size_mib": args.size_mib, "rounds": args.rounds, "nproc": os.cpu_count(),
        "python": platform.python_version(), "platform": platform.platform(),
        "registry_version": _version(["docker-registry", "--version"]).split()[-1],
        "curl": _version(["curl", "--version"]).split(" (")[0],
        "rss_source": "GNU time -v" if bench.use_gnu_time else
        "curl: minimal python wrapper RUSAGE_CHILDREN; python contenders: their own RUSAGE_SELF",
        "digest": bench.digest,
        "ociart_git": git_state,
        "loadavg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "s3": args.s3, "throttle_mbps": args.throttle, "skopeo": _version(["skopeo", "--version"]),
    }
    summary = summarise(results)
    targets = check_targets(summary, bool(args.throttle))
    if args.json:
        print(json.dumps({"meta": meta, "results": summary, "runs": results, "targets": targets}, indent=2))
    else:
        print(render(summary, targets, meta))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_run":
        sys.exit(_runner(sys.argv[2]))
    sys.exit(main())
