"""The image-form examples in ``examples/k8s/`` are valid and say what they claim (validated the same way as
tests/test_examples_k8s.py, through ``support.k8s.manifest_errors``):

* ``image-form-pod.yaml``: a Kubernetes 1.34 Pod (strict ``kubernetes-validate``) mounting the model image as an image
  volume pinned by digest, ``subPath`` the image form's default mount path;
* ``kserve-modelcar-inferenceservice.yaml`` (``oci://``) and ``kserve-oci-native-inferenceservice.yaml``
  (``oci+native://``): KServe ``InferenceService`` v1beta1 against the CRD in ``$OCIART_SPEC_DIR``;
* ``policy-controller-image-form.yaml``: a ``ClusterImagePolicy`` whose glob admits exactly those model images and
  whose key is an ECDSA P-256 public key;
* deliberately broken copies fail, so the validation is not vacuous.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.k8s import manifest_errors
from test_examples_k8s import policy_controller_glob

from ociart.packaging.image import DEFAULT_MOUNT_PATH

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "k8s"
POD = EXAMPLES / "image-form-pod.yaml"
MODELCAR = EXAMPLES / "kserve-modelcar-inferenceservice.yaml"
NATIVE = EXAMPLES / "kserve-oci-native-inferenceservice.yaml"
POLICY = EXAMPLES / "policy-controller-image-form.yaml"


def load(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert len(docs) == 1 and isinstance(docs[0], dict), path
    return docs[0]


def model_references() -> list[str]:
    pod = load(POD)
    refs = [v["image"]["reference"] for v in pod["spec"]["volumes"] if "image" in v]
    for path in (MODELCAR, NATIVE):
        uri = load(path)["spec"]["predictor"]["model"]["storageUri"]
        refs.append(uri.split("://", 1)[1])
    return refs


@pytest.mark.parametrize("path", [POD, MODELCAR, NATIVE, POLICY], ids=lambda p: p.name)
def test_example_is_valid_under_strict_validation(path: Path) -> None:
    assert manifest_errors(load(path)) == []


@pytest.mark.parametrize(("path", "where", "value"), [
    (POD, ("spec", "volumes", 0, "image", "refrence"), "x"),  # misspelled field
    (POD, ("spec", "containers", 0, "volumeMounts", 0, "subPath"), 5),  # wrong type
    (MODELCAR, ("spec", "predictor", "model", "storageUri"), ["oci://x"]),
    (NATIVE, ("spec", "predictor", "model", "storagUri"), "oci+native://x"),
    (POLICY, ("spec", "images", 0, "globs"), "registry.example.com/**"),
], ids=["pod-misspelled", "pod-subpath-type", "modelcar-uri-type", "native-misspelled", "policy-misspelled"])
def test_broken_copies_fail(path: Path, where: tuple[Any, ...], value: Any) -> None:
    doc = copy.deepcopy(load(path))
    node: Any = doc
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    assert manifest_errors(doc) != []


def test_pod_mounts_the_image_form_by_digest_under_its_mount_path() -> None:
    pod = load(POD)
    (volume,) = pod["spec"]["volumes"]
    assert "@sha256:" in volume["image"]["reference"]
    (mount,) = pod["spec"]["containers"][0]["volumeMounts"]
    assert mount["name"] == volume["name"] and mount["readOnly"] is True
    assert mount["subPath"] == DEFAULT_MOUNT_PATH.lstrip("/")


def test_inferenceservices_use_the_modelcar_and_native_schemes_on_the_same_model() -> None:
    assert load(MODELCAR)["spec"]["predictor"]["model"]["storageUri"].startswith("oci://")
    assert load(NATIVE)["spec"]["predictor"]["model"]["storageUri"].startswith("oci+native://")
    refs = model_references()
    assert len(set(refs)) == 1 and "@sha256:" in refs[0]
    assert "--base" in MODELCAR.read_text()  # the modelcar needs a shell: the comment says how to get one


def test_policy_admits_exactly_the_model_images_with_a_p256_key() -> None:
    spec = load(POLICY)["spec"]
    globs = [i["glob"] for i in spec["images"]]
    for ref in model_references():
        assert any(policy_controller_glob(g, ref) for g in globs), (globs, ref)
    for other in ("registry.example.com/models/bert@sha256:" + "ab" * 32, "registry.example.com/serving/onnx-server"):
        assert not any(policy_controller_glob(g, other) for g in globs)
    (authority,) = spec["authorities"]
    assert authority["signatureFormat"] == "legacy" and "ctlog" not in authority
    key = serialization.load_pem_public_key(authority["key"]["data"].encode())
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
