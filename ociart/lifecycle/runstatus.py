"""Run status as a referrer: when ``ociart.run()`` ends it attaches to every artifact the run pushed (and still
holds) a small manifest saying how the run ended, which ``failedRuns`` in a retention policy reads.

The referrer: an OCI image manifest with ``artifactType`` :data:`RUN_STATUS_TYPE`, the empty config and the empty
JSON layer, and annotations ``dev.ociart.run.id``, ``dev.ociart.run.status`` (``succeeded`` or ``failed``) and
``org.opencontainers.image.created`` (when the run ended). A referrers list (API or ``sha256-<hex>`` index) carries
the annotations, so reading the status costs no request beyond listing the referrers.

With the MLflow integration configured (``mlflow`` importable, ``MLFLOW_TRACKING_URI`` set), an artifact whose
manifest names an MLflow run (``dev.ociart.run.tracker: mlflow``) takes that run's status from MLflow.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ..oci import EMPTY_JSON, EMPTY_JSON_DIGEST, OCI_EMPTY, Descriptor
from ..targets.base import Target, bytes_opener

RUN_STATUS_TYPE = "application/vnd.ociart.run.status.v1+json"
A_RUN_STATUS = "dev.ociart.run.status"
Status = Literal["succeeded", "failed"]


def record_status(target: Target, repo: str, subject: Descriptor, run_id: str, status: Status) -> None:
    """Attach the run-status referrer to ``repo@subject``."""
    from ..lineage.record import A_RUN_ID, now
    from ..transfer import push_manifest

    empty = Descriptor(mediaType=OCI_EMPTY, digest=EMPTY_JSON_DIGEST, size=len(EMPTY_JSON))
    with target.writing():
        target.push_blob_stream(repo, empty, bytes_opener(EMPTY_JSON))
        push_manifest(target, repo, artifact_type=RUN_STATUS_TYPE, layers=[empty], subject=subject,
                      annotations={A_RUN_ID: run_id, A_RUN_STATUS: status,
                                   "org.opencontainers.image.created": now()})


def status_of(referrers: Sequence[Descriptor], annotations: Mapping[str, str],
              mlflow_cache: dict[str, str | None] | None = None) -> tuple[str | None, str | None]:
    """(run id, status) of an artifact from its referrers' descriptors and its manifest annotations; status
    ``failed`` wins over ``succeeded``; (None, None) when nothing was recorded."""
    from ..lineage.record import A_RUN_ID, A_RUN_TRACKER

    found: list[tuple[str | None, str]] = []
    for r in referrers:
        a = r.annotations or {}
        if r.artifactType == RUN_STATUS_TYPE and a.get(A_RUN_STATUS) in ("succeeded", "failed"):
            found.append((a.get(A_RUN_ID), a[A_RUN_STATUS]))
    if annotations.get(A_RUN_TRACKER) == "mlflow" and annotations.get(A_RUN_ID):
        run_id = annotations[A_RUN_ID]
        status = _mlflow_status(run_id, mlflow_cache if mlflow_cache is not None else {})
        if status is not None:
            found.append((run_id, status))
    for run_id, status in found:
        if status == "failed":
            return run_id, status
    return found[0] if found else (annotations.get(A_RUN_ID), None)


#: One import of mlflow for all of gc's threads: a thread that meets the module half-imported by another would
#: otherwise fail and take "no status" for a run that has one.
_MLFLOW_IMPORT = threading.Lock()


def _mlflow() -> Any:
    """The mlflow module (imported once, under a lock), or None where it is not installed."""
    with _MLFLOW_IMPORT:
        try:
            return importlib.import_module("mlflow")
        except ImportError:
            return None


def _mlflow_status(run_id: str, cache: dict[str, str | None]) -> str | None:
    """``failed`` / ``succeeded`` for an ended MLflow run, None while running or without MLflow configured."""
    if run_id in cache:
        return cache[run_id]
    status: str | None = None
    if os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow = _mlflow()
        if mlflow is None:
            return None
        try:
            info = mlflow.MlflowClient().get_run(run_id).info
        except Exception:  # noqa: BLE001 - the run is unknown to this tracking server: no recorded status
            return None
        status = {"FAILED": "failed", "KILLED": "failed", "FINISHED": "succeeded"}.get(str(info.status))
    cache[run_id] = status
    return status
