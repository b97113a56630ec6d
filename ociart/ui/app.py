"""The web app: a JSON API (``/api/...``, the models of :mod:`ociart.ui.service`, which are the CLI's ``--json``
models where the CLI has one) and HTML pages rendered from the same models. Read-only.

Security: Jinja autoescaping everywhere plus control/bidi characters made visible (:func:`ociart.text.escape`);
every response carries a strict Content-Security-Policy (scripts, styles and images only from this app, no inline
script, no framing, forms only to this app), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``;
the Host header must be one the app was started for (DNS rebinding); downloads are restored through the pull
machinery into a temp directory (digest-verified, never whole in memory), then streamed as
``application/octet-stream`` with a sanitised ``Content-Disposition`` file name.
"""

from __future__ import annotations

import glob
import html
import json
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..errors import (
    AuthError,
    NotFoundError,
    OciartError,
    UsageError,
    VerificationError,
)
from ..lifecycle import RetentionPolicy
from ..text import escape
from .retention import retention_plan
from .service import View

HERE = Path(__file__).parent
log = logging.getLogger("ociart.ui")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class SecurityHeaders:
    """ASGI middleware: the security headers on every response (pages, API, static files, errors)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in names]
                if scope["path"].startswith("/api/") or scope["path"] == "/download":
                    message["headers"].append((b"cache-control", b"no-store"))
            await send(message)

        await self.app(scope, receive, with_headers)


def safe_filename(path: str) -> str:
    """The last component of ``path`` reduced to ``[A-Za-z0-9._-]`` (others become ``_``), no leading dot."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", path.rsplit("/", 1)[-1])[:128].lstrip(".")
    return name or "download"


def _status(exc: OciartError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, AuthError):
        return 403
    if isinstance(exc, VerificationError):
        return 422
    return 502


def _dump(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", exclude_none=True, by_alias=True)
    if isinstance(obj, list):
        return [_dump(o) for o in obj]
    return obj


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"{name}: not a number") from None


def _arg(request: Request, name: str, required: bool = True) -> str | None:
    value = request.query_params.get(name)
    if required and not value:
        raise UsageError(f"missing parameter {name!r}")
    return value or None


def _size(n: Any) -> str:
    try:
        v = float(n)
    except (TypeError, ValueError):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if v < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return ""


