"""The Kubernetes admission examples in ``examples/k8s/`` are valid custom resources that say what they claim.

* every document is validated against the served version of its CRD's ``openAPIV3Schema`` (Kyverno
  ``ClusterPolicy`` and ``ImageValidatingPolicy``, sigstore policy-controller ``ClusterImagePolicy``) with
  jsonschema, converted the way the API server reads it: ``nullable``, ``x-kubernetes-int-or-string``, and *strict
  field validation* (what ``kubectl apply`` does by default: unknown fields are errors except under
  ``x-kubernetes-preserve-unknown-fields``);
* deliberately broken copies (misspelled field, wrong type, bad enum, missing required field) fail;
* the example public keys are ECDSA P-256 PEMs, the image patterns match ``registry.example.com/models/bert``
  with each verifier's own glob semantics, key-mode settings skip Rekor/SCT, and the README's Pod snippet feeds
  the init container the same annotation that both Kyverno policies verify.

* the README's Pod, and a Pod mounting the model as an image volume (the extractors' ``volumes[].image``), are
  valid Kubernetes 1.34 Pods under strict validation (``kubernetes-validate``).

Validation is ``support.k8s.manifest_errors``. The CRDs are not part of this repository: they are read from
``$OCIART_SPEC_DIR`` (``support.k8s.CRD_FILES``); without them the tests that need them skip, naming the variable and
the files (fail with ``OCIART_REQUIRE_SPEC=1``). The rest runs everywhere.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.k8s import K8S_VERSION, crd, crd_schema, manifest_errors, to_json_schema

from ociart.signing import keys

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples" / "k8s"
KYVERNO = EXAMPLES / "kyverno-clusterpolicy.yaml"
POLICY_CONTROLLER = EXAMPLES / "policy-controller-clusterimagepolicy.yaml"
KYVERNO_IVPOL = EXAMPLES / "kyverno-imagevalidatingpolicy.yaml"
EXAMPLE_FILES = [KYVERNO, POLICY_CONTROLLER, KYVERNO_IVPOL]
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
MODEL = "registry.example.com/models/bert"
DIGEST = "sha256:" + "ab" * 32
MODEL_ANNOTATION = "ociart.dev/model"


# -- examples -----------------------------------------------------------------------------------------
def _docs(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        docs = [d for d in yaml.safe_load_all(fh) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs), f"{path}: expected YAML mappings"
    return docs


def _only(path: Path) -> dict[str, Any]:
    docs = _docs(path)
    assert len(docs) == 1, f"{path}: expected one document, got {len(docs)}"
    return docs[0]


def _verify_images(policy: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for rule in policy["spec"]["rules"]:
        yield from rule.get("verifyImages", [])


def _kyverno_key_entries(policy: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for vi in _verify_images(policy):
        for attestor in vi["attestors"]:
            for entry in attestor["entries"]:
                if "keys" in entry:
                    yield entry["keys"]


def _example_pems() -> list[tuple[str, str]]:
    pems = [("kyverno", k["publicKeys"]) for k in _kyverno_key_entries(_only(KYVERNO))]
    pems += [("policy-controller", a["key"]["data"]) for a in _only(POLICY_CONTROLLER)["spec"]["authorities"]
             if "key" in a]
    return pems


# -- verifiers' pattern semantics ---------------------------------------------------------------------
def kyverno_wildcard(pattern: str, name: str) -> bool:
    """Kyverno ``pkg/utils/wildcard.Match``: '*' any run of characters (including '/'), '?' one character."""
    return re.fullmatch("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern),
                        name, re.DOTALL) is not None


def gobwas_glob(pattern: str, image: str) -> bool:
    """Kyverno ImageValidatingPolicy ``matchImageReferences[].glob``: ``github.com/gobwas/glob`` compiled without
    separators, matched against the image string as extracted: '*' (and '**') any run of characters including '/',
    '?' one character. Patterns using classes, alternatives or escapes are refused here (not needed)."""
    assert not set(pattern) & set("[]{}\\!"), f"glob {pattern!r} uses syntax this helper does not model"
    return kyverno_wildcard(pattern, image)


def policy_controller_glob(glob: str, image: str) -> bool:
    """policy-controller ``pkg/apis/glob.Match``: '*' = ``[^/]*``, '**' = ``.*``; a tag-less, digest-less
    reference is matched as ``:latest`` (go-containerregistry ``ref.Name()``), then as written."""
    assert re.fullmatch(r"[a-zA-Z0-9\-_:/*.]+", glob), f"invalid policy-controller glob {glob!r}"
    rx = glob.replace(".", r"\.").replace("**", "#").replace("*", "[^/]*").replace("#", ".*")
    last = image.rsplit("/", 1)[-1]
    name = image if ("@" in image or ":" in last) else image + ":latest"
    return re.fullmatch(rx, name) is not None or re.fullmatch(rx, image) is not None


MATCHING = [MODEL, f"{MODEL}:v1", f"{MODEL}@{DIGEST}", f"{MODEL}:v1@{DIGEST}"]
NOT_MATCHING = ["registry.example.com/other/bert", f"evil.example.com/models/bert@{DIGEST}",
                "registry.example.com/modelsx/bert", "docker.io/library/bert"]


# -- tests: schemas -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_validates_against_its_crd(path: Path) -> None:
    for doc in _docs(path):
        errors = manifest_errors(doc)
        assert errors == [], f"{path.name}: {doc['kind']} {doc['metadata'].get('name')}:\n" + "\n".join(errors)


def test_examples_use_served_versions() -> None:
    expected = {KYVERNO: ("kyverno.io/v1", "ClusterPolicy"),
                POLICY_CONTROLLER: ("policy.sigstore.dev/v1beta1", "ClusterImagePolicy")}
    for path, (api_version, kind) in expected.items():
        doc = _only(path)
        assert (doc["apiVersion"], doc["kind"]) == (api_version, kind)
        assert crd_schema(api_version, kind)["properties"]["spec"]["type"] == "object"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[int(last) if isinstance(node, list) else last] = value
    return mutate


def _rename(path: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[new] = node.pop(last)
    return mutate


KEYS0 = "spec.rules.0.verifyImages.0.attestors.0.entries.0.keys"
BROKEN: list[tuple[str, Path, Callable[[dict[str, Any]], None], bool]] = [
    # (id, example, mutation, also rejected by the bare CRD schema, i.e. without strict field validation)
    ("kyverno-misspelled-ignoreTlog", KYVERNO, _rename(f"{KEYS0}.rekor.ignoreTlog", "ignoreTLog"), False),
    ("kyverno-misspelled-verifyImages", KYVERNO, _rename("spec.rules.0.verifyImages", "verifyImage"), False),
    ("kyverno-ignoreSCT-not-boolean", KYVERNO, _set(f"{KEYS0}.ctlog.ignoreSCT", "true"), True),
    ("kyverno-unknown-verifier-type", KYVERNO, _set("spec.rules.1.verifyImages.0.type", "Sigstore"), True),
    ("kyverno-imageReferences-not-list", KYVERNO, _set("spec.rules.0.verifyImages.0.imageReferences", MODEL),
     True),
    ("kyverno-rule-without-name", KYVERNO, lambda d: d["spec"]["rules"][0].pop("name"), True),
    ("kyverno-metadata-typo", KYVERNO, _rename("metadata.name", "nmae"), False),
    ("cip-misspelled-subjectRegExp", POLICY_CONTROLLER,
     _rename("spec.authorities.1.keyless.identities.0.subjectRegExp", "subjectRegex"), False),
    ("cip-misspelled-glob", POLICY_CONTROLLER, _rename("spec.images.0.glob", "globs"), False),
    ("cip-key-not-object", POLICY_CONTROLLER, _set("spec.authorities.0.key", "-----BEGIN PUBLIC KEY-----"), True),
    ("cip-images-not-list", POLICY_CONTROLLER, _set("spec.images", {"glob": MODEL}), True),
    ("ivpol-misspelled-insecureIgnoreTlog", KYVERNO_IVPOL,
     _rename("spec.attestors.0.cosign.ctlog.insecureIgnoreTlog", "insecureIgnoreTLog"), False),
    ("ivpol-clusterpolicy-style-ignoreTlog", KYVERNO_IVPOL,
     _rename("spec.attestors.0.cosign.ctlog.insecureIgnoreTlog", "ignoreTlog"), False),
    ("ivpol-misspelled-matchImageReferences", KYVERNO_IVPOL,
     _rename("spec.matchImageReferences", "matchImageReference"), False),
    ("ivpol-misspelled-validationConfigurations", KYVERNO_IVPOL,
     _rename("spec.validationConfigurations", "validationConfiguration"), False),
    ("ivpol-clusterpolicy-style-publicKeys", KYVERNO_IVPOL, _rename("spec.attestors.0.cosign.key.data", "publicKeys"),
     False),
    ("ivpol-metadata-typo", KYVERNO_IVPOL, _rename("metadata.name", "nmae"), False),
    ("ivpol-insecureIgnoreSCT-not-boolean", KYVERNO_IVPOL,
     _set("spec.attestors.0.cosign.ctlog.insecureIgnoreSCT", "true"), True),
    ("ivpol-verifyDigest-not-boolean", KYVERNO_IVPOL, _set("spec.validationConfigurations.verifyDigest", "yes"), True),
    ("ivpol-unknown-validation-action", KYVERNO_IVPOL, _set("spec.validationActions", ["Enforce"]), True),
    ("ivpol-unknown-failure-policy", KYVERNO_IVPOL, _set("spec.failurePolicy", "Deny"), True),
    ("ivpol-attestor-without-name", KYVERNO_IVPOL, lambda d: d["spec"]["attestors"][0].pop("name"), True),
    ("ivpol-without-validations", KYVERNO_IVPOL, lambda d: d["spec"].pop("validations"), True),
    ("ivpol-image-extractor-without-expression", KYVERNO_IVPOL, lambda d: d["spec"]["images"][0].pop("expression"),
     True),
    ("ivpol-image-reference-neither-glob-nor-expression", KYVERNO_IVPOL, _set("spec.matchImageReferences.0", {}),
     True),
    ("ivpol-image-reference-both-glob-and-expression", KYVERNO_IVPOL,
     _set("spec.matchImageReferences.0", {"glob": "registry.example.com/models/*", "expression": "true"}), True),
    ("ivpol-intoto-without-type", KYVERNO_IVPOL, lambda d: d["spec"]["attestations"][0]["intoto"].pop("type"), True),
]


@pytest.mark.parametrize(("path", "mutate", "bare_rejects"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_copy_fails_validation(path: Path, mutate: Callable[[dict[str, Any]], None],
                                      bare_rejects: bool) -> None:
    good = _only(path)
    assert manifest_errors(good) == []
    broken = copy.deepcopy(good)
    mutate(broken)
    assert broken != good
    assert manifest_errors(broken), "the broken copy validated: the schema check is not strict"
    # Misspellings are caught only by strict field validation (the CRD schema itself leaves objects open);
    # wrong types, enums and required fields by the schema as such.
    assert bool(manifest_errors(broken, strict=False)) is bare_rejects


def test_schema_conversion_follows_kubernetes_rules() -> None:
    open_obj = {"type": "object", "properties": {"a": {"type": "string"}}, "x-kubernetes-preserve-unknown-fields": True}
    schema = to_json_schema({"type": "object", "properties": {
        "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
        "open": open_obj,
        "port": {"x-kubernetes-int-or-string": True},
        "maybe": {"type": "string", "nullable": True},
        "map": {"type": "object", "additionalProperties": {"type": "integer"}}}})
    v = jsonschema.Draft202012Validator(schema)
    assert v.is_valid({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"}, "closed": {"a": "x"},
                       "open": {"a": "x", "b": 1}, "port": 8080, "maybe": None, "map": {"k": 1}})
    assert v.is_valid({"port": "http"})
    assert not v.is_valid({"closed": {"b": "x"}})
    assert not v.is_valid({"unknown": 1})
    assert not v.is_valid({"port": 1.5})
    assert not v.is_valid({"map": {"k": "x"}})
    assert not v.is_valid({"metadata": {"labels": {"a": 1}}})
    assert "x-kubernetes-preserve-unknown-fields" not in str(schema)


# -- tests: what the examples say ---------------------------------------------------------------------
def test_example_public_keys_are_p256_pems() -> None:
    pems = _example_pems()
    assert {who for who, _ in pems} == {"kyverno", "policy-controller"}
    for who, pem in pems:
        assert pem.startswith("-----BEGIN PUBLIC KEY-----\n"), who
        key = serialization.load_pem_public_key(pem.encode())
        assert isinstance(key, ec.EllipticCurvePublicKey), who
        assert isinstance(key.curve, ec.SECP256R1), who
        keys.load_public_key_pem(pem.encode(), what=who)  # what `ociart verify --key` accepts
    assert len({pem.strip() for _, pem in pems}) == 1, "the examples should show one and the same key"


def test_kyverno_patterns_match_models_only() -> None:
    for vi in _verify_images(_only(KYVERNO)):
        refs = vi["imageReferences"]
        for image in MATCHING:
            assert any(kyverno_wildcard(p, image) for p in refs), (refs, image)
        for image in NOT_MATCHING:
            assert not any(kyverno_wildcard(p, image) for p in refs), (refs, image)


def test_policy_controller_glob_matches_models_only() -> None:
    globs = [i["glob"] for i in _only(POLICY_CONTROLLER)["spec"]["images"]]
    for image in [*MATCHING, "registry.example.com/models/team/bert"]:
        assert any(policy_controller_glob(g, image) for g in globs), (globs, image)
    for image in NOT_MATCHING:
        assert not any(policy_controller_glob(g, image) for g in globs), (globs, image)
    # the semantics themselves: '*' stops at '/', '**' does not
    assert policy_controller_glob("registry.example.com/models/*", MODEL)
    assert not policy_controller_glob("registry.example.com/models/*", "registry.example.com/models/team/bert")


def test_kyverno_policy_checks_both_formats_without_rekor() -> None:
    policy = _only(KYVERNO)
    assert policy["metadata"]["annotations"]["pod-policies.kyverno.io/autogen-controllers"] == "none"
    vis = list(_verify_images(policy))
    assert sorted(vi["type"] for vi in vis) == ["Cosign", "SigstoreBundle"]
    for vi in vis:
        assert vi["verifyDigest"] is True and vi["required"] is True and vi["failureAction"] == "Enforce"
        assert vi["mutateDigest"] is False  # an annotation cannot be patched to a digest
    entries = list(_kyverno_key_entries(policy))
    assert len(entries) == len(vis)
    for k in entries:
        assert k["rekor"] == {"ignoreTlog": True} and k["ctlog"] == {"ignoreSCT": True}


def test_kyverno_extractors_cover_containers_init_containers_and_the_model_annotation() -> None:
    for rule in _only(KYVERNO)["spec"]["rules"]:
        pod = {e["name"]: e for e in rule["imageExtractors"]["Pod"]}
        # custom extractors replace Kyverno's built-in ones, so the three container lists must be listed again
        for name in ("initContainers", "containers", "ephemeralContainers"):
            assert pod[name] == {"name": name, "path": f"/spec/{name}/*", "value": "image", "key": "name"}
        assert pod["ociartModel"] == {"name": "ociartModel", "path": "/metadata/annotations",
                                      "value": MODEL_ANNOTATION}
        assert pod["imageVolumes"]["path"] == "/spec/volumes/*/image"
        assert pod["imageVolumes"]["value"] == "reference"


def test_policy_controller_authorities() -> None:
    spec = _only(POLICY_CONTROLLER)["spec"]
    assert spec["mode"] == "enforce"
    by_name = {a["name"]: a for a in spec["authorities"]}
    key = by_name["models-key"]
    assert "ctlog" not in key, "no ctlog => policy-controller skips the tlog (key-mode, offline signatures)"
    assert key["signatureFormat"] == "legacy" and key["key"]["hashAlgorithm"] == "sha256"
    keyless = by_name["models-keyless-ci"]
    assert keyless["keyless"]["url"].startswith("https://")
    assert keyless["ctlog"]["url"].startswith("https://")
    (identity,) = keyless["keyless"]["identities"]
    assert identity["issuer"] == "https://token.actions.githubusercontent.com"
    rx = re.compile(identity["subjectRegExp"])
    assert rx.fullmatch("https://github.com/example-org/models/.github/workflows/release.yml@refs/tags/v1.2.0")
    assert not rx.fullmatch("https://github.com/evil/models/.github/workflows/release.yml@refs/tags/v1.2.0")
    assert not rx.fullmatch("https://github.com/example-org/models/.github/workflows/release.yml@refs/heads/main")


def test_readme_pod_pulls_the_verified_annotation_by_digest() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)]
    (pod,) = [b for b in blocks if isinstance(b, dict) and b.get("kind") == "Pod"]
    model = pod["metadata"]["annotations"][MODEL_ANNOTATION]
    assert re.fullmatch(r"registry\.example\.com/models/[a-z0-9._/-]+@sha256:[0-9a-f]{64}", model), model
    refs = [r for vi in _verify_images(_only(KYVERNO)) for r in vi["imageReferences"]]
    assert any(kyverno_wildcard(p, model) for p in refs)
    (init,) = pod["spec"]["initContainers"]
    env = {e["name"]: e for e in init["env"]}
    assert env["OCIART_MODEL"]["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.annotations['{MODEL_ANNOTATION}']"
    assert init["command"][:3] == ["ociart", "pull", "$(OCIART_MODEL)"]
    assert init["command"][3:] == ["-o", "/models", "--policy", "/etc/ociart/policy.yaml"]
    mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert "configMap" in volumes[mounts["/etc/ociart"]] and "emptyDir" in volumes[mounts["/models"]]
    for c in [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]:
        assert re.search(r"@sha256:[0-9a-f]{64}$", c["image"]), c["image"]
    for cmd in ("ociart sign ", "--key cosign.key", "ociart verify ", "--key cosign.pub", "--legacy-signature"):
        assert cmd in readme, cmd


# -- tests: built-in kinds (kubernetes-validate, no external data) --------------------------------------
def _readme_pod() -> dict[str, Any]:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)]
    (pod,) = [b for b in blocks if isinstance(b, dict) and b.get("kind") == "Pod"]
    return pod


def _image_volume_pod() -> dict[str, Any]:
    """The model mounted as a Kubernetes image volume (what the policies' ``imageVolumes`` extractors read)."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bert-server"},
            "spec": {"containers": [{"name": "server", "image": f"registry.example.com/serving/bert@{DIGEST}",
                                     "volumeMounts": [{"name": "model", "mountPath": "/models", "readOnly": True}]}],
                     "volumes": [{"name": "model", "image": {"reference": f"{MODEL}@{DIGEST}",
                                                             "pullPolicy": "IfNotPresent"}}]}}


