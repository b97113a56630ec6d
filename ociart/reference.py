"""Parse and format artifact references.

Forms accepted:

* ``host[:port]/repo[:tag][@sha256:<hex>]`` — a registry. The first path component is a host only if it
  contains ``.`` or ``:`` or is ``localhost`` (the Docker rule).
* ``repo[:tag][@digest]`` — no host: the embedded store (one OCI image layout under ``$OCIART_HOME``), or
  the registry named by ``OCIART_REGISTRY`` when that is set.
* ``oci:PATH[:NAME][@digest]`` — any OCI image-layout directory; NAME is matched against
  ``org.opencontainers.image.ref.name`` (split at the first ``:`` after PATH, as skopeo does).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import InvalidReferenceError

#: Matched with ``fullmatch`` only (``$`` with ``match`` would accept a trailing newline).
NAME_RE = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
DEFAULT_TAG = "latest"


def is_digest(value: str) -> bool:
    return bool(DIGEST_RE.fullmatch(value))


def check_digest(value: str) -> str:
    if not DIGEST_RE.fullmatch(value):
        raise InvalidReferenceError(f"invalid digest {value!r}: expected sha256:<64 lowercase hex>")
    return value


@dataclass(frozen=True)
class Reference:
    """A parsed reference. Exactly one of ``registry`` and ``layout`` is set."""

    repository: str
    tag: str | None = None
    digest: str | None = None
    registry: str | None = None
    layout: Path | None = None
    #: True for the embedded default store (layout entries are named ``<repo>:<tag>``).
    embedded: bool = False

    @property
    def reference(self) -> str:
        """The tag or digest used to address the manifest (digest wins)."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=digest)

    def with_tag(self, tag: str | None) -> Reference:
        return replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        if self.layout is not None and not self.embedded:
            s = f"oci:{self.layout}"
            name = self.repository + (f":{self.tag}" if self.tag else "") if self.repository else (self.tag or "")
            if name:
                s += f":{name}"
        else:
            s = f"{self.registry}/{self.repository}" if self.registry else self.repository
            if self.tag:
                s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def _split_name(rest: str, original: str, *, allow_empty_repo: bool = False) -> tuple[str, str | None, str | None]:
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        check_digest(digest)
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not TAG_RE.fullmatch(tag):
            raise InvalidReferenceError(f"invalid tag {tag!r} in reference {original!r}")
    if rest or not allow_empty_repo:
        if not NAME_RE.fullmatch(rest):
            raise InvalidReferenceError(
                f"invalid repository name {rest!r} in reference {original!r}: "
                "use lowercase letters, digits and separators (. _ __ -), components joined by /"
            )
    return rest, tag, digest


def default_home() -> Path:
    env = os.environ.get("OCIART_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("ociart", appauthor=False))


def embedded_store_path() -> Path:
    return default_home() / "store"


def _is_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def parse_reference(value: str, *, default_registry: str | None | bool = True) -> Reference:
    """Parse ``value``. ``default_registry=True`` honours ``OCIART_REGISTRY``; a string forces one."""
    original = value
    if not value or value.strip() != value:
        raise InvalidReferenceError(f"invalid reference {original!r}")
    if _CONTROL_RE.search(value):
        raise InvalidReferenceError(f"invalid reference {original!r}: it contains a control character")
    if value.lower().startswith(("http://", "https://")):
        raise InvalidReferenceError(f"invalid reference {original!r}: drop the http:// or https:// scheme "
                                    "(write host[:port]/repo[:tag]) and use --plain-http for a plain-HTTP registry")
    if value.startswith("oci:"):
        body = value[4:]
        digest = None
        if "@" in body:
            body, digest = body.rsplit("@", 1)
            check_digest(digest)
        path, _, name = body.partition(":")
        if not path:
            raise InvalidReferenceError(f"invalid reference {original!r}: oci: needs a directory path")
        return Reference(repository="", tag=name or None, digest=digest, layout=Path(path))
    first, sep, remainder = value.partition("/")
    if sep and _is_host(first):
        if not remainder:
            raise InvalidReferenceError(f"invalid reference {original!r}: missing repository")
        repo, tag, digest = _split_name(remainder, original)
        return Reference(repository=repo, tag=tag, digest=digest, registry=first)
    repo, tag, digest = _split_name(value, original)
    registry = os.environ.get("OCIART_REGISTRY") if default_registry is True else default_registry or None
    if registry:
        return Reference(repository=repo, tag=tag, digest=digest, registry=registry.rstrip("/"))
    return Reference(repository=repo, tag=tag, digest=digest, layout=embedded_store_path(), embedded=True)


#: Docker Hub's host names, folded to one.
DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
_DEFAULT_PORTS = frozenset({"443", "80"})


def _ip_literal(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address however it is written (``127.1``, ``0x7f.0.0.1``, ``::ffff:127.0.0.1``), else None."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        if not name or not re.fullmatch(r"[0-9a-fx.]+", name) or not name[0].isdigit():
            return None
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(name))  # the legacy forms the resolver accepts too
        except OSError:
            return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def canonical_host(host: str) -> str:
    """One spelling per registry host, for trust decisions and credential scoping: lower case, IDNA (punycode),
    no trailing dot, no default port (443, 80), IP literals normalised (``127.1``, ``[::ffff:127.0.0.1]`` ->
    ``127.0.0.1``; IPv6 compressed in brackets), ``localhost`` -> ``127.0.0.1`` (RFC 6761: always loopback), and
    Docker Hub's aliases -> ``docker.io``. Other aliases of one registry (a DNS CNAME, a mirror) cannot be known
    and stay different names."""
    h = host.strip()
    port = ""
    if h.startswith("[") and "]" in h:
        name, rest = h[1 : h.index("]")], h[h.index("]") + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, sep, p = h.rpartition(":")
        if not sep or not p.isdigit():
            name, port = h, ""
        else:
            port = p
    name = name.lower().rstrip(".")
    if port:
        port = str(int(port))
    ip = _ip_literal(name)
    if ip is not None:
        name = f"[{ip.compressed}]" if ip.version == 6 else str(ip)
    else:
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            pass
        if name == "localhost":
            name = "127.0.0.1"
        if name in _HUB_ALIASES:
            name = DOCKER_HUB
    return f"{name}:{port}" if port and port not in _DEFAULT_PORTS else name


def canonical_name(r: Reference) -> str:
    """The name trust decisions (policy rules) match: ``canonical_host/repository`` for a registry (Docker Hub's
    one-component names under ``library/``), ``repository`` in the embedded store, and
    ``oci:<resolved absolute path>[:NAME]`` for a layout (symlinks and ``..`` resolved)."""
    if r.layout is not None and not r.embedded:
        return f"oci:{os.path.realpath(r.layout)}" + (f":{r.tag}" if r.tag else "")
    if r.registry is None:
        return r.repository
    host = canonical_host(r.registry)
    repo = r.repository
    if host == DOCKER_HUB and "/" not in repo:
        repo = f"library/{repo}"
    return f"{host}/{repo}"


def parse_repository(value: str) -> Reference:
    """Parse a repository (a reference whose tag/digest, if any, is ignored by the caller)."""
    return parse_reference(value)
