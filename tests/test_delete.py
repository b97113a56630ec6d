"""Cascading delete, referrers kept across copies by tag, the store lock and the sweep (issue 16).

Real stores only: the embedded store and ``oci:`` layouts on disk, CNCF distribution 2.8.2 (no referrers API, so
the ``sha256-<hex>`` tag schema) started by the fixtures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import run_cli, write_random
from support.ocifake import OciFake
from support.registry import RunningRegistry

import ociart
from ociart.errors import NotFoundError
from ociart.lineage.graph import REPORT_TYPE
from ociart.oci import ANNOTATION_REF_NAME, INDEX_TYPES, MANIFEST_TYPES, Descriptor
from ociart.oci.models import parse_manifest_content
from ociart.targets.layout import LayoutTarget
from ociart.targets.referrers import fallback_tag, legacy_tag, list_referrers
from ociart.transfer import push_manifest

INTOTO = "application/vnd.in-toto+json"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"


@pytest.fixture(autouse=True)
def _auto_referrers_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIART_REFERRERS", raising=False)  # distribution 2.8.2 is detected as "no referrers API"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def model_dir(root: Path, seed: int, weights: Path | None = None) -> Path:
    """A model directory: 2 MiB of weights (a raw layer of their own) and a config."""
    root.mkdir(parents=True, exist_ok=True)
    if weights is not None:
        (root / "model.safetensors").write_bytes(weights.read_bytes())
    else:
        write_random(root / "model.safetensors", 2 << 20, seed=seed)
    (root / "config.json").write_text(json.dumps({"hidden": 64, "seed": seed}))
    return root


def report_dir(root: Path, seed: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "report.md").write_text(f"# evaluation {seed}\n")
    (root / "metrics.json").write_text(json.dumps({"accuracy": 0.5 + seed / 100}))
    return root


def push_full(c: ociart.Client, base: str, tmp: Path, seed: int, weights: Path | None = None) -> tuple[str, str]:
    """A signed model (bundle and legacy .sig) with signed provenance at ``<base>:v1``, and an evaluation report
    attached to it (with its own provenance statement) at ``<base>:eval``: every kind of referrer. ``base`` may be
    ``oci:DIR``. Returns (model, report) digests."""
    model = c.push(f"{base}:v1", [model_dir(tmp / f"model-{seed}", seed, weights)], kind="model", sign=_key())
    report = c.push(f"{base}:eval", [report_dir(tmp / f"report-{seed}", seed)], kind="report",
                    subject=f"{base}:v1")
    return model.digest, report.digest


def store_state(layout: Path) -> tuple[int, int, set[str]]:
    """(total bytes of blobs, number of index.json entries, blob names) of a layout."""
    blobs = list((layout / "blobs" / "sha256").iterdir())
    entries = json.loads((layout / "index.json").read_text())["manifests"]
    return sum(p.stat().st_size for p in blobs), len(entries), {p.name for p in blobs}


def reachable(layout: Path) -> set[str]:
    """Blob names reached from index.json (manifests, configs, layers, index children), computed independently."""
    seen: set[str] = set()
    stack = json.loads((layout / "index.json").read_text())["manifests"]
    while stack:
        d = stack.pop()
        hex_ = d["digest"].removeprefix("sha256:")
        if hex_ in seen:
            continue
        seen.add(hex_)
        if d["mediaType"] in MANIFEST_TYPES | INDEX_TYPES:
            m = json.loads((layout / "blobs" / "sha256" / hex_).read_bytes())
            stack += m.get("manifests", []) + ([m["config"]] if "config" in m else []) + m.get("layers", [])
    return seen


# -- embedded store and layouts ---------------------------------------------------------------------------------
def test_delete_shrinks_the_embedded_store_back(tmp_path: Path) -> None:
    """Before: a delete left 52 MB and 6 index entries behind. Now the store is back to its size before the push,
    right after the delete, and a blob another artifact shares stays."""
    with ociart.Client() as c:
        shared = write_random(tmp_path / "shared.bin", 2 << 20, seed=7)
        other = c.push("team/other:v1", [shared])
        layout = Path(c.ref("team/other").layout)  # type: ignore[arg-type]
        before = store_state(layout)

        model, report = push_full(c, "team/model", tmp_path, seed=1, weights=shared)
        during = store_state(layout)
        assert during[0] > before[0] and during[1] >= before[1] + 6, during  # (the weights are shared)
        refs = {d.artifactType for d in c.referrers(f"team/model@{model}")}
        assert refs == {BUNDLE, REPORT_TYPE}, refs  # signature, signed provenance, the report
        assert legacy_tag(model) in c.tags("team/model", all=True)
        shared_digest = json.loads(c.manifest("team/other:v1")[1].data)["layers"][0]["digest"]
        assert shared_digest in c.manifest(f"team/model@{model}")[1].data.decode()  # the premise: one blob shared

        result = c.delete(f"team/model@{model}")
        assert result.tags == ["v1"] and not result.tag_only
        assert report in result.referrers and len(result.referrers) >= 4  # signature, attestation, report, its own
        assert result.scheme_tags == [legacy_tag(model)]
        assert store_state(layout) == before
        assert result.blobs > 0 and result.freed_bytes == during[0] - before[0]
        assert c.tags("team/model", all=True) == []
        pulled = c.pull(f"team/other@{other.digest}", tmp_path / "out")  # the shared blob stayed
        assert (tmp_path / "out" / "shared.bin").read_bytes() == shared.read_bytes() and pulled.files


def test_delete_keeps_what_another_repository_reaches(tmp_path: Path) -> None:
    """The embedded store is one layout for every repository: deleting a manifest from one repository keeps it, its
    referrers and its blobs while another repository still tags it; this repository's .sig tag goes."""
    with ociart.Client() as c:
        model, _ = push_full(c, "team/a", tmp_path, seed=2)
        c.copy("team/a:v1", "team/b:v1")
        layout = Path(c.ref("team/a").layout)  # type: ignore[arg-type]
        result = c.delete(f"team/a@{model}")
        assert legacy_tag(model) in result.scheme_tags
        assert c.tags("team/a", all=True) == []
        assert c.resolve("team/b:v1").digest == model
        assert {d.artifactType for d in c.referrers(f"team/b@{model}")} == {BUNDLE, REPORT_TYPE}
        assert c.tags("team/b", all=True) == sorted(["v1", legacy_tag(model)])
        c.pull("team/b:v1", tmp_path / "b")
        assert reachable(layout) == store_state(layout)[2]  # nothing unreferenced left, nothing reachable missing