def test_kubernetes_schemas_are_a_release_with_image_volumes() -> None:
    assert tuple(int(x) for x in K8S_VERSION.split(".")[:2]) >= (1, 34)
    assert kubernetes_validate.validate(_image_volume_pod(), K8S_VERSION, strict=True) == K8S_VERSION.rsplit(".", 1)[0]
    # the pin matters: before 1.31 a Pod had no image volumes, and strict validation says so
    with pytest.raises(kubernetes_validate.ValidationError, match="'image' was unexpected"):
        kubernetes_validate.validate(_image_volume_pod(), "1.30.0", strict=True)


def test_readme_pod_and_image_volume_pod_are_valid_pods() -> None:
    assert manifest_errors(_readme_pod()) == []
    pod = _image_volume_pod()
    assert manifest_errors(pod) == []
    # both Kyverno policies read the model from exactly this field
    for rule in _only(KYVERNO)["spec"]["rules"]:
        extractor = {e["name"]: e for e in rule["imageExtractors"]["Pod"]}["imageVolumes"]
        assert (extractor["path"], extractor["value"]) == ("/spec/volumes/*/image", "reference")
    assert [v["image"]["reference"] for v in pod["spec"]["volumes"]] == [f"{MODEL}@{DIGEST}"]
    (ivpol_extractor,) = [i for i in _only(KYVERNO_IVPOL)["spec"]["images"] if i["name"] == "imageVolumes"]
    assert "v.image.reference" in ivpol_extractor["expression"]


