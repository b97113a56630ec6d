"""Lineage and provenance: capture at push time, in-toto/SLSA statements, graph queries, the run API."""

from .graph import Node
from .record import LineageOptions
from .statement import Statement

__all__ = ["LineageOptions", "Node", "Statement"]
