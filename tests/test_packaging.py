"""ML packaging end to end (issue 3): typed artifacts (ModelPack models, datasets, preprocessors, reports,
checkpoints) against real distribution 2.8.2 and the embedded store.

* a realistic model directory round-trips byte-identical, modes kept, ModelPack layer types per role;
* every manifest written here validates against the OCI image-manifest schema, every ModelPack config against the
  ModelPack schema (format checker on);
* reproducible digests (``SOURCE_DATE_EPOCH``, ``--reproducible``, deterministic tar bytes);
* dedup across versions (bytes counted by the client and at a proxy);
* partial pull by ``--filter`` / ``--include`` straight from the registry (blob GETs counted at a proxy);
* a malicious-tar corpus is refused with nothing written;
* ``diff``; KitOps ModelKits and plain ORAS artifacts; ``skopeo copy``; usage errors.

The JSON schemas are not part of this repository: they are read from ``$OCIART_SPEC_DIR`` (``helpers.spec_dir``).
Without them the test of the validators themselves skips, naming the variable and the files, and the other tests
run without their schema checks; with ``OCIART_REQUIRE_SPEC=1`` (CI) missing schemas are a failure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import make_tar, optional_spec_dir, run_cli, spec_dir, tree_digest, write_random
from support.faultproxy import FaultProxy

import ociart
from ociart.errors import UnsafePathError, UsageError
from ociart.oci import (
    EMPTY_JSON_DIGEST,
    OCI_EMPTY,
    OCI_MANIFEST,
    Content,
    Descriptor,
    Manifest,
)
from ociart.packaging.kinds import (
    KIND_SPECS,
    KITOPS_CONFIG,
    MODELPACK_CONFIG,
    MODELPACK_MANIFEST,
    REPORT_METRICS,
    Kind,
)

SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"

WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
A_FILEPATH = "org.cncf.model.filepath"
A_FILE_METADATA = "org.cncf.model.file.metadata+json"
A_TITLE = "org.opencontainers.image.title"
A_CREATED = "org.opencontainers.image.created"
#: A whole second an hour ago: file mtimes of the fixtures (outside the digest cache's racy window).
T0 = int(time.time()) - 3600


# -- JSON schemas -----------------------------------------------------------------------------------
#: What the validators read, relative to ``$OCIART_SPEC_DIR`` (the manifest schema $refs the other OCI files).
SCHEMA_FILES = ("oci-image-spec/image-manifest-schema.json", "oci-image-spec/content-descriptor.json",
                "oci-image-spec/defs-descriptor.json", "oci-image-spec/defs.json", "modelpack/config-schema.json")


class Spec:
    """Validators for the OCI image manifest (draft-04) and the ModelPack config (draft 2020-12), from ``root``;
    ``root=None`` (no spec data) checks nothing: ``check_*`` return the parsed document only."""

    def __init__(self, root: Path | None) -> None:
        from jsonschema import Draft4Validator, Draft202012Validator, FormatChecker
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT4

        self.root = root
        if root is None:
            return
        oci = root / "oci-image-spec"
        resources: list[tuple[str, Resource[Any]]] = []
        for f in sorted(oci.glob("*.json")):
            contents = json.loads(f.read_text())
            res = Resource.from_contents(contents, default_specification=DRAFT4)
            uris = {f.name, f"https://opencontainers.org/schema/image/{f.name}"}
            if isinstance(contents.get("id"), str):
                uris.add(contents["id"])
            resources += [(u, res) for u in sorted(uris)]
        registry = Registry().with_resources(resources)
        # jsonschema checks "date-time" only with an optional package; check RFC 3339 here so the checker is real
        checker = FormatChecker()
        checker.checks("date-time")(_is_rfc3339)
        self.manifest_validator = Draft4Validator(json.loads((oci / "image-manifest-schema.json").read_text()),
                                                  registry=registry, format_checker=checker)
        self.modelpack_validator = Draft202012Validator(
            json.loads((root / "modelpack" / "config-schema.json").read_text()), format_checker=checker)

    def manifest_errors(self, doc: Any) -> list[str]:
        return _errors(self.manifest_validator, doc)

    def modelpack_errors(self, doc: Any) -> list[str]:
        return _errors(self.modelpack_validator, doc)

    def check_manifest(self, raw: bytes) -> dict[str, Any]:
        doc = json.loads(raw)
        errors = self.manifest_errors(doc) if self.root is not None else []
        assert not errors, f"manifest is not valid against image-manifest-schema.json: {errors}"
        return doc

    def check_modelpack(self, raw: bytes) -> dict[str, Any]:
        doc = json.loads(raw)
        errors = self.modelpack_errors(doc) if self.root is not None else []
        assert not errors, f"ModelPack config is not valid against modelpack/config-schema.json: {errors}"
        return doc


def _errors(validator: Any, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", value):
        return False
    try:
        dt.datetime.fromisoformat(value.upper())
    except ValueError:
        return False
    return True


@pytest.fixture(scope="session")
def spec() -> Spec:
    """The schema checks every test applies to what it wrote, when ``$OCIART_SPEC_DIR`` holds the schemas."""
    return Spec(optional_spec_dir(*SCHEMA_FILES))


# -- helpers ----------------------------------------------------------------------------------------
def _client(**kw: Any) -> ociart.Client:
    return ociart.Client(plain_http=True, **kw)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def set_mtimes(root: Path, when: float) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, (when, when))


def rfc3339(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def blob_bytes(c: ociart.Client, ref: str, desc: dict[str, Any] | Descriptor) -> bytes:
    r = c.ref(ref)
    d = desc if isinstance(desc, Descriptor) else Descriptor.model_validate(desc)
    with c.target(r).open_blob(r.repository, d) as chunks:
        return b"".join(chunks)


def written(c: ociart.Client, ref: str, spec: Spec) -> tuple[dict[str, Any], bytes]:
    """The raw manifest as stored (schema-checked, with the manifests referring to it) and its config blob
    (ModelPack configs schema-checked)."""
    pinned, content = c.manifest(ref)
    manifest = spec.check_manifest(content.data)
    for referrer in c.referrers(pinned):  # e.g. the provenance statement attached on push
        if referrer.mediaType == OCI_MANIFEST:
            spec.check_manifest(c.target(pinned).get_manifest(pinned.repository, referrer.digest).data)
    config = blob_bytes(c, ref, manifest["config"])
    if manifest["config"]["mediaType"] == MODELPACK_CONFIG:
        spec.check_modelpack(config)
    return manifest, config


def tar_members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return tf.getmembers()


def file_map(c: ociart.Client, ref: str, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """path -> the layer holding it (tar layers read to list their members)."""
    out: dict[str, dict[str, Any]] = {}
    for layer in manifest["layers"]:
        if layer["mediaType"].endswith(".tar"):
            for m in tar_members(blob_bytes(c, ref, layer)):
                out[m.name] = layer
        else:
            out[layer["annotations"][A_FILEPATH]] = layer
    return out


def modes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mode & 0o777 for p in root.rglob("*") if p.is_file()}


def blob_gets(proxy: FaultProxy) -> set[str]:
    return {e["path"].split("/blobs/")[1].split("?")[0] for e in proxy.find("GET", "/blobs/sha256:")}


def upload_bytes(proxy: FaultProxy) -> int:
    return sum(e["bytes_in"] for e in proxy.log if "/blobs/uploads/" in e["path"])


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr


# -- the realistic model directory ------------------------------------------------------------------
METADATA_YAML = """\
name: tiny-llama
version: "1.2.0"
description: A tiny causal language model for tests
authors: [Ada Lovelace, Alan Turing]
license: Apache-2.0
framework: pytorch
architecture: transformer
precision: bfloat16
metrics:
  accuracy: 0.913
  perplexity: 7.25
