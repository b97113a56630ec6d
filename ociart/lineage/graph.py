"""Lineage queries: what an artifact was made from (upstream, from provenance statements) and what was made from
it (downstream, from the ``dev.ociart.inputs+json`` summaries of artifacts in the given repositories)."""

from __future__ import annotations

import json
from collections import deque
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, JsonValue

from .. import limits
from ..errors import OciartError, UsageError
from ..oci import Content, Manifest
from ..packaging.kinds import KIND_SPECS, Kind
from ..packaging.metadata import A_METRICS
from ..targets.referrers import list_referrers
from .record import A_INPUTS, read_statements, uri_ref

REPORT_TYPE = KIND_SPECS[Kind.REPORT].artifact_type

if TYPE_CHECKING:
    from ..client import Client


class Node(BaseModel):
    """One artifact (or code/parameters leaf) in a lineage graph."""

    kind: str  # model, dataset, … for artifacts; "code", "params", "file" for leaves
    name: str
    ref: str | None = None
    digest: str | None = None
    artifactType: str | None = None
    details: dict[str, JsonValue] = Field(default_factory=dict)
    children: list[Node] = Field(default_factory=list)


def _artifact_node(client: Client, ref: str) -> tuple[Node, str, Any]:
    pinned, content = client.manifest(ref)
    return _node_of(pinned, content), content.digest, pinned


def _node_of(pinned: Any, content: Content) -> Node:
    node = content.parse()
    annotations = node.annotations or {}
    artifact_type = node.artifactType if not isinstance(node, Manifest) else (
        node.artifactType or node.config.mediaType)
    from ..packaging.kinds import detect_kind

    kind = detect_kind(artifact_type, node.config.mediaType if isinstance(node, Manifest) else "", annotations)
    return Node(kind=kind, name=annotations.get("org.opencontainers.image.title") or pinned.repository or str(pinned),
                ref=str(pinned), digest=content.digest, artifactType=artifact_type)


def upstream(client: Client, ref: str, depth: int = 10, _seen: set[str] | None = None) -> Node:
    """The artifact and, recursively, the datasets, preprocessors, base models, code and parameters it came from."""
    seen = _seen if _seen is not None else set()
    node, digest, pinned = _artifact_node(client, ref)
    if digest in seen or depth <= 0:
        return node
    seen.add(digest)
    target = client.target(pinned)
    reports = []
    for rep in list_referrers(target, pinned.repository, digest, REPORT_TYPE):
        metrics = (rep.annotations or {}).get(A_METRICS)
        reports.append({"digest": rep.digest, "metrics": json.loads(metrics) if metrics else None})
    if reports:
        node.details["reports"] = reports
    statements = read_statements(target, pinned.repository, digest)
    if not statements:
        return node
    stmt = statements[0]
    bd = stmt.predicate.buildDefinition
    md = stmt.predicate.runDetails.metadata
    node.details |= {k: v for k, v in {
        "run": md.invocationId if md else None, "finishedOn": md.finishedOn if md else None,
        "metrics": bd.externalParameters.metrics}.items() if v}
    for dep in stmt.inputs():
        if dep.digest and "gitCommit" in dep.digest:
            node.children.append(Node(kind="code", name=dep.uri or "git", digest=dep.digest["gitCommit"],
                                      details={"commit": dep.digest["gitCommit"]}))
        elif dep.uri and dep.uri.startswith("file:"):
            node.children.append(Node(kind="file", name=dep.name or dep.uri, ref=dep.uri,
                                      digest="sha256:" + (dep.digest or {}).get("sha256", "")))
        elif dep.uri:
            try:
                child = upstream(client, uri_ref(dep.uri), depth - 1, seen)
            except OciartError as exc:  # an input that is gone: still shown, marked
                child = Node(kind="missing", name=dep.name or uri_ref(dep.uri), ref=uri_ref(dep.uri),
                             digest="sha256:" + (dep.digest or {}).get("sha256", ""), details={"error": str(exc)})
            if dep.name and dep.name != child.name:
                child.details.setdefault("role", dep.name)
            node.children.append(child)
    if bd.externalParameters.hyperparameters:
        node.children.append(Node(kind="params", name="parameters", details=bd.externalParameters.hyperparameters))
    return node


