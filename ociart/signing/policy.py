"""Verification policy files: which keys or identities must have signed which repositories, and which attestations
they must carry. Format in docs/signing.md ("Policy file"); read by ``ociart verify --policy`` and ``pull --policy``.

```yaml
apiVersion: ociart.dev/v1alpha1
kind: VerificationPolicy
rules:                                   # first rule whose pattern matches the repository wins
  - name: production models
    repositories: ["registry.example.com/models/**"]
    keys: ["keys/release.pub"]           # relative to the policy file; or file://…
    identities:
      - subject: release@example.com     # or subjectRegExp
        issuer: https://accounts.example.com   # or issuerRegExp
    trustConfig: sigstore/trust-config.json    # optional; default public-good Sigstore
    attestations: ["https://slsa.dev/provenance/v1"]
    promotedTo: [prod]                   # optional: the digest must be promoted into one of these tags now
    promotion:                           # optional: gates of `ociart promote` into this repository
      - to: "prod"                       # target tag glob
        from: ["staging", "*/models/*-candidates"]   # optional: source tag or repository globs
        attestations: ["https://ociart.dev/evaluation/v1"]
        gates: ["accuracy>=0.9"]
        signers: {keys: ["keys/eval.pub"]}   # optional: who must have signed evaluations (default: the rule's)
```

A repository that no rule matches is refused (deny by default). Names and patterns are compared in canonical form
(:func:`ociart.reference.canonical_name`, :func:`canonical_pattern`): a reference cannot sidestep a rule by spelling
its registry differently (case, ``127.1``, ``[::ffff:127.0.0.1]``, ``localhost``, a trailing dot, ``:443``, Docker
Hub aliases) or by reaching a layout through ``..`` or a symlink.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import InvalidContentError, NotFoundError, UsageError, VerificationError
from ..reference import DOCKER_HUB, canonical_host
from .identity import TrustedIdentity
from .signers import key_path, load_verification_key
from .verify import Trust, TrustedKey

_GLOB_TOKENS = re.compile(r"\*\*|\*|\?|[^*?]+")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Repository globs as policy-controller writes them: ``*`` within one path segment, ``**`` across."""
    out = []
    for tok in _GLOB_TOKENS.findall(pattern):
        out.append(".*" if tok == "**" else "[^/]*" if tok == "*" else "[^/]" if tok == "?" else re.escape(tok))
    return re.compile("".join(out))


_GLOB = re.compile(r"[*?]")


def canonical_pattern(pattern: str, base_dir: Path = Path(".")) -> str:
    """A repository pattern in the form :func:`ociart.reference.canonical_name` gives names: a literal registry host
    canonicalised (Docker Hub's one-component names under ``library/``), an ``oci:`` path's literal directory
    prefix resolved (relative to ``base_dir``, the policy file's directory; symlinks and ``..`` resolved)."""
    if pattern.startswith("oci:"):
        path, sep, name = pattern[4:].partition(":")
        glob = _GLOB.search(path)
        if glob is None:
            literal, rest = path, ""
        else:
            cut = path.rfind("/", 0, glob.start())
            literal, rest = (path[:cut], path[cut:]) if cut > 0 else ("/" if cut == 0 else "", path[max(cut, 0):])
        if literal:
            p = Path(literal)
            literal = os.path.realpath(p if p.is_absolute() else base_dir / p)
            if rest and literal.endswith("/"):
                literal = literal.rstrip("/")
        return "oci:" + literal + rest + sep + name
    first, sep, rest = pattern.partition("/")
    if sep and not _GLOB.search(first) and ("." in first or ":" in first or first.lower() == "localhost"):
        host = canonical_host(first)
        if host == DOCKER_HUB and "/" not in rest and not _GLOB.search(rest):
            rest = f"library/{rest}"
        return f"{host}/{rest}"
    return pattern


API_VERSION = "ociart.dev/v1alpha1"
KIND = "VerificationPolicy"


