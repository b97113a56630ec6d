"""MLflow (the ``ociart`` artifact repository against a real ``mlflow server``) and W&B (reference artifacts in
offline mode).

MLflow: a module fixture starts ``mlflow server`` (sqlite backend, ``--default-artifact-root ociart://<registry>/
mlflow``, ``--no-serve-artifacts``). An explicit ``--default-artifact-root`` is what new experiments get whether or
not artifacts are served (``mlflow.utils.server_cli_utils.resolve_default_artifact_root``); turning serving off
makes it plain that the server never touches artifacts: this test process writes and reads them through the
plugin, found by its ``mlflow.artifact_repository`` entry point, straight to and from the registry.

W&B: ``WANDB_MODE=offline`` with every W&B directory under ``tmp_path`` and HTTP(S) proxies pointed at a closed
port, so no request can leave the machine. What an offline run recorded is read back from its transaction log
(the ``.wandb`` file): wandb 0.31 no longer ships a Python reader for it (``wandb.sdk.internal.datastore`` is
gone; the Go core writes it), so :func:`wandb_records` parses the LevelDB-log framing itself (7-byte file header
``:W&B`` 0xBEE1 version; 32 KiB blocks of records with a CRC-32, length and type FULL/FIRST/MIDDLE/LAST header,
CRC checked) into ``wandb.proto.wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import run_cli, tree_digest, write_random
from support.registry import RunningRegistry, free_port

import ociart
from ociart.oci import EMPTY_JSON_DIGEST, OCI_EMPTY

#: imported by the ``mlflow_server`` fixture, not at collection: an interpreter that imported mlflow is ~200 MB,
#: and on Linux a child's ``ru_maxrss`` starts from its parent's RSS at fork (which skews RSS checks elsewhere)
mlflow: Any = None
MLFLOW_ARTIFACT_TYPE = "application/vnd.ociart.mlflow.artifacts.v1"
INTOTO = "application/vnd.in-toto+json"


def _client() -> ociart.Client:
    return ociart.Client(plain_http=True)


def _manifest(c: ociart.Client, ref: str) -> dict[str, Any]:
    return json.loads(c.manifest(ref)[1].data)


def _statement(c: ociart.Client, ref: str) -> dict[str, Any]:
    return c.provenance(ref).model_dump(mode="json", by_alias=True, exclude_none=True)


# -- MLflow ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_server(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on a free loopback port; its URL. Stopped (process group) at teardown."""
    global mlflow
    mlflow = pytest.importorskip("mlflow")
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OCIART_"))}
    env.update(HOME=str(tmp), OCIART_HOME=str(tmp / "ociart-home"), MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="true")
    log = tmp / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
           "--default-artifact-root", f"ociart://{registry.host}/mlflow", "--no-serve-artifacts",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=tmp, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}", pytrace=False)
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up after 90 s:\n{log.read_text()[-3000:]}", pytrace=False)
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def tracking(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This process tracks to the server, in a fresh experiment; yields the experiment id."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    mlflow.set_tracking_uri(mlflow_server)
    experiment = mlflow.set_experiment(f"ociart-{uuid.uuid4().hex[:8]}")
    try:
        yield experiment.experiment_id
    finally:
        if mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)


def _files(root: Path) -> Path:
    write_random(root / "model" / "weights.bin", 300_000, seed=41)
    (root / "model" / "config.json").write_text('{"hidden": 8}')
    (root / "model" / "tok" / "deep").mkdir(parents=True)
    (root / "model" / "tok" / "vocab.txt").write_text("a\nb\n")
    (root / "model" / "tok" / "deep" / "merges.txt").write_text("a b\n")
    (root / "summary.txt").write_text(f"run summary {uuid.uuid4()}\n")
    (root / "loss.png").write_bytes(os.urandom(2048))
    return root


