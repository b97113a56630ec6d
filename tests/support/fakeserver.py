"""A scriptable loopback HTTP/1.1 server for tests, plus the small HTTP plumbing shared by the support modules.

``FakeServer(handler)`` serves every request with ``handler(method, path, headers, body_reader)``, which returns
``(status, headers, body)``; ``body`` is ``bytes`` or an iterable of ``bytes`` (streamed; sent chunked unless the
handler sets ``Content-Length``).
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, Union

CHUNK = 64 * 1024

HeaderItems = Union[dict[str, str], list[tuple[str, str]]]
Body = Union[bytes, Iterable[bytes]]
Handler = Callable[[str, str, dict[str, str], "BodyReader"], tuple[int, HeaderItems, Body]]


def lower_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header pairs as a dict with lower-cased names; repeated headers are joined with ``", "``."""
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


class BodyReader:
    """Streaming reader for a request body framed by ``Content-Length`` or ``Transfer-Encoding: chunked``."""

    def __init__(self, rfile: BinaryIO, headers: Any) -> None:
        self._rfile = rfile
        self.chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        self._remaining = 0 if self.chunked else int(headers.get("Content-Length") or 0)
        self._done = not self.chunked and self._remaining == 0
        self.bytes_read = 0

    def read(self, n: int = -1) -> bytes:
        """Return up to ``n`` bytes (everything left if ``n < 0``); ``b""`` at the end of the body."""
        if n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        if self._done or n == 0:
            return b""
        if self.chunked and self._remaining == 0:
            size_line = self._rfile.readline(1024)
            if not size_line:
                raise ConnectionError("client closed the connection inside a chunked body")
            self._remaining = int(size_line.split(b";")[0].strip() or b"0", 16)
            if self._remaining == 0:
                while self._rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self._done = True
                return b""
        data = self._rfile.read(min(n, self._remaining))
        if not data:
            raise ConnectionError("client closed the connection inside the request body")
        self._remaining -= len(data)
        self.bytes_read += len(data)
        if self._remaining == 0:
            if self.chunked:
                self._rfile.readline(16)  # CRLF after the chunk data
            else:
                self._done = True
        return data

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.read(CHUNK), b"")

    def drain(self) -> int:
        """Read and discard the rest of the body; return the number of bytes discarded."""
        return sum(len(piece) for piece in self)


class LoopbackHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` on a free ``127.0.0.1`` port, served from a daemon thread.

    ``owner`` is available to handlers as ``self.server.owner``. ``stop()`` also shuts down kept-alive connections.
    """

    daemon_threads = True

    def __init__(self, handler_cls: type[BaseHTTPRequestHandler], owner: Any,
                 tls: ssl.SSLContext | None = None) -> None:
        self.owner = owner
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler_cls)
        if tls is not None:  # HTTPS: the handshake runs on accept
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse-DNS lookup."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.server_address[1]}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def stop(self) -> None:
        """Stop accepting, close the listener and cut open connections."""
        self.shutdown()
        self.server_close()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 request handler base: keep-alive, no stderr logging, every method routed to ``dispatch()``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from the base class
        pass

    def dispatch(self) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self.dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def write_chunk(self, data: bytes) -> None:
        """Write one chunk of a ``Transfer-Encoding: chunked`` body (``b""`` writes the terminator)."""
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data) if data else b"0\r\n\r\n")


def _header_list(headers: HeaderItems) -> list[tuple[str, str]]:
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


class _FakeHandler(QuietHandler):
    def dispatch(self) -> None:
        server: FakeServer = self.server.owner  # type: ignore[attr-defined]
        headers = lower_headers(self.headers.items())
        entry: dict[str, Any] = {"method": self.command, "path": self.path, "headers": headers,
                                 "status": None, "time": time.time()}
        server.log.append(entry)
        reader = BodyReader(self.rfile, self.headers)
        try:
            status, resp_headers, body = server.handler(self.command, self.path, headers, reader)
        except Exception as exc:  # report handler bugs to the client and to the test
            server.errors.append(exc)
            status, resp_headers, body = 500, {"Content-Type": "text/plain"}, traceback.format_exc().encode()
        reader.drain()
        entry["status"] = status
        pairs = _header_list(resp_headers)
        names = {name.lower() for name, _ in pairs}
        no_body = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        chunked = False
        if isinstance(body, (bytes, bytearray)):
            if "content-length" not in names and status not in (204, 304):
                pairs.append(("Content-Length", str(len(body))))
        elif "content-length" not in names and not no_body:
            pairs.append(("Transfer-Encoding", "chunked"))
            chunked = True
        self.send_response_only(status)
        for name, value in pairs:
            self.send_header(name, value)
        self.end_headers()
        if no_body:
            return
        for piece in [body] if isinstance(body, (bytes, bytearray)) else body:
            if piece:
                self.write_chunk(piece) if chunked else self.wfile.write(piece)
        if chunked:
            self.write_chunk(b"")


class FakeServer:
    """Threaded loopback HTTP server driven by a test-supplied ``handler``.

    ``handler(method, path, headers, body_reader) -> (status, headers, body)``: ``path`` includes the query,
    ``headers`` has lower-cased names, ``body_reader`` is a :class:`BodyReader` (unread body is drained afterwards).
    ``Content-Length`` is added for ``bytes`` bodies; iterables are sent chunked unless ``Content-Length`` is set.
    ``tls`` (a server-side ``ssl.SSLContext``) serves HTTPS. Every request is appended to ``.log`` (``method``, ``path``, ``headers``, ``status``, ``time``); exceptions raised
    by the handler become a 500 and are kept in ``.errors``.
    """

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.log: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self._httpd = LoopbackHTTPServer(_FakeHandler, self, tls)
        self.host = self._httpd.host
        self.url = f"{'https' if tls else 'http'}://{self.host}"

    def stop(self) -> None:
        """Shut the server down."""
        self._httpd.stop()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
