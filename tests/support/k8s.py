"""Kubernetes manifest validation for tests: one function, :func:`manifest_errors`, for every kind.

* Built-in kinds (Pod, Deployment, Job, ConfigMap, Secret, ...) are validated with ``kubernetes-validate`` (a test
  dependency from PyPI that ships the strict JSON schemas of each Kubernetes release) for :data:`K8S_VERSION`.
* Custom resources (Kyverno, sigstore policy-controller, KServe) are validated against the served version of their
  CRD's ``openAPIV3Schema``, converted the way the API server reads it (:func:`to_json_schema`). The CRDs are not
  part of this repository: they are read from ``$OCIART_SPEC_DIR`` (:data:`CRD_FILES`), through
  ``helpers.spec_dir``, so a test that needs one skips without it (fails with ``OCIART_REQUIRE_SPEC=1``).

``strict`` is Kubernetes *strict field validation* (what ``kubectl apply`` does by default): unknown fields are
errors (except under ``x-kubernetes-preserve-unknown-fields``). Without it, plain schema semantics.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helpers import spec_dir

#: The Kubernetes release whose schemas validate built-in kinds: 1.34 has image volumes (``volumes[].image``).
K8S_VERSION = "1.34.0"

#: (API group, kind) -> the CRD file under ``$OCIART_SPEC_DIR``.
CRD_FILES: dict[tuple[str, str], str] = {
    ("kyverno.io", "ClusterPolicy"): "k8s/kyverno.io_clusterpolicies.yaml",
    ("policies.kyverno.io", "ImageValidatingPolicy"): "k8s/policies.kyverno.io_imagevalidatingpolicies.yaml",
    ("policy.sigstore.dev", "ClusterImagePolicy"): "k8s/policy.sigstore.dev_clusterimagepolicies.yaml",
    ("serving.kserve.io", "InferenceService"): "kserve/serving.kserve.io_inferenceservices.yaml",
    ("serving.kserve.io", "ClusterStorageContainer"): "kserve/serving.kserve.io_clusterstoragecontainers.yaml",
}

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _group_kind(api_version: str, kind: str) -> tuple[str, str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version, kind


def is_custom(api_version: str, kind: str) -> bool:
    group, _, _ = _group_kind(api_version, kind)
    return (group, kind) in CRD_FILES


@cache
def _load_crd(relpath: str, group: str, kind: str) -> dict[str, Any]:
    path = spec_dir(relpath) / relpath
    with open(path, encoding="utf-8") as fh:
        for doc in yaml.load_all(fh, Loader=_Loader):
            if (isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
                    and (doc["spec"]["group"], doc["spec"]["names"]["kind"]) == (group, kind)):
                return doc
    pytest.fail(f"{path} holds no CustomResourceDefinition for {kind} in group {group!r}", pytrace=False)


def crd(group: str, kind: str) -> dict[str, Any]:
    """The CustomResourceDefinition of ``kind`` in ``group``, from ``$OCIART_SPEC_DIR`` (skips without it)."""
    relpath = CRD_FILES.get((group, kind))
    if relpath is None:
        pytest.fail(f"no CRD file known for {kind} in group {group!r} (tests/support/k8s.py CRD_FILES)", pytrace=False)
    return _load_crd(relpath, group, kind)


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the served version named by ``api_version``; fails if that version is not served."""
    group, version, _ = _group_kind(api_version, kind)
    served = {v["name"]: v for v in crd(group, kind)["spec"]["versions"] if v.get("served")}
    if version not in served:
        pytest.fail(f"{api_version} {kind}: version {version!r} is not served by the CRD (served: {sorted(served)})",
                    pytrace=False)
    return served[version]["schema"]["openAPIV3Schema"]


# -- OpenAPI v3 (Kubernetes structural schema) -> JSON Schema ------------------------------------------
_OBJECT_META = {
    "type": "object",
    "properties": {
        "name": {"type": "string"}, "namespace": {"type": "string"}, "generateName": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def to_json_schema(node: Any, strict: bool = True, root: bool = True) -> Any:
    """Convert a CRD openAPIV3Schema into JSON Schema as the API server applies it.

    ``x-kubernetes-*`` keys are dropped after use: ``int-or-string`` becomes integer|string, ``preserve-unknown-
    fields`` keeps an object open. ``nullable: true`` admits null. With ``strict``, objects that declare
    ``properties`` (and neither ``additionalProperties`` nor ``preserve-unknown-fields``) get
    ``additionalProperties: false``, i.e. Kubernetes strict field validation; without it, plain JSON Schema
    semantics (unknown fields allowed, as a CRD schema alone says). The root always admits ``apiVersion``,
    ``kind`` and a (strict) ``metadata``.
    """
    if isinstance(node, list):
        return [to_json_schema(n, strict, False) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "description", "example", "externalDocs"):
            continue
        if key in ("properties", "patternProperties", "definitions", "$defs"):
            out[key] = {k: to_json_schema(v, strict, False) for k, v in value.items()}
        else:
            out[key] = to_json_schema(value, strict, False)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out = {"anyOf": [{"type": "integer"}, {"type": "string"}], **out}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    if root:
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        meta = props.get("metadata")
        if not isinstance(meta, dict) or "properties" not in meta:
            props["metadata"] = copy.deepcopy(_OBJECT_META)
            if strict:
                props["metadata"]["additionalProperties"] = False
    if (strict and "properties" in out and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


# -- validation -------------------------------------------------------------------------------------
def manifest_errors(doc: dict[str, Any], strict: bool = True) -> list[str]:
    """Schema errors of one Kubernetes object (``path: message`` lines, sorted); ``[]`` when valid.

    A built-in kind gets the first error ``kubernetes-validate`` reports (it stops there); a custom resource gets
    all of them. A kind known to neither fails the test.
    """
    api_version, kind = doc["apiVersion"], doc["kind"]
    if is_custom(api_version, kind):
        validator = jsonschema.Draft202012Validator(to_json_schema(crd_schema(api_version, kind), strict))
        return sorted(f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
                      for e in validator.iter_errors(doc))
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=strict)
    except kubernetes_validate.SchemaNotFoundError:
        pytest.fail(f"{api_version} {kind}: neither a Kubernetes {K8S_VERSION} built-in kind nor a CRD listed in "
                    "tests/support/k8s.py CRD_FILES", pytrace=False)
    except kubernetes_validate.ValidationError as e:
        return [f"{'/'.join(str(p) for p in e.path) or '(root)'}: {e.message}"]
    return []