def test_mlflow_artifacts_round_trip_through_the_registry(tracking: str, registry: RunningRegistry,
                                                          tmp_path: Path) -> None:
    src = _files(tmp_path / "src")
    experiment = mlflow.get_experiment(tracking)
    assert experiment.artifact_location == f"ociart://{registry.host}/mlflow/{tracking}"
    with mlflow.start_run() as run:
        assert run.info.artifact_uri == f"ociart://{registry.host}/mlflow/{tracking}/{run.info.run_id}/artifacts"
        mlflow.log_artifact(str(src / "summary.txt"))
        mlflow.log_artifact(str(src / "loss.png"), artifact_path="plots")
        mlflow.log_artifacts(str(src / "model"), artifact_path="model")
        run_id = run.info.run_id
    client = mlflow.MlflowClient()

    def listing(path: str | None = None) -> list[tuple[str, bool, int | None]]:
        return [(f.path, f.is_dir, f.file_size) for f in client.list_artifacts(run_id, path)]

    summary_size = (src / "summary.txt").stat().st_size
    assert listing() == [("model", True, None), ("plots", True, None), ("summary.txt", False, summary_size)]
    assert listing("model") == [("model/config.json", False, 13), ("model/tok", True, None),
                                ("model/weights.bin", False, 300_000)]
    assert listing("model/tok") == [("model/tok/deep", True, None), ("model/tok/vocab.txt", False, 4)]
    assert listing("model/tok/deep") == [("model/tok/deep/merges.txt", False, 4)]
    assert listing("plots/loss.png") == []  # a file has no children
    assert listing("nothing-here") == []

    out = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "all")))
    expected = {f"model/{k}": v for k, v in tree_digest(src / "model").items()}
    expected |= {"summary.txt": tree_digest(src)["summary.txt"], "plots/loss.png": tree_digest(src)["loss.png"]}
    assert tree_digest(out) == expected
    one = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model/tok",
                                                   dst_path=str(tmp_path / "one")))
    assert tree_digest(one) == {"vocab.txt": expected["model/tok/vocab.txt"],
                                "deep/merges.txt": expected["model/tok/deep/merges.txt"]}

    # the registry holds one OCI artifact per run listing every file, titled by its path
    repo = f"mlflow/{tracking}/{run_id}/artifacts"
    with _client() as c:
        assert c.tags(f"{registry.host}/{repo}") == ["latest"]
        m = _manifest(c, f"{registry.host}/{repo}:latest")
    assert m["artifactType"] == MLFLOW_ARTIFACT_TYPE
    assert m["config"] == {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2}
    layers = {layer["annotations"]["org.opencontainers.image.title"]: layer for layer in m["layers"]}
    assert list(layers) == sorted(expected)
    for title, layer in layers.items():
        data = (out / title).read_bytes()
        assert layer["digest"] == "sha256:" + hashlib.sha256(data).hexdigest() and layer["size"] == len(data)
        assert layer["mediaType"] == "application/octet-stream"

    # logging again replaces a file and keeps the others
    (src / "summary.txt").write_text("replaced\n")
    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifact(str(src / "summary.txt"))
    again = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "again")))
    assert tree_digest(again) == {**expected, "summary.txt": hashlib.sha256(b"replaced\n").hexdigest()}


def test_mlflow_download_of_a_tampered_blob_fails(tracking: str, registry: RunningRegistry, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    weights = write_random(tmp_path / "weights.bin", 200_000, seed=int(time.time()))  # unique bytes: own blob
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(weights), artifact_path="model")
        mlflow.log_artifact(str(_files(tmp_path / "src") / "summary.txt"))
    digest = "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    stored = registry.blob_data_path(digest)
    good = stored.read_bytes()
    assert good == weights.read_bytes()
    stored.write_bytes(good[:1000] + bytes([good[1000] ^ 0xFF]) + good[1001:])  # one byte flipped, same size

    dst = tmp_path / "dl"
    caplog.set_level(logging.DEBUG, logger="mlflow.store.artifact.runs_artifact_repo")
    with pytest.raises(mlflow.exceptions.MlflowException, match="Failed to download"):
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model/weights.bin",
                                            dst_path=str(dst))
    # MLflow's runs:/ repository only logs why (at debug level): our repository refused the bytes
    causes = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert causes and f"blob {digest}: digest mismatch: expected {digest}, got sha256:" in causes[0], causes
    # asked directly, the run's artifact repository (the plugin) says so too
    from mlflow.store.artifact.artifact_repository_registry import (
        get_artifact_repository,
    )

    repo = get_artifact_repository(run.info.artifact_uri)
    assert type(repo).__name__ == "OciartArtifactRepository"
    with pytest.raises(mlflow.exceptions.MlflowException, match=f"digest mismatch: expected {digest}"):
        repo.download_artifacts("model/weights.bin", str(dst))
    with pytest.raises(ociart.VerificationError, match="digest mismatch"):  # what MLflow's thread pool ran
        repo._download_file("model/weights.bin", str(dst / "direct.bin"))
    assert not (dst / "direct.bin").exists()
    assert not (dst / "weights.bin").exists()  # nothing unverified is left where the file would be
    # the untouched file of the same run still downloads
    ok = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="summary.txt",
                                             dst_path=str(tmp_path / "ok"))
    assert Path(ok).read_text().startswith("run summary")


