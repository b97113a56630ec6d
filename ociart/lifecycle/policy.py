"""Retention policy files (``kind: RetentionPolicy``): which artifacts of which repositories ``ociart gc`` keeps.

```yaml
apiVersion: ociart.dev/v1alpha1
kind: RetentionPolicy
rules:
  - repositories: ["registry.example.com/models/**"]
    protectTags: ["prod", "staging", "release-*"]
    keepLast: 5
    keepWithin: 30d
    expireUntagged: 7d
    failedRuns: 3d
    archiveTo: registry.example.com/archive
```

Unknown fields are errors; repository patterns are the verification policy's globs (:func:`ociart.signing.policy.glob_regex`
over canonical names), tag patterns the same globs over one tag. The exact semantics are in ``docs/lifecycle.md``.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..signing.policy import canonical_pattern, glob_regex, load_policy_file

API_VERSION = "ociart.dev/v1alpha1"
KIND = "RetentionPolicy"
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str) -> dt.timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` (one number and one unit) as a timedelta."""
    m = _DURATION.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"{value!r} is not a duration: a whole number and one of s, m, h, d, w (e.g. 30d)")
    return dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def format_duration(delta: dt.timedelta) -> str:
    """An age for reasons: whole days when at least one, else hours, else minutes."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds >= 86400:
        return f"{seconds // 86400}d"
    if seconds >= 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetentionRule(_Strict):
    name: str | None = None
    repositories: list[str] = Field(min_length=1)
    #: Tags (globs) whose artifacts, and everything they depend on, are never deleted.
    protectTags: list[str] = Field(default_factory=list)
    #: Keep the newest N tagged artifacts of each repository (by ``org.opencontainers.image.created``).
    keepLast: int | None = Field(default=None, ge=0)
    #: Keep tagged artifacts created within this duration; also the window of the promotion history.
    keepWithin: str | None = None
    #: Untagged artifacts older than this go (where the store can list them).
    expireUntagged: str | None = None
    #: Artifacts of runs that ended failed go once older than this.
    failedRuns: str | None = None
    #: Archive instead of delete: ``models/bert`` is copied to ``<archiveTo>/models/bert`` first.
    archiveTo: str | None = None

    @field_validator("keepWithin", "expireUntagged", "failedRuns")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("archiveTo")
    @classmethod
    def _archive(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip("/") or any(c in v for c in "@*?") or v.startswith("oci:")):
            raise ValueError(f"{v!r}: a registry or store prefix such as registry.example.com/archive")
        return v.rstrip("/") if v is not None else v

    def duration(self, field: str) -> dt.timedelta | None:
        value = getattr(self, field)
        return parse_duration(value) if value is not None else None

    def matches(self, repository: str, base_dir: Path = Path(".")) -> bool:
        """Whether ``repository`` (a canonical name, :func:`ociart.reference.canonical_name`) matches."""
        return any(glob_regex(canonical_pattern(p, base_dir)).fullmatch(repository) for p in self.repositories)

    def protects(self, tag: str) -> bool:
        return any(glob_regex(p).fullmatch(tag) for p in self.protectTags)

    def label(self, index: int) -> str:
        return self.name or f"rule {index + 1}"


class RetentionPolicy(_Strict):
    apiVersion: Literal["ociart.dev/v1alpha1"]
    kind: Literal["RetentionPolicy"]
    rules: list[RetentionRule] = Field(min_length=1)
    base_dir: Path = Field(default=Path("."), exclude=True)

    def rules_for(self, repository: str) -> list[tuple[int, RetentionRule]]:
        """Every rule matching ``repository`` (canonical name), with its index. None: the repository is not touched."""
        return [(i, r) for i, r in enumerate(self.rules) if r.matches(repository, self.base_dir)]


def load_retention_policy(path: Path) -> RetentionPolicy:
    """Read and check a retention policy file; one clear error line when it is missing or malformed."""
    return load_policy_file(path, RetentionPolicy, "retention policy file")


__all__ = ["API_VERSION", "KIND", "RetentionPolicy", "RetentionRule", "format_duration", "load_retention_policy",
           "parse_duration"]
