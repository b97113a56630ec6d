"""A local S3 server (``moto_server`` from PyPI ``moto[server]``) for distribution 2.8.2's ``s3`` storage driver.

:func:`start_s3` starts ``moto_server`` on a free loopback port with its temp files in a directory of the test,
creates a bucket with boto3 and puts a :class:`~support.faultproxy.FaultProxy` in front of it: the registry is
configured with the *proxy's* URL as ``regionendpoint``, so every request that reaches the S3 origin — the
registry's own (signed with its AWS keys) and the clients' after a 307 redirect (presigned URLs) — is in
``S3Server.proxy.log``, and faults can be injected on the object-store side of a redirect.
(See shared/reference/peers.md §7: ``forcepathstyle``, ``secure: false``, ``v4auth``, redirects on.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .faultproxy import FaultProxy
from .procs import stop_process

ACCESS_KEY = "ociart-test-access"
SECRET_KEY = "ociart-test-secret-key"
REGION = "us-east-1"
BUCKET = "ociart-registry"
START_TIMEOUT = 30.0


class S3Unavailable(RuntimeError):
    """moto_server (or boto3) is not installed."""


@dataclass
class S3Server:
    """A running ``moto_server``, its bucket, and the fault proxy in front of it."""

    url: str  #: the moto server itself
    proxy: FaultProxy  #: what the registry (and, after a redirect, the client) talks to
    bucket: str
    workdir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """The S3 endpoint the registry is configured with (the proxy)."""
        return self.proxy.url

    def storage_config(self, rootdirectory: str) -> dict[str, Any]:
        """The ``storage`` section of a distribution config: this bucket under ``rootdirectory``, redirects on."""
        return {
            "s3": {"accesskey": ACCESS_KEY, "secretkey": SECRET_KEY, "region": REGION,
                   "regionendpoint": self.endpoint, "bucket": self.bucket, "forcepathstyle": True,
                   "secure": False, "v4auth": True, "chunksize": 5 << 20, "rootdirectory": rootdirectory},
            "redirect": {"disable": False},
        }

    def client_requests(self) -> list[dict[str, Any]]:
        """Proxy log entries of requests that came from clients following a redirect (presigned: the signature is
        in the query, not in an ``Authorization`` header)."""
        return [e for e in self.proxy.log if "x-amz-signature=" in e["path"].lower()]

    def stop(self) -> None:
        proc, self.process = self.process, None
        self.proxy.stop()
        stop_process(proc)


def moto_binary() -> str:
    found = shutil.which("moto_server") or shutil.which("moto_server", path=os.path.dirname(sys.executable))
    if found is None:
        raise S3Unavailable("moto_server is not installed: pip install 'moto[server]' boto3 (the test extras)")
    return found


def start_s3(workdir: Path) -> S3Server:
    """Start ``moto_server`` (temp files under ``workdir``), create :data:`BUCKET`, put a proxy in front."""
    from .registry import free_port  # late: registry.py imports this module's users, not the other way round

    try:
        import boto3
    except ImportError as exc:
        raise S3Unavailable("boto3 is not installed: pip install 'moto[server]' boto3 (the test extras)") from exc
    binary = moto_binary()
    workdir = Path(workdir)
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["TMPDIR"] = str(tmp)  # moto spools object bodies over 1 MiB to temp files
    log = workdir / "moto.log"
    for _attempt in range(5):
        port = free_port()
        with open(log, "wb") as out:
            proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        ready = False
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    client.get(f"{url}/moto-api/")
                    ready = True
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
        if ready:
            break
        proc.kill()
        proc.wait()
    else:
        raise RuntimeError(f"moto_server did not start; log:\n{log.read_text(errors='replace')}")
    s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                      region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    return S3Server(url=url, proxy=FaultProxy(url, timeout=300), bucket=BUCKET, workdir=workdir, process=proc)
