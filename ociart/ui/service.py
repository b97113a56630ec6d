"""What the web view shows, as pydantic models: the data layer under both the JSON API and the HTML pages.

Everything here reads; nothing writes a store. References are never taken from the browser whole: a page names a
served *source* (by its index), a repository and a digest or tag, and :meth:`View.ref` builds the reference inside
that source, so the app cannot be pointed at another registry, layout or path. Lineage follows provenance only
into the served sources (:class:`ScopedClient`): an input elsewhere is shown as a leaf, never fetched.

Listing pages stay fast on large stores: :func:`ociart.listing.entries` names every artifact without reading a
manifest (one ``index.json`` read for a layout), filters by text on names, and :func:`ociart.listing.describe`
reads only the manifests of the page shown. Descriptions are cached by digest (a manifest never changes);
signature status for a short time (signatures can be added).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, JsonValue

from .. import audit, limits
from ..client import Client, DiffResult, Inspection
from ..errors import NotFoundError, OciartError, UsageError, VerificationError
from ..lineage.graph import REPORT_TYPE
from ..listing import ListedArtifact, describe, entries, parse_scope
from ..oci import Descriptor
from ..oci.mediatypes import ANNOTATION_BUNDLE_PREDICATE_TYPE, SIGSTORE_BUNDLE
from ..packaging.image import ARTIFACT_FORM, IMAGE_FORM
from ..reference import DIGEST_RE, NAME_RE, TAG_RE, Reference, parse_reference
from ..promotion import HistoryEntry
from ..signing.results import Verification
from ..targets.base import Target
from ..targets.referrers import is_scheme_tag, legacy_subject, legacy_tag, list_referrers

SignatureStatus = Literal["verified", "signed", "unsigned"]
#: How long a signature status or a registry's tag listing is reused (seconds).
STATUS_TTL = 30.0
DESCRIBE_CACHE = 50_000
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
FORM_TYPES = {IMAGE_FORM: "image form", ARTIFACT_FORM: "artifact form"}


class Source(BaseModel):
    """One TARGET given to ``ociart ui``: the embedded store, an ``oci:`` layout, a registry or a repository."""

    id: int
    label: str


class ArtifactRow(ListedArtifact):
    """An artifact as ``ls --json`` lists it, plus its signature status and the tags promoted onto it."""

    signature: SignatureStatus
    promoted: list[str] = []


class ArtifactPage(BaseModel):
    source: Source
    kind: str | None = None
    q: str | None = None
    page: int
    per_page: int
    #: Artifacts matching the filters (all pages).
    total: int
    items: list[ArtifactRow]
    policy: bool


class FileRow(BaseModel):
    path: str
    size: int
    digest: str
    role: str | None = None
    packed: bool = False
    #: How many directories deep (the page indents the tree by it).
    depth: int = 0


class ReferrerRow(BaseModel):
    digest: str
    artifactType: str | None = None
    #: signature, attestation (with its predicate type), provenance, report, image form, ...
    label: str
    predicateType: str | None = None
    metrics: JsonValue = None


class Provenance(BaseModel):
    """The summary of an artifact's SLSA provenance statement."""

    commit: str | None = None
    source: str | None = None
    run: str | None = None
    finishedOn: str | None = None
    params: dict[str, JsonValue] = {}
    metrics: dict[str, float] = {}
    inputs: list[dict[str, str]] = []


class FormView(BaseModel):
    """The other form of the same files (image form of an artifact, or the reverse), linked when served here."""

    label: str
    reference: str
    href: str | None = None


class ArtifactView(BaseModel):
    source: Source
    repository: str
    inspection: Inspection
    tags: list[str]
    promoted: list[str]
    files: list[FileRow]
    files_error: str | None = None
    referrers: list[ReferrerRow]
    signature: SignatureStatus
    verification: Verification | None = None
    verify_error: str | None = None
    provenance: Provenance | None = None
    commands: list[str]
    versions: list[tuple[str, str]] = []
    forms: list[FormView] = []