labels:
  team: nlp
  stage: candidate
"""

SHARD1, SHARD2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
CONFIG_FILES = ["config.json", "generation_config.json", "special_tokens_map.json", "tokenizer_config.json"]
DATA_FILES = [f"data/sample_{i:03d}.jsonl" for i in range(300)]


def make_model(root: Path) -> Path:
    write_random(root / SHARD1, 3 << 20, seed=11)
    write_random(root / SHARD2, (2 << 20) + 4321, seed=12)
    (root / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 256,
                                                  "num_hidden_layers": 2, "torch_dtype": "bfloat16"}, indent=2))
    (root / "generation_config.json").write_text('{"bos_token_id": 1, "eos_token_id": 2, "max_length": 512}\n')
    # a real tokenizer.json is megabytes of vocabulary: over the small-file threshold, so a raw layer of its own
    vocab = {f"tok{i:05d}": i for i in range(70_000)}
    (root / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": vocab}}))
    (root / "tokenizer_config.json").write_text('{"model_max_length": 512, "tokenizer_class": "LlamaTokenizer"}\n')
    (root / "special_tokens_map.json").write_text('{"bos_token": "<s>", "eos_token": "</s>"}\n')
    (root / "README.md").write_text("# tiny-llama\n\nA model card.\n")
    (root / "LICENSE").write_text("Apache License, Version 2.0\n")
    (root / "code").mkdir()
    (root / "code" / "train.py").write_text("import torch\n\nprint('training')\n")
    (root / "code" / "run.sh").write_text("#!/bin/sh\nexec python train.py \"$@\"\n")
    (root / "data").mkdir()
    for i, name in enumerate(DATA_FILES):
        (root / name).write_text(json.dumps({"prompt": f"q{i}", "completion": "a" * (i % 17)}) + "\n")
    (root / "ociart.yaml").write_text(METADATA_YAML)
    for p in root.rglob("*"):
        if p.is_file():
            os.chmod(p, 0o644)
    os.chmod(root / "code" / "run.sh", 0o755)
    os.chmod(root / "code" / "train.py", 0o640)  # normalised to 0644: only the executable bit is kept
    set_mtimes(root, T0)
    return root


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return make_model(tmp_path / "tiny-llama")


def packed_tree(src: Path) -> dict[str, str]:
    """What a full pull must restore: every file but ociart.yaml."""
    return {k: v for k, v in tree_digest(src).items() if k != "ociart.yaml"}


#: file -> (layer media type, filepath annotation of its layer) for the default small-file threshold
def expected_layout() -> dict[str, tuple[str, str]]:
    out = {SHARD1: (WEIGHT_RAW, SHARD1), SHARD2: (WEIGHT_RAW, SHARD2),
           "tokenizer.json": ("application/vnd.cncf.model.weight.config.v1.raw", "tokenizer.json"),
           "README.md": ("application/vnd.cncf.model.doc.v1.tar", "."),
           "LICENSE": ("application/vnd.cncf.model.doc.v1.tar", "."),
           "code/train.py": ("application/vnd.cncf.model.code.v1.tar", "code"),
           "code/run.sh": ("application/vnd.cncf.model.code.v1.tar", "code")}
    # weight configs stay raw whatever their size: ModelPack readers find config.json by its filepath
    out.update({name: ("application/vnd.cncf.model.weight.config.v1.raw", name) for name in CONFIG_FILES})
    out.update({name: ("application/vnd.cncf.model.dataset.v1.tar", "data") for name in DATA_FILES})
    return out


def layer_for(manifest: dict[str, Any], filepath: str, media_type: str) -> dict[str, Any]:
    found = [x for x in manifest["layers"] if x["annotations"].get(A_FILEPATH) == filepath
             and x["mediaType"] == media_type]
    assert len(found) == 1, (filepath, media_type, manifest["layers"])
    return found[0]


# -- 1. the realistic model round trip ----------------------------------------------------------------
def test_model_roundtrip_registry_and_embedded(registry, unique_repo: str, model_dir: Path, tmp_path: Path,
                                               spec: Spec) -> None:
    ref = f"{registry.host}/{unique_repo}:v1"
    local = f"{unique_repo}:v1"  # no host: the embedded store
    with _client() as c, ociart.Client() as lc:
        desc = c.push(ref, [model_dir], kind="model")
        assert lc.push(local, [model_dir], kind="model").digest == desc.digest  # same bytes in both stores
        manifest, config_raw = written(c, ref, spec)
        local_manifest, _ = written(lc, local, spec)
        assert local_manifest == manifest
        files = file_map(c, ref, manifest)

        # manifest: ModelPack artifact and config types, standard and ociart annotations
        assert desc.mediaType == OCI_MANIFEST and manifest["mediaType"] == OCI_MANIFEST
        assert manifest["artifactType"] == MODELPACK_MANIFEST
        assert manifest["config"]["mediaType"] == MODELPACK_CONFIG
        assert manifest["config"]["digest"] == sha256(config_raw) and manifest["config"]["size"] == len(config_raw)
        ann = manifest["annotations"]
        assert ann[A_CREATED] == rfc3339(T0)  # newest file mtime by default
        assert ann["org.opencontainers.image.version"] == "1.2.0"
        assert ann["org.opencontainers.image.title"] == "tiny-llama"
        assert ann["org.opencontainers.image.description"] == "A tiny causal language model for tests"
        assert ann["org.opencontainers.image.licenses"] == "Apache-2.0"
        assert ann["org.opencontainers.image.authors"] == "Ada Lovelace, Alan Turing"
        assert ann["dev.ociart.kind"] == "model"
        assert json.loads(ann["dev.ociart.metrics+json"]) == {"accuracy": 0.913, "perplexity": 7.25}
        assert {k: v for k, v in ann.items() if k.startswith("dev.ociart.label.")} == {
            "dev.ociart.label.team": "nlp", "dev.ociart.label.stage": "candidate"}

        # layers: one raw layer per large file, tar layers for the small files of a directory, per role
        expected = expected_layout()
        assert {k: (v["mediaType"], v["annotations"][A_FILEPATH]) for k, v in files.items()} == expected
        assert "ociart.yaml" not in files
        assert len(manifest["layers"]) == 10  # 2 shards, tokenizer.json and 4 configs raw; doc, code, data tars
        for layer in manifest["layers"]:
            a = layer["annotations"]
            assert A_FILEPATH in a
            if layer["mediaType"].endswith(".raw"):
                assert a[A_TITLE] == a[A_FILEPATH]
                meta = json.loads(a[A_FILE_METADATA])
                assert meta == {"name": a[A_FILEPATH].rsplit("/", 1)[-1], "mode": 0o644, "uid": 0, "gid": 0,
                                "size": layer["size"], "mtime": "1970-01-01T00:00:00Z", "typeflag": 48}
                assert layer["digest"] == sha256((model_dir / a[A_FILEPATH]).read_bytes())
        # the deterministic tar: sorted, mtime 0, uid/gid 0, no owner names, 0755 only for executables
        code = tar_members(blob_bytes(c, ref, layer_for(manifest, "code", "application/vnd.cncf.model.code.v1.tar")))
        assert [(m.name, m.mode, m.mtime, m.uid, m.gid, m.uname, m.gname, m.type) for m in code] == [
            ("code/run.sh", 0o755, 0, 0, 0, "", "", tarfile.REGTYPE),
            ("code/train.py", 0o644, 0, 0, 0, "", "", tarfile.REGTYPE)]
        data_tar = layer_for(manifest, "data", "application/vnd.cncf.model.dataset.v1.tar")
        assert data_tar["size"] % 10240 == 0
        assert [m.name for m in tar_members(blob_bytes(c, ref, data_tar))] == DATA_FILES

        # config: ModelPack descriptor, config and modelfs
        config = json.loads(config_raw)
        assert config["descriptor"] == {"createdAt": rfc3339(T0), "authors": ["Ada Lovelace", "Alan Turing"],
                                        "name": "tiny-llama", "version": "1.2.0", "licenses": ["Apache-2.0"],
                                        "description": "A tiny causal language model for tests"}
        assert config["config"] == {"architecture": "transformer", "format": "safetensors", "precision": "bfloat16"}
        assert config["modelfs"] == {"type": "layers", "diffIds": [x["digest"] for x in manifest["layers"]]}

        info = c.inspect(ref)
        assert info.kind == "model" and info.config == config
        assert sorted((f.path, f.category, f.packed) for f in info.files) == sorted([
            (".", "docs", True), ("code", "code", True), ("data", "dataset", True),
            (SHARD1, "weights", False), (SHARD2, "weights", False), ("tokenizer.json", "config", False),
            *[(name, "config", False) for name in CONFIG_FILES]])

        # pull from both stores: byte-identical, executable bit kept, other modes normalised, no leftovers
        for client, r, out in ((c, ref, tmp_path / "out-registry"), (lc, local, tmp_path / "out-embedded")):
            result = client.pull(r, out)
            assert result.digest == desc.digest
            assert tree_digest(out) == packed_tree(model_dir)
            assert modes(out) == {name: 0o755 if name == "code/run.sh" else 0o644 for name in packed_tree(model_dir)}
            assert sorted(f.path for f in result.files) == sorted(packed_tree(model_dir))
            assert not [p for p in out.iterdir() if p.name.startswith(".ociart")]


# -- 2. schemas and the other kinds ----------------------------------------------------------------
def test_schemas_are_wired_and_strict() -> None:
    """The validators resolve the cross-file $refs and check formats (else 'valid' would mean nothing)."""
    spec = Spec(spec_dir(*SCHEMA_FILES))
    good = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": MODELPACK_MANIFEST,
            "config": {"mediaType": MODELPACK_CONFIG, "digest": "sha256:" + "a" * 64, "size": 10},
            "layers": [{"mediaType": WEIGHT_RAW, "digest": "sha256:" + "b" * 64, "size": 1,
                        "annotations": {A_FILEPATH: "w.bin"}}]}
    assert spec.manifest_errors(good) == []
    bad_digest = json.loads(json.dumps(good))
    bad_digest["layers"][0]["digest"] = "sha256:ABC/DEF"  # pattern lives in defs-descriptor.json
    bad_annotation = json.loads(json.dumps(good))
    bad_annotation["layers"][0]["annotations"] = {A_FILEPATH: 1}  # map type lives in defs.json
    bad_media = json.loads(json.dumps(good))
    bad_media["artifactType"] = "not a media type"
    for doc in (bad_digest, bad_annotation, bad_media, {**good, "layers": []}):
        assert spec.manifest_errors(doc), doc
    config = {"descriptor": {"createdAt": "2024-01-02T03:04:05Z", "name": "m"}, "config": {},
              "modelfs": {"type": "layers", "diffIds": ["sha256:" + "a" * 64]}}
    assert spec.modelpack_errors(config) == []
    assert spec.modelpack_errors({**config, "descriptor": {"createdAt": "yesterday"}})
    assert spec.modelpack_errors({**config, "descriptor": {"createdAt": "2024-13-40T99:00:00Z"}})
    assert spec.modelpack_errors({**config, "extra": 1})
    assert spec.modelpack_errors({**config, "modelfs": {"type": "layers", "diffIds": []}})


def make_kind_dir(root: Path, kind: str) -> dict[str, str]:
    """A directory for ``kind``; returns file -> expected layer media type."""
    root.mkdir(parents=True)
    out: dict[str, str] = {}

    def put(name: str, data: bytes | int, media_type: str, seed: int = 0) -> None:
        if isinstance(data, int):
            write_random(root / name, data, seed=seed)
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        out[name] = media_type

    if kind == "dataset":
        put("train.parquet", (1 << 20) + 99, "application/vnd.cncf.model.dataset.v1.raw", seed=21)
        put("README.md", b"# dataset card\n", "application/vnd.cncf.model.doc.v1.raw")
        for i in range(40):
            put(f"shards/part-{i:04d}.csv", f"id,text\n{i},row {i}\n".encode(),
                "application/vnd.cncf.model.dataset.v1.tar")
    elif kind == "preprocessor":
        put("tokenizer.json", b'{"model": {"type": "WordPiece"}}', "application/vnd.ociart.preprocessor.v1.tar")
        put("scaler.joblib", b"\x80\x04joblib-scaler", "application/vnd.ociart.preprocessor.v1.tar")
        put("preprocess.py", b"def transform(x):\n    return x\n", "application/vnd.cncf.model.code.v1.raw")
        put("README.md", b"# preprocessing\n", "application/vnd.cncf.model.doc.v1.raw")
    elif kind == "report":
        put("metrics.json", b'{"accuracy": 0.91, "f1": 0.88}', REPORT_METRICS)
        put("report.html", b"<html><body>eval</body></html>", "text/html")
        put("plots/roc.png", b"\x89PNG\r\n\x1a\nfake", "image/png")
        put("summary.md", b"# summary\n", "text/markdown")
    elif kind == "checkpoint":
        put("model.safetensors", (1 << 20) + 7, WEIGHT_RAW, seed=31)
        put("optimizer.pt", (1 << 20) + 8, "application/vnd.ociart.checkpoint.state.v1.raw", seed=32)
        put("scheduler.pt", b"sched", "application/vnd.ociart.checkpoint.state.v1.tar")
        put("rng_state.pth", b"rng", "application/vnd.ociart.checkpoint.state.v1.tar")
        put("trainer_state.json", b'{"global_step": 1000}', "application/vnd.ociart.checkpoint.state.v1.tar")
    set_mtimes(root, T0)
    return out


@pytest.mark.parametrize("kind", ["dataset", "preprocessor", "report", "checkpoint"])
def test_other_kinds_push_validate_and_pull(registry, unique_repo: str, tmp_path: Path, spec: Spec,
                                            kind: str) -> None:
    src = tmp_path / kind
    expected = make_kind_dir(src, kind)
    ref = f"{registry.host}/{unique_repo}:{kind}"
    with _client() as c:
        c.push(ref, [src], kind=kind, metadata={"name": f"my-{kind}", "version": "3", "labels": {"k": "v"}})
        manifest, config_raw = written(c, ref, spec)
        ks = KIND_SPECS[Kind(kind)]
        assert manifest["artifactType"] == ks.artifact_type
        assert manifest["annotations"]["dev.ociart.kind"] == kind
        assert manifest["annotations"]["org.opencontainers.image.title"] == f"my-{kind}"
        assert manifest["annotations"]["dev.ociart.label.k"] == "v"
        assert {k: v["mediaType"] for k, v in file_map(c, ref, manifest).items()} == expected
        for layer in manifest["layers"]:
            assert A_FILEPATH in layer["annotations"]
            if not layer["mediaType"].endswith(".tar"):
                assert layer["annotations"][A_TITLE] == layer["annotations"][A_FILEPATH]
                assert A_FILE_METADATA in layer["annotations"]
        if ks.config_media_type is None:  # report: the empty config
            assert manifest["config"] == {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2}
            assert config_raw == b"{}"
        else:
            assert manifest["config"]["mediaType"] == ks.config_media_type
            config = json.loads(config_raw)
            assert config["kind"] == kind and config["name"] == f"my-{kind}" and config["version"] == "3"
            assert config["diffIds"] == [x["digest"] for x in manifest["layers"]]
            assert config["files"] == len(expected)
            assert config["size"] == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        assert c.inspect(ref).kind == kind
        c.pull(ref, tmp_path / "out")
    assert tree_digest(tmp_path / "out") == tree_digest(src)


# -- 3. reproducible --------------------------------------------------------------------------------
def test_same_directory_same_digest_and_source_date_epoch(registry, unique_repo: str, model_dir: Path, spec: Spec,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    base = f"{registry.host}/{unique_repo}"
    with _client() as c:
        first = c.push(f"{base}:a", [model_dir], kind="model")
        again = c.push(f"{base}:b", [model_dir], kind="model")
        other = c.push(f"{base}-other:a", [model_dir], kind="model")
        assert first.digest == again.digest == other.digest
        for r in (f"{base}:a", f"{base}-other:a"):
            written(c, r, spec)

        monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
        sde = c.push(f"{base}:sde", [model_dir], kind="model", reproducible=True)  # SOURCE_DATE_EPOCH wins
        manifest, config_raw = written(c, f"{base}:sde", spec)
    assert sde.digest != first.digest
    assert manifest["annotations"][A_CREATED] == "2023-11-14T22:13:20Z"
    assert json.loads(config_raw)["descriptor"]["createdAt"] == "2023-11-14T22:13:20Z"


def test_cli_reproducible_leaves_created_out(registry, unique_repo: str, model_dir: Path, spec: Spec) -> None:
    ref = f"{registry.host}/{unique_repo}:r"
    first = run_cli("push", ref, str(model_dir), "--kind", "model", "--reproducible")
    assert first.returncode == 0, first.stderr
    set_mtimes(model_dir, T0 + 600)  # a newer checkout of the same files
    second = run_cli("push", ref, str(model_dir), "--kind", "model", "--reproducible")
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout and first.stdout.startswith("sha256:")
    with _client() as c:
        manifest, config_raw = written(c, ref, spec)
    assert A_CREATED not in manifest["annotations"]
    assert "createdAt" not in json.loads(config_raw)["descriptor"]
    assert c.resolve(ref).digest == first.stdout.strip()


def test_deterministic_tar_ignores_mtime_owner_path_and_mode_noise(registry, unique_repo: str, tmp_path: Path,
                                                                   spec: Spec) -> None:
    """Two copies of a dataset that differ only in metadata give identical tar bytes and one manifest digest,
    and the tar is exactly what Python's tarfile writes for the normalised members (pax for long/UTF-8 names)."""
    a = tmp_path / "a"
    names = [f"part-{i:03d}.csv" for i in range(50)] + ["données-é.csv", "z" * 150 + ".csv", "Upper.csv"]
    for i, name in enumerate(names):
        (a / "rows").mkdir(parents=True, exist_ok=True)
        (a / "rows" / name).write_text(f"id\n{i}\n")
    set_mtimes(a, T0)
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    for i, p in enumerate(sorted((b / "rows").iterdir())):
        os.utime(p, (T0 - 86400 * i, T0 - 86400 * i))
        os.chmod(p, 0o600 if i % 2 else 0o664)  # no executable bit: normalised to 0644 either way
        if os.geteuid() == 0:  # only root can change owners
            os.chown(p, 1000 + i, 2000 + i)
    base = f"{registry.host}/{unique_repo}"
    with _client() as c:
        da = c.push(f"{base}:a", [a], kind="dataset", reproducible=True)
        db = c.push(f"{base}:b", [b], kind="dataset", reproducible=True)
        assert da.digest == db.digest
        manifest, _ = written(c, f"{base}:a", spec)
        (layer,) = manifest["layers"]
        assert layer["mediaType"] == "application/vnd.cncf.model.dataset.v1.tar"
        data = blob_bytes(c, f"{base}:b", layer)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tf:
        for name in sorted(names, key=lambda n: n.encode()):
            content = (a / "rows" / name).read_bytes()
            info = tarfile.TarInfo(f"rows/{name}")
            info.size, info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = \
                len(content), 0o644, 0, 0, 0, "", ""
            tf.addfile(info, io.BytesIO(content))
    assert data == buf.getvalue()


