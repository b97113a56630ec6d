"""The deploy-time fetch examples (``examples/k8s/fetch-*.yaml``, ``prewarm-job.yaml``,
``kserve-storage-initializer.yaml``) and the init image (``images/init/Containerfile``).

* every manifest validates: built-in kinds with ``kubernetes-validate`` (strict, Kubernetes 1.34), KServe kinds
  against their CRDs from ``$OCIART_SPEC_DIR`` (skipped with the reason without them); a broken copy fails;
* the Containerfile is non-root, takes its base pinned by digest (``build-image.sh`` refuses an unpinned one) and
  has the entrypoint ``ociart fetch``;
* the init container and the KServe storage initializer are run the way the kubelet would run them: the image's
  entrypoint plus the manifest's args, the manifest's env (the downward-API annotation, a Secret's key), its mounts
  as directories (the config mount read-only), HOME unset, as uid 65532 when the test can drop privileges. They
  fetch the (signed) model, and a restart finds it complete.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import write_random
from support.k8s import manifest_errors
from support.registry import RunningRegistry

import ociart
from ociart.deploy.fetch import read_marker

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples" / "k8s"
CONTAINERFILE = REPO_ROOT / "images" / "init" / "Containerfile"
FILES = ["fetch-deployment.yaml", "fetch-deployment-node-cache.yaml", "prewarm-job.yaml",
         "kserve-storage-initializer.yaml"]
UID = 65532
PASSWORD = "example-test"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text(encoding="utf-8")) if d]


def _kind(name: str, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _docs(name) if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("name", FILES)
def test_fetch_examples_validate(name: str) -> None:
    for doc in _docs(name):
        assert manifest_errors(doc) == [], f"{name}: {doc['kind']}"


def test_broken_examples_fail_validation() -> None:
    dep = copy.deepcopy(_kind("fetch-deployment.yaml", "Deployment"))
    dep["spec"]["template"]["spec"]["initContainers"][0]["volumeMount"] = []  # misspelled
    assert manifest_errors(dep) != []
    csc = copy.deepcopy(_kind("kserve-storage-initializer.yaml", "ClusterStorageContainer"))
    csc["spec"]["supportedUriFormat"] = csc["spec"].pop("supportedUriFormats")
    assert manifest_errors(csc) != []


def test_containerfile_non_root_pinned_base_fetch_entrypoint(tmp_path: Path) -> None:
    lines = [ln.strip() for ln in CONTAINERFILE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "ARG BASE" and lines[1] == "FROM ${BASE}"
    user = [ln for ln in lines if ln.startswith("USER ")]
    assert user == [f"USER {UID}:{UID}"]
    entry = [ln for ln in lines if ln.startswith("ENTRYPOINT ")]
    assert len(entry) == 1 and json.loads(entry[0].removeprefix("ENTRYPOINT ")) == ["ociart", "fetch"]
    assert lines.index(user[0]) > max(i for i, ln in enumerate(lines) if ln.startswith("RUN "))  # root only to install
    # the build script refuses a base that is not pinned by digest, before building anything
    r = subprocess.run(["sh", str(EXAMPLES / "build-image.sh"), "example/ociart-init", "python@sha256:abc"],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "CONTAINER_ENGINE": "false"})
    assert r.returncode == 2 and "not pinned by digest" in r.stderr
    assert not (REPO_ROOT / "dist").exists() or "ociart" not in r.stdout


def _entrypoint() -> list[str]:
    line = next(ln for ln in CONTAINERFILE.read_text().splitlines() if ln.startswith("ENTRYPOINT "))
    cmd = json.loads(line.removeprefix("ENTRYPOINT "))
    assert cmd[0] == "ociart"
    return [sys.executable, "-m", "ociart", *cmd[1:]]  # the console script of the installed wheel


@pytest.fixture
def world() -> Iterator[Path]:
    """A directory a dropped-privileges process can reach (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="ociart-k8s-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@functools.cache
def _as_pod_user() -> dict[str, Any]:
    """subprocess arguments running as the pod's uid when this test can drop privileges: it runs as root and that
    uid can execute this interpreter (not so when Python lives under a private home); else as the current user."""
    if os.getuid() != 0:
        return {}
    drop = {"user": UID, "group": UID, "extra_groups": []}
    try:
        probe = subprocess.run([sys.executable, "-c", "import ociart"], capture_output=True, timeout=60, cwd="/",
                               env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")}, **drop)
    except PermissionError:
        return {}
    return drop if probe.returncode == 0 else {}


def _volume_dir(world: Path, name: str, owned: bool) -> Path:
    d = world / "volumes" / name
    d.mkdir(parents=True)
    if owned and os.getuid() == 0:
        os.chown(d, UID, UID)  # fsGroup / an emptyDir writable by the pod's user
    return d


def _signed_model(registry: RunningRegistry, repo: str, world: Path) -> tuple[str, Path]:
    src = world / "src"
    write_random(src / "model.safetensors", 300_000, seed=5)
    (src / "config.json").write_text('{"layers": 2}')
    ociart.generate_key_pair(world / "signing", password=PASSWORD)
    with ociart.Client() as c:
        d = c.push(f"{registry.host}/{repo}:v1", [src], kind="model")
        os.environ["COSIGN_PASSWORD"] = PASSWORD
        try:
            c.sign(d.ref, str(world / "signing.key"))
        finally:
            del os.environ["COSIGN_PASSWORD"]
    return f"{registry.host}/{repo}@{d.digest}", src


def _env(container: dict[str, Any], pod_annotations: dict[str, str], secrets: dict[str, str],
         paths: dict[str, Path]) -> dict[str, str]:
    """The container's env as the kubelet gives it: values, downward-API annotations, Secret keys; mount paths
    mapped to the test's directories. HOME is not set (no passwd entry for the uid)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "LANG")}
    for e in container.get("env", []):
        if "value" in e:
            value = e["value"]
            for mount, real in sorted(paths.items(), key=lambda kv: -len(kv[0])):
                if value == mount or value.startswith(mount + "/"):
                    value = str(real) + value[len(mount):]
                    break
            env[e["name"]] = value
        elif "fieldRef" in e["valueFrom"]:
            m = re.fullmatch(r"metadata\.annotations\['(.+)'\]", e["valueFrom"]["fieldRef"]["fieldPath"])
            assert m, e
            env[e["name"]] = pod_annotations[m.group(1)]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[f"{ref['name']}/{ref['key']}"]
    return env


def test_init_container_fetches_as_the_kubelet_runs_it(registry: RunningRegistry, unique_repo: str,
                                                       world: Path) -> None:
    ref, src = _signed_model(registry, unique_repo, world)
    config_map = _kind("fetch-deployment.yaml", "ConfigMap")
    pod = _kind("fetch-deployment.yaml", "Deployment")["spec"]["template"]
    (init,) = pod["spec"]["initContainers"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    paths: dict[str, Path] = {}
    for m in init["volumeMounts"]:
        vol = volumes[m["name"]]
        d = _volume_dir(world, m["name"], owned="emptyDir" in vol)
        if "configMap" in vol:  # the ConfigMap's files; the policy names the test registry instead of the example's
            policy = yaml.safe_load(config_map["data"]["policy.yaml"])
            policy["rules"][0]["repositories"] = [f"{registry.host}/{unique_repo}"]
            (d / "policy.yaml").write_text(yaml.safe_dump(policy))
            (d / "cosign.pub").write_bytes((world / "signing.pub").read_bytes())
        if "secret" in vol:  # a .dockerconfigjson Secret, mounted as config.json (anonymous registry: no auths)
            (d / "config.json").write_text('{"auths": {}}')
        if m.get("readOnly"):
            for f in d.iterdir():
                f.chmod(0o444)
            d.chmod(0o555)
        paths[m["mountPath"]] = d
    annotations = {**pod["metadata"]["annotations"], "ociart.dev/model": ref}
    env = _env(init, annotations, {}, paths)
    assert "HOME" not in env and env["OCIART_REF"] == ref
    cmd = [*_entrypoint(), *init.get("args", [])]
    for attempt in ("cold", "restart"):
        r = subprocess.run(cmd, env=env, cwd="/", capture_output=True, text=True, timeout=300, **_as_pod_user())
        assert r.returncode == 0, f"{attempt}: {r.stderr}"
        events = [json.loads(line) for line in r.stderr.splitlines()]  # --log-format json: every line an event
        assert events[-1]["event"] == "done"
        assert events[-1]["up_to_date"] is (attempt == "restart")
    models = paths["/models"]
    assert (models / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    marker = read_marker(models)
    assert marker is not None and marker.digest == ref.split("@")[1] and marker.verification is not None
    if _as_pod_user():
        assert (models / "model.safetensors").stat().st_uid == UID  # written by the pod's user, not root


def test_kserve_storage_initializer_fetches_as_kserve_runs_it(registry: RunningRegistry, unique_repo: str,
                                                              world: Path) -> None:
    ref, src = _signed_model(registry, unique_repo, world)
    csc = _kind("kserve-storage-initializer.yaml", "ClusterStorageContainer")
    isvc = _kind("kserve-storage-initializer.yaml", "InferenceService")
    prefix = csc["spec"]["supportedUriFormats"][0]["prefix"]
    uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert uri.startswith(prefix) and prefix == "oci+ociart://"
    dest = _volume_dir(world, "kserve-provision-location", owned=True)
    secrets = {"ociart-model-signing/cosign.pub": (world / "signing.pub").read_text()}
    env = _env(csc["spec"]["container"], {}, secrets, {})
    cmd = [*_entrypoint(), prefix + ref, str(dest)]  # KServe's two arguments: SRC_URI DEST_PATH
    r = subprocess.run(cmd, env=env, cwd="/", capture_output=True, text=True, timeout=300, **_as_pod_user())
    assert r.returncode == 0, r.stderr
    assert (dest / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    # the same container with another key refuses (verification exit code), leaving no model files
    ociart.generate_key_pair(world / "other", password=PASSWORD)
    other = _volume_dir(world, "other-location", owned=True)
    env["OCIART_PUBLIC_KEY"] = (world / "other.pub").read_text()
    r = subprocess.run([*_entrypoint(), prefix + ref, str(other)], env=env, cwd="/", capture_output=True,
                       text=True, timeout=300, **_as_pod_user())
    assert r.returncode == 5, r.stderr
    assert not (other / "model.safetensors").exists()
