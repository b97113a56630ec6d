"""Where content lives: a registry over HTTP or an OCI image-layout directory, behind one interface."""

from .base import Target
from .layout import LayoutTarget

__all__ = ["LayoutTarget", "Target"]
