"""Promotion gates, checked against the digest the source resolved to (docs/promotion.md "Gates").

* ``signature``: at least one signature of the digest verifies under the trust (keys, identities) given;
* ``attestation:<type>``: an attestation of that predicate type verifies under the trust;
* metric gates (``accuracy>=0.9``): the metric comes only from verified evaluation attestations
  (:data:`~ociart.promotion.models.EVALUATION_PREDICATE`) about the digest, signed by a trusted signer (the policy
  entry's ``signers``, else the trust); when several carry the metric, the newest by ``timestamp`` decides. The
  candidate's own annotations, config and provenance are never read: a trainer's self-reported number is not an
  evaluation.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from ..errors import UsageError
from ..targets.base import Target
from .models import EVALUATION_PREDICATE, Evaluation, GateResult

_GATE = re.compile(r"\s*([A-Za-z0-9_][A-Za-z0-9_.\-/:@]*)\s*(>=|<=|==|!=|>|<)\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq, "!=": operator.ne}


@dataclass(frozen=True)
class MetricGate:
    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)


def parse_gate(text: str) -> MetricGate:
    """``accuracy>=0.9`` (``>= > <= < == !=``, a finite number) → a :class:`MetricGate`."""
    m = _GATE.fullmatch(text)
    if m is None:
        raise UsageError(f"gate {text!r}: expected METRIC OP NUMBER with OP one of >= > <= < == != "
                         "(e.g. 'accuracy>=0.9')")
    try:
        value = float(m.group(3))
    except ValueError:
        raise UsageError(f"gate {text!r}: {m.group(3)!r} is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"gate {text!r}: the threshold must be a finite number")
    return MetricGate(m.group(1), m.group(2), value)


@dataclass(frozen=True)
class Measured:
    """A metric's value and the verified evaluation it came from."""

    value: float
    evaluation: Evaluation
    source: str
    signer: str


def evaluations(target: Target, repo: str, digest: str, trust: object,
                rejected: list[str] | None = None) -> list[tuple[Evaluation, str, str]]:
    """(evaluation, referrer digest, signer) of every evaluation attestation about ``repo@digest`` that verifies
    under ``trust``, newest ``timestamp`` first. A verified statement whose predicate is not a valid evaluation is
    skipped with its reason in ``rejected``."""
    from ..signing.verify import verified_statements

    out: list[tuple[Evaluation, str, str]] = []
    for verified, stmt in verified_statements(target, repo, digest, trust, EVALUATION_PREDICATE,  # type: ignore[arg-type]
                                              rejected):
        try:
            ev = Evaluation.model_validate(stmt.predicate or {})
        except ValidationError as exc:
            if rejected is not None:
                first = exc.errors()[0]
                rejected.append(f"evaluation {verified.source}: {'.'.join(map(str, first['loc']))}: {first['msg']}")
            continue
        out.append((ev, verified.source, verified.signer))
    out.sort(key=lambda t: t[0].timestamp, reverse=True)
    return out


def metric_values(evals: Sequence[tuple[Evaluation, str, str]]) -> dict[str, Measured]:
    """Each metric's value from the newest verified evaluation carrying it."""
    found: dict[str, Measured] = {}
    for ev, source, signer in evals:  # newest first
        for name, value in ev.metrics.items():
            found.setdefault(name, Measured(value, ev, source, signer))
    return found


def check_metric(gate: MetricGate, measured: dict[str, Measured]) -> GateResult:
    m = measured.get(gate.metric)
    if m is None:
        return GateResult(gate=str(gate), passed=False,
                          detail=f"no verified evaluation ({EVALUATION_PREDICATE}) by a trusted signer reports "
                                 f"{gate.metric}")
    ok = gate.holds(m.value)
    ts = m.evaluation.timestamp.isoformat().replace("+00:00", "Z")
    return GateResult(gate=str(gate), passed=ok,
                      detail=f"{gate.metric}={m.value:g} {'meets' if ok else 'fails'} {gate.op}{gate.threshold:g} "
                             f"(evaluation {m.source} of {ts}, signed by {m.signer})")


def attest_evaluation(target: Target, subject_ref: object, subject: object, signer: object, metrics: dict[str, float],
                      *, dataset_uri: str | None = None, dataset_digest: str | None = None,
                      evaluator: str | None = None, report: str | None = None) -> str:
    """Sign an evaluation (:data:`EVALUATION_PREDICATE`) of ``metrics`` about ``subject`` (a descriptor in
    ``subject_ref``'s repository) and attach it there; returns the bundle referrer's digest. ``report``: the digest
    of the report artifact the metrics come from (recorded as the evaluator when none is given)."""
    from datetime import UTC, datetime

    from ..signing.bundle import statement_bytes
    from ..signing.service import attest_digest, docker_reference
    from .models import Dataset

    ev = Evaluation(metrics=metrics, dataset=Dataset(uri=dataset_uri, digest=dataset_digest) if dataset_uri else None,
                    evaluator=evaluator or (f"ociart report {report}" if report else signer.describe()),  # type: ignore[attr-defined]
                    timestamp=datetime.now(UTC))
    body = statement_bytes(subject.digest, EVALUATION_PREDICATE,  # type: ignore[attr-defined]
                           ev.model_dump(mode="json", exclude_none=True), docker_reference(subject_ref))  # type: ignore[arg-type]
    return attest_digest(target, subject_ref, subject, signer, body, EVALUATION_PREDICATE).bundle  # type: ignore[arg-type]


__all__ = ["Measured", "MetricGate", "attest_evaluation", "check_metric", "evaluations", "metric_values",
           "parse_gate"]
