#!/usr/bin/env python3
"""Packaging benchmark: a many-small-files dataset vs ``tar`` + curl, and the re-push of an unchanged model.

    python benchmarks/packaging.py [--files 10000] [--model-mib 1024] [--rounds 3] [--json]

Starts its own ``docker-registry serve`` (the starter of ``benchmarks/transfer.py``, imported as a module) on a
free loopback port with storage in a temp dir, then:

1. Dataset: ``--files`` files of ``--file-kib`` KiB random bytes, nested (``--dirs`` directories) and flat (one
   directory; ``--no-flat`` skips it). Each round runs, as separate subprocesses under ``/usr/bin/time -v``,
   interleaved (the order inside the push pair and the pull pair alternates per round):
   ``tar + curl push`` (tar -cf, sha256sum, POST + PUT of the tar as one blob), ``ociart push`` (library
   ``Client.push(ref, [dir], kind="dataset")``, fresh ``OCIART_HOME``, its own repository), ``curl + tar pull``
   (GET of a source blob into a file, then ``tar -xf`` into a fresh dir) and ``ociart pull`` (``Client.pull`` of
   a source artifact into a fresh dir). Pulled trees are checked untimed (file count, total size, sample digests)
   and kept until the end (deleting them between runs slows the next run's file creation on ext4).
2. Model: a directory with a ``--model-mib`` MiB random ``model.safetensors``, ``config.json`` and
   ``tokenizer.json``, older than 2 s, pushed once with ``kind="model"`` (untimed; warms the digest cache). Each
   round then re-pushes it to the same reference as a library call and through the real CLI
   (``ociart push --plain-http REF DIR --kind model``, whole process), interleaved. Blob bytes sent: the library
   counter (``RegistryTarget.bytes_uploaded``) for the library call and for an instrumented in-process run of the
   CLI's ``run(argv)``; for the real CLI process, the registry side: whether the repository's ``_uploads``
   directory changed (any upload session started by POST changes it; checked to be sensitive at the end).

``seconds``: tar/curl contenders = process wall time; ociart library contenders = the library call inside the
runner (client creation + push/pull + close), without interpreter start-up and imports, which ``process s`` adds;
the CLI contender = the whole ``ociart`` process. Everything it created is deleted at the end.

Note: this file is named like the PyPI ``packaging`` distribution; it removes its own directory from ``sys.path``
so that ``import packaging`` elsewhere still finds the real one.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE.parent]  # see the note above

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from typing import Any


def _load_transfer() -> Any:
    # benchlib.load_transfer, repeated: this script takes its own directory off sys.path (see the note above)
    spec = importlib.util.spec_from_file_location("ociart_bench_transfer", HERE.parent / "transfer.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


tx = _load_transfer()  # Registry, _log, _parse_gnu_time, _version, _git_state

GNU_TIME = "/usr/bin/time"
OCIART_CLI = str(Path(sys.executable).parent / "ociart")

TAR_PUSH, OCI_PUSH, TAR_PULL, OCI_PULL = "tar + curl push", "ociart push", "curl + tar pull", "ociart pull"
LIB_REPUSH, CLI_REPUSH = "ociart re-push (library)", "ociart re-push (CLI)"
BASELINE = {OCI_PUSH: TAR_PUSH, OCI_PULL: TAR_PULL}

#: Targets from the issue.
DATASET_RATIO_MAX = 1.5
LIB_REPUSH_MAX_S = 0.2
CLI_REPUSH_MAX_S = 0.5
SAMPLES = 8  # pulled files whose sha256 is checked


# ------------------------------------------------------------------------------------------------ runner mode
# `packaging.py _run SPEC.json` executes one ociart contender and writes its result to spec["result"].

def _runner(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    kind: str = spec["kind"]
    out: dict[str, Any] = {}
    import filelock  # noqa: F401  (imported lazily by the embedded store's first lock)
    import httpcore  # noqa: F401  (httpx imports it lazily, at the first client)
    import ociart
    import ociart.client  # imports outside the timed region
    import ociart.packaging.pack
    import ociart.packaging.unpack
    import ociart.targets.registry

    if kind == "cli":
        # The CLI's own entry (ociart.cli.app.run), instrumented to report the bytes each target sent.
        sent: list[int] = []
        orig_close = ociart.targets.registry.RegistryTarget.close

        def close(self: Any) -> None:
            sent.append(self.bytes_uploaded)
            orig_close(self)

        ociart.targets.registry.RegistryTarget.close = close  # type: ignore[method-assign]
        from ociart.cli.app import run

        t0 = time.perf_counter()
        code = run(spec["argv"])
        out["seconds"] = time.perf_counter() - t0
        if code != 0:
            raise SystemExit(f"ociart {' '.join(spec['argv'])} exited {code}")
        out["bytes_uploaded"] = sum(sent)
        Path(spec["result"]).write_text(json.dumps(out))
        return 0

    t0 = time.perf_counter()
    client = ociart.Client(plain_http=True)
    try:
        if kind == "push":
            desc = client.push(spec["ref"], [spec["dir"]], kind=spec["artifact_kind"])
            out["bytes_uploaded"] = client.target(client.ref(spec["ref"])).bytes_uploaded
            out["manifest_digest"] = desc.digest
        elif kind == "pull":
            res = client.pull(spec["ref"], spec["outdir"])
            out["files"] = len(res.files)
            out["manifest_digest"] = res.digest
        else:
            raise SystemExit(f"unknown runner kind {kind!r}")
    finally:
        client.close()
    out["seconds"] = time.perf_counter() - t0
    Path(spec["result"]).write_text(json.dumps(out))
    return 0


# ------------------------------------------------------------------------------------------------ shell contenders

#: $1 dir, $2 tar file, $3 uploads URL, $4 registry origin. Prints the digest. Timed as a whole.
TAR_PUSH_SH = r'''set -e
tar -cf "$2" -C "$1" .
d="sha256:$(sha256sum "$2" | cut -d" " -f1)"
loc=$(curl -sS -f --noproxy "*" -D - -o /dev/null -X POST "$3" | tr -d "\r" | sed -n "s/^[Ll]ocation: *//p")
[ -n "$loc" ] || exit 2
case "$loc" in http*) ;; *) loc="$4$loc";; esac
case "$loc" in *\?*) sep="&";; *) sep="?";; esac
curl -sS -f --noproxy "*" -o /dev/null -T "$2" -X PUT -H "Content-Type: application/octet-stream" \
    "$loc${sep}digest=$d"
echo "$d"
'''

#: $1 blob URL, $2 tar file, $3 output dir (exists, empty).
TAR_PULL_SH = r'''set -e
curl -sS -f --noproxy "*" -o "$2" "$1"
tar -xf "$2" -C "$3"
'''


# ------------------------------------------------------------------------------------------------ data

def _make_dataset(root: Path, files: int, dirs: int, size: int) -> dict[str, str]:
    """``files`` random files spread over ``dirs`` directories; returns rel path -> sha256 of a few samples."""
    per_dir = -(-files // dirs)
    pick = set(range(0, files, max(1, files // SAMPLES)))
    samples: dict[str, str] = {}
    n = 0
    for d in range(dirs):
        sub = root / f"part-{d:04d}" if dirs > 1 else root
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(min(per_dir, files - n)):
            data = os.urandom(size)
            rel = f"{sub.relative_to(root).as_posix()}/{i:05d}.bin" if dirs > 1 else f"{i:05d}.bin"
            (root / rel).write_bytes(data)
            if n in pick:
                samples[rel] = hashlib.sha256(data).hexdigest()
            n += 1
    return samples


def _make_model(root: Path, mib: int) -> str:
    root.mkdir(parents=True)
    h = hashlib.sha256()
    with open(root / "model.safetensors", "wb") as f:
        for _ in range(mib // 16):
            chunk = os.urandom(16 << 20)
            h.update(chunk)
            f.write(chunk)
        if mib % 16:
            chunk = os.urandom((mib % 16) << 20)
            h.update(chunk)
            f.write(chunk)
    (root / "config.json").write_text(json.dumps({
        "architectures": ["BenchForCausalLM"], "model_type": "bench", "hidden_size": 2048,
        "num_hidden_layers": 16, "torch_dtype": "bfloat16", "vocab_size": 32000}, indent=2) + "\n")
    vocab = {f"tok{i:05d}": i for i in range(32000)}  # ~0.5 MB, about the size of a BERT tokenizer.json
    (root / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": vocab}}))
    return "sha256:" + h.hexdigest()


def _wait_older_than(paths: list[Path], seconds: float) -> None:
    """ociart's digest cache ignores files modified within the last 2 s; any real re-push sees older files."""
    newest = max(p.stat().st_mtime for p in paths)
    age = time.time() - newest
    if age < seconds:
        time.sleep(seconds - age)


