"""Start real CNCF distribution 2.8.2 registries (Debian ``docker-registry``) and a Docker token server for tests.

Everything listens on 127.0.0.1 on ports picked at run time. See shared/reference/registry-protocol.md §12, §14.
"""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import fnmatch
import ipaddress
import json
import math
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import bcrypt
import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .fakeserver import BodyReader, FakeServer, HeaderItems
from .procs import stop_process
from .s3 import S3Server

USERNAME = "alice"
PASSWORD = "s3cret"
SERVICE = "test-registry"
ISSUER = "test-token-issuer"
HTTP_SECRET = "ociart-fixed-test-secret"
START_TIMEOUT = 10.0
#: distribution 2.8.2 accepts JWTs up to 60 s after ``exp`` (and 60 s before ``nbf``).
REGISTRY_LEEWAY = 60

AuthMode = Literal[None, "htpasswd", "token"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def registry_binary() -> str:
    """Path of the ``docker-registry`` executable; ``FileNotFoundError`` with a hint if it is not installed."""
    found = shutil.which("docker-registry") or ("/usr/bin/docker-registry"
                                                 if os.access("/usr/bin/docker-registry", os.X_OK) else None)
    if found is None:
        raise FileNotFoundError("docker-registry (CNCF distribution 2.8.2) is not installed: "
                                "apt-get install docker-registry")
    return found


# --------------------------------------------------------------------------------------------------- certificates

def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(subject: str, public_key: Any, issuer: str, issuer_key: Any, *, ca: bool,
          sans: list[x509.GeneralName] | None = None, issuer_public_key: Any = None) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer_public_key or public_key), critical=False))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class TestCA:
    """Paths written by :func:`make_test_ca`."""

    __test__ = False  # not a pytest test class

    dir: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path

    def ssl_context(self) -> ssl.SSLContext:
        """Client context that trusts only this CA (pass as httpx ``verify=``)."""
        return ssl.create_default_context(cafile=str(self.ca_cert))


