"""Loopback HTTP/1.1 reverse proxy that injects faults in front of a test registry.

Bodies are streamed in both directions (64 KiB pieces), requests framed by ``Content-Length`` or
``Transfer-Encoding: chunked`` alike. Headers are forwarded unchanged (``Host`` included, so the registry builds
``Location`` URLs that point back at the proxy); only hop-by-hop framing headers are regenerated.
Response bodies can be counted (:meth:`FaultProxy.sent`, :meth:`FaultProxy.when_sent`) and rate limited
(:meth:`FaultProxy.limit_rate`: each response, so each connection while it serves one, like an object store's
per-connection cap), request bodies cut (one request, or several together: :meth:`FaultProxy.cut_uploads_at`) and
optionally stored before they are forwarded (:attr:`FaultProxy.buffer_requests`), and request headers dropped
(:meth:`FaultProxy.drop_request_header`, e.g. ``Range`` to play a registry that ignores it).
"""

from __future__ import annotations

import http.client
import json
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .fakeserver import (
    CHUNK,
    BodyReader,
    LoopbackHTTPServer,
    QuietHandler,
    lower_headers,
)

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "expect"}

_ERROR_CODES = {400: "UNSUPPORTED", 401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN", 405: "UNSUPPORTED",
                413: "SIZE_INVALID", 429: "TOOMANYREQUESTS"}


@dataclass
class _Rule:
    kind: str  # "status" | "drop" | "drop_upload" | "cut_uploads"
    path_substring: str
    times: int
    method: str | None = None
    status: int = 0
    nbytes: int = 0
    code: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    seen: int = 0  # cut_uploads: request body bytes of matching requests so far

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and self.path_substring in path and (self.method is None or self.method == method)


class _Abort(Exception):
    """Raised inside the handler to cut the client connection without a (complete) response."""