POD_BROKEN: list[tuple[str, Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None], bool]] = [
    # (id, pod, mutation, also rejected without strict field validation)
    ("misspelled-volumeMounts", _readme_pod, _rename("spec.initContainers.0.volumeMounts", "volumeMount"), False),
    ("misspelled-fieldRef", _readme_pod, _rename("spec.initContainers.0.env.0.valueFrom.fieldRef", "fieldref"), False),
    ("metadata-typo", _readme_pod, _rename("metadata.annotations", "anotations"), False),
    ("image-volume-ref", _image_volume_pod, _rename("spec.volumes.0.image.reference", "ref"), False),
    ("command-not-list", _readme_pod, _set("spec.initContainers.0.command", "ociart pull"), True),
    ("readOnly-not-boolean", _readme_pod, _set("spec.containers.0.volumeMounts.0.readOnly", "yes"), True),
    ("container-without-name", _readme_pod, lambda d: d["spec"]["containers"][0].pop("name"), True),
]


@pytest.mark.parametrize(("make", "mutate", "bare_rejects"), [b[1:] for b in POD_BROKEN],
                         ids=[b[0] for b in POD_BROKEN])
def test_broken_pod_fails_validation(make: Callable[[], dict[str, Any]], mutate: Callable[[dict[str, Any]], None],
                                     bare_rejects: bool) -> None:
    good = make()
    assert manifest_errors(good) == []
    broken = copy.deepcopy(good)
    mutate(broken)
    assert broken != good
    assert manifest_errors(broken), "the broken Pod validated: the check is not strict"
    assert bool(manifest_errors(broken, strict=False)) is bare_rejects


