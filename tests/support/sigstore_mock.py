"""A local Sigstore instance (Fulcio + CT log + Rekor v1 from npm ``@sigstore/mock``) for offline keyless tests.

``tests/support/node/sigstore-mock-server.js`` serves the mock on 127.0.0.1; this module starts it, writes a
``trusted_root.json`` and a ``ClientTrustConfig`` for it, and makes unsigned OIDC identity tokens (the mock Fulcio,
like sigstore-python, does not check the JWT signature). See shared/reference/signing.md §8.

Requires ``node`` and ``npm ci --prefix tests/support/node``.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .procs import stop_process

NODE_DIR = Path(__file__).resolve().parent / "node"
SERVER_JS = NODE_DIR / "sigstore-mock-server.js"
MOCK_PACKAGE = NODE_DIR / "node_modules" / "@sigstore" / "mock"
START_TIMEOUT = 20.0

TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
SIGNING_CONFIG_MEDIA_TYPE = "application/vnd.dev.sigstore.signingconfig.v0.2+json"
TRUST_CONFIG_MEDIA_TYPE = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"

#: Default identity of tokens made by :func:`make_identity_token` (``sub`` == ``email``: the mock Fulcio puts ``sub``
#: into the certificate SAN, sigstore-python reports ``sub`` for issuers it does not know).
DEFAULT_IDENTITY = "alice@example.com"
DEFAULT_ISSUER = "https://issuer.ociart.test"


class MockUnavailable(RuntimeError):
    """``node`` or the npm packages are missing."""


def node_binary() -> str:
    """Path of ``node``, or :class:`MockUnavailable` with the fix."""
    node = shutil.which("node")
    if node is None:
        raise MockUnavailable("node is not installed (needed for the @sigstore/mock keyless tests): install "
                              "Node.js >= 20 and run `npm ci --prefix tests/support/node`")
    if not (MOCK_PACKAGE / "package.json").is_file():
        raise MockUnavailable(f"{MOCK_PACKAGE} is missing: run `npm ci --prefix tests/support/node`")
    return node


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def make_identity_token(identity: str = DEFAULT_IDENTITY, issuer: str = DEFAULT_ISSUER, *,
                        email: str | None = None, lifetime: int = 600, **claims: Any) -> str:
    """An **unsigned** JWT (``alg: none``) with ``iss``, ``sub`` = ``identity``, ``email`` (default = identity),
    ``aud`` = ``sigstore``, ``iat``, ``nbf``, ``exp``; extra ``claims`` are added as given."""
    now = int(time.time())
    body: dict[str, Any] = {"iss": issuer, "sub": identity, "email": email if email is not None else identity,
                            "aud": "sigstore", "iat": now, "nbf": now - 5, "exp": now + lifetime} | claims

    def seg(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()

    return f"{seg({'alg': 'none', 'typ': 'JWT'})}.{seg(body)}."


@dataclass
class SigstoreMock:
    """A running mock: ``url``, the paths of ``trust_config`` (ClientTrustConfig) and ``trusted_root`` files it wrote,
    the default ``identity`` and ``issuer`` of :meth:`token`, the raw server ``info`` and its ``rekor_time_skew``."""

    url: str
    trust_config: Path
    trusted_root: Path
    info: dict[str, Any]
    identity: str = DEFAULT_IDENTITY
    issuer: str = DEFAULT_ISSUER
    rekor_time_skew: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def token(self, identity: str | None = None, issuer: str | None = None, **claims: Any) -> str:
        """A fresh unsigned identity token (defaults: this mock's ``identity`` and ``issuer``)."""
        return make_identity_token(identity or self.identity, issuer or self.issuer, **claims)

    def stop(self) -> None:
        """Terminate the server (kill after 5 s). Idempotent."""
        proc, self.process = self.process, None
        if proc is None:
            return
        stop_process(proc)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def trusted_root_document(info: dict[str, Any], start: datetime | None = None) -> dict[str, Any]:
    """The ``trusted_root.json`` for a mock described by its startup ``info`` line."""
    valid_from = (start or datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
        "tlogs": [{
            "baseUrl": info["url"],
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": info["rekor_key_der"], "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                          "validFor": {"start": valid_from}},
            "logId": {"keyId": info["rekor_log_id"]},
        }],
        "certificateAuthorities": [{
            "subject": info["fulcio_subject"],
            "uri": info["url"],
            "certChain": {"certificates": [{"rawBytes": info["fulcio_root_der"]}]},
            "validFor": {"start": valid_from},
        }],
        "ctlogs": [{
            "baseUrl": info["url"],
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": info["ctlog_key_der"], "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                          "validFor": {"start": valid_from}},
            "logId": {"keyId": info["ctlog_log_id"]},
        }],
        "timestampAuthorities": [],
    }