def _check_tree(out: Path, files: int, size: int, samples: dict[str, str], who: str) -> None:
    count = total = 0
    for dirpath, _dirs, names in os.walk(out):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            count += 1
            total += st.st_size
    if count != files or total != files * size:
        raise RuntimeError(f"{who}: pulled {count} files / {total} bytes, expected {files} / {files * size}")
    for rel, digest in samples.items():
        if hashlib.sha256((out / rel).read_bytes()).hexdigest() != digest:
            raise RuntimeError(f"{who}: {rel} has the wrong content")


# ------------------------------------------------------------------------------------------------ bench

class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.use_gnu_time = os.access(GNU_TIME, os.X_OK)
        if not self.use_gnu_time:
            tx._log(f"note: {GNU_TIME} not found (apt-get install time); peak RSS is not reported")
        self.env = dict(os.environ)
        for var in ("NO_PROXY", "no_proxy"):
            self.env[var] = ",".join(filter(None, [self.env.get(var), "127.0.0.1", "localhost"]))
        self.env.pop("OCIART_UPLOAD_STRATEGY", None)
        self.env.pop("SOURCE_DATE_EPOCH", None)
        self.seq = 0
        self.homes = work / "homes"
        self.homes.mkdir()
        self.scratch = work / "scratch"
        self.scratch.mkdir()
        self.registry: Any = None

    # one measured subprocess ---------------------------------------------------------------------
    def measure(self, cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int | None, str]:
        """Run ``cmd``; return (wall seconds, peak RSS kB or None, stdout)."""
        self.seq += 1
        rss_file = self.work / f"rss-{self.seq}.txt"
        full = [GNU_TIME, "-v", "-o", str(rss_file), *cmd] if self.use_gnu_time else cmd
        if not self.args.no_sync:
            os.sync()  # the previous run's dirty pages are not written back during this one
        t0 = time.perf_counter()
        proc = subprocess.run(full, env=env or self.env, cwd=self.work, stdin=subprocess.DEVNULL,
                              capture_output=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n"
                               f"{proc.stdout.decode(errors='replace')[-3000:]}\n"
                               f"{proc.stderr.decode(errors='replace')[-3000:]}")
        rss = None
        if self.use_gnu_time:
            rss = tx._parse_gnu_time(rss_file.read_text())
            rss_file.unlink()
        return wall, rss, proc.stdout.decode(errors="replace")

    def runner(self, spec: dict[str, Any], home: Path) -> dict[str, Any]:
        self.seq += 1
        spec_path = self.work / f"spec-{self.seq}.json"
        result_path = self.work / f"result-{self.seq}.json"
        spec_path.write_text(json.dumps({**spec, "result": str(result_path)}))
        wall, rss, _ = self.measure([sys.executable, str(HERE), "_run", str(spec_path)],
                                    env={**self.env, "OCIART_HOME": str(home)})
        out = json.loads(result_path.read_text())
        spec_path.unlink()
        result_path.unlink()
        return {"seconds": out.pop("seconds"), "process_seconds": wall, "peak_rss_kb": rss, **out}

    def _uploads_state(self, repo: str) -> tuple[int, int] | None:
        d = self.registry.root / "docker/registry/v2/repositories" / repo / "_uploads"
        try:
            st = d.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, len(os.listdir(d))

    # dataset ---------------------------------------------------------------------------------------
    def setup_dataset(self) -> None:
        a = self.args
        self.variants: dict[str, dict[str, Any]] = {}
        layouts = [("nested", min(a.dirs, a.files))] + ([("flat", 1)] if not a.no_flat else [])
        for name, dirs in layouts:
            root = self.work / f"dataset-{name}"
            tx._log(f"writing {a.files} files of {a.file_kib} KiB in {dirs} director{'ies' if dirs > 1 else 'y'} "
                    f"({name}) ...")
            samples = _make_dataset(root, a.files, dirs, a.file_kib << 10)
            v = {"root": root, "dirs": dirs, "samples": samples}
            # sources for the pull contenders (untimed)
            tar = self.scratch / f"source-{name}.tar"
            repo = f"bench/{name}-source-tar"
            _, _, stdout = self.measure(["sh", "-c", TAR_PUSH_SH, "sh", str(root), str(tar),
                                         f"{self.registry.url}/v2/{repo}/blobs/uploads/", self.registry.url])
            v["tar_digest"] = stdout.strip().splitlines()[-1]
            v["tar_size"] = tar.stat().st_size
            v["tar_url"] = f"{self.registry.url}/v2/{repo}/blobs/{v['tar_digest']}"
            tar.unlink()
            if not self.registry.has_blob(repo, v["tar_digest"]):
                raise RuntimeError("source tar blob missing")
            v["source_ref"] = f"{self.registry.host}/bench/{name}-source-ociart:v1"
            res = self.runner({"kind": "push", "ref": v["source_ref"], "dir": str(root), "artifact_kind": "dataset"},
                              self.homes / f"{name}-source")
            v["ociart_source_bytes"] = res["bytes_uploaded"]
            self.variants[name] = v

    def run_dataset_one(self, variant: str, name: str, rnd: int) -> dict[str, Any]:
        v = self.variants[variant]
        files, size = self.args.files, self.args.file_kib << 10
        # Every pull gets its own fresh output dir, deleted only at the end: deleting 10,000 files between runs
        # makes the next run's file creation slow (ext4 skips recently deleted inodes, see the README).
        out = self.scratch / f"out-{variant}-r{rnd}-{'tar' if name == TAR_PULL else 'ociart'}"
        if name == TAR_PUSH:
            repo = f"bench/{variant}-r{rnd}-tar"
            tar = self.scratch / "push.tar"
            wall, rss, stdout = self.measure(["sh", "-c", TAR_PUSH_SH, "sh", str(v["root"]), str(tar),
                                              f"{self.registry.url}/v2/{repo}/blobs/uploads/", self.registry.url])
            digest = stdout.strip().splitlines()[-1]
            tar_size = tar.stat().st_size
            tar.unlink()
            if not self.registry.has_blob(repo, digest):
                raise RuntimeError(f"{name}: blob not in the registry afterwards")
            return {"seconds": wall, "process_seconds": wall, "peak_rss_kb": rss, "bytes_uploaded": tar_size}
        if name == OCI_PUSH:
            repo = f"bench/{variant}-r{rnd}-ociart"
            home = self.homes / f"{variant}-r{rnd}"
            home.mkdir()  # cold: no digest cache
            res = self.runner({"kind": "push", "ref": f"{self.registry.host}/{repo}:v1", "dir": str(v["root"]),
                               "artifact_kind": "dataset"}, home)
            if not self.registry.has_manifest(repo, "v1"):
                raise RuntimeError(f"{name}: manifest missing afterwards")
            return res
        if name == TAR_PULL:
            out.mkdir()
            tar = self.scratch / "pull.tar"
            wall, rss, _ = self.measure(["sh", "-c", TAR_PULL_SH, "sh", v["tar_url"], str(tar), str(out)])
            tar.unlink()
            _check_tree(out, files, size, v["samples"], name)
            return {"seconds": wall, "process_seconds": wall, "peak_rss_kb": rss}
        if name == OCI_PULL:
            out.mkdir()
            home = self.homes / f"pull-{variant}-r{rnd}"
            home.mkdir()
            res = self.runner({"kind": "pull", "ref": v["source_ref"], "outdir": str(out)}, home)
            _check_tree(out, files, size, v["samples"], name)
            return res
        raise ValueError(name)

    # model -----------------------------------------------------------------------------------------
    def setup_model(self) -> None:
        self.model_dir = self.work / "model"
        tx._log(f"writing a {self.args.model_mib} MiB model.safetensors + config.json + tokenizer.json ...")
        self.model_digest = _make_model(self.model_dir, self.args.model_mib)
        _wait_older_than(list(self.model_dir.iterdir()), 2.5)
        self.model_repo = "bench/model"
        self.model_ref = f"{self.registry.host}/{self.model_repo}:v1"
        self.model_home = self.homes / "model"
        self.model_home.mkdir()
        res = self.runner({"kind": "push", "ref": self.model_ref, "dir": str(self.model_dir), "artifact_kind": "model"},
                          self.model_home)
        self.model_manifest = res["manifest_digest"]
        self.model_first_push = res
        if not self.registry.has_blob(self.model_repo, self.model_digest):
            raise RuntimeError("first model push did not store the weights")
        tx._log(f"first (cold) model push: {res['seconds']:.2f} s, {res['bytes_uploaded']:,} bytes sent, "
                f"manifest {self.model_manifest}")

    def run_model_one(self, name: str) -> dict[str, Any]:
        before = self._uploads_state(self.model_repo)
        if name == LIB_REPUSH:
            res = self.runner({"kind": "push", "ref": self.model_ref, "dir": str(self.model_dir),
                               "artifact_kind": "model"}, self.model_home)
        elif name == CLI_REPUSH:
            wall, rss, stdout = self.measure(
                [OCIART_CLI, "push", "--plain-http", self.model_ref, str(self.model_dir), "--kind", "model"],
                env={**self.env, "OCIART_HOME": str(self.model_home)})
            res = {"seconds": wall, "process_seconds": wall, "peak_rss_kb": rss,
                   "manifest_digest": stdout.strip().splitlines()[-1]}
        else:
            raise ValueError(name)
        res["upload_sessions_seen"] = self._uploads_state(self.model_repo) != before
        if res["manifest_digest"] != self.model_manifest:
            raise RuntimeError(f"{name}: manifest {res['manifest_digest']} differs from the first push's")
        return res

    def model_cli_counted(self) -> dict[str, Any]:
        """The CLI's code path in-process with the library byte counter (untimed for the target)."""
        return self.runner({"kind": "cli", "argv": ["push", "--plain-http", self.model_ref, str(self.model_dir),
                                                    "--kind", "model"]}, self.model_home)

    def uploads_detector_works(self) -> bool:
        """Start (and cancel) one upload session by hand: the registry-side check must see it."""
        before = self._uploads_state(self.model_repo)
        time.sleep(0.02)
        status, headers, _ = tx._http("POST", f"{self.registry.url}/v2/{self.model_repo}/blobs/uploads/")
        if status != 202:
            return False
        loc = headers["location"]
        tx._http("DELETE", loc if loc.startswith("http") else self.registry.url + loc)
        return self._uploads_state(self.model_repo) != before

    # all -------------------------------------------------------------------------------------------
    def run(self) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], dict[str, Any]]:
        results: dict[str, dict[str, list[dict[str, Any]]]] = {}
        extra: dict[str, Any] = {}
        self.registry = tx.Registry(self.work / "registry")
        tx._log(f"registry {self.registry.url}")
        if not self.args.skip_dataset:
            self.setup_dataset()
            for variant in self.variants:
                results[f"dataset-{variant}"] = {n: [] for n in (TAR_PUSH, OCI_PUSH, TAR_PULL, OCI_PULL)}
            for rnd in range(self.args.rounds):
                for variant in self.variants:
                    pushes = [TAR_PUSH, OCI_PUSH] if rnd % 2 == 0 else [OCI_PUSH, TAR_PUSH]
                    pulls = [TAR_PULL, OCI_PULL] if rnd % 2 == 0 else [OCI_PULL, TAR_PULL]
                    for name in pushes + pulls:
                        res = self.run_dataset_one(variant, name, rnd)
                        res["round"] = rnd
                        results[f"dataset-{variant}"][name].append(res)
                        sent = f", {res['bytes_uploaded']:,} bytes sent" if "bytes_uploaded" in res else ""
                        tx._log(f"round {rnd + 1}/{self.args.rounds}  {variant:<6} {name:<16} {res['seconds']:6.2f} s"
                                f"  (process {res['process_seconds']:.2f} s){sent}")
            extra["dataset"] = {name: {"dirs": v["dirs"], "tar_size": v["tar_size"],
                                       "ociart_source_bytes": v["ociart_source_bytes"]}
                                for name, v in self.variants.items()}
        if not self.args.skip_model:
            self.setup_model()
            results["model"] = {LIB_REPUSH: [], CLI_REPUSH: []}
            counted: list[dict[str, Any]] = []
            for rnd in range(self.args.rounds):
                order = [LIB_REPUSH, CLI_REPUSH] if rnd % 2 == 0 else [CLI_REPUSH, LIB_REPUSH]
                for name in order:
                    res = self.run_model_one(name)
                    res["round"] = rnd
                    results["model"][name].append(res)
                    sent = (f"{res['bytes_uploaded']} bytes sent" if "bytes_uploaded" in res else
                            "registry: " + ("upload session(s) started" if res["upload_sessions_seen"]
                                            else "no upload session"))
                    tx._log(f"round {rnd + 1}/{self.args.rounds}  model  {name:<26} {res['seconds']:6.3f} s  "
                            f"(process {res['process_seconds']:.2f} s), {sent}")
                c = self.model_cli_counted()
                counted.append(c)
                tx._log(f"round {rnd + 1}/{self.args.rounds}  model  CLI run(argv) in-process, counted: "
                        f"{c['bytes_uploaded']} bytes sent ({c['seconds']:.3f} s inside, "
                        f"{c['process_seconds']:.2f} s process)")
            extra["model"] = {"first_push": self.model_first_push, "cli_counted": counted,
                              "uploads_detector_works": self.uploads_detector_works(),
                              "weights_digest": self.model_digest, "manifest_digest": self.model_manifest}
        return results, extra