def make_test_ca(dir: str | os.PathLike[str]) -> TestCA:  # noqa: A002 - name from the brief
    """Create a CA and a server certificate for ``127.0.0.1``/``localhost``: ``ca.pem``, ``server.pem``,
    ``server.key`` in ``dir``."""
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("ociart test CA", ca_key.public_key(), "ociart test CA", ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    server = _cert("127.0.0.1", key.public_key(), "ociart test CA", ca_key, ca=False, sans=sans,
                   issuer_public_key=ca_key.public_key())
    paths = TestCA(out, out / "ca.pem", out / "server.pem", out / "server.key")
    paths.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths.server_key.write_bytes(_pem_key(key))
    paths.server_key.chmod(0o600)
    return paths


# --------------------------------------------------------------------------------------------------- token server

def _rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_scopes(values: list[str]) -> list[str]:
    """Flatten repeated ``scope`` parameters, each of which may hold several space-separated scopes."""
    return [scope for value in values for scope in value.split()]


class TokenServer:
    """Docker token endpoint (``GET /token``, OAuth2 ``POST /token``) issuing RS256 JWTs for the test registry.

    Policy: ``anonymous_actions`` (default ``{"pull"}``) for everyone, ``user_actions`` for a user authenticated with
    Basic ``alice:s3cret`` (see ``users``); wrong credentials → 401. Every request is appended to ``.requests``:
    ``method``, ``path``, ``scopes``, ``service``, ``account``, ``authorized_user``, ``granted`` (the JWT ``access``
    claim), ``status``, ``time``. ``.url`` is the realm (``http://127.0.0.1:<port>/token``); ``.cert_path`` the
    PEM certificate the registry trusts (``rootcertbundle``).

    The JWT ``exp`` claim is ``ceil(now) + expires_in - REGISTRY_LEEWAY``: the registry adds a 60 s leeway, so it
    rejects a token 1-2 s after ``expires_in`` has elapsed, never before (``exp`` may thus lie before ``iat``).
    """

    def __init__(self, workdir: Path, *, expires_in: int = 300, service: str = SERVICE, issuer: str = ISSUER,
                 users: dict[str, str] | None = None) -> None:
        self.expires_in = expires_in
        self.service = service
        self.issuer = issuer
        self.users = dict(users or {USERNAME: PASSWORD})
        self.anonymous_actions: set[str] = {"pull"}
        self.user_actions: set[str] = {"pull", "push", "delete", "*"}
        #: Per-repository grants by user (``None``: anonymous): ``[(repository glob, actions), ...]``, first match
        #: wins; a user listed here gets only these (scoped JWTs as Harbor robot accounts or ECR policies issue).
        self.grants: dict[str | None, list[tuple[str, set[str]]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.refresh_tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _cert("ociart test token signer", self._key.public_key(), "ociart test token signer", self._key,
                     ca=True)
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path = workdir / "token-signer.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._server = FakeServer(self._handle)
        self.base_url = self._server.url
        self.url = f"{self.base_url}/token"

    def stop(self) -> None:
        """Shut the token server down."""
        self._server.stop()

    def issue_refresh_token(self, user: str = USERNAME) -> str:
        """Create a refresh token (an identity token as stored in Docker's ``config.json``) for ``user``."""
        token = uuid.uuid4().hex
        with self._lock:
            self.refresh_tokens[token] = user
        return token

    def make_token(self, user: str | None, scopes: list[str], *, expires_in: int | None = None,
                   now: float | None = None) -> tuple[str, list[dict[str, Any]]]:
        """Sign a JWT granting what the policy allows ``user`` (``None`` = anonymous) for ``scopes``."""
        allowed = self.user_actions if user else self.anonymous_actions
        access: dict[tuple[str, str], list[str]] = {}
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = access.setdefault((kind, name), [])
            scoped = allowed
            if user in self.grants:
                scoped = next((acts for glob, acts in self.grants[user] if fnmatch.fnmatchcase(name, glob)), set())
            granted += [a for a in actions.split(",") if a in scoped and a not in granted]
        claims_access = [{"type": k, "name": n, "actions": a} for (k, n), a in access.items()]
        now = time.time() if now is None else now
        ttl = self.expires_in if expires_in is None else expires_in
        # Rounded up: the registry never rejects a token before ``expires_in`` has elapsed.
        exp = math.ceil(now) + ttl - REGISTRY_LEEWAY
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": exp, "nbf": int(now) - 1,
                  "iat": int(now), "jti": uuid.uuid4().hex, "access": claims_access}
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"typ": "JWT", "x5c": [self._x5c]})
        return token, claims_access

    def _handle(self, method: str, path: str, headers: dict[str, str],
                body: BodyReader) -> tuple[int, HeaderItems, bytes]:
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        if method == "POST":
            query = {**query, **parse_qs(body.read().decode())}
        record: dict[str, Any] = {
            "method": method, "path": path, "scopes": parse_scopes(query.get("scope", [])),
            "service": query.get("service", [None])[0], "account": query.get("account", [None])[0],
            "authorized_user": None, "granted": [], "status": None, "time": time.time()}
        with self._lock:
            self.requests.append(record)
        status, payload = self._respond(method, parts.path, query, headers, record)
        record["status"] = status
        extra = [("WWW-Authenticate", 'Basic realm="test-token"')] if status == 401 else []
        return status, [("Content-Type", "application/json"), *extra], json.dumps(payload).encode()

    def _respond(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
                 record: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        def one(name: str) -> str | None:
            return query.get(name, [None])[0]

        if path != "/token" or method not in ("GET", "POST"):
            return 404, {"errors": [{"code": "NOT_FOUND", "message": f"no route {method} {path}"}]}
        if record["service"] not in (None, self.service):
            return 400, {"errors": [{"code": "UNSUPPORTED", "message": f"unknown service {record['service']!r}"}]}
        user: str | None = None
        auth = headers.get("authorization")
        if auth:
            scheme, _, cred = auth.partition(" ")
            try:
                name, _, password = base64.b64decode(cred.strip(), validate=True).decode().partition(":")
            except ValueError:
                name, password = "", None
            if scheme.lower() != "basic" or self.users.get(name) != password:
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid credentials"}]}
            user = name
        refresh: str | None = None
        if method == "POST":
            grant = one("grant_type")
            if not one("client_id"):
                return 400, {"error": "invalid_request", "error_description": "client_id is required"}
            if grant == "password":
                if self.users.get(one("username") or "") != one("password"):
                    return 401, {"error": "invalid_grant", "error_description": "invalid credentials"}
                user = one("username")
                if one("access_type") == "offline":
                    refresh = self.issue_refresh_token(user or "")
            elif grant == "refresh_token":
                with self._lock:
                    user = self.refresh_tokens.get(one("refresh_token") or "")
                if user is None:
                    return 401, {"error": "invalid_grant", "error_description": "unknown refresh token"}
                refresh = one("refresh_token")
            else:
                return 400, {"error": "unsupported_grant_type"}
        elif one("offline_token") == "true" and user:
            refresh = self.issue_refresh_token(user)
        record["authorized_user"] = user
        now = time.time()
        token, record["granted"] = self.make_token(user, record["scopes"], now=now)
        payload: dict[str, Any] = {"token": token, "access_token": token, "expires_in": self.expires_in,
                                   "issued_at": _rfc3339(now)}
        if method == "POST":
            del payload["token"]
            payload["scope"] = " ".join(record["scopes"])
        if refresh:
            payload["refresh_token"] = refresh
        return 200, payload


# --------------------------------------------------------------------------------------------------- registry

@dataclass
class RunningRegistry:
    """A ``docker-registry serve`` process started by :func:`start_registry`."""

    host: str
    url: str
    root: Path
    config_path: Path
    log_path: Path
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None
    token_server: TokenServer | None = None
    #: TLS only: a directory holding just ``ca.crt`` (for ``skopeo --cert-dir`` / containers ``certs.d``).
    cert_dir: Path | None = None
    #: The S3 server holding the blobs when started with ``s3=`` (blob GETs answer 307 to it), else None.
    s3: S3Server | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """httpx ``verify=`` value that trusts this registry."""
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        """``(username, password)`` when the registry (or its token server) knows a user, else ``None``."""
        return (self.username, self.password) if self.username and self.password else None

    def blob_data_path(self, digest: str) -> Path:
        """Filesystem path where the registry stores the bytes of blob ``digest`` (``sha256:<hex>``)."""
        algorithm, _, hexdigest = digest.partition(":")
        return self.root / "docker/registry/v2/blobs" / algorithm / hexdigest[:2] / hexdigest / "data"

    def log_text(self) -> str:
        """Everything the registry process has logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def storage_bytes(self) -> int:
        """Bytes of every file under the registry's storage directory."""
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def garbage_collect(self, *, delete_untagged: bool = False) -> subprocess.CompletedProcess[str]:
        """distribution's own blob GC, as its documentation says to run it: stop the registry, run
        ``docker-registry garbage-collect CONFIG`` on its storage, start it again on the same port and storage.
        Raises when the collection fails or the registry does not come back."""
        token_server, self.token_server = self.token_server, None
        self.stop()  # (keeps the token server: it is not part of the registry process)
        self.token_server = token_server
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        args = [registry_binary(), "garbage-collect", *(["--delete-untagged"] if delete_untagged else []),
                str(self.config_path)]
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"garbage-collect failed ({done.returncode}): {done.stderr[-2000:]}")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([registry_binary(), "serve", str(self.config_path)],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            cwd=self.config_path.parent)
        if not _wait_ready(self.process, self.url, self.verify, time.monotonic() + START_TIMEOUT):
            raise RuntimeError(f"docker-registry did not come back after garbage-collect; log:\n{self.log_text()}")
        return done

    def stop(self) -> None:
        """Terminate the registry (kill after 5 s) and stop its token server. Idempotent."""
        proc, self.process = self.process, None
        stop_process(proc)
        if self.token_server is not None:
            self.token_server.stop()