def signing_config_document(url: str, start: datetime | None = None) -> dict[str, Any]:
    """Signing config v0.2: the mock as Fulcio and Rekor v1; no OIDC provider, no TSA (the mock TSA speaks JSON)."""
    valid_from = (start or datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    service = {"url": url, "majorApiVersion": 1, "validFor": {"start": valid_from}, "operator": "sigstore.mock"}
    return {
        "mediaType": SIGNING_CONFIG_MEDIA_TYPE,
        "caUrls": [service],
        "oidcUrls": [],
        "rekorTlogUrls": [service],
        "tsaUrls": [],
        "rekorTlogConfig": {"selector": "ANY"},
        "tsaConfig": {"selector": "ANY"},
    }


def write_trust_files(info: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write ``trusted_root.json`` and ``trust_config.json`` (ClientTrustConfig) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    root = trusted_root_document(info)
    config = {"mediaType": TRUST_CONFIG_MEDIA_TYPE, "trustedRoot": root,
              "signingConfig": signing_config_document(info["url"])}
    root_path = directory / "trusted_root.json"
    config_path = directory / "trust_config.json"
    root_path.write_text(json.dumps(root, indent=2) + "\n")
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return config_path, root_path


def _read_info_line(proc: subprocess.Popen[bytes], deadline: float) -> dict[str, Any]:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"sigstore mock server did not start within {START_TIMEOUT} s")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
        elif proc.poll() is not None:
            break
    if b"\n" not in buf:
        raise RuntimeError(f"sigstore mock server exited (status {proc.poll()}) before printing its address")
    info: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
    return info


def start_sigstore_mock(directory: Path, *, rekor_time_skew: int = 0, identity: str = DEFAULT_IDENTITY,
                        issuer: str = DEFAULT_ISSUER) -> SigstoreMock:
    """Start the mock server and write its trust files into ``directory`` (unique per call).

    ``rekor_time_skew`` (seconds) shifts Rekor's integratedTime, e.g. ``7200`` logs entries two hours after the
    10-minute certificate expired.
    """
    node = node_binary()
    directory = directory / f"sigstore-mock-{uuid.uuid4().hex[:8]}"
    directory.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGSTORE_MOCK_")}
    env["NODE_NO_WARNINGS"] = "1"
    stderr_path = directory / "server.stderr"
    # stdin is a pipe: the server exits when it closes, so it cannot outlive the test process.
    with stderr_path.open("wb") as stderr_file:
        proc = subprocess.Popen([node, str(SERVER_JS), f"--rekor-time-skew={int(rekor_time_skew)}"],
                                cwd=NODE_DIR, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr_file)
    try:
        info = _read_info_line(proc, time.monotonic() + START_TIMEOUT)
    except BaseException as exc:
        proc.kill()
        proc.wait(timeout=5)
        err = stderr_path.read_text(errors="replace").strip()[-2000:]
        raise RuntimeError(f"could not start the sigstore mock server: {exc}; stderr: {err}") from exc
    config_path, root_path = write_trust_files(info, directory)
    return SigstoreMock(url=info["url"], trust_config=config_path, trusted_root=root_path, info=info,
                        identity=identity, issuer=issuer, rekor_time_skew=int(rekor_time_skew), process=proc)
