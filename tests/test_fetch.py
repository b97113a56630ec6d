"""`ociart fetch`: the deploy-time fetcher, run as a subprocess against a real registry (behind the fault proxy where
bytes are counted): cold fetch, idempotent re-run with no blob requests, SIGKILL and resume, a tampered layer, an
unsigned artifact, a tag moved after resolution, replacement of a previous fetch, the node cache shared by two
concurrent fetches, JSON log lines, the environment (kitops-init aliases, KServe's form, HOME unset)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli, write_random
from support.faultproxy import FaultProxy
from support.registry import RunningRegistry

import ociart
from ociart.deploy.fetch import DOWNLOAD, MARKER, fetch, kitops_filters, read_marker, source_reference
from ociart.deploy.nodecache import NodeCache, evict
from ociart.errors import LocalIOError, UsageError
from ociart.oci import Descriptor
from ociart.progress import Progress

MiB = 1 << 20
PASSWORD = "fetch-test"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fetch-keys")
    os.environ.setdefault("COSIGN_PASSWORD", PASSWORD)
    ociart.generate_key_pair(d / "a", password=PASSWORD)
    ociart.generate_key_pair(d / "b", password=PASSWORD)
    return d


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(4 * MiB):
            h.update(data)
    return "sha256:" + h.hexdigest()


def _model(root: Path, size: int, seed: int = 0) -> Path:
    write_random(root / "weights.bin", size, seed=seed)
    (root / "config.json").write_text(json.dumps({"seed": seed}))
    (root / "docs").mkdir(exist_ok=True)
    (root / "docs" / "README.md").write_text(f"model {seed}\n")
    return root


def _push_signed(registry: RunningRegistry, repo: str, src: Path, keys: Path, tag: str = "v1",
                 sign: bool = True) -> str:
    ref = f"{registry.host}/{repo}:{tag}"
    with ociart.Client(plain_http=True) as c:
        d = c.push(ref, [src], kind="model")
        if sign:
            c.sign(d.ref, str(keys / "a.key"))
    return d.digest


def _fetch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("fetch", "--plain-http", *args, env={"COSIGN_PASSWORD": PASSWORD, **(env or {})})


def _events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _model_files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
            and not p.relative_to(out).as_posix().startswith(".ociart/")}


def test_fetch_needs_a_verifier_or_no_verify(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    r = _fetch(f"{registry.host}/{unique_repo}:v1", "-o", str(tmp_path / "out"))
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and all(o in line for o in ("--policy", "--verify-key", "--no-verify"))
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def test_cold_fetch_idempotent_rerun_and_json_events(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                     keys: Path) -> None:
    src = _model(tmp_path / "src", 5 * MiB + 7)
    digest = _push_signed(registry, unique_repo, src, keys)
    out = tmp_path / "out"
    (out).mkdir()
    (out / "keep.txt").write_text("not ours")  # no marker lists it: left alone
    with FaultProxy(registry.url) as proxy:
        ref = f"{proxy.host}/{unique_repo}:v1"
        r = _fetch(ref, "-o", str(out), "--verify-key", str(keys / "a.pub"), "--log-format", "json")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == digest
        events = _events(r.stderr)
        names = [e["event"] for e in events]
        assert names[0] == "resolved" and names[1] == "verified" and names[-1] == "done", names
        finished = [e for e in events if e["event"] == "blob_finished"]
        assert {e["digest"] for e in finished} >= {_sha(src / "weights.bin")}
        big = next(e for e in finished if e["digest"] == _sha(src / "weights.bin"))
        assert big["bytes"] == 5 * MiB + 7 and isinstance(big["seconds"], float)
        assert events[-1]["digest"] == digest and events[-1]["files"] == 3
        assert all(not line or line.startswith("{") for line in r.stderr.splitlines())  # nothing but events

        marker = read_marker(out)
        assert marker is not None and marker.digest == digest and marker.verification is not None
        assert sorted(f.path for f in marker.files) == ["config.json", "docs/README.md", "weights.bin"]
        for name in ("weights.bin", "config.json", "docs/README.md"):
            assert _sha(out / name) == _sha(src / name)
        assert (out / "keep.txt").read_text() == "not ours"
        assert sorted(os.listdir(out / ".ociart")) == ["fetched.json", "lock"]  # download and staging stores gone

        proxy.reset_counts()
        proxy.log.clear()
        again = _fetch(ref, "-o", str(out), "--verify-key", str(keys / "a.pub"), "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["up_to_date"] is True
        assert proxy.find("GET", f"/v2/{unique_repo}/blobs/sha256:{_sha(src / 'weights.bin')[7:]}") == []
        assert proxy.sent(f"/v2/{unique_repo}/blobs/{_sha(src / 'weights.bin')}") == 0

        # a file changed under the same size and mtime is caught by --verify-files only, then fetched again
        w = out / "weights.bin"
        st = w.stat()
        with open(w, "r+b") as f:
            f.write(b"X")
        os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert _fetch(ref, "-o", str(out), "--verify-key", str(keys / "a.pub"), "--json").returncode == 0
        assert _sha(w) != _sha(src / "weights.bin")  # the fast check trusts size + mtime
        fixed = _fetch(ref, "-o", str(out), "--verify-key", str(keys / "a.pub"), "--verify-files", "--json")
        assert fixed.returncode == 0, fixed.stderr
        assert json.loads(fixed.stdout)["up_to_date"] is False
        assert _sha(w) == _sha(src / "weights.bin")


def test_unsigned_and_wrong_key_refused(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                        keys: Path) -> None:
    _push_signed(registry, unique_repo, _model(tmp_path / "src", 1000), keys, sign=False)
    out = tmp_path / "out"
    r = _fetch(f"{registry.host}/{unique_repo}:v1", "-o", str(out), "--verify-key", str(keys / "a.pub"))
    assert r.returncode == 5, r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() or _model_files(out) == set()
    _push_signed(registry, unique_repo, _model(tmp_path / "src", 1000), keys, tag="v2")
    r = _fetch(f"{registry.host}/{unique_repo}:v2", "-o", str(out), "--verify-key", str(keys / "b.pub"))
    assert r.returncode == 5 and (not out.exists() or _model_files(out) == set())
    r = _fetch(f"{registry.host}/{unique_repo}:v1", "-o", str(out), "--no-verify", "--json")
    assert r.returncode == 0 and json.loads(r.stdout).get("verification") is None


def test_tampered_layer_gives_verification_code_and_no_model_files(registry: RunningRegistry, unique_repo: str,
                                                                   tmp_path: Path, keys: Path) -> None:
    src = _model(tmp_path / "src", 2 * MiB)
    _push_signed(registry, unique_repo, src, keys)
    data = registry.blob_data_path(_sha(src / "weights.bin"))
    original = data.read_bytes()
    data.write_bytes(bytes(b ^ 0x5A for b in original[:1000]) + original[1000:])
    out = tmp_path / "out"
    r = _fetch(f"{registry.host}/{unique_repo}:v1", "-o", str(out), "--verify-key", str(keys / "a.pub"))
    assert r.returncode == 5, r.stderr
    assert "digest" in r.stderr.strip().splitlines()[-1]
    assert _model_files(out) == set() and read_marker(out) is None


def test_tag_moved_after_resolution_changes_nothing(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                    keys: Path) -> None:
    v1 = _model(tmp_path / "v1", 4000, seed=1)
    v2 = _model(tmp_path / "v2", 5000, seed=2)
    d1 = _push_signed(registry, unique_repo, v1, keys)
    ref = f"{registry.host}/{unique_repo}:v1"

    class MoveTagOnResolve(Progress):
        def event(self, event: str, /, **fields: object) -> None:
            if event == "resolved":  # the tag moves right after fetch resolved it
                _push_signed(registry, unique_repo, v2, keys)

    out = tmp_path / "out"
    with ociart.Client(plain_http=True) as c:
        result = fetch(c, ref, out, keys=[keys / "a.pub"], progress=MoveTagOnResolve(False))
        assert c.resolve(ref).digest != d1  # the tag did move
    assert result.digest == d1 and read_marker(out).digest == d1  # type: ignore[union-attr]
    assert _sha(out / "weights.bin") == _sha(v1 / "weights.bin")


def test_replace_previous_fetch_and_no_replace(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                              keys: Path) -> None:
    old = _model(tmp_path / "old", 3000, seed=3)
    (old / "extra.bin").write_bytes(b"only in v1")
    _push_signed(registry, unique_repo, old, keys)
    new = _model(tmp_path / "new", 4000, seed=4)
    _push_signed(registry, unique_repo, new, keys, tag="v2")
    out = tmp_path / "out"
    base = ["--verify-key", str(keys / "a.pub"), "-o", str(out)]
    assert _fetch(f"{registry.host}/{unique_repo}:v1", *base).returncode == 0
    (out / "mine.txt").write_text("user file")
    refused = _fetch(f"{registry.host}/{unique_repo}:v2", *base, "--no-replace")
    assert refused.returncode == 2 and "--no-replace" in refused.stderr
    assert (out / "extra.bin").exists()
    r = _fetch(f"{registry.host}/{unique_repo}:v2", *base, "--json")
    assert r.returncode == 0, r.stderr
    assert "extra.bin" in json.loads(r.stdout)["replaced"]
    assert _model_files(out) == {"weights.bin", "config.json", "docs/README.md", "mine.txt"}
    assert _sha(out / "weights.bin") == _sha(new / "weights.bin")
    assert not (out / ".ociart" / "replacing.json").exists()

    # a replacement killed after the marker was set aside and some old files removed: the next run still knows
    # which files are the old model's (they would otherwise block the new ones as unknown files)
    (out / ".ociart" / "fetched.json").rename(out / ".ociart" / "replacing.json")
    (out / "config.json").unlink()
    r = _fetch(f"{registry.host}/{unique_repo}:v1", *base, "--json")
    assert r.returncode == 0, r.stderr
    assert _sha(out / "weights.bin") == _sha(old / "weights.bin") and (out / "extra.bin").exists()
    assert read_marker(out).digest == json.loads(r.stdout)["digest"]  # type: ignore[union-attr]


def test_killed_fetch_resumes_after_restart(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                            keys: Path) -> None:
    size = 64 * MiB
    src = _model(tmp_path / "src", size)
    _push_signed(registry, unique_repo, src, keys)
    blob = _sha(src / "weights.bin")
    out = tmp_path / "out"
    with FaultProxy(registry.url) as proxy:
        cmd = [sys.executable, "-m", "ociart", "fetch", "--plain-http", f"{proxy.host}/{unique_repo}:v1", "-o",
               str(out), "--verify-key", str(keys / "a.pub")]
        proxy.limit_rate(16 * MiB, blob)
        at_half = proxy.when_sent(blob, size // 2)
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert at_half.wait(180), "the first fetch never reached half of the blob"
            first.send_signal(signal.SIGKILL)
        finally:
            first.kill()
            first.communicate(timeout=60)
        killed_at = proxy.sent(blob)
        assert killed_at < size
        assert list((out / DOWNLOAD / ".ociart-tmp" / "ingest").glob("*.partial"))
        assert not (out / "weights.bin").exists() and read_marker(out) is None
        proxy.clear()
        proxy.reset_counts()
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        fetched = proxy.sent(blob)
    assert fetched < size - size // 4, f"the restart fetched {fetched} of {size} bytes"
    assert _sha(out / "weights.bin") == blob and read_marker(out) is not None


def test_two_concurrent_fetches_share_one_cache(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                keys: Path) -> None:
    size = 256 * MiB
    src = _model(tmp_path / "src", size)
    digest = _push_signed(registry, unique_repo, src, keys)
    blob = _sha(src / "weights.bin")
    cache = tmp_path / "cache"
    with FaultProxy(registry.url) as proxy:
        ref = f"{proxy.host}/{unique_repo}:v1"

        def cmd(out: Path, *extra: str) -> list[str]:
            return [sys.executable, "-m", "ociart", "fetch", "--plain-http", ref, "-o", str(out), "--verify-key",
                    str(keys / "a.pub"), "--cache", str(cache), "--json", *extra]

        procs = [subprocess.Popen(cmd(tmp_path / f"dir{i}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for i in (1, 2)]
        outs = [p.communicate(timeout=600) for p in procs]
        for p, (so, se) in zip(procs, outs, strict=True):
            assert p.returncode == 0, se
            assert json.loads(so)["digest"] == digest
        assert proxy.sent(blob) == size  # the registry served the blob once (in parallel ranges: each byte once)
        for i in (1, 2):
            assert _sha(tmp_path / f"dir{i}" / "weights.bin") == blob
            check = subprocess.run(cmd(tmp_path / f"dir{i}", "--verify-files"), capture_output=True, text=True,
                                   timeout=300)
            assert check.returncode == 0 and json.loads(check.stdout)["up_to_date"] is True

        proxy.reset_counts()
        proxy.log.clear()
        third = subprocess.run(cmd(tmp_path / "dir3", "--link"), capture_output=True, text=True, timeout=300)
        assert third.returncode == 0, third.stderr
        assert sorted(json.loads(third.stdout)["cache_hits"]) and json.loads(third.stdout)["downloaded"] == []
        # no model blob from the registry: only the manifest (and the signature it verifies, as every fetch does)
        with ociart.Client(plain_http=True) as c:
            model_blobs = {d.digest for d in [c._image_manifest(f"{registry.host}/{unique_repo}:v1")[1].config,
                                              *c._image_manifest(f"{registry.host}/{unique_repo}:v1")[1].layers]}
        fetched = {e["path"].rsplit("/", 1)[1] for e in proxy.log if "/blobs/" in e["path"]}
        assert not fetched & model_blobs and all(proxy.sent(d) == 0 for d in model_blobs)
    assert (tmp_path / "dir3" / "weights.bin").stat().st_ino == (cache / "blobs" / "sha256" / blob[7:]).stat().st_ino


def test_cache_eviction_lru_skips_linked_and_in_use(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")
    descs = []
    for i in range(4):
        data = bytes([i]) * 1000
        d = Descriptor(mediaType="application/octet-stream", digest="sha256:" + hashlib.sha256(data).hexdigest(),
                       size=1000)
        cache.store.push_blob_stream("", d, lambda data=data: _opener(data))
        lock = cache._lock_path(d.digest)
        lock.touch()
        os.utime(lock, (1000 + i, 1000 + i))  # blob 0 least recently used
        descs.append(d)
    os.link(cache.store.blob_path(descs[0].digest), tmp_path / "linked")  # a fetched DIR shares blob 0
    result = evict(cache.root, 2000)
    assert result.removed == [descs[1].digest, descs[2].digest]
    assert result.size_before == 4000 and result.size_after == 2000
    with NodeCache(cache.root) as held:
        held.ensure(cache.store, "", [descs[3]])  # in use by a running fetch
        assert evict(cache.root, 0).removed == []
    assert evict(cache.root, 0).removed == [descs[3].digest]


def test_two_caches_each_holding_what_the_other_waits_for_do_not_deadlock(tmp_path: Path) -> None:
    """Two fetches on one node ask for the same two blobs in opposite orders and each downloads one first: each
    then holds its blob in use while it asks for the other's. Both must finish (each finds the other's blob)."""
    import threading

    from ociart.targets.layout import LayoutTarget

    origin = LayoutTarget(tmp_path / "origin")
    descs = []
    for i in range(2):
        data = bytes([i]) * 4096
        d = Descriptor(mediaType="application/octet-stream", digest="sha256:" + hashlib.sha256(data).hexdigest(),
                       size=len(data))
        origin.push_blob_stream("", d, lambda data=data: _opener(data))
        descs.append(d)
    both_downloading = threading.Barrier(2, timeout=30)

    class Slow:  # a source whose first downloads overlap, so each fetch has fetched one blob before asking for more
        def __getattr__(self, name: str) -> Any:
            return getattr(origin, name)

        def same_store(self, other: Any) -> bool:
            return False

        def fetch_blob(self, *args: Any, **kwargs: Any) -> None:
            both_downloading.wait()
            origin.fetch_blob(*args, **kwargs)

    results: dict[int, NodeCache] = {}
    errors: list[BaseException] = []

    def run(i: int, order: list[Descriptor]) -> None:
        try:
            with NodeCache(tmp_path / "cache") as cache:
                for d in order:  # one at a time, in this order
                    cache.ensure(Slow(), "", [d], concurrency=1)  # type: ignore[arg-type]
                results[i] = cache
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(0, descs), daemon=True),
               threading.Thread(target=run, args=(1, descs[::-1]), daemon=True)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "the two fetches deadlocked on each other's blobs"
    assert not errors
    assert sorted(results[0].fetched + results[1].fetched) == sorted(d.digest for d in descs)
    assert results[0].hits == [descs[1].digest] and results[1].hits == [descs[0].digest]


def _opener(data: bytes) -> Any:
    from ociart.targets.base import bytes_opener

    return bytes_opener(data)()


def test_free_space_refused_before_download(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                            keys: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _model(tmp_path / "src", 3 * MiB)
    _push_signed(registry, unique_repo, src, keys)
    import ociart.deploy.fetch as mod

    real = mod.shutil.disk_usage
    monkeypatch.setattr(mod.shutil, "disk_usage", lambda p: real(p)._replace(free=MiB))  # a nearly full disk
    with FaultProxy(registry.url) as proxy, ociart.Client(plain_http=True) as c:
        with pytest.raises(LocalIOError, match="not enough space"):
            c.fetch(f"{proxy.host}/{unique_repo}:v1", tmp_path / "out", keys=[keys / "a.pub"])
        assert proxy.sent("/blobs/sha256:") == 0 or proxy.find("GET", _sha(src / "weights.bin")) == []
    assert LocalIOError.exit_code == 8


def test_sources_and_kitops_filter_words() -> None:
    assert source_reference("oci+ociart://localhost:5000/m/bert:v1") == "localhost:5000/m/bert:v1"
    assert source_reference("localhost:5000/m/bert@sha256:" + "a" * 64).endswith("a" * 64)
    with pytest.raises(UsageError):
        source_reference("s3://bucket/model")
    assert kitops_filters("model,datasets") == ["weights", "config", "dataset"]
    assert kitops_filters("code, docs") == ["code", "docs"]
    with pytest.raises(UsageError):
        kitops_filters("kitfile")


def test_env_config_kitops_aliases_kserve_form_home_unset(registry: RunningRegistry, unique_repo: str,
                                                          tmp_path: Path, keys: Path) -> None:
    src = _model(tmp_path / "src", 4096)
    digest = _push_signed(registry, unique_repo, src, keys)
    home = tmp_path / "ociart-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "HOME"}
    env.update({"OCIART_HOME": str(home), "OCIART_PLAIN_HTTP": "1"})
    # kitops-init's variables
    kit = {**env, "MODELKIT_REF": f"{registry.host}/{unique_repo}:v1", "UNPACK_PATH": str(tmp_path / "kit"),
           "UNPACK_FILTER": "model", "COSIGN_KEY": str(keys / "a.pub")}
    r = subprocess.run([sys.executable, "-m", "ociart", "fetch"], capture_output=True, text=True, env=kit,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == digest
    assert _model_files(tmp_path / "kit") == {"weights.bin", "config.json"}  # model -> weights,config
    # ociart's own variables, the verify key list comma-separated
    own = {**env, "OCIART_REF": f"{registry.host}/{unique_repo}:v1", "OCIART_OUTPUT": str(tmp_path / "own"),
           "OCIART_VERIFY_KEY": f"{keys / 'b.pub'},{keys / 'a.pub'}", "OCIART_FILTER": "docs"}
    r = subprocess.run([sys.executable, "-m", "ociart", "fetch"], capture_output=True, text=True, env=own,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert _model_files(tmp_path / "own") == {"docs/README.md"}
    # KServe's storage-initializer form: SRC_URI DEST_PATH
    r = subprocess.run([sys.executable, "-m", "ociart", "fetch", f"oci+ociart://{registry.host}/{unique_repo}:v1",
                        str(tmp_path / "kserve"), "--verify-key", str(keys / "a.pub")], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _model_files(tmp_path / "kserve") == {"weights.bin", "config.json", "docs/README.md"}
    assert (tmp_path / "kserve" / MARKER).is_file()