# ------------------------------------------------------------------------------------------------ report

def _summ(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rss = [r["peak_rss_kb"] for r in runs if r.get("peak_rss_kb") is not None]
    s = {"seconds": [r["seconds"] for r in runs], "median_s": statistics.median(r["seconds"] for r in runs),
         "process_seconds": [r["process_seconds"] for r in runs],
         "median_process_s": statistics.median(r["process_seconds"] for r in runs),
         "peak_rss_mb": max(rss) * 1024 / 1e6 if rss else None}
    if any("bytes_uploaded" in r for r in runs):
        s["bytes_uploaded"] = [r.get("bytes_uploaded") for r in runs]
    if any("upload_sessions_seen" in r for r in runs):
        s["upload_sessions_seen"] = [r["upload_sessions_seen"] for r in runs]
    return s


def summarise(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for group, contenders in results.items():
        summary[group] = {name: _summ(runs) for name, runs in contenders.items()}
        for name, base in BASELINE.items():
            if name in summary[group]:
                s, b = summary[group][name], summary[group][base]
                s["ratio"] = s["median_s"] / b["median_s"]
                s["process_ratio"] = s["median_process_s"] / b["median_process_s"]
    return summary


def check_targets(summary: dict[str, Any], extra: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[tuple[str, str, Any, str, bool]] = []
    for group in summary:
        if not group.startswith("dataset-"):
            continue
        for name in (OCI_PUSH, OCI_PULL):
            r = summary[group][name]["ratio"]
            rows.append((f"{group} {name}", f"<= {DATASET_RATIO_MAX}x {BASELINE[name]}", r, f"{r:.2f}x",
                         r <= DATASET_RATIO_MAX))
    if "model" in summary:
        lib, cli = summary["model"][LIB_REPUSH], summary["model"][CLI_REPUSH]
        rows.append(("model re-push, library call", f"<= {LIB_REPUSH_MAX_S} s", lib["median_s"],
                     f"{lib['median_s']:.3f} s", lib["median_s"] <= LIB_REPUSH_MAX_S))
        rows.append(("model re-push, CLI process", f"<= {CLI_REPUSH_MAX_S} s", cli["median_s"],
                     f"{cli['median_s']:.3f} s", cli["median_s"] <= CLI_REPUSH_MAX_S))
        lib_bytes = max(lib["bytes_uploaded"])
        rows.append(("model re-push bytes, library counter", "0 bytes", lib_bytes, f"{lib_bytes} bytes",
                     lib_bytes == 0))
        counted = max(c["bytes_uploaded"] for c in extra["model"]["cli_counted"])
        rows.append(("model re-push bytes, CLI run(argv) counter", "0 bytes", counted, f"{counted} bytes",
                     counted == 0))
        seen = sum(cli["upload_sessions_seen"]) + sum(lib["upload_sessions_seen"])
        ok = seen == 0 and extra["model"]["uploads_detector_works"]
        rows.append(("model re-push, registry upload sessions", "0 (any re-push)", seen,
                     f"{seen} re-pushes started one" + ("" if extra["model"]["uploads_detector_works"]
                                                        else " (detector NOT sensitive)"), ok))
    return [{"name": n, "target": t, "measured": m, "measured_text": mt, "pass": ok} for n, t, m, mt, ok in rows]


def render(summary: dict[str, Any], targets: list[dict[str, Any]], extra: dict[str, Any],
           meta: dict[str, Any]) -> str:
    a = meta["args"]
    lines = [(f"{meta['date']}; nproc {meta['nproc']}, Python {meta['python']}, distribution "
             f"{meta['registry_version']}, {meta['curl']}, {meta['tar']}; ociart {meta['ociart_git']}; "
             f"{a['rounds']} rounds; load (1 min) before/after {meta['loadavg_1min_before_after'][0]}/"
             f"{meta['loadavg_1min_before_after'][1]}"), ""]
    head = (f"{'contender':<28} {'median s':>9} {'ratio':>6} {'process s':>10} {'proc ratio':>10} {'RSS MB':>7}  "
            f"{'per-round s':<24} target")
    for group, contenders in summary.items():
        if group.startswith("dataset-"):
            variant = group.removeprefix("dataset-")
            info = extra["dataset"][variant]
            lines.append(f"{group}: {a['files']} files x {a['file_kib']} KiB in {info['dirs']} "
                         f"director{'ies' if info['dirs'] > 1 else 'y'}; tar blob {info['tar_size']:,} bytes, "
                         f"ociart layers {info['ociart_source_bytes']:,} bytes")
        else:
            lines.append(f"model: {a['model_mib']} MiB model.safetensors + config.json + tokenizer.json, unchanged "
                         f"since the first push (cold push {extra['model']['first_push']['seconds']:.2f} s, "
                         f"{extra['model']['first_push']['bytes_uploaded']:,} bytes)")
        lines += [head, "-" * 124]
        for name, s in contenders.items():
            ratio = f"{s['ratio']:.2f}x" if "ratio" in s else "-"
            pratio = f"{s['process_ratio']:.2f}x" if "process_ratio" in s else "-"
            rss = f"{s['peak_rss_mb']:.1f}" if s["peak_rss_mb"] is not None else "-"
            digits = 3 if group == "model" else 2
            rounds = "/".join(f"{x:.{digits}f}" for x in s["seconds"])
            target = ""
            if name in BASELINE:
                ok = s["ratio"] <= DATASET_RATIO_MAX
                target = f"<= {DATASET_RATIO_MAX}x  {'PASS' if ok else 'FAIL'}"
            elif name == LIB_REPUSH:
                ok = s["median_s"] <= LIB_REPUSH_MAX_S and max(s["bytes_uploaded"]) == 0
                target = (f"<= {LIB_REPUSH_MAX_S} s, 0 B  {'PASS' if ok else 'FAIL'} (sent "
                          f"{'/'.join(str(b) for b in s['bytes_uploaded'])} B)")
            elif name == CLI_REPUSH:
                counted = [c["bytes_uploaded"] for c in extra["model"]["cli_counted"]]
                ok = (s["median_s"] <= CLI_REPUSH_MAX_S and not any(s["upload_sessions_seen"])
                      and max(counted) == 0)
                target = (f"<= {CLI_REPUSH_MAX_S} s, 0 B  {'PASS' if ok else 'FAIL'} (upload sessions "
                          f"{'/'.join(str(int(x)) for x in s['upload_sessions_seen'])}; run(argv) sent "
                          f"{'/'.join(str(b) for b in counted)} B)")
            elif "bytes_uploaded" in s and name == OCI_PUSH:
                target = f"(sent {'/'.join(f'{b:,}' for b in s['bytes_uploaded'])} B)"
            lines.append(f"{name:<28} {s['median_s']:>9.{digits}f} {ratio:>6} {s['median_process_s']:>10.2f} "
                         f"{pratio:>10} {rss:>7}  {rounds:<24} {target}")
        lines.append("")
    lines.append("targets:")
    for t in targets:
        lines.append(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['name']:<44} target {t['target']:<28} "
                     f"measured {t['measured_text']}")
    lines += ["", ("seconds: tar/curl = process wall time; ociart push/pull/re-push (library) = the library call inside "
              "the runner (process s adds interpreter start-up and imports); ociart re-push (CLI) = the whole "
              "`ociart push` process. ratio = median / median of the tar/curl baseline; proc ratio uses process s."),
              ("CLI bytes: the real CLI process is checked registry-side (did the repository's _uploads directory "
              "change: any POST upload session does); run(argv) = the CLI entry in-process with the library counter, "
               "run after the real CLI in each round (so it sees that round's end state).")]
    return "\n".join(lines)


def _ociart_dir() -> Path:
    """The ociart package the contenders import (PYTHONPATH can point them at another copy)."""
    out = subprocess.run([sys.executable, "-c", "import ociart, os; print(os.path.dirname(ociart.__file__))"],
                         capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir(), check=False)
    return Path(out.stdout.strip()).resolve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10000, help="dataset files (default 10000)")
    parser.add_argument("--file-kib", type=int, default=4, help="size of each dataset file in KiB (default 4)")
    parser.add_argument("--dirs", type=int, default=100, help="directories of the nested dataset (default 100)")
    parser.add_argument("--no-flat", action="store_true", help="skip the flat (one directory) dataset variant")
    parser.add_argument("--model-mib", type=int, default=1024, help="size of model.safetensors in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every contender (default 3)")
    parser.add_argument("--skip-dataset", action="store_true", help="run only the model re-push benchmark")
    parser.add_argument("--skip-model", action="store_true", help="run only the dataset benchmark")
    parser.add_argument("--json", action="store_true", help="print machine-readable results on stdout only")
    parser.add_argument("--tmpdir", default=None, help="where to put the temp dir (default: system temp)")
    parser.add_argument("--no-sync", action="store_true", help="do not os.sync() before each measured run")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (debugging)")
    args = parser.parse_args(argv)
    if args.files < 1 or args.file_kib < 1 or args.dirs < 1 or args.model_mib < 1 or args.rounds < 1:
        parser.error("--files, --file-kib, --dirs, --model-mib and --rounds must be >= 1")
    if args.skip_dataset and args.skip_model:
        parser.error("nothing to run")

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    ociart_dir = _ociart_dir()
    git_state = (tx._git_state() if ociart_dir == tx.REPO_ROOT / "ociart"
                 else f"imported from {ociart_dir} (not this checkout)")
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="ociart-bench-pkg-", dir=args.tmpdir))
    bench: Bench | None = None
    try:
        bench = Bench(args, work)
        results, extra = bench.run()
    finally:
        if bench is not None and bench.registry is not None:
            bench.registry.stop()
        if args.keep:
            tx._log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "args": vars(args), "nproc": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(),
        "registry_version": tx._version(["docker-registry", "--version"]).split()[-1],
        "curl": tx._version(["curl", "--version"]).split(" (")[0],
        "tar": tx._version(["tar", "--version"]),
        "ociart_git": git_state,
        "loadavg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    summary = summarise(results)
    targets = check_targets(summary, extra)
    if args.json:
        print(json.dumps({"meta": meta, "results": summary, "runs": results, "extra": extra, "targets": targets},
                         indent=2))
    else:
        print(render(summary, targets, extra, meta))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_run":
        sys.exit(_runner(sys.argv[2]))
    sys.exit(main())
