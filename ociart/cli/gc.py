"""``ociart gc``: retention by policy (the work is in :mod:`ociart.lifecycle`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .app import (
    CaOpt,
    InsecureOpt,
    JsonOpt,
    PassStdinOpt,
    PlainOpt,
    UserOpt,
    _client,
    _err,
    _out,
    app,
)


@app.command()
def gc(
    policy: Annotated[Path, typer.Option("--policy", help="Retention policy file (YAML, kind: RetentionPolicy).")],
    repositories: Annotated[list[str] | None, typer.Argument(
        help="Repositories to collect (default: every repository of the registries the policy names; with --local, "
             "of the embedded store).")] = None,
    apply: Annotated[bool, typer.Option(
        "--apply", help="Carry the plan out (default: print it and change nothing).")] = False,
    local: Annotated[bool, typer.Option(
        "--local", help="The embedded store: apply the policy, then sweep unreferenced blobs, stale partial "
                        "downloads and the digest cache.")] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64, help="Parallel requests.")] = 8,
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Plan (and with --apply carry out) a retention policy: what is kept, archived and deleted, and why."""
    from ..lifecycle import load_retention_policy

    loaded = load_retention_policy(policy)
    with _client(username, password_stdin, plain_http, insecure, ca_file, concurrency, as_json) as c:
        result = c.gc(loaded, repositories or None, apply=apply, local=local, concurrency=concurrency)
    if as_json:
        _out(result)
        return
    from ..progress import human_size
    from .render import table

    plan = result.plan
    for w in plan.warnings:
        _err(f"warning: {w}")
    rows = [(i.action, i.repository, ",".join(i.tags) or "<none>", i.digest, i.created or "-", human_size(i.size),
             "; ".join(i.reasons)) for i in plan.items]
    table(sys.stdout, None, ("action", "repository", "tags", "digest", "created", "size", "reason"), rows)
    counts = {a: sum(1 for i in plan.items if i.action == a) for a in ("keep", "archive", "delete")}
    summary = (f"{counts['keep']} kept, {counts['archive']} archived, {counts['delete']} deleted; "
               f"{human_size(plan.reclaimable)} reclaimable")
    if not apply:
        _err(f"plan: {summary} (nothing changed; --apply carries it out)")
        return
    done = sum(1 for a in result.applied if a.action != "already-gone")
    line = f"applied: {summary}; {done} artifact(s) removed"
    if result.repaired:
        line += f"; {len(result.repaired)} referrers index entr(y/ies) repaired"
    if result.local is not None:
        s = result.local
        line += (f"; swept {s.blobs} blob(s) ({human_size(s.blob_bytes)}), {s.partials} partial download(s) "
                 f"({human_size(s.partial_bytes)}), {s.cache_rows} digest-cache row(s)")
    if local:
        line += f"; {human_size(result.freed_bytes)} freed ({result.freed_bytes} bytes)"
    else:
        line += "; run the registry's garbage collection to free the blobs (docs/lifecycle.md)"
    _err(line)
