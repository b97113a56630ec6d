"""OCI distribution-spec v1.1.1 over httpx: blobs, manifests, tags, deletion, with auth, retries and TLS.

Exact behaviours (see ``docs/transport.md``):

* Blob push: HEAD-skip when the digest is known; cross-repository mount; per-host upload strategy —
  ``stream`` (one streamed PATCH hashing each piece as it is sent, then ``PUT ?digest=``; probed on first
  use, remembered per host), ``monolithic`` (hash pre-pass, streamed ``PUT`` with Content-Length) and
  ``chunked`` (PATCH with Content-Range, honouring ``OCI-Chunk-Min-Length`` and host limits).
* Blob pull: the body is hashed and written into a partial file as it arrives (kernel writeback started every
  64 MiB); a dropped connection resumes with ``Range``, and so does a later process when the partial lives in an
  :class:`~ociart.targets.ingest.Ingest`; size and digest are verified before the rename. Blobs of 64 MiB or more
  come in parallel ranged GETs (:mod:`~ociart.targets.ranged`, adaptive 2..``max_streams`` streams) into the same
  partial, straight or after a redirect to object storage.
* Manifests: exact bytes in and out, 4 MiB cap, digest verified, the full ``Accept`` list.
* Auth: Basic and Bearer, tokens per (host, service, scopes); Authorization only to the registry origin.
* Retries: connection errors, 408, 429, 5xx, exponential backoff with full jitter and ``Retry-After``,
  within a time budget.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from ..errors import (
    AuthError,
    ConflictError,
    DigestMismatchError,
    InvalidContentError,
    NetworkError,
    NotFoundError,
    OciartError,
    RegistryError,
    UnreachableError,
    UnsupportedError,
    UsageError,
)
from .. import cancel, limits
from ..fsutil import verify
from ..oci import MANIFEST_ACCEPT, OCI_INDEX, Content, Descriptor, Index
from ..oci.digest import Digester
from ..oci.models import detect_media_type, parse_manifest_content
from ..reference import canonical_host, is_digest
from .auth import Challenge, Credentials, TokenCache, lookup_credentials, merge_scopes, missing_scopes, parse_challenge
from .base import ABSENT, Expect, Opener, ProgressFn, Target, file_opener
from .ingest import Ingest, Partial, temporary
from .ranged import (DEFAULT_MAX_STREAMS, PARALLEL_MIN_BYTES, RangedStats, RangesUnsupported,
                     ShortBody, fetch_ranges)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
READ_CHUNK = 1 << 20
#: Blobs this large are uploaded in chunks even without ``--chunk-size`` (Quay refuses single PUTs over ~20 GB).
CHUNKED_MIN_BYTES = 4 << 30
#: Chunk size when none is asked for.
DEFAULT_CHUNK_BYTES = 64 << 20

#: Upload strategy and PATCH limits by host suffix (registry-protocol.md §13).
HOST_QUIRKS: list[tuple[re.Pattern[str], dict[str, Any]]] = [
    (re.compile(r"(^|\.)ghcr\.io\Z"), {"strategy": "monolithic", "chunk_max": 4 << 20}),
    (re.compile(r"\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?\Z"), {"strategy": "monolithic", "chunk_min": 5 << 20}),
    (re.compile(r"(-docker\.pkg\.dev|(^|\.)gcr\.io)\Z"), {"strategy": "monolithic"}),
]


_URL_QUERY = re.compile(r"(https?://[^\s?'\"<>]+)\?[^\s'\"<>]*")
_SECRET_PARAM = re.compile(r"(?i)\b(_state|sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token"
                           r"|x-goog-signature|x-goog-credential)=[^&\s'\"<>]*")


class _RedactQueries(logging.Filter):
    """httpx logs every request's URL at INFO and httpcore every response header at DEBUG. A redirect to object
    storage carries a presigned URL whose query is a credential (``X-Amz-Signature``, ``sig=``, ...), and upload
    URLs carry the registry's ``_state``: log records of both lose URL queries and those parameters."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_PARAM.sub(r"\1=<redacted>", _URL_QUERY.sub(r"\1?<redacted>", message))
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


for _name in ("httpx", "httpcore.connection", "httpcore.connection_pool", "httpcore.http11", "httpcore.http2",
              "httpcore.proxy", "httpcore.socks"):
    logging.getLogger(_name).addFilter(_RedactQueries())


