"""Failure modes: each gives one clear error (class, message, CLI exit code and one ``error:`` line on stderr) and
leaves nothing half-written.

Covered: wrong and missing credentials (htpasswd and token registries, no retry storm); unknown repository, tag
and digest; a blob corrupted in the registry's storage; dropped downloads (Range resume); transient 503/429 on
manifest GET and blob upload; persistent 503 within the retry budget; Authorization never sent to another origin
(upload Location, tags Link, blob redirect); oversized and malformed manifests; unsafe file titles; pulling onto an
existing different file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from support.fakeserver import BodyReader, FakeServer
from support.faultproxy import FaultProxy
from support.registry import USERNAME, RunningRegistry

import ociart
from ociart.errors import (
    AuthError,
    DigestMismatchError,
    InvalidContentError,
    NetworkError,
    NotFoundError,
    OverwriteError,
    UnsafePathError,
    VerificationError,
)
from ociart.oci import (
    ANNOTATION_TITLE,
    EMPTY_JSON,
    EMPTY_JSON_DIGEST,
    OCI_EMPTY,
    OCI_MANIFEST,
    Content,
    Descriptor,
    Manifest,
)

RegistryFactory = Callable[..., RunningRegistry]
MANIFEST_LIMIT = 4 << 20


# -- helpers ----------------------------------------------------------------------------------------
def _cli_cmd() -> list[str]:
    if (Path(ociart.__file__).parent / "__main__.py").exists():
        return [sys.executable, "-m", "ociart"]
    return [str(Path(sys.executable).with_name("ociart"))]


def run_cli(*args: str, input: str | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_cli_cmd(), *args], capture_output=True, text=True, input=input, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=60)


def assert_cli_error(proc: subprocess.CompletedProcess[str], exit_code: int, *needles: str) -> str:
    """Exit code as documented in ociart/errors.py; stderr is ONE line ``error: ...`` naming the cause."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    assert proc.returncode == exit_code, (proc.returncode, proc.stderr)
    assert proc.stdout == "", proc.stdout
    return lines[0]


def assert_one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, repr(text)
    return text


def tree(root: Path) -> list[str]:
    """Every entry (files, dirs, hidden ones included) under ``root``, relative and sorted."""
    if not root.exists():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pattern(size: int, seed: str) -> bytes:
    block = hashlib.sha256(seed.encode()).digest()
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(block + i.to_bytes(8, "big")).digest() * 2048
        i += 1
    return bytes(out[:size])