# -- 4. dedup ---------------------------------------------------------------------------------------
def test_new_version_uploads_only_the_changed_file(registry, unique_repo: str, model_dir: Path, spec: Spec) -> None:
    with FaultProxy(registry.url) as proxy:
        ref1, ref2 = f"{proxy.host}/{unique_repo}:v1", f"{proxy.host}/{unique_repo}:v2"
        with _client() as c:
            v1 = c.push(ref1, [model_dir], kind="model")
            assert c.target(c.ref(ref1)).bytes_uploaded == upload_bytes(proxy)
            assert upload_bytes(proxy) > sum(p.stat().st_size for p in model_dir.rglob("*.safetensors"))
            written(c, ref1, spec)

        proxy.log.clear()
        with _client() as c:  # unchanged directory: no blob bytes at all
            assert c.push(ref1, [model_dir], kind="model").digest == v1.digest
            assert c.target(c.ref(ref1)).bytes_uploaded == 0
        assert upload_bytes(proxy) == 0
        assert not proxy.find("PATCH") and not proxy.find("POST")

        write_random(model_dir / SHARD2, (2 << 20) + 4321, seed=99)  # fine-tuned: same size, new bytes
        os.utime(model_dir / SHARD2, (T0 + 60, T0 + 60))
        proxy.log.clear()
        with _client() as c:
            # without lineage: a new digest would also get its provenance statement attached (a small referrer
            # blob, counted in the lineage tests); this counts the artifact's own blobs
            v2 = c.push(ref2, [model_dir], kind="model", lineage=False)
            sent = c.target(c.ref(ref2)).bytes_uploaded
            manifest, config_raw = written(c, ref2, spec)
    assert v2.digest != v1.digest
    expected = (model_dir / SHARD2).stat().st_size + manifest["config"]["size"]
    assert manifest["config"]["size"] == len(config_raw)
    assert sent == expected
    assert upload_bytes(proxy) == expected