def _is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address, however spelled (``LOCALHOST``, ``127.1``, ``[::ffff:127.0.0.1]``)."""
    canonical = canonical_host(host)
    name = canonical[1 : canonical.index("]")] if canonical.startswith("[") else canonical.rsplit(":", 1)[0]
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _cause_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _is_cert_error(exc: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e)
               for e in _cause_chain(exc))


def _unreachable(exc: BaseException, host: str | None) -> UnreachableError | None:
    """A failure that retrying cannot fix (the name does not resolve, the connection is refused), or None."""
    for e in _cause_chain(exc):
        if isinstance(e, socket.gaierror):
            return UnreachableError(f"cannot reach {host}: the host name does not resolve ({_short(e)})")
        if isinstance(e, ConnectionRefusedError):
            return UnreachableError(f"cannot reach {host}: connection refused")
    return None


def _is_tls_protocol_error(exc: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLError) or "SSL" in type(e).__name__ or "WRONG_VERSION" in str(e)
               or "record layer" in str(e) for e in _cause_chain(exc))


def _oci_errors(resp: httpx.Response) -> tuple[tuple[str, ...], str]:
    codes: list[str] = []
    messages: list[str] = []
    try:
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else None
    except (ValueError, httpx.ResponseNotRead):
        body = None
    if isinstance(body, dict):
        for err in body.get("errors") or []:
            if isinstance(err, dict):
                codes.append(str(err.get("code", "")))
                if err.get("message"):
                    messages.append(str(err["message"]))
    return tuple(codes), "; ".join(messages)


def _retry_after(resp: httpx.Response | None) -> float | None:
    if resp is None:
        return None
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


#: How long a manifest PUT answered MANIFEST_BLOB_UNKNOWN is retried (see ``_store_manifest``).
BLOB_UNKNOWN_RETRY_SECONDS = 3.0


class _Retry:
    """Exponential backoff with full jitter, bounded by a total time budget."""

    def __init__(self, budget: float, base: float = 0.25, cap: float = 8.0, max_attempts: int = 8) -> None:
        self.deadline = time.monotonic() + budget
        self.base, self.cap, self.max_attempts = base, cap, max_attempts
        self.attempt = 0

    def wait(self, resp: httpx.Response | None = None) -> bool:
        """Sleep before the next attempt; False when attempts or time ran out."""
        self.attempt += 1
        if self.attempt >= self.max_attempts:
            return False
        delay = _retry_after(resp)
        if delay is None:
            delay = random.uniform(0, min(self.cap, self.base * (2 ** self.attempt)))
        if time.monotonic() + delay > self.deadline:
            return False
        time.sleep(delay)
        return True


class RegistryTarget(Target):
    """One registry host. Thread-safe: layers transfer in parallel through one client."""

    def __init__(
        self,
        host: str,
        *,
        credentials: Credentials | None = None,
        plain_http: bool = False,
        insecure: bool = False,
        ca_file: str | Path | None = None,
        retry_budget: float | None = None,
        upload_strategy: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        max_streams: int | None = None,
        chunk_size: int | None = None,
    ) -> None:
        self.host = host
        self.name = host
        self._explicit_credentials = credentials
        self._credentials: Credentials | None | bool = credentials if credentials else False  # False = not looked up
        self._plain_http = plain_http
        self._retry_budget = retry_budget if retry_budget is not None else float(os.environ.get("OCIART_RETRY_BUDGET", 60))
        verify_arg: Any = True
        if insecure:
            verify_arg = False
        elif ca_file:
            ctx = ssl.create_default_context()
            ctx.load_verify_locations(cafile=str(ca_file))
            verify_arg = ctx
        self._insecure = insecure
        self._client = httpx.Client(
            verify=verify_arg,
            timeout=httpx.Timeout(timeout, connect=15.0),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            headers={"User-Agent": "ociart/0.1"},
            transport=transport,  # injected (tests, proxies, custom TLS); None: httpx's own, with verify and limits
        )
        self._scheme: str | None = "http" if plain_http else None
        self._lock = threading.Lock()
        self._challenge: Challenge | None = None
        self._tokens = TokenCache()
        self._token_lock = threading.Lock()  # one token request per scope set, not one per thread
        quirks: dict[str, Any] = {}
        for pattern, q in HOST_QUIRKS:
            if pattern.search(host.split(":")[0]):
                quirks = dict(q)
        self._quirks = quirks
        self._strategy: str | None = upload_strategy or os.environ.get("OCIART_UPLOAD_STRATEGY") or quirks.get("strategy")
        forced = os.environ.get("OCIART_REFERRERS")  # "api" or "tag" forces the referrers mode
        self._referrers_mode: str | None = forced if forced in ("api", "tag") else None
        #: Bytes of blob content sent (for tests and the benchmark: a re-push must send 0).
        self.bytes_uploaded = 0
        #: Concurrent ranged GETs for one blob of at least ``PARALLEL_MIN_BYTES`` (1: one sequential stream).
        env_streams = os.environ.get("OCIART_MAX_STREAMS", "")
        self.max_streams = max(1, max_streams if max_streams is not None else
                               int(env_streams) if env_streams.isdigit() else DEFAULT_MAX_STREAMS)
        #: What the last parallel ranged download did (tests, benchmark); None when none ran.
        self.last_ranged: RangedStats | None = None
        #: ``--chunk-size``: upload every blob of known size in resumable chunks of this many bytes.
        self.chunk_size = chunk_size
        env_chunk = os.environ.get("OCIART_CHUNK_SIZE", "")  # the size of chunks when chunking is chosen otherwise
        self._default_chunk = int(env_chunk) if env_chunk.isdigit() and int(env_chunk) > 0 else DEFAULT_CHUNK_BYTES

    # -- connection basics -------------------------------------------------------------------------
    @property
    def origin(self) -> str:
        if self._scheme is None:
            with self._lock:
                if self._scheme is None:
                    self._scheme = self._probe_scheme()
        return f"{self._scheme}://{self.host}"

    def _probe_scheme(self) -> str:
        if not _is_loopback(self.host):
            return "https"
        try:
            with self._client.stream("GET", f"https://{self.host}/v2/", timeout=10):
                pass  # the body is never read
            return "https"
        except httpx.TransportError as exc:
            if _is_cert_error(exc):
                raise NetworkError(
                    f"TLS certificate of {self.host} is not trusted ({_short(exc)}); use --ca-file or --insecure"
                ) from None
            if _is_tls_protocol_error(exc) or isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
                return "http"
            raise _unreachable(exc, self.host) or NetworkError(f"cannot connect to {self.host}: {_short(exc)}") from None

    def _same_origin(self, url: httpx.URL) -> bool:
        o = httpx.URL(self.origin)
        return url.scheme == o.scheme and url.host == o.host and url.port == o.port

    def _creds(self) -> Credentials | None:
        if self._credentials is False:
            with self._lock:  # parallel transfers must not each run the credential helper
                if self._credentials is False:
                    self._credentials = lookup_credentials(self.host)
        return self._credentials if isinstance(self._credentials, Credentials) else None

    def close(self) -> None:
        self._client.close()

    def same_store(self, other: Target) -> bool:
        return isinstance(other, RegistryTarget) and other.host == self.host

    # -- auth --------------------------------------------------------------------------------------
    def _auth_header(self, scopes: tuple[str, ...], force_refresh: bool = False) -> str | None:
        ch = self._challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            creds = self._creds()
            if creds is None or creds.username is None:
                return None
            return creds.basic_header()
        if ch.scheme == "bearer":
            service = ch.params.get("service", "")
            key = TokenCache.key(self.host, service, scopes)
            if force_refresh:
                self._tokens.clear(key)
            token = self._tokens.get(key)
            if token is None:
                with self._token_lock:
                    token = self._tokens.get(key)  # another thread may have fetched it meanwhile
                    if token is None:
                        token, expires = self._fetch_token(ch, scopes)
                        self._tokens.put(key, token, expires)
            return f"Bearer {token}"
        return None

    def _fetch_token(self, ch: Challenge, scopes: tuple[str, ...]) -> tuple[str, float]:
        realm = ch.params.get("realm")
        if not realm:
            raise AuthError(f"{self.host} asked for a bearer token without naming a token realm")
        creds = self._creds()
        if creds is not None and not self._may_send_credentials(realm):
            raise AuthError(f"{self.host}: refusing to send credentials to token realm {realm}: not HTTPS "
                            "(credentials go over plain HTTP only to a plain-HTTP loopback registry or with "
                            "--plain-http)")
        service = ch.params.get("service")
        try:
            if creds and creds.identity_token:
                data = {"grant_type": "refresh_token", "refresh_token": creds.identity_token, "client_id": "ociart",
                        "scope": " ".join(scopes)}
                if service:
                    data["service"] = service
                req = self._client.build_request("POST", realm, data=data)
            else:
                params: list[tuple[str, str | int | float | bool | None]] = [("service", service)] if service else []
                params += [("scope", s) for s in scopes]
                headers = {"Authorization": creds.basic_header()} if creds and creds.username else {}
                req = self._client.build_request("GET", realm, params=params, headers=headers)
            resp = self._client.send(req, stream=True)
            try:
                body_bytes = _read_capped(resp, limits.TOKEN_BYTES, f"{self.host}: token response")
            finally:
                resp.close()
        except httpx.TransportError as exc:
            raise NetworkError(f"token request to {realm} failed: {_short(exc)}") from None
        if resp.status_code in (401, 403):
            who = f"user {creds.username!r}" if creds and creds.username else "anonymous access"
            if creds and creds.identity_token:
                raise AuthError(f"{self.host}: token service refused the identity token from {creds.source} "
                                f"(expired or revoked? run `ociart login {self.host}`)")
            raise AuthError(f"{self.host}: token service refused {who} (wrong username or password?)")
        if resp.status_code != 200:
            raise AuthError(f"{self.host}: token service answered HTTP {resp.status_code}")
        try:
            body = json.loads(body_bytes)
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token, body = None, {}
        if not token:
            raise AuthError(f"{self.host}: token service answered without a token")
        try:
            expires = float(body.get("expires_in") or 60)
        except (TypeError, ValueError):
            expires = 60.0
        return str(token), expires

    def _may_send_credentials(self, realm: str) -> bool:
        """Credentials go to a token realm only over HTTPS, unless this registry is itself plain HTTP on loopback or
        ``plain_http`` was asked for (then the user chose clear text)."""
        try:
            scheme = httpx.URL(realm).scheme
        except (httpx.InvalidURL, ValueError):
            return False
        if scheme == "https":
            return True
        return scheme == "http" and (self._plain_http or (self.origin.startswith("http:") and _is_loopback(self.host)))

    # -- requests ----------------------------------------------------------------------------------
    def _url(self, path: str) -> httpx.URL:
        return httpx.URL(self.origin + path)

    def request(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None = None,
        body: bytes | Iterable[bytes] | Callable[[], Iterable[bytes]] | None = None,
        stream: bool = False,
        retry: bool = True,
        follow: bool = True,
        max_body: int = limits.SMALL_BODY_BYTES,
    ) -> httpx.Response:
        """Send one request with auth, redirects (auth stripped cross-origin) and retries.

        ``body`` is bytes, a factory of fresh iterators (re-sent on retry), or a one-shot iterator (with
        ``retry=False``). Returns the response (open when ``stream``; the caller closes it). Error statuses are
        returned, not raised. Without ``stream`` the body is read here: at most ``max_body`` bytes of a success
        (more is an error naming the cap), at most :data:`limits.ERROR_BODY_BYTES` of an error (the rest unread).
        """
        target = url if isinstance(url, httpx.URL) else (self._url(url) if url.startswith("/") else httpx.URL(url))
        scopes = merge_scopes(scopes)
        retrier = _Retry(self._retry_budget if retry else 0)
        auth_rounds = 0
        refresh = refreshed = False
        while True:
            req_url = target
            redirects = 0
            sent_auth = False
            try:
                while True:
                    h = dict(headers or {})
                    if self._same_origin(req_url):
                        auth = self._auth_header(scopes, refresh)
                        refresh = False
                        if auth:
                            h["Authorization"] = auth
                            sent_auth = True
                    content = body() if callable(body) else body
                    req = self._client.build_request(method, req_url, headers=h, content=content)
                    resp = self._client.send(req, stream=True)
                    if follow and resp.status_code in (301, 302, 303, 307, 308) and "location" in resp.headers \
                            and redirects < 5:
                        resp.close()
                        req_url = req_url.join(resp.headers["location"])
                        redirects += 1
                        continue
                    break
            except httpx.TransportError as exc:
                if _is_cert_error(exc):
                    raise NetworkError(f"TLS certificate of {req_url.host} is not trusted ({_short(exc)})") from None
                if (unreachable := _unreachable(exc, req_url.netloc.decode())) is not None:
                    raise unreachable from None
                if retry and retrier.wait():
                    continue
                raise NetworkError(f"{method} {req_url.copy_with(query=None)} failed: {_short(exc)}") from None
            status = resp.status_code
            if status == 401 and self._same_origin(req_url):
                _read_error_body(resp)
                ch = parse_challenge(resp.headers.get("www-authenticate", ""))
                auth_rounds += 1
                if ch is None or ch.scheme not in ("basic", "bearer") or auth_rounds > 4:
                    raise self._auth_failure(ch, scopes)
                self._challenge = ch
                if ch.scheme == "basic":
                    if sent_auth or self._creds() is None:
                        raise self._auth_failure(ch, scopes)
                    continue
                wanted = merge_scopes(scopes, ch.scopes)
                if wanted != scopes:  # scope upgrade (e.g. pull -> pull,push, or a mount source)
                    scopes = wanted
                    continue
                if not sent_auth:
                    continue
                if not refreshed:  # the token may have expired early: fetch a fresh one once
                    refresh = refreshed = True
                    continue
                raise self._auth_failure(ch, scopes)
            if status in RETRY_STATUS and retry:
                _read_error_body(resp)
                if retrier.wait(resp):
                    continue
                if status == 429:
                    raise NetworkError(f"{self.host}: too many requests (HTTP 429), gave up after retries")
            if not stream:
                if method == "HEAD":
                    resp.close()  # no body; Content-Length describes the resource
                elif status >= 400:
                    _read_error_body(resp)
                else:
                    try:
                        _read_capped(resp, max_body, f"{self.host}: {method} {req_url.path}", keep=True)
                    finally:
                        resp.close()
            return resp

    def _auth_failure(self, ch: Challenge | None, scopes: tuple[str, ...]) -> AuthError:
        creds = self._creds()
        if ch is not None and ch.params.get("error") == "insufficient_scope":
            hint = f"; run `ociart login {self.host}` to authenticate" if creds is None else ""
            who = f" for user {creds.username!r}" if creds is not None and creds.username else ""
            token = self._tokens.get(TokenCache.key(self.host, ch.params.get("service", ""), scopes))
            missing = missing_scopes(merge_scopes(scopes, ch.scopes), token)
            if missing:
                return AuthError(f"{self.host}: access denied{who}: missing scope {' '.join(missing)}{hint}")
            return AuthError(f"{self.host}: access denied{who}: insufficient scope for {' '.join(scopes)}{hint}")
        if creds is None:
            return AuthError(f"{self.host}: authentication required: run `ociart login {self.host}` "
                             "or set OCIART_REGISTRY_USERNAME and OCIART_REGISTRY_PASSWORD")
        return AuthError(f"{self.host}: authentication failed for user {creds.username!r} "
                         f"(credentials from {creds.source}): wrong username or password, or no access")

    def _raise_for(self, resp: httpx.Response, what: str) -> None:
        status = resp.status_code
        if status < 400:
            return
        if not resp.is_closed:
            _read_error_body(resp)
        codes, message = _oci_errors(resp)
        detail = f"{what}: {message or httpx.codes.get_reason_phrase(status) or 'error'} (HTTP {status}"
        detail += f", {', '.join(codes)})" if codes else ")"
        if status == 404 or {"MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN"} & set(codes):
            raise NotFoundError(f"{self.host}: {what}: not found")
        if status in (401, 403) or {"UNAUTHORIZED", "DENIED"} & set(codes):
            raise AuthError(f"{self.host}: {detail}")
        if "DIGEST_INVALID" in codes or "SIZE_INVALID" in codes:
            raise DigestMismatchError(f"{self.host}: {detail}")
        if "MANIFEST_INVALID" in codes:
            raise InvalidContentError(f"{self.host}: {detail}")
        if status == 405 or "UNSUPPORTED" in codes:
            raise UnsupportedError(f"{self.host}: {detail}", status, codes)
        if status >= 500 or status == 429:
            raise NetworkError(f"{self.host}: {detail}")
        raise RegistryError(f"{self.host}: {detail}", status, codes)

    def check_login(self) -> None:
        """Authenticate against ``/v2/`` (and the token service): AuthError when refused."""
        resp = self.request("GET", "/v2/", scopes=())
        self._raise_for(resp, "login")

    # -- scopes -----------------------------------------------------------------------------------
    @staticmethod
    def _pull(repo: str) -> tuple[str, ...]:
        return (f"repository:{repo}:pull",)

    @staticmethod
    def _push(repo: str) -> tuple[str, ...]:
        return (f"repository:{repo}:pull,push",)

    @staticmethod
    def _delete(repo: str) -> tuple[str, ...]:
        return (f"repository:{repo}:delete",)

    # -- manifests ---------------------------------------------------------------------------------
    def resolve(self, repo: str, reference: str) -> Descriptor:
        resp = self.request("HEAD", f"/v2/{repo}/manifests/{reference}", scopes=self._pull(repo),
                            headers={"Accept": MANIFEST_ACCEPT})
        self._raise_for(resp, f"manifest {repo}:{reference}" if not is_digest(reference) else f"manifest {repo}@{reference}")
        digest = resp.headers.get("docker-content-digest")
        media = (resp.headers.get("content-type") or "").split(";")[0].strip()
        size = resp.headers.get("content-length")
        if digest and is_digest(digest) and media and size is not None and (not is_digest(reference) or digest == reference):
            return Descriptor(mediaType=media, digest=digest, size=int(size))
        content = self.get_manifest(repo, reference)
        return content.descriptor()

    def get_manifest(self, repo: str, reference: str) -> Content:
        what = f"manifest {repo}@{reference}" if is_digest(reference) else f"manifest {repo}:{reference}"
        resp = self.request("GET", f"/v2/{repo}/manifests/{reference}", scopes=self._pull(repo),
                            headers={"Accept": MANIFEST_ACCEPT}, stream=True)
        try:
            self._raise_for(resp, what)
            data = _read_capped(resp, limits.MANIFEST_BYTES, what)
        except httpx.TransportError as exc:
            raise NetworkError(f"{what}: connection failed: {_short(exc)}") from None
        finally:
            resp.close()
        content = Content.of(data, detect_media_type(data, resp.headers.get("content-type")))
        expected = reference if is_digest(reference) else resp.headers.get("docker-content-digest")
        if expected and expected.startswith("sha256:") and content.digest != expected:
            raise DigestMismatchError(f"{what}: digest mismatch: expected {expected}, got {content.digest}")
        return content

    def _store_manifest(self, repo: str, content: Content, tag: str | None,
                        expect: Expect = None) -> Mapping[str, str]:
        """With ``tag`` and ``expect``, a conditional PUT (RFC 9110 §13.1): ``If-Match: "<digest>"`` (a manifest's
        ETag is its quoted digest), ``If-None-Match: *`` for ABSENT. A registry that honours them answers 412 when
        the tag moved (→ ConflictError); distribution 2.8.2 ignores them (the window in docs/transport.md)."""
        conditions: dict[str, str] = {}
        if tag is not None and expect is ABSENT:
            conditions = {"If-None-Match": "*"}
        elif tag is not None and expect is not None:
            conditions = {"If-Match": f'"{expect}"'}
        ref = tag or content.digest
        retrier = _Retry(BLOB_UNKNOWN_RETRY_SECONDS, base=0.05, cap=1.0, max_attempts=6)
        while True:
            resp = self.request("PUT", f"/v2/{repo}/manifests/{ref}", scopes=self._push(repo),
                                headers={"Content-Type": content.media_type, **(conditions or {})}, body=content.data)
            # distribution's filesystem driver rewrites a repository's blob link in place (truncate, write) each
            # time an upload of that blob commits; a manifest PUT that reads the link meanwhile sees it empty and
            # answers 400 DIGEST_INVALID + MANIFEST_BLOB_UNKNOWN for a blob that exists (two pushes of shared
            # bytes at once: a checkpoint thread and the final push). Object-store backends can lag the same way.
            # A manifest PUT is idempotent: ask again, briefly; a blob really missing fails the same way after.
            if not (resp.status_code == 400 and "MANIFEST_BLOB_UNKNOWN" in _oci_errors(resp)[0]
                    and retrier.wait(resp)):
                break
        if resp.status_code == 412:  # a precondition (If-Match, If-None-Match) the registry honours failed
            raise ConflictError(f"{self.host}: {repo}:{ref} changed before the write (HTTP 412)")
        self._raise_for(resp, f"push manifest {repo}:{ref}")
        return resp.headers

    # -- listing -----------------------------------------------------------------------------------
    def repositories(self, page_size: int = 1000) -> list[str]:
        """``GET /v2/_catalog?n=<page_size>``, following ``Link: rel="next"`` on the same origin (``last=``)."""
        found: list[str] = []
        seen: set[str] = set()
        url: httpx.URL = self._url(f"/v2/_catalog?n={page_size}")
        pages = _Pagination(f"{self.host}: repository catalog")
        while True:
            pages.next(len(found))
            resp = self.request("GET", url, scopes=("registry:catalog:*",), max_body=limits.TAG_PAGE_BYTES)
            if resp.status_code in (401, 403, 404, 405):
                raise UnsupportedError(f"{self.host}: the registry does not list its repositories (/v2/_catalog "
                                       f"answered HTTP {resp.status_code}); name a repository", resp.status_code)
            self._raise_for(resp, "repository catalog")
            try:
                page = resp.json().get("repositories") or []
                if not isinstance(page, list):
                    raise ValueError("repositories is not a list")
            except (ValueError, AttributeError):
                raise InvalidContentError(f"{self.host}: malformed repository catalog") from None
            new = [r for r in page if isinstance(r, str) and r not in seen]
            seen.update(new)
            found += new
            nxt = resp.links.get("next", {}).get("url")
            if not nxt or not new:
                break
            url = url.join(nxt)
            if not self._same_origin(url):
                break
        return sorted(found)

    # -- referrers (distribution-spec v1.1.1): the API here; the sha256-<hex> tag schema in referrers.py ---------
    def native_referrers(self, repo: str, digest: str, artifact_type: str | None) -> list[Descriptor] | None:
        if self._referrers_mode == "tag":
            return None
        return self._referrers_api(repo, digest, artifact_type)

    def _referrers_api(self, repo: str, digest: str, artifact_type: str | None) -> list[Descriptor] | None:
        """The referrers API's answer, or None when this registry has no referrers API (cached per host)."""
        url: httpx.URL = self._url(f"/v2/{repo}/referrers/{digest}")
        if artifact_type:
            url = url.copy_merge_params({"artifactType": artifact_type})
        found: list[Descriptor] = []
        pages = _Pagination(f"{self.host}: referrers of {repo}@{digest}")
        while True:
            pages.next(len(found))
            resp = self.request("GET", url, scopes=self._pull(repo), headers={"Accept": OCI_INDEX},
                                max_body=limits.MANIFEST_BYTES)
            media = (resp.headers.get("content-type") or "").split(";")[0].strip()
            if resp.status_code == 404 and "NAME_UNKNOWN" in _oci_errors(resp)[0]:
                return []
            if resp.status_code != 200 or media != OCI_INDEX:
                if resp.status_code in (200, 400, 404, 405) and self._referrers_mode != "api":
                    # e.g. distribution 2.8.2: 404 text/plain (also when another thread's probe just said so)
                    self._referrers_mode = "tag"
                    return None
                self._raise_for(resp, f"referrers of {repo}@{digest}")
                return None
            self._referrers_mode = "api"
            page = parse_manifest_content(resp.content, OCI_INDEX)
            entries = page.manifests if isinstance(page, Index) else []
            if artifact_type and "artifactType" not in resp.headers.get("oci-filters-applied", ""):
                entries = [e for e in entries if e.artifactType == artifact_type]
            found += entries
            nxt = resp.links.get("next", {}).get("url")
            if not nxt:
                break
            url = url.join(nxt)
            if not self._same_origin(url):
                break
        return found

    def attach_native(self, repo: str, content: Content, tag: str | None) -> bool:
        """PUT (by ``tag`` or digest); True when the registry confirms ``OCI-Subject`` and has the referrers API."""
        subject = content.parse().subject
        headers = self.put_manifest(repo, content, tag)
        if subject is None or headers.get("oci-subject") != subject.digest or self._referrers_mode == "tag":
            return False
        # OCI-Subject alone is not proof of the API (ECR sent it without one): probe once per host
        return self._referrers_mode == "api" or self._referrers_api(repo, subject.digest, None) is not None

    # -- blobs: read -------------------------------------------------------------------------------
    def has_blob(self, repo: str, desc: Descriptor) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{desc.digest}", scopes=self._pull(repo))
        if resp.status_code == 404:
            return False
        self._raise_for(resp, f"blob {desc.digest}")
        return True

    def open_blob(self, repo: str, desc: Descriptor) -> AbstractContextManager[Iterator[bytes]]:
        @contextmanager
        def opener() -> Iterator[Iterator[bytes]]:
            resp = self.request("GET", f"/v2/{repo}/blobs/{desc.digest}", scopes=self._pull(repo), stream=True)
            try:
                self._raise_for(resp, f"blob {repo}@{desc.digest}")

                def chunks() -> Iterator[bytes]:
                    d = Digester()
                    try:
                        for c in resp.iter_raw():
                            cancel.check()
                            d.update(c)
                            yield c
                    except httpx.TransportError as exc:
                        raise NetworkError(f"blob {desc.digest}: connection failed: {_short(exc)}") from None
                    verify(d, desc.digest, desc.size, f"blob {desc.digest}")

                yield chunks()
            finally:
                resp.close()

        return opener()

    def fetch_blob(self, repo: str, desc: Descriptor, dest: Path, progress: ProgressFn | None = None, *,
                   ingest: Ingest | None = None) -> None:
        what = f"blob {desc.digest}"
        url = f"/v2/{repo}/blobs/{desc.digest}"
        retrier = _Retry(self._retry_budget)
        ranged = self.max_streams > 1 and desc.size >= PARALLEL_MIN_BYTES
        with ingest.open(desc) if ingest is not None else temporary(dest.parent, desc) as part:
            if part.resumed and progress:
                progress(part.resumed)
            while True:
                d = part.digester
                resumed = part.resumed_bytes()
                if ranged and d.size < desc.size:
                    try:
                        self._fetch_ranged(repo, desc, part, progress, retrier)
                    except RangesUnsupported:  # the server ignores Range: one sequential stream
                        ranged = False
                        if progress and part.done:
                            progress(-sum(e - s for s, e in part.done))
                        part.done = []
                    d = part.digester
                while d.size < desc.size or not d.size:
                    headers = {"Range": f"bytes={d.size}-{desc.size - 1}"} if d.size else {}
                    resp = self.request("GET", url, scopes=self._pull(repo), headers=headers, stream=True)
                    try:
                        self._raise_for(resp, f"blob {repo}@{desc.digest}")
                        if d.size and resp.status_code == 200:  # Range ignored: start over
                            if progress:
                                progress(-d.size)
                            part.reset()
                            d = part.digester
                        elif d.size:
                            cr = resp.headers.get("content-range", "")
                            if resp.status_code != 206 or not cr.startswith(f"bytes {d.size}-"):
                                raise NetworkError(f"{what}: bad resume response (HTTP {resp.status_code}, {cr!r})")
                        length = resp.headers.get("content-length")
                        if length and length.isdigit() and not d.size and int(length) != desc.size:
                            raise DigestMismatchError(f"{what}: size mismatch: expected {desc.size} bytes, "
                                                      f"registry sends {length}")
                        _pump(resp, part, desc.size, what, progress)
                    except (httpx.TransportError, _Dropped) as exc:
                        if retrier.wait():
                            continue
                        raise NetworkError(f"{what}: connection dropped after {d.size} bytes: {_short(exc)}") from None
                    finally:
                        resp.close()
                    break
                try:
                    verify(d, desc.digest, desc.size, what)
                except DigestMismatchError:
                    if not resumed:
                        raise
                    if progress:  # the kept prefix was wrong after all: fetch the whole blob once more
                        progress(-d.size)
                    part.reset()
                    continue
                part.publish(dest)
                return

    def _fetch_ranged(self, repo: str, desc: Descriptor, part: Partial, progress: ProgressFn | None,
                      retrier: _Retry) -> None:
        """Fill ``part`` with parallel ranged GETs (:func:`~ociart.targets.ranged.fetch_ranges`). A redirect to
        another origin (object storage) is followed once per part until one answers; later parts go straight to
        the URL it led to (no ``Authorization``: another origin), back through the registry if that URL fails."""
        what = f"blob {desc.digest}"
        url = self._url(f"/v2/{repo}/blobs/{desc.digest}")
        direct: list[httpx.URL] = []

        @contextmanager
        def open_range(start: int, end: int) -> Iterator[Iterator[bytes]]:
            via = direct[0] if direct else url
            resp = self.request("GET", via, scopes=self._pull(repo), headers={"Range": f"bytes={start}-{end - 1}"},
                                stream=True)
            try:
                if resp.status_code == 200:
                    raise RangesUnsupported()
                if direct and resp.status_code >= 400:  # e.g. the presigned URL expired: ask the registry again
                    direct.clear()
                    raise _Dropped(f"{via.copy_with(query=None)} answered HTTP {resp.status_code}")
                self._raise_for(resp, f"blob {repo}@{desc.digest}")
                cr = resp.headers.get("content-range", "")
                if resp.status_code != 206 or not cr.startswith(f"bytes {start}-"):
                    raise NetworkError(f"{what}: bad range response (HTTP {resp.status_code}, {cr!r})")
                if not direct and not self._same_origin(resp.url):
                    direct.append(resp.url)

                def pieces() -> Iterator[bytes]:
                    try:
                        yield from resp.iter_raw()
                    except httpx.TransportError as exc:
                        raise _Dropped(_short(exc)) from None

                yield pieces()
            finally:
                resp.close()

        try:
            self.last_ranged = fetch_ranges(part, open_range, max_streams=self.max_streams,
                                            retryable=(httpx.TransportError, _Dropped, ShortBody), wait=retrier.wait,
                                            progress=progress)
        except (httpx.TransportError, _Dropped, ShortBody) as exc:
            raise NetworkError(f"{what}: connection dropped after {part.resumed_bytes()} bytes: "
                               f"{_short(exc)}") from None

    # -- blobs: write ------------------------------------------------------------------------------
    def mount_blob(self, repo: str, desc: Descriptor, from_repo: str) -> bool:
        if from_repo == repo:
            return False
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/?mount={desc.digest}&from={from_repo}",
                            scopes=self._push(repo) + self._pull(from_repo), headers={"Content-Length": "0"})
        if resp.status_code == 201:
            return True
        if resp.status_code == 202 and "location" in resp.headers:
            self._cancel(_next_location(resp, str(resp.url)), repo)
            return False
        self._raise_for(resp, f"mount {desc.digest} from {from_repo}")
        return False

    def _cancel(self, location: str, repo: str) -> None:
        try:
            self.request("DELETE", self._location(location), scopes=self._push(repo), retry=False)
        except OciartError:
            pass

    def _location(self, location: str, **params: str) -> httpx.URL:
        url = httpx.URL(self.origin).join(location)
        return url.copy_merge_params(params) if params else url

    def _start_upload(self, repo: str) -> tuple[str, int]:
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scopes=self._push(repo),
                            headers={"Content-Length": "0"})
        if resp.status_code != 202 or "location" not in resp.headers:
            self._raise_for(resp, f"start upload to {repo}")
            raise RegistryError(f"{self.host}: start upload to {repo}: unexpected HTTP {resp.status_code}")
        min_chunk = resp.headers.get("oci-chunk-min-length", "0")
        return _next_location(resp, ""), int(min_chunk) if min_chunk.isdigit() else 0

    def _finish_upload(self, repo: str, location: str, digest: str, body: Any = None,
                       length: int = 0) -> None:
        resp = self.request(
            "PUT", self._location(location, digest=digest), scopes=self._push(repo), retry=False,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)}, body=body,
        )
        if resp.status_code in RETRY_STATUS:
            raise _Retryable(f"{self.host}: upload {digest} answered HTTP {resp.status_code}", resp)
        if resp.status_code != 201:
            self._raise_for(resp, f"upload {digest}")
            raise RegistryError(f"{self.host}: upload {digest}: expected HTTP 201, got {resp.status_code}")
        got = resp.headers.get("docker-content-digest")
        if got and got != digest:
            raise DigestMismatchError(f"{self.host}: registry stored blob as {got}, expected {digest}")

    def push_blob_chunks(self, repo: str, opener: Opener, media_type: str,
                         progress: ProgressFn | None = None) -> Descriptor:
        if (self._strategy or "probe") in ("stream", "probe"):
            try:
                return self._upload_with_retries(repo, lambda: self._upload_streamed(repo, opener, media_type,
                                                                                    progress))
            except _StrategyUnsupported:
                self._strategy = "monolithic"
        d = Digester()  # the host needs the digest first: a hash pre-pass
        with opener() as chunks:
            for chunk in chunks:
                d.update(chunk)
        desc = Descriptor(mediaType=media_type, digest=d.digest, size=d.size)
        self.push_blob_stream(repo, desc, opener, progress)
        return desc

    def push_blob_file(self, repo: str, path: Path, desc: Descriptor | None, progress: ProgressFn | None = None,
                       media_type: str = "application/octet-stream") -> Descriptor:
        """As :meth:`Target.push_blob_file`; a file to be chunked (:meth:`_chunks_for`) whose digest is not known
        yet is hashed while its chunks are sent (one read), with the same resume as a blob of known digest."""
        if desc is None:
            try:
                size = os.stat(path).st_size
            except OSError:
                size = -1  # vanished or unreadable: the file opener names it
            if size >= 0 and self._chunks_for(size):
                return self._upload_chunked(repo, file_opener(path), size, None, media_type, progress)
        return super().push_blob_file(repo, path, desc, progress, media_type)

    def push_blob_stream(self, repo: str, desc: Descriptor, opener: Opener,
                         progress: ProgressFn | None = None) -> None:
        if self.has_blob(repo, desc):
            return
        if self._chunks_for(desc.size):
            self._upload_chunked(repo, opener, desc.size, desc, desc.mediaType, progress)
        else:
            self._upload_with_retries(repo, lambda: self._upload_monolithic(repo, desc, opener, progress))

    def _chunks_for(self, size: int) -> bool:
        """Chunked upload: forced (``OCIART_UPLOAD_STRATEGY=chunked``), asked for (``--chunk-size``), or a blob of
        :data:`CHUNKED_MIN_BYTES` or more on a host not pinned to monolithic uploads."""
        if self._strategy == "chunked" or self.chunk_size:
            return True
        return size >= CHUNKED_MIN_BYTES and self._quirks.get("strategy") != "monolithic"

    def _upload_with_retries(self, repo: str, attempt: Callable[[], Descriptor | None]) -> Any:
        retrier = _Retry(self._retry_budget)
        while True:
            try:
                return attempt()
            except (NetworkError, _Retryable) as exc:
                # a cut streamed PATCH or PUT loses the session on distribution 2.8.2: restart the blob
                resp = exc.resp if isinstance(exc, _Retryable) else None
                if isinstance(exc, UnreachableError):
                    raise
                if not _is_cert_error(exc) and retrier.wait(resp):  # an untrusted certificate stays untrusted
                    continue
                if isinstance(exc, _Retryable):
                    raise NetworkError(str(exc)) from None
                raise

    def _upload_monolithic(self, repo: str, desc: Descriptor,
                           opener: Opener,
                           progress: ProgressFn | None) -> None:
        location, _ = self._start_upload(repo)
        with opener() as chunks:
            def body() -> Iterator[bytes]:
                for c in chunks:
                    self.bytes_uploaded += len(c)
                    if progress:
                        progress(len(c))
                    yield c

            self._finish_upload(repo, location, desc.digest, body(), desc.size)

    def _upload_streamed(self, repo: str, opener: Opener, media_type: str,
                         progress: ProgressFn | None) -> Descriptor:
        location, _ = self._start_upload(repo)
        d = Digester()
        with opener() as chunks:
            def body() -> Iterator[bytes]:
                for chunk in chunks:
                    d.update(chunk)
                    self.bytes_uploaded += len(chunk)
                    if progress:
                        progress(len(chunk))
                    yield chunk

            resp = self.request("PATCH", self._location(location), scopes=self._push(repo), retry=False,
                                headers={"Content-Type": "application/octet-stream"}, body=body())
        if resp.status_code in (400, 405, 413, 415, 416) or (resp.status_code >= 400 and resp.status_code < 500
                                                             and resp.status_code not in (401, 403, 404)):
            self._cancel(location, repo)
            raise _StrategyUnsupported()
        if resp.status_code >= 500:
            raise _Retryable(f"{self.host}: PATCH upload answered HTTP {resp.status_code}", resp)
        if resp.status_code != 202:
            self._raise_for(resp, "upload")
        self._strategy = "stream"
        self._finish_upload(repo, _next_location(resp, location), d.digest)
        return Descriptor(mediaType=media_type, digest=d.digest, size=d.size)

    def _chunk_bytes(self, min_len: int) -> int:
        size = max(min_len, self._quirks.get("chunk_min", 0), self.chunk_size or self._default_chunk)
        return min(size, self._quirks["chunk_max"]) if "chunk_max" in self._quirks else size

    def _upload_chunked(self, repo: str, opener: Opener, total: int, desc: Descriptor | None, media_type: str,
                        progress: ProgressFn | None) -> Descriptor:
        """``PATCH`` pieces of :meth:`_chunk_bytes` with ``Content-Range`` and ``Content-Length``, streamed from the
        source (no chunk is held in memory), hashed as they are read; then ``PUT ?digest=``.

        A failed PATCH (dropped connection, 5xx) asks the registry where the session stands — ``GET`` on the upload
        URL answers ``204`` with ``Range: 0-<N-1>`` — and continues from byte N: the source is opened again and its
        first N bytes re-read and hashed locally, not re-sent. A session the registry no longer knows (distribution
        2.8.2 cancels it when a cut PATCH left bytes behind, docs/transport.md) restarts the blob in a new one.
        Both within the retry budget."""
        retrier = _Retry(self._retry_budget)
        reported = 0  # bytes reported to ``progress``
        what = f"upload {desc.digest if desc else 'of ' + media_type}"
        while True:  # one upload session per pass
            location, min_len = self._start_upload(repo)
            chunk = self._chunk_bytes(min_len)
            offset = 0
            while True:  # one pass over the source per resume
                d = Digester()
                try:
                    with opener() as pieces:
                        reader = _SourceReader(pieces, d, what)
                        for _ in reader.take(offset):  # what the registry already has: hashed, not sent
                            pass
                        while offset < total:
                            n = min(chunk, total - offset)
                            location = self._patch_chunk(repo, location, offset, n, reader.take(n))
                            offset += n
                            if progress and offset > reported:
                                progress(offset - reported)
                                reported = offset
                        reader.finish(total)
                    if desc is not None and d.digest != desc.digest:
                        raise DigestMismatchError(f"{what}: the source hashed to {d.digest} while it was sent")
                    self._finish_upload(repo, location, d.digest)
                    return Descriptor(mediaType=media_type, digest=d.digest, size=total)
                except (NetworkError, _Retryable) as exc:
                    if isinstance(exc, UnreachableError) or _is_cert_error(exc):
                        raise
                    if not retrier.wait(exc.resp if isinstance(exc, _Retryable) else None):
                        raise NetworkError(str(exc)) from None
                    status = self._upload_status(repo, location, total)
                    if status is None:
                        if desc is not None and self.has_blob(repo, desc):  # the last PUT did land
                            return desc
                        break  # the session is gone: a new one, from byte 0
                    offset, location = status
                    if progress and offset < reported:
                        progress(offset - reported)  # negative: bytes to be sent again
                        reported = offset
            if progress and reported:
                progress(-reported)
                reported = 0

    def _patch_chunk(self, repo: str, location: str, offset: int, n: int, body: Iterator[bytes]) -> str:
        def counted() -> Iterator[bytes]:
            for piece in body:
                self.bytes_uploaded += len(piece)
                yield piece

        resp = self.request("PATCH", self._location(location), scopes=self._push(repo), retry=False, body=counted(),
                            headers={"Content-Type": "application/octet-stream",
                                     "Content-Range": f"{offset}-{offset + n - 1}", "Content-Length": str(n)})
        if resp.status_code >= 500:
            raise _Retryable(f"{self.host}: chunk upload answered HTTP {resp.status_code}", resp)
        if resp.status_code not in (202, 201):
            self._raise_for(resp, f"upload chunk at {offset}")
            raise RegistryError(f"{self.host}: upload chunk at {offset}: unexpected HTTP {resp.status_code}")
        return _next_location(resp, location)

    def _upload_status(self, repo: str, location: str, total: int) -> tuple[int, str] | None:
        """Where an upload session stands: ``GET`` on its URL → (bytes the registry holds, the URL to continue
        with), or None when the registry no longer knows the session."""
        try:
            resp = self.request("GET", self._location(location), scopes=self._push(repo))
        except NetworkError:
            return None
        rng = resp.headers.get("range", "")
        m = re.fullmatch(r"(?:bytes=)?0-(\d+)", rng.strip())
        if resp.status_code != 204 or m is None:
            return None
        end = int(m.group(1))
        held = end + 1 if end > 0 else 0  # distribution answers "0-0" for an empty session
        if held > total:
            return None
        return held, _next_location(resp, location)

    # -- tags and deletion -------------------------------------------------------------------------
    def tags(self, repo: str) -> list[str]:
        found: set[str] = set()
        url: httpx.URL = self._url(f"/v2/{repo}/tags/list?n=1000")
        pages = _Pagination(f"{self.host}: tag list of {repo}")
        while True:
            pages.next(len(found))
            resp = self.request("GET", url, scopes=self._pull(repo), max_body=limits.TAG_PAGE_BYTES)
            self._raise_for(resp, f"tags of {repo}")
            try:
                page = resp.json().get("tags") or []
                if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                    raise ValueError("tags is not a list of strings")
            except (ValueError, AttributeError):
                raise InvalidContentError(f"{self.host}: malformed tag list for {repo}") from None
            new = set(page) - found
            found |= set(page)
            nxt = resp.links.get("next", {}).get("url")
            if not nxt or not new:
                break
            url = url.join(nxt)
            if not self._same_origin(url):  # never follow pagination to another origin
                break
        return sorted(found)

    def delete_manifest(self, repo: str, digest: str) -> None:
        resp = self.request("DELETE", f"/v2/{repo}/manifests/{digest}", scopes=self._delete(repo))
        if resp.status_code in (200, 202):
            return
        if resp.status_code == 405:
            codes = _oci_errors(resp)[0]
            raise UnsupportedError(
                f"{self.host}: the registry refuses to delete {repo}@{digest} (HTTP 405"
                f"{', ' + ', '.join(codes) if codes else ''}): deletion is disabled in its configuration; on "
                "distribution set storage.delete.enabled: true (or REGISTRY_STORAGE_DELETE_ENABLED=true)", 405, codes)
        self._raise_for(resp, f"delete {repo}@{digest}")

    def delete_tag(self, repo: str, tag: str) -> None:
        resp = self.request("DELETE", f"/v2/{repo}/manifests/{tag}", scopes=self._delete(repo))
        if resp.status_code in (200, 202):
            return
        if resp.status_code in (400, 405):
            raise UnsupportedError(
                f"{self.host}: this registry cannot delete a tag alone (HTTP {resp.status_code}); "
                f"delete by digest to remove the manifest and every tag on it", resp.status_code)
        self._raise_for(resp, f"delete tag {repo}:{tag}")