def test_push_inside_an_mlflow_run_links_run_and_digest(tracking: str, registry: RunningRegistry,
                                                        unique_repo: str, tmp_path: Path) -> None:
    model = tmp_path / "model"
    write_random(model / "model.safetensors", 50_000, seed=43)
    base = f"{registry.host}/{unique_repo}"
    with mlflow.start_run() as run, _client() as c:
        desc = c.push(f"{base}:v1", [model], kind="model")
        run_id = run.info.run_id
    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    assert tags[f"ociart.{unique_repo}"] == f"{base}:v1@{desc.digest}"
    with _client() as c:
        a = _manifest(c, f"{base}:v1")["annotations"]
        assert a["dev.ociart.run.id"] == run_id and a["dev.ociart.run.tracker"] == "mlflow"
        assert _statement(c, f"{base}:v1")["predicate"]["runDetails"]["metadata"]["invocationId"] == \
            f"mlflow:{run_id}"


def test_run_api_inside_an_mlflow_run(tracking: str, registry: RunningRegistry, unique_repo: str,
                                      tmp_path: Path) -> None:
    model = tmp_path / "model"
    write_random(model / "model.safetensors", 50_000, seed=44)
    base = f"{registry.host}/{unique_repo}"
    with mlflow.start_run() as mlrun, _client() as c:
        with ociart.run(name="inside-mlflow", params={"lr": 0.1}, client=c) as run:
            assert run.run_id == mlrun.info.run_id and run.tracker == "mlflow"
            desc = run.push(f"{base}:v1", model)
        a = _manifest(c, f"{base}:v1")["annotations"]
        assert a["dev.ociart.run.id"] == mlrun.info.run_id and a["dev.ociart.run.tracker"] == "mlflow"
    tags = mlflow.MlflowClient().get_run(mlrun.info.run_id).data.tags
    assert tags[f"ociart.{unique_repo}"] == f"{base}:v1@{desc.digest}"


def test_cli_push_in_an_mlflow_run_environment(tracking: str, mlflow_server: str, registry: RunningRegistry,
                                               unique_repo: str, tmp_path: Path) -> None:
    """A CLI push started by a training job that ``mlflow run`` launched (MLFLOW_RUN_ID and MLFLOW_TRACKING_URI
    exported) records the run and tags it, although the CLI itself never imported mlflow."""
    model = tmp_path / "model"
    write_random(model / "model.safetensors", 50_000, seed=45)
    base = f"{registry.host}/{unique_repo}"
    run_id = mlflow.MlflowClient().create_run(tracking).info.run_id
    proc = run_cli("push", f"{base}:v1", str(model), "--kind", "model", "--plain-http",
                   env={"MLFLOW_RUN_ID": run_id, "MLFLOW_TRACKING_URI": mlflow_server})
    assert proc.returncode == 0, proc.stderr
    digest = proc.stdout.strip()
    with _client() as c:
        a = _manifest(c, f"{base}:v1")["annotations"]
    assert a["dev.ociart.run.id"] == run_id and a["dev.ociart.run.tracker"] == "mlflow"
    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    assert tags[f"ociart.{unique_repo}"] == f"{base}:v1@{digest}"


