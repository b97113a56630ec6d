"""Carry a retention plan out (``ociart gc --apply``), and the local store's collection (``ociart gc --local``).

For each artifact that goes, in plan order:

1. re-resolve every protected tag of the plan, the artifact's own tags, and list the repository's tags for a
   protected tag that appeared since planning; stop (:class:`~ociart.errors.ConflictError`) naming what moved;
2. with ``archive``: copy it with its referrers (and legacy ``.sig``) to the archive repository, check there that
   the manifest and every referrer resolve to the same digests, then delete;
3. delete it by digest with its referrers (the cascading delete of :mod:`ociart.targets.referrers`: referrers
   first, then its scheme tags, then the manifest — so no referrer is ever left pointing at a deleted subject);
4. log the action to the audit log (:func:`ociart.audit.append`).

Then the ``sha256-<hex>`` indexes of the artifacts kept in the repositories touched are repaired (entries whose
manifest no longer exists are removed). A registry that refuses DELETE (HTTP 405) stops the run with one line
saying so; the plan itself works there. Re-running after an interruption converges: the new plan starts from what
is left, and deleting what is already gone counts as done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from ..errors import ConflictError, NotFoundError, UnsupportedError, VerificationError
from ..reference import Reference
from ..targets.base import Target
from ..targets.referrers import delete as delete_graph
from ..targets.referrers import detach, fallback_tag, is_scheme_tag
from ..transfer import parallel
from .plan import Plan, PlanItem
from .policy import RetentionPolicy

if TYPE_CHECKING:
    from ..client import Client


class Applied(BaseModel):
    repository: str
    digest: str
    action: Literal["deleted", "archived", "already-gone"]
    tags: list[str] = []
    referrers: list[str] = []
    #: With ``archived``: where it was copied.
    destination: str | None = None
    #: Local stores: blobs freed at once.
    freed_bytes: int = 0


class LocalSweep(BaseModel):
    """What ``gc --local`` removed beyond the artifacts: unreferenced blobs, stale partials, digest-cache rows."""

    blobs: int = 0
    blob_bytes: int = 0
    partials: int = 0
    partial_bytes: int = 0
    cache_rows: int = 0


class GcResult(BaseModel):
    plan: Plan
    applied: list[Applied] = []
    #: ``repo@subject -> referrer`` entries removed from ``sha256-<hex>`` indexes (they named deleted manifests).
    repaired: list[str] = []
    local: LocalSweep | None = None
    #: Bytes freed in a local store (artifacts deleted plus the sweep); a registry frees space in its own GC.
    freed_bytes: int = 0


def _ref(client: Client, item_repo: str, plan_local: bool) -> Reference:
    if plan_local:
        from ..reference import embedded_store_path

        return Reference(repository=item_repo, layout=embedded_store_path(), embedded=True)
    return client.ref(item_repo)


def check_unmoved(client: Client, plan: Plan, policy: RetentionPolicy, item: PlanItem, local: bool) -> None:
    """Raise :class:`ConflictError` when a protected tag or a tag of ``item`` moved since planning, or a protected
    tag now exists in ``item``'s repository that the plan did not see."""
    for repo, tags in plan.protectedTags.items():
        r = _ref(client, repo, local)
        target = client.target(r, create=False)
        for tag, digest in tags.items():
            now = target.current_tag(r.repository, tag)
            if now != digest:
                raise ConflictError(f"stopped before deleting {item.ref}: protected tag {repo}:{tag} moved since "
                                    f"planning ({digest} -> {now or 'deleted'}); plan again", now)
    r = _ref(client, item.repository, local)
    target = client.target(r, create=False)
    for tag in item.tags:
        now = target.current_tag(r.repository, tag)
        if now != item.digest:
            raise ConflictError(f"stopped before deleting {item.ref}: its tag {item.repository}:{tag} moved since "
                                f"planning (now {now or 'deleted'}); plan again", now)
    from ..reference import canonical_name

    rules = [rule for _, rule in policy.rules_for(canonical_name(r))]
    known = plan.protectedTags.get(item.repository, {})
    for tag in target.tags(r.repository):
        if not is_scheme_tag(tag) and tag not in known and any(rule.protects(tag) for rule in rules):
            raise ConflictError(f"stopped before deleting {item.ref}: protected tag {item.repository}:{tag} appeared "
                                "since planning; plan again", target.current_tag(r.repository, tag))


def _archive(client: Client, item: PlanItem, local: bool) -> str:
    """Copy ``item`` with its referrers to its archive repository and check it arrived; returns the destination."""
    assert item.archiveTo is not None
    src = _ref(client, item.repository, local).with_digest(item.digest)
    dest = item.archiveTo
    if item.tags:
        for i, tag in enumerate(item.tags):
            if i == 0:
                client.copy(src, f"{dest}:{tag}")
            else:
                client.tag(f"{dest}@{item.digest}", tag)
    else:
        client.copy(src, f"{dest}@{item.digest}")
    for d in [item.digest, *item.referrers]:
        try:
            if client.resolve(f"{dest}@{d}").digest != d:
                raise VerificationError(f"archive {dest}@{d} resolved to another digest; {item.ref} not deleted")
        except NotFoundError:
            raise VerificationError(f"archive copy of {item.ref} lacks {d} at {dest}; not deleted") from None
    return dest


