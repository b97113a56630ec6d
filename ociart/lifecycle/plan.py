"""The retention planner: what ``ociart gc`` keeps, archives and deletes, and why. Nothing is changed here.

Steps (docs/lifecycle.md has the exact semantics):

1. list the artifacts of each repository a rule matches (tags on a registry; every ``index.json`` entry in a layout),
   fetch their manifests, and list each one's referrers (recursively) — in parallel, every manifest fetched once;
2. apply each matching rule (``protectTags``, ``keepLast``, ``keepWithin``, ``expireUntagged``, ``failedRuns``);
3. protect what production depends on: artifacts under protected tags and, from the promotion history, those that
   were under one within ``keepWithin``; then the upstream lineage closure of every kept artifact, across
   repositories (inputs read from provenance statements and the ``dev.ociart.inputs+json`` summary), level by level
   in parallel, each statement read once per run.

Referrers (signatures, attestations, provenance, reports, run status) and the ``sha256-<hex>`` / ``.sig`` / ``.att``
tags are never artifacts: they are kept and deleted with their subject.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import BaseModel

from .. import limits
from ..errors import (
    InvalidContentError,
    InvalidReferenceError,
    NotFoundError,
    UnsupportedError,
    UsageError,
)
from ..oci import Content, Descriptor, Index, Manifest
from ..oci.mediatypes import ANNOTATION_CREATED
from ..reference import Reference, canonical_name, embedded_store_path, parse_reference
from ..targets.base import ManifestLister, RepositoryLister, Target
from ..targets.referrers import is_scheme_tag, list_referrers
from ..transfer import parallel
from .order import Candidate, keep_last, parse_created
from .policy import RetentionPolicy, RetentionRule, format_duration
from .runstatus import status_of

if TYPE_CHECKING:
    from ..client import Client

T = TypeVar("T")
R = TypeVar("R")

Action = Literal["keep", "archive", "delete"]


class PlanItem(BaseModel):
    """One artifact of a planned repository and what happens to it."""

    #: The repository as a reference (``host/repo``, or ``repo`` in the embedded store).
    repository: str
    digest: str
    #: Its tags (not the ``sha256-*`` scheme tags); empty when untagged.
    tags: list[str]
    kind: str
    created: str | None = None
    action: Action
    #: Why: ``protected: prod``, ``input of models/bert@sha256:…``, ``newest 5``, ``expired untagged 9d``, …
    reasons: list[str]
    #: The manifest, its distinct blobs and those of its referrers (recursively), in bytes.
    size: int
    #: Referrers that go with it (signatures, attestations, provenance, reports, run status), recursively.
    referrers: list[str] = []
    run: str | None = None
    runStatus: str | None = None
    #: With ``archive``: the repository it is copied to first.
    archiveTo: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.repository}@{self.digest}"


class Plan(BaseModel):
    #: When it was planned (UTC, RFC 3339); ages are measured from here.
    planned: str
    repositories: list[str]
    items: list[PlanItem]
    #: repository -> protected tag -> the digest it pointed at when planning (re-resolved before each deletion).
    protectedTags: dict[str, dict[str, str]]
    #: Bytes of manifests and blobs that only archived or deleted artifacts (and their referrers) use.
    reclaimable: int
    warnings: list[str] = []

    def going(self) -> list[PlanItem]:
        return [i for i in self.items if i.action != "keep"]


# -- parallel fetching with a per-run cache ----------------------------------------------------------------------
class Fetcher:
    """The run's fan-out width and caches: manifests by (store, digest), referrer trees and statement inputs by
    (store, repository, digest). Manifests are content-addressed, so one fetch serves every repository of a store.
    :meth:`map` runs on the one fan-out, :func:`ociart.transfer.parallel` (first error cancels the rest)."""

    def __init__(self, client: Client, concurrency: int) -> None:
        self.client = client
        self.concurrency = max(1, concurrency)
        self._lock = threading.Lock()
        self._manifests: dict[tuple[str, str], Content] = {}
        self._trees: dict[tuple[str, str, str], list[Descriptor]] = {}
        self._inputs: dict[tuple[str, str, str], list[str]] = {}

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        return parallel(fn, list(items), self.concurrency)

    def manifest(self, target: Target, repo: str, digest: str) -> Content:
        key = (target.name, digest)
        with self._lock:
            hit = self._manifests.get(key)
        if hit is None:
            hit = target.get_manifest(repo, digest)
            with self._lock:
                self._manifests[key] = hit
        return hit

    def referrers(self, target: Target, repo: str, digest: str) -> list[Descriptor]:
        """Every referrer of ``digest``, recursively (as :func:`ociart.targets.referrers.referrer_tree`), cached."""
        key = (target.name, repo, digest)
        with self._lock:
            hit = self._trees.get(key)
        if hit is not None:
            return hit
        out: list[Descriptor] = []
        seen = {digest}
        stack = [digest]
        while stack:
            for ref in list_referrers(target, repo, stack.pop()):
                if ref.digest not in seen:
                    seen.add(ref.digest)
                    out.append(ref)
                    stack.append(ref.digest)
        with self._lock:
            self._trees[key] = out
        return out

    def inputs(self, target: Target, repo: str, content: Content) -> list[str]:
        """References (pinned by digest) of the artifacts ``content`` was made from: its provenance statements'
        OCI dependencies and its ``dev.ociart.inputs+json`` summary, each statement read once per run."""
        key = (target.name, repo, content.digest)
        with self._lock:
            hit = self._inputs.get(key)
        if hit is not None:
            return hit
        from ..lineage.record import A_INPUTS, read_statements, uri_ref

        found: list[str] = []
        node = content.parse()
        raw = (node.annotations or {}).get(A_INPUTS)
        if raw:
            try:
                listed = json.loads(raw)
            except ValueError:
                listed = []
            for i in listed if isinstance(listed, list) else []:
                if isinstance(i, dict) and isinstance(i.get("ref"), str) and isinstance(i.get("digest"), str):
                    found.append(_pin(i["ref"], i["digest"]))
        refs = self.referrers(target, repo, content.digest)
        direct = [r for r in refs if _subject_is(self, target, repo, r, content.digest)]
        for stmt in read_statements(target, repo, content.digest, referrers=direct,
                                    fetch=lambda d: self.manifest(target, repo, d)):
            for dep in stmt.inputs():
                if dep.uri and not dep.uri.startswith("file:") and dep.digest and "sha256" in dep.digest:
                    found.append(_pin(uri_ref(dep.uri), "sha256:" + dep.digest["sha256"]))
        unique = list(dict.fromkeys(found))
        with self._lock:
            self._inputs[key] = unique
        return unique


def _subject_is(f: Fetcher, target: Target, repo: str, ref: Descriptor, subject: str) -> bool:
    """Whether a referrer of the tree refers to ``subject`` directly (statements are about the artifact itself)."""
    try:
        node = f.manifest(target, repo, ref.digest).parse()
    except (NotFoundError, InvalidContentError):
        return False
    return node.subject is not None and node.subject.digest == subject


def _pin(ref: str, digest: str) -> str:
    """``ref`` pinned to ``digest`` (a recorded ref may carry a tag, a digest or both)."""
    base = ref.split("@", 1)[0]
    return f"{base}@{digest}"


# -- the artifacts of one repository -------------------------------------------------------------------------------
@dataclass
class _Art:
    repo: _Repo
    digest: str
    tags: list[str]
    content: Content
    created: dt.datetime | None
    kind: str
    referrers: list[Descriptor] = field(default_factory=list)
    parts: dict[str, int] = field(default_factory=dict)
    run: str | None = None
    status: str | None = None
    keep: list[str] = field(default_factory=list)
    go: list[str] = field(default_factory=list)

    def candidate(self) -> Candidate:
        return Candidate(digest=self.digest, tags=self.tags, created=self.created)


@dataclass
class _Repo:
    ref: Reference
    target: Target
    name: str  # canonical
    display: str
    rules: list[tuple[int, RetentionRule]]
    arts: dict[str, _Art] = field(default_factory=dict)


def _display(ref: Reference) -> str:
    return str(Reference(repository=ref.repository, registry=ref.registry, layout=ref.layout,
                         embedded=ref.embedded)) if not ref.embedded else ref.repository


def resolve_repositories(client: Client, policy: RetentionPolicy, repositories: Sequence[str] | None,
                         local: bool) -> tuple[list[Reference], list[str]]:
    """The repositories to plan, and warnings for named ones no rule matches (they are left alone)."""
    refs: list[Reference] = []
    warnings: list[str] = []
    if repositories:
        for name in repositories:
            r = (Reference(repository=name, layout=embedded_store_path(), embedded=True) if local
                 else client.ref(name))
            if local and "/" in name and ("." in name.split("/")[0] or ":" in name.split("/")[0]):
                raise UsageError(f"{name}: --local plans the embedded store; name its repositories without a host")
            if r.tag or r.digest:
                raise InvalidReferenceError(f"{name}: gc takes repositories, not a tag or digest")
            refs.append(r)
    elif local:
        store = Reference(repository="", layout=embedded_store_path(), embedded=True)
        target = client.target(store, create=False)
        assert isinstance(target, RepositoryLister)
        refs = [Reference(repository=n, layout=store.layout, embedded=True) for n in target.repositories()]
    else:
        hosts: list[str] = []
        for rule in policy.rules:
            for pattern in rule.repositories:
                first = pattern.split("/", 1)[0]
                if "/" in pattern and ("." in first or ":" in first or first == "localhost") \
                        and not any(c in first for c in "*?") and first not in hosts:
                    hosts.append(first)
        if not hosts:
            raise UsageError("name the repositories to collect, or use --local for the embedded store (the policy's "
                             "patterns name no registry host to list)")
        for host in hosts:
            target = client.target(client.ref(f"{host}/x"), create=False)
            if not isinstance(target, RepositoryLister):
                raise UsageError(f"{host} cannot list its repositories; name them")
            try:
                names = target.repositories()
            except UnsupportedError as exc:
                raise UnsupportedError(f"{exc}; name the repositories to collect") from None
            refs += [client.ref(f"{host}/{n}") for n in names]
    out: list[Reference] = []
    for r in refs:
        if policy.rules_for(canonical_name(r)):
            out.append(r)
        elif repositories:
            warnings.append(f"{_display(r)}: no rule of the retention policy matches it; left alone")
    return out, warnings


def _list_repo(f: Fetcher, repo: _Repo) -> None:
    """Fill ``repo.arts``: its manifests that are not referrers, with tags, referrers, run status and sizes."""
    target, name = repo.target, repo.ref.repository
    entries: list[tuple[str, list[str]]] = []
    if isinstance(target, ManifestLister):
        # a manifest named only by machinery tags (a sha256-<hex> referrers index, a cosign .sig/.att manifest, a
        # promotion history) is not an untagged artifact: it lives and dies with its subject or tag
        entries = [(m.descriptor.digest, [t for t in m.tags if not is_scheme_tag(t)]) for m in target.manifests(name)
                   if not (m.tags and all(is_scheme_tag(t) for t in m.tags))]
    else:
        try:
            tags = [t for t in target.tags(name) if not is_scheme_tag(t)]
        except NotFoundError:
            return

        def resolve(tag: str) -> tuple[str, str] | None:
            try:
                return tag, target.resolve(name, tag).digest
            except NotFoundError:
                return None  # deleted meanwhile

        by_digest: dict[str, list[str]] = {}
        for hit in f.map(resolve, tags):
            if hit is not None:
                by_digest.setdefault(hit[1], []).append(hit[0])
        entries = list(by_digest.items())

    def load(entry: tuple[str, list[str]]) -> _Art | None:
        digest, tags = entry
        try:
            content = f.manifest(target, name, digest)
        except NotFoundError:
            return None
        node = content.parse()
        if node.subject is not None:
            return None  # a referrer (a report pushed with a tag, ...): it lives and dies with its subject
        from ..listing import artifact_kind

        annotations = node.annotations or {}
        art = _Art(repo=repo, digest=digest, tags=sorted(tags), content=content,
                   created=parse_created(annotations.get(ANNOTATION_CREATED)), kind=artifact_kind(node, tags))
        art.referrers = f.referrers(target, name, digest)
        art.run, art.status = status_of(art.referrers, annotations, _MLFLOW_CACHE)
        art.parts = _parts(content, node)
        for r in art.referrers:
            art.parts.setdefault(r.digest, r.size)
            try:
                rc = f.manifest(target, name, r.digest)
            except NotFoundError:
                continue  # listed but gone (an interrupted delete): the repair step drops the entry
            rn = rc.parse()
            if isinstance(rn, Manifest):
                for b in [rn.config, *rn.layers]:
                    art.parts.setdefault(b.digest, b.size)
        return art

    for art in f.map(load, entries):
        if art is not None:
            repo.arts[art.digest] = art


_MLFLOW_CACHE: dict[str, str | None] = {}


def _parts(content: Content, node: Manifest | Index) -> dict[str, int]:
    parts = {content.digest: content.size}
    children = [node.config, *node.layers] if isinstance(node, Manifest) else list(node.manifests)
    for b in children:
        parts.setdefault(b.digest, b.size)
    return parts


def _apply_rules(repo: _Repo, now: dt.datetime) -> None:
    arts = list(repo.arts.values())
    for index, rule in repo.rules:
        label = rule.label(index)
        failed_after = rule.duration("failedRuns")
        within = rule.duration("keepWithin")
        expire = rule.duration("expireUntagged")
        protected: set[str] = set()
        for a in arts:
            hits = [t for t in a.tags if rule.protects(t)]
            if hits:
                protected.add(a.digest)
                a.keep += [f"protected: {t}" for t in hits if f"protected: {t}" not in a.keep]
        failed = {a.digest for a in arts if failed_after is not None and a.status == "failed"}
        counted = [a for a in arts if a.tags and a.digest not in protected and a.digest not in failed]
        newest = {c.digest for c in keep_last((a.candidate() for a in counted), rule.keepLast or 0)}
        for a in arts:
            if a.digest in protected:
                continue
            age = now - a.created if a.created is not None else None
            age_text = format_duration(age) if age is not None else "undated"
            if a.digest in failed:
                assert failed_after is not None
                if age is not None and age <= failed_after:
                    a.keep.append(f"failed run {a.run}, {age_text} old (failedRuns {rule.failedRuns})")
                else:
                    a.go.append(f"failed run {a.run}, {age_text} old")
                continue
            if not a.tags:
                if expire is None:
                    a.keep.append(f"untagged, no expireUntagged in {label}")
                elif age is not None and age <= expire:
                    a.keep.append(f"untagged, {age_text} old (expireUntagged {rule.expireUntagged})")
                else:
                    a.go.append(f"expired untagged {age_text}")
                continue
            if rule.keepLast is None and within is None:
                a.keep.append(f"{label} sets no keepLast or keepWithin")
                continue
            kept = False
            if a.digest in newest:
                a.keep.append(f"newest {rule.keepLast}")
                kept = True
            if within is not None and age is not None and age <= within:
                a.keep.append(f"within {rule.keepWithin}")
                kept = True
            if not kept:
                why = [f"{age_text} old" if age is not None else "undated"]
                if rule.keepLast is not None:
                    why.append(f"not among the newest {rule.keepLast}")
                if within is not None:
                    why.append(f"older than {rule.keepWithin}")
                a.go.append(", ".join(why))


def _history_protect(f: Fetcher, repo: _Repo, now: dt.datetime, warnings: list[str]) -> None:
    """Protect what was under a protected tag within ``keepWithin``, from the promotion history."""
    windows = [(rule.duration("keepWithin"), rule) for _, rule in repo.rules if rule.keepWithin and rule.protectTags]
    if not windows:
        return
    from ..promotion import history
    tags = sorted({t for a in repo.arts.values() for t in a.tags if any(r.protects(t) for _, r in windows)})
    for tag in tags:
        window = max(w for w, r in windows if r.protects(tag) and w is not None)
        cutoff = now - window
        for entry in history(repo.target, repo.ref.repository, tag):
            if entry.time < cutoff:
                break  # newest first: older entries ended before the window
            for d in (entry.digest, entry.previous):
                a = repo.arts.get(d) if d else None
                if a is not None:
                    why = f"formerly {tag} (promotion history, within {format_duration(window)})"
                    if why not in a.keep and f"protected: {tag}" not in a.keep:
                        a.keep.append(why)


def _closure(f: Fetcher, repos: list[_Repo], warnings: list[str]) -> None:
    """Keep the upstream lineage closure of every kept artifact, across repositories and stores."""
    index: dict[tuple[str, str], _Art] = {(r.name, d): a for r in repos for d, a in r.arts.items()}
    level: list[tuple[Reference, Target, Content, str]] = [
        (r.ref, r.target, a.content, f"{r.ref.repository}@{a.digest}")
        for r in repos for a in r.arts.values() if a.keep]
    seen = {(r.name, a.digest) for r in repos for a in r.arts.values() if a.keep}
    count = len(seen)

    def inputs(item: tuple[Reference, Target, Content, str]) -> list[str]:
        ref, target, content, _ = item
        return f.inputs(target, ref.repository, content)

    while level:
        found = f.map(inputs, level)
        upcoming: list[tuple[Reference, Target, str, str]] = []
        for (_, _, _, label), refs in zip(level, found, strict=True):
            for text in refs:
                try:
                    r = parse_reference(text)
                except InvalidReferenceError:
                    continue
                if r.digest is None:
                    continue
                key = (canonical_name(r), r.digest)
                a = index.get(key)
                if a is not None:
                    why = f"input of {label}"
                    if why not in a.keep:
                        a.keep.append(why)
                if key in seen:
                    continue
                seen.add(key)
                count += 1
                if count > limits.LINEAGE_NODES:
                    raise UsageError(f"the lineage closure has more than {limits.LINEAGE_NODES} artifacts")
                upcoming.append((r, f.client.target(r, create=False), r.digest, text))

        def fetch(item: tuple[Reference, Target, str, str]) -> tuple[Reference, Target, Content, str] | None:
            r, target, digest, text = item
            try:
                return r, target, f.manifest(target, r.repository, digest), text
            except NotFoundError:
                warnings.append(f"input {text} is gone (recorded in provenance)")
                return None

        level = [x for x in f.map(fetch, upcoming) if x is not None]


def make_plan(client: Client, policy: RetentionPolicy, repositories: Sequence[str] | None = None, *,
              local: bool = False, now: dt.datetime | None = None, concurrency: int = 8) -> Plan:
    """Plan a retention run (see the module docstring); changes nothing."""
    now = now or dt.datetime.now(dt.UTC)
    refs, warnings = resolve_repositories(client, policy, repositories, local)
    f = Fetcher(client, concurrency)
    repos = [_Repo(ref=r, target=client.target(r, create=False), name=canonical_name(r), display=_display(r),
                   rules=policy.rules_for(canonical_name(r))) for r in refs]
    for repo in repos:
        _list_repo(f, repo)
        _apply_rules(repo, now)
        _history_protect(f, repo, now, warnings)
    _closure(f, repos, warnings)
    items: list[PlanItem] = []
    protected_tags: dict[str, dict[str, str]] = {}
    for repo in repos:
        for a in repo.arts.values():
            for t in a.tags:
                if any(rule.protects(t) for _, rule in repo.rules):
                    protected_tags.setdefault(repo.display, {})[t] = a.digest
        for a in sorted(repo.arts.values(), key=lambda a: (a.created is None, a.created or now, a.tags),
                        reverse=False):
            archive = next((r.archiveTo for _, r in repo.rules if r.archiveTo), None)
            action: Action = "keep" if a.keep else ("archive" if archive else "delete")
            dest = f"{archive}/{repo.ref.repository}" if action == "archive" else None
            items.append(PlanItem(
                repository=repo.display, digest=a.digest, tags=a.tags, kind=a.kind,
                created=a.created.strftime("%Y-%m-%dT%H:%M:%SZ") if a.created else None, action=action,
                reasons=a.keep if a.keep else (a.go or ["not kept by any rule"]), size=sum(a.parts.values()),
                referrers=[r.digest for r in a.referrers], run=a.run, runStatus=a.status, archiveTo=dest))
    kept_parts: set[str] = set()
    going_parts: dict[str, int] = {}
    for repo in repos:
        for a in repo.arts.values():
            if a.keep:
                kept_parts.update(a.parts)
            else:
                going_parts.update(a.parts)
    from ..oci import EMPTY_JSON_DIGEST

    reclaimable = sum(s for d, s in going_parts.items() if d not in kept_parts and d != EMPTY_JSON_DIGEST)
    return Plan(planned=now.strftime("%Y-%m-%dT%H:%M:%SZ"), repositories=[r.display for r in repos], items=items,
                protectedTags=protected_tags, reclaimable=reclaimable, warnings=list(dict.fromkeys(warnings)))


__all__ = ["Fetcher", "Plan", "PlanItem", "make_plan", "resolve_repositories"]
