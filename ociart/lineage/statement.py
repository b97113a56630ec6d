"""in-toto Statement v1 with an SLSA Provenance v1 predicate for ML training runs (docs/spec.md §6).

in-toto: https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md (``_type``, ``subject``,
``predicateType``, ``predicate``; ResourceDescriptor). SLSA: https://slsa.dev/spec/v1.1/provenance
(``buildDefinition``, ``runDetails``). The buildType ``https://ociart.dev/buildtypes/ml-training/v1`` is ociart's.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://ociart.dev/buildtypes/ml-training/v1"
BUILDER_ID = "https://ociart.dev/builders/ociart-push/v1"
#: Referrer manifests carrying a statement (unsigned): artifactType and the layer's media type.
INTOTO_MEDIA_TYPE = "application/vnd.in-toto+json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ResourceDescriptor(_Model):
    uri: str | None = None
    digest: dict[str, str] | None = None
    name: str | None = None
    downloadLocation: str | None = None
    mediaType: str | None = None
    annotations: dict[str, Any] | None = None


class Subject(_Model):
    name: str
    digest: dict[str, str]


class ExternalParameters(_Model):
    """What the user controlled. Verifiers should reject unknown fields: every field is listed here."""

    artifact: str  # the reference pushed (repository and tag)
    kind: str
    entryPoint: str | None = None
    args: list[str] | None = None
    hyperparameters: dict[str, Any] | None = None
    metrics: dict[str, float] | None = None


class BuildDefinition(_Model):
    buildType: str = BUILD_TYPE
    externalParameters: ExternalParameters
    internalParameters: dict[str, Any] | None = None
    resolvedDependencies: list[ResourceDescriptor] | None = None


class Builder(_Model):
    id: str = BUILDER_ID
    version: dict[str, str] | None = None


class RunMetadata(_Model):
    invocationId: str | None = None
    startedOn: str | None = None
    finishedOn: str | None = None


class RunDetails(_Model):
    builder: Builder = Field(default_factory=Builder)
    metadata: RunMetadata | None = None
    byproducts: list[ResourceDescriptor] | None = None


class Provenance(_Model):
    buildDefinition: BuildDefinition
    runDetails: RunDetails


class Statement(_Model):
    type_: str = Field(default=STATEMENT_TYPE, alias="_type")
    subject: list[Subject]
    predicateType: str = SLSA_PROVENANCE
    predicate: Provenance

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()

    def inputs(self) -> list[ResourceDescriptor]:
        return list(self.predicate.buildDefinition.resolvedDependencies or [])