def apply_plan(client: Client, plan: Plan, policy: RetentionPolicy, *, local: bool = False,
               concurrency: int = 8) -> GcResult:
    """Carry ``plan`` out (see the module docstring)."""
    result = GcResult(plan=plan)
    touched: set[str] = set()
    from .. import audit

    for item in plan.going():
        check_unmoved(client, plan, policy, item, local)
        r = _ref(client, item.repository, local)
        target = client.target(r, create=False)
        with audit.action("gc-archive" if item.action == "archive" else "gc-delete", item.ref,
                          before=item.digest) as logged:
            logged.update({"tags": item.tags, "reasons": item.reasons})
            destination = None
            if item.action == "archive":
                destination = _archive(client, item, local)
                logged["destination"] = destination
            try:
                gone = delete_graph(target, r.repository, item.digest)
            except NotFoundError:
                logged["already_gone"] = True
                result.applied.append(Applied(repository=item.repository, digest=item.digest, action="already-gone",
                                              tags=item.tags))
                continue
            except UnsupportedError as exc:
                if exc.status == 405:
                    raise UnsupportedError(
                        f"{target.name} refuses DELETE (HTTP 405): gc --apply cannot delete there; "
                        f"{len(result.applied)} artifact(s) were removed before this one. The plan (gc without "
                        "--apply) still works; enable deletes (distribution: storage.delete.enabled: true) or use "
                        "the registry's own retention", 405) from None
                raise
            logged.update({"referrers": gone.referrers, "scheme_tags": gone.scheme_tags})
        touched.add(item.repository)
        result.applied.append(Applied(repository=item.repository, digest=item.digest,
                                      action="archived" if destination else "deleted", tags=item.tags,
                                      referrers=gone.referrers, destination=destination,
                                      freed_bytes=gone.freed_bytes))
        result.freed_bytes += gone.freed_bytes
    result.repaired = repair_indexes(client, plan, touched, local, concurrency)
    return result


def repair_indexes(client: Client, plan: Plan, repositories: set[str], local: bool, concurrency: int = 8) -> list[str]:
    """Remove entries naming manifests that no longer exist from the ``sha256-<hex>`` indexes of the artifacts kept
    in ``repositories`` (stores with their own referrers list have no such index and are skipped)."""
    kept = [i for i in plan.items if i.action == "keep" and i.repository in repositories]

    def repair(item: PlanItem) -> list[str]:
        r = _ref(client, item.repository, local)
        target: Target = client.target(r, create=False)
        if target.native_referrers(r.repository, item.digest, None) is not None:
            return []
        try:
            index = target.get_manifest(r.repository, fallback_tag(item.digest)).parse()
        except NotFoundError:
            return []
        out = []
        for entry in getattr(index, "manifests", []):
            try:
                target.resolve(r.repository, entry.digest)
            except NotFoundError:
                if detach(target, r.repository, item.digest, entry.digest):
                    out.append(f"{item.ref} -> {entry.digest}")
        return out

    return [x for xs in parallel(repair, kept, max(1, concurrency)) for x in xs]


def sweep_local(client: Client, grace_seconds: float) -> LocalSweep:
    """The embedded store's housekeeping after the artifacts went: blobs nothing references (older than
    ``grace_seconds``), partial downloads older than a day or left by writers that are gone, and the digest cache's
    rows for files that no longer exist."""
    from ..cache import DigestCache
    from ..reference import embedded_store_path
    from ..targets.layout import LayoutTarget

    store = Reference(repository="", layout=embedded_store_path(), embedded=True)
    target = client.target(store, create=False)
    assert isinstance(target, LayoutTarget)
    out = LocalSweep()
    out.blobs, out.blob_bytes = target.sweep(grace_seconds)
    sizes: dict[str, int] = {}
    removed = target.ingest.sweep(sizes=sizes)
    out.partials = len([p for p in removed if p.name.endswith(".partial")])
    out.partial_bytes = sum(sizes.values())
    cache = DigestCache()
    try:
        out.cache_rows = cache.prune()
    finally:
        cache.close()
    return out


def collect(client: Client, policy: RetentionPolicy, repositories: Sequence[str] | None = None, *,
            apply: bool = False, local: bool = False, grace_seconds: float | None = None,
            concurrency: int = 8) -> GcResult:
    """Plan, and with ``apply`` carry the plan out; with ``local`` (the embedded store) also sweep it."""
    from .plan import make_plan

    plan = make_plan(client, policy, repositories, local=local, concurrency=concurrency)
    if not apply:
        return GcResult(plan=plan)
    result = apply_plan(client, plan, policy, local=local, concurrency=concurrency)
    if local:
        from ..targets.layout import SWEEP_GRACE_SECONDS

        result.local = sweep_local(client, SWEEP_GRACE_SECONDS if grace_seconds is None else grace_seconds)
        result.freed_bytes += result.local.blob_bytes + result.local.partial_bytes
    return result


__all__ = ["Applied", "GcResult", "LocalSweep", "apply_plan", "check_unmoved", "collect", "repair_indexes",
           "sweep_local"]