# -- tests: the ImageValidatingPolicy (policies.kyverno.io) -------------------------------------------
IVPOL_IMAGE_LISTS = ("containers", "initContainers", "ephemeralContainers", "ociartModel", "imageVolumes")


def test_imagevalidatingpolicy_uses_a_served_non_deprecated_version() -> None:
    doc = _only(KYVERNO_IVPOL)
    assert (doc["apiVersion"], doc["kind"]) == ("policies.kyverno.io/v1", "ImageValidatingPolicy")
    versions = {v["name"]: v for v in crd("policies.kyverno.io", "ImageValidatingPolicy")["spec"]["versions"]}
    assert versions["v1"]["served"] is True and not versions["v1"].get("deprecated")
    assert crd_schema(doc["apiVersion"], doc["kind"])["properties"]["spec"]["type"] == "object"


def test_imagevalidatingpolicy_key_is_the_example_p256_key() -> None:
    (attestor,) = _only(KYVERNO_IVPOL)["spec"]["attestors"]
    pem = attestor["cosign"]["key"]["data"]
    assert pem.startswith("-----BEGIN PUBLIC KEY-----\n")
    key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    keys.load_public_key_pem(pem.encode(), what="kyverno ImageValidatingPolicy")
    assert attestor["cosign"]["key"].get("hashAlgorithm", "sha256") == "sha256"
    assert {p.strip() for _, p in _example_pems()} == {pem.strip()}, "the examples should show one and the same key"