class _ProxyHandler(QuietHandler):
    def dispatch(self) -> None:
        proxy: FaultProxy = self.server.owner  # type: ignore[attr-defined]
        entry: dict[str, Any] = {"method": self.command, "path": self.path,
                                 "headers": lower_headers(self.headers.items()), "status": None,
                                 "bytes_in": 0, "bytes_out": 0, "fault": None, "time": time.time()}
        proxy.log.append(entry)
        body = BodyReader(self.rfile, self.headers)
        rule = proxy._take_rule(self.command, self.path)
        if rule is not None:
            entry["fault"] = rule.kind
        try:
            if rule is not None and rule.kind == "status":
                entry["bytes_in"] = body.drain()
                self._send_injected(rule, entry)
            else:
                self._forward(proxy, body, rule, entry)
        except (_Abort, ConnectionError, OSError):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _send_injected(self, rule: _Rule, entry: dict[str, Any]) -> None:
        payload = json.dumps({"errors": [{"code": rule.code or _ERROR_CODES.get(rule.status, "UNKNOWN"),
                                          "message": f"injected by FaultProxy ({rule.status})",
                                          "detail": None}]}).encode()
        entry["status"] = rule.status
        self.send_response_only(rule.status)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(payload)), **rule.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            entry["bytes_out"] = len(payload)
            self.wfile.write(payload)

    def _forward(self, proxy: FaultProxy, body: BodyReader, rule: _Rule | None, entry: dict[str, Any]) -> None:
        limit = rule.nbytes if rule is not None and rule.kind == "drop_upload" else None
        if rule is not None and rule.kind == "cut_uploads":
            limit = rule.nbytes - rule.seen
        chunked = body.chunked
        pieces: Any = body
        if proxy.buffer_requests:  # store and forward (nginx's default): a body cut short never reaches upstream
            spool = tempfile.SpooledTemporaryFile(max_size=4 << 20)
            for piece in body:
                if limit is not None and entry["bytes_in"] + len(piece) >= limit:
                    entry["bytes_in"] += max(0, limit - entry["bytes_in"])
                    proxy._cut(rule)
                    raise _Abort
                entry["bytes_in"] += len(piece)
                spool.write(piece)
            spool.seek(0)
            pieces = iter(lambda: spool.read(CHUNK), b"")
            limit = None
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=proxy.timeout)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            dropped = proxy._dropped_headers(self.path)
            for name, value in self.headers.items():
                if name.lower() in dropped:
                    continue
                if name.lower() not in _HOP_BY_HOP or name.lower() == "transfer-encoding":
                    conn.putheader(name, value)
            conn.endheaders()
            for piece in pieces:
                if limit is not None and entry["bytes_in"] + len(piece) >= limit:
                    piece = piece[: max(0, limit - entry["bytes_in"])]
                    entry["bytes_in"] += len(piece)
                    conn.send(b"%X\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                    proxy._cut(rule)
                    raise _Abort
                if not proxy.buffer_requests:
                    entry["bytes_in"] += len(piece)
                conn.send(b"%X\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                conn.send(b"0\r\n\r\n")
            if rule is not None and rule.kind == "cut_uploads":
                with proxy._lock:
                    rule.seen += entry["bytes_in"]
            resp = conn.getresponse()
            self._relay(proxy, resp, rule, entry)
        finally:
            conn.close()

    def _relay(self, proxy: FaultProxy, resp: http.client.HTTPResponse, rule: _Rule | None,
               entry: dict[str, Any]) -> None:
        entry["status"] = resp.status
        headers = proxy._rewrite(self.path, [(n, v) for n, v in resp.getheaders() if n.lower() not in _HOP_BY_HOP])
        has_length = any(n.lower() == "content-length" for n, _ in headers)
        no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        chunked = not no_body and not has_length
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        self.send_response_only(resp.status, resp.reason)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if no_body:
            return
        limit = rule.nbytes if rule is not None and rule.kind == "drop" else None
        rate = proxy._rate_for(self.path)
        if rate is not None:  # a small send buffer, so the count follows what the client has actually read
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        start = time.monotonic()
        while piece := resp.read1(CHUNK if rate is None else min(CHUNK, 16 * 1024)):
            if limit is not None and entry["bytes_out"] + len(piece) >= limit:
                piece = piece[: limit - entry["bytes_out"]]
                entry["bytes_out"] += len(piece)
                proxy._count(self.path, len(piece))  # before writing: a reader never sees bytes not yet counted
                self.write_chunk(piece) if chunked and piece else self.wfile.write(piece)
                raise _Abort
            if rate is not None:  # hold the average at ``rate`` bytes per second
                ahead = (entry["bytes_out"] + len(piece)) / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
            entry["bytes_out"] += len(piece)
            proxy._count(self.path, len(piece))  # before writing (see above)
            self.write_chunk(piece) if chunked else self.wfile.write(piece)
        if chunked:
            self.write_chunk(b"")


class FaultProxy:
    """Streaming reverse proxy on a free loopback port with runtime-configurable faults.

    ``.log`` holds one dict per request, appended when the request arrives and updated while it runs: ``method``,
    ``path`` (with query), ``headers`` (lower-cased names), ``status``, ``bytes_in`` (request body bytes forwarded or
    drained), ``bytes_out`` (response body bytes sent), ``fault`` (rule kind applied or ``None``), ``time``.
    Rules are checked in the order they were added; each fires ``times`` times.
    """

    def __init__(self, upstream_url: str, *, timeout: float = 60.0) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"FaultProxy needs a plain http:// upstream, got {upstream_url!r}")
        self.upstream_url = upstream_url
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.timeout = timeout
        self.log: list[dict[str, Any]] = []
        self._rules: list[_Rule] = []
        self._rewrites: list[tuple[str, str, Callable[[str], str | None]]] = []
        self._drop_headers: list[tuple[str, str]] = []
        self._rates: list[tuple[str, float]] = []
        self._counters: dict[str, int] = {}
        #: Store and forward request bodies (as nginx does by default, ``proxy_request_buffering on``): the upstream
        #: sees a request only once its whole body has arrived, so a cut body never reaches it.
        self.buffer_requests = False
        self._watches: list[tuple[str, int, threading.Event]] = []
        self._lock = threading.Lock()
        self._httpd = LoopbackHTTPServer(_ProxyHandler, self)
        self.host = self._httpd.host
        self.url = f"http://{self.host}"

    def inject_status(self, path_substring: str, status: int, times: int = 1, retry_after: str | None = None,
                      method: str | None = None, *, code: str | None = None,
                      headers: dict[str, str] | None = None) -> None:
        """Answer the next ``times`` matching requests with ``status`` and an OCI error body, without upstream.

        ``code`` overrides the OCI error code (default derived from the status); ``headers`` adds response headers
        (e.g. a ``WWW-Authenticate`` challenge).
        """
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = retry_after
        self._add(_Rule("status", path_substring, times, method, status=status, code=code or "", headers=extra))

    def drop_after(self, path_substring: str, nbytes: int, times: int = 1, method: str | None = "GET") -> None:
        """For matching requests send the upstream status, headers and first ``nbytes`` of body, then cut the socket."""
        self._add(_Rule("drop", path_substring, times, method, nbytes=nbytes))

    def drop_upload_after(self, path_substring: str, nbytes: int, times: int = 1,
                          method: str | None = "PATCH") -> None:
        """Forward only the first ``nbytes`` of a matching request body upstream, then cut both connections."""
        self._add(_Rule("drop_upload", path_substring, times, method, nbytes=nbytes))

    def cut_uploads_at(self, path_substring: str, nbytes: int, method: str | None = "PATCH") -> None:
        """Cut the connection once the request bodies of matching requests *together* reach ``nbytes`` (e.g. 70 %
        of a blob sent in chunks); the request then under way is cut there. Fires once. With
        :attr:`buffer_requests` the cut request never reaches the upstream (a store-and-forward proxy)."""
        self._add(_Rule("cut_uploads", path_substring, 1, method, nbytes=nbytes))

    def rewrite_header(self, name: str, fn: Callable[[str], str | None], path_substring: str = "") -> None:
        """Pass every upstream response header ``name`` (on matching paths) through ``fn``; ``None`` removes it."""
        with self._lock:
            self._rewrites.append((name.lower(), path_substring, fn))

    def drop_request_header(self, name: str, path_substring: str = "") -> None:
        """Do not forward request header ``name`` upstream on matching paths (``Range``: a server that ignores it)."""
        with self._lock:
            self._drop_headers.append((name.lower(), path_substring))

    def limit_rate(self, bytes_per_second: float, path_substring: str = "") -> None:
        """Send response bodies on matching paths at about ``bytes_per_second`` each (with a small socket buffer)."""
        with self._lock:
            self._rates.append((path_substring, bytes_per_second))

    def sent(self, path_substring: str = "") -> int:
        """Response body bytes sent so far on paths containing ``path_substring`` (counted since the last
        :meth:`reset_counts`), including bodies still streaming."""
        with self._lock:
            return sum(n for path, n in self._counters.items() if path_substring in path)

    def when_sent(self, path_substring: str, nbytes: int) -> threading.Event:
        """An event set once :meth:`sent` for ``path_substring`` reaches ``nbytes``."""
        event = threading.Event()
        with self._lock:
            self._watches.append((path_substring, nbytes, event))
        if self.sent(path_substring) >= nbytes:
            event.set()
        return event

    def reset_counts(self) -> None:
        with self._lock:
            self._counters.clear()

    def clear(self) -> None:
        """Remove all fault rules, header rewrites and drops, rate limits and watches (log and counts are kept)."""
        with self._lock:
            self._rules.clear()
            self._rewrites.clear()
            self._drop_headers.clear()
            self._rates.clear()
            self._watches.clear()

    def find(self, method: str | None = None, path_substring: str = "") -> list[dict[str, Any]]:
        """Log entries filtered by method and path substring."""
        return [e for e in self.log if (method is None or e["method"] == method) and path_substring in e["path"]]

    def stop(self) -> None:
        """Shut the proxy down and cut open connections."""
        self._httpd.stop()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _take_rule(self, method: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    if rule.kind != "cut_uploads":  # that one fires when its byte count is reached (_cut)
                        rule.times -= 1
                    return rule
        return None

    def _cut(self, rule: _Rule | None) -> None:
        if rule is not None and rule.kind == "cut_uploads":
            with self._lock:
                rule.times = 0

    def _dropped_headers(self, path: str) -> set[str]:
        with self._lock:
            return {name for name, substring in self._drop_headers if substring in path}

    def _rate_for(self, path: str) -> float | None:
        with self._lock:
            rates = [rate for substring, rate in self._rates if substring in path]
        return min(rates) if rates else None

    def _count(self, path: str, n: int) -> None:
        with self._lock:
            self._counters[path] = self._counters.get(path, 0) + n
            fired = [w for w in self._watches if w[0] in path and
                     sum(v for p, v in self._counters.items() if w[0] in p) >= w[1]]
        for w in fired:
            w[2].set()

    def _rewrite(self, path: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        with self._lock:
            rewrites = list(self._rewrites)
        out: list[tuple[str, str]] = []
        for name, value in headers:
            new: str | None = value
            for target, substring, fn in rewrites:
                if new is not None and target == name.lower() and substring in path:
                    new = fn(new)
            if new is not None:
                out.append((name, new))
        return out
