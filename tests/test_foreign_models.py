"""Other tools' model formats pull into the expected tree (docs/spec.md §5, "Restored names").

Each fixture is written here byte for byte as that tool writes it, from its source (cited per fixture), and pushed
with plain HTTP requests (not through ociart), so the test reads exactly those bytes:

* Docker Model Runner, config v0.1 (no filepath annotations: the names of its runtime bundle) and v0.2 (filepath
  annotations on every layer), GGUF and sharded safetensors;
* Ollama (Docker schema 2 manifest, ``application/vnd.ollama.image.*`` layers);
* a KServe modelcar built the way KServe's documentation builds one (``FROM busybox``, ``RUN mkdir /models``,
  ``COPY data/ /models/``; Docker media types, gzip layers): only the files under /models are restored.
KitOps ModelKits are covered in tests/test_packaging.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import httpx
from support.registry import RunningRegistry
from test_image_form import cli, tree

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def go_json(obj: object) -> bytes:
    """What Go's ``encoding/json`` writes for a struct: no spaces, fields in declaration order (the dicts below are
    written in that order), HTML characters escaped (none occur here)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def push_blob(registry: RunningRegistry, repo: str, data: bytes) -> str:
    d = digest(data)
    r = httpx.post(f"{registry.url}/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    location = location if location.startswith("http") else registry.url + location
    sep = "&" if "?" in location else "?"
    r = httpx.put(f"{location}{sep}digest={d}", content=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return d


def push_manifest(registry: RunningRegistry, repo: str, tag: str, manifest: bytes, media_type: str) -> str:
    r = httpx.put(f"{registry.url}/v2/{repo}/manifests/{tag}", content=manifest,
                  headers={"Content-Type": media_type})
    assert r.status_code == 201, r.text
    return f"{registry.host}/{repo}:{tag}"


def gguf_bytes(seed: str, size: int = 4096) -> bytes:
    """A GGUF v3 header (magic, version 3, zero tensors, zero metadata) followed by filler."""
    head = b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (0).to_bytes(8, "little")
    body = hashlib.sha256(seed.encode()).digest() * (size // 32)
    return head + body


# -- Docker Model Runner -------------------------------------------------------------------------------------------
# docker/model-runner pkg/distribution/types/config.go: media types, ConfigFile{config, descriptor, rootfs},
# Config{format, quantization, parameters, architecture, size, gguf, safetensors, diffusers, context_size};
# pkg/distribution/internal/gguf/create.go: rootfs type "rootfs", one diff_id per layer (digest == diff_id: raw files);
# pkg/distribution/internal/partial/layer.go: the filepath / file.metadata+json / mediatype.untested annotations.
def dmr_config(fmt: str, diff_ids: list[str]) -> bytes:
    return go_json({"config": {"format": fmt, "quantization": "Q4_K_M", "parameters": "361.82 M",
                               "architecture": "llama", "size": "256.35 MiB", "context_size": 2048},
                    "descriptor": {"created": "2025-04-11T09:21:32.123456789Z"},
                    "rootfs": {"type": "rootfs", "diff_ids": diff_ids}})


def dmr_layer(media_type: str, data: bytes, path: str | None) -> dict:
    layer: dict = {"mediaType": media_type, "size": len(data), "digest": digest(data)}
    if path is not None:  # v0.2 (and current v0.1 writers): partial.NewLayerWithRelativePath
        meta = go_json({"name": path.rsplit("/", 1)[-1], "mode": 420, "uid": 0, "gid": 0, "size": len(data),
                        "mtime": "2025-04-11T09:21:30Z", "typeflag": 0}).decode()
        layer["annotations"] = {"org.cncf.model.file.metadata+json": meta, "org.cncf.model.filepath": path,
                                "org.cncf.model.file.mediatype.untested": "false"}
    return layer


def push_dmr(registry: RunningRegistry, repo: str, tag: str, config_version: str,
             files: list[tuple[str, bytes, str | None]], fmt: str) -> str:
    layers = []
    for media_type, data, path in files:
        push_blob(registry, repo, data)
        layers.append(dmr_layer(media_type, data, path))
    config = dmr_config(fmt, [x["digest"] for x in layers])
    push_blob(registry, repo, config)
    manifest = go_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": f"application/vnd.docker.ai.model.config.{config_version}+json",
                                   "size": len(config), "digest": digest(config)},
                        "layers": layers})
    return push_manifest(registry, repo, tag, manifest, OCI_MANIFEST)


