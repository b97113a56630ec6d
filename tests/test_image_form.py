"""The image form (``push --as-image``, docs/spec.md §7) and reading images back (pull of any image's layers).

* structure: an index of linux/amd64 + linux/arm64 whose configs differ only in ``architecture`` and share every
  layer; uncompressed tar layers (digest == diff_id) holding the files under ``/models``; labels; same digest twice;
  a new version with one changed file adds exactly one layer blob;
* pull restores the tree from the image form, from a ``--base`` image (base layers not fetched), from an image whose
  layers carry whiteouts and opaque directories, and from a modelcar built by olot (PyPI; its layers are titled tars:
  they are extracted, never written as files);
* ``--with-image``: the two forms linked by referrers; a signed image form verifies and skopeo finds its ``.sig``;
* real engines (tests/test_image_engines.py) mount what is pushed here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest
from helpers import write_random
from support.registry import RunningRegistry

import ociart
from ociart.lineage.record import A_INPUTS, A_PARAMS_DIGEST, A_REVISION, A_RUN_ID, A_SOURCE
from ociart.oci import OCI_LAYER
from ociart.packaging.image import ARTIFACT_FORM, IMAGE_FORM, L_BASE_LAYERS, L_MOUNT_PATH
from ociart.packaging.tarlayer import TarMember, _header

SKOPEO = shutil.which("skopeo") or "skopeo"
ACCEPT = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json")


# -- helpers shared with tests/test_image_engines.py ----------------------------------------------------------------
def cli(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "ociart", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def make_model(root: Path, seed: int = 0) -> Path:
    """A model directory: two weights over the small-file threshold, configs, a README and grouped small files."""
    write_random(root / "model.safetensors", 1_500_000, seed)
    write_random(root / "extra" / "adapter.safetensors", 1_200_000, seed + 100)
    (root / "config.json").write_text('{"hidden": 8}\n')
    (root / "tokenizer.json").write_text('{"vocab": {}}\n')
    (root / "README.md").write_text("# demo\n")
    (root / "scripts").mkdir(exist_ok=True)
    (root / "scripts" / "run.py").write_text("print('hi')\n")
    (root / "scripts" / "util.py").write_text("X = 1\n")
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def get_json(registry: RunningRegistry, repo: str, ref: str, kind: str = "manifests") -> dict:
    r = httpx.get(f"{registry.url}/v2/{repo}/{kind}/{ref}", headers={"Accept": ACCEPT})
    r.raise_for_status()
    return r.json()


def get_blob(registry: RunningRegistry, repo: str, digest: str) -> bytes:
    r = httpx.get(f"{registry.url}/v2/{repo}/blobs/{digest}", follow_redirects=True)
    r.raise_for_status()
    assert "sha256:" + hashlib.sha256(r.content).hexdigest() == digest
    return r.content


def tar_layer(files: dict[str, bytes | None], *, symlinks: dict[str, str] | None = None,
              modes: dict[str, int] | None = None) -> bytes:
    """An image layer written with ``tarfile`` (not ociart's writer); a ``None`` content is a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
                continue
            info.size, info.mode = len(data), (modes or {}).get(name, 0o644)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buf.getvalue()


def write_layout(layout: Path, tag: str, layers: list[bytes], *, labels: dict[str, str] | None = None,
                 arch: str = "amd64", layer_type: str = OCI_LAYER) -> str:
    """An OCI image layout holding one image of uncompressed ``layers``; returns the manifest digest."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        return "sha256:" + h

    diff_ids = [put(layer) for layer in layers]
    config = json.dumps({"architecture": arch, "os": "linux",
                         "config": {"Labels": labels} if labels else {"Env": ["PATH=/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "history": [{"created_by": "test layer"} for _ in layers]}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config),
                   "size": len(config)},
        "layers": [{"mediaType": layer_type, "digest": d, "size": len(b)} for d, b in zip(diff_ids, layers)],
    }).encode()
    digest = put(manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return digest


def skopeo(tmp_path: Path, *args: str) -> str:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    proc = subprocess.run([SKOPEO, "--policy", str(policy), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"skopeo {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def busybox_base(tmp_path: Path, registry: RunningRegistry, repo: str) -> str:
    """A tiny base image (Debian's busybox-static as /bin/busybox, /bin/sh a symlink to it) pushed by skopeo;
    returns its reference."""
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        pytest.fail("busybox-static is not installed (/bin/busybox): apt-get install busybox-static (.ci/run does)",
                    pytrace=False)
    layer = tar_layer({"bin": None, "bin/busybox": busybox.read_bytes(), "tmp": None},
                      symlinks={"bin/sh": "busybox"}, modes={"bin/busybox": 0o755})
    layout = tmp_path / "base-layout"
    write_layout(layout, "base", [layer])
    ref = f"{registry.host}/{repo}-base:v1"
    skopeo(tmp_path, "copy", "--dest-tls-verify=false", f"oci:{layout}:base", f"docker://{ref}")
    return ref


# -- structure -------------------------------------------------------------------------------------------------------
def test_as_image_structure_platforms_labels_and_reproducible(registry: RunningRegistry, unique_repo: str,
                                                              tmp_path: Path) -> None:
    src = make_model(tmp_path / "m")
    ref = f"{registry.host}/{unique_repo}:v1"
    first = cli("push", ref, str(src), "--kind", "model", "--as-image", "--reproducible", "--name", "demo",
                "--no-git", "--json")
    second = cli("push", f"{registry.host}/{unique_repo}:again", str(src), "--kind", "model", "--as-image",
                 "--reproducible", "--name", "demo", "--no-git", "--json")
    digest = json.loads(first.stdout)["digest"]
    assert json.loads(second.stdout)["digest"] == digest  # reproducible: same directory, same digest

    index = get_json(registry, unique_repo, digest)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    plats = [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]]
    assert plats == [("linux", "amd64"), ("linux", "arm64")]
    manifests = [get_json(registry, unique_repo, m["digest"]) for m in index["manifests"]]
    assert manifests[0]["layers"] == manifests[1]["layers"]  # every layer shared
    configs = [json.loads(get_blob(registry, unique_repo, m["config"]["digest"])) for m in manifests]
    assert [c["architecture"] for c in configs] == ["amd64", "arm64"]
    assert {**configs[0], "architecture": "arm64"} == configs[1]  # differ only in architecture
    cfg = configs[0]
    assert manifests[0]["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert "Entrypoint" not in cfg["config"] and "Cmd" not in cfg["config"]
    labels = cfg["config"]["Labels"]
    assert labels[L_MOUNT_PATH] == "/models"
    assert labels["org.opencontainers.image.title"] == "demo" and labels["dev.ociart.kind"] == "model"
    modelpack = json.loads(labels["dev.ociart.artifact-config"])
    assert modelpack["descriptor"]["name"] == "demo" and modelpack["config"]["format"] == "safetensors"
    assert cfg["rootfs"]["diff_ids"] == [layer["digest"] for layer in manifests[0]["layers"]]

    members: dict[str, bytes] = {}
    for layer in manifests[0]["layers"]:
        assert layer["mediaType"] == OCI_LAYER
        blob = get_blob(registry, unique_repo, layer["digest"])  # uncompressed: the digest is the diff_id
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tf:
            for m in tf.getmembers():
                assert m.isreg() and m.name.startswith("models/") and m.mtime == 0 and m.uid == 0
                f = tf.extractfile(m)
                assert f is not None
                members[m.name.removeprefix("models/")] = f.read()
    assert members == tree(src)
    # one layer per large file, small files of a directory and role grouped (the artifact form's plan)
    assert len(manifests[0]["layers"]) == 6

    out = tmp_path / "out"
    pulled = json.loads(cli("pull", ref, "-o", str(out), "--json").stdout)
    assert tree(out) == tree(src)
    assert sorted(f["path"] for f in pulled["files"]) == sorted(tree(src))


def test_image_config_labels_carry_the_lineage_summary(registry: RunningRegistry, unique_repo: str,
                                                       tmp_path: Path) -> None:
    """The image config's labels carry the lineage summary the artifact form has as manifest annotations (commit,
    source, run, inputs pinned by digest, params digest), so it travels with the config when another tool copies
    the image without its referrers; ``pull`` still restores the files."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,2\n")
    dataset = json.loads(cli("push", f"{registry.host}/{unique_repo}-data:v1", str(data), "--kind", "dataset",
                             "--no-git", "--json").stdout)["digest"]
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print('train')\n")
    git = ["git", "-C", str(code), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["remote", "add", "origin", "https://example.com/org/train.git"],
                 ["add", "."], ["commit", "-q", "-m", "train"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    src = make_model(tmp_path / "m")
    ref = f"{registry.host}/{unique_repo}:v1"
    common = ("--kind", "model", "--git-dir", str(code), "--run-id", "run-7", "--param", "lr=0.1",
              "--input", f"train={registry.host}/{unique_repo}-data:v1", "--json")
    digest = json.loads(cli("push", ref, str(src), "--as-image", "--platform", "linux/amd64", *common).stdout)["digest"]
    artifact = json.loads(cli("push", f"{registry.host}/{unique_repo}:artifact", str(src), *common).stdout)["digest"]

    index = get_json(registry, unique_repo, digest)
    manifest = get_json(registry, unique_repo, index["manifests"][0]["digest"])
    labels = json.loads(get_blob(registry, unique_repo, manifest["config"]["digest"]))["config"]["Labels"]
    assert (labels[A_REVISION], labels[A_SOURCE], labels[A_RUN_ID]) == \
        (commit, "https://example.com/org/train.git", "run-7")
    [recorded] = json.loads(labels[A_INPUTS])
    assert (recorded["name"], recorded["digest"]) == ("train", dataset)
    assert labels[A_PARAMS_DIGEST].startswith("sha256:")
    # the same summary as the artifact form's manifest annotations
    annotations = get_json(registry, unique_repo, artifact)["annotations"]
    keys = (A_REVISION, A_SOURCE, A_RUN_ID, A_INPUTS, A_PARAMS_DIGEST)
    assert {k: labels[k] for k in keys} == {k: annotations[k] for k in keys}
    out = tmp_path / "out"
    cli("pull", ref, "-o", str(out))
    assert tree(out) == tree(src)


def test_versions_share_layers_and_mount_path(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    src = make_model(tmp_path / "m")
    v1 = json.loads(cli("push", f"{registry.host}/{unique_repo}:v1", str(src), "--kind", "model", "--as-image",
                        "--no-git", "--mount-path", "/mnt/model/", "--platform", "linux/amd64", "--json").stdout)
    write_random(src / "model.safetensors", 1_500_000, 7)  # one file changed
    v2 = json.loads(cli("push", f"{registry.host}/{unique_repo}:v2", str(src), "--kind", "model", "--as-image",
                        "--no-git", "--mount-path", "/mnt/model", "--platform", "linux/amd64", "--json").stdout)
    layers = []
    for d in (v1["digest"], v2["digest"]):
        index = get_json(registry, unique_repo, d)
        assert len(index["manifests"]) == 1 and index["manifests"][0]["platform"]["architecture"] == "amd64"
        m = get_json(registry, unique_repo, index["manifests"][0]["digest"])
        layers.append({layer["digest"] for layer in m["layers"]})
        cfg = json.loads(get_blob(registry, unique_repo, m["config"]["digest"]))
        assert cfg["config"]["Labels"][L_MOUNT_PATH] == "/mnt/model"
        blob = get_blob(registry, unique_repo, m["layers"][0]["digest"])
        with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
            assert all(n.startswith("mnt/model/") for n in tf.getnames())
    assert len(layers[0]) == len(layers[1]) == 6
    assert len(layers[0] | layers[1]) == 7  # the changed file is the only new layer blob
    out = tmp_path / "out"
    cli("pull", f"{registry.host}/{unique_repo}:v2", "-o", str(out))
    assert tree(out) == tree(src)


def test_pax_header_for_a_file_over_8_gib() -> None:
    """ustar's size field ends at 8 GiB - 1: the writer switches to a PAX header (olot#210 hit this)."""
    size = 9 * 1024 ** 3
    header = _header(TarMember(None, "models/huge.bin", size, 0o644))
    assert header[156:157] == b"x"  # a pax extended header first
    assert f"size={size}\n".encode() in header
    info = tarfile.TarInfo.frombuf(header[-512:], "utf-8", "surrogateescape")
    assert info.name == "models/huge.bin" and info.isreg()
    small = _header(TarMember(None, "models/small.bin", 8 * 1024 ** 3 - 1, 0o644))
    assert len(small) == 512 and small[257:263] == b"ustar\x00"


def test_as_image_refuses_bad_options(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    src = make_model(tmp_path / "m")
    ref = f"{registry.host}/{unique_repo}:v1"
    r = cli("push", ref, str(src), "--as-image", "--no-git", check=False)
    assert r.returncode == 2 and "--kind model" in r.stderr
    r = cli("push", ref, str(src), "--kind", "model", "--as-image", "--mount-path", "models", "--no-git", check=False)
    assert r.returncode == 2 and "absolute path" in r.stderr
    r = cli("push", ref, str(src), "--kind", "model", "--mount-path", "/m", "--no-git", check=False)
    assert r.returncode == 2 and "--as-image" in r.stderr
    r = cli("push", ref, str(src), "--kind", "model", "--as-image", "--platform", "amd64", "--no-git", check=False)
    assert r.returncode == 2 and "OS/ARCH" in r.stderr
    assert httpx.get(f"{registry.url}/v2/{unique_repo}/tags/list").status_code == 404  # nothing written


# -- --base -----------------------------------------------------------------------------------------------------------
def test_base_image_layers_first_config_extended_and_pull_skips_them(registry: RunningRegistry, unique_repo: str,
                                                                     tmp_path: Path) -> None:
    base = busybox_base(tmp_path, registry, unique_repo)
    base_manifest = json.loads(skopeo(tmp_path, "inspect", "--raw", "--tls-verify=false", f"docker://{base}"))
    src = make_model(tmp_path / "m")
    ref = f"{registry.host}/{unique_repo}:car"
    digest = json.loads(cli("push", ref, str(src), "--kind", "model", "--as-image", "--base", base, "--no-git",
                            "--json").stdout)["digest"]
    index = get_json(registry, unique_repo, digest)
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64"]  # the base's platforms
    m = get_json(registry, unique_repo, index["manifests"][0]["digest"])
    assert m["layers"][0] == base_manifest["layers"][0]  # copied by digest
    cfg = json.loads(get_blob(registry, unique_repo, m["config"]["digest"]))
    assert cfg["config"]["Env"] == ["PATH=/bin"]  # extended, not replaced
    assert cfg["config"]["Labels"][L_BASE_LAYERS] == "1"
    assert len(cfg["rootfs"]["diff_ids"]) == len(m["layers"]) == len(cfg["history"]) == 7
    # skopeo reads the config of what was pushed
    raw = json.loads(skopeo(tmp_path, "inspect", "--config", "--raw", "--tls-verify=false", f"docker://{ref}"))
    assert raw == cfg
    out = tmp_path / "out"
    cli("pull", ref, "-o", str(out))
    assert tree(out) == tree(src)  # /bin/busybox and its symlink are not restored
    r = cli("push", ref, str(src), "--kind", "model", "--as-image", "--base", base, "--platform", "linux/arm64",
            "--no-git", check=False)
    assert r.returncode == 2 and "no linux/arm64 image" in r.stderr


# -- reading images: whiteouts, olot --------------------------------------------------------------------------------
def test_pull_applies_whiteouts_and_opaque_directories(registry: RunningRegistry, unique_repo: str,
                                                       tmp_path: Path) -> None:
    """image-spec layer.md: ``.wh.NAME`` hides NAME of the layers below, ``.wh..wh..opq`` the directory's earlier
    contents; a later layer's file replaces an earlier one; only files under /models are kept (a symlink outside
    is not even looked at)."""
    layers = [
        tar_layer({"etc/passwd": b"root\n", "models/a.txt": b"a1", "models/gone.txt": b"x", "models/d/old.txt": b"o",
                   "models/keep/k.txt": b"k"}, symlinks={"bin/sh": "/bin/busybox"}),
        tar_layer({"models/a.txt": b"a2", "models/.wh.gone.txt": b"", "models/d/.wh..wh..opq": b"",
                   "models/d/new.txt": b"n"}),
        tar_layer({"models/.wh.keep": b"", "models/.wh.d": b"", "models/d/again.txt": b"g"}),
    ]
    layout = tmp_path / "layout"
    write_layout(layout, "wh", layers)
    ref = f"{registry.host}/{unique_repo}:wh"
    skopeo(tmp_path, "copy", "--dest-tls-verify=false", f"oci:{layout}:wh", f"docker://{ref}")
    out = tmp_path / "out"
    cli("pull", ref, "-o", str(out))
    # layer 3 whites out d (of the layers below) and adds d/again.txt itself
    assert tree(out) == {"a.txt": b"a2", "d/again.txt": b"g"}
    diff = json.loads(cli("inspect", ref, "--json").stdout)
    assert diff["config"]["rootfs"]["type"] == "layers"


def test_pull_of_an_image_repeating_a_layer_and_partial_pull(registry: RunningRegistry, unique_repo: str,
                                                              tmp_path: Path) -> None:
    """The same blob twice in one image (Docker writes identical layers for identical steps): the later copy wins
    and nothing collides; ``--include`` and ``--filter`` select among the files under /models by their names there."""
    first = tar_layer({"models/a.txt": b"a1", "models/w.safetensors": b"w1", "models/cfg/config.json": b"{}"})
    layers = [first, tar_layer({"models/a.txt": b"a2", "models/.wh.w.safetensors": b""}), first]
    layout = tmp_path / "layout"
    write_layout(layout, "rep", layers)
    ref = f"{registry.host}/{unique_repo}:rep"
    skopeo(tmp_path, "copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout}:rep", f"docker://{ref}")
    out = tmp_path / "out"
    cli("pull", ref, "-o", str(out))
    assert tree(out) == {"a.txt": b"a1", "w.safetensors": b"w1", "cfg/config.json": b"{}"}
    some = tmp_path / "some"
    cli("pull", ref, "-o", str(some), "--include", "cfg/*")
    assert tree(some) == {"cfg/config.json": b"{}"}
    weights = tmp_path / "weights"
    cli("pull", ref, "-o", str(weights), "--filter", "weights")
    assert tree(weights) == {"w.safetensors": b"w1"}


def test_olot_modelcar_pulls_files_not_tar_bytes(registry: RunningRegistry, unique_repo: str,
                                                 tmp_path: Path) -> None:
    """olot (PyPI; Kubeflow model registry's modelcar builder) adds one ``application/vnd.oci.image.layer.v1.tar``
    layer per file titled with the file name. Such a layer is a changeset: pull extracts it (it used to write the
    tar bytes as ``model.onnx``)."""
    olot = pytest.importorskip("olot.basics", reason="olot is a test extra (pip install -e '.[test]')")
    busybox_base(tmp_path, registry, unique_repo)
    layout = tmp_path / "olot-layout"
    skopeo(tmp_path, "copy", "--src-tls-verify=false", f"docker://{registry.host}/{unique_repo}-base:v1",
           f"oci:{layout}:latest")
    src = tmp_path / "model"
    write_random(src / "model.onnx", 300_000, 3)
    (src / "sub").mkdir()
    (src / "sub" / "labels.txt").write_text("cat\ndog\n")
    olot.oci_layers_on_top(layout, [src / "model.onnx", src / "sub" / "labels.txt"], root_dir=src)
    ref = f"{registry.host}/{unique_repo}:olot"
    skopeo(tmp_path, "copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout}:latest",
           f"docker://{ref}")
    manifest = json.loads(skopeo(tmp_path, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"))
    titled = [layer for layer in manifest["layers"]
              if (layer.get("annotations") or {}).get("org.opencontainers.image.title")]
    assert titled and all(layer["mediaType"].startswith(OCI_LAYER) for layer in titled)  # what olot writes
    out = tmp_path / "out"
    cli("pull", ref, "-o", str(out))
    assert tree(out) == tree(src)


# -- the two forms linked; signing ------------------------------------------------------------------------------------
def test_with_image_links_both_forms_and_signs_both(registry: RunningRegistry, unique_repo: str,
                                                    tmp_path: Path) -> None:
    src = make_model(tmp_path / "m")
    prefix = tmp_path / "k"
    env = {**os.environ, "COSIGN_PASSWORD": "pw"}
    subprocess.run([sys.executable, "-m", "ociart", "keygen", "--output-key-prefix", str(prefix)], env=env,
                   check=True, capture_output=True, timeout=60)
    art = f"{registry.host}/{unique_repo}:v1"
    img = f"{registry.host}/{unique_repo}-image:v1"
    proc = subprocess.run([sys.executable, "-m", "ociart", "push", art, str(src), "--kind", "model", "--with-image",
                           img, "--sign", "--key", f"{prefix}.key", "--no-git", "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    art_digest = json.loads(proc.stdout)["digest"]
    img_digest = json.loads(cli("resolve", img, "--json").stdout)["digest"]
    to_image = json.loads(cli("referrers", art, "--artifact-type", IMAGE_FORM, "--json").stdout)["referrers"]
    to_art = json.loads(cli("referrers", img, "--artifact-type", ARTIFACT_FORM, "--json").stdout)["referrers"]
    assert [r["annotations"]["dev.ociart.form.digest"] for r in to_image] == [img_digest]
    assert [r["annotations"]["dev.ociart.form.digest"] for r in to_art] == [art_digest]
    assert to_art[0]["annotations"]["dev.ociart.form.reference"] == f"{art}@{art_digest}"
    shown = json.loads(cli("inspect", img, "--json").stdout)
    assert shown["form"] == "image" and shown["mount_path"] == "/models" and shown["kind"] == "model"
    assert shown["links"] == [{"artifactType": ARTIFACT_FORM, "digest": art_digest, "reference": f"{art}@{art_digest}"}]
    assert "model.safetensors" in {f["path"] for f in shown["files"]}
    human = cli("inspect", art).stdout
    assert f"linked:       image form {img}@{img_digest}" in human
    assert "form" not in json.loads(cli("inspect", art, "--json").stdout)  # an artifact, not an image
    for ref in (art, img):
        v = json.loads(cli("verify", ref, "--key", f"{prefix}.pub", "--json").stdout)
        assert v["signatures"], v
    # skopeo finds the legacy .sig of the image form (the tag cosign and containers/image look up)
    tags = json.loads(skopeo(tmp_path, "list-tags", "--tls-verify=false", f"docker://{img.rsplit(':', 1)[0]}"))
    assert f"sha256-{img_digest.removeprefix('sha256:')}.sig" in tags["Tags"]
    sig = json.loads(skopeo(tmp_path, "inspect", "--raw", "--tls-verify=false",
                            f"docker://{img.rsplit(':', 1)[0]}:sha256-{img_digest.removeprefix('sha256:')}.sig"))
    assert sig["layers"][0]["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    diff = json.loads(cli("diff", art, img, "--json").stdout)  # the two forms hold the same files
    assert diff["added"] == diff["removed"] == diff["changed"] == [] and diff["unchanged"] == len(tree(src))
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    cli("pull", art, "-o", str(a))
    cli("pull", img, "-o", str(b))
    assert tree(a) == tree(b) == tree(src)
    # the deploy-time fetcher reads the image form through the same unpack path, verified first
    cli("fetch", img, "-o", str(c), "--verify-key", f"{prefix}.pub")
    assert {k: v for k, v in tree(c).items() if not k.startswith(".ociart/")} == tree(src)


def test_library_push_as_image_into_embedded_store(tmp_path: Path) -> None:
    src = make_model(tmp_path / "m")
    with ociart.Client() as c:
        first = c.push("demo/car:v1", [src], kind="model", as_image=True, reproducible=True, lineage=False)
        again = c.push("demo/car:v2", [src], kind="model", as_image=True, reproducible=True, lineage=False)
        assert first.digest == again.digest
        c.pull("demo/car:v1", tmp_path / "out")
        assert c.diff("demo/car:v1", "demo/car:v2").changed == []
        assert set(dict(c.files("demo/car:v1")[1])) == set(tree(src))
    assert tree(tmp_path / "out") == tree(src)


# -- convert ----------------------------------------------------------------------------------------------------------
def test_convert_streams_an_artifact_into_the_same_image_layers(registry: RunningRegistry, unique_repo: str,
                                                                tmp_path: Path) -> None:
    """convert re-streams raw and tar layers into exactly the tar layers push --as-image writes for the same
    directory (the same deterministic writer), links the two forms, and the result pulls back."""
    src = make_model(tmp_path / "m")
    art = f"{registry.host}/{unique_repo}:v1"
    cli("push", art, str(src), "--kind", "model", "--no-git")
    conv = f"{registry.host}/{unique_repo}:v1-image"
    digest = json.loads(cli("convert", art, conv, "--as-image", "--json").stdout)["digest"]
    direct = json.loads(cli("push", f"{registry.host}/{unique_repo}:direct", str(src), "--kind", "model",
                            "--as-image", "--no-git", "--json").stdout)["digest"]

    def layers(d: str) -> list[str]:
        index = get_json(registry, unique_repo, d)
        return [layer["digest"] for layer in get_json(registry, unique_repo, index["manifests"][0]["digest"])["layers"]]

    assert layers(digest) == layers(direct)
    links = json.loads(cli("referrers", conv, "--artifact-type", ARTIFACT_FORM, "--json").stdout)["referrers"]
    assert [x["annotations"]["dev.ociart.form.reference"] for x in links][0].startswith(art + "@sha256:")
    out = tmp_path / "out"
    cli("pull", conv, "-o", str(out))
    assert tree(out) == tree(src)
    r = cli("convert", art, f"{registry.host}/{unique_repo}:x", check=False)
    assert r.returncode == 2 and "--as-image" in r.stderr
    r = cli("convert", conv, f"{registry.host}/{unique_repo}:x", "--as-image", check=False)
    assert r.returncode == 2 and "already an image" in r.stderr


def test_convert_refuses_a_corrupt_source_blob_and_writes_nothing(registry: RunningRegistry, unique_repo: str,
                                                                  tmp_path: Path) -> None:
    src = make_model(tmp_path / "m")
    layout = tmp_path / "layout"
    cli("push", f"oci:{layout}:v1", str(src), "--kind", "model", "--no-git")
    manifest = json.loads(cli("inspect", f"oci:{layout}:v1", "--json").stdout)["manifest"]
    weights = next(layer for layer in manifest["layers"]
                   if layer["annotations"].get("org.opencontainers.image.title") == "model.safetensors")
    blob = layout / "blobs" / "sha256" / weights["digest"].removeprefix("sha256:")
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF  # same size, other bytes
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    r = cli("convert", f"oci:{layout}:v1", f"{registry.host}/{unique_repo}:img", "--as-image", "--no-link",
            check=False)
    assert r.returncode != 0 and "digest mismatch" in r.stderr
    assert httpx.get(f"{registry.url}/v2/{unique_repo}/tags/list").status_code == 404
