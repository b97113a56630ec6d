"""push / pull / resolve / inspect / tags / delete / copy against real distribution 2.8.2 and layouts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import run_cli, tree_digest, write_random

import ociart
from ociart.errors import NotFoundError, OverwriteError, UnsupportedError
from ociart.oci import (
    EMPTY_JSON_DIGEST,
    OCI_EMPTY,
    Content,
    Descriptor,
    Index,
    Manifest,
)
from ociart.oci.digest import sha256_file
from ociart.oci.mediatypes import ANNOTATION_REF_NAME, DEFAULT_ARTIFACT_TYPE


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    write_random(d / "weights.bin", 3 << 20, seed=1)
    (d / "config.json").write_text('{"hidden": 768}')
    (d / "tok").mkdir()
    (d / "tok" / "vocab.txt").write_text("a\nb\nc\n")
    (d / "empty.txt").write_bytes(b"")
    return d


def _client(**kw: object) -> ociart.Client:
    return ociart.Client(plain_http=True, **kw)  # type: ignore[arg-type]


def test_push_pull_roundtrip(any_registry, unique_repo: str, model_dir: Path, tmp_path: Path) -> None:
    registry = any_registry
    if registry.s3 is not None:  # 2.8.2's s3 driver cannot store an empty blob (test_object_storage.py)
        (model_dir / "empty.txt").unlink()
    ref = f"{registry.host}/{unique_repo}:v1"
    with _client() as c:
        desc = c.push(ref, [model_dir], annotations={"team": "nlp"})
        assert desc.mediaType == "application/vnd.oci.image.manifest.v1+json"
        assert c.resolve(ref).digest == desc.digest
        info = c.inspect(ref)
        m = info.manifest
        assert m["artifactType"] == DEFAULT_ARTIFACT_TYPE
        assert m["config"] == {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2}
        assert m["annotations"] == {"team": "nlp"}
        titles = sorted(layer["annotations"]["org.opencontainers.image.title"] for layer in m["layers"])
        assert titles == sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
        assert "weights.bin" in titles and "tok/vocab.txt" in titles
        result = c.pull(ref, tmp_path / "out")
    assert result.digest == desc.digest
    assert tree_digest(tmp_path / "out") == tree_digest(model_dir)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".ociart")]
    if registry.s3 is not None:  # the blobs came from the object store, after a 307
        fetched = {e["path"].split("?")[0].rsplit("/", 2)[1] for e in registry.s3.client_requests()
                   if e["method"] == "GET" and e["status"] == 200}
        assert {layer["digest"].removeprefix("sha256:") for layer in m["layers"]} <= fetched


def test_file_arguments_are_titled_relative_to_cwd(registry, unique_repo: str, model_dir: Path,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(model_dir.parent)
    ref = f"{registry.host}/{unique_repo}:files"
    with _client() as c:
        c.push(ref, ["model/tok/vocab.txt", "model/config.json"])
        titles = sorted(layer.title or "" for layer in Manifest.model_validate(c.inspect(ref).manifest).layers)
        assert titles == ["model/config.json", "model/tok/vocab.txt"]
        c.pull(ref, tmp_path / "o", include=["*.json"])
    assert tree_digest(tmp_path / "o") == {"model/config.json": tree_digest(model_dir)["config.json"]}


def test_config_and_artifact_type(registry, unique_repo: str, model_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"framework": "torch"}')
    ref = f"{registry.host}/{unique_repo}:cfg"
    with _client() as c:
        c.push(ref, [model_dir / "config.json"], config=cfg, config_media_type="application/vnd.example.config+json",
               artifact_type="application/vnd.example.model")
        info = c.inspect(ref)
    assert info.manifest["artifactType"] == "application/vnd.example.model"
    assert info.manifest["config"]["mediaType"] == "application/vnd.example.config+json"
    assert info.manifest["config"]["digest"] == sha256_file(cfg)[0]
    assert info.config == {"framework": "torch"}


def test_repush_unchanged_sends_no_blob_bytes(registry, unique_repo: str, model_dir: Path) -> None:
    ref = f"{registry.host}/{unique_repo}:v1"
    old = os.path.getmtime(model_dir / "weights.bin") - 10  # outside the racy window of the digest cache
    for f in model_dir.rglob("*"):
        if f.is_file():
            os.utime(f, (old, old))
    with _client() as c:
        first = c.push(ref, [model_dir])
        sent_first = c.target(c.ref(ref)).bytes_uploaded
    with _client() as c:
        again = c.push(ref, [model_dir])
        sent_again = c.target(c.ref(ref)).bytes_uploaded
    assert sent_first >= 3 << 20
    assert again.digest == first.digest
    assert sent_again == 0


@pytest.mark.parametrize("strategy", ["stream", "monolithic", "chunked"])
def test_upload_strategies(registry, unique_repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           strategy: str) -> None:
    monkeypatch.setenv("OCIART_UPLOAD_STRATEGY", strategy)
    monkeypatch.setenv("OCIART_CHUNK_SIZE", str(1 << 20))
    src = write_random(tmp_path / "in" / "blob.bin", (5 << 20) + 12345, seed=7)
    ref = f"{registry.host}/{unique_repo}:{strategy}"
    with _client() as c:
        c.push(ref, [tmp_path / "in"], lineage=False)  # no provenance referrer: count the file's bytes only
        # the file, plus the 2-byte empty config `{}` new to this repository
        assert c.target(c.ref(ref)).bytes_uploaded == src.stat().st_size + 2
        c.pull(ref, tmp_path / "out")
    assert sha256_file(tmp_path / "out" / "blob.bin") == sha256_file(src)


def test_tags_sorted_and_scheme_tags_hidden(registry, unique_repo: str, model_dir: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    with _client() as c:
        for tag in ["v2", "v10", "a", "sha256-" + "b" * 64, "sha256-" + "b" * 64 + ".sig"]:
            c.push(f"{base}:{tag}", [model_dir / "config.json"], lineage=False)
        assert c.tags(base) == ["a", "v10", "v2"]
        assert c.tags(base, all=True) == sorted(["a", "v10", "v2", "sha256-" + "b" * 64, "sha256-" + "b" * 64 + ".sig"])


def test_delete_by_digest_removes_every_tag(registry, unique_repo: str, model_dir: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    with _client() as c:
        d = c.push(f"{base}:one", [model_dir / "config.json"])
        c.copy(f"{base}:one", f"{base}:two")
        c.push(f"{base}:other", [model_dir / "tok"])
        with pytest.raises(UnsupportedError, match="cannot delete a tag alone"):
            c.delete(f"{base}:one")  # distribution 2.8.2 answers 400
        result = c.delete(f"{base}@{d.digest}")
        assert sorted(result.tags) == ["one", "two"]
        assert c.tags(base) == ["other"]
        with pytest.raises(NotFoundError):
            c.resolve(f"{base}:one")
        with pytest.raises(NotFoundError):
            c.delete(f"{base}@{d.digest}")


def test_copy_same_registry_mounts_blobs(registry, unique_repo: str, model_dir: Path) -> None:
    src = f"{registry.host}/{unique_repo}:v1"
    dst = f"{registry.host}/{unique_repo}-copy:prod"
    with _client() as c:
        d = c.push(src, [model_dir])
        target = c.target(c.ref(src))
        before = target.bytes_uploaded
        out = c.copy(src, dst)
        assert target.bytes_uploaded == before  # mounted, not re-sent
        assert out.digest == d.digest
        assert c.target(c.ref(dst)).get_manifest(f"{unique_repo}-copy", "prod").data == \
            c.target(c.ref(src)).get_manifest(unique_repo, "v1").data


def test_copy_between_registries_and_layouts(registry, registry_factory, unique_repo: str, model_dir: Path,
                                             tmp_path: Path) -> None:
    other = registry_factory()
    with _client() as c:
        d = c.push(f"{registry.host}/{unique_repo}:v1", [model_dir])
        assert c.copy(f"{registry.host}/{unique_repo}:v1", f"{other.host}/mirror/m:v1").digest == d.digest
        assert c.target(c.ref(f"{other.host}/x")).bytes_uploaded >= 3 << 20
        lay = tmp_path / "layout"
        assert c.copy(f"{other.host}/mirror/m:v1", f"oci:{lay}:v1").digest == d.digest
        assert c.copy(f"oci:{lay}:v1", "local/m:v1").digest == d.digest  # embedded store
        assert c.copy("local/m:v1", f"{registry.host}/{unique_repo}-back:v1").digest == d.digest
        c.pull(f"{registry.host}/{unique_repo}-back:v1", tmp_path / "out")
    index = json.loads((lay / "index.json").read_text())
    assert index["manifests"][0]["digest"] == d.digest
    assert index["manifests"][0]["annotations"][ANNOTATION_REF_NAME] == "v1"
    assert tree_digest(tmp_path / "out") == tree_digest(model_dir)


def _push_index(c: ociart.Client, base: str, model_dir: Path) -> Content:
    target = c.target(c.ref(base))
    repo = c.ref(base).repository
    children = []
    for i, name in enumerate(["config.json", "tok"]):
        d = c.push(f"{base}:child{i}", [model_dir / name])
        children.append(Descriptor(mediaType=d.mediaType, digest=d.digest, size=d.size,
                                   artifactType=DEFAULT_ARTIFACT_TYPE))
    index = Content.from_model(Index(manifests=children, artifactType="application/vnd.example.bundle"))
    target.put_manifest(repo, index, "bundle")
    return index


def test_copy_index_with_children(registry, unique_repo: str, model_dir: Path, tmp_path: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    with _client() as c:
        index = _push_index(c, base, model_dir)
        assert c.resolve(f"{base}:bundle").digest == index.digest
        assert c.copy(f"{base}:bundle", f"oci:{tmp_path / 'lay'}:bundle").digest == index.digest
        assert c.copy(f"oci:{tmp_path / 'lay'}:bundle", f"{base}-2:bundle").digest == index.digest
        for child in Index.model_validate_json(index.data).manifests:
            assert c.resolve(f"{base}-2@{child.digest}").digest == child.digest
        with pytest.raises(ociart.UsageError, match="index of 2 manifests"):
            c.pull(f"{base}:bundle", tmp_path / "o")


def test_embedded_store_dedupes_across_repositories(model_dir: Path, tmp_path: Path) -> None:
    with ociart.Client() as c:
        a = c.push("team/a:v1", [model_dir], lineage=False)  # no provenance blobs in the count below
        b = c.push("team/b:v1", [model_dir], lineage=False)
        assert a.digest == b.digest
        store = Path(os.environ["OCIART_HOME"]) / "store"
        weights = sha256_file(model_dir / "weights.bin")[0].removeprefix("sha256:")
        assert (store / "blobs" / "sha256" / weights).exists()
        assert len(list((store / "blobs" / "sha256").iterdir())) == 4 + 1 + 1  # 4 files, empty config, manifest
        names = sorted(m["annotations"][ANNOTATION_REF_NAME]
                       for m in json.loads((store / "index.json").read_text())["manifests"])
        assert names == ["team/a:v1", "team/b:v1"]
        assert c.tags("team/a") == ["v1"]
        c.delete("team/a:v1")  # tag-only delete works in a layout
        assert c.tags("team/a") == [] and c.tags("team/b") == ["v1"]
        c.pull("team/b:v1", tmp_path / "o")
    assert tree_digest(tmp_path / "o") == tree_digest(model_dir)


def test_pull_conflict_and_overwrite(registry, unique_repo: str, model_dir: Path, tmp_path: Path) -> None:
    ref = f"{registry.host}/{unique_repo}:v1"
    out = tmp_path / "o"
    out.mkdir()
    (out / "config.json").write_text("local edit")
    with _client() as c:
        c.push(ref, [model_dir])
        with pytest.raises(OverwriteError):
            c.pull(ref, out)
        assert (out / "config.json").read_text() == "local edit"
        assert sorted(p.name for p in out.iterdir()) == ["config.json"]
        c.pull(ref, out, overwrite=True)
        again = c.pull(ref, out)
    assert tree_digest(out) == tree_digest(model_dir)
    assert all(f.skipped for f in again.files)


def test_cli_outputs_and_exit_codes(registry, unique_repo: str, model_dir: Path, tmp_path: Path) -> None:
    ref = f"{registry.host}/{unique_repo}:cli"
    push = run_cli("push", ref, str(model_dir), "--annotation", "k=v")
    assert push.returncode == 0, push.stderr
    digest = push.stdout.strip()
    assert push.stdout == digest + "\n" and digest.startswith("sha256:") and len(digest) == 71
    res = run_cli("resolve", ref)
    assert res.stdout == digest + "\n"
    js = json.loads(run_cli("push", ref, str(model_dir), "-a", "k=v", "--json").stdout)
    assert js["digest"] == digest and js["mediaType"].endswith("manifest.v1+json") and js["size"] > 0
    insp = json.loads(run_cli("inspect", ref, "--json").stdout)
    assert insp["descriptor"]["digest"] == digest and insp["manifest"]["annotations"] == {"k": "v"}
    table = run_cli("inspect", ref)
    assert "weights.bin" in table.stdout and table.returncode == 0
    assert run_cli("tags", f"{registry.host}/{unique_repo}").stdout == "cli\n"
    pulled = run_cli("pull", ref, "-o", str(tmp_path / "o"), "--json")
    assert json.loads(pulled.stdout)["digest"] == digest
    assert tree_digest(tmp_path / "o") == tree_digest(model_dir)
    missing = run_cli("resolve", f"{registry.host}/{unique_repo}:nope")
    assert missing.returncode == 3 and missing.stdout == ""
    assert missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1
    bad = run_cli("resolve", "Bad/Ref")
    assert bad.returncode == 2 and "invalid repository name" in bad.stderr and "Traceback" not in bad.stderr
    usage = run_cli("push")
    assert usage.returncode == 2
    deleted = run_cli("delete", f"{registry.host}/{unique_repo}@{digest}")
    assert deleted.returncode == 0 and "cli" in deleted.stderr and deleted.stdout == digest + "\n"


def test_main_job_on_embedded_store(model_dir: Path, tmp_path: Path) -> None:
    """README's main command: push to and pull from the embedded store, no server."""
    push = run_cli("push", "demo/model:v1", str(model_dir))
    assert push.returncode == 0, push.stderr
    pull = run_cli("pull", "demo/model:v1", "-o", str(tmp_path / "o"))
    assert pull.returncode == 0, pull.stderr
    assert tree_digest(tmp_path / "o") == tree_digest(model_dir)