class GraphNode(BaseModel):
    id: str
    kind: str
    name: str
    ref: str | None = None
    digest: str | None = None
    #: Where the node's page is (``None`` for leaves and for inputs outside the served sources).
    href: str | None = None
    tags: list[str] = []
    promoted: list[str] = []
    root: bool = False


class GraphEdge(BaseModel):
    #: input -> what was built from it
    source: str
    target: str


class LineageGraph(BaseModel):
    root: str
    nodes: list[GraphNode]
    edges: list[GraphEdge]


class Change(BaseModel):
    key: str
    old: JsonValue = None
    new: JsonValue = None


class Comparison(BaseModel):
    diff: DiffResult
    config: list[Change]
    params: list[Change]
    metrics: list[Change]


class AuditView(BaseModel):
    entries: list[audit.AuditEntry]
    lines: int | None = None
    head: str | None = None
    chain_error: str | None = None


class TagHistory(BaseModel):
    """The promotions into one tag, newest first (``ociart history REPO:TAG --json``'s entries)."""

    repository: str
    tag: str
    #: The digest the tag points at now (None: the tag is gone).
    current: str | None = None
    entries: list[HistoryEntry]


class ScopedClient(Client):
    """A client that reaches only the served sources: any other registry or layout is "not found" (lineage follows
    provenance written by whoever pushed an artifact, which must not make the server fetch elsewhere)."""

    def __init__(self, allowed: list[Reference], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._allowed = allowed

    def target(self, ref: Reference, *, create: bool = True) -> Target:
        if not any(_within(s, ref) for s in self._allowed):
            raise NotFoundError(f"{ref}: outside the stores this view serves")
        if ref.layout is not None and not (ref.layout / "oci-layout").is_file():
            raise NotFoundError(f"{ref.layout}: not an OCI image layout (no oci-layout file)")  # never created here
        return super().target(ref, create=False)


def _within(scope: Reference, ref: Reference) -> bool:
    if scope.layout is not None:
        return ref.layout is not None and ref.layout.resolve() == scope.layout.resolve() and \
            (not scope.repository or ref.repository == scope.repository)
    return ref.registry == scope.registry and (not scope.repository or ref.repository == scope.repository)


class _TTL:
    """A small thread-safe cache; ``ttl`` None keeps entries (up to ``size``, least recently used dropped)."""

    def __init__(self, ttl: float | None, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._d: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            hit = self._d.get(key)
            if hit is None or (self.ttl is not None and time.monotonic() - hit[0] > self.ttl):
                return None
            self._d.move_to_end(key)
            return hit[1]

    def put(self, key: Any, value: Any) -> Any:
        with self._lock:
            self._d[key] = (time.monotonic(), value)
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return value


class View:
    """The served sources and what the pages ask of them."""

    def __init__(self, targets: list[str], *, policy: Path | None = None, client: Client | None = None,
                 client_options: dict[str, Any] | None = None) -> None:
        self.policy = None
        if policy is not None:
            from ..signing.policy import load_policy

            self.policy = load_policy(policy)
        self.scopes = [parse_scope(t) for t in (targets or [None])]  # type: ignore[list-item]
        for scope in self.scopes:  # the embedded store may not exist yet: shown empty, never created here
            if scope.layout is not None and not scope.embedded and not (scope.layout / "oci-layout").is_file():
                raise NotFoundError(f"{scope.layout}: not an OCI image layout (no oci-layout file)")
        self.client = client or ScopedClient(self.scopes, **(client_options or {}))
        self.sources = [Source(id=i, label=self._label(s)) for i, s in enumerate(self.scopes)]
        self._described = _TTL(None, DESCRIBE_CACHE)
        self._status = _TTL(STATUS_TTL)
        self._listed = _TTL(STATUS_TTL, 64)
        self._files = _TTL(None, 256)

    @staticmethod
    def _label(scope: Reference) -> str:
        if scope.embedded:
            base = "embedded store"
        elif scope.layout is not None:
            base = f"oci:{scope.layout}"
        else:
            base = scope.registry or ""
        return f"{base}/{scope.repository}" if scope.repository and not scope.embedded else \
            (f"{base}: {scope.repository}" if scope.repository else base)

    # -- references ---------------------------------------------------------------------------------------
    def source(self, sid: int) -> Source:
        if not 0 <= sid < len(self.sources):
            raise NotFoundError(f"no source {sid}")
        return self.sources[sid]

    def ref(self, sid: int, repo: str, digest: str | None = None, tag: str | None = None) -> Reference:
        """The reference to ``repo`` (and ``digest`` or ``tag``) inside source ``sid``; anything else is refused."""
        self.source(sid)
        scope = self.scopes[sid]
        if scope.repository and repo != scope.repository:
            raise NotFoundError(f"{repo}: not served here")
        if repo and not NAME_RE.fullmatch(repo):
            raise UsageError(f"invalid repository name {repo!r}")
        if not repo and scope.registry is not None:
            raise UsageError("name a repository")
        if digest is not None and not DIGEST_RE.fullmatch(digest):
            raise UsageError(f"invalid digest {digest!r}")
        if tag is not None and not TAG_RE.fullmatch(tag):
            raise UsageError(f"invalid tag {tag!r}")
        return replace(scope, repository=repo, digest=digest, tag=tag if digest is None else None)

    def locate(self, ref: str) -> tuple[int, str, str] | None:
        """(source, repository, digest) of a pinned reference inside a served source; None otherwise."""
        try:
            r = parse_reference(ref)
        except OciartError:
            return None
        if not r.digest:
            return None
        for i, scope in enumerate(self.scopes):
            if _within(scope, r):
                return i, r.repository, r.digest
        return None

    def target(self, sid: int) -> Target:
        self.source(sid)
        return self.client.target(self.scopes[sid], create=False)

    # -- listing -------------------------------------------------------------------------------------------
    def _entries(self, sid: int) -> list[tuple[str, Descriptor, list[str]]]:
        """Every tagged manifest of a source, cheap (no manifest read); a registry's for a few seconds."""
        scope = self.scopes[sid]
        repos = [scope.repository] if scope.repository else None
        if scope.layout is not None:
            index = scope.layout / "index.json"
            try:
                st = index.stat()
            except FileNotFoundError:
                if scope.embedded:
                    return []  # nothing pushed yet
                raise NotFoundError(f"{scope.layout}: not an OCI image layout (no index.json)") from None
            key = (sid, st.st_ino, st.st_mtime_ns, st.st_size)
            found = self._listed.get(key)
            if found is None:
                found = self._listed.put(key, entries(self.target(sid), repos))
            return found  # type: ignore[no-any-return]
        found = self._listed.get(sid)
        if found is None:
            found = self._listed.put(sid, entries(self.target(sid), repos))
        return found  # type: ignore[no-any-return]

    def _describe(self, sid: int, repo: str, desc: Descriptor, tags: list[str]) -> ListedArtifact | None:
        key = (sid, repo, desc.digest)
        hit = self._described.get(key)
        if hit is None:
            found = describe(self.target(sid), repo, desc, tags)
            if found is None:
                return None
            hit = self._described.put(key, found[0])
        return hit.model_copy(update={"tags": sorted(t for t in tags if _shown(t))})  # type: ignore[no-any-return]

    def artifacts(self, sid: int, *, kind: str | None = None, q: str | None = None, page: int = 1,
                  per_page: int = 50) -> ArtifactPage:
        """One page of the tagged artifacts of a source, filtered by kind and by text (repository, tag or digest)."""
        source = self.source(sid)
        page, per_page = max(1, page), min(max(1, per_page), 500)
        rows = [(repo, d, tags) for repo, d, tags in self._entries(sid) if any(_shown(t) for t in tags)]
        rows.sort(key=lambda e: (e[0], min(e[2])))
        if q:
            needle = q.lower()
            rows = [e for e in rows if needle in e[0].lower() or any(needle in t.lower() for t in e[2])
                    or needle in e[1].digest]
        if kind:
            kept = []
            for repo, d, tags in rows:  # reads every manifest once (cached by digest afterwards)
                item = self._describe(sid, repo, d, tags)
                if item is not None and item.kind == kind:
                    kept.append((repo, d, tags))
            rows = kept
        chosen = rows[(page - 1) * per_page: page * per_page]
        promotions = self._promotions()
        items = []
        for repo, d, tags in chosen:
            item = self._describe(sid, repo, d, tags)
            if item is None:
                continue
            items.append(ArtifactRow(**item.model_dump(), signature=self.signature(sid, repo, d.digest),
                                     promoted=self._promoted(sid, repo, d.digest, item.tags, promotions)))
        return ArtifactPage(source=source, kind=kind, q=q, page=page, per_page=per_page, total=len(rows),
                            items=items, policy=self.policy is not None)

    # -- signatures ------------------------------------------------------------------------------------------
    def _signed(self, sid: int, repo: str, digest: str) -> bool:
        """Whether any signature is attached: a cosign-sign bundle referrer, or a legacy ``.sig`` tag."""
        legacy = legacy_tag(digest)
        if self.scopes[sid].layout is not None:
            return digest in self._layout_signed(sid)
        target = self.target(sid)
        try:
            target.resolve(repo, legacy)
            return True
        except NotFoundError:
            pass
        return any((r.annotations or {}).get(ANNOTATION_BUNDLE_PREDICATE_TYPE) in (None, COSIGN_SIGN_PREDICATE)
                   for r in list_referrers(target, repo, digest, SIGSTORE_BUNDLE))

    def _layout_signed(self, sid: int) -> set[str]:
        """Digests signed in a layout: subjects of legacy ``.sig`` tags, and of the signature bundles, whose untagged
        entries are read (each once, cached by digest), not every manifest of the store."""
        listed = self._entries(sid)
        key = ("signed", sid, id(listed))
        hit = self._listed.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        out = set()
        for repo, d, tags in listed:
            # legacy cosign signatures: sha256-<hex>.sig names the subject
            out.update(s for s in map(legacy_subject, tags) if s is not None)
            if tags or d.artifactType != SIGSTORE_BUNDLE:
                continue
            item = self._describe(sid, repo, d, [])
            if item is not None and item.kind == "signature" and item.subject:
                out.add(item.subject)
        return self._listed.put(key, out)  # type: ignore[no-any-return]

    def verification(self, sid: int, repo: str, digest: str) -> tuple[SignatureStatus, Verification | None,
                                                                       str | None]:
        """(status, what verified, why not) under the policy; without one, signed or unsigned."""
        key = (sid, repo, digest)
        hit = self._status.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        signed = self._signed(sid, repo, digest)
        result: tuple[SignatureStatus, Verification | None, str | None]
        if not signed:
            result = ("unsigned", None, None)
        elif self.policy is None:
            result = ("signed", None, "no --policy given: signatures are not verified")
        else:
            try:
                result = ("verified", self.client.verify(self.ref(sid, repo, digest), policy=self.policy), None)
            except VerificationError as exc:
                result = ("signed", None, str(exc))
        return self._status.put(key, result)  # type: ignore[no-any-return]

    def signature(self, sid: int, repo: str, digest: str) -> SignatureStatus:
        return self.verification(sid, repo, digest)[0]

    # -- promotions ---------------------------------------------------------------------------------------------
    def _promotions(self) -> list[audit.AuditEntry]:
        try:
            return [e for e in audit.read() if e.action in ("tag", "promote") and e.result == "ok"]
        except OciartError:
            return []

    def _promoted(self, sid: int, repo: str, digest: str, tags: list[str],
                  promotions: list[audit.AuditEntry]) -> list[str]:
        """Tags pointing at ``digest`` that a retag (``ociart tag``, promotion) moved there, per the audit log."""
        base = str(self.ref(sid, repo, tag="x"))[:-2]
        out = set()
        for e in promotions:
            ref = e.reference.split("@", 1)[0]
            if e.after == digest and ref.startswith(base + ":"):
                tag = ref[len(base) + 1:]
                if tag in tags:
                    out.add(tag)
        return sorted(out)

    # -- one artifact -----------------------------------------------------------------------------------------
    def resolve(self, sid: int, repo: str, tag: str) -> str:
        return self.client.resolve(self.ref(sid, repo, tag=tag)).digest

    def inspect(self, sid: int, repo: str, digest: str) -> Inspection:
        return self.client.inspect(self.ref(sid, repo, digest))

    def referrers(self, sid: int, repo: str, digest: str) -> list[Descriptor]:
        return self.client.referrers(self.ref(sid, repo, digest))

    def verify(self, sid: int, repo: str, digest: str) -> Verification:
        if self.policy is None:
            raise UsageError("start ociart ui with --policy FILE to verify signatures")
        return self.client.verify(self.ref(sid, repo, digest), policy=self.policy)

    def tags_of(self, sid: int, repo: str, digest: str) -> list[str]:
        for r, d, tags in self._entries(sid):
            if r == repo and d.digest == digest:
                return sorted(t for t in tags if _shown(t))
        return []

    def repositories(self, sid: int) -> list[str]:
        """The repositories of a source with tagged artifacts, as references (where downstream lineage looks)."""
        names = sorted({r for r, _, tags in self._entries(sid) if any(_shown(t) for t in tags)})
        return [str(replace(self.scopes[sid], repository=r, tag=None, digest=None)) for r in names]

    def versions(self, sid: int, repo: str) -> list[tuple[str, str]]:
        """(tag, digest) of every tag of ``repo``."""
        out = [(t, d.digest) for r, d, tags in self._entries(sid) if r == repo for t in tags if _shown(t)]
        return sorted(out)

    def files(self, sid: int, repo: str, digest: str) -> dict[str, tuple[str, int]]:
        """path -> (digest, size) of every file (:meth:`ociart.Client.files`); packed layers' members are read from
        the tar stream once per digest."""
        ref = self.ref(sid, repo, digest)
        every = self._files.get(ref)
        if every is None:
            every = self._files.put(ref, self.client.files(ref)[1])
        return every  # type: ignore[no-any-return]

    def artifact(self, sid: int, repo: str, digest: str) -> ArtifactView:
        ref = self.ref(sid, repo, digest)
        inspection = self.client.inspect(ref)
        files: list[FileRow] = []
        files_error = None
        raw = {f.path: f for f in inspection.files if not f.packed}
        try:
            every = self.files(sid, repo, digest)
            for path, (d, size) in sorted(every.items()):
                layer = raw.get(path)
                files.append(FileRow(path=path, size=size, digest=d, role=layer.category if layer else
                                     _packed_role(inspection), packed=layer is None, depth=path.count("/")))
        except OciartError as exc:
            files_error = str(exc)
        rows = []
        for r in self.client.referrers(ref):
            rows.append(_referrer_row(r))
        status, verification, why = self.verification(sid, repo, digest)
        tags = self.tags_of(sid, repo, digest)
        pinned = str(ref)
        name = _dirname(repo)
        commands = [f"ociart pull {pinned} -o ./{name}",
                    f"ociart fetch {pinned} -o ./{name} " + ("--policy POLICY.yaml" if self.policy is not None else
                                                             "--verify-key cosign.pub"),
                    f"ociart verify {pinned} " + ("--policy POLICY.yaml" if self.policy is not None else
                                                  "--key cosign.pub")]
        forms = []
        for link in inspection.links:
            where = self.locate(link.reference) if link.reference else None
            forms.append(FormView(label=FORM_TYPES.get(link.artifactType, "other form"),
                                  reference=link.reference or link.digest,
                                  href=None if where is None else _href(*where)))
        return ArtifactView(source=self.source(sid), repository=repo, inspection=inspection, tags=tags, forms=forms,
                            promoted=self._promoted(sid, repo, digest, tags, self._promotions()), files=files,
                            files_error=files_error, referrers=rows, signature=status, verification=verification,
                            verify_error=why, provenance=self.provenance(sid, repo, digest), commands=commands,
                            versions=[v for v in self.versions(sid, repo) if v[1] != digest])

    def provenance(self, sid: int, repo: str, digest: str) -> Provenance | None:
        try:
            stmt = self.client.provenance(self.ref(sid, repo, digest))
        except OciartError:
            return None
        bd = stmt.predicate.buildDefinition
        md = stmt.predicate.runDetails.metadata
        out = Provenance(run=md.invocationId if md else None, finishedOn=md.finishedOn if md else None,
                         params=dict(bd.externalParameters.hyperparameters or {}),
                         metrics=dict(bd.externalParameters.metrics or {}))
        for dep in stmt.inputs():
            if dep.digest and "gitCommit" in dep.digest:
                out.commit, out.source = dep.digest["gitCommit"], dep.uri
            elif dep.uri:
                out.inputs.append({"name": dep.name or "", "uri": dep.uri,
                                   "digest": "sha256:" + (dep.digest or {}).get("sha256", "")})
        return out

    def lineage(self, sid: int, repo: str, digest: str, *, depth: int = 10) -> LineageGraph:
        """Upstream (provenance) and downstream (artifacts of the source's repositories that name it as an input),
        merged: one node per artifact, one edge per input."""
        from ..lineage.graph import Node

        ref = self.ref(sid, repo, digest)
        up = self.client.lineage(ref, depth=depth)
        repos = self.repositories(sid)
        down = self.client.lineage(ref, downstream=repos, depth=depth) if repos else None
        nodes: dict[str, GraphNode] = {}
        edges: dict[tuple[str, str], GraphEdge] = {}
        promotions = self._promotions()

        def node(n: Node) -> str:
            key = n.digest or f"{n.kind}:{n.name}"
            if key not in nodes:
                where = self.locate(n.ref) if n.ref and n.digest else None
                href = tags = promoted = None
                if where is not None:
                    s, r, d = where
                    href = _href(s, r, d)
                    tags = self.tags_of(s, r, d)
                    promoted = self._promoted(s, r, d, tags, promotions)
                nodes[key] = GraphNode(id=f"n{len(nodes)}", kind=n.kind, name=n.name, ref=n.ref, digest=n.digest,
                                       href=href, tags=tags or [], promoted=promoted or [])
                if len(nodes) > limits.LINEAGE_NODES:
                    raise UsageError(f"lineage of {ref} has more than {limits.LINEAGE_NODES} nodes")
            return nodes[key].id

        def walk(n: Node, upstream: bool) -> None:
            stack = [n]
            while stack:
                cur = stack.pop()
                me = node(cur)
                for c in cur.children:
                    other = node(c)
                    a, b = (other, me) if upstream else (me, other)
                    edges.setdefault((a, b), GraphEdge(source=a, target=b))
                    stack.append(c)

        root = node(up)
        walk(up, True)
        if down is not None:
            walk(down, False)
        for n in nodes.values():
            n.root = n.id == root
        return LineageGraph(root=root, nodes=list(nodes.values()), edges=list(edges.values()))

    def compare(self, sid: int, repo: str, old: str, new_repo: str, new: str) -> Comparison:
        a, b = self.ref(sid, repo, old), self.ref(sid, new_repo, new)
        diff = self.client.diff(a, b)
        ia, ib = self.client.inspect(a), self.client.inspect(b)
        pa, pb = self.provenance(sid, repo, old), self.provenance(sid, new_repo, new)
        ma = {**_metrics(ia), **(pa.metrics if pa else {})}
        mb = {**_metrics(ib), **(pb.metrics if pb else {})}
        return Comparison(diff=diff, config=_changes(_flatten(ia.config), _flatten(ib.config)),
                          params=_changes(_flatten(pa.params if pa else {}), _flatten(pb.params if pb else {})),
                          metrics=_changes(_flatten(ma), _flatten(mb)))

    # -- history ----------------------------------------------------------------------------------------------
    def history(self, sid: int, repo: str, tag: str) -> TagHistory:
        """The promotions into ``repo:tag`` (:func:`ociart.promotion.history`: one read of the tag's history)."""
        ref = self.ref(sid, repo, tag=tag)
        entries = self.client.history(ref)
        try:
            current: str | None = self.client.resolve(ref).digest
        except NotFoundError:
            current = None
        return TagHistory(repository=repo, tag=tag, current=current, entries=entries)

    def audit(self, *, repository: str | None = None, action: str | None = None, actor: str | None = None,
              limit: int = 500) -> AuditView:
        """The audit log, newest first (filters are shell globs), and whether its hash chain holds."""
        found = audit.show(repository=repository or None, action=action or None, actor=actor or None)
        view = AuditView(entries=list(reversed(found))[:limit])
        if not audit.default_path().exists():
            return view  # nothing logged yet
        try:
            report = audit.verify()
            view.lines, view.head = report.lines, report.head
        except VerificationError as exc:
            view.chain_error = str(exc)
        return view


def _href(sid: int, repo: str, digest: str) -> str:
    from urllib.parse import urlencode

    return "/artifact?" + urlencode({"s": sid, "repo": repo, "digest": digest})


def _shown(tag: str) -> bool:
    """A tag of an artifact, not one of the machinery's: referrer/signature scheme tags, promotion histories."""
    return not is_scheme_tag(tag)


def _packed_role(inspection: Inspection) -> str | None:
    cats = {f.category for f in inspection.files if f.packed}
    return cats.pop() if len(cats) == 1 else None


def _dirname(repo: str) -> str:
    return (repo.rsplit("/", 1)[-1] or "artifact")


def _referrer_row(r: Descriptor) -> ReferrerRow:
    from ..lineage.statement import INTOTO_MEDIA_TYPE
    from ..packaging.metadata import A_METRICS

    ann = r.annotations or {}
    at = r.artifactType
    predicate = ann.get(ANNOTATION_BUNDLE_PREDICATE_TYPE) or ann.get("dev.ociart.predicateType")
    metrics: JsonValue = None
    if at == SIGSTORE_BUNDLE:
        label = "signature" if predicate in (None, COSIGN_SIGN_PREDICATE) else "attestation"
    elif at == INTOTO_MEDIA_TYPE:
        label = "provenance" if predicate == "https://slsa.dev/provenance/v1" else "attestation"
    elif at == REPORT_TYPE:
        label = "report"
        try:
            metrics = json.loads(ann.get(A_METRICS, "null"))
        except ValueError:
            metrics = None
    elif at in FORM_TYPES:
        label = FORM_TYPES[at]
    else:
        label = "referrer"
    return ReferrerRow(digest=r.digest, artifactType=at, label=label, predicateType=predicate, metrics=metrics)


def _metrics(i: Inspection) -> dict[str, Any]:
    from ..packaging.metadata import A_METRICS

    raw = (i.manifest.get("annotations") or {})
    text = raw.get(A_METRICS) if isinstance(raw, dict) else None
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {}


def _flatten(value: Any, prefix: str = "", out: dict[str, Any] | None = None, limit: int = 2000) -> dict[str, Any]:
    """Dotted keys -> leaf values (lists as JSON), at most ``limit`` keys."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for k, v in value.items():
            if len(out) >= limit:
                break
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, limit)
    elif prefix:
        out[prefix] = value if not isinstance(value, list) else json.dumps(value)[:500]
    return out


def _changes(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    return [Change(key=k, old=a.get(k), new=b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
