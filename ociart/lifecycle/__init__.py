"""Lifecycle: retention policies and garbage collection that never break lineage, signatures or production.

:mod:`.policy` (the ``RetentionPolicy`` file), :mod:`.order` (the one newest-first ordering, also used by the
checkpoint retention of ``ociart.run()``), :mod:`.runstatus` (how runs record that they failed), :mod:`.plan` (the
planner and the protected set), :mod:`.apply` (carrying a plan out; the local store's sweep). docs/lifecycle.md.
"""

from __future__ import annotations

from .apply import Applied, GcResult, LocalSweep, apply_plan, collect
from .order import Candidate, best, keep_last, newest_first
from .plan import Plan, PlanItem, make_plan
from .policy import (
           RetentionPolicy,
           RetentionRule,
           load_retention_policy,
           parse_duration,
)

__all__ = ["Applied", "Candidate", "GcResult", "LocalSweep", "Plan", "PlanItem", "RetentionPolicy", "RetentionRule",
           "apply_plan", "best", "collect", "keep_last", "load_retention_policy", "make_plan", "newest_first",
           "parse_duration"]