def test_imagevalidatingpolicy_glob_matches_models_only() -> None:
    globs = [m["glob"] for m in _only(KYVERNO_IVPOL)["spec"]["matchImageReferences"]]
    assert globs
    for image in [*MATCHING, "registry.example.com/models/team/bert"]:
        assert any(gobwas_glob(g, image) for g in globs), (globs, image)
    for image in NOT_MATCHING:
        assert not any(gobwas_glob(g, image) for g in globs), (globs, image)


def test_imagevalidatingpolicy_verifies_key_signatures_and_provenance_without_rekor() -> None:
    spec = _only(KYVERNO_IVPOL)["spec"]
    assert spec["validationActions"] == ["Deny"] and spec["failurePolicy"] == "Fail"
    assert spec["validationConfigurations"] == {"verifyDigest": True, "mutateDigest": False, "required": True}
    assert spec["autogen"] == {"podControllers": {"controllers": []}}  # Pod paths: no autogen, as the ClusterPolicy
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["apiVersions"], rule["resources"]) == ([""], ["v1"], ["pods"])
    assert set(rule["operations"]) == {"CREATE", "UPDATE"}
    (attestor,) = spec["attestors"]
    assert attestor["cosign"]["ctlog"] == {"insecureIgnoreTlog": True, "insecureIgnoreSCT": True}
    assert set(attestor["cosign"]) == {"key", "ctlog"}  # no keyless/certificate/tuf trust
    (attestation,) = spec["attestations"]
    assert attestation["intoto"] == {"type": SLSA_PROVENANCE}

    # every validation checks every extracted image list with the policy's own attestor (and attestation)
    exprs = [" ".join(v["expression"].split()) for v in spec["validations"]]
    assert all(v.get("message") for v in spec["validations"])
    signature = [e for e in exprs if "verifyImageSignatures(" in e]
    provenance = [e for e in exprs if "verifyAttestationSignatures(" in e]
    assert len(signature) == 1 and len(provenance) == 1 and len(exprs) == 2
    assert f"verifyImageSignatures(image, [attestors.{attestor['name']}]) > 0" in signature[0]
    assert (f"verifyAttestationSignatures(image, attestations.{attestation['name']}, "
            f"[attestors.{attestor['name']}]) > 0") in provenance[0]
    for e in exprs:
        assert ").all(image, " in e, e
        lists = re.findall(r"images\.(\w+)", e)
        assert sorted(lists) == sorted(IVPOL_IMAGE_LISTS), e
    # CEL identifiers: attestor/attestation names are selected as fields
    for name in (attestor["name"], attestation["name"], *(i["name"] for i in spec["images"])):
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), name


