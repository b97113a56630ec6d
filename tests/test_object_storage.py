"""Against distribution 2.8.2 on S3 (``moto_server``, redirects on): blob GETs answer 307 to a presigned URL on the
object store's origin, the same shape as ECR, GAR, ACR or Harbor on S3.

The core round trip and the resume tests also run against this registry (``any_registry`` in test_core.py and
test_resume.py); here: credentials (Basic and Bearer) never reach the S3 origin, presigned URLs never reach a log
or an error message, and what 2.8.2's s3 driver cannot do (store an empty blob) fails with one clear line.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from helpers import run_cli, write_random
from support.registry import RunningRegistry

import ociart
from ociart.errors import NetworkError

MiB = 1 << 20


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _client_creds(headers: dict[str, str]) -> bool:
    """True when a request to the S3 origin carries a registry credential (Basic or Bearer)."""
    auth = headers.get("authorization", "")
    return auth.lower().startswith(("basic", "bearer"))


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_credentials_never_reach_the_object_store(auth: str, registry_factory, unique_repo: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    registry: RunningRegistry = registry_factory(auth=auth, s3=True)
    assert registry.s3 is not None
    src = tmp_path / "src"
    write_random(src / "weights.bin", 6 * MiB + 5, seed=12)
    monkeypatch.setenv("OCIART_REGISTRY_HOST", registry.host)
    monkeypatch.setenv("OCIART_REGISTRY_USERNAME", "alice")
    monkeypatch.setenv("OCIART_REGISTRY_PASSWORD", "s3cret")
    ref = f"{registry.host}/{unique_repo}:v1"
    registry.s3.proxy.log.clear()
    with ociart.Client(plain_http=True) as c:
        c.push(ref, [src])
        c.pull(ref, tmp_path / "out")
    assert _sha256(tmp_path / "out" / "weights.bin") == _sha256(src / "weights.bin")
    presigned = [e for e in registry.s3.client_requests() if e["method"] == "GET"]
    assert presigned and all(e["status"] == 200 for e in presigned)  # the blob came from S3, after a 307
    # the registry's own S3 requests carry its AWS signature; no request carries the user's credentials
    assert [e for e in registry.s3.proxy.log if _client_creds(e["headers"])] == []
    assert all("authorization" not in e["headers"] for e in presigned)


def test_presigned_urls_are_never_logged(s3_registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert s3_registry.s3 is not None
    src = tmp_path / "src"
    write_random(src / "weights.bin", 3 * MiB, seed=13)
    ref = f"{s3_registry.host}/{unique_repo}:v1"
    with caplog.at_level(logging.DEBUG):  # every logger, httpx's request lines included
        with ociart.Client(plain_http=True) as c:
            c.push(ref, [src])
            c.pull(ref, tmp_path / "out")
    assert s3_registry.s3.client_requests()  # a presigned URL was used ...
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"/{s3_registry.s3.bucket}/" in logged  # ... and httpx logged the request to it ...
    assert "x-amz-signature" not in logged.lower() and "x-amz-credential" not in logged.lower()  # ... without
    assert "_state=" not in logged  # the query (nor the upload URLs' state)

    # a failure on the object store's side: the error names the request, not its signature
    monkeypatch.setenv("OCIART_RETRY_BUDGET", "0")
    proxy = s3_registry.s3.proxy
    proxy.drop_after("/data?X-Amz-", MiB)
    try:
        with pytest.raises(NetworkError) as err:
            ociart.Client(plain_http=True).pull(ref, tmp_path / "out2")
        proxy.drop_after("/data?X-Amz-", MiB)
        cli = run_cli("pull", "--plain-http", "-o", str(tmp_path / "out3"), ref, env={"OCIART_RETRY_BUDGET": "0"})
    finally:
        proxy.clear()
    assert "x-amz-" not in str(err.value).lower()
    assert cli.returncode != 0 and cli.stderr.strip() and "x-amz-" not in (cli.stdout + cli.stderr).lower()
    assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    assert "Traceback" not in cli.stderr


def test_empty_blob_is_refused_by_the_s3_driver_with_one_line(s3_registry: RunningRegistry, unique_repo: str,
                                                              tmp_path: Path) -> None:
    """distribution 2.8.2's s3 driver completes a multipart upload with no parts, which S3 refuses (MalformedXML):
    it cannot store a zero-byte blob (fixed in distribution 3). ociart reports the registry's 500 in one line."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "empty.txt").write_bytes(b"")
    cli = run_cli("push", "--plain-http", f"{s3_registry.host}/{unique_repo}:v1", str(src),
                  env={"OCIART_RETRY_BUDGET": "0"})
    assert cli.returncode != 0
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and "HTTP 500" in lines[0] and "Traceback" not in cli.stderr, cli.stderr