def _wait_ready(proc: subprocess.Popen[bytes], url: str, verify: ssl.SSLContext | bool, deadline: float) -> bool:
    """Poll ``GET /v2/`` until it answers 200/401 (True) or the process exits (False)."""
    with httpx.Client(verify=verify, timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                if client.get(f"{url}/v2/").status_code in (200, 401):
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    return False


def start_registry(workdir: Path, *, auth: AuthMode = None, tls: bool = False,
                   token_expires_in: int = 300, delete: bool = True,
                   proxy_remoteurl: str | None = None, s3: S3Server | None = None) -> RunningRegistry:
    """Configure and start distribution 2.8.2 with filesystem storage under ``workdir/storage``, or with the ``s3``
    driver on the bucket of ``s3`` (a :func:`support.s3.start_s3` server; redirects on: blob GETs answer 307 to a
    presigned URL on the S3 origin).

    ``auth="htpasswd"``: Basic ``alice``/``s3cret``. ``auth="token"``: a :class:`TokenServer` (anonymous pull,
    push/delete for alice) whose tokens last ``token_expires_in`` seconds. ``tls=True``: HTTPS with a test CA
    (``ca_file``). ``delete=False``: ``storage.delete.enabled: false`` (DELETE answers 405). Waits until
    ``/v2/`` answers; retries on another port if the chosen one was taken. ``proxy_remoteurl``: a pull-through
    cache (a mirror) of the registry at that URL (``proxy.remoteurl``).
    """
    binary = registry_binary()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "storage"
    root.mkdir(exist_ok=True)
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": delete},
                    "maintenance": {"uploadpurging": {"enabled": False}}},
        "http": {"addr": "", "secret": HTTP_SECRET, "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    if proxy_remoteurl is not None:
        config["proxy"] = {"remoteurl": proxy_remoteurl}
    ca_file = cert_dir = None
    if s3 is not None:
        config["storage"] = {**s3.storage_config(f"/{workdir.name}-{uuid.uuid4().hex[:8]}"),
                             "delete": config["storage"]["delete"], "maintenance": config["storage"]["maintenance"]}
    if tls:
        ca = make_test_ca(workdir / "tls")
        ca_file = ca.ca_cert
        cert_dir = workdir / "certs.d"  # skopeo treats any *.key beside the CA as a client key
        cert_dir.mkdir(exist_ok=True)
        shutil.copyfile(ca_file, cert_dir / "ca.crt")
        config["http"]["tls"] = {"certificate": str(ca.server_cert), "key": str(ca.server_key)}
    token_server = None
    username = password = None
    if auth == "htpasswd":
        htpasswd = workdir / "htpasswd"
        # Cost 4 (the minimum) keeps the registry's per-request bcrypt check cheap.
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        htpasswd.write_text(f"{USERNAME}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": "basic-realm", "path": str(htpasswd)}}
        username, password = USERNAME, PASSWORD
    elif auth == "token":
        token_server = TokenServer(workdir / "token", expires_in=token_expires_in)
        config["auth"] = {"token": {"realm": token_server.url, "service": SERVICE, "issuer": ISSUER,
                                    "rootcertbundle": str(token_server.cert_path)}}
        username, password = USERNAME, PASSWORD
    elif auth is not None:
        raise ValueError(f"unknown auth mode {auth!r}")

    config_path = workdir / "config.yml"
    log_path = workdir / "registry.log"
    # REGISTRY_* variables override the config file (REGISTRY_AUTH_FILE would even add an auth block): drop them.
    # AWS_* too: with AWS_CA_BUNDLE set, 2.8.2's s3 driver panics at start (LoadCustomCABundleError), and the
    # user's own AWS credentials or profile must not reach the test bucket's driver.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "AWS_"))}
    scheme = "https" if tls else "http"
    try:
        for _attempt in range(5):
            port = free_port()
            config["http"]["addr"] = f"127.0.0.1:{port}"
            config_path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is valid YAML
            with open(log_path, "wb") as log:
                proc = subprocess.Popen([binary, "serve", str(config_path)], stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
            registry = RunningRegistry(host=f"127.0.0.1:{port}", url=f"{scheme}://127.0.0.1:{port}", root=root,
                                       config_path=config_path, log_path=log_path, ca_file=ca_file,
                                       username=username, password=password, token_server=token_server,
                                       cert_dir=cert_dir, s3=s3, process=proc)
            if _wait_ready(proc, registry.url, registry.verify, time.monotonic() + START_TIMEOUT):
                atexit.register(registry.stop)
                return registry
            registry.token_server = None  # keep the token server for the next attempt
            registry.stop()
            if "address already in use" not in registry.log_text():
                break
        raise RuntimeError(f"docker-registry did not start within {START_TIMEOUT:.0f} s; "
                           f"config {config_path}; log:\n{registry.log_text()}")
    except BaseException:
        if token_server is not None:
            token_server.stop()
        raise