class _Dropped(Exception):
    """The blob stream ended early."""


class _Retryable(Exception):
    def __init__(self, message: str, resp: httpx.Response | None = None) -> None:
        super().__init__(message)
        self.resp = resp


def _next_location(resp: httpx.Response, default: str) -> str:
    """The upload ``Location`` of a response, made absolute against the URL that answered."""
    loc = resp.headers.get("location")
    return str(resp.url.join(loc)) if loc else default


class _StrategyUnsupported(Exception):
    pass


class _SourceReader:
    """Exact byte counts from an upload source's pieces, each piece hashed into ``digester`` as it is read."""

    def __init__(self, pieces: Iterable[bytes], digester: Digester, what: str) -> None:
        self._it = iter(pieces)
        self._buf = b""
        self._d = digester
        self._what = what

    def _more(self) -> bytes:
        piece = next(self._it, b"")
        if piece:
            self._d.update(piece)
        return piece

    def take(self, n: int) -> Iterator[bytes]:
        """The next ``n`` bytes, in pieces; an error if the source ends first."""
        while n > 0:
            if not self._buf:
                self._buf = self._more()
                if not self._buf:
                    raise UsageError(f"{self._what}: the source ended early; it changed while it was pushed")
            piece, self._buf = self._buf[:n], self._buf[n:]
            n -= len(piece)
            yield piece

    def finish(self, total: int) -> None:
        if self._buf or self._more():
            raise UsageError(f"{self._what}: the source is larger than {total} bytes; it changed while it was "
                             "pushed")


