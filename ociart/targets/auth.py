"""Registry authentication: credential lookup, ``WWW-Authenticate`` challenges, and a scoped token cache.

Credential sources, first match wins: explicit username/password; ``OCIART_REGISTRY_USERNAME`` /
``OCIART_REGISTRY_PASSWORD`` (only for the host named by ``OCIART_REGISTRY_HOST``, else the host of
``OCIART_REGISTRY``; never sent to any other host); ``REGISTRY_AUTH_FILE``; Docker's ``config.json`` (``$DOCKER_CONFIG`` or
``~/.docker``; ``credHelpers[host]`` > ``credsStore`` > ``auths[host]``; ``identitytoken``); the
containers ``auth.json`` files (``$XDG_RUNTIME_DIR/containers``, ``~/.config/containers``).
Tokens are cached per (host, service, scopes) until shortly before they expire.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import AuthError, UsageError
from ..reference import canonical_host

DOCKER_HUB_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    #: An OAuth2 refresh token (Docker ``identitytoken``), used with the token endpoint's POST form.
    identity_token: str | None = None
    source: str = "explicit"

    def basic_header(self) -> str:
        raw = f"{self.username or ''}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict[str, str]

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.params.get("scope", "").split()) if self.params.get("scope") else ()


_PARAM_RE = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def parse_challenge(header: str) -> Challenge | None:
    """Parse one ``WWW-Authenticate`` value (``Bearer realm="…",service="…",scope="…"`` or ``Basic …``)."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)).replace('\\"', '"')
              for m in _PARAM_RE.finditer(rest)}
    return Challenge(scheme=scheme.lower(), params=params)