def make_dir(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def layer_digest(client: ociart.Client, ref: str, title: str) -> str:
    manifest = client.inspect(ref).manifest
    return next(layer["digest"] for layer in manifest["layers"] if layer["annotations"][ANNOTATION_TITLE] == title)


@contextmanager
def bytes_opener(data: bytes) -> Iterator[Iterator[bytes]]:
    yield iter([data])


# -- credentials ------------------------------------------------------------------------------------
def test_wrong_credentials_htpasswd(htpasswd_registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    src = make_dir(tmp_path / "src", {"a.txt": b"alpha"})
    with FaultProxy(htpasswd_registry.url) as proxy:
        client = ociart.Client(username=USERNAME, password="wrong-password", plain_http=True)
        for action in ("resolve", "push"):
            proxy.log.clear()
            start = time.monotonic()
            with pytest.raises(AuthError) as err:
                if action == "resolve":
                    client.resolve(f"{proxy.host}/{unique_repo}:v1")
                else:
                    client.push(f"{proxy.host}/{unique_repo}:v1", [src])
            assert time.monotonic() - start < 5
            msg = assert_one_line(err.value)
            assert "authentication failed" in msg and USERNAME in msg, msg
            assert "wrong-password" not in msg
            assert 1 <= len(proxy.log) <= 4, [(e["method"], e["path"], e["status"]) for e in proxy.log]
            assert all(e["status"] == 401 for e in proxy.log)

        proxy.log.clear()
        start = time.monotonic()
        proc = run_cli("pull", "--plain-http", "-u", USERNAME, "--password-stdin", "-o", str(tmp_path / "out"),
                       f"{proxy.host}/{unique_repo}:v1", input="wrong-password\n")
        assert time.monotonic() - start < 10
        assert_cli_error(proc, 4, "authentication failed", USERNAME)
        assert len(proxy.log) <= 4
    assert not (tmp_path / "out").exists() or tree(tmp_path / "out") == []


def test_wrong_credentials_token(token_registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    token_server = token_registry.token_server
    assert token_server is not None
    src = make_dir(tmp_path / "src", {"a.txt": b"alpha"})
    with FaultProxy(token_registry.url) as proxy:
        client = ociart.Client(username=USERNAME, password="wrong-password", plain_http=True)
        for action in ("resolve", "push"):
            proxy.log.clear()
            token_server.requests.clear()
            start = time.monotonic()
            with pytest.raises(AuthError) as err:
                if action == "resolve":
                    client.resolve(f"{proxy.host}/{unique_repo}:v1")
                else:
                    client.push(f"{proxy.host}/{unique_repo}:v1", [src])
            assert time.monotonic() - start < 5
            msg = assert_one_line(err.value)
            assert USERNAME in msg and "wrong username or password" in msg, msg
            assert "wrong-password" not in msg
            assert 1 <= len(token_server.requests) <= 2, token_server.requests
            assert all(r["status"] == 401 for r in token_server.requests)
            # the first call meets the challenge; later ones may go straight to the token service
            assert (action != "resolve" or proxy.log) and len(proxy.log) <= 4, \
                [(e["method"], e["path"], e["status"]) for e in proxy.log]

        token_server.requests.clear()
        proc = run_cli("push", "--plain-http", "-u", USERNAME, "--password-stdin", f"{proxy.host}/{unique_repo}:v1",
                       str(src / "a.txt"), input="wrong-password\n")
        assert_cli_error(proc, 4, USERNAME)
        assert len(token_server.requests) <= 2


def test_missing_credentials_htpasswd(htpasswd_registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    client = ociart.Client(plain_http=True)
    start = time.monotonic()
    with pytest.raises(AuthError) as err:
        client.resolve(f"{htpasswd_registry.host}/{unique_repo}:v1")
    assert time.monotonic() - start < 5
    msg = assert_one_line(err.value)
    assert "login" in msg and htpasswd_registry.host in msg, msg

    proc = run_cli("pull", "--plain-http", "-o", str(tmp_path / "out"), f"{htpasswd_registry.host}/{unique_repo}:v1")
    assert_cli_error(proc, 4, "login")


def test_missing_credentials_token_push(token_registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    """Anonymous users may pull but not push: the refusal must say how to log in, without a retry storm."""
    token_server = token_registry.token_server
    assert token_server is not None
    src = make_dir(tmp_path / "src", {"a.txt": b"alpha"})
    client = ociart.Client(plain_http=True)
    start = time.monotonic()
    with pytest.raises(AuthError) as err:
        client.push(f"{token_registry.host}/{unique_repo}:v1", [src])
    assert time.monotonic() - start < 5
    msg = assert_one_line(err.value)
    assert "login" in msg, msg
    assert len(token_server.requests) <= 4, token_server.requests
    assert all(r["authorized_user"] is None for r in token_server.requests)

    proc = run_cli("push", "--plain-http", f"{token_registry.host}/{unique_repo}:v1", str(src / "a.txt"))
    assert_cli_error(proc, 4, "login", unique_repo)


# -- not found --------------------------------------------------------------------------------------
@pytest.fixture
def pushed(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> tuple[str, str, dict[str, bytes]]:
    """An artifact in the session registry: (reference, digest, files)."""
    files = {"model.bin": pattern(200_000, unique_repo), "notes/readme.txt": b"hello\n"}
    ref = f"{registry.host}/{unique_repo}:v1"
    digest = ociart.Client(plain_http=True).push(ref, [make_dir(tmp_path / "pushed-src", files)]).digest
    return ref, digest, files


@pytest.mark.parametrize("what", ["repository", "tag", "digest"])
def test_not_found(what: str, registry: RunningRegistry, unique_repo: str, pushed: tuple[str, str, dict[str, bytes]],
                   tmp_path: Path) -> None:
    missing_digest = "sha256:" + "0" * 64
    ref, needle = {
        "repository": (f"{registry.host}/{unique_repo}/nope:v1", f"{unique_repo}/nope"),
        "tag": (f"{registry.host}/{unique_repo}:no-such-tag", "no-such-tag"),
        "digest": (f"{registry.host}/{unique_repo}@{missing_digest}", missing_digest),
    }[what]
    client = ociart.Client(plain_http=True)
    for call in (lambda: client.resolve(ref), lambda: client.pull(ref, tmp_path / "out")):
        with pytest.raises(NotFoundError) as err:
            call()
        msg = assert_one_line(err.value)
        assert needle in msg and "not found" in msg, msg
    assert tree(tmp_path / "out") == []

    proc = run_cli("pull", "--plain-http", "-o", str(tmp_path / "cli-out"), ref)
    assert_cli_error(proc, 3, needle, "not found")
    assert tree(tmp_path / "cli-out") == []


# -- corrupted blob ---------------------------------------------------------------------------------
def test_corrupted_blob_in_registry(registry_factory: RegistryFactory, unique_repo: str, tmp_path: Path) -> None:
    reg = registry_factory()  # own registry: the session one stays clean
    files = {"good.txt": b"fine content\n" * 100, "weights.bin": pattern(300_000, "corrupt")}
    ref = f"{reg.host}/{unique_repo}:v1"
    client = ociart.Client(plain_http=True)
    client.push(ref, [make_dir(tmp_path / "src", files)])
    bad = layer_digest(client, ref, "weights.bin")
    data_path = reg.blob_data_path(bad)
    original = data_path.read_bytes()
    assert original == files["weights.bin"]
    data_path.write_bytes(bytes(b ^ 0x5A for b in original[:1000]) + original[1000:])  # same length

    out = tmp_path / "out"
    with pytest.raises(DigestMismatchError) as err:
        client.pull(ref, out)
    msg = assert_one_line(err.value)
    assert "digest mismatch" in msg and bad in msg, msg
    assert isinstance(err.value, VerificationError)
    assert tree(out) == []  # neither the good file, nor the bad one, nor staging/temp entries

    cli_out = tmp_path / "cli-out"
    proc = run_cli("pull", "--plain-http", "-o", str(cli_out), ref)
    assert_cli_error(proc, 5, "digest mismatch", bad)
    assert tree(cli_out) == []


# -- dropped connections and transient errors -------------------------------------------------------
def test_dropped_download_resumes_with_range(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    big = pattern(6 * 1024 * 1024 + 123, unique_repo)
    client = ociart.Client(plain_http=True)
    client.push(f"{registry.host}/{unique_repo}:v1", [make_dir(tmp_path / "src", {"big.bin": big})])
    cut = 1_500_000
    with FaultProxy(registry.url) as proxy:
        proxy.drop_after("/blobs/sha256:", cut)
        out = tmp_path / "out"
        ociart.Client(plain_http=True).pull(f"{proxy.host}/{unique_repo}:v1", out)
        gets = proxy.find("GET", "/blobs/sha256:")
    assert (out / "big.bin").read_bytes() == big
    assert tree(out) == ["big.bin"]
    assert gets[0]["fault"] == "drop" and gets[0]["bytes_out"] == cut
    assert "range" not in gets[0]["headers"]
    resumed = [e for e in gets[1:] if "range" in e["headers"]]
    assert resumed, [(e["path"], e["headers"].get("range")) for e in gets]
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", resumed[0]["headers"]["range"])
    assert m and 0 < int(m.group(1)) <= cut, resumed[0]["headers"]["range"]
    assert resumed[0]["status"] == 206
    assert resumed[0]["bytes_out"] == len(big) - int(m.group(1))  # only the rest was sent again


@pytest.mark.parametrize(("status", "retry_after"), [(503, None), (429, "0")])
def test_transient_errors_on_manifest_get(status: int, retry_after: str | None, registry: RunningRegistry,
                                          pushed: tuple[str, str, dict[str, bytes]], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIART_RETRY_BUDGET", "20")
    ref, digest, files = pushed
    with FaultProxy(registry.url) as proxy:
        proxy.inject_status("/manifests/", status, times=2, retry_after=retry_after, method="GET")
        result = ociart.Client(plain_http=True).pull(ref.replace(registry.host, proxy.host), tmp_path / "out")
        gets = proxy.find("GET", "/manifests/")
    assert result.digest == digest
    assert [e["status"] for e in gets] == [status, status, 200]
    assert {p: (tmp_path / "out" / p).read_bytes() for p in files} == files
    assert tree(tmp_path / "out") == sorted({*files, "notes"})


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize(("status", "retry_after"), [(503, None), (429, "0")])
def test_transient_errors_on_blob_upload(status: int, retry_after: str | None, method: str,
                                         registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIART_RETRY_BUDGET", "20")
    files = {"payload.bin": pattern(700_000, f"{unique_repo}-{method}")}
    src = make_dir(tmp_path / "src", files)
    with FaultProxy(registry.url) as proxy:
        proxy.inject_status("/blobs/uploads/", status, times=2, retry_after=retry_after, method=method)
        digest = ociart.Client(plain_http=True).push(f"{proxy.host}/{unique_repo}:v1", [src]).digest
        injected = [e for e in proxy.log if e["fault"] == "status"]
    assert len(injected) == 2 and all(e["method"] == method and e["status"] == status for e in injected)
    client = ociart.Client(plain_http=True)
    assert client.resolve(f"{registry.host}/{unique_repo}:v1").digest == digest
    client.pull(f"{registry.host}/{unique_repo}:v1", tmp_path / "out")
    assert (tmp_path / "out" / "payload.bin").read_bytes() == files["payload.bin"]


def test_persistent_503_fails_within_budget(registry: RunningRegistry, pushed: tuple[str, str, dict[str, bytes]],
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIART_RETRY_BUDGET", "3")
    ref, _, _ = pushed
    with FaultProxy(registry.url) as proxy:
        proxy.inject_status("/manifests/", 503, times=10_000, method=None)
        via_proxy = ref.replace(registry.host, proxy.host)
        start = time.monotonic()
        with pytest.raises(NetworkError) as err:
            ociart.Client(plain_http=True).pull(via_proxy, tmp_path / "out")
        assert time.monotonic() - start < 10
        msg = assert_one_line(err.value)
        assert "503" in msg, msg
        assert 2 <= len(proxy.log) <= 10, len(proxy.log)  # retried, but bounded
        assert tree(tmp_path / "out") == []

        start = time.monotonic()
        proc = run_cli("pull", "--plain-http", "-o", str(tmp_path / "cli-out"), via_proxy)
        assert time.monotonic() - start < 12
        assert_cli_error(proc, 6, "503")
        assert tree(tmp_path / "cli-out") == []


# -- Authorization never crosses origins --------------------------------------------------------------
class FakeRegistry:
    """An in-memory registry on a FakeServer that requires Basic auth, plus a second server on another origin
    (a "CDN" / upload backend) that shares its storage and requires nothing."""

    def __init__(self, username: str = "alice", password: str = "pw") -> None:
        self.expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}
        self.uploads: dict[str, bytearray] = {}
        self.cdn_override: dict[str, bytes] = {}
        #: Where upload sessions live (None: on the registry itself).
        self.upload_origin: str | None = None
        #: Where blob GETs are redirected (None: served directly).
        self.blob_origin: str | None = None
        #: tags/list pages keyed by the ``last`` parameter ("" = first page): (tags, Link header or None).
        self.tag_pages: dict[str, tuple[list[str], str | None]] = {}
        self.main = FakeServer(self._handle_main)
        self.other = FakeServer(self._handle_other)

    def close(self) -> None:
        self.main.stop()
        self.other.stop()

    def add_manifest(self, data: bytes, tag: str) -> str:
        digest = sha256(data)
        self.manifests[digest] = self.manifests[tag] = (data, OCI_MANIFEST)
        return digest

    def _handle_main(self, method: str, path: str, headers: dict[str, str], body: BodyReader) -> tuple[int, Any, Any]:
        if headers.get("authorization") != self.expected:
            return 401, {"WWW-Authenticate": 'Basic realm="x"', "Content-Type": "application/json"}, \
                b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        return self._route(method, path, headers, body, self.main.url)

    def _handle_other(self, method: str, path: str, headers: dict[str, str], body: BodyReader) -> tuple[int, Any, Any]:
        p = urlsplit(path).path
        if method == "GET" and p.startswith("/cdn/"):
            digest = p.removeprefix("/cdn/")
            data = self.cdn_override.get(digest, self.blobs.get(digest))
            return (200, {"Content-Type": "application/octet-stream"}, data) if data is not None else (404, {}, b"")
        return self._route(method, path, headers, body, self.other.url)

    def _route(self, method: str, path: str, headers: dict[str, str], body: BodyReader,
               here: str) -> tuple[int, Any, Any]:
        url = urlsplit(path)
        p, query = url.path, parse_qs(url.query)
        if p == "/v2/":
            return 200, {}, b"{}"
        if (m := re.fullmatch(r"/v2/(.+)/blobs/uploads/", p)) and method == "POST":
            uid = uuid.uuid4().hex
            self.uploads[uid] = bytearray()
            return 202, {"Location": f"{self.upload_origin or here}/upload/{uid}?_state=s"}, b""
        if m := re.fullmatch(r"/upload/([0-9a-f]+)", p):
            uid = m.group(1)
            if uid not in self.uploads:
                return 404, {}, b""
            self.uploads[uid] += body.read()
            if method == "PATCH":
                return 202, {"Location": f"{here}/upload/{uid}?_state=s2",
                             "Range": f"0-{len(self.uploads[uid]) - 1}"}, b""
            if method == "PUT":
                data = bytes(self.uploads.pop(uid))
                digest = query.get("digest", [""])[0]
                if sha256(data) != digest:
                    return 400, {"Content-Type": "application/json"}, \
                        b'{"errors":[{"code":"DIGEST_INVALID","message":"digest mismatch"}]}'
                self.blobs[digest] = data
                return 201, {"Docker-Content-Digest": digest}, b""
            if method == "DELETE":
                self.uploads.pop(uid, None)
                return 204, {}, b""
        if m := re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]{64})", p):
            digest = m.group(2)
            if digest not in self.blobs:
                return 404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}'
            if method == "GET" and self.blob_origin:
                return 307, {"Location": f"{self.blob_origin}/cdn/{digest}"}, b""
            return 200, {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}, \
                self.blobs[digest]
        if m := re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", p):
            ref = m.group(2)
            if method == "PUT":
                data = body.read()
                digest = sha256(data)
                self.manifests[digest] = self.manifests[ref] = (data, headers.get("content-type", ""))
                return 201, {"Docker-Content-Digest": digest}, b""
            if ref not in self.manifests:
                return 404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'
            data, media_type = self.manifests[ref]
            return 200, {"Content-Type": media_type, "Docker-Content-Digest": sha256(data)}, data
        if (m := re.fullmatch(r"/v2/(.+)/tags/list", p)) and method == "GET":
            tags, link = self.tag_pages.get(query.get("last", [""])[0], ([], None))
            extra = {"Link": link} if link else {}
            return 200, {"Content-Type": "application/json", **extra}, \
                json.dumps({"name": m.group(1), "tags": tags}).encode()
        return 404, {}, b""


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    running = FakeRegistry()
    yield running
    running.close()
    assert not running.main.errors and not running.other.errors


def _authed(log: list[dict[str, Any]], expected: str) -> list[dict[str, Any]]:
    return [e for e in log if e["headers"].get("authorization") == expected]


def test_upload_location_on_other_origin_gets_no_authorization(fake: FakeRegistry, tmp_path: Path) -> None:
    fake.upload_origin = fake.other.url
    files = {"a.bin": pattern(300_000, "upload"), "b.txt": b"bee\n"}
    client = ociart.Client(username="alice", password="pw", plain_http=True, concurrency=1)
    digest = client.push(f"{fake.main.host}/models/x:v1", [make_dir(tmp_path / "src", files)]).digest

    assert fake.manifests["v1"][0] and sha256(fake.manifests["v1"][0]) == digest
    assert {sha256(d) for d in files.values()} <= set(fake.blobs)
    uploads_elsewhere = [e for e in fake.other.log if e["path"].startswith("/upload/")]
    assert {e["method"] for e in uploads_elsewhere} >= {"PUT"}, fake.other.log
    assert [e for e in fake.other.log if "authorization" in e["headers"]] == []
    assert _authed(fake.main.log, fake.expected)  # the registry itself did get the credentials
    assert any(e["method"] == "POST" for e in _authed(fake.main.log, fake.expected))


def test_tags_link_to_other_origin_is_not_followed_with_authorization(fake: FakeRegistry) -> None:
    client = ociart.Client(username="alice", password="pw", plain_http=True)
    # control: a same-origin Link is followed
    fake.tag_pages = {"": (["a", "b"], '</v2/models/x/tags/list?last=b&n=2>; rel="next"'), "b": (["c"], None)}
    assert client.tags(f"{fake.main.host}/models/x") == ["a", "b", "c"]

    fake.tag_pages[""] = (["a", "b"], f'<{fake.other.url}/v2/models/x/tags/list?last=b&n=2>; rel="next"')
    found = client.tags(f"{fake.main.host}/models/x")
    assert [e for e in fake.other.log if "authorization" in e["headers"]] == []
    assert fake.other.log == []  # not followed at all (pagination is same-origin only)
    assert found == ["a", "b"]
    assert _authed(fake.main.log, fake.expected)


@pytest.mark.parametrize("cdn_corrupt", [False, True])
def test_blob_redirect_to_other_origin(cdn_corrupt: bool, fake: FakeRegistry, tmp_path: Path) -> None:
    payload = pattern(500_000, "cdn")
    digest = sha256(payload)
    fake.blobs[digest] = payload
    fake.blobs[EMPTY_JSON_DIGEST] = EMPTY_JSON
    manifest = Manifest(config=Descriptor(mediaType=OCI_EMPTY, digest=EMPTY_JSON_DIGEST, size=2),
                        layers=[Descriptor(mediaType="application/octet-stream", digest=digest, size=len(payload),
                                           annotations={ANNOTATION_TITLE: "model.bin"})])
    mdigest = fake.add_manifest(manifest.to_json_bytes(), "v1")
    fake.blob_origin = fake.other.url
    if cdn_corrupt:
        fake.cdn_override[digest] = payload[:-10] + b"X" * 10
    client = ociart.Client(username="alice", password="pw", plain_http=True)
    out = tmp_path / "out"
    if cdn_corrupt:
        with pytest.raises(DigestMismatchError) as err:
            client.pull(f"{fake.main.host}/models/x:v1", out)
        msg = assert_one_line(err.value)
        assert digest in msg and "digest mismatch" in msg, msg
        assert tree(out) == []
    else:
        result = client.pull(f"{fake.main.host}/models/x:v1", out)
        assert result.digest == mdigest
        assert (out / "model.bin").read_bytes() == payload
        assert tree(out) == ["model.bin"]
    cdn = [e for e in fake.other.log if e["path"] == f"/cdn/{digest}"]
    assert cdn, fake.other.log  # the redirect was followed ...
    assert [e for e in fake.other.log if "authorization" in e["headers"]] == []  # ... without credentials
    redirected = [e for e in _authed(fake.main.log, fake.expected) if e["status"] == 307]
    assert redirected and all(e["path"].endswith(f"/blobs/{digest}") for e in redirected)


# -- oversized and malformed manifests --------------------------------------------------------------
def _manifest_server(body: bytes, *, with_length: bool = True) -> FakeServer:
    digest = sha256(body)

    def handle(method: str, path: str, headers: dict[str, str], reader: BodyReader) -> tuple[int, Any, Any]:
        if path == "/v2/":
            return 200, {}, b"{}"
        if re.fullmatch(r"/v2/models/x/manifests/(v1|sha256:[0-9a-f]{64})", path):
            if path.endswith("sha256:") and not path.endswith(digest):
                return 404, {}, b""
            hdrs = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest}
            if with_length:
                return 200, hdrs, body
            return 200, hdrs, (body[i:i + 65536] for i in range(0, len(body), 65536))
        return 404, {}, b""

    return FakeServer(handle)


@pytest.mark.parametrize("with_length", [True, False])
def test_oversized_manifest(with_length: bool, tmp_path: Path) -> None:
    pad = "x" * (5 * 1024 * 1024)
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2},
                       "layers": [], "annotations": {"pad": pad}}).encode()
    assert len(body) > 5 * 1024 * 1024
    with _manifest_server(body, with_length=with_length) as server:
        client = ociart.Client(plain_http=True)
        for call in (lambda: client.pull(f"{server.host}/models/x:v1", tmp_path / "out"),
                     lambda: client.inspect(f"{server.host}/models/x:v1")):
            with pytest.raises(InvalidContentError) as err:
                call()
            msg = assert_one_line(err.value)
            assert str(MANIFEST_LIMIT) in msg, msg
        assert tree(tmp_path / "out") == []
        proc = run_cli("pull", "--plain-http", "-o", str(tmp_path / "cli-out"), f"{server.host}/models/x:v1")
        assert_cli_error(proc, 5, str(MANIFEST_LIMIT))
        assert tree(tmp_path / "cli-out") == []
        assert not server.errors


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
def test_oversized_token_response(with_length: bool) -> None:
    """A token service answering more than 4 MiB is refused before the body is buffered whole."""
    body = json.dumps({"token": "t" * (5 * 1024 * 1024)}).encode()

    def token_handle(method, path, headers, reader):  # type: ignore[no-untyped-def]
        reader.drain()
        hdrs = {"Content-Type": "application/json"}
        if with_length:
            hdrs["Content-Length"] = str(len(body))
        return 200, hdrs, (body[i:i + 65536] for i in range(0, len(body), 65536))

    with FakeServer(token_handle) as tokens:
        def registry_handle(method, path, headers, reader):  # type: ignore[no-untyped-def]
            reader.drain()
            challenge = f'Bearer realm="{tokens.url}/token",service="fake"'
            return 401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"}, b'{"errors":[]}'

        with FakeServer(registry_handle) as server:
            client = ociart.Client(plain_http=True)
            with pytest.raises(InvalidContentError) as err:
                client.resolve(f"{server.host}/models/x:v1")
            msg = assert_one_line(err.value)
            assert "token response" in msg and str(MANIFEST_LIMIT) in msg, msg
            assert len(tokens.log) == 1


@pytest.mark.parametrize(("body", "needle"), [
    (b"this is { not json", "not json"),
    (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode(), "config"),
], ids=["not-json", "no-config"])
def test_malformed_manifest(body: bytes, needle: str, tmp_path: Path) -> None:
    with _manifest_server(body) as server:
        client = ociart.Client(plain_http=True)
        with pytest.raises(InvalidContentError) as err:
            client.pull(f"{server.host}/models/x:v1", tmp_path / "out")
        msg = assert_one_line(err.value)
        assert "malformed manifest" in msg and needle in msg.lower(), msg
        assert tree(tmp_path / "out") == []
        proc = run_cli("inspect", "--plain-http", f"{server.host}/models/x:v1")
        assert_cli_error(proc, 5, "malformed manifest", needle)


# -- unsafe titles ----------------------------------------------------------------------------------
@pytest.mark.parametrize("title", ["../evil", "/etc/passwd", "a/../../b"])
def test_unsafe_title(title: str, registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    client = ociart.Client(plain_http=True)
    ref = client.ref(f"{registry.host}/{unique_repo}:v1")
    target = client.target(ref)
    # The evil layer carries /etc/passwd's own bytes: a regression that writes through the absolute title finds an
    # identical file (no damage) and fails the test by not raising.
    evil_bytes = Path("/etc/passwd").read_bytes() if title == "/etc/passwd" else b"evil payload\n"
    staging = make_dir(tmp_path / "blobs", {"ok.txt": b"innocent\n", "evil": evil_bytes})
    ok = target.push_blob_file(ref.repository, staging / "ok.txt", None)
    evil = target.push_blob_file(ref.repository, staging / "evil", None)
    config = Descriptor(mediaType=OCI_EMPTY, digest=EMPTY_JSON_DIGEST, size=2)
    target.push_blob_stream(ref.repository, config, lambda: bytes_opener(EMPTY_JSON))
    manifest = Manifest(artifactType="application/vnd.test.unsafe", config=config, layers=[
        Descriptor(mediaType=ok.mediaType, digest=ok.digest, size=ok.size, annotations={ANNOTATION_TITLE: "ok.txt"}),
        Descriptor(mediaType=evil.mediaType, digest=evil.digest, size=evil.size,
                   annotations={ANNOTATION_TITLE: title}),
    ])
    target.put_manifest(ref.repository, Content.from_model(manifest), "v1")
    assert client.resolve(str(ref)).digest == Content.from_model(manifest).digest

    sandbox = tmp_path / "sandbox"
    out = sandbox / "a" / "out"
    out.mkdir(parents=True)
    before = tree(sandbox)
    passwd_before = Path("/etc/passwd").read_bytes()
    with pytest.raises(UnsafePathError) as err:
        client.pull(str(ref), out)
    msg = assert_one_line(err.value)
    assert title in msg and "unsafe" in msg, msg
    assert tree(sandbox) == before == ["a", "a/out"]
    assert Path("/etc/passwd").read_bytes() == passwd_before

    proc = run_cli("pull", "--plain-http", "-o", str(out), str(ref))
    assert_cli_error(proc, 5, "unsafe", title)
    assert tree(sandbox) == before


# -- existing files ---------------------------------------------------------------------------------
def test_pull_onto_existing_different_file(pushed: tuple[str, str, dict[str, bytes]], tmp_path: Path) -> None:
    ref, _, files = pushed
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    mine = b"my own notes, do not lose\n"
    (out / "notes" / "readme.txt").write_bytes(mine)
    client = ociart.Client(plain_http=True)

    with pytest.raises(OverwriteError) as err:
        client.pull(ref, out)
    msg = assert_one_line(err.value)
    assert "readme.txt" in msg and "overwrite" in msg, msg
    assert (out / "notes" / "readme.txt").read_bytes() == mine
    assert tree(out) == ["notes", "notes/readme.txt"]  # nothing else written, no staging left behind

    proc = run_cli("pull", "--plain-http", "-o", str(out), ref)
    assert_cli_error(proc, 2, "readme.txt", "--overwrite")
    assert (out / "notes" / "readme.txt").read_bytes() == mine
    assert tree(out) == ["notes", "notes/readme.txt"]

    result = client.pull(ref, out, overwrite=True)
    assert {f.path for f in result.files} == set(files)
    assert {p: (out / p).read_bytes() for p in files} == files
    assert tree(out) == ["model.bin", "notes", "notes/readme.txt"]


def test_manifest_put_rides_out_a_torn_blob_link(fake_registry: Any, tmp_path: Path) -> None:
    """distribution answers DIGEST_INVALID + MANIFEST_BLOB_UNKNOWN while another upload of the same blob rewrites its
    link file (seen in CI: a checkpoint upload beside the final push); the manifest PUT is asked again."""
    (tmp_path / "w.bin").write_bytes(b"weights")
    fake_registry.torn_link_puts = 2
    pushed = ociart.Client().push(f"{fake_registry.host}/models/a:v1", [tmp_path / "w.bin"])
    assert len(fake_registry.requests("PUT", "/manifests/v1")) == 3
    assert fake_registry.repos["models/a"].tags["v1"] == pushed.digest


def test_manifest_put_with_a_blob_really_missing_still_fails(fake_registry: Any) -> None:
    from ociart.oci import Content
    from ociart.targets.registry import RegistryTarget

    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                           "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
                "layers": []}
    content = Content.of(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    target = RegistryTarget(fake_registry.host, plain_http=True)
    with pytest.raises(ociart.errors.RegistryError, match="MANIFEST_BLOB_UNKNOWN"):
        target.put_manifest("models/b", content, "v1")
    assert 1 < len(fake_registry.requests("PUT", "/manifests/v1")) <= 6


# -- the exit-code table ----------------------------------------------------------------------------
def _documented_codes(text: str, row: str) -> dict[str, set[int]]:
    """Class name -> exit codes, from the markdown rows of one table (``row`` matches a row: codes, classes)."""
    out: dict[str, set[int]] = {}
    for m in re.finditer(row, text, re.MULTILINE):
        codes = {int(c) for c in re.findall(r"\d+", m.group(1))}
        for name in re.findall(r"\b([A-Z][A-Za-z]+)\b", m.group(2)):
            if isinstance(getattr(ociart.errors, name, None), type):
                out.setdefault(name, set()).update(codes)
    return out


def test_exit_code_table_matches_the_error_classes() -> None:
    """The one exit-code table (README "Exit codes", which docs/ cite) and its copy in ``ociart/errors.py``'s
    docstring agree with the codes the classes carry: every error class is listed, or inherits the code of the
    nearest listed class; ``Interrupted`` is 130 for SIGINT and 143 for SIGTERM."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    tables = {
        "README.md": _documented_codes(section, r"^\| ([\d /]+) \| ([^|]+) \|"),
        "ociart/errors.py": _documented_codes(ociart.errors.__doc__ or "", r"^\| (\d+) +\| (\w+) +\|"),
    }
    assert "../README.md#exit-codes" in (root / "docs" / "transport.md").read_text(encoding="utf-8")
    classes = [c for c in vars(ociart.errors).values()
               if isinstance(c, type) and issubclass(c, ociart.errors.OciartError)]
    assert len(classes) >= 15
    for where, table in tables.items():
        assert table["Interrupted"] >= {130}, (where, table)
        for cls in classes:
            listed = next(c for c in cls.__mro__ if c.__name__ in table)  # OciartError itself is always listed
            assert cls.exit_code in table[listed.__name__], (where, cls.__name__, listed.__name__, cls.exit_code)
    assert tables["README.md"]["Interrupted"] == {130, 143}
    assert ociart.errors.Interrupted(2).exit_code == 130 and ociart.errors.Interrupted(15).exit_code == 143