def test_docker_model_runner_v01_gguf_without_names(registry: RunningRegistry, unique_repo: str,
                                                    tmp_path: Path) -> None:
    """v0.1 as Docker Hub's first ai/* models were written: no annotations, so the names are those DMR's runtime
    bundle gives them (pkg/distribution/internal/bundle/unpack.go): model.gguf, model.mmproj, template.jinja."""
    weights, proj, tmpl, lic = gguf_bytes("w"), gguf_bytes("p", 1024), b"{{ messages }}", b"Apache-2.0\n"
    ref = push_dmr(registry, unique_repo, "v01", "v0.1", [
        ("application/vnd.docker.ai.gguf.v3", weights, None),
        ("application/vnd.docker.ai.mmproj", proj, None),
        ("application/vnd.docker.ai.chat.template.jinja", tmpl, None),
        ("application/vnd.docker.ai.license", lic, None),
    ], "gguf")
    out = tmp_path / "out"
    cli("pull", ref, "-o", str(out))
    assert tree(out) == {"model.gguf": weights, "model.mmproj": proj, "template.jinja": tmpl, "LICENSE": lic}
    info = json.loads(cli("inspect", ref, "--json").stdout)
    assert info["kind"] == "docker-model"
    assert [f["path"] for f in info["files"]] == ["model.gguf", "model.mmproj", "template.jinja", "LICENSE"]
    assert [f["category"] for f in info["files"]] == ["weights", "weights", "docs", "docs"]
    weights_only = tmp_path / "weights"
    cli("pull", ref, "-o", str(weights_only), "--filter", "weights")
    assert set(tree(weights_only)) == {"model.gguf", "model.mmproj"}


def test_docker_model_runner_v01_sharded_safetensors(registry: RunningRegistry, unique_repo: str,
                                                     tmp_path: Path) -> None:
    shards = [hashlib.sha256(bytes([i])).digest() * 200 for i in range(3)]
    ref = push_dmr(registry, unique_repo, "shards", "v0.1",
                   [("application/vnd.docker.ai.safetensors", s, None) for s in shards], "safetensors")
    out = tmp_path / "out"
    cli("pull", ref, "-o", str(out))
    assert tree(out) == {f"model-{i:05d}-of-00003.safetensors": s for i, s in enumerate(shards, 1)}


