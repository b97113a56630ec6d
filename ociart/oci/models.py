"""Pydantic models of the OCI image spec v1.1.1 wire formats.

Field names are the JSON names of the spec. Parsed models are used for reading and planning; the bytes
that were received or will be sent are kept in :class:`Content` and never re-serialized.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import limits
from ..errors import InvalidContentError
from .digest import sha256_bytes
from .mediatypes import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST

DIGEST_PATTERN = r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"
#: Defined with every other bound in :mod:`ociart.limits`.
MAX_MANIFEST_BYTES = limits.MANIFEST_BYTES


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json_bytes(self) -> bytes:
        """Canonical-enough serialization: no spaces, no None fields, insertion order of the model."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


class Platform(_Wire):
    architecture: str
    os: str
    os_version: str | None = Field(default=None, alias="os.version")
    os_features: list[str] | None = Field(default=None, alias="os.features")
    variant: str | None = None


class Descriptor(_Wire):
    mediaType: str
    digest: str = Field(pattern=DIGEST_PATTERN)
    size: int = Field(ge=0)
    urls: list[str] | None = None
    annotations: dict[str, str] | None = None
    data: str | None = None
    artifactType: str | None = None
    platform: Platform | None = None

    @property
    def title(self) -> str | None:
        from .mediatypes import ANNOTATION_TITLE

        return (self.annotations or {}).get(ANNOTATION_TITLE)


class Manifest(_Wire):
    schemaVersion: Literal[2] = 2
    mediaType: str = OCI_MANIFEST
    artifactType: str | None = None
    config: Descriptor
    layers: list[Descriptor] = Field(default_factory=list)
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None

    @field_validator("mediaType")
    @classmethod
    def _manifest_type(cls, v: str) -> str:
        if v not in MANIFEST_TYPES:
            raise ValueError(f"not an image manifest media type: {v}")
        return v


class Index(_Wire):
    schemaVersion: Literal[2] = 2
    mediaType: str = OCI_INDEX
    artifactType: str | None = None
    manifests: list[Descriptor] = Field(default_factory=list)
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


class RootFS(_Wire):
    type: str = "layers"
    diff_ids: list[str] = Field(default_factory=list)


class ImageConfigBody(_Wire):
    """The ``config`` member of an image config (execution parameters); only the labels are used here."""

    Labels: dict[str, str] | None = None


class History(_Wire):
    created: str | None = None
    created_by: str | None = None
    comment: str | None = None
    empty_layer: bool | None = None


class ImageConfig(_Wire):
    """``application/vnd.oci.image.config.v1+json`` (image-spec config.md); unknown fields of a base image's config
    are kept (``extra="allow"``) when it is extended."""

    created: str | None = None
    architecture: str
    os: str
    variant: str | None = None
    config: ImageConfigBody | None = None
    rootfs: RootFS
    history: list[History] | None = None


class ImageLayout(_Wire):
    imageLayoutVersion: str = "1.0.0"


class Content(BaseModel):
    """Exact bytes with their media type and digest, kept together."""

    model_config = ConfigDict(frozen=True)

    data: bytes
    media_type: str
    digest: str

    @classmethod
    def of(cls, data: bytes, media_type: str) -> Content:
        return cls(data=data, media_type=media_type, digest=sha256_bytes(data))

    @classmethod
    def from_model(cls, model: Manifest | Index) -> Content:
        return cls.of(model.to_json_bytes(), model.mediaType)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: Any) -> Descriptor:
        return Descriptor(mediaType=self.media_type, digest=self.digest, size=self.size, **extra)

    def parse(self) -> Manifest | Index:
        return parse_manifest_content(self.data, self.media_type)


def detect_media_type(data: bytes, declared: str | None = None) -> str:
    """Media type from the body's ``mediaType`` field, falling back to the transport's content type."""
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise InvalidContentError(f"malformed manifest: not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise InvalidContentError("malformed manifest: not a JSON object")
    body_type = obj.get("mediaType")
    declared = (declared or "").split(";")[0].strip() or None
    if body_type and declared and body_type != declared and declared in MANIFEST_TYPES | INDEX_TYPES:
        raise InvalidContentError(f"malformed manifest: body says {body_type} but was served as {declared}")
    mt = body_type or declared
    if mt is None:
        mt = OCI_INDEX if "manifests" in obj else OCI_MANIFEST
    return mt


def parse_manifest_content(data: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse manifest or index bytes; raise :class:`InvalidContentError` with the reason if malformed."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise InvalidContentError(f"manifest is {len(data)} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
    mt = detect_media_type(data, media_type)
    try:
        if mt in INDEX_TYPES:
            return Index.model_validate_json(data)
        if mt in (OCI_MANIFEST, DOCKER_MANIFEST):
            return Manifest.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidContentError(f"malformed manifest: {where}: {first['msg']}") from None
    raise InvalidContentError(f"unsupported manifest media type {mt!r}")


__all__ = [
    "Content",
    "DOCKER_MANIFEST_LIST",
    "Descriptor",
    "ImageConfig",
    "ImageLayout",
    "Index",
    "Manifest",
    "Platform",
    "detect_media_type",
    "parse_manifest_content",
]
