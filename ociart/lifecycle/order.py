"""The one ordering of artifacts by age, used by ``ociart gc`` (``keepLast``) and by the checkpoint retention of
``ociart.run()`` (keep-last-K + best).

Newest first: by ``org.opencontainers.image.created``; artifacts without it count as older than every dated one;
ties (and undated artifacts among themselves) are broken by tag in version order (``v10`` after ``v9``: the higher
version is newer), then by digest.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_PART = re.compile(r"(\d+)|(\D+)")


def version_key(tag: str) -> tuple[tuple[int, int, str], ...]:
    """A sort key comparing tags in version order: runs of digits as numbers (``v9`` < ``v10``), text as text."""
    return tuple((1, int(d), "") if d else (0, 0, s) for d, s in _PART.findall(tag))


def parse_created(value: str | None) -> dt.datetime | None:
    """``org.opencontainers.image.created`` (RFC 3339) as an aware datetime; None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass
class Candidate:
    """What the ordering needs of an artifact."""

    digest: str
    tags: Sequence[str] = ()
    created: dt.datetime | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def newest_tag_key(self) -> tuple[tuple[int, int, str], ...]:
        return max((version_key(t) for t in self.tags), default=())


def newest_first(candidates: Iterable[Candidate]) -> list[Candidate]:
    """``candidates`` ordered newest first (see the module docstring)."""
    def key(c: Candidate) -> tuple[int, float, tuple[tuple[int, int, str], ...], str]:
        return (1 if c.created is not None else 0, c.created.timestamp() if c.created else 0.0,
                c.newest_tag_key(), c.digest)

    return sorted(candidates, key=key, reverse=True)


def keep_last(candidates: Iterable[Candidate], n: int) -> list[Candidate]:
    """The newest ``n`` of ``candidates``."""
    return newest_first(candidates)[:max(0, n)] if n > 0 else []


def best(candidates: Iterable[Candidate], metric: str, mode: str = "min") -> Candidate | None:
    """The candidate with the lowest (``mode="min"``) or highest (``"max"``) ``metric``; ties go to the newer one.
    None when no candidate has the metric."""
    scored = [c for c in newest_first(candidates) if metric in c.metrics]
    if not scored:
        return None
    pick = min if mode == "min" else max
    return pick(scored, key=lambda c: c.metrics[metric])  # first of equals: the newest


__all__ = ["Candidate", "best", "keep_last", "newest_first", "parse_created", "version_key"]
