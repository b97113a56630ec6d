"""OCI 1.1 referrers: attach and list, through the referrers API or the ``sha256-<hex>`` tag schema, and copies that
carry referrers (and referrers of referrers) between registries, OCI layouts and the embedded store.

* distribution 2.8.2 (``registry``) has no referrers API: attach maintains the fallback index, listing reads it.
* ``fake_registry`` (``support/ocifake.py``) has the API: attach relies on ``OCI-Subject``, no tag is created.

Subjects and referrers are built with the target API (not ``Client.push``) so that nothing else is attached to them
and each listing is exactly what the test attached.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import run_cli
from support.ocifake import OciFake
from support.registry import RunningRegistry

import ociart
from ociart.errors import InvalidContentError, NotFoundError
from ociart.oci import (
    ANNOTATION_REF_NAME,
    EMPTY_JSON,
    EMPTY_JSON_DIGEST,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    Content,
    Descriptor,
    Index,
    Manifest,
)
from ociart.oci.digest import sha256_bytes
from ociart.targets.base import bytes_opener

SIG = "application/vnd.example.sig"
COUNTER = "application/vnd.example.countersig"
SBOM_CONFIG = "application/vnd.example.sbom.config.v1+json"  # no artifactType: listed under the config type
EMPTY = Descriptor(mediaType=OCI_EMPTY, digest=EMPTY_JSON_DIGEST, size=2)


@pytest.fixture(autouse=True)
def _auto_referrers_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIART_REFERRERS", raising=False)  # capability detection, unless a test forces a mode


# -- helpers ----------------------------------------------------------------------------------------
def _client() -> ociart.Client:
    return ociart.Client(plain_http=True)


def _blob(c: ociart.Client, ref: str, data: bytes, media_type: str) -> Descriptor:
    r = c.ref(ref)
    desc = Descriptor(mediaType=media_type, digest=sha256_bytes(data), size=len(data))
    c.target(r).push_blob_stream(r.repository, desc, bytes_opener(data))
    return desc


def push_subject(c: ociart.Client, ref: str, payload: bytes = b"weights") -> Descriptor:
    """A small artifact (empty config, one layer) tagged at ``ref``, with nothing attached to it."""
    r = c.ref(ref)
    layer = _blob(c, ref, payload, "application/vnd.example.file")
    _blob(c, ref, EMPTY_JSON, OCI_EMPTY)
    content = Content.from_model(Manifest(artifactType="application/vnd.example.model", config=EMPTY, layers=[layer]))
    c.target(r).put_manifest(r.repository, content, r.tag)
    return content.descriptor()


def make_referrer(c: ociart.Client, ref: str, subject: Descriptor, artifact_type: str | None, note: str) -> Content:
    """A referrer of ``subject`` (its blobs pushed to ``ref``'s repository): ``artifact_type`` with the empty config,
    or, when None, no artifactType and a config of type ``SBOM_CONFIG``; one small layer; annotations."""
    if artifact_type:
        _blob(c, ref, EMPTY_JSON, OCI_EMPTY)
        config = EMPTY
    else:
        config = _blob(c, ref, json.dumps({"format": "spdx", "note": note}).encode(), SBOM_CONFIG)
    layer = _blob(c, ref, f"payload of {note}".encode(), "application/vnd.example.payload.v1")
    manifest = Manifest(artifactType=artifact_type, config=config, layers=[layer],
                        subject=Descriptor(mediaType=subject.mediaType, digest=subject.digest, size=subject.size),
                        annotations={"org.opencontainers.image.created": "2026-01-01T00:00:00Z",
                                     "com.example.note": note})
    return Content.from_model(manifest)


def make_index_referrer(c: ociart.Client, ref: str, subject: Descriptor) -> Content:
    """A referrer that is an image index without artifactType (its one child manifest pushed untagged)."""
    r = c.ref(ref)
    _blob(c, ref, EMPTY_JSON, OCI_EMPTY)
    layer = _blob(c, ref, b"part of a bundle", "application/vnd.example.part.v1")
    child = Content.from_model(Manifest(artifactType="application/vnd.example.part", config=EMPTY, layers=[layer]))
    c.target(r).put_manifest(r.repository, child)
    return Content.from_model(Index(manifests=[child.descriptor()], annotations={"com.example.note": "bundle"},
                                    subject=Descriptor(mediaType=subject.mediaType, digest=subject.digest,
                                                       size=subject.size)))


def entry(content: Content) -> dict[str, Any]:
    """The referrers-list entry the specs require for ``content`` (computed here from the manifest JSON):
    artifactType is the manifest's, else its config's media type; an index without one has none."""
    m = json.loads(content.data)
    out = {"mediaType": content.media_type, "digest": content.digest, "size": len(content.data)}
    artifact_type = m.get("artifactType") or (m.get("config") or {}).get("mediaType")
    if artifact_type:
        out["artifactType"] = artifact_type
    return {**out, "annotations": m["annotations"]}


def listed(c: ociart.Client, ref: str, artifact_type: str | None = None) -> list[dict[str, Any]]:
    return [d.model_dump(mode="json", exclude_none=True) for d in c.referrers(ref, artifact_type)]


def fallback_tag(digest: str) -> str:
    return "sha256-" + digest.removeprefix("sha256:")


def attach_set(c: ociart.Client, base: str) -> tuple[Descriptor, Content, Content, Content]:
    """Subject ``base:v1`` with a signature, an SBOM (artifactType from its config) and a counter-signature
    attached to the signature (a referrer of a referrer)."""
    subject = push_subject(c, f"{base}:v1")
    sig = make_referrer(c, base, subject, SIG, "sig")
    sbom = make_referrer(c, base, subject, None, "sbom")
    counter = make_referrer(c, base, sig.descriptor(), COUNTER, "counter")
    for content in (sig, sbom, counter):
        assert c.attach(base, content) == content.descriptor()
    return subject, sig, sbom, counter


def assert_copied(c: ociart.Client, base: str, subject: Descriptor, sig: Content, sbom: Content,
                  counter: Content) -> None:
    """``base`` holds the subject (tag v1) and every referrer, byte-identical and listed as referrers."""
    r = c.ref(base)
    target = c.target(r)
    assert c.resolve(f"{base}:v1").digest == subject.digest
    assert sorted(listed(c, f"{base}:v1"), key=lambda e: e["digest"]) == sorted([entry(sig), entry(sbom)],
                                                                                 key=lambda e: e["digest"])
    assert listed(c, f"{base}@{sig.digest}") == [entry(counter)]
    assert listed(c, f"{base}@{counter.digest}") == []
    for content in (sig, sbom, counter):
        assert target.get_manifest(r.repository, content.digest).data == content.data
        for layer in Manifest.model_validate_json(content.data).layers:
            assert target.has_blob(r.repository, layer)


def fallback_index(registry_url: str, repo: str, subject: str) -> tuple[str, dict[str, Any]]:
    """(Content-Type, body) of the tag-schema index as the registry serves it."""
    resp = httpx.get(f"{registry_url}/v2/{repo}/manifests/{fallback_tag(subject)}",
                     headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"}, timeout=10)
    resp.raise_for_status()
    return resp.headers["content-type"], resp.json()


def referrers_api_calls(registry: RunningRegistry, repo: str) -> int:
    """How often the registry was asked for ``/v2/<repo>/referrers/`` (from its access log)."""
    return registry.log_text().count(f"GET /v2/{repo}/referrers/")


# -- the fake registry itself (plain httpx) ------------------------------------------------------------
def test_fake_registry_protocol(fake_registry: OciFake) -> None:
    data = bytes(range(256)) * 40
    digest = sha256_bytes(data)
    with httpx.Client(base_url=fake_registry.url, timeout=10) as h:
        assert h.get("/v2/").status_code == 200
        start = h.post("/v2/a/b/blobs/uploads/")
        assert start.status_code == 202
        loc = httpx.URL(fake_registry.url).join(start.headers["location"])
        first = h.patch(loc, content=data[:5000], headers={"Content-Range": "0-4999"})
        assert first.status_code == 202 and first.headers["range"] == "0-4999"
        assert h.patch(loc, content=b"x", headers={"Content-Range": "0-0"}).status_code == 416
        rest = h.patch(loc, content=iter([data[5000:6000], data[6000:]]))  # streamed, chunked
        assert rest.status_code == 202 and rest.headers["range"] == f"0-{len(data) - 1}"
        assert h.get(loc).status_code == 204
        bad = h.put(loc.copy_add_param("digest", EMPTY_JSON_DIGEST))
        assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "DIGEST_INVALID"
        loc = httpx.URL(fake_registry.url).join(h.post("/v2/a/b/blobs/uploads/").headers["location"])
        done = h.put(loc.copy_add_param("digest", digest), content=data)
        assert done.status_code == 201 and done.headers["docker-content-digest"] == digest
        assert h.delete(httpx.URL(fake_registry.url).join(h.post("/v2/a/b/blobs/uploads/").headers["location"])
                        ).status_code == 204
        assert h.head(f"/v2/a/b/blobs/{digest}").headers["content-length"] == str(len(data))
        part = h.get(f"/v2/a/b/blobs/{digest}", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == data[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
        assert h.post(f"/v2/c/d/blobs/uploads/?mount={digest}&from=a/b").status_code == 201
        assert h.head(f"/v2/c/d/blobs/{digest}").status_code == 200
        assert h.post(f"/v2/c/d/blobs/uploads/?mount={EMPTY_JSON_DIGEST}&from=a/b").status_code == 202

        layer = {"mediaType": "application/octet-stream", "digest": digest, "size": len(data)}
        missing = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": EMPTY.model_dump(
            exclude_none=True), "layers": [layer]}).encode()
        put = h.put("/v2/a/b/manifests/v1", content=missing, headers={"Content-Type": OCI_MANIFEST})
        assert put.status_code == 400 and put.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
        h.put(h.post("/v2/a/b/blobs/uploads/").headers["location"] + f"?digest={EMPTY_JSON_DIGEST}", content=b"{}")
        put = h.put("/v2/a/b/manifests/v1", content=missing, headers={"Content-Type": OCI_MANIFEST})
        assert put.status_code == 201 and "oci-subject" not in put.headers
        subject = put.headers["docker-content-digest"]
        assert h.put("/v2/a/b/manifests/v1", content=missing, headers={"Content-Type": OCI_INDEX}).status_code == 400
        referrer = json.loads(missing)
        referrer.update(artifactType=SIG, subject={"mediaType": OCI_MANIFEST, "digest": subject, "size": len(missing)})
        body = json.dumps(referrer).encode()
        put = h.put(f"/v2/a/b/manifests/{sha256_bytes(body)}", content=body, headers={"Content-Type": OCI_MANIFEST})
        assert put.status_code == 201 and put.headers["oci-subject"] == subject
        got = h.get(f"/v2/a/b/manifests/{sha256_bytes(body)}")
        assert got.content == body and got.headers["content-type"] == OCI_MANIFEST
        refs = h.get(f"/v2/a/b/referrers/{subject}")
        assert refs.headers["content-type"] == OCI_INDEX and "oci-filters-applied" not in refs.headers
        assert refs.json()["manifests"] == [{"mediaType": OCI_MANIFEST, "digest": sha256_bytes(body),
                                             "size": len(body), "artifactType": SIG}]
        other = h.get(f"/v2/a/b/referrers/{subject}", params={"artifactType": "x/y"})
        assert other.json()["manifests"] == [] and other.headers["oci-filters-applied"] == "artifactType"
        assert h.get(f"/v2/a/b/referrers/{digest}").json() == {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                                "manifests": []}
        assert h.get("/v2/a/b/tags/list").json() == {"name": "a/b", "tags": ["v1"]}
        assert h.delete("/v2/a/b/manifests/v1").status_code == 202
        assert h.get("/v2/a/b/manifests/v1").status_code == 404


# -- attach and list ---------------------------------------------------------------------------------
def test_attach_and_list_with_the_tag_schema_on_distribution(registry: RunningRegistry, unique_repo: str) -> None:
    base = f"{registry.host}/{unique_repo}"
    with _client() as c:
        target = c.target(c.ref(base))
        subject = push_subject(c, f"{base}:v1")
        sig = make_referrer(c, base, subject, SIG, "sig")
        sbom = make_referrer(c, base, subject, None, "sbom")
        assert c.attach(f"{base}:v1", sig) == sig.descriptor()
        c.attach(base, sbom)
        assert target._referrers_mode is None  # attach alone does not probe the referrers API

        assert listed(c, f"{base}:v1") == [entry(sig), entry(sbom)]
        assert target._referrers_mode == "tag"  # 404 text/plain on /referrers/: no API, remembered
        assert listed(c, f"{base}@{subject.digest}", SIG) == [entry(sig)]
        assert listed(c, f"{base}:v1", SBOM_CONFIG) == [entry(sbom)]
        assert listed(c, f"{base}:v1", "application/vnd.example.other") == []
        assert referrers_api_calls(registry, unique_repo) == 1  # the capability was probed once

        tag = fallback_tag(subject.digest)
        assert c.tags(base) == ["v1"]
        assert c.tags(base, all=True) == sorted(["v1", tag])
        content_type, index = fallback_index(registry.url, unique_repo, subject.digest)
        assert content_type == OCI_INDEX
        assert index == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry(sig), entry(sbom)]}
        before = target.get_manifest(unique_repo, tag).digest

        c.attach(base, sig)  # again: already listed, the index is not rewritten
        assert target.get_manifest(unique_repo, tag).digest == before
        assert listed(c, f"{base}:v1") == [entry(sig), entry(sbom)]
        for content in (sig, sbom):
            assert target.get_manifest(unique_repo, content.digest).data == content.data
        assert c.resolve(f"{base}:v1").digest == subject.digest  # the subject's tag is untouched


def test_attach_and_list_with_the_referrers_api(fake_registry: OciFake) -> None:
    base = f"{fake_registry.host}/models/bert"
    with _client() as c:
        target = c.target(c.ref(base))
        subject = push_subject(c, f"{base}:v1")
        sig = make_referrer(c, base, subject, SIG, "sig")
        sbom = make_referrer(c, base, subject, None, "sbom")
        c.attach(f"{base}:v1", sig)
        c.attach(base, sbom)
        assert listed(c, f"{base}:v1") == [entry(sig), entry(sbom)]
        assert target._referrers_mode == "api"
        assert listed(c, f"{base}:v1", SIG) == [entry(sig)]
        assert fake_registry.requests("GET", "/referrers/")[-1]["path"].endswith(
            f"/referrers/{subject.digest}?artifactType=application%2Fvnd.example.sig")  # filtered by the server
        assert listed(c, f"{base}:v1", SBOM_CONFIG) == [entry(sbom)]
        c.attach(base, sig)
        assert listed(c, f"{base}:v1") == [entry(sig), entry(sbom)]

        assert c.tags(base, all=True) == ["v1"]  # no sha256-<hex> tag
        assert not [e for e in fake_registry.log if "/manifests/sha256-" in e["path"]]
        stored = fake_registry.repos["models/bert"].manifests
        assert stored[sig.digest].data == sig.data and stored[sbom.digest].data == sbom.data

        fake_registry.referrers_page_size = 1  # Link pagination
        calls = len(fake_registry.requests("GET", "/referrers/"))
        assert listed(c, f"{base}:v1") == [entry(sig), entry(sbom)]
        assert len(fake_registry.requests("GET", "/referrers/")) == calls + 2


def test_forced_tag_mode_maintains_the_index_on_an_api_registry(fake_registry: OciFake,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """OCIART_REFERRERS=tag: attach writes the fallback index even when the registry confirms OCI-Subject,
    since listing in that mode reads only the index."""
    monkeypatch.setenv("OCIART_REFERRERS", "tag")
    base = f"{fake_registry.host}/models/forced"
    with _client() as c:
        subject = push_subject(c, f"{base}:v1")
        sig = make_referrer(c, base, subject, SIG, "sig")
        c.attach(base, sig)
        assert listed(c, f"{base}:v1") == [entry(sig)]
        assert c.tags(base, all=True) == sorted(["v1", fallback_tag(subject.digest)])
    assert not fake_registry.requests("GET", "/referrers/")


def test_oci_subject_without_referrers_api_still_gets_the_index(fake_registry: OciFake) -> None:
    """registry-protocol.md §6: do not trust OCI-Subject alone (ECR confirmed it without having the API)."""
    fake_registry.referrers_api = False
    base = f"{fake_registry.host}/models/ecr-like"
    with _client() as c:
        subject = push_subject(c, f"{base}:v1")
        sig = make_referrer(c, base, subject, SIG, "sig")
        c.attach(base, sig)
        assert c.target(c.ref(base))._referrers_mode == "tag"
        assert listed(c, f"{base}:v1") == [entry(sig)]
        assert c.tags(base, all=True) == sorted(["v1", fallback_tag(subject.digest)])


@pytest.mark.parametrize("layout", ["embedded", "oci"])
def test_attach_and_list_in_layouts(layout: str, tmp_path: Path) -> None:
    base = "team/model" if layout == "embedded" else f"oci:{tmp_path / 'lay'}"
    with _client() as c:
        subject = push_subject(c, f"{base}:v1")
        sig = make_referrer(c, base, subject, SIG, "sig")
        sbom = make_referrer(c, base, subject, None, "sbom")
        c.attach(base, sig)
        c.attach(f"{base}:v1", sbom)
        c.attach(base, sig)
        assert listed(c, f"{base}:v1") == [entry(sig), entry(sbom)]
        assert listed(c, f"{base}@{subject.digest}", SIG) == [entry(sig)]
        assert listed(c, f"{base}:v1", SBOM_CONFIG) == [entry(sbom)]
        assert listed(c, f"{base}@{sig.digest}") == []
        assert c.tags(base, all=True) == ["v1"]
        target = c.target(c.ref(base))
        assert target.get_manifest(c.ref(base).repository, sig.digest).data == sig.data
    if layout == "oci":
        index = json.loads((tmp_path / "lay" / "index.json").read_text())
        untagged = [m for m in index["manifests"] if ANNOTATION_REF_NAME not in (m.get("annotations") or {})]
        assert untagged == [entry(sig), entry(sbom)]
        skopeo = shutil.which("skopeo")
        if skopeo:  # the untagged entries do not disturb other readers of the layout
            raw = subprocess.run([skopeo, "inspect", "--raw", f"oci:{tmp_path / 'lay'}:v1"], check=False,
                                 capture_output=True, timeout=60)
            assert raw.returncode == 0, raw.stderr
            assert sha256_bytes(raw.stdout) == subject.digest


@pytest.mark.parametrize("store", ["distribution", "api", "embedded", "oci"])
def test_index_referrer_without_artifact_type(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """An image index may refer to a subject; without artifactType its entry has none, and it is still listed."""
    if store == "distribution":
        base = f"{request.getfixturevalue('registry').host}/{request.getfixturevalue('unique_repo')}"
    elif store == "api":
        base = f"{request.getfixturevalue('fake_registry').host}/models/bundle"
    else:
        base = "team/bundle" if store == "embedded" else f"oci:{tmp_path / 'lay'}"
    with _client() as c:
        subject = push_subject(c, f"{base}:v1")
        bundle = make_index_referrer(c, base, subject)
        sig = make_referrer(c, base, subject, SIG, "sig")
        c.attach(base, bundle)
        c.attach(base, sig)
        assert "artifactType" not in entry(bundle)
        assert listed(c, f"{base}:v1") == [entry(bundle), entry(sig)]
        assert listed(c, f"{base}:v1", SIG) == [entry(sig)]
        with pytest.raises(InvalidContentError, match="no subject"):
            c.attach(base, Content.from_model(Manifest(config=EMPTY)))


# -- concurrent attaches on the tag schema -------------------------------------------------------------
ATTACH_SCRIPT = """
import sys, time
import ociart
from ociart.oci import OCI_MANIFEST, Content
ref, path, go = sys.argv[1], sys.argv[2], float(sys.argv[3])
with ociart.Client(plain_http=True) as c:
    c.target(c.ref(ref)).origin  # connect before the start line
    time.sleep(max(0.0, go - time.time()))
    c.attach(ref, Content.of(open(path, "rb").read(), OCI_MANIFEST))
"""


def test_concurrent_attaches_from_processes_and_threads_all_survive(registry: RunningRegistry, unique_repo: str,
                                                                    tmp_path: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    with _client() as c:
        subject = push_subject(c, f"{base}:v1")
        by_process = [make_referrer(c, base, subject, SIG, f"process-{i}") for i in range(3)]
        by_thread = [make_referrer(c, base, subject, SIG, f"thread-{i}") for i in range(3)]

    go = time.time() + 2.0
    procs = []
    for i, content in enumerate(by_process):
        path = tmp_path / f"referrer-{i}.json"
        path.write_bytes(content.data)
        procs.append(subprocess.Popen([sys.executable, "-c", ATTACH_SCRIPT, base, str(path), str(go)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    with _client() as c:
        assert sorted(e["digest"] for e in listed(c, f"{base}:v1")) == sorted(r.digest for r in by_process)

    barrier = threading.Barrier(len(by_thread))
    errors: list[BaseException] = []

    def attach(content: Content) -> None:
        try:
            with _client() as c:
                assert c.target(c.ref(base)).origin  # connect before the start line
                barrier.wait(timeout=30)
                c.attach(base, content)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=attach, args=(content,)) for content in by_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    with _client() as c:
        got = listed(c, f"{base}:v1")
    assert sorted(e["digest"] for e in got) == sorted(r.digest for r in by_process + by_thread)
    assert sorted(got, key=lambda e: e["digest"]) == sorted(map(entry, by_process + by_thread),
                                                            key=lambda e: e["digest"])


# -- copies carry referrers -------------------------------------------------------------------------
def test_copy_between_distribution_registries_carries_referrers(registry: RunningRegistry, registry_factory,
                                                                unique_repo: str) -> None:
    base = f"{registry.host}/{unique_repo}"
    other = registry_factory()
    with _client() as c:
        subject, sig, sbom, counter = attach_set(c, base)
        assert_copied(c, base, subject, sig, sbom, counter)
        for dst in (f"{base}-copy", f"{other.host}/mirror/model"):
            assert c.copy(f"{base}:v1", f"{dst}:v1") == subject
            assert_copied(c, dst, subject, sig, sbom, counter)
            assert c.tags(dst) == ["v1"]
            assert c.tags(dst, all=True) == sorted(["v1", fallback_tag(subject.digest), fallback_tag(sig.digest)])
        _, index = fallback_index(other.url, "mirror/model", subject.digest)
        assert sorted(index["manifests"], key=lambda e: e["digest"]) == sorted([entry(sig), entry(sbom)],
                                                                               key=lambda e: e["digest"])
        c.copy(f"{base}:v1", f"{dst}:v1")  # again: nothing duplicated
        assert len(c.referrers(f"{dst}:v1")) == 2 and len(c.referrers(f"{dst}@{sig.digest}")) == 1


def test_copy_between_api_and_tag_schema_registries(registry: RunningRegistry, fake_registry: OciFake,
                                                    unique_repo: str) -> None:
    base = f"{registry.host}/{unique_repo}"
    with _client() as c:
        subject, sig, sbom, counter = attach_set(c, base)
        fake_base = f"{fake_registry.host}/mirror/model"
        assert c.copy(f"{base}:v1", f"{fake_base}:v1") == subject  # tag schema -> API
        assert_copied(c, fake_base, subject, sig, sbom, counter)
        assert c.tags(fake_base, all=True) == ["v1"]
        assert c.target(c.ref(fake_base))._referrers_mode == "api"
        for content in (sig, sbom, counter):
            assert fake_registry.repos["mirror/model"].manifests[content.digest].data == content.data

        assert c.copy(f"{fake_base}:v1", f"{fake_registry.host}/mirror/second:v1") == subject  # API -> API
        assert_copied(c, f"{fake_registry.host}/mirror/second", subject, sig, sbom, counter)
        mounts = fake_registry.requests("POST", "/mirror/second/blobs/uploads/?mount=")
        assert mounts and all(e["status"] == 201 for e in mounts)

        back = f"{base}-back"
        assert c.copy(f"{fake_base}:v1", f"{back}:v1") == subject  # API -> tag schema
        assert_copied(c, back, subject, sig, sbom, counter)
        assert c.tags(back, all=True) == sorted(["v1", fallback_tag(subject.digest), fallback_tag(sig.digest)])
        _, index = fallback_index(registry.url, f"{unique_repo}-back", sig.digest)
        assert index == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry(counter)]}


@pytest.mark.parametrize("source", ["distribution", "api"])
def test_copy_registry_to_layout_to_embedded_store_carries_referrers(source: str, request: pytest.FixtureRequest,
                                                                     tmp_path: Path) -> None:
    if source == "distribution":
        host = request.getfixturevalue("registry").host
        base = f"{host}/{request.getfixturevalue('unique_repo')}"
    else:
        host = request.getfixturevalue("fake_registry").host
        base = f"{host}/models/src"
    lay = f"oci:{tmp_path / 'lay'}"
    with _client() as c:
        subject, sig, sbom, counter = attach_set(c, base)
        assert c.copy(f"{base}:v1", f"{lay}:v1") == subject
        assert_copied(c, lay, subject, sig, sbom, counter)
        assert c.copy(f"{lay}:v1", "team/model:v1") == subject
        assert_copied(c, "team/model", subject, sig, sbom, counter)
        assert c.copy("team/model:v1", f"{base}-back:v1") == subject
        assert_copied(c, f"{base}-back", subject, sig, sbom, counter)
    index = json.loads((tmp_path / "lay" / "index.json").read_text())
    assert sorted(m["digest"] for m in index["manifests"]) == sorted([subject.digest, sig.digest, sbom.digest,
                                                                      counter.digest])


def test_copy_without_referrers_library_and_cli(registry: RunningRegistry, fake_registry: OciFake,
                                               unique_repo: str, tmp_path: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    with _client() as c:
        subject, sig, sbom, counter = attach_set(c, base)
        assert c.copy(f"{base}:v1", f"{base}-bare:v1", referrers=False) == subject
        assert c.referrers(f"{base}-bare:v1") == [] and c.tags(f"{base}-bare", all=True) == ["v1"]
        for ref in (sig, sbom, counter):
            with pytest.raises(NotFoundError):
                c.resolve(f"{base}-bare@{ref.digest}")

    bare = run_cli("copy", "--plain-http", "--no-referrers", f"{base}:v1", f"{fake_registry.host}/cli/bare:v1")
    assert bare.returncode == 0, bare.stderr
    assert set(fake_registry.repos["cli/bare"].manifests) == {subject.digest}
    full = run_cli("copy", "--plain-http", f"{base}:v1", f"{fake_registry.host}/cli/full:v1")
    assert full.returncode == 0, full.stderr
    assert set(fake_registry.repos["cli/full"].manifests) == {subject.digest, sig.digest, sbom.digest, counter.digest}

    for ref in (f"{base}:v1", f"{fake_registry.host}/cli/full:v1"):
        out = run_cli("referrers", "--plain-http", ref, "--json")
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)["referrers"]
        assert sorted(got, key=lambda e: e["digest"]) == sorted([entry(sig), entry(sbom)], key=lambda e: e["digest"])
    only = run_cli("referrers", "--plain-http", f"{base}@{subject.digest}", "--artifact-type", SIG, "--json")
    assert json.loads(only.stdout) == {"referrers": [entry(sig)]}
    text = run_cli("referrers", "--plain-http", f"{base}@{sig.digest}")
    assert text.returncode == 0 and text.stdout == f"{counter.digest}  {COUNTER}\n"
    none = run_cli("referrers", "--plain-http", f"{base}@{counter.digest}", "--json")
    assert none.returncode == 0 and json.loads(none.stdout) == {"referrers": []}