def _pump(resp: httpx.Response, part: Partial, size: int, what: str,
          progress: ProgressFn | None) -> None:
    """Hash and write the body as it arrives (:meth:`Partial.append`); raise :class:`_Dropped` on a short body.

    Measured on 1 GiB over loopback (benchmarks/README.md): reading, hashing and writing inline on the
    socket-reading thread, with httpx's own piece sizes (no re-chunking), beat a reader thread + bounded queue
    (1.8 s vs 2.4 s) because hashing and writing release the GIL anyway and the queue adds handoffs.
    """
    d = part.digester
    pending = 0
    for chunk in resp.iter_raw():
        cancel.check()
        if d.size + len(chunk) > size:
            raise DigestMismatchError(f"{what}: registry sent more than the expected {size} bytes")
        part.append(chunk)
        if progress:
            pending += len(chunk)
            if pending >= READ_CHUNK:
                progress(pending)
                pending = 0
    if progress and pending:
        progress(pending)
    if d.size < size:
        raise _Dropped(f"stream ended after {d.size} of {size} bytes")


def _read_capped(resp: httpx.Response, limit: int, what: str, *, keep: bool = False) -> bytes:
    """Read a small response body, refusing more than ``limit`` bytes (announced or actually sent). ``keep``: also
    store it as the response's content (``resp.content``, ``resp.json()``)."""
    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise InvalidContentError(f"{what}: response of {declared} bytes, over the {limit}-byte limit")
    buf = bytearray()
    try:
        for chunk in resp.iter_bytes():
            buf += chunk
            if len(buf) > limit:
                raise InvalidContentError(f"{what}: response over the {limit}-byte limit")
    except httpx.TransportError as exc:
        raise NetworkError(f"{what}: connection failed: {_short(exc)}") from None
    if keep:
        resp._content = bytes(buf)  # what httpx's own read() stores
    return bytes(buf)