def test_flat_memory_push_and_pull(registry, unique_repo: str, tmp_path: Path) -> None:
    """A 256 MiB push and pull in a fresh interpreter stay far below the blob size in peak RSS."""
    big = write_random(tmp_path / "big" / "blob.bin", 256 << 20, seed=3)
    script = (
        "import ociart\n"
        "c = ociart.Client(plain_http=True)\n"
        f"c.push({registry.host + '/' + unique_repo + ':big'!r}, [{str(big.parent)!r}])\n"
        f"c.pull({registry.host + '/' + unique_repo + ':big'!r}, {str(tmp_path / 'o')!r})\n"
        # VmHWM belongs to this process image; ru_maxrss would include the forking pytest process's RSS
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))\n"
    )
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    peak_mb = int(proc.stdout.strip()) / 1024
    assert peak_mb < 150, f"peak RSS {peak_mb:.0f} MB for a 256 MiB blob"
    assert sha256_file(tmp_path / "o" / "blob.bin") == sha256_file(big)


def test_empty_config_descriptor_matches_spec() -> None:
    c = Content.of(b"{}", OCI_EMPTY)
    assert c.digest == EMPTY_JSON_DIGEST
    m = Manifest(config=Descriptor(mediaType=OCI_EMPTY, digest=EMPTY_JSON_DIGEST, size=2))
    assert Content.from_model(m).parse() == m


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_local_copy_is_verified_from_the_copy_and_leaves_nothing_on_mismatch(tmp_path: Path, kernel_copy: bool,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The layout's local blob copy (a node cache into a fetch, a store into pull's staging): in the kernel where
    it can (else through a buffer), hashed from the copy, published only when digest and size match."""
    from ociart.errors import DigestMismatchError
    from ociart.fsutil import COPY_PIECE, copy_file_verified

    if not kernel_copy:
        def refused(*_: object) -> int:
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(os, "copy_file_range", refused)
    src = tmp_path / "blob"
    write_random(src, COPY_PIECE * 2 + 12345)
    digest, size = sha256_file(src)
    seen: list[int] = []
    copy_file_verified(src, tmp_path / "out" / "copy", digest, size, "blob", progress=seen.append)
    assert sha256_file(tmp_path / "out" / "copy") == (digest, size) and sum(seen) == size
    # a source that does not match what the manifest says: nothing appears, no temp file stays
    with open(src, "r+b") as f:
        f.seek(COPY_PIECE + 7)
        f.write(b"X")
    with pytest.raises(DigestMismatchError, match="digest mismatch"):
        copy_file_verified(src, tmp_path / "out" / "bad", digest, size, "blob")
    with pytest.raises(DigestMismatchError, match="more data"):
        copy_file_verified(src, tmp_path / "out" / "bad", digest, size - 1, "blob")
    with pytest.raises(DigestMismatchError, match="size mismatch"):
        copy_file_verified(src, tmp_path / "out" / "bad", digest, size + 1, "blob")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["copy"]