def _short(digest: Any) -> str:
    text = str(digest or "")
    return text[:19] if text.startswith("sha256:") else text


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}``: control and bidi characters shown as escapes (autoescape then HTML-escapes it).
    Markup passes as is: only :func:`_pretty` makes it, from text it has escaped itself."""
    if isinstance(value, Markup):
        return value
    return escape(value) if isinstance(value, str) else ("" if value is None else value)


def _pretty(value: Any) -> Markup:
    """JSON for a ``<pre>``: indented (its newlines kept), every string's control characters JSON-escaped
    (``ensure_ascii``), bidi and other non-ASCII characters as ``\\uXXXX``, then HTML-escaped."""
    return Markup(html.escape(json.dumps(value, indent=2, ensure_ascii=True)))


def create_app(view: View, *, allowed_hosts: list[str] | None = None,
               retention: RetentionPolicy | None = None) -> Starlette:
    """The app serving ``view``. ``allowed_hosts``: Host header values accepted (default: loopback names);
    ``retention``: the policy whose dry-run plan ``/retention`` shows."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.autoescape = True
    env.finalize = _finalize
    env.filters["size"] = _size
    env.filters["short"] = _short
    env.filters["escape_text"] = escape
    env.filters["pretty"] = _pretty
    env.globals["sources"] = view.sources
    env.globals["retention"] = retention is not None
    env.globals["urlencode"] = lambda **kw: urlencode({k: v for k, v in kw.items() if v not in (None, "")})
    lock = threading.RLock()  # one request at a time talks to the stores (the Client's targets are shared)

    def page(name: str) -> Callable[[Callable[[Request], dict[str, Any] | Response]], Callable[[Request], Response]]:
        def wrap(fn: Callable[[Request], dict[str, Any] | Response]) -> Callable[[Request], Response]:
            def endpoint(request: Request) -> Response:
                try:
                    with lock:
                        ctx = fn(request)
                except OciartError as exc:
                    return templates.TemplateResponse(request, "error.html", {"error": str(exc), "code": exc.kind},
                                                      status_code=_status(exc))
                except Exception as exc:
                    log.exception("ociart ui: %s failed", request.url.path)
                    return templates.TemplateResponse(request, "error.html", {
                        "error": f"internal error ({type(exc).__name__})", "code": "internal"}, status_code=500)
                if isinstance(ctx, Response):
                    return ctx
                return templates.TemplateResponse(request, name, {"policy": view.policy is not None, **ctx})
            return endpoint
        return wrap

    def api(fn: Callable[[Request], Any]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            try:
                with lock:
                    return JSONResponse(_dump(fn(request)))
            except OciartError as exc:
                return JSONResponse({"error": str(exc), "code": exc.kind, "exit_code": exc.exit_code},
                                    status_code=_status(exc))
            except Exception as exc:
                log.exception("ociart ui: %s failed", request.url.path)
                return JSONResponse({"error": f"internal error ({type(exc).__name__})", "code": "internal",
                                     "exit_code": 1}, status_code=500)
        return endpoint

    def sid(request: Request) -> int:
        return _int(request, "s", 0)

    def pinned(request: Request) -> tuple[int, str, str]:
        """(source, repository, digest) from ``s``, ``repo`` and ``digest`` (or ``tag``, resolved once)."""
        s, repo = sid(request), request.query_params.get("repo", "")
        digest = _arg(request, "digest", required=False)
        if digest is None:
            digest = view.resolve(s, repo, _arg(request, "tag") or "")
        return s, repo, digest

    # -- API ----------------------------------------------------------------------------------------------
    def api_artifacts(request: Request) -> Any:
        return view.artifacts(sid(request), kind=_arg(request, "kind", False), q=_arg(request, "q", False),
                              page=_int(request, "page", 1), per_page=_int(request, "per_page", 50))

    def api_lineage(request: Request) -> Any:
        s, repo, digest = pinned(request)
        if request.query_params.get("downstream"):
            return view.client.lineage(view.ref(s, repo, digest), downstream=view.repositories(s))
        return view.client.lineage(view.ref(s, repo, digest))

    def api_compare(request: Request) -> Any:
        s, repo = sid(request), request.query_params.get("repo", "")
        return view.compare(s, repo, _arg(request, "old") or "", request.query_params.get("new_repo", repo),
                            _arg(request, "new") or "")

    def api_diff(request: Request) -> Any:
        s, repo = sid(request), request.query_params.get("repo", "")
        new_repo = request.query_params.get("new_repo", repo)
        return view.client.diff(view.ref(s, repo, _arg(request, "old")), view.ref(s, new_repo, _arg(request, "new")))

    def api_audit(request: Request) -> Any:
        return view.audit(repository=_arg(request, "repository", False), action=_arg(request, "action", False),
                          actor=_arg(request, "actor", False))

    def api_retention(request: Request) -> Any:
        return retention_plan(view, retention, sid(request), request.query_params.get("repo", "")).result

    api_routes = [
        Route("/api/sources", api(lambda r: view.sources)),
        Route("/api/artifacts", api(api_artifacts)),
        Route("/api/artifact", api(lambda r: view.artifact(*pinned(r)))),
        Route("/api/inspect", api(lambda r: view.inspect(*pinned(r)))),
        Route("/api/referrers", api(lambda r: {"referrers": _dump(view.referrers(*pinned(r)))})),
        Route("/api/verify", api(lambda r: view.verify(*pinned(r)))),
        Route("/api/lineage", api(api_lineage)),
        Route("/api/graph", api(lambda r: view.lineage(*pinned(r)))),
        Route("/api/diff", api(api_diff)),
        Route("/api/compare", api(api_compare)),
        Route("/api/audit", api(api_audit)),
        Route("/api/retention", api(api_retention)),
        Route("/api/history", api(lambda r: view.history(sid(r), r.query_params.get("repo", ""),
                                                         _arg(r, "tag") or ""))),
    ]

    # -- pages --------------------------------------------------------------------------------------------
    @page("artifacts.html")
    def artifacts_page(request: Request) -> dict[str, Any]:
        result = view.artifacts(sid(request), kind=_arg(request, "kind", False), q=_arg(request, "q", False),
                                page=_int(request, "page", 1), per_page=_int(request, "per_page", 50))
        pages = max(1, -(-result.total // result.per_page))
        return {"result": result, "pages": pages,
                "kinds": ["model", "dataset", "preprocessor", "checkpoint", "report", "modelkit", "generic", "index"]}

    @page("artifact.html")
    def artifact_page(request: Request) -> dict[str, Any] | Response:
        if not request.query_params.get("digest"):
            s, repo, digest = pinned(request)
            return RedirectResponse(f"/artifact?{urlencode({'s': s, 'repo': repo, 'digest': digest})}", 303)
        a = view.artifact(*pinned(request))
        return {"a": a, "i": a.inspection}

    @page("lineage.html")
    def lineage_page(request: Request) -> dict[str, Any]:
        from .layout import layout

        s, repo, digest = pinned(request)
        graph = view.lineage(s, repo, digest)
        return {"graph": graph, "drawing": layout(graph), "s": s, "repo": repo, "digest": digest}

    @page("compare.html")
    def compare_page(request: Request) -> dict[str, Any]:
        s, repo = sid(request), request.query_params.get("repo", "")
        new_repo = request.query_params.get("new_repo") or repo
        old, new = _arg(request, "old") or "", _arg(request, "new") or ""
        if not old.startswith("sha256:"):
            old = view.resolve(s, repo, old)
        if not new.startswith("sha256:"):
            new = view.resolve(s, new_repo, new)
        return {"c": view.compare(s, repo, old, new_repo, new), "s": s, "repo": repo, "new_repo": new_repo,
                "old": old, "new": new}

    @page("audit.html")
    def audit_page(request: Request) -> dict[str, Any]:
        return {"v": view.audit(repository=_arg(request, "repository", False), action=_arg(request, "action", False),
                                actor=_arg(request, "actor", False)),
                "f": {k: request.query_params.get(k, "") for k in ("repository", "action", "actor")}}

    @page("history.html")
    def history_page(request: Request) -> dict[str, Any]:
        s = sid(request)
        return {"h": view.history(s, request.query_params.get("repo", ""), _arg(request, "tag") or ""), "s": s}

    @page("retention.html")
    def retention_page(request: Request) -> dict[str, Any]:
        return {"r": retention_plan(view, retention, sid(request), request.query_params.get("repo", ""))}

    def download(request: Request) -> Response:
        """One file of an artifact: restored by pull (digest-verified, atomically placed) into a temp directory,
        then streamed; the temp directory is removed when the response is done."""
        tmp = None
        try:
            with lock:
                s, repo, digest = pinned(request)
                path = _arg(request, "path") or ""
                ref = view.ref(s, repo, digest)
                if path not in view.files(s, repo, digest):
                    raise NotFoundError(f"{ref}: no file {path!r}")
                tmp = tempfile.mkdtemp(prefix="ociart-ui-")
                view.client.pull(ref, tmp, include=[glob.escape(path)])
            local = Path(tmp, path)
            if local.is_symlink() or not local.is_file():
                raise NotFoundError(f"{ref}: {path!r} is not a regular file")
        except OciartError as exc:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            return JSONResponse({"error": str(exc), "code": exc.kind, "exit_code": exc.exit_code},
                                status_code=_status(exc))
        return FileResponse(local, media_type="application/octet-stream",
                            headers={"content-disposition": f'attachment; filename="{safe_filename(path)}"'},
                            background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))

    routes = [
        Route("/", lambda r: RedirectResponse("/artifacts", 303)),
        Route("/artifacts", artifacts_page),
        Route("/artifact", artifact_page),
        Route("/lineage", lineage_page),
        Route("/compare", compare_page),
        Route("/audit", audit_page),
        Route("/history", history_page),
        Route("/retention", retention_page),
        Route("/download", download),
        *api_routes,
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    hosts = allowed_hosts or ["127.0.0.1", "localhost", "[::1]"]
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders),
                                                Middleware(TrustedHostMiddleware, allowed_hosts=hosts)])


__all__ = ["CSP", "create_app", "safe_filename"]
