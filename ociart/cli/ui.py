"""``ociart ui``: serve the read-only web view (:mod:`ociart.ui`)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import LocalIOError
from .app import CaOpt, InsecureOpt, JsonOpt, PlainOpt, PolicyOpt, _err, app

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def ui(
    targets: Annotated[list[str] | None, typer.Argument(
        help="What to show: registry hosts (HOST[:PORT]), repositories, oci:PATH; default: the embedded store.")] = None,
    policy: PolicyOpt = None,
    retention: Annotated[Path | None, typer.Option(
        "--retention", help="Retention policy file (kind: RetentionPolicy): the Retention plan page shows what "
                            "`ociart gc` would delete (a dry run).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind (the app has no authentication).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: a free one).")] = 0,
    open_: Annotated[bool, typer.Option("--open", help="Open the page in a browser.")] = False,
    plain_http: PlainOpt = False, insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Serve a local, read-only web view of artifacts, files, lineage, signatures, promotions, the audit log and a
    retention plan (dry run); prints the URL."""
    from ..ui import require

    require()
    from ..lifecycle import load_retention_policy
    from ..ui.app import create_app
    from ..ui.service import View

    retention_policy = load_retention_policy(retention) if retention is not None else None
    view = View(list(targets or []), policy=policy,
                client_options={"plain_http": plain_http, "insecure": insecure, "ca_file": ca_file})
    if host not in LOOPBACK:
        _err(f"warning: --host {host}: the app has no authentication; anyone who can reach {host} can read every "
             "artifact it serves")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise LocalIOError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"http://{shown}:{bound}/"
    allowed = ["127.0.0.1", "localhost", "[::1]"] if host in LOOPBACK else ["*"]
    application = create_app(view, allowed_hosts=allowed, retention=retention_policy)
    if as_json:
        # one line: the server keeps running after it, so a reader takes the first line
        sys.stdout.write(json.dumps({"url": url, "sources": [s.model_dump() for s in view.sources]}) + "\n")
    else:
        print(url)
    sys.stdout.flush()
    if open_:
        import webbrowser

        webbrowser.open(url)
    import uvicorn

    config = uvicorn.Config(application, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()

