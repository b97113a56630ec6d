"""Artifact metadata: ``ociart.yaml`` and flags in, ModelPack / ociart configs and annotations out."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import UsageError

METADATA_FILE = "ociart.yaml"

A_CREATED = "org.opencontainers.image.created"
A_VERSION = "org.opencontainers.image.version"
A_TITLE = "org.opencontainers.image.title"
A_DESCRIPTION = "org.opencontainers.image.description"
A_SOURCE = "org.opencontainers.image.source"
A_REVISION = "org.opencontainers.image.revision"
A_LICENSES = "org.opencontainers.image.licenses"
A_AUTHORS = "org.opencontainers.image.authors"
A_KIND = "dev.ociart.kind"
A_FRAMEWORK = "dev.ociart.framework"
A_METRICS = "dev.ociart.metrics+json"
A_LABEL_PREFIX = "dev.ociart.label."
A_FILEPATH = "org.cncf.model.filepath"
A_FILE_METADATA = "org.cncf.model.file.metadata+json"
A_UNTESTED = "org.cncf.model.file.mediatype.untested"


class Metadata(BaseModel):
    """What ``ociart.yaml`` may say (all optional); flags override it field by field."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: str | None = None
    name: str | None = None
    version: str | None = None
    description: str | None = None
    authors: list[str] = Field(default_factory=list)
    license: str | None = None  # SPDX expression
    framework: str | None = None
    architecture: str | None = None
    precision: str | None = None
    format: str | None = None
    param_size: str | None = Field(default=None, alias="paramSize")
    quantization: str | None = None
    family: str | None = None
    vendor: str | None = None
    source: str | None = None  # repository URL
    revision: str | None = None  # commit
    doc_url: str | None = Field(default=None, alias="docURL")
    datasets: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)

    def merged(self, overrides: dict[str, Any]) -> Metadata:
        data = self.model_dump(by_alias=False)
        for key, value in overrides.items():
            if value in (None, [], {}):
                continue
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return Metadata.model_validate(data)


def load_metadata(directory: Path) -> Metadata:
    path = directory / METADATA_FILE
    if not path.is_file():
        return Metadata()
    import yaml

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: expected a mapping of metadata fields")
    try:
        return Metadata.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"{path}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


def created_timestamp(reproducible: bool, newest_mtime: float | None) -> str | None:
    """RFC 3339 UTC: ``SOURCE_DATE_EPOCH`` when set; none with ``--reproducible``; else the newest file mtime."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            seconds = int(epoch)
        except ValueError:
            raise UsageError(f"SOURCE_DATE_EPOCH={epoch!r} is not an integer") from None
    elif reproducible or newest_mtime is None:
        return None
    else:
        seconds = int(newest_mtime)
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def manifest_annotations(kind: str, meta: Metadata, created: str | None) -> dict[str, str]:
    a: dict[str, str] = {A_KIND: kind}
    pairs = [(A_CREATED, created), (A_VERSION, meta.version), (A_TITLE, meta.name),
             (A_DESCRIPTION, meta.description), (A_SOURCE, meta.source), (A_REVISION, meta.revision),
             (A_LICENSES, meta.license), (A_AUTHORS, ", ".join(meta.authors) or None),
             (A_FRAMEWORK, meta.framework)]
    a.update({k: v for k, v in pairs if v})
    if meta.metrics:
        a[A_METRICS] = json.dumps(meta.metrics, sort_keys=True, separators=(",", ":"))
    for key, value in sorted(meta.labels.items()):
        a[A_LABEL_PREFIX + key] = value
    return a


# -- configs ----------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


class ModelPackDescriptor(_Strict):
    createdAt: str | None = None
    authors: list[str] | None = None
    family: str | None = None
    name: str | None = None
    docURL: str | None = None
    sourceURL: str | None = None
    datasetsURL: list[str] | None = None
    version: str | None = None
    revision: str | None = None
    vendor: str | None = None
    licenses: list[str] | None = None
    title: str | None = None
    description: str | None = None


class ModelPackModelConfig(_Strict):
    architecture: str | None = None
    format: str | None = None
    paramSize: str | None = None
    precision: str | None = None
    quantization: str | None = None


class ModelFS(_Strict):
    type: str = "layers"
    diffIds: list[str]


class ModelPackConfig(_Strict):
    """``application/vnd.cncf.model.config.v1+json`` (model-spec ``schema/config-schema.json``)."""

    descriptor: ModelPackDescriptor
    config: ModelPackModelConfig
    modelfs: ModelFS


class ArtifactConfig(_Strict):
    """ociart's config for datasets, preprocessors and checkpoints (docs/spec.md §3)."""

    schemaVersion: int = 1
    kind: str
    name: str | None = None
    version: str | None = None
    description: str | None = None
    createdAt: str | None = None
    authors: list[str] | None = None
    licenses: list[str] | None = None
    framework: str | None = None
    architecture: str | None = None
    precision: str | None = None
    format: str | None = None
    metrics: dict[str, float] | None = None
    labels: dict[str, str] | None = None
    files: int
    size: int
    diffIds: list[str]


def build_config(kind: str, meta: Metadata, created: str | None, diff_ids: list[str], files: int, size: int,
                 weight_format: str | None) -> bytes:
    licenses = [meta.license] if meta.license else None
    if kind == "model":
        return ModelPackConfig(
            descriptor=ModelPackDescriptor(
                createdAt=created, authors=meta.authors or None, family=meta.family, name=meta.name,
                docURL=meta.doc_url, sourceURL=meta.source, datasetsURL=meta.datasets or None,
                version=meta.version, revision=meta.revision, vendor=meta.vendor, licenses=licenses,
                description=meta.description),
            config=ModelPackModelConfig(architecture=meta.architecture, format=meta.format or weight_format,
                                        paramSize=meta.param_size, precision=meta.precision,
                                        quantization=meta.quantization),
            modelfs=ModelFS(diffIds=diff_ids),
        ).to_bytes()
    return ArtifactConfig(
        kind=kind, name=meta.name, version=meta.version, description=meta.description, createdAt=created,
        authors=meta.authors or None, licenses=licenses, framework=meta.framework, architecture=meta.architecture,
        precision=meta.precision, format=meta.format or weight_format, metrics=meta.metrics or None,
        labels=meta.labels or None, files=files, size=size, diffIds=diff_ids,
    ).to_bytes()


def file_metadata(name: str, mode: int, size: int) -> str:
    """``org.cncf.model.file.metadata+json`` with constant owner and time (reproducible)."""
    return json.dumps({"name": name, "mode": mode, "uid": 0, "gid": 0, "size": size,
                       "mtime": "1970-01-01T00:00:00Z", "typeflag": 48}, separators=(",", ":"))
