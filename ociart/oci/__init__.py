"""Wire formats of the OCI image spec v1.1: media types, descriptors, manifests, indexes, layouts.

Manifests are serialized once to bytes; :class:`Content` keeps (bytes, media type, digest) together so
the digest a registry sees is always the digest of the exact bytes we hold.
"""

from .digest import Digester, sha256_bytes, sha256_file
from .mediatypes import (
    ANNOTATION_REF_NAME,
    ANNOTATION_TITLE,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    EMPTY_JSON,
    EMPTY_JSON_DIGEST,
    INDEX_TYPES,
    MANIFEST_ACCEPT,
    MANIFEST_TYPES,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
)
from .models import Content, Descriptor, ImageLayout, Index, Manifest, parse_manifest_content

__all__ = [
    "ANNOTATION_REF_NAME",
    "ANNOTATION_TITLE",
    "Content",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "Descriptor",
    "Digester",
    "EMPTY_JSON",
    "EMPTY_JSON_DIGEST",
    "INDEX_TYPES",
    "ImageLayout",
    "Index",
    "MANIFEST_ACCEPT",
    "MANIFEST_TYPES",
    "Manifest",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "parse_manifest_content",
    "sha256_bytes",
    "sha256_file",
]
