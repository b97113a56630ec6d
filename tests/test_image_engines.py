"""The image form (``push --as-image``) in real container engines, not by inspection (shared/reference/peers.md §7):

* podman (Debian 4.3): ``podman pull`` from the test registry with its storage in a temp dir (``--root``,
  ``--runroot``, ``--storage-driver vfs``), ``podman image mount`` shows the files under /models byte-identical;
  also an image made with ``--base`` (a busybox-static base built in the test): base files and model files both;
* containerd (Debian 1.6, what most kubelets mount image volumes with): started here with its own root, state and
  socket and the CRI plugin disabled; ``ctr images pull --plain-http`` then ``ctr images mount --snapshotter
  native`` shows the same tree;
* umoci (Debian 0.4): ``umoci unpack --rootless`` of the image copied by skopeo to an OCI layout gives the tree
  under ``rootfs/models``.

These tools are installed by ``.ci/run``; a missing one fails the test with the package to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.registry import RunningRegistry
from test_image_form import busybox_base, cli, make_model, skopeo, tree


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {package} (.ci/run does)", pytrace=False)
    return path


def run(*args: str, timeout: int = 300) -> str:
    # the isolated env points these at files that do not exist, which podman refuses
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG")}
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"
    return proc.stdout


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A temp directory with a short path: podman refuses a runroot over 50 characters, and a unix socket path
    must fit 108 bytes."""
    d = Path(tempfile.mkdtemp(prefix="oa-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def podman(root: Path, *args: str) -> str:
    return run(tool("podman", "podman"), "--root", str(root / "root"), "--runroot", str(root / "run"),
               "--storage-driver", "vfs", *args)


def push_image(registry: RunningRegistry, repo: str, src: Path, *extra: str) -> str:
    ref = f"{registry.host}/{repo}:img"
    cli("push", ref, str(src), "--kind", "model", "--as-image", "--no-git", *extra)
    return ref


def test_podman_pulls_and_mounts_the_image_form(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                short_dir: Path) -> None:
    src = make_model(tmp_path / "m")
    ref = push_image(registry, unique_repo, src)
    podman(short_dir, "pull", "--tls-verify=false", ref)
    mounted = Path(podman(short_dir, "image", "mount", ref).strip())
    try:
        assert tree(mounted / "models") == tree(src)
        assert set(os.listdir(mounted)) == {"models"}
        assert os.stat(mounted / "models" / "model.safetensors").st_mode & 0o777 == 0o644
    finally:
        podman(short_dir, "image", "unmount", ref)


def test_podman_mounts_an_image_form_on_a_base(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                               short_dir: Path) -> None:
    base = busybox_base(tmp_path, registry, unique_repo)
    src = make_model(tmp_path / "m")
    ref = push_image(registry, unique_repo, src, "--base", base)
    podman(short_dir, "pull", "--tls-verify=false", ref)
    mounted = Path(podman(short_dir, "image", "mount", ref).strip())
    try:
        assert tree(mounted / "models") == tree(src)
        assert (mounted / "bin" / "busybox").read_bytes() == Path("/bin/busybox").read_bytes()
        assert os.readlink(mounted / "bin" / "sh") == "busybox"  # the shell KServe's modelcar runs
    finally:
        podman(short_dir, "image", "unmount", ref)


@pytest.fixture
def containerd(short_dir: Path) -> Iterator[str]:
    """A containerd of our own (temp root, state and socket; CRI disabled); yields its socket."""
    binary = tool("containerd", "containerd")
    tool("ctr", "containerd")
    if os.geteuid() != 0:
        pytest.skip("containerd's native snapshotter mounts need root")
    d = short_dir
    sock = d / "c.sock"
    (d / "config.toml").write_text(f"""version = 2
root = "{d / 'root'}"
state = "{d / 'state'}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
""")
    log = open(d / "log", "wb")
    proc = subprocess.Popen([binary, "--config", str(d / "config.toml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"containerd did not start: {(d / 'log').read_text()[-2000:]}", pytrace=False)
            time.sleep(0.1)
        yield str(sock)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_containerd_pulls_and_mounts_the_image_form(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                    containerd: str) -> None:
    src = make_model(tmp_path / "m")
    ref = push_image(registry, unique_repo, src)
    ctr = tool("ctr", "containerd")
    run(ctr, "-a", containerd, "images", "pull", "--plain-http", ref)
    target = tmp_path / "mnt"
    target.mkdir()
    run(ctr, "-a", containerd, "images", "mount", "--snapshotter", "native", ref, str(target))
    try:
        assert tree(target / "models") == tree(src)
    finally:
        run(ctr, "-a", containerd, "images", "unmount", str(target))


def test_umoci_unpacks_the_image_form(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    src = make_model(tmp_path / "m")
    ref = push_image(registry, unique_repo, src)
    layout = tmp_path / "layout"
    skopeo(tmp_path, "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:img")
    bundle = tmp_path / "bundle"
    run(tool("umoci", "umoci"), "unpack", "--rootless", "--image", f"{layout}:img", str(bundle))
    assert tree(bundle / "rootfs" / "models") == tree(src)
    assert set(os.listdir(bundle / "rootfs")) == {"models"}


def test_skopeo_copy_preserves_the_image_form(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    """``skopeo copy --preserve-digests`` between registries keeps the index digest, and pull after the copy still
    finds the files (the mount path travels in the config labels)."""
    src = make_model(tmp_path / "m")
    ref = push_image(registry, unique_repo, src, "--mount-path", "/opt/model")
    copied = f"{registry.host}/{unique_repo}-copy:img"
    skopeo(tmp_path, "copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{ref}", f"docker://{copied}")
    assert cli("resolve", copied).stdout == cli("resolve", ref).stdout
    out = tmp_path / "out"
    cli("pull", copied, "-o", str(out))
    assert tree(out) == tree(src)