def test_new_version_in_another_directory_uploads_only_the_changed_file(registry, unique_repo: str,
                                                                       model_dir: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """v2 written to a fresh directory (nothing in the digest cache): files are hashed first because the
    repository already has versions, so only the changed file's bytes travel."""
    ref1, ref2 = f"{registry.host}/{unique_repo}:v1", f"{registry.host}/{unique_repo}:v2"
    with _client() as c:
        c.push(ref1, [model_dir], kind="model", lineage=False)
    v2_dir = tmp_path / "v2"
    shutil.copytree(model_dir, v2_dir)
    write_random(v2_dir / SHARD1, (3 << 20) + 17, seed=123)
    monkeypatch.setenv("OCIART_HOME", str(tmp_path / "fresh-home"))  # an empty digest cache, as on another machine
    with _client() as c:
        c.push(ref2, [v2_dir], kind="model", lineage=False)
        sent = c.target(c.ref(ref2)).bytes_uploaded
        config_size = c.inspect(ref2).manifest["config"]["size"]
    assert sent == (v2_dir / SHARD1).stat().st_size + config_size


# -- 5. partial pull --------------------------------------------------------------------------------
def test_partial_pull_fetches_only_what_was_asked(registry, unique_repo: str, model_dir: Path, tmp_path: Path,
                                                  spec: Spec) -> None:
    ref = f"{registry.host}/{unique_repo}:v1"
    with _client() as c:
        c.push(ref, [model_dir], kind="model")
        manifest, _ = written(c, ref, spec)
    by_path = {(x["annotations"][A_FILEPATH], x["mediaType"].rsplit(".", 1)[-1]): x["digest"]
               for x in manifest["layers"]}
    tars = {x["annotations"][A_FILEPATH]: x for x in manifest["layers"] if x["mediaType"].endswith(".tar")}
    config_raw = {by_path[(name, "raw")] for name in CONFIG_FILES}
    doc_tar = layer_for(manifest, ".", "application/vnd.cncf.model.doc.v1.tar")["digest"]
    full = packed_tree(model_dir)

    with FaultProxy(registry.url) as proxy:
        pref = f"{proxy.host}/{unique_repo}:v1"

        # library, --filter config: the config files and tokenizer.json, nothing else
        with _client() as c:
            result = c.pull(pref, tmp_path / "config", filters=["config"])
        assert blob_gets(proxy) == config_raw | {by_path[("tokenizer.json", "raw")]}
        assert tree_digest(tmp_path / "config") == {k: v for k, v in full.items()
                                                    if k in CONFIG_FILES or k == "tokenizer.json"}
        assert sorted(f.path for f in result.files) == sorted(CONFIG_FILES + ["tokenizer.json"])

        # CLI, comma-separated filters
        proxy.log.clear()
        proc = run_cli("pull", pref, "-o", str(tmp_path / "wd"), "--filter", "weights,docs")
        assert proc.returncode == 0, proc.stderr
        assert blob_gets(proxy) == {by_path[(SHARD1, "raw")], by_path[(SHARD2, "raw")], doc_tar}
        assert tree_digest(tmp_path / "wd") == {k: v for k, v in full.items()
                                                if k in (SHARD1, SHARD2, "README.md", "LICENSE")}

        # --include on directories: the code tar (not the 300-file data tar, no raw layer)
        proxy.log.clear()
        proc = run_cli("pull", pref, "-o", str(tmp_path / "code"), "--include", "code/*")
        assert proc.returncode == 0, proc.stderr
        fetched = blob_gets(proxy)
        assert tars["code"]["digest"] in fetched and tars["data"]["digest"] not in fetched
        # tar layers of the root directory (filepath ".") may hold any name, so they cannot be ruled out
        assert fetched - {tars["code"]["digest"]} <= {doc_tar}
        assert tree_digest(tmp_path / "code") == {k: v for k, v in full.items() if k.startswith("code/")}
        assert modes(tmp_path / "code") == {"code/run.sh": 0o755, "code/train.py": 0o644}

        # --include selecting members of one tar layer
        proxy.log.clear()
        with _client() as c:
            result = c.pull(pref, tmp_path / "some", include=["data/sample_01?.jsonl", "README.md"])
        fetched = blob_gets(proxy)
        assert tars["data"]["digest"] in fetched and tars["code"]["digest"] not in fetched
        assert not fetched & {by_path[(SHARD1, "raw")], by_path[(SHARD2, "raw")], by_path[("tokenizer.json", "raw")]}
        want = [f"data/sample_01{i}.jsonl" for i in range(10)] + ["README.md"]
        assert tree_digest(tmp_path / "some") == {k: full[k] for k in want}
        assert sorted(f.path for f in result.files) == sorted(want)

        # filter and include together: weights matching one shard
        proxy.log.clear()
        with _client() as c:
            c.pull(pref, tmp_path / "one", filters=["weights"], include=["*00001*"])
        assert blob_gets(proxy) == {by_path[(SHARD1, "raw")]}
        assert tree_digest(tmp_path / "one") == {SHARD1: full[SHARD1]}


# -- 6. safe extraction -----------------------------------------------------------------------------
def _member(name: str, data: bytes = b"x", **kw: Any) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data) if kw.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    info.mode = 0o644
    for k, v in kw.items():
        setattr(info, k, v)
    return info, (data if info.type == tarfile.REGTYPE else None)


