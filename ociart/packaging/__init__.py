"""ML packaging: directories <-> typed OCI artifacts (ModelPack models, datasets, preprocessors, reports,
checkpoints), deterministic tar layers for small files, safe restore. Formats: docs/spec.md."""

from .kinds import Kind
from .metadata import Metadata, load_metadata

__all__ = ["Kind", "Metadata", "load_metadata"]
