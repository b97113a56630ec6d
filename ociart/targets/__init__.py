"""Where content lives: a registry over HTTP or an OCI image-layout directory, behind one interface."""

from .base import Target
from .ingest import Ingest
from .layout import LayoutTarget

__all__ = ["Ingest", "LayoutTarget", "Target"]
