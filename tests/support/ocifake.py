"""An in-process, in-memory OCI registry with the native referrers API (distribution-spec v1.1.1 subset).

``OciFake()`` serves at once on ``http://127.0.0.1:<port>`` (``.host``, ``.url``) through
:class:`support.fakeserver.FakeServer`, so httpx clients and CLI subprocesses can talk to it; ``stop()`` shuts it
down. ``.log`` lists every request, ``.errors`` the exceptions the handler raised (each answered with a 500).

Implemented: ``GET /v2/``; blob HEAD/GET (``Range`` → 206); uploads — ``POST`` (202 + ``Location``;
``?mount=&from=`` → 201 when the other repository has the blob; ``?digest=`` with the body → 201), ``PATCH``
(streamed body, optional ``Content-Range``), ``PUT ?digest=`` (with or without a body, sha256 verified), ``GET``
status, ``DELETE``; manifests GET/HEAD/PUT/DELETE by tag or digest (exact bytes and ``Content-Type`` kept; PUT
checks the referenced blobs/manifests exist and answers ``OCI-Subject`` when the manifest has a ``subject``);
``tags/list``; ``GET /v2/<name>/referrers/<digest>[?artifactType=]`` (paginated by ``Link`` when
``referrers_page_size`` is set; ``referrers_api=False`` answers it ``404 text/plain`` like distribution 2.8.2 while
manifest PUTs still confirm ``OCI-Subject``, as ECR did). Manifest GET/HEAD send ``ETag: "<digest>"``; a manifest
PUT honours ``If-Match: "<digest>"`` and ``If-None-Match: *`` against the tag's current digest, atomically (412 on
mismatch), unless ``conditional=False`` (then they are ignored, as distribution 2.8.2 does). ``after_manifest_put``,
when set, is called with (repository, reference, digest) after each manifest PUT is stored, outside the lock (tests
use it to land another writer's PUT at an exact moment). Anything else is answered 404/405 with an OCI error body.
No auth.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from .fakeserver import BodyReader, FakeServer, HeaderItems

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MAX_MANIFEST = 4 << 20
Response = tuple[int, HeaderItems, bytes]

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_ROUTE = re.compile(rf"^/v2/(?P<name>{_COMPONENT}(?:/{_COMPONENT})*)"
                    r"/(?P<kind>blobs/uploads|blobs|manifests|tags|referrers)(?:/(?P<ref>[^/]*))?$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _error(status: int, code: str, message: str, headers: HeaderItems | None = None) -> Response:
    body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
    return status, {"Content-Type": "application/json", **dict(headers or {})}, body


@dataclass
class StoredManifest:
    data: bytes
    media_type: str
    obj: dict[str, Any]


@dataclass
class Repo:
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, StoredManifest] = field(default_factory=dict)  # digest -> manifest, in push order
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest


class OciFake:
    """In-memory registry; ``repos`` maps repository name → :class:`Repo` (inspect it from tests)."""

    def __init__(self, *, referrers_page_size: int | None = None, referrers_api: bool = True,
                 conditional: bool = True) -> None:
        self.repos: dict[str, Repo] = {}
        self.conditional = conditional
        self.after_manifest_put: Callable[[str, str, str], None] | None = None
        #: Answer this many of the next manifest PUTs as distribution does when it reads a blob link that another
        #: upload of the same blob is rewriting in place: 400 DIGEST_INVALID + MANIFEST_BLOB_UNKNOWN.
        self.torn_link_puts = 0
        self.uploads: dict[str, tuple[str, bytearray]] = {}  # session id -> (repository, bytes so far)
        self.referrers_page_size = referrers_page_size
        self.referrers_api = referrers_api
        self._lock = threading.Lock()
        self._server = FakeServer(self._handle)
        self.host, self.url = self._server.host, self._server.url
        self.log, self.errors = self._server.log, self._server.errors

    def stop(self) -> None:
        self._server.stop()

    def requests(self, method: str, contains: str = "") -> list[dict[str, Any]]:
        """Logged requests of ``method`` whose path contains ``contains``."""
        return [e for e in self.log if e["method"] == method and contains in e["path"]]

    # -- dispatch ------------------------------------------------------------------------------------
    def _handle(self, method: str, path: str, headers: dict[str, str], body: BodyReader) -> Response:
        parts = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/v2/":
            return 200, {"Content-Type": "application/json", "Docker-Distribution-API-Version": "registry/2.0"}, b"{}"
        m = _ROUTE.match(parts.path)
        if m is None:
            return _error(404, "NAME_INVALID", f"no route for {parts.path}")
        name, kind, ref = m["name"], m["kind"], m["ref"]
        handler = {"blobs/uploads": self._uploads, "blobs": self._blobs, "manifests": self._manifests,
                   "tags": self._tags, "referrers": self._referrers}[kind]
        return handler(method, name, ref or "", query, headers, body)

    def _repo(self, name: str) -> Repo | None:
        return self.repos.get(name)

    # -- blobs ---------------------------------------------------------------------------------------
    def _blobs(self, method: str, name: str, digest: str, query: dict[str, str], headers: dict[str, str],
               body: BodyReader) -> Response:
        if method not in ("GET", "HEAD"):
            return _error(405, "UNSUPPORTED", f"{method} on a blob")
        data = (self._repo(name) or Repo()).blobs.get(digest)
        if data is None:
            return _error(404, "BLOB_UNKNOWN", f"blob {digest} unknown to {name}")
        base = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest, "Accept-Ranges": "bytes"}
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", headers.get("range", ""))
        if rng is None or method == "HEAD":
            return 200, base, data
        start, end = int(rng[1]), int(rng[2]) if rng[2] else len(data) - 1
        if start >= len(data) or end < start:
            return 416, {"Content-Range": f"bytes */{len(data)}"}, b""
        end = min(end, len(data) - 1)
        return 206, {**base, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, data[start:end + 1]

    def _uploads(self, method: str, name: str, session: str, query: dict[str, str], headers: dict[str, str],
                 body: BodyReader) -> Response:
        if method == "POST" and not session:
            mount, source = query.get("mount"), query.get("from")
            with self._lock:
                blob = (self._repo(source) or Repo()).blobs.get(mount or "") if source else None
                if blob is not None:
                    self.repos.setdefault(name, Repo()).blobs[mount or ""] = blob
                    return 201, {"Location": f"/v2/{name}/blobs/{mount}", "Docker-Content-Digest": mount or ""}, b""
            if "digest" in query:  # single-POST monolithic upload
                return self._store_blob(name, query["digest"], body.read())
            session = uuid.uuid4().hex
            with self._lock:
                self.uploads[session] = (name, bytearray())
            return 202, self._session_headers(name, session, 0), b""
        with self._lock:
            owner, buf = self.uploads.get(session, ("", bytearray()))
        if owner != name:
            return _error(404, "BLOB_UPLOAD_UNKNOWN", f"upload {session} unknown to {name}")
        if method == "GET":
            return 204, self._session_headers(name, session, len(buf)), b""
        if method == "DELETE":
            with self._lock:
                self.uploads.pop(session, None)
            return 204, {}, b""
        if method == "PATCH":
            crange = headers.get("content-range")
            if crange is not None:
                cm = re.fullmatch(r"(\d+)-(\d+)", crange)
                if cm is None or int(cm[1]) != len(buf):
                    return _error(416, "RANGE_INVALID", f"chunk {crange!r} does not start at {len(buf)}",
                                  self._session_headers(name, session, len(buf)))
            for piece in body:
                buf += piece
            return 202, self._session_headers(name, session, len(buf)), b""
        if method == "PUT":
            for piece in body:
                buf += piece
            with self._lock:
                self.uploads.pop(session, None)
            return self._store_blob(name, query.get("digest", ""), bytes(buf))
        return _error(405, "UNSUPPORTED", f"{method} on an upload")

    @staticmethod
    def _session_headers(name: str, session: str, size: int) -> dict[str, str]:
        return {"Location": f"/v2/{name}/blobs/uploads/{session}", "Range": f"0-{max(size - 1, 0)}",
                "Docker-Upload-UUID": session}

    def _store_blob(self, name: str, digest: str, data: bytes) -> Response:
        if not _DIGEST.match(digest) or _sha256(data) != digest:
            return _error(400, "DIGEST_INVALID", f"content hashes to {_sha256(data)}, not {digest!r}")
        with self._lock:
            self.repos.setdefault(name, Repo()).blobs[digest] = data
        return 201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest}, b""

    # -- manifests -----------------------------------------------------------------------------------
    def _manifests(self, method: str, name: str, ref: str, query: dict[str, str], headers: dict[str, str],
                   body: BodyReader) -> Response:
        if method == "PUT":
            resp = self._put_manifest(name, ref, headers.get("content-type", "").split(";")[0].strip(),
                                      body.read(MAX_MANIFEST + 1), headers)
            if resp[0] == 201 and self.after_manifest_put is not None:
                self.after_manifest_put(name, ref, dict(resp[1])["Docker-Content-Digest"])
            return resp
        repo = self._repo(name) or Repo()
        with self._lock:
            digest = ref if _DIGEST.match(ref) else repo.tags.get(ref, "")
            stored = repo.manifests.get(digest)
            if stored is not None and method == "DELETE":
                if ref == digest:
                    del repo.manifests[digest]
                    repo.tags = {t: d for t, d in repo.tags.items() if d != digest}
                else:
                    del repo.tags[ref]
                return 202, {}, b""
        if stored is None:
            return _error(404, "MANIFEST_UNKNOWN", f"manifest {ref} unknown to {name}")
        if method not in ("GET", "HEAD"):
            return _error(405, "UNSUPPORTED", f"{method} on a manifest")
        return 200, {"Content-Type": stored.media_type, "Docker-Content-Digest": digest, "ETag": f'"{digest}"'}, \
            stored.data

    @staticmethod
    def _precondition(headers: dict[str, str], current: str | None) -> bool:
        """RFC 9110 §13.1.1/13.1.2 for a tag: If-Match needs the tag to exist with one of the listed ETags,
        If-None-Match: * needs it not to exist."""
        if "if-match" in headers:
            tags = {t.strip().removeprefix("W/").strip('"') for t in headers["if-match"].split(",")}
            if current is None or ("*" not in tags and current not in tags):
                return False
        if "if-none-match" in headers:
            tags = {t.strip().removeprefix("W/").strip('"') for t in headers["if-none-match"].split(",")}
            if current is not None and ("*" in tags or current in tags):
                return False
        return True

    def _put_manifest(self, name: str, ref: str, media_type: str, data: bytes,
                      headers: dict[str, str] | None = None) -> Response:
        if len(data) > MAX_MANIFEST:
            return _error(413, "MANIFEST_INVALID", "manifest over 4 MiB")
        digest = _sha256(data)
        if ":" in ref and ref != digest:
            return _error(400, "DIGEST_INVALID", f"manifest hashes to {digest}, not {ref}")
        if ":" not in ref and not _TAG.match(ref):
            return _error(400, "TAG_INVALID", f"invalid tag {ref!r}")
        try:
            obj = json.loads(data)
        except ValueError:
            return _error(400, "MANIFEST_INVALID", "not JSON")
        if not isinstance(obj, dict) or not media_type or obj.get("mediaType", media_type) != media_type:
            return _error(400, "MANIFEST_INVALID", f"Content-Type {media_type!r} does not match the manifest")
        with self._lock:
            repo = self.repos.setdefault(name, Repo())
            wanted = [(d, repo.blobs) for d in [obj.get("config"), *obj.get("layers", [])] if isinstance(d, dict)]
            wanted += [(d, repo.manifests) for d in obj.get("manifests", []) if isinstance(d, dict)]
            missing = [d.get("digest") for d, store in wanted if d.get("digest") not in store]
            if self.torn_link_puts > 0 and wanted:
                self.torn_link_puts -= 1
                body = {"errors": [{"code": "DIGEST_INVALID", "message": "provided digest did not match uploaded "
                                    "content"}, {"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to "
                                    "registry", "detail": wanted[0][0].get("digest")}]}
                return 400, {"Content-Type": "application/json"}, json.dumps(body).encode()
            if missing:
                return _error(400, "MANIFEST_BLOB_UNKNOWN", f"unknown to {name}: {', '.join(map(str, missing))}")
            if self.conditional and ref != digest and not self._precondition(headers or {}, repo.tags.get(ref)):
                return _error(412, "PRECONDITION_FAILED", f"tag {ref} is at {repo.tags.get(ref) or 'nothing'}")
            repo.manifests[digest] = StoredManifest(data, media_type, obj)
            if ref != digest:
                repo.tags[ref] = digest
        out = {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest}
        subject = obj.get("subject")
        if isinstance(subject, dict) and subject.get("digest"):
            out["OCI-Subject"] = subject["digest"]
        return 201, out, b""

    # -- tags and referrers --------------------------------------------------------------------------
    def _tags(self, method: str, name: str, ref: str, query: dict[str, str], headers: dict[str, str],
              body: BodyReader) -> Response:
        repo = self._repo(name)
        if ref != "list" or method != "GET":
            return _error(405, "UNSUPPORTED", f"{method} tags/{ref}")
        if repo is None:
            return _error(404, "NAME_UNKNOWN", f"repository {name} unknown")
        return 200, {"Content-Type": "application/json"}, json.dumps({"name": name, "tags": sorted(repo.tags)}).encode()

    def _referrers(self, method: str, name: str, digest: str, query: dict[str, str], headers: dict[str, str],
                   body: BodyReader) -> Response:
        if not self.referrers_api:
            return 404, {"Content-Type": "text/plain; charset=utf-8"}, b"404 page not found\n"
        if method != "GET":
            return _error(405, "UNSUPPORTED", f"{method} on referrers")
        if not _DIGEST.match(digest):
            return _error(400, "DIGEST_INVALID", f"invalid digest {digest!r}")
        with self._lock:
            stored = list((self._repo(name) or Repo()).manifests.items())
        entries: list[dict[str, Any]] = []
        for d, m in stored:
            if (m.obj.get("subject") or {}).get("digest") != digest:
                continue
            entry = {"mediaType": m.media_type, "digest": d, "size": len(m.data)}
            artifact_type = m.obj.get("artifactType") or (m.obj.get("config") or {}).get("mediaType")
            if artifact_type:
                entry["artifactType"] = artifact_type
            if m.obj.get("annotations"):
                entry["annotations"] = m.obj["annotations"]
            entries.append(entry)
        out: dict[str, str] = {"Content-Type": OCI_INDEX}
        wanted = query.get("artifactType")
        if wanted:
            entries = [e for e in entries if e.get("artifactType") == wanted]
            out["OCI-Filters-Applied"] = "artifactType"
        if self.referrers_page_size:
            start = int(query.get("page", "0"))
            if start + self.referrers_page_size < len(entries):
                nxt = {**query, "page": str(start + self.referrers_page_size)}
                out["Link"] = f'</v2/{name}/referrers/{digest}?{urlencode(nxt)}>; rel="next"'
            entries = entries[start:start + self.referrers_page_size]
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        return 200, out, json.dumps(index).encode()