def test_imagevalidatingpolicy_extracts_the_model_annotation_and_image_volumes() -> None:
    spec = _only(KYVERNO_IVPOL)["spec"]
    extractors = {i["name"]: " ".join(i["expression"].split()) for i in spec["images"]}
    # Kyverno always adds containers/initContainers/ephemeralContainers for Pods; custom names must not shadow them
    assert set(extractors) == {"ociartModel", "imageVolumes"}
    assert extractors["ociartModel"] == (
        f"[object.metadata.?annotations[?'{MODEL_ANNOTATION}'].orValue('')].filter(m, m != '')")
    assert extractors["imageVolumes"] == ("object.spec.?volumes.orValue([]).filter(v, has(v.image) && "
                                          "has(v.image.reference)) .map(v, v.image.reference)")
    # literal `object.metadata` / `object.spec` (what Kyverno's autogen rewrites), never `oldObject`: the policy
    # only matches CREATE and UPDATE, where `object` is set
    for e in extractors.values():
        assert "oldObject" not in e and re.search(r"\bobject\.(metadata|spec)\.", e), e


def test_readme_pod_annotation_is_verified_by_the_imagevalidatingpolicy() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)]
    (pod,) = [b for b in blocks if isinstance(b, dict) and b.get("kind") == "Pod"]
    model = pod["metadata"]["annotations"][MODEL_ANNOTATION]
    spec = _only(KYVERNO_IVPOL)["spec"]
    assert any(gobwas_glob(m["glob"], model) for m in spec["matchImageReferences"])
    (ociart_model,) = [i for i in spec["images"] if i["name"] == "ociartModel"]
    assert f"'{MODEL_ANNOTATION}'" in ociart_model["expression"]
    rows = [line for line in readme.splitlines() if line.startswith(f"| `{KYVERNO_IVPOL.name}` |")]
    assert len(rows) == 1 and "`policies.kyverno.io/v1`" in rows[0] and "ImageValidatingPolicy" in rows[0], rows