def malicious_tar(case: str, victim: Path) -> bytes:
    """A tar whose first member is harmless (a partial extraction would leave it behind), then the attack."""
    members = [_member("code/ok.py", b"print('ok')\n")]
    if case == "traversal":
        members.append(_member("../evil", b"pwned"))
    elif case == "absolute":  # under the victim directory rather than /abs: a regression must not touch the host
        members.append(_member(str(victim / "abs" / "path"), b"pwned"))
    elif case == "symlink-then-write":
        # the classic: a symlink to a directory outside, then a file written "through" it (the victim directory
        # stands in for /etc so a regression cannot damage the machine running the tests)
        members += [_member("link", type=tarfile.SYMTYPE, linkname=str(victim)), _member("link/passwd", b"pwned")]
    elif case == "symlink-relative-escape":
        members.append(_member("code/up", type=tarfile.SYMTYPE, linkname="../../outside"))
    elif case == "hardlink-absolute":
        members.append(_member("code/passwd", type=tarfile.LNKTYPE, linkname="/etc/passwd"))
    elif case == "hardlink-relative-escape":
        members.append(_member("code/x", type=tarfile.LNKTYPE, linkname="../x"))
    elif case == "chardev":
        members.append(_member("code/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3))
    elif case == "fifo":
        members.append(_member("code/fifo", type=tarfile.FIFOTYPE))
    elif case == "duplicate":
        members += [_member("code/dup.py", b"one"), _member("code/dup.py", b"two")]
    elif case == "file-then-child":
        members += [_member("code/a", b"file"), _member("code/a/b", b"child")]
    else:
        raise AssertionError(case)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


MALICIOUS = ["traversal", "absolute", "symlink-then-write", "symlink-relative-escape", "hardlink-absolute",
             "hardlink-relative-escape", "chardev", "fifo", "duplicate", "file-then-child"]


def push_hand_built(c: ociart.Client, ref: str, layers: list[tuple[bytes, str, dict[str, str]]], *,
                    config: bytes, config_type: str, artifact_type: str | None = None,
                    annotations: dict[str, str] | None = None) -> Content:
    r = c.ref(ref)
    target = c.target(r)
    descs = []
    for data, media_type, ann in layers:
        d = Descriptor(mediaType=media_type, digest=sha256(data), size=len(data), annotations=ann or None)
        target.push_blob_stream(r.repository, d, lambda data=data: _bytes_cm(data))
        descs.append(d)
    cfg = Descriptor(mediaType=config_type, digest=sha256(config), size=len(config))
    target.push_blob_stream(r.repository, cfg, lambda: _bytes_cm(config))
    content = Content.from_model(Manifest(artifactType=artifact_type, config=cfg, layers=descs,
                                          annotations=annotations))
    target.put_manifest(r.repository, content, r.tag)
    return content


def _bytes_cm(data: bytes) -> Any:
    from contextlib import nullcontext

    return nullcontext(iter([data]))


def _snapshot(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("case", MALICIOUS)
def test_malicious_tar_is_refused_and_nothing_is_written(registry, unique_repo: str, tmp_path: Path, spec: Spec,
                                                         case: str) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    evil = malicious_tar(case, victim)
    good = b"a good file\n"
    layers = [(good, "application/vnd.cncf.model.code.v1.raw",
               {A_FILEPATH: "good.txt", A_TITLE: "good.txt",
                A_FILE_METADATA: json.dumps({"name": "good.txt", "mode": 420, "uid": 0, "gid": 0, "size": len(good),
                                             "mtime": "1970-01-01T00:00:00Z", "typeflag": 48})}),
              (evil, "application/vnd.cncf.model.code.v1.tar", {A_FILEPATH: "code"})]
    config = json.dumps({"descriptor": {"name": "evil"}, "config": {},
                         "modelfs": {"type": "layers", "diffIds": [sha256(good), sha256(evil)]}}).encode()
    refs = [f"{registry.host}/{unique_repo}:{case}", f"{unique_repo}:{case}"]  # registry and embedded store
    with _client() as c:
        for ref in refs:
            push_hand_built(c, ref, layers, config=config, config_type=MODELPACK_CONFIG,
                            artifact_type=MODELPACK_MANIFEST)
            written(c, ref, spec)
        before = _snapshot(tmp_path)
        for i, ref in enumerate(refs):
            fresh = work / f"fresh{i}"
            with pytest.raises(UnsafePathError):
                c.pull(ref, fresh)
            assert not fresh.exists()  # created by the pull, removed again
            existing = work / f"existing{i}"
            existing.mkdir()
            (existing / "keep.txt").write_text("mine")
            with pytest.raises(UnsafePathError):
                c.pull(ref, existing)
            assert _snapshot(existing) == ["keep.txt"] and (existing / "keep.txt").read_text() == "mine"
            shutil.rmtree(existing)
    for i, ref in enumerate(refs):
        out = work / f"cli{i}"
        proc = run_cli("pull", ref, "-o", str(out))
        assert proc.returncode == 5, proc.stderr
        line = one_error_line(proc)
        assert "tar member" in line, line
        assert proc.stdout == "" and not out.exists()
    assert _snapshot(tmp_path) == before  # nothing outside either (the victim directory stays empty)
    assert list(victim.iterdir()) == []
    assert not (tmp_path / "evil").exists() and not (tmp_path / "x").exists()


# -- 7. diff ----------------------------------------------------------------------------------------
def test_diff_lists_added_removed_changed_including_tar_members(registry, unique_repo: str, model_dir: Path,
                                                                tmp_path: Path, spec: Spec) -> None:
    v2 = tmp_path / "v2"
    shutil.copytree(model_dir, v2)
    write_random(v2 / SHARD2, (2 << 20) + 4321, seed=77)  # changed raw layer
    (v2 / "data" / "sample_005.jsonl").write_text('{"prompt": "fixed"}\n')  # changed inside a tar
    (v2 / "data" / "sample_300.jsonl").write_text('{"prompt": "new"}\n')  # added inside a tar
    (v2 / "LICENSE").unlink()  # removed from a tar
    (v2 / "NOTICE").write_text("Copyright\n")  # added to a tar
    write_random(v2 / "adapter.safetensors", (1 << 20) + 1, seed=78)  # added raw layer
    (v2 / "code" / "run.sh").unlink()  # removed from a tar
    r1 = f"{registry.host}/{unique_repo}:v1"
    r2 = f"{unique_repo}:v2"  # the embedded store: diff works across stores
    with _client() as c:
        c.push(r1, [model_dir], kind="model")
        c.push(r2, [v2], kind="model")
        for r in (r1, r2):
            written(c, r, spec)
        result = c.diff(r1, r2)

    def d(root: Path, name: str) -> str:
        return sha256((root / name).read_bytes())

    assert [(f.path, f.old, f.new) for f in result.added] == [
        ("NOTICE", None, d(v2, "NOTICE")), ("adapter.safetensors", None, d(v2, "adapter.safetensors")),
        ("data/sample_300.jsonl", None, d(v2, "data/sample_300.jsonl"))]
    assert [(f.path, f.old, f.new) for f in result.removed] == [
        ("LICENSE", d(model_dir, "LICENSE"), None), ("code/run.sh", d(model_dir, "code/run.sh"), None)]
    assert [(f.path, f.old, f.new) for f in result.changed] == [
        ("data/sample_005.jsonl", d(model_dir, "data/sample_005.jsonl"), d(v2, "data/sample_005.jsonl")),
        (SHARD2, d(model_dir, SHARD2), d(v2, SHARD2))]
    assert result.unchanged == len(packed_tree(model_dir)) - 2 - 2

    proc = run_cli("diff", r1, r2, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == result.model_dump(mode="json", exclude_none=True)
    text = run_cli("diff", r1, r2)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert f"+ NOTICE  {d(v2, 'NOTICE')}" in lines and f"- LICENSE  {d(model_dir, 'LICENSE')}" in lines
    assert f"~ {SHARD2}  {d(model_dir, SHARD2)} -> {d(v2, SHARD2)}" in lines and len(lines) == 7
    assert "3 added, 2 removed, 2 changed" in text.stderr


# -- 8. foreign formats -----------------------------------------------------------------------------
def _kit_tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    return make_tar(entries)


def test_kitops_modelkit_inspect_and_pull(registry, unique_repo: str, tmp_path: Path, spec: Spec) -> None:
    weights = hashlib.sha256(b"kit").digest() * 40_000
    readme = b"# A ModelKit\n"
    model_tar = _kit_tar([("model", None), ("model/weights.bin", weights)])
    docs_tar = _kit_tar([("README.md", readme)])
    kitfile = {"manifestVersion": "1.0.0", "package": {"name": "kit-demo", "version": "1.0.0"},
               "model": {"name": "demo", "path": "model", "digest": sha256(model_tar), "diffId": sha256(model_tar)},
               "docs": [{"path": "README.md", "digest": sha256(docs_tar), "diffId": sha256(docs_tar)}]}
    ref = f"{registry.host}/{unique_repo}:kit"
    with _client() as c:
        push_hand_built(c, ref, [(model_tar, "application/vnd.kitops.modelkit.model.v1.tar", {A_FILEPATH: "model"}),
                                 (docs_tar, "application/vnd.kitops.modelkit.docs.v1.tar", {A_FILEPATH: "README.md"})],
                        config=json.dumps(kitfile).encode(), config_type=KITOPS_CONFIG,
                        annotations={"ml.kitops.modelkit.cli-version": "1.6.0"})
        written(c, ref, spec)
        info = c.inspect(ref)
        assert info.kind == "modelkit" and info.config == kitfile
        assert [(f.path.rstrip("/"), f.size, f.category, f.packed) for f in info.files] == [
            ("model", len(model_tar), "weights", True), ("README.md", len(docs_tar), "docs", True)]
        _, files = c.files(ref)
        assert files == {"model/weights.bin": (sha256(weights), len(weights)),
                         "README.md": (sha256(readme), len(readme))}
        c.pull(ref, tmp_path / "all")
    assert tree_digest(tmp_path / "all") == {"model/weights.bin": hashlib.sha256(weights).hexdigest(),
                                             "README.md": hashlib.sha256(readme).hexdigest()}
    proc = run_cli("pull", ref, "-o", str(tmp_path / "docs"), "--filter", "docs")
    assert proc.returncode == 0, proc.stderr
    assert tree_digest(tmp_path / "docs") == {"README.md": hashlib.sha256(readme).hexdigest()}
    js = json.loads(run_cli("inspect", ref, "--json").stdout)
    assert js["kind"] == "modelkit"


def test_plain_oras_artifact_inspects_as_generic_and_pulls(registry, unique_repo: str, tmp_path: Path, spec: Spec,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    oras_client = pytest.importorskip("oras.client")
    src = tmp_path / "oras-src"
    src.mkdir()
    files = {"model.onnx": hashlib.sha256(b"onnx").digest() * 50_000, "labels.txt": b"cat\ndog\n"}
    for name, data in files.items():
        (src / name).write_bytes(data)
    monkeypatch.chdir(src)  # oras-py wants paths under the working directory
    ref = f"{registry.host}/{unique_repo}:oras"
    resp = oras_client.OrasClient(hostname=registry.host, insecure=True).push(target=ref, files=sorted(files),
                                                                             quiet=True)
    assert resp.status_code == 201, resp.text
    with _client() as c:
        written(c, ref, spec)
        info = c.inspect(ref)
        assert info.kind == "generic"
        assert sorted((f.path, f.size, f.packed) for f in info.files) == sorted(
            (name, len(data), False) for name, data in files.items())
        result = c.pull(ref, tmp_path / "out")
    assert result.digest == resp.headers["Docker-Content-Digest"]
    assert tree_digest(tmp_path / "out") == {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


# -- 9. skopeo and ociart copy keep the digest ------------------------------------------------------
@pytest.mark.skipif(not os.access(SKOPEO, os.X_OK), reason="skopeo is not installed")
def test_skopeo_and_ociart_copy_keep_model_digest(registry, unique_repo: str, model_dir: Path, tmp_path: Path,
                                                  spec: Spec) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    src = f"{registry.host}/{unique_repo}:v1"
    dst = f"{registry.host}/{unique_repo}-skopeo:v1"
    with _client() as c:
        digest = c.push(src, [model_dir], kind="model").digest
        written(c, src, spec)
    proc = subprocess.run([SKOPEO, "--policy", str(policy), "copy", "--preserve-digests", "--src-tls-verify=false",
                           "--dest-tls-verify=false", f"docker://{src}", f"docker://{dst}"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    raw = subprocess.run([SKOPEO, "--policy", str(policy), "inspect", "--raw", "--tls-verify=false", f"docker://{dst}"],
                         capture_output=True, timeout=60, check=False)
    assert raw.returncode == 0 and sha256(raw.stdout) == digest
    layout = tmp_path / "layout"
    back = f"{registry.host}/{unique_repo}-back:v1"
    for a, b in ((dst, f"oci:{layout}:v1"), (f"oci:{layout}:v1", back)):
        cp = run_cli("copy", a, b)
        assert cp.returncode == 0, cp.stderr
        assert cp.stdout.strip() == digest
    with _client() as c:
        assert c.resolve(dst).digest == c.resolve(back).digest == digest
        assert c.inspect(f"oci:{layout}:v1").kind == "model"
        c.pull(back, tmp_path / "out")
    assert tree_digest(tmp_path / "out") == packed_tree(model_dir)
    assert modes(tmp_path / "out")["code/run.sh"] == 0o755


# -- 10. usage errors -------------------------------------------------------------------------------
def test_usage_errors(registry, unique_repo: str, model_dir: Path, tmp_path: Path, spec: Spec) -> None:
    ref = f"{registry.host}/{unique_repo}:v1"
    weights = model_dir / SHARD1
    with _client() as c:
        with pytest.raises(UsageError, match="directory"):
            c.push(ref, [weights], kind="model")
        with pytest.raises(UsageError, match="unknown kind"):
            c.push(ref, [model_dir], kind="banana")

    proc = run_cli("push", ref, str(weights), "--kind", "model")
    assert proc.returncode == 2 and "directory" in one_error_line(proc)
    proc = run_cli("push", ref, str(model_dir), "--kind", "banana")
    assert proc.returncode == 2 and "unknown kind 'banana'" in one_error_line(proc)
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("push", ref, str(empty), "--kind", "dataset")
    assert proc.returncode == 2 and "no files" in one_error_line(proc)

    assert run_cli("push", ref, str(model_dir), "--kind", "model").returncode == 0
    with _client() as c:
        written(c, ref, spec)
    out = tmp_path / "out"
    proc = run_cli("pull", ref, "-o", str(out), "--filter", "weights,checkpoints")
    assert proc.returncode == 2 and "unknown --filter checkpoints" in one_error_line(proc)
    assert not out.exists()

    bad_yaml = {
        "name: [unclosed\n": "not valid YAML",
        "name: x\ncolour: red\n": "colour",
        "metrics:\n  accuracy: high\n": "metrics.accuracy",
        "- just\n- a list\n": "mapping",
    }
    for text, why in bad_yaml.items():
        (model_dir / "ociart.yaml").write_text(text)
        proc = run_cli("push", ref, str(model_dir), "--kind", "model")
        line = one_error_line(proc)
        assert proc.returncode == 2 and str(model_dir / "ociart.yaml") in line and why in line, (text, line)
