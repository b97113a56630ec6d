"""Self-tests of the test infrastructure (registries, token server, fault proxy, fake server) with plain httpx."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from support.fakeserver import FakeServer
from support.faultproxy import FaultProxy
from support.registry import PASSWORD, USERNAME, RunningRegistry

MANIFEST_ACCEPT = ("application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
                   "application/vnd.docker.distribution.manifest.v2+json")


def push_blob(client: httpx.Client, base: str, repo: str, data: bytes, headers: dict[str, str] | None = None,
              chunked: bool = False) -> str:
    """Monolithic (or one streamed PATCH when ``chunked``) blob upload; returns the digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = client.post(f"{base}/v2/{repo}/blobs/uploads/", headers=headers)
    assert start.status_code == 202, start.text
    location = httpx.URL(base).join(start.headers["location"])
    if chunked:
        patch = client.patch(location, content=iter([data[:70_000], data[70_000:]]), headers=headers)
        assert patch.status_code == 202, patch.text
        location = httpx.URL(base).join(patch.headers["location"])
        done = client.put(location.copy_add_param("digest", digest), headers=headers)
    else:
        # NB: httpx 0.28 ``params=`` *replaces* the query, which would drop the registry's ``_state``.
        done = client.put(location.copy_add_param("digest", digest), content=data,
                          headers={**(headers or {}), "Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text
    return digest


def get_token(registry: RunningRegistry, *scopes: str, auth: tuple[str, str] | None = None) -> httpx.Response:
    assert registry.token_server is not None
    return httpx.get(registry.token_server.url, params=[("service", "test-registry")] +
                     [("scope", s) for s in scopes], auth=auth)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def proxy(registry: RunningRegistry) -> Iterator[FaultProxy]:
    with FaultProxy(registry.url) as running:
        yield running


def test_anonymous_registry(registry: RunningRegistry, unique_repo: str) -> None:
    resp = httpx.get(f"{registry.url}/v2/")
    assert resp.status_code == 200
    assert resp.headers["docker-distribution-api-version"] == "registry/2.0"
    with httpx.Client() as client:
        digest = push_blob(client, registry.url, unique_repo, b"hello")
    assert registry.blob_data_path(digest).read_bytes() == b"hello"
    assert "response completed" in registry.log_text()


def test_isolated_env(isolated_env: object) -> None:
    assert os.environ["DOCKER_CONFIG"] and not os.listdir(os.environ["DOCKER_CONFIG"])
    assert not os.path.exists(os.environ["REGISTRY_AUTH_FILE"])
    assert "OCIART_REGISTRY" not in os.environ


def test_htpasswd_registry(htpasswd_registry: RunningRegistry) -> None:
    url = f"{htpasswd_registry.url}/v2/"
    denied = httpx.get(url)
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"].startswith("Basic ")
    assert httpx.get(url, auth=(USERNAME, "wrong")).status_code == 401
    assert httpx.get(url, auth=(USERNAME, PASSWORD)).status_code == 200
    assert htpasswd_registry.basic_auth == (USERNAME, PASSWORD)


def test_tls_registry(tls_registry: RunningRegistry) -> None:
    assert tls_registry.url.startswith("https://127.0.0.1:") and tls_registry.ca_file is not None
    assert httpx.get(f"{tls_registry.url}/v2/", verify=tls_registry.verify).status_code == 200
    assert httpx.get(f"https://localhost:{tls_registry.host.split(':')[1]}/v2/",
                     verify=tls_registry.verify).status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_registry.url}/v2/")


def test_token_registry_anonymous_pull(token_registry: RunningRegistry, unique_repo: str) -> None:
    ts = token_registry.token_server
    assert ts is not None
    challenge = httpx.get(f"{token_registry.url}/v2/{unique_repo}/manifests/latest")
    assert challenge.status_code == 401
    assert f'realm="{ts.url}"' in challenge.headers["www-authenticate"]

    resp = get_token(token_registry, f"repository:{unique_repo}:pull")
    assert resp.status_code == 200
    body = resp.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300 and body["issued_at"].endswith("Z")
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "RS256" and len(header["x5c"]) == 1
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["aud"] == "test-registry" and claims["iss"] == "test-token-issuer"
    assert claims["access"] == [{"type": "repository", "name": unique_repo, "actions": ["pull"]}]

    manifest = httpx.get(f"{token_registry.url}/v2/{unique_repo}/manifests/latest",
                         headers={**bearer(body["token"]), "Accept": MANIFEST_ACCEPT})
    assert manifest.status_code == 404
    assert manifest.json()["errors"][0]["code"] in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")
    assert ts.requests[-1]["authorized_user"] is None
    assert ts.requests[-1]["scopes"] == [f"repository:{unique_repo}:pull"]


def test_token_registry_push(token_registry: RunningRegistry, unique_repo: str) -> None:
    ts = token_registry.token_server
    assert ts is not None
    # Anonymous push scope request: only pull is granted, and the registry refuses the upload.
    anon = get_token(token_registry, f"repository:{unique_repo}:pull,push").json()["token"]
    refused = httpx.post(f"{token_registry.url}/v2/{unique_repo}/blobs/uploads/", headers=bearer(anon))
    assert refused.status_code == 401
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    # Wrong credentials at the token endpoint.
    assert get_token(token_registry, f"repository:{unique_repo}:pull", auth=(USERNAME, "nope")).status_code == 401
    # Two scope parameters, one of them space-separated, with Basic credentials.
    resp = get_token(token_registry, f"repository:{unique_repo}:pull,push",
                     "repository:other/repo:pull repository:other/repo:delete", auth=(USERNAME, PASSWORD))
    assert resp.status_code == 200
    record = ts.requests[-1]
    assert record["authorized_user"] == USERNAME
    assert record["scopes"] == [f"repository:{unique_repo}:pull,push", "repository:other/repo:pull",
                                "repository:other/repo:delete"]
    assert record["granted"] == [{"type": "repository", "name": unique_repo, "actions": ["pull", "push"]},
                                 {"type": "repository", "name": "other/repo", "actions": ["pull", "delete"]}]
    with httpx.Client() as client:
        digest = push_blob(client, token_registry.url, unique_repo, b"token blob", headers=bearer(resp.json()["token"]))
    assert token_registry.blob_data_path(digest).read_bytes() == b"token blob"


def test_token_expiry_and_oauth2(registry_factory, unique_repo: str) -> None:  # type: ignore[no-untyped-def]
    reg = registry_factory(auth="token", token_expires_in=1)
    ts = reg.token_server
    token = get_token(reg, f"repository:{unique_repo}:pull").json()["token"]
    url = f"{reg.url}/v2/{unique_repo}/tags/list"
    assert httpx.get(url, headers=bearer(token)).status_code == 404
    time.sleep(2.1)
    expired = httpx.get(url, headers=bearer(token))
    assert expired.status_code == 401 and 'error="invalid_token"' in expired.headers["www-authenticate"]

    form = {"grant_type": "password", "username": USERNAME, "password": PASSWORD, "client_id": "ociart-tests",
            "service": "test-registry", "scope": f"repository:{unique_repo}:pull", "access_type": "offline"}
    oauth = httpx.post(ts.url, data=form)
    assert oauth.status_code == 200 and "refresh_token" in oauth.json()
    refreshed = httpx.post(ts.url, data={"grant_type": "refresh_token", "client_id": "ociart-tests",
                                         "refresh_token": oauth.json()["refresh_token"], "service": "test-registry",
                                         "scope": f"repository:{unique_repo}:pull,push"})
    assert refreshed.status_code == 200
    assert ts.requests[-1]["authorized_user"] == USERNAME and ts.requests[-1]["method"] == "POST"
    assert httpx.get(url, headers=bearer(refreshed.json()["access_token"])).status_code == 404


def test_proxy_inject_status(proxy: FaultProxy) -> None:
    proxy.inject_status("/v2/", 503, times=1, retry_after="1")
    with httpx.Client() as client:
        first = client.get(f"{proxy.url}/v2/")
        assert first.status_code == 503 and first.headers["retry-after"] == "1"
        assert first.json()["errors"][0]["code"] == "UNKNOWN"
        second = client.get(f"{proxy.url}/v2/")
    assert second.status_code == 200
    assert second.headers["docker-distribution-api-version"] == "registry/2.0"
    assert [(e["status"], e["fault"]) for e in proxy.log] == [(503, "status"), (200, None)]


def test_proxy_streams_chunked_upload(proxy: FaultProxy, registry: RunningRegistry, unique_repo: str) -> None:
    data = os.urandom(300_000)
    with httpx.Client() as client:
        digest = push_blob(client, proxy.url, unique_repo, data, chunked=True)
        head = client.head(f"{proxy.url}/v2/{unique_repo}/blobs/{digest}")
    assert head.status_code == 200 and head.headers["docker-content-digest"] == digest
    assert head.headers["content-length"] == str(len(data))
    post, patch = proxy.find("POST")[0], proxy.find("PATCH")[0]
    assert post["status"] == 202 and patch["headers"]["transfer-encoding"] == "chunked"
    assert patch["bytes_in"] == len(data) and patch["status"] == 202
    assert registry.blob_data_path(digest).read_bytes() == data


def test_proxy_drop_and_range(proxy: FaultProxy, unique_repo: str) -> None:
    data = os.urandom(200_000)
    with httpx.Client() as client:
        digest = push_blob(client, proxy.url, unique_repo, data)
        blob_url = f"{proxy.url}/v2/{unique_repo}/blobs/{digest}"
        proxy.drop_after(digest, 1000)
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            with client.stream("GET", blob_url) as resp:
                assert resp.status_code == 200 and resp.headers["content-length"] == str(len(data))
                for piece in resp.iter_raw():
                    received += piece
        assert bytes(received) == data[:1000]
        ranged = client.get(blob_url, headers={"Range": f"bytes={len(received)}-"})
        assert ranged.status_code == 206
        assert ranged.headers["content-range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
        assert ranged.headers["content-length"] == str(len(data) - 1000)
        assert bytes(received) + ranged.content == data
    dropped = proxy.find("GET", digest)
    assert dropped[0]["fault"] == "drop" and dropped[0]["bytes_out"] == 1000
    assert dropped[1]["headers"]["range"] == "bytes=1000-" and dropped[1]["status"] == 206


def test_proxy_counts_limits_and_drops_request_headers(proxy: FaultProxy, unique_repo: str) -> None:
    data = os.urandom(300_000)
    with httpx.Client() as client:
        digest = push_blob(client, proxy.url, unique_repo, data)
        blob_url = f"{proxy.url}/v2/{unique_repo}/blobs/{digest}"
        proxy.reset_counts()
        half = proxy.when_sent(digest, len(data) // 2)
        assert not half.is_set()
        proxy.limit_rate(1 << 20, digest)
        seen_at_half: list[int] = []
        with client.stream("GET", blob_url) as resp:
            received = bytearray()
            for piece in resp.iter_raw():
                received += piece
                if half.is_set() and not seen_at_half:
                    seen_at_half.append(len(received))
        assert bytes(received) == data and seen_at_half
        assert proxy.sent(digest) == len(data) and proxy.sent("/no/such/path") == 0
        proxy.drop_request_header("range", digest)
        ignored = client.get(blob_url, headers={"Range": "bytes=1000-"})
        assert ignored.status_code == 200 and ignored.content == data  # upstream never saw the Range
        proxy.clear()
        ranged = client.get(blob_url, headers={"Range": "bytes=1000-"})
        assert ranged.status_code == 206 and ranged.content == data[1000:]
    assert proxy.sent(digest) == 3 * len(data) - 1000


def test_fake_server_streams() -> None:
    def handler(method, path, headers, body):  # type: ignore[no-untyped-def]
        if path.startswith("/big"):
            return 200, [("Content-Type", "application/json")], (b"x" * 65536 for _ in range(80))
        return 307, {"Location": "http://other.invalid/elsewhere"}, b""

    with FakeServer(handler) as fake:
        big = httpx.get(f"{fake.url}/big")
        assert big.status_code == 200 and len(big.content) == 5 * 1024 * 1024
        assert big.headers["transfer-encoding"] == "chunked"
        moved = httpx.post(f"{fake.url}/redir", content=b"body", headers={"X-Test": "1"})
        assert moved.status_code == 307 and moved.headers["location"] == "http://other.invalid/elsewhere"
    assert [(e["method"], e["path"], e["status"]) for e in fake.log] == [("GET", "/big", 200),
                                                                         ("POST", "/redir", 307)]
    assert fake.log[1]["headers"]["x-test"] == "1" and not fake.errors
