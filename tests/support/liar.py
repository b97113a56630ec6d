"""A registry that lies about sizes: every response body it is told to make endless is streamed until the client
hangs up (or ``cap`` bytes, so a client without limits is slowed down, not the machine killed), and it counts what
it managed to hand to the socket. Built on :class:`support.fakeserver.FakeServer`.

``LyingRegistry(mode)`` modes:

* ``"401"``, ``"404"``, ``"500"``: every request gets that status with an endless body;
* ``"tags"``: the tag list is an endless JSON document;
* ``"referrers"``: the referrers API answers an endless OCI index;
* ``"config"``: manifest ``a/b:v1`` is served honestly, its 100-byte config blob is endless;
* ``"tag-pages"``, ``"referrer-pages"``: honest small pages, each with a same-origin ``Link: rel="next"``, forever.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from typing import Any

from .fakeserver import FakeServer

PIECE = 64 << 10
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class LyingRegistry:
    def __init__(self, mode: str, cap: int = 1 << 30) -> None:
        self.mode = mode
        self.cap = cap
        self.sent = 0  # body bytes handed to the socket, over all responses
        self.pages = 0
        self._lock = threading.Lock()
        config = b'{"x":' + b'"' + b"c" * 92 + b'"}'
        self.config = config
        self.config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.example.config+json", "digest": self.config_digest,
                       "size": len(config)},
            "layers": []}).encode()
        self.manifest_digest = "sha256:" + hashlib.sha256(self.manifest).hexdigest()
        self._server = FakeServer(self._handle)
        self.host = self._server.host

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> LyingRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def endless(self, head: bytes = b"", filler: bytes = b"x") -> Iterator[bytes]:
        piece = (filler * (PIECE // len(filler) + 1))[:PIECE]
        sent = 0
        if head:
            yield head
        while sent < self.cap:
            with self._lock:
                self.sent += len(piece)
            sent += len(piece)
            yield piece

    def _handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any, Any]:
        mode = self.mode
        if path == "/v2/":
            return 200, {"Content-Type": "application/json"}, b"{}"
        if mode in ("401", "404", "500"):
            return int(mode), {"Content-Type": "application/json"}, self.endless(b'{"errors":[{"code":"X","message":"')
        if mode == "tags" and "/tags/list" in path:
            return 200, {"Content-Type": "application/json"}, self.endless(b'{"name":"a/b","tags":[', b'"t",')
        if mode == "tag-pages" and "/tags/list" in path:
            self.pages += 1
            return 200, {"Content-Type": "application/json",
                         "Link": f'</v2/a/b/tags/list?n=1&last=t{self.pages}>; rel="next"'}, \
                json.dumps({"name": "a/b", "tags": [f"t{self.pages}"]}).encode()
        if mode == "referrers" and "/referrers/" in path:
            return 200, {"Content-Type": OCI_INDEX}, self.endless(b'{"schemaVersion":2,"mediaType":"' +
                                                                  OCI_INDEX.encode() + b'","manifests":[', b" ")
        if mode == "referrer-pages" and "/referrers/" in path:
            self.pages += 1
            entry = {"mediaType": OCI_MANIFEST, "size": 10, "artifactType": "application/vnd.example",
                     "digest": "sha256:" + hashlib.sha256(str(self.pages).encode()).hexdigest()}
            return 200, {"Content-Type": OCI_INDEX, "Link": f'<{path.split("?")[0]}?page={self.pages}>; rel="next"'}, \
                json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()
        if "/manifests/" in path:
            ref = path.rsplit("/", 1)[1]
            if ref in ("v1", self.manifest_digest):
                h = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": self.manifest_digest,
                     "Content-Length": str(len(self.manifest))}
                return 200, h, b"" if method == "HEAD" else self.manifest
            return 404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'
        if mode == "config" and self.config_digest in path:
            return 200, {"Content-Type": "application/octet-stream"}, self.endless(self.config)
        return 404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"NAME_UNKNOWN"}]}'
