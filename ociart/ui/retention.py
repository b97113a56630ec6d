"""The retention plan page: what ``ociart gc --policy FILE`` would keep, archive and delete in a served source, and
why: a dry run, never applied.

The plan is :meth:`ociart.Client.gc` with ``apply=False`` (the planner of :mod:`ociart.lifecycle`, through the view's
client, so it reaches only the served sources): the API returns ``ociart gc --json``'s ``GcResult`` unchanged, and
the page draws it. Which repositories are planned: the one named (``repo``), else every repository of the source
that a rule of the policy matches (the embedded store's as ``gc --local`` names them). The lineage closure is followed
only inside the served sources; an input elsewhere stops the plan with one line rather than give a plan that may be
wrong (docs/lifecycle.md: the walk goes on through repositories no rule matches).
"""

from __future__ import annotations

from urllib.parse import urlencode

from pydantic import BaseModel

from ..errors import UsageError
from ..lifecycle import GcResult, Plan, RetentionPolicy
from ..lineage.record import now
from ..reference import canonical_name
from .service import Source, View

ACTIONS = ("keep", "archive", "delete")


class RetentionView(BaseModel):
    """A source's retention plan as the page shows it."""

    source: Source
    #: The repository asked for ('' for every repository of the source).
    repository: str
    #: ``ociart gc --json`` (without ``--apply``).
    result: GcResult
    #: keep / archive / delete -> how many artifacts.
    counts: dict[str, int]
    #: Repositories of the source that no rule matches: not planned, never touched by gc.
    unmatched: list[str] = []
    #: PlanItem index -> the artifact page, where the artifact is in a served source.
    links: dict[int, str] = {}


def retention_plan(view: View, policy: RetentionPolicy | None, sid: int, repo: str = "") -> RetentionView:
    """The dry-run plan of ``policy`` over source ``sid`` (one repository when ``repo`` is given); changes nothing."""
    if policy is None:
        raise UsageError("start ociart ui with --retention FILE (a RetentionPolicy) to see a retention plan")
    source = view.source(sid)
    scope = view.scopes[sid]
    repo = repo or scope.repository
    names = [repo] if repo else sorted({r for r, _, _ in view._entries(sid)})  # the source's tagged repositories
    planned: list[str] = []
    unmatched: list[str] = []
    for name in names:
        ref = view.ref(sid, name)
        shown = ref.repository if scope.embedded else str(ref)
        (planned if policy.rules_for(canonical_name(ref)) else unmatched).append(shown)
    if planned:
        result = view.client.gc(policy, planned, apply=False, local=scope.embedded)
    else:
        result = GcResult(plan=Plan(planned=now(), repositories=[], items=[], protectedTags={}, reclaimable=0))
    links: dict[int, str] = {}
    for i, item in enumerate(result.plan.items):
        where = view.locate(item.ref) if not scope.embedded else (sid, item.repository, item.digest)
        if where is not None:
            links[i] = "/artifact?" + urlencode({"s": where[0], "repo": where[1], "digest": where[2]})
    counts = {a: sum(1 for i in result.plan.items if i.action == a) for a in ACTIONS}
    return RetentionView(source=source, repository=repo, result=result, counts=counts, unmatched=unmatched,
                         links=links)


__all__ = ["RetentionView", "retention_plan"]