# -- credential stores ------------------------------------------------------------------------------
def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _auth_keys(host: str) -> list[str]:
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        keys.insert(0, DOCKER_HUB_KEY)
    return keys


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read credentials file {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _from_auths(auths: dict, host: str, source: str) -> Credentials | None:
    for key in _auth_keys(host):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            user = None
            if entry.get("auth"):
                user = base64.b64decode(entry["auth"]).decode().partition(":")[0] or None
            return Credentials(username=user, identity_token=entry["identitytoken"], source=source)
        if entry.get("auth"):
            try:
                user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            except ValueError:
                raise UsageError(f"malformed auth entry for {host} in {source}") from None
            return Credentials(username=user, password=pw, source=source)
        if entry.get("username"):
            return Credentials(username=entry["username"], password=entry.get("password"), source=source)
    return None


class _HelperMissing(Exception):
    pass


def _run_helper(helper: str, action: str, payload: bytes) -> subprocess.CompletedProcess[bytes]:
    """Run ``docker-credential-<helper> <action>``; :class:`_HelperMissing` when it is not installed."""
    exe = f"docker-credential-{helper}"
    try:
        return subprocess.run([exe, action], input=payload, capture_output=True, timeout=30)
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        raise _HelperMissing(exe) from None
    except OSError as exc:
        raise AuthError(f"credential helper {exe} could not be run: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {exe} did not answer within 30 s") from None


def _missing(exe: str, action: str) -> AuthError:
    return AuthError(f"credential helper {exe} named in {docker_config_path()} is not installed; cannot {action} "
                     "(install it, or remove credsStore/credHelpers from that file)")


def _from_helper(helper: str, host: str) -> Credentials | None:
    """Credentials from a helper; None when it has none or is not installed (reads then fall back to ``auths``, as
    docker does)."""
    exe = f"docker-credential-{helper}"
    try:
        proc = _run_helper(helper, "get", host.encode())
    except _HelperMissing:
        return None
    if proc.returncode != 0:
        return None
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        raise AuthError(f"credential helper {exe} printed malformed JSON") from None
    user, secret = out.get("Username"), out.get("Secret")
    if user == "<token>":
        return Credentials(identity_token=secret, source=exe)
    return Credentials(username=user, password=secret, source=exe)


def environment_host() -> str | None:
    """The one host the ``OCIART_REGISTRY_USERNAME``/``_PASSWORD`` credentials belong to: ``OCIART_REGISTRY_HOST``,
    else the host of ``OCIART_REGISTRY``; None (the credentials go nowhere) when neither is set."""
    named = os.environ.get("OCIART_REGISTRY_HOST") or os.environ.get("OCIART_REGISTRY") or ""
    named = named.strip().split("://", 1)[-1].split("/", 1)[0]
    return named or None


def lookup_credentials(host: str) -> Credentials | None:
    user, pw = os.environ.get("OCIART_REGISTRY_USERNAME"), os.environ.get("OCIART_REGISTRY_PASSWORD")
    env_host = environment_host()
    if user and pw is not None and env_host and canonical_host(env_host) == canonical_host(host):
        return Credentials(username=user, password=pw, source="environment")
    auth_file = os.environ.get("REGISTRY_AUTH_FILE")
    if auth_file:
        found = _from_auths(_load_json(Path(auth_file)).get("auths", {}), host, auth_file)
        if found:
            return found
    cfg_path = docker_config_path()
    cfg = _load_json(cfg_path)
    helpers = cfg.get("credHelpers") or {}
    if host in helpers:
        found = _from_helper(helpers[host], host)
        if found:
            return found
    elif cfg.get("credsStore"):
        found = _from_helper(cfg["credsStore"], host)
        if found:
            return found
    found = _from_auths(cfg.get("auths") or {}, host, str(cfg_path))
    if found:
        return found
    for base in (os.environ.get("XDG_RUNTIME_DIR"), str(Path.home() / ".config")):
        if base:
            path = Path(base) / "containers" / "auth.json"
            found = _from_auths(_load_json(path).get("auths", {}), host, str(path))
            if found:
                return found
    return None


def store_credentials(host: str, username: str, password: str) -> Path:
    """Save credentials the way ``docker login`` does (helper when configured, else ``auths``). A configured helper
    that is not installed is an error: the password is never written to ``auths`` in its place."""
    path = docker_config_path()
    cfg = _load_json(path)
    helper = (cfg.get("credHelpers") or {}).get(host) or cfg.get("credsStore")
    if helper:
        payload = json.dumps({"ServerURL": host, "Username": username, "Secret": password}).encode()
        try:
            proc = _run_helper(helper, "store", payload)
        except _HelperMissing as missing:
            raise _missing(str(missing), f"store the credentials for {host}") from None
        if proc.returncode != 0:
            why = " ".join(proc.stderr.decode(errors="replace").split())[:200] or f"exit {proc.returncode}"
            raise AuthError(f"docker-credential-{helper} store failed: {why}")
        return path
    cfg.setdefault("auths", {})[host] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    _write_config(path, cfg)
    return path


def remove_credentials(host: str) -> bool:
    path = docker_config_path()
    cfg = _load_json(path)
    helper = (cfg.get("credHelpers") or {}).get(host) or cfg.get("credsStore")
    removed = False
    if helper:
        try:
            proc = _run_helper(helper, "erase", host.encode())
        except _HelperMissing as missing:
            raise _missing(str(missing), f"remove the credentials for {host}") from None
        removed = proc.returncode == 0
    auths = cfg.get("auths") or {}
    for key in _auth_keys(host):
        if auths.pop(key, None) is not None:
            removed = True
    if removed and not helper:
        _write_config(path, cfg)
    return removed


def _write_config(path: Path, cfg: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f, indent="\t")
    os.replace(tmp, path)


# -- token cache ------------------------------------------------------------------------------------
class TokenCache:
    """Bearer tokens keyed by (host, service, sorted scopes), dropped 10 s before expiry."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, tuple[str, ...]], tuple[str, float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(host: str, service: str, scopes: tuple[str, ...] | list[str]) -> tuple[str, str, tuple[str, ...]]:
        return (host, service, tuple(sorted(set(scopes))))

    def get(self, key: tuple[str, str, tuple[str, ...]]) -> str | None:
        with self._lock:
            hit = self._tokens.get(key)
            if hit and hit[1] > time.monotonic():
                return hit[0]
            self._tokens.pop(key, None)
            return None

    def put(self, key: tuple[str, str, tuple[str, ...]], token: str, expires_in: float) -> None:
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + max(expires_in - 10, 1))

    def clear(self, key: tuple[str, str, tuple[str, ...]]) -> None:
        with self._lock:
            self._tokens.pop(key, None)


def missing_scopes(requested: tuple[str, ...] | list[str], token: str | None) -> list[str]:
    """The ``repository:<name>:<action>`` scopes of ``requested`` that a Docker registry JWT's ``access`` claim does
    not grant, one per action (for refusal messages only: the token is decoded, not verified). [] when the token is
    not a readable JWT."""
    if not token or token.count(".") != 2:
        return []
    import base64
    import json

    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        granted = {(a["type"], a["name"]): set(a.get("actions") or []) for a in claims.get("access") or []}
    except (ValueError, TypeError, KeyError, AttributeError):
        return []
    out = []
    for scope in requested:
        resource, _, actions = scope.rpartition(":")
        kind, _, name = resource.partition(":")
        have = granted.get((kind, name), set())
        out += [f"{resource}:{a}" for a in actions.split(",") if a and a not in have and "*" not in have]
    return out


def merge_scopes(*groups: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Union of ``repository:<name>:<actions>`` scopes, actions merged per resource, sorted."""
    merged: dict[str, set[str]] = {}
    for group in groups:
        for scope in group:
            resource, _, actions = scope.rpartition(":")
            if not resource:
                merged.setdefault(scope, set())
                continue
            merged.setdefault(resource, set()).update(a for a in actions.split(",") if a)
    return tuple(sorted(f"{r}:{','.join(sorted(a))}" if a else r for r, a in merged.items()))
