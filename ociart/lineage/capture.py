"""What made an artifact: git state, run id, parameters, inputs, environment — captured at push time.

Capture is cheap (a few git subprocesses, one scan of installed distributions, cached per process) and never
fails a push: a missing git or tracker just leaves the field out.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NotFoundError, UsageError


@dataclass(frozen=True)
class GitInfo:
    commit: str
    branch: str | None
    remote: str | None
    dirty: bool
    root: str


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


#: Query parameters that carry secrets in git remote URLs (tokens, signed-URL signatures, passwords, keys).
_SECRET_PARAMS = frozenset({"access_token", "token", "private_token", "password", "passwd", "pass", "key",
                            "api_key", "apikey", "secret", "client_secret", "auth", "sig", "signature",
                            "oauth_token", "refresh_token", "id_token", "code", "credential", "credentials"})


def _secret_param(name: str) -> bool:
    n = name.lower()
    return (n in _SECRET_PARAMS or n.startswith(("x-amz-", "x-goog-", "x-ms-")) or n.endswith(("token", "secret"))
            or "password" in n)


def clean_remote(url: str, root: Path | None = None) -> str:
    """The remote as a URL without credentials: userinfo (``https://user:token@host/x`` -> ``https://host/x``),
    credential-like query parameters (``access_token``, ``token``, ``private_token``, ``password``, ``key``,
    ``sig``, ``X-Amz-*`` …) and the fragment are dropped. scp-like ``git@host:org/x.git`` ->
    ``ssh://host/org/x.git``, a local path (relative to ``root``) -> ``file://``."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    if not re.match(r"^\w[\w+.-]*://", url):
        scp = re.match(r"^(?:[^/]*@)?([^/:@]+):(.*)\Z", url)
        if scp and not re.match(r"^[A-Za-z]:[\\/]", url):  # not a Windows drive
            url = f"ssh://{scp[1]}/{scp[2].lstrip('/')}"
        else:
            return ((root or Path.cwd()) / url).resolve().as_uri()
    scheme, netloc, path, query, _ = urlsplit(url)
    netloc = netloc.rpartition("@")[2]  # the last @ ends userinfo (a password may contain @)
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if not _secret_param(k)]
    return urlunsplit((scheme, netloc, path, urlencode(kept), ""))


def git_info(path: Path) -> GitInfo | None:
    """The git repository containing ``path`` (the training code), or None."""
    if shutil.which("git") is None:
        return None
    top = _git(path, "rev-parse", "--show-toplevel")
    commit = _git(path, "rev-parse", "HEAD") if top else None
    if not top or not commit:
        return None
    branch = _git(path, "symbolic-ref", "--short", "-q", "HEAD") or None
    remote = _git(path, "config", "--get", "remote.origin.url")
    status = _git(path, "status", "--porcelain", "--untracked-files=no")
    return GitInfo(commit=commit, branch=branch, remote=clean_remote(remote, Path(top)) if remote else None,
                   dirty=bool(status), root=top)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (RFC 8785 for the strings, integers and floats of parameters)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def params_digest(params: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(params)).hexdigest()


def load_params_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise NotFoundError(f"params file {path} not found")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - yaml and json raise different classes
        raise UsageError(f"{path}: cannot parse parameters ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of parameters")
    return data


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def installed_packages() -> list[str]:
    """Sorted ``name==version`` of the distributions on ``sys.path``, read from their ``.dist-info`` /
    ``.egg-info`` directory names (a directory listing per path entry, not every ``METADATA`` file: ~1 ms)."""
    found: set[str] = set()
    for entry in sys.path:
        try:
            listing = os.scandir(entry or ".")
        except OSError:
            continue
        with listing:
            for item in listing:
                name = item.name
                if name.endswith(".dist-info"):
                    dist, sep, version = name[: -len(".dist-info")].partition("-")
                elif name.endswith(".egg-info"):
                    dist, sep, version = name[: -len(".egg-info")].partition("-")
                    version = version.split("-")[0]
                else:
                    continue
                if sep and version:
                    found.add(f"{_canonical(dist)}=={version}")
    return sorted(found)


@functools.cache
def environment() -> dict[str, Any]:
    """Python, platform, installed packages (sorted, with their digest), CUDA/driver and image when known."""
    packages = installed_packages()
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": packages,
        "packagesDigest": "sha256:" + hashlib.sha256("\n".join(packages).encode()).hexdigest(),
    }
    for var, key in (("CUDA_VERSION", "cuda"), ("NVIDIA_DRIVER_VERSION", "driver")):
        if os.environ.get(var):
            env[key] = os.environ[var]
    torch = sys.modules.get("torch")  # only when the training script already imported it
    if torch is not None and getattr(getattr(torch, "version", None), "cuda", None):
        env.setdefault("cuda", torch.version.cuda)
    if "driver" not in env and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=3)
            if out.returncode == 0 and out.stdout.strip():
                driver, _, gpu = out.stdout.splitlines()[0].partition(",")
                env["driver"], env["gpu"] = driver.strip(), gpu.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    if os.environ.get("OCIART_IMAGE_DIGEST"):
        env["image"] = os.environ["OCIART_IMAGE_DIGEST"]
    return env


def active_run(explicit: str | None = None) -> tuple[str, str, bool]:
    """(run id, tracker, known): an explicit id, the active MLflow or W&B run, or a generated one."""
    if explicit:
        return explicit, "ociart", True
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        try:
            run = mlflow.active_run()
        except Exception:  # noqa: BLE001 - a tracker problem must not fail a push
            run = None
        if run is not None:
            return run.info.run_id, "mlflow", True
    if os.environ.get("MLFLOW_RUN_ID"):
        return os.environ["MLFLOW_RUN_ID"], "mlflow", True
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        return wandb.run.path if isinstance(wandb.run.path, str) else "/".join(wandb.run.path), "wandb", True
    return uuid.uuid4().hex, "ociart", False
