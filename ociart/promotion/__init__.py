"""Promotion by retagging digests: gates, signed promotion records, per-tag history, rollback (docs/promotion.md).

Library API: :func:`history` (what retention reads), :func:`promote`, :func:`rollback` (also ``Client.promote``,
``Client.rollback``, ``Client.history``)."""

from __future__ import annotations

from .history import append, history, history_tag, read_history
from .models import (
    EVALUATION_PREDICATE,
    PROMOTION_PREDICATE,
    Evaluation,
    GateResult,
    History,
    HistoryEntry,
    Promotion,
)

__all__ = ["EVALUATION_PREDICATE", "PROMOTION_PREDICATE", "Evaluation", "GateResult", "History", "HistoryEntry",
           "Promotion", "append", "history", "history_tag", "read_history"]