def test_cascading_delete_in_a_layout_leaves_no_unreferenced_blob(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    with ociart.Client() as c:
        keep, _ = push_full(c, f"oci:{layout}", tmp_path, seed=3)
        gone = c.push(f"oci:{layout}:gone", [model_dir(tmp_path / "m4", 4)], kind="model", sign=_key())
        c.push(f"oci:{layout}:gone-eval", [report_dir(tmp_path / "r4", 4)], kind="report", subject=f"oci:{layout}:gone")
        assert len(c.referrers(f"oci:{layout}@{gone.digest}")) == 3  # signature, provenance, report

        result = c.delete(f"oci:{layout}@{gone.digest}")
        assert result.tags == ["gone"] and len(result.referrers) >= 4
        assert c.referrers(f"oci:{layout}@{keep}") and c.tags(f"oci:{layout}", all=True) == sorted(
            ["v1", "eval", legacy_tag(keep)])  # the other artifact and its referrers are untouched
        target = c.target(c.ref(f"oci:{layout}"))
        assert list_referrers(target, "", gone.digest) == []
        assert not target.blob_path(gone.digest).exists()  # type: ignore[attr-defined]
        assert reachable(layout) == store_state(layout)[2]

        # --keep-referrers: only the manifest goes; what is attached to it stays listed
        again = c.push(f"oci:{layout}:gone", [model_dir(tmp_path / "m4", 4)], kind="model", sign=_key())
        out = run_cli("delete", f"oci:{layout}@{again.digest}", "--keep-referrers", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["referrers"] == []
        assert len(list_referrers(target, "", again.digest)) == 2  # signature and provenance
        assert legacy_tag(again.digest) in c.tags(f"oci:{layout}", all=True)


def test_delete_waits_for_a_push_that_skipped_a_blob(tmp_path: Path) -> None:
    """A push that found a blob present holds the store lock (shared) until its manifest is written; a delete in
    another process that would free that blob waits for it, so the pushed manifest keeps its blob."""
    with ociart.Client() as c:
        data = write_random(tmp_path / "w.bin", 1 << 20, seed=9)
        first = c.push("team/first:v1", [data])
        layer = Descriptor.model_validate(json.loads(c.manifest("team/first:v1")[1].data)["layers"][0])
        target = c.target(c.ref("team/first"))
        assert isinstance(target, LayoutTarget)
        lock_inode = None
        with target.writing():
            assert target.has_blob("team/second", layer)  # a push skips it: it is there
            proc = subprocess.Popen([sys.executable, "-m", "ociart", "delete", f"team/first@{first.digest}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            lock_inode = (target.root / ".ociart-store.lock").stat().st_ino
            for _ in range(6000):  # until the kernel shows the delete blocked on the store lock
                if proc.poll() is not None or _blocked_on(lock_inode):
                    break
                time.sleep(0.01)
            assert proc.poll() is None, proc.communicate()
            assert _blocked_on(lock_inode)
            second = push_manifest(target, "team/second", artifact_type="application/vnd.example", layers=[layer],
                                   tag="v1")
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == first.digest
        assert target.has_blob("team/second", layer)  # still referenced by the manifest written meanwhile
        c.pull(f"team/second@{second.digest}", tmp_path / "out")
        assert (tmp_path / "out" / "w.bin").read_bytes() == data.read_bytes()
        with pytest.raises(NotFoundError):
            c.resolve(f"team/first@{first.digest}")


def _blocked_on(inode: int) -> bool:
    """True when /proc/locks lists a waiter (``->``) for a lock on the file with this inode."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and any(f.endswith(f":{inode}") for f in fields):
            return True
    return False


def test_sweep_removes_old_unreferenced_blobs_only(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    with ociart.Client() as c:
        pushed = c.push(f"oci:{layout}:v1", [write_random(tmp_path / "a.bin", 4096, seed=1)])
        blobs = layout / "blobs" / "sha256"
        old_stray, new_stray = blobs / ("a" * 64), blobs / ("b" * 64)
        old_stray.write_bytes(b"left by a killed push")
        new_stray.write_bytes(b"placed by a push in flight")
        an_hour_ago = time.time() - 3600
        for p in [old_stray, *blobs.iterdir()]:
            if p != new_stray:
                os.utime(p, (an_hour_ago, an_hour_ago))
        assert c.sweep(f"oci:{layout}", grace_seconds=300) == (1, len(b"left by a killed push"))
        assert not old_stray.exists() and new_stray.exists()
        c.pull(f"oci:{layout}@{pushed.digest}", tmp_path / "out")  # every referenced blob stayed


# -- registries -------------------------------------------------------------------------------------------------
def test_cascading_delete_on_distribution(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    with ociart.Client(plain_http=True) as c:
        keep, keep_report = push_full(c, base, tmp_path, seed=5)
        model = c.push(f"{base}:v2", [model_dir(tmp_path / "m6", 6)], kind="model", sign=_key()).digest
        report = c.push(f"{base}:eval2", [report_dir(tmp_path / "r6", 6)], kind="report",
                        subject=f"{base}:v2").digest
        assert c.target(c.ref(base))._referrers_mode == "tag"  # type: ignore[attr-defined]
        tags = c.tags(base, all=True)
        assert fallback_tag(model) in tags and legacy_tag(model) in tags and fallback_tag(report) in tags
        attached = [d.digest for d in c.referrers(f"{base}@{model}")]
        assert report in attached and len(attached) == 3

        result = c.delete(f"{base}@{model}")
        assert result.tags == ["v2"] and set(attached) <= set(result.referrers)
        assert set(result.scheme_tags) >= {fallback_tag(model), legacy_tag(model), fallback_tag(report)}
        left = c.tags(base, all=True)
        assert not [t for t in left if model[7:] in t or report[7:] in t], left
        assert c.referrers(f"{base}@{model}") == []
        for d in [model, *attached]:
            with pytest.raises(NotFoundError):
                c.resolve(f"{base}@{d}")
        # the other artifact and everything attached to it are untouched
        assert sorted(t for t in left if not t.startswith("sha256-")) == ["eval", "v1"]
        assert keep_report in [d.digest for d in c.referrers(f"{base}@{keep}")]

        # a referrer deleted by itself leaves its subject's sha256-<hex> index (and is gone from it)
        result = c.delete(f"{base}@{keep_report}")
        assert result.tags == ["eval"]
        now = [d.digest for d in c.referrers(f"{base}@{keep}")]
        assert keep_report not in now and len(now) == 2 and fallback_tag(keep) in c.tags(base, all=True)


def test_cascading_delete_with_the_referrers_api(fake_registry: OciFake, tmp_path: Path) -> None:
    """A registry with the referrers API (the in-memory OCI 1.1 fake): the same cascade, found through the API."""
    base = f"{fake_registry.host}/team/model"
    with ociart.Client(plain_http=True) as c:
        model, report = push_full(c, base, tmp_path, seed=13)
        assert c.target(c.ref(base))._referrers_mode == "api"  # type: ignore[attr-defined]
        attached = {d.digest for d in c.referrers(f"{base}@{model}")}
        nested = {d.digest for d in c.referrers(f"{base}@{report}")}  # the report's own provenance
        assert report in attached and nested
        result = c.delete(f"{base}@{model}")
        assert attached | nested <= set(result.referrers) and result.scheme_tags == [legacy_tag(model)]
        assert c.tags(base, all=True) == []
        for d in [model, *attached, *nested]:
            with pytest.raises(NotFoundError):
                c.resolve(f"{base}@{d}")


def test_delete_refused_by_the_registry_names_the_setting(registry_factory: Callable[..., RunningRegistry],
                                                          unique_repo: str,
                                                          tmp_path: Path) -> None:
    reg = registry_factory(delete=False)
    base = f"{reg.host}/{unique_repo}"
    with ociart.Client(plain_http=True) as c:
        model = c.push(f"{base}:v1", [model_dir(tmp_path / "m", 8)], kind="model", sign=_key()).digest
        before = sorted(d.digest for d in c.referrers(f"{base}@{model}"))
    out = run_cli("delete", f"{base}@{model}")
    assert out.returncode == 1, out
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "storage.delete.enabled" in out.stderr and "405" in out.stderr, out.stderr
    with ociart.Client(plain_http=True) as c:  # nothing was removed
        assert sorted(d.digest for d in c.referrers(f"{base}@{model}")) == before
        assert legacy_tag(model) in c.tags(base, all=True)


# -- a referrer copied by tag stays a referrer (review bug) ------------------------------------------------------
def test_report_copied_by_tag_stays_a_referrer(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    layout = tmp_path / "layout"
    with ociart.Client(plain_http=True) as c:
        model = c.push(f"{base}:v1", [model_dir(tmp_path / "m", 10)], kind="model", lineage=False).digest
        report = c.push(f"{base}:eval", [report_dir(tmp_path / "r", 10)], kind="report", subject=f"{base}:v1",
                        lineage=False).digest
        for dst in (f"oci:{layout}", f"{registry.host}/{unique_repo}-copy"):  # a layout; distribution: tag schema
            c.copy(f"{base}:v1", f"{dst}:v1", referrers=False)
            c.copy(f"{base}:eval", f"{dst}:eval", referrers=False)  # the report alone, by tag
            assert [d.digest for d in c.referrers(f"{dst}@{model}", REPORT_TYPE)] == [report], dst
            assert c.resolve(f"{dst}:eval").digest == report

    # a layout whose report entry is only tagged (as another tool writes it) lists it too
    other = LayoutTarget(tmp_path / "other")
    src = LayoutTarget(layout)
    for entry in json.loads((layout / "index.json").read_text())["manifests"]:
        name = (entry.get("annotations") or {}).get(ANNOTATION_REF_NAME)
        if name is None:
            continue  # only the tagged entries, as skopeo copies them
        content = src.get_manifest("", entry["digest"])
        node = parse_manifest_content(content.data, content.media_type)
        for blob in [node.config, *node.layers]:  # type: ignore[union-attr]
            src.fetch_blob("", blob, other.blob_path(blob.digest))
        other.put_manifest("", content, name)
    assert [d.digest for d in list_referrers(other, "", model)] == [report]
    assert [d.artifactType for d in list_referrers(other, "", model, REPORT_TYPE)] == [REPORT_TYPE]


# -- one write path for manifests ---------------------------------------------------------------------------------
def test_every_manifest_writer_checks_the_returned_digest(registry: RunningRegistry, unique_repo: str,
                                                          tmp_path: Path) -> None:
    """Generic push, typed push, signing and lineage all write through ``Target.put_manifest``: a registry answering
    another ``Docker-Content-Digest`` is caught whichever writer it was; malformed manifests never leave."""
    from support.faultproxy import FaultProxy

    from ociart.errors import DigestMismatchError, InvalidContentError
    from ociart.oci import OCI_INDEX, OCI_MANIFEST, Content

    wrong = "sha256:" + "0" * 64
    with FaultProxy(registry.url) as proxy, ociart.Client(plain_http=True) as c:
        base = f"{proxy.host}/{unique_repo}"
        model = c.push(f"{base}:v1", [model_dir(tmp_path / "m", 11)], kind="model", lineage=False)
        proxy.rewrite_header("docker-content-digest", lambda _: wrong, "/manifests/")
        for write in (lambda: c.push(f"{base}:g", [write_random(tmp_path / "g.bin", 100, seed=1)], lineage=False),
                      lambda: c.push(f"{base}:v2", [model_dir(tmp_path / "m2", 12)], kind="model", lineage=False),
                      lambda: c.sign(f"{base}:v1", _key(), legacy_signature="never")):
            with pytest.raises(DigestMismatchError, match=wrong):
                write()
        proxy.clear()
        proxy.rewrite_header("docker-content-digest", lambda _: wrong, "/manifests/sha256:")  # by digest only
        with pytest.raises(DigestMismatchError, match=wrong):  # the model PUT by tag passes; its provenance does not
            c.push(f"{base}:v1", [model_dir(tmp_path / "m", 11)], kind="model")
        proxy.clear()
        target = c.target(c.ref(base))
        puts = len(proxy.find("PUT", "/manifests/"))
        manifest = c.manifest(f"{base}:v1")[1]
        for bad in (Content.of(manifest.data, OCI_INDEX),  # served as an index, says it is a manifest
                    Content.of(b"{" + b" " * (4 << 20) + b"}", OCI_MANIFEST),  # over the 4 MiB cap
                    Content(data=manifest.data, media_type=OCI_MANIFEST, digest=wrong)):  # digest not of the bytes
            with pytest.raises((InvalidContentError, DigestMismatchError)):
                target.put_manifest(unique_repo, bad, "bad")
        assert len(proxy.find("PUT", "/manifests/")) == puts  # refused before sending
        with pytest.raises(NotFoundError):
            c.resolve(f"{base}:bad")
        assert c.resolve(f"{base}@{model.digest}").digest == model.digest