_M = TypeVar("_M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Signers(_Strict):
    """Keys and keyless identities (the rule's ``trustConfig``) that must have signed an evaluation."""

    keys: list[str] = Field(default_factory=list)
    identities: list[TrustedIdentity] = Field(default_factory=list)

    @model_validator(mode="after")
    def _someone(self) -> Signers:
        if not self.keys and not self.identities:
            raise ValueError("signers needs keys or identities")
        return self


class PromotionRule(_Strict):
    """Gates of a promotion into a tag matching ``to`` (docs/promotion.md, docs/spec.md)."""

    to: str
    from_: list[str] = Field(default_factory=list, alias="from")
    attestations: list[str] = Field(default_factory=list)
    gates: list[str] = Field(default_factory=list)
    signers: Signers | None = None

    @model_validator(mode="after")
    def _gates_parse(self) -> PromotionRule:
        from ..promotion.gates import parse_gate

        for g in self.gates:
            try:
                parse_gate(g)
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        return self


class PolicyRule(_Strict):
    name: str | None = None
    repositories: list[str] = Field(min_length=1)
    keys: list[str] = Field(default_factory=list)
    identities: list[TrustedIdentity] = Field(default_factory=list)
    trustConfig: str | None = None
    attestations: list[str] = Field(default_factory=list)
    #: The verified digest must be promoted into one of these tags (of its repository) now, by a signed record.
    promotedTo: list[str] = Field(default_factory=list)
    promotion: list[PromotionRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _someone(self) -> PolicyRule:
        if not self.keys and not self.identities:
            raise ValueError("a rule needs keys or identities")
        return self

    def matches(self, repository: str, base_dir: Path = Path(".")) -> bool:
        """Whether ``repository`` (a canonical name) matches one of the patterns (canonicalised first)."""
        return any(glob_regex(canonical_pattern(p, base_dir)).fullmatch(repository) for p in self.repositories)


class Policy(_Strict):
    apiVersion: Literal["ociart.dev/v1alpha1"]
    kind: Literal["VerificationPolicy"]
    rules: list[PolicyRule] = Field(min_length=1)
    #: Where relative paths in the policy are resolved (the policy file's directory).
    base_dir: Path = Field(default=Path("."), exclude=True)

    def rule_for(self, repository: str) -> PolicyRule:
        """The first rule matching ``repository``, a canonical name (:func:`ociart.reference.canonical_name`)."""
        for rule in self.rules:
            if rule.matches(repository, self.base_dir):
                return rule
        raise VerificationError(f"{repository}: no rule of the verification policy matches this repository")

    def _path(self, ref: str) -> Path:
        p = key_path(ref)
        return p if p.is_absolute() else self.base_dir / p

    def trust_for(self, repository: str) -> tuple[Trust, PolicyRule]:
        """The trust and the rule that apply to ``repository`` (``registry/repo``, or ``repo`` in the embedded
        store)."""
        rule = self.rule_for(repository)
        trusted_keys = [TrustedKey(name=k, key=load_verification_key(str(self._path(k)))) for k in rule.keys]
        trust_config = self._path(rule.trustConfig) if rule.trustConfig else None
        return Trust(keys=trusted_keys, identities=list(rule.identities), trust_config=trust_config), rule

    def signers_trust(self, rule: PolicyRule, entry: PromotionRule) -> Trust | None:
        """The trust evaluations must verify under for ``entry`` (None: the rule's own)."""
        if entry.signers is None:
            return None
        trusted_keys = [TrustedKey(name=k, key=load_verification_key(str(self._path(k)))) for k in entry.signers.keys]
        trust_config = self._path(rule.trustConfig) if rule.trustConfig else None
        return Trust(keys=trusted_keys, identities=list(entry.signers.identities), trust_config=trust_config)


def load_policy(path: Path) -> Policy:
    """Read and check a policy file; one clear error line when it is missing or malformed."""
    return load_policy_file(path, Policy, "policy file")


def load_policy_file(path: Path, model: type[_M], what: str) -> _M:
    """Read a YAML policy file (verification or retention) into ``model``, with the file's directory as
    ``base_dir``; one clear error line, naming ``what`` and the path, when it is missing or malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"{what} {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidContentError(f"{what} {path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InvalidContentError(f"{what} {path}: expected a mapping with apiVersion, kind and rules")
    try:
        return model.model_validate({**data, "base_dir": path.resolve().parent})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top)"
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidContentError(f"{what} {path}: {loc}: {msg}") from None


__all__ = ["API_VERSION", "KIND", "Policy", "PolicyRule", "PromotionRule", "Signers", "canonical_pattern", "glob_regex", "load_policy",
           "load_policy_file"]
