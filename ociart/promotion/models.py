"""Wire formats of promotion (docs/spec.md "Promotion"): the evaluation predicate, the promotion record's predicate,
gate results, and the per-tag history document."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

#: in-toto predicate type of an evaluation: metrics measured on a dataset by an evaluator (docs/spec.md).
EVALUATION_PREDICATE: Final = "https://ociart.dev/evaluation/v1"
#: in-toto predicate type of a promotion record (attached to the promoted digest, in the target repository).
PROMOTION_PREDICATE: Final = "https://ociart.dev/promotion/v1"
#: The history artifact of one tag: its artifactType and the media type of its one layer (the history document).
HISTORY_ARTIFACT_TYPE: Final = "application/vnd.ociart.promotion.history.v1"
HISTORY_MEDIA_TYPE: Final = "application/vnd.ociart.promotion.history.v1+json"
#: Annotation of a history manifest: the digest of the history manifest it replaced (absent on the first).
ANNOTATION_HISTORY_PREVIOUS: Final = "dev.ociart.promotion.history.previous"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Dataset(_Strict):
    uri: str
    digest: str | None = None


class Evaluation(_Strict):
    """The predicate of :data:`EVALUATION_PREDICATE`."""

    metrics: dict[str, float] = Field(min_length=1)
    dataset: Dataset | None = None
    evaluator: str | None = None
    timestamp: datetime


class GateResult(_Strict):
    """One gate checked against the source digest: ``signature``, ``attestation:<type>``, ``metric`` gates
    (``accuracy>=0.9``) and the policy's ``from`` rule."""

    gate: str
    passed: bool
    detail: str


class PromotionSource(_Strict):
    reference: str
    digest: str


class PromotionTarget(_Strict):
    repository: str
    tag: str


class Promotion(_Strict):
    """The predicate of :data:`PROMOTION_PREDICATE`."""

    source: PromotionSource
    target: PromotionTarget
    #: What the target tag pointed at before (None: the tag did not exist).
    previous: str | None = None
    gates: list[GateResult] = []
    actor: str
    time: datetime
    rollback: bool = False


class HistoryEntry(_Strict):
    """One promotion into a tag, as the tag's history records it."""

    time: datetime
    #: The digest the tag was moved to.
    digest: str
    #: The digest it pointed at before (None: the tag did not exist).
    previous: str | None = None
    #: The source reference as given (``repo:candidate``), pinned digest in ``digest``.
    source: str | None = None
    actor: str | None = None
    rollback: bool = False
    #: Digest of the promotion record (the referrer manifest holding the statement; signed or not).
    record: str | None = None
    signed: bool = False
    gates: list[GateResult] = []


class History(_Strict):
    """The history document of one tag: every promotion into it, oldest first; only ever appended to."""

    repository: str
    tag: str
    entries: list[HistoryEntry] = []


__all__ = ["ANNOTATION_HISTORY_PREVIOUS", "Dataset", "EVALUATION_PREDICATE", "Evaluation", "GateResult",
           "HISTORY_ARTIFACT_TYPE", "HISTORY_MEDIA_TYPE", "History", "HistoryEntry", "PROMOTION_PREDICATE",
           "Promotion", "PromotionSource", "PromotionTarget"]