# -- W&B (offline) -------------------------------------------------------------------------------------
@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``wandb`` in offline mode with every directory under tmp_path and no way out to the network."""
    wandb = pytest.importorskip("wandb")
    for name in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(name)
    root = tmp_path / "wandb-home"
    for sub in ("dir", "cache", "config", "data", "artifacts"):
        (root / sub).mkdir(parents=True)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(root / "dir"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(root / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(root / "config"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(root / "data"))
    monkeypatch.setenv("WANDB_ARTIFACT_DIR", str(root / "artifacts"))
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: any request that tries to leave fails
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, closed)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    yield wandb
    if wandb.run is not None:
        wandb.run.finish(exit_code=1)


def wandb_records(path: Path) -> list[Any]:
    """Every record of a ``.wandb`` transaction log, CRC-checked, as ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1 and data[6] == 0, data[:7]
    block, pos, pending = 32768, 7, b""
    out = []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # zero padding up to the end of the block
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        assert len(chunk) == length, "truncated record"
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, "CRC mismatch"
        pos += 7 + length
        if kind == 1:  # FULL
            raw = chunk
        elif kind == 2:  # FIRST
            pending = chunk
            continue
        elif kind == 3:  # MIDDLE
            pending += chunk
            continue
        elif kind == 4:  # LAST
            raw, pending = pending + chunk, b""
        else:
            raise AssertionError(f"unknown record type {kind}")
        record = pb.Record()
        record.ParseFromString(raw)
        out.append(record)
    return out


def finished_records(path: Path, timeout: float = 30.0) -> list[Any]:
    """The records of a run's log once the W&B core has written its ``exit`` record (it writes asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            records = wandb_records(path)
        except AssertionError:  # a record still being written at the tail
            records = []
        if records and records[-1].WhichOneof("record_type") == "exit":
            return records
        assert time.monotonic() < deadline, f"no exit record in {path} after {timeout} s"
        time.sleep(0.1)


def test_wandb_reference_artifacts_offline(wandb_offline: Any, registry: RunningRegistry, unique_repo: str,
                                           tmp_path: Path) -> None:
    wandb = wandb_offline
    from ociart.integrations import wandb as ow

    data_dir, model_dir = tmp_path / "data", tmp_path / "model"
    (data_dir).mkdir()
    (data_dir / "train.csv").write_text("x,y\n1,2\n")
    write_random(model_dir / "model.safetensors", 40_000, seed=46)
    base = f"{registry.host}/{unique_repo}"
    with _client() as c:
        data = c.push(f"{base}-data:v1", [data_dir], kind="dataset")
        run = wandb.init(project="ociart-test", job_type="train")
        assert run.offline
        # a push inside the active W&B run records it
        model = c.push(f"{base}:v1", [model_dir], kind="model")
        a = _manifest(c, f"{base}:v1")["annotations"]
        assert a["dev.ociart.run.tracker"] == "wandb" and a["dev.ociart.run.id"] == run.path
        assert run.id in run.path

        used = ow.use_artifact(run, f"{base}-data:v1", client=c)
        logged = ow.log_artifact(run, f"{base}:v1", aliases=["candidate"], client=c)
    sync_file = Path(run.settings.sync_file)
    run.finish()
    wandb.teardown()  # as at interpreter exit: the W&B core process is done with the log

    # what the helpers built
    for art, digest, ref, kind, artifact_type in (
            (used, data.digest, f"{base}-data:v1", "dataset", "application/vnd.ociart.dataset.manifest.v1+json"),
            (logged, model.digest, f"{base}:v1", "model", "application/vnd.cncf.model.manifest.v1+json")):
        assert art.type == kind
        assert art.metadata == {"ociart.ref": f"{ref}@{digest}", "ociart.digest": digest,
                                "ociart.artifactType": artifact_type}
        (entry,) = art.manifest.entries.values()
        assert entry.path == "manifest" and entry.ref == f"oci://{ref}@{digest}"

    # what the offline run recorded (and `wandb sync` would send): two reference artifacts, the input flagged
    # use-after-commit (W&B's own record for use_artifact of a new artifact), then a clean exit
    records = finished_records(sync_file)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds[0] == "header" and "run" in kinds and kinds[-1] == "exit"
    assert records[-1].exit.exit_code == 0
    arts = {r.artifact.name: r.artifact for r in records if r.WhichOneof("record_type") == "artifact"}
    assert set(arts) == {used.name, logged.name}
    for art, digest, ref, use in ((arts[used.name], data.digest, f"{base}-data:v1", True),
                                  (arts[logged.name], model.digest, f"{base}:v1", False)):
        assert art.run_id == run.id and art.use_after_commit is use and art.finalize
        (content,) = art.manifest.contents
        assert content.path == "manifest" and content.ref == f"oci://{ref}@{digest}"
        assert json.loads(art.metadata)["ociart.digest"] == digest
    assert "candidate" in arts[logged.name].aliases
    assert next(r.run.run_id for r in records if r.WhichOneof("record_type") == "run") == run.id
