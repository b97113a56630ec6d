"""An MLflow artifact repository that stores run artifacts in an OCI registry through ociart.

Scheme ``ociart`` (``oci`` is already taken by Oracle's oci-mlflow). URI: ``ociart://<registry>/<path>``; the OCI
repository is ``<path>`` up to and including its first ``artifacts`` component (MLflow's run layout
``<root>/<experiment>/<run>/artifacts``), or all of ``<path>``; what follows is a folder inside the artifact.

A run's artifacts are one OCI artifact tagged ``latest`` in that repository: every ``log_artifact(s)`` uploads the
new files (digest-deduplicated) and writes a new manifest listing all files, titled by their paths. Downloads are
digest-verified and atomic. Writers in one process are serialised; two processes logging to the same run at the
same moment can lose one manifest update (the blobs are kept; log again to repair).

    mlflow server --backend-store-uri sqlite:///mlflow.db --default-artifact-root ociart://127.0.0.1:5000/mlflow
"""

from __future__ import annotations

import os
import posixpath
import threading
from pathlib import Path
from urllib.parse import urlparse

from mlflow.entities import FileInfo
from mlflow.store.artifact.artifact_repo import ArtifactRepository

from ..cache import DigestCache
from ..errors import NotFoundError, UnsafePathError, UsageError
from ..safepath import safe_relpath
from ..oci import ANNOTATION_TITLE, EMPTY_JSON_DIGEST, OCI_EMPTY, Descriptor, Manifest
from ..transfer import check_local_file, parallel, push_file_cached, push_manifest

ARTIFACT_TYPE = "application/vnd.ociart.mlflow.artifacts.v1"
TAG = "latest"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def split_uri(uri: str) -> tuple[str, str, str]:
    """``ociart://host/a/b/artifacts/x/y`` -> (``host``, ``a/b/artifacts``, ``x/y``)."""
    parsed = urlparse(uri)
    if parsed.scheme != "ociart" or not parsed.netloc:
        raise UsageError(f"{uri}: expected ociart://<registry>/<repository path>")
    parts = [p for p in parsed.path.split("/") if p]
    if not parts:
        raise UsageError(f"{uri}: no repository path")
    cut = parts.index("artifacts") + 1 if "artifacts" in parts else len(parts)
    return parsed.netloc, "/".join(parts[:cut]).lower(), "/".join(parts[cut:])


class OciartArtifactRepository(ArtifactRepository):
    def __init__(self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None,
                 **kwargs: object) -> None:
        try:
            super().__init__(artifact_uri, tracking_uri, registry_uri)
        except TypeError:  # older MLflow: (artifact_uri) only
            super().__init__(artifact_uri)
        from ..client import Client

        self.host, self.repo, self.prefix = split_uri(artifact_uri)
        self._client = Client(plain_http=os.environ.get("OCIART_PLAIN_HTTP", "").lower() in ("1", "true"))
        self._ref = self._client.ref(f"{self.host}/{self.repo}:{TAG}")
        self._target = self._client.target(self._ref)
        self._cache = DigestCache()
        with _locks_guard:
            self._lock = _locks.setdefault(f"{self.host}/{self.repo}", threading.Lock())

    # -- the run's manifest ------------------------------------------------------------------------
    def _files(self) -> dict[str, Descriptor]:
        try:
            node = self._target.get_manifest(self.repo, TAG).parse()
        except NotFoundError:
            return {}
        if not isinstance(node, Manifest):
            return {}
        files: dict[str, Descriptor] = {}
        for layer in node.layers:
            if not layer.title:
                continue
            # a title MLflow would walk forever (``./x``, ``a/./b``, ``a//b``) or that escapes is refused here
            if str(safe_relpath(layer.title)) != layer.title:
                raise UnsafePathError(f"{self.artifact_uri}: layer title {layer.title!r} is not a normalised "
                                      "relative path (no '.', '..' or empty components)")
            files[layer.title] = layer
        return files

    def _commit(self, files: dict[str, Descriptor]) -> None:
        empty = Descriptor(mediaType=OCI_EMPTY, digest=EMPTY_JSON_DIGEST, size=2)  # a manifest needs one layer
        push_manifest(self._target, self.repo, artifact_type=ARTIFACT_TYPE, tag=TAG,
                      layers=[files[k] for k in sorted(files)] or [empty],
                      annotations={"dev.ociart.run.tracker": "mlflow"})

    def _path(self, *parts: str | None) -> str:
        """The title of a file under this URI's folder ('' for the folder itself); refuses ``..`` escapes."""
        joined = "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))
        return str(safe_relpath(joined)) if joined else ""

    def _upload(self, local: Path, title: str) -> Descriptor:
        out = push_file_cached(self._target, self.repo, local, "application/octet-stream", self._cache, False, None,
                               title)
        return Descriptor(mediaType="application/octet-stream", digest=out.digest, size=out.size,
                          annotations={ANNOTATION_TITLE: title})

    # -- ArtifactRepository ------------------------------------------------------------------------
    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        local = Path(local_file)
        check_local_file(local.parent, local, local.name, "", True)  # a UTF-8 name
        with self._target.writing():
            self._log([self._upload(local, self._path(artifact_path, local.name))])

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        root = Path(local_dir)
        real_root = os.path.realpath(root)
        files = [p for p in sorted(root.rglob("*")) if p.is_file()]
        for p in files:  # UTF-8 names only; no symlink out of the directory
            check_local_file(root, p, p.relative_to(root).as_posix(), real_root, False)
        pairs = [(p, self._path(artifact_path, p.relative_to(root).as_posix())) for p in files]
        with self._target.writing():
            self._log(parallel(lambda t: self._upload(*t), pairs, 4))

    def _log(self, layers: list[Descriptor]) -> None:
        with self._lock:
            files = self._files()
            files.update({layer.title or "": layer for layer in layers})
            self._commit(files)

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        base = self._path(path)
        files = self._files()
        if base in files:
            return []
        prefix = base + "/" if base else ""
        out: dict[str, FileInfo] = {}
        for title, desc in files.items():
            if not title.startswith(prefix):
                continue
            head, sep, _ = title[len(prefix):].partition("/")
            rel = posixpath.join(path, head) if path else head
            out[rel] = FileInfo(rel, True, None) if sep else FileInfo(rel, False, desc.size)
        return [out[k] for k in sorted(out)]

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        title = self._path(remote_file_path)
        desc = self._files().get(title)
        if desc is None:
            raise NotFoundError(f"{self.artifact_uri}: no artifact {remote_file_path!r}")
        self._target.fetch_blob(self.repo, desc, Path(local_path))

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        base = self._path(artifact_path)
        with self._lock:
            files = self._files()
            kept = {t: d for t, d in files.items() if base and not (t == base or t.startswith(base + "/"))}
            if kept != files:
                self._commit(kept)
