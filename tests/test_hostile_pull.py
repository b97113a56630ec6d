"""Hostile artifacts and hostile neighbours at pull (issue 17, part B).

Each test sends the hostile input for real (a tar or gzip built here, pushed to the embedded store or a real
distribution 2.8.2, a directory swapped for a symlink while the pull runs, a hardlink to a file outside, a process
killed while it holds a temp file) and checks the one-line error, the exit code, and that nothing was written
outside the target or left behind.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from helpers import make_tar, run_cli, write_random
from support.faultproxy import FaultProxy

import ociart
import ociart.packaging.unpack as unpack_mod
from ociart import limits
from ociart.errors import TooLargeError, UnsafePathError
from ociart.oci import EMPTY_JSON, EMPTY_JSON_DIGEST, OCI_EMPTY, Content, Descriptor, Manifest
from ociart.packaging.metadata import A_FILE_METADATA, A_FILEPATH, A_TITLE
from ociart.packaging.unpack import STAGING
from ociart.targets.layout import LayoutTarget

MiB = 1 << 20
CODE_TAR = "application/vnd.cncf.model.code.v1.tar"
CODE_TGZ = "application/vnd.cncf.model.code.v1.tar+gzip"
CODE_RAW = "application/vnd.cncf.model.code.v1.raw"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_layers(c: ociart.Client, ref: str, layers: list[tuple[bytes, str, dict[str, str]]]) -> Content:
    """A manifest of exactly these layers (empty config), pushed as is."""
    r = c.ref(ref)
    target = c.target(r)
    descs = []
    for data, media_type, ann in layers:
        d = Descriptor(mediaType=media_type, digest=sha256(data), size=len(data), annotations=ann or None)
        target.push_blob_stream(r.repository, d, lambda data=data: nullcontext(iter([data])))
        descs.append(d)
    cfg = Descriptor(mediaType=OCI_EMPTY, digest=EMPTY_JSON_DIGEST, size=len(EMPTY_JSON))
    target.push_blob_stream(r.repository, cfg, lambda: nullcontext(iter([EMPTY_JSON])))
    content = Content.from_model(Manifest(artifactType="application/vnd.example.test", config=cfg, layers=descs))
    target.put_manifest(r.repository, content, r.tag)
    return content


def titled(name: str, data: bytes, mode: int | None = None) -> tuple[bytes, str, dict[str, str]]:
    ann = {A_TITLE: name}
    if mode is not None:
        ann[A_FILE_METADATA] = json.dumps({"name": name, "mode": mode, "uid": 0, "gid": 0, "size": len(data)})
    return data, CODE_RAW, ann


def tar_of(members: list[tuple[str, bytes]]) -> bytes:
    return make_tar(list(members))


def sparse_tar(name: str, real_size: int) -> bytes:
    """An old-GNU sparse member: 10 KiB of data stored, declared to expand to ``real_size`` bytes (what GNU tar
    writes for a mostly-empty file; ``tarfile`` cannot write one)."""
    stored = 10 * 1024
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = tarfile.GNUTYPE_SPARSE, stored, 0o644
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[386:398] = b"%011o\0" % (real_size - stored)  # one region: offset
    header[398:410] = b"%011o\0" % stored  # ... and its length
    header[482] = 0  # no extension headers
    header[483:495] = b"%011o\0" % real_size  # the size it restores as
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header[:512])
    body = b"\x01" * stored
    data = bytes(header[:512]) + body
    data += b"\0" * (-len(data) % 512) + b"\0" * 1024
    return data + b"\0" * (-len(data) % 10240)


def gzip_bomb(name: str, size: int) -> bytes:
    """A gzip tar layer holding one member of ``size`` zero bytes (compresses about 1000:1)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(info.tobuf(tarfile.PAX_FORMAT))
        zeros = b"\0" * MiB
        for _ in range(size // MiB):
            gz.write(zeros)
        gz.write(b"\0" * (size % MiB + -size % 512 + 1024))
    return out.getvalue()


def snapshot(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr


# -- disk bombs -------------------------------------------------------------------------------------
def test_sparse_member_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    layer = sparse_tar("code/holes.bin", 200 * MiB)
    assert len(layer) <= 20 * 1024
    with tarfile.open(fileobj=io.BytesIO(layer)) as tf:  # the member really is what tarfile expands
        (m,) = tf.getmembers()
        assert m.issparse() and m.size == 200 * MiB
    with ociart.Client() as c:
        push_layers(c, "hostile/sparse:v1", [(layer, CODE_TAR, {A_FILEPATH: "code"})])
        out = tmp_path / "out"
        with pytest.raises(UnsafePathError, match="sparse"):
            c.pull("hostile/sparse:v1", out)
    assert not out.exists()
    proc = run_cli("pull", "hostile/sparse:v1", "-o", str(out))
    assert proc.returncode == 5 and "sparse file" in one_error_line(proc)
    assert not out.exists()


def test_gzip_bomb_is_bounded_and_max_size_overrides(tmp_path: Path) -> None:
    bomb = gzip_bomb("code/zeros.bin", 24 * MiB)
    assert len(bomb) * limits.GZIP_RATIO < 24 * MiB  # far beyond the ratio cap
    other = b"a raw file\n" * 1000
    with ociart.Client() as c:
        push_layers(c, "hostile/bomb:v1", [titled("readme.txt", other), (bomb, CODE_TGZ, {A_FILEPATH: "code"})])
        out = tmp_path / "out"
        out.mkdir()
        (out / "mine.txt").write_text("mine")
        with pytest.raises(TooLargeError, match="more than"):
            c.pull("hostile/bomb:v1", out)
        assert snapshot(out) == ["mine.txt"]  # nothing restored, no staging left
        # the same bound by --max-size: a smaller one is refused before anything is fetched ...
        proc = run_cli("pull", "hostile/bomb:v1", "-o", str(tmp_path / "small"), "--max-size", "1000")
        assert proc.returncode == 5 and "--max-size" in one_error_line(proc), proc.stderr
        assert not (tmp_path / "small").exists()
        # ... and a larger one (from the environment) lets the expansion through
        big = tmp_path / "big"
        proc = run_cli("pull", "hostile/bomb:v1", "-o", str(big), env={"OCIART_MAX_SIZE": str(25 * MiB)})
        assert proc.returncode == 0, proc.stderr
        assert (big / "code" / "zeros.bin").stat().st_size == 24 * MiB
        assert snapshot(big) == ["code", "code/zeros.bin", "readme.txt"]


# -- writing outside the target ---------------------------------------------------------------------
@pytest.mark.parametrize("existing", [True, False], ids=["existing-dir", "new-dir"])
def test_directory_swapped_for_symlink_during_pull_writes_nothing_outside(
        registry, unique_repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    if existing:
        (out / "sub").mkdir()  # checked and found to be a plain directory before the download
    ref = f"{registry.host}/{unique_repo}:v1"
    payload = b"attacker-chosen placement\n"
    real_copy = unpack_mod.copy_blobs

    def copy_then_swap(*args: Any, **kw: Any) -> None:
        real_copy(*args, **kw)  # everything downloaded and verified; now another user swaps the directory
        if (out / "sub").exists():
            (out / "sub").rmdir()
        (out / "sub").symlink_to(victim)

    with ociart.Client(plain_http=True) as c:
        push_layers(c, ref, [titled("sub/evil.txt", payload), titled("top.txt", b"top\n")])
        monkeypatch.setattr(unpack_mod, "copy_blobs", copy_then_swap)
        with pytest.raises(UnsafePathError, match="symlink"):
            c.pull(ref, out)
    assert list(victim.iterdir()) == []
    assert (out / "sub").is_symlink() and snapshot(out) == ["sub"]  # not even top.txt: nothing moved


def test_hardlink_to_outside_file_is_replaced_not_chmodded(tmp_path: Path) -> None:
    data = b"#!/bin/sh\necho same bytes\n"
    outside = tmp_path / "outside-secret"
    outside.write_bytes(data)
    outside.chmod(0o600)
    out = tmp_path / "out"
    out.mkdir()
    os.link(outside, out / "run.sh")  # a neighbour's hardlink with exactly the artifact's content
    with ociart.Client() as c:
        push_layers(c, "hostile/link:v1", [titled("run.sh", data, mode=0o755)])
        result = c.pull("hostile/link:v1", out)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600 and outside.read_bytes() == data
    assert outside.stat().st_nlink == 1  # the link in the output was replaced, not written through
    placed = out / "run.sh"
    assert stat.S_IMODE(placed.stat().st_mode) == 0o755 and placed.read_bytes() == data
    assert [(f.path, f.skipped) for f in result.files] == [("run.sh", False)]


@pytest.mark.parametrize("case", ["raw-beside-tar-member", "two-titles", "member-in-two-tars", "file-then-dir-tars",
                                  "dir-then-file-tars"])
def test_file_directory_collision_across_layers_is_one_line_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    def tar_layer(members: list[tuple[str, bytes]]) -> tuple[bytes, str, dict[str, str]]:
        return tar_of(members), CODE_TAR, {A_FILEPATH: "."}

    if case == "raw-beside-tar-member":
        layers = [titled("x", b"a file named x\n"),
                  (tar_of([("x/y", b"a file under the directory x\n")]), CODE_TAR, {A_FILEPATH: "x"})]
    elif case == "member-in-two-tars":  # the tars are extracted into one tree: the second finds the name taken
        layers = [tar_layer([("a", b"1"), ("x/y", b"first\n")]), tar_layer([("b", b"2"), ("x/y", b"second\n")])]
    elif case == "file-then-dir-tars":
        layers = [tar_layer([("a", b"1"), ("x", b"a file x\n")]), tar_layer([("b", b"2"), ("x/y", b"under x\n")])]
    elif case == "dir-then-file-tars":
        layers = [tar_layer([("a", b"1"), ("x/y", b"under x\n")]), tar_layer([("b", b"2"), ("x", b"a file x\n")])]
    else:
        layers = [titled("x/y", b"under x\n"), titled("x", b"x itself\n")]
    ref = f"hostile/collide-{case}:v1"
    with ociart.Client() as c:
        push_layers(c, ref, layers)
        with pytest.raises(UnsafePathError, match="colliding"):
            c.pull(ref, tmp_path / "lib")
    assert not (tmp_path / "lib").exists()
    out = tmp_path / "cli"
    proc = run_cli("pull", ref, "-o", str(out))
    assert proc.returncode == 5 and "colliding names" in one_error_line(proc)
    assert not out.exists()


# -- leftovers --------------------------------------------------------------------------------------
def _digest_of(c: ociart.Client, ref: str) -> str:
    node = c.manifest(ref)[1].parse()
    assert isinstance(node, Manifest)
    return node.layers[0].digest


def test_killed_pull_staging_is_cleaned_and_reported_by_the_next_run(registry, unique_repo: str,
                                                                       tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_random(src / "big.bin", 12 * MiB, seed=3)
    (tmp_path / "src2").mkdir()
    (tmp_path / "src2" / "small.txt").write_text("another artifact\n")
    a, b = f"{registry.host}/{unique_repo}:a", f"{registry.host}/{unique_repo}:b"
    out = tmp_path / "out"
    assert run_cli("push", "--plain-http", a, str(src)).returncode == 0
    assert run_cli("push", "--plain-http", b, str(tmp_path / "src2")).returncode == 0
    with ociart.Client(plain_http=True) as c:
        big = _digest_of(c, a)
    with FaultProxy(registry.url) as proxy:
        via = a.replace(registry.host, proxy.host)
        proxy.limit_rate(8 * MiB, "/blobs/sha256:")
        half = proxy.when_sent("/blobs/sha256:", 6 * MiB)
        first = subprocess.Popen([sys.executable, "-m", "ociart", "pull", "--plain-http", "-o", str(out), via],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert half.wait(120), "the first pull never got half way"
            first.send_signal(signal.SIGKILL)
        finally:
            first.kill()
            first.communicate(timeout=60)
    partial = f"{STAGING}/.ociart-tmp/ingest/{big.removeprefix('sha256:')}.partial"
    assert (out / partial).exists()
    # the next run of the same target, for another artifact: what the dead pull left is removed and named
    proc = run_cli("pull", "--plain-http", "--json", "-o", str(out), b)
    assert proc.returncode == 0, proc.stderr
    cleaned = json.loads(proc.stdout)["cleaned"]
    assert partial in cleaned
    assert "removed what an interrupted pull left" in proc.stderr
    assert snapshot(out) == ["small.txt"]


def test_live_pull_staging_is_never_touched_by_a_concurrent_pull(registry, unique_repo: str,
                                                                  tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_random(src / "big.bin", 6 * MiB, seed=5)
    (tmp_path / "src2").mkdir()
    (tmp_path / "src2" / "small.txt").write_text("another artifact\n")
    a, b = f"{registry.host}/{unique_repo}:a", f"{registry.host}/{unique_repo}:b"
    assert run_cli("push", "--plain-http", a, str(src)).returncode == 0
    assert run_cli("push", "--plain-http", b, str(tmp_path / "src2")).returncode == 0
    out = tmp_path / "out"
    with FaultProxy(registry.url) as proxy:
        via = a.replace(registry.host, proxy.host)
        proxy.limit_rate(2 * MiB, "/blobs/sha256:")
        started = proxy.when_sent("/blobs/sha256:", MiB)
        slow = subprocess.Popen([sys.executable, "-m", "ociart", "pull", "--plain-http", "-o", str(out), via],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert started.wait(120)
            other = run_cli("pull", "--plain-http", "--json", "-o", str(out), b)  # waits for the live one
            assert other.returncode == 0, other.stderr
            assert json.loads(other.stdout)["cleaned"] == []
            _, err = slow.communicate(timeout=120)
        finally:
            slow.kill()
    assert slow.returncode == 0, err
    assert snapshot(out) == ["big.bin", "small.txt"]
    assert (out / "big.bin").read_bytes() == (src / "big.bin").read_bytes()


HOLDER = """
import sys, time
from pathlib import Path
from ociart.fsutil import temp_file
with temp_file(Path(sys.argv[1])) as (fd, path):
    print(path, flush=True)
    time.sleep(600)
"""


def _holder(tmp: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_killed_writer_temp_files_are_swept_live_ones_kept(tmp_path: Path) -> None:
    with ociart.Client() as c:
        push_layers(c, "hostile/store:v1", [titled("f.txt", b"x\n")])
    store = Path(os.environ["OCIART_HOME"]) / "store"
    tmp = store / ".ociart-tmp"
    dead, dead_path = _holder(tmp)  # the writer a push uses, killed while it holds its temp file
    dead.send_signal(signal.SIGKILL)
    dead.wait(30)
    live, live_path = _holder(tmp)
    try:
        assert dead_path.exists() and live_path.exists()
        assert LayoutTarget(store).swept == [dead_path]
        assert not dead_path.exists() and live_path.exists()  # the live writer's file is untouched
        dead2, dead2_path = _holder(tmp)
        dead2.send_signal(signal.SIGKILL)
        dead2.wait(30)
        proc = run_cli("tags", "hostile/store")  # any command that opens the store reports it
        assert proc.returncode == 0 and "removed 1 stale temp file" in proc.stderr, proc.stderr
        assert dead2_path.name in proc.stderr and not dead2_path.exists() and live_path.exists()
    finally:
        live.kill()
        live.wait(30)


def test_output_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    with ociart.Client() as c:
        push_layers(c, "hostile/outfile:v1", [titled("f.txt", b"x\n")])
    target = tmp_path / "a-file"
    target.write_text("mine")
    proc = run_cli("pull", "hostile/outfile:v1", "-o", str(target))
    assert proc.returncode == 8 and "not a directory" in one_error_line(proc)
    proc = run_cli("pull", "hostile/outfile:v1", "-o", str(target / "below"))
    assert proc.returncode == 8 and "cannot create output directory" in one_error_line(proc)
    assert target.read_text() == "mine"


# -- interrupts -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_stops_running_blob_threads_and_keeps_partials_for_resume(
        registry, unique_repo: str, tmp_path: Path, signum: int, code: int) -> None:
    """Two 16 MiB blobs pulled in parallel through a proxy sending 2 MiB/s each: a signal stops both threads
    between chunks (the proxy sends little more), exit 130/143 with `interrupted`; the staging keeps only the
    partials for resume, and the next pull completes them."""
    src = tmp_path / "src"
    write_random(src / "a.bin", 16 * MiB, seed=11)
    write_random(src / "b.bin", 16 * MiB, seed=12)
    ref = f"{registry.host}/{unique_repo}:v1"
    assert run_cli("push", "--plain-http", ref, str(src)).returncode == 0
    out = tmp_path / "out"
    with FaultProxy(registry.url) as proxy:
        via = ref.replace(registry.host, proxy.host)
        proxy.limit_rate(2 * MiB, "/blobs/sha256:")
        started = proxy.when_sent("/blobs/sha256:", 4 * MiB)
        proc = subprocess.Popen([sys.executable, "-m", "ociart", "pull", "--plain-http", "--concurrency", "2",
                                 "-o", str(out), via], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OCIART_PROGRESS_INTERVAL": "3600"})  # no progress line by chance
        try:
            assert started.wait(120), "the pull never got going"
            at_signal = proxy.sent("/blobs/sha256:")
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        after = proxy.sent("/blobs/sha256:") - at_signal
        assert proc.returncode == code, err
        assert err == "error: interrupted\n"
        # both threads stopped at once: far less than the ~24 MiB still to come was sent after the signal
        assert after < 8 * MiB, after
        assert snapshot(out) and all(p.startswith(STAGING) for p in snapshot(out))
        staged = snapshot(out / STAGING)
        assert not [p for p in staged if p.startswith("restore-")]
        partials = [p for p in staged if p.endswith(".partial")]
        assert len(partials) == 2 and all(p.startswith(".ociart-tmp/ingest/") for p in partials), staged
        proxy.clear()
        done = run_cli("pull", "--plain-http", "-o", str(out), via)
    assert done.returncode == 0, done.stderr
    assert snapshot(out) == ["a.bin", "b.bin"]
    assert (out / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