def _read_error_body(resp: httpx.Response) -> None:
    """Read at most :data:`limits.ERROR_BODY_BYTES` of an error response (kept as its content, for the OCI error
    codes), then close it: a registry cannot make an error answer cost more than that."""
    buf = bytearray()
    try:
        for chunk in resp.iter_bytes():
            buf += chunk
            if len(buf) >= limits.ERROR_BODY_BYTES:
                break
    except (httpx.TransportError, httpx.StreamError):
        pass
    finally:
        resp.close()
    resp._content = bytes(buf[: limits.ERROR_BODY_BYTES])


class _Pagination:
    """Bounds one paginated listing: :data:`limits.PAGES` pages, :data:`limits.PAGE_ENTRIES` entries and
    :data:`limits.PAGINATION_SECONDS` seconds, whichever comes first."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.pages = 0
        self.deadline = time.monotonic() + limits.PAGINATION_SECONDS

    def next(self, entries: int) -> None:
        self.pages += 1
        if self.pages > limits.PAGES:
            raise InvalidContentError(f"{self.what}: more than {limits.PAGES} pages; giving up")
        if entries > limits.PAGE_ENTRIES:
            raise InvalidContentError(f"{self.what}: more than {limits.PAGE_ENTRIES} entries; giving up")
        if time.monotonic() > self.deadline:
            raise InvalidContentError(f"{self.what}: pagination still going after {limits.PAGINATION_SECONDS:g} s "
                                      f"({self.pages - 1} pages); giving up")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