def test_docker_model_runner_v02_keeps_filepaths(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    """v0.2: every layer carries org.cncf.model.filepath (nested directories), which wins over the bundle names."""
    files = {
        "model-00001-of-00002.safetensors": hashlib.sha256(b"a").digest() * 300,
        "model-00002-of-00002.safetensors": hashlib.sha256(b"b").digest() * 300,
        "config.json": b'{"architectures":["LlamaForCausalLM"]}',
        "tokenizer/tokenizer.json": b'{"version":"1.0"}',
    }
    types = {"config.json": "application/vnd.docker.ai.model.file",
             "tokenizer/tokenizer.json": "application/vnd.docker.ai.model.file"}
    ref = push_dmr(registry, unique_repo, "v02", "v0.2",
                   [(types.get(p, "application/vnd.docker.ai.safetensors"), data, p) for p, data in files.items()],
                   "safetensors")
    out = tmp_path / "out"
    cli("pull", ref, "-o", str(out))
    assert tree(out) == files


# -- Ollama ---------------------------------------------------------------------------------------------------------
# ollama server/images.go: ManifestV2{schemaVersion, mediaType, config, layers} with the Docker schema 2 media type,
# Layer{mediaType, digest, size}, the config blob application/vnd.docker.container.image.v1+json holding ConfigV2
# {model_format, model_family, model_families, model_type, file_type, architecture, os, rootfs{type, diff_ids}};
# layers application/vnd.ollama.image.{model,template,system,params,license}.
def test_ollama_manifest_pulls_into_named_files(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    model = gguf_bytes("ollama", 8192)
    template = b"{{ if .System }}<|system|>{{ .System }}{{ end }}<|user|>{{ .Prompt }}<|assistant|>"
    system = b"You are a helpful assistant."
    params = go_json({"stop": ["<|user|>", "<|assistant|>"], "temperature": 0.7})
    license_ = b"MIT License\n"
    layers = []
    for media_type, data in (("model", model), ("template", template), ("system", system), ("params", params),
                             ("license", license_)):
        push_blob(registry, unique_repo, data)
        layers.append({"mediaType": f"application/vnd.ollama.image.{media_type}", "digest": digest(data),
                       "size": len(data)})
    config = go_json({"model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
                      "model_type": "1.1B", "file_type": "Q4_0", "architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]}})
    push_blob(registry, unique_repo, config)
    manifest = go_json({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                   "digest": digest(config), "size": len(config)},
                        "layers": layers})
    ref = push_manifest(registry, unique_repo, "latest", manifest, DOCKER_MANIFEST)
    out = tmp_path / "out"
    cli("pull", ref, "-o", str(out))
    assert tree(out) == {"model.gguf": model, "template": template, "system": system, "params.json": params,
                         "license": license_}
    info = json.loads(cli("inspect", ref, "--json").stdout)
    assert info["kind"] == "ollama" and "form" not in info  # a Docker config, but no filesystem layers
    assert [f["category"] for f in info["files"]] == ["weights", "config", "config", "config", "docs"]


# -- KServe modelcar ------------------------------------------------------------------------------------------------
# KServe "Serving models with OCI images" (https://kserve.github.io/website/docs/model-serving/storage/providers/oci):
#   FROM busybox / RUN mkdir /models && chmod 775 /models / COPY data/ /models/
# as a Docker builder writes it: Docker schema 2 manifest, gzip layers
# (application/vnd.docker.image.rootfs.diff.tar.gzip), directories as tar entries, the config's diff_ids the digests
# of the uncompressed tars.
def layer_tar(entries: list[tuple[str, bytes | None, int]], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, 1700000000
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buf.getvalue()


def test_kserve_modelcar_pulls_only_models(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    files = {"model.onnx": hashlib.sha256(b"onnx").digest() * 1000, "1/labels.txt": b"cat\ndog\n"}
    tars = [
        layer_tar([("bin/", None, 0o755), ("bin/busybox", b"\x7fELF fake busybox", 0o755), ("etc/", None, 0o755),
                   ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)], symlinks={"bin/sh": "busybox"}),
        layer_tar([("models/", None, 0o775)]),
        layer_tar([("models/", None, 0o775), *((f"models/{p}", d, 0o644) for p, d in files.items())]),
    ]
    layers = []
    for t in tars:
        gz = gzip.compress(t, mtime=0)
        push_blob(registry, unique_repo, gz)
        layers.append({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(gz),
                       "digest": digest(gz)})
    config = go_json({"architecture": "amd64", "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                                                  "/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
                      "created": "2025-01-01T00:00:00Z",
                      "history": [{"created_by": "ADD busybox.tar.xz / # buildkit"},
                                  {"created_by": "RUN /bin/sh -c mkdir /models && chmod 775 /models # buildkit"},
                                  {"created_by": "COPY data/ /models/ # buildkit"}],
                      "os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest(t) for t in tars]}})
    push_blob(registry, unique_repo, config)
    manifest = go_json({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                   "size": len(config), "digest": digest(config)}, "layers": layers})
    ref = push_manifest(registry, unique_repo, "modelcar", manifest, DOCKER_MANIFEST)
    out = tmp_path / "out"
    cli("pull", ref, "-o", str(out))
    assert tree(out) == files
    info = json.loads(cli("inspect", ref, "--json").stdout)
    assert info["form"] == "image" and "mount_path" not in info  # a foreign image: /models by convention