def downstream(client: Client, ref: str, repositories: list[str], depth: int = 10) -> Node:
    """The artifact and, level by level up to ``depth``, the artifacts in ``repositories`` whose recorded inputs
    include it. Each repository's tags are listed and each manifest fetched once per query (:func:`consumers`);
    the walk is iterative, expands each artifact once, and stops with an error beyond :data:`ociart.limits.LINEAGE_NODES` nodes."""
    root, digest, _ = _artifact_node(client, ref)
    index = consumers(client, repositories)
    expanded = {digest}
    queue: deque[tuple[Node, str, int]] = deque([(root, digest, depth)])
    count = 1
    while queue:
        node, d, left = queue.popleft()
        if left <= 0:
            continue
        for pinned, content in index.get(d, []):
            child = _node_of(pinned, content)
            node.children.append(child)
            count += 1
            if count > limits.LINEAGE_NODES:
                raise UsageError(f"lineage of {ref} has more than {limits.LINEAGE_NODES} nodes; narrow it with --depth or --repo")
            if content.digest not in expanded:  # shown again under other parents, expanded once
                expanded.add(content.digest)
                queue.append((child, content.digest, left - 1))
    return root


def consumers(client: Client, repositories: list[str]) -> dict[str, list[tuple[Any, Content]]]:
    """input digest -> the artifacts in ``repositories`` that record it as an input (``dev.ociart.inputs+json``),
    each once (several tags of one manifest count once): every tag resolved and every manifest fetched once."""
    out: dict[str, list[tuple[Any, Content]]] = {}
    listed: set[tuple[str, str]] = set()
    for repo in repositories:
        r = client.ref(repo)
        target = client.target(r, create=False)
        fetched: set[str] = set()
        for tag in client.tags(r):
            try:
                desc = target.resolve(r.repository, tag)
                if desc.digest in fetched:
                    continue
                fetched.add(desc.digest)
                content = target.get_manifest(r.repository, desc.digest)
            except OciartError:
                continue
            raw = (content.parse().annotations or {}).get(A_INPUTS)
            if not raw:
                continue
            try:
                inputs = json.loads(raw)
            except ValueError:
                continue
            for i in inputs if isinstance(inputs, list) else []:
                d = i.get("digest") if isinstance(i, dict) else None
                if isinstance(d, str) and (d, content.digest) not in listed:
                    listed.add((d, content.digest))
                    out.setdefault(d, []).append((r.with_digest(content.digest), content))
    return out


def _dot_text(text: str) -> str:
    """Artifact text inside a DOT string: control characters escaped, then backslashes and quotes."""
    from ..text import escape

    return escape(text).replace("\\", "\\\\").replace('"', '\\"')


def to_dot(root: Node) -> str:
    lines = ["digraph lineage {", "  rankdir=LR;", "  node [shape=box];"]
    ids: dict[str, str] = {}

    def nid(n: Node) -> str:
        key = n.digest or f"{n.kind}:{n.name}"
        if key not in ids:
            ids[key] = f"n{len(ids)}"
            label = "\\n".join(_dot_text(x) for x in (n.kind, n.name, n.digest[:19] if n.digest else "") if x)
            lines.append(f'  {ids[key]} [label="{label}"];')
        return ids[key]

    def walk(n: Node) -> None:
        me = nid(n)
        for c in n.children:
            lines.append(f"  {nid(c)} -> {me};")
            walk(c)

    walk(root)
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_dot_downstream(root: Node) -> str:
    """Edges point from an input to what was built from it (the same direction as upstream graphs)."""
    text = to_dot(root)
    out = []
    for line in text.splitlines():
        if " -> " in line:
            a, b = line.strip().rstrip(";").split(" -> ")
            line = f"  {b} -> {a};"
        out.append(line)
    return "\n".join(out) + "\n"
