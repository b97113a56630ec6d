"""The audit log: one hash-chained JSON line per push, tag, promote, rollback, delete and gc action.

Each line is the compact JSON of an :class:`AuditEntry` (fields in the model's order). ``prev`` is the hex SHA-256
of the previous line's bytes without its newline; the first line's ``prev`` is 64 zeros. An edited, dropped or
reordered line therefore breaks the chain at the line after it, which :func:`verify` names. Dropping lines at the
*end* (truncation) or editing the last line cannot be seen from the file alone: that needs a copy of the head kept
elsewhere (the registry copy of the log).

Writers take an exclusive ``flock`` on the file for the read-last-line-and-append step, so processes and threads
(``ociart.run()`` uploads checkpoints on a thread) never chain two lines to the same predecessor. Lines never hold
secrets: only references, digests, names and outcomes.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from . import limits
from .errors import LocalIOError, VerificationError
from .reference import default_home

log = logging.getLogger(__name__)
GENESIS = "0" * 64
_thread_lock = threading.Lock()  # flock is per open file description; threads of one process also queue here


class AuditEntry(BaseModel):
    """One line of the audit log (field order is the line's key order)."""

    model_config = ConfigDict(extra="forbid")

    time: str
    actor: str
    action: str
    reference: str
    before: str | None = None
    after: str | None = None
    result: str = "ok"
    detail: dict[str, Any] | None = None
    prev: str = GENESIS

    def line(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode()

    @property
    def repository(self) -> str:
        """The reference without host-less tag or digest suffix (``host/repo`` or ``repo``)."""
        ref = self.reference.split("@", 1)[0]
        slash = ref.rfind("/")
        colon = ref.rfind(":")
        return ref[:colon] if colon > slash else ref


class AuditReport(BaseModel):
    """What :func:`verify` found: a chain of ``lines`` lines whose last line hashes to ``head``."""

    path: str
    lines: int
    head: str


def default_path() -> Path:
    return default_home() / "audit.jsonl"


def default_actor() -> str:
    """The OS user (``OCIART_ACTOR`` overrides, e.g. a CI job's identity); never fails, even with HOME unset."""
    actor = os.environ.get("OCIART_ACTOR")
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _last_line(fd: int) -> bytes | None:
    """The bytes of the file's last line (without its newline), read backwards in bounded steps."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        return None
    end = size - 1 if os.pread(fd, 1, size - 1) == b"\n" else size
    pos, buf = end, b""
    while pos > 0:
        step = min(8192, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        nl = buf.rfind(b"\n")
        if nl >= 0:
            return buf[nl + 1:]
        if len(buf) > limits.AUDIT_LINE_BYTES:
            raise LocalIOError(f"audit log {_name(fd)}: last line is longer than {limits.AUDIT_LINE_BYTES} bytes")
    return buf


def _name(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"fd {fd}"


def append(action: str, reference: str, *, before: str | None = None, after: str | None = None,
           result: str = "ok", actor: str | None = None, detail: Mapping[str, Any] | None = None,
           path: Path | None = None, registry: str | None = None) -> AuditEntry:
    """Append one line, chained to the current last line, under an exclusive lock; returns the entry written.

    ``registry`` (default: ``$OCIART_AUDIT_REPO``) is a repository that also receives the line, and holds the head
    (see "Registry copy" below); a registry that cannot be written is a warning, the local line stands."""
    p = path or default_path()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with _thread_lock:
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                last = _last_line(fd)
                entry = AuditEntry(time=datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                                   actor=actor or default_actor(), action=action, reference=reference,
                                   before=before, after=after, result=result,
                                   detail=dict(detail) if detail else None,
                                   prev=GENESIS if last is None else line_hash(last))
                data = entry.line() + b"\n"
                if len(data) > limits.AUDIT_LINE_BYTES:
                    raise LocalIOError(f"audit line for {action} {reference} exceeds {limits.AUDIT_LINE_BYTES} bytes")
                os.write(fd, data)
                os.fsync(fd)
                repo = registry if registry is not None else os.environ.get(REPO_ENV) or None
                if repo:  # under the lock: the registry copy receives lines in the file's order
                    _copy_to_registry(p, repo, entry.line(), entry.prev)
            finally:
                os.close(fd)  # releases the flock
    except OSError as exc:
        raise LocalIOError(f"audit log {p}: {exc.strerror or exc}") from None
    return entry


@contextmanager
def action(name: str, reference: str, *, before: str | None = None, actor: str | None = None,
           path: Path | None = None, required: bool = False) -> Iterator[dict[str, Any]]:
    """Log an action when it ends: ``result`` ``ok``, or ``failed`` with the error's first line in ``detail``.

    The yielded dict is filled in by the caller: ``after`` (the digest now), ``before`` (when only known later),
    ``reference`` (e.g. pinned by digest), ``actor``; any other key goes to ``detail``. With ``required`` False a
    log that cannot be written is a warning (the action has happened; its result stands), else a LocalIOError."""
    facts: dict[str, Any] = {}
    try:
        yield facts
    except BaseException as exc:
        text = str(exc).splitlines()[0] if str(exc) else ""
        _log(name, reference, before, actor, path, facts, required, result="failed",
             extra={"error": f"{type(exc).__name__}: {text}"[:500]})
        raise
    _log(name, reference, before, actor, path, facts, required, result="ok")


def _log(name: str, reference: str, before: str | None, actor: str | None, path: Path | None,
         facts: dict[str, Any], required: bool, *, result: str, extra: Mapping[str, Any] | None = None) -> None:
    facts = dict(facts)
    ref = facts.pop("reference", reference)
    before = facts.pop("before", before)
    after = facts.pop("after", None)
    actor = facts.pop("actor", None) or actor
    detail = {**facts, **(extra or {})}
    record(name, ref, before=before, after=after, result=result, actor=actor, detail=detail or None, path=path,
           required=required)


def record(action: str, reference: str, *, result: str = "ok", required: bool = False,
           **fields: Any) -> AuditEntry | None:
    """:func:`append`, for an action that has already happened (or been refused): with ``required`` False a log
    that cannot be written is a warning and None, since the action's result stands whatever the log says."""
    try:
        return append(action, reference, result=result, **fields)
    except LocalIOError as exc:
        if required:
            raise
        outcome = {"ok": "succeeded", "failed": "failed"}.get(result, f"ended {result}")
        log.warning("%s (the %s itself %s)", exc, action, outcome)
        return None


def _lines(p: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, bytes without newline), streamed; an over-long line is an error, not a memory sink."""
    with open(p, "rb") as f:
        n = 0
        while True:
            raw = f.readline(limits.AUDIT_LINE_BYTES + 1)
            if not raw:
                return
            n += 1
            if len(raw) > limits.AUDIT_LINE_BYTES:
                raise VerificationError(f"audit log {p}: line {n} is longer than {limits.AUDIT_LINE_BYTES} bytes")
            if not raw.endswith(b"\n"):
                raise VerificationError(f"audit log {p}: line {n} is incomplete (no newline): a torn write")
            yield n, raw[:-1]


def _parse(p: Path, n: int, raw: bytes) -> AuditEntry:
    try:
        return AuditEntry.model_validate_json(raw)
    except ValidationError:
        raise VerificationError(f"audit log {p}: line {n} is not a valid audit entry") from None


def read(path: Path | None = None) -> Iterator[AuditEntry]:
    """The entries in file order (parsed only; :func:`verify` checks the chain)."""
    p = path or default_path()
    if not p.exists():
        return
    for n, raw in _lines(p):
        yield _parse(p, n, raw)


def verify(path: Path | None = None) -> AuditReport:
    """Check the whole chain; raise :class:`VerificationError` naming the first line where it breaks."""
    p = path or default_path()
    if not p.exists():
        raise VerificationError(f"audit log {p} does not exist")
    prev, count = GENESIS, 0
    for n, raw in _lines(p):
        entry = _parse(p, n, raw)
        if entry.prev != prev:
            where = "the first line" if n == 1 else f"line {n - 1}"
            raise VerificationError(
                f"audit log {p}: chain broken at line {n}: its prev does not match {where} "
                f"({'the first line must chain to 64 zeros' if n == 1 else f'line {n - 1} was edited, or lines were dropped or reordered before line {n}'})")
        prev, count = line_hash(raw), n
    return AuditReport(path=str(p), lines=count, head=prev)


def head(path: Path | None = None) -> str:
    """The hash of the last line (what the next line's ``prev`` will be); 64 zeros for an empty or absent log."""
    p = path or default_path()
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return GENESIS
    try:
        last = _last_line(fd)
    finally:
        os.close(fd)
    return GENESIS if last is None else line_hash(last)


def _when(value: datetime | str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def show(path: Path | None = None, *, repository: str | None = None, actor: str | None = None,
         action: str | None = None, since: datetime | str | None = None,
         until: datetime | str | None = None) -> list[AuditEntry]:
    """Entries matching every filter given (``repository``, ``actor`` and ``action`` may be shell globs)."""
    lo = _when(since) if since is not None else None
    hi = _when(until) if until is not None else None
    found = []
    for e in read(path):
        if repository is not None and not fnmatchcase(e.repository, repository):
            continue
        if actor is not None and not fnmatchcase(e.actor, actor):
            continue
        if action is not None and not fnmatchcase(e.action, action):
            continue
        t = _when(e.time)
        if (lo is not None and t < lo) or (hi is not None and t > hi):
            continue
        found.append(e)
    return found


# -- the registry copy ---------------------------------------------------------------------------------------------
# A repository (``--audit-repo REF``, ``$OCIART_AUDIT_REPO``) holds every line as an artifact tagged
# ``line-<number>`` (twelve digits: tags keep them from registry garbage collection) and the tag ``head`` at the
# newest one. Each line artifact: artifactType LINE_ARTIFACT_TYPE, empty config, one layer (the line's bytes without
# newline, LINE_MEDIA_TYPE), annotations A_SEQUENCE (line number), A_HASH (sha256 hex of the line), A_PREV (its
# ``prev``). Lines are pushed while the local file's lock is held, so the copy has the file's order; ``line-<n>`` is
# created with a compare-and-set from absent and ``head`` moved with one from the previous head, so two logs cannot
# interleave in one copy. The local file can then not be cut short unnoticed: :func:`check_registry` compares it
# with the registry's head.
REPO_ENV = "OCIART_AUDIT_REPO"
LINE_ARTIFACT_TYPE = "application/vnd.ociart.audit.line.v1"
LINE_MEDIA_TYPE = "application/vnd.ociart.audit.line.v1+json"
HEAD_TAG = "head"
A_SEQUENCE = "dev.ociart.audit.sequence"
A_HASH = "dev.ociart.audit.hash"
A_PREV = "dev.ociart.audit.prev"


def line_tag(n: int) -> str:
    return f"line-{n:012d}"


class RegistryHead(BaseModel):
    """The registry copy's newest line: its number and hash, and the manifest holding it."""

    reference: str
    manifest: str
    sequence: int
    hash: str


class RegistryCheck(BaseModel):
    """:func:`check_registry`: the local chain agrees with the registry copy up to the registry's head."""

    path: str
    lines: int
    head: str
    registry: str
    registry_sequence: int
    registry_head: str
    #: Local lines the registry copy does not have yet (its pushes failed, or it was configured later).
    not_in_registry: int


@contextmanager
def _registry(repo: str) -> Iterator[tuple[Any, str]]:
    """(target, repository) of the audit repository, through a client with the usual credential lookup."""
    from .client import Client

    with Client() as client:
        r = client.ref(repo)
        if r.tag or r.digest:
            from .errors import UsageError

            raise UsageError(f"audit repository {repo}: name a repository, without tag or digest")
        yield client.target(r), r.repository


def _head(target: Any, repo: str, where: str) -> RegistryHead | None:
    from .errors import InvalidContentError, NotFoundError
    from .oci import Manifest

    try:
        desc = target.resolve(repo, HEAD_TAG)
    except NotFoundError:
        return None
    node = target.get_manifest(repo, desc.digest).parse()
    ann = (node.annotations or {}) if isinstance(node, Manifest) else {}
    if not isinstance(node, Manifest) or node.artifactType != LINE_ARTIFACT_TYPE or A_SEQUENCE not in ann \
            or A_HASH not in ann or not ann[A_SEQUENCE].isdigit():
        raise InvalidContentError(f"{where}:{HEAD_TAG} is not an audit line artifact")
    return RegistryHead(reference=f"{where}:{HEAD_TAG}", manifest=desc.digest, sequence=int(ann[A_SEQUENCE]),
                        hash=ann[A_HASH])


def registry_head(repo: str) -> RegistryHead | None:
    """The registry copy's head (None: nothing copied yet)."""
    with _registry(repo) as (target, name):
        return _head(target, name, repo)


def _push_line(target: Any, repo: str, n: int, raw: bytes, prev: str, head: RegistryHead | None,
               where: str) -> RegistryHead:
    from .oci import Content, Descriptor
    from .targets.base import ABSENT, bytes_opener
    from .transfer import push_manifest

    blob = Content.of(raw, LINE_MEDIA_TYPE)
    layer = Descriptor(mediaType=LINE_MEDIA_TYPE, digest=blob.digest, size=blob.size)
    with target.writing():
        target.push_blob_stream(repo, layer, bytes_opener(raw))
        content = push_manifest(target, repo, artifact_type=LINE_ARTIFACT_TYPE, layers=[layer],
                                annotations={A_SEQUENCE: str(n), A_HASH: line_hash(raw), A_PREV: prev})
    desc = content.descriptor()
    target.tag(repo, line_tag(n), desc, ABSENT)
    target.tag(repo, HEAD_TAG, desc, head.manifest if head is not None else ABSENT)
    return RegistryHead(reference=f"{where}:{HEAD_TAG}", manifest=desc.digest, sequence=n, hash=line_hash(raw))


def _copy_to_registry(p: Path, repo: str, raw: bytes, prev: str) -> None:
    """Give the registry copy the line just appended (and any earlier ones it lacks); failures are warnings."""
    from .errors import OciartError

    try:
        with _registry(repo) as (target, name):
            head = _head(target, name, repo)
            if (head is None and prev == GENESIS) or (head is not None and head.hash == prev):
                _push_line(target, name, 1 if head is None else head.sequence + 1, raw, prev, head, repo)
            else:
                _catch_up(p, target, name, head, repo)
    except OciartError as exc:
        log.warning("audit copy in %s not written: %s (the local log has the line)", repo, exc)


def _catch_up(p: Path, target: Any, repo: str, head: RegistryHead | None, where: str) -> RegistryHead | None:
    """Push every local line after the registry's head; refuse when the local file disagrees with the head."""
    start = 0 if head is None else head.sequence
    prev = GENESIS
    for n, raw in _lines(p):
        if n == start and head is not None and line_hash(raw) != head.hash:
            raise VerificationError(f"audit log {p}: line {n} differs from the registry copy's head in {where}")
        if n > start:
            head = _push_line(target, repo, n, raw, prev, head, where)
        prev = line_hash(raw)
    if head is not None and prev == GENESIS:
        raise VerificationError(f"audit log {p} is empty but the registry copy in {where} has "
                                f"{head.sequence} line(s): truncated")
    return head


def sync_registry(repo: str, path: Path | None = None) -> RegistryHead | None:
    """Push the local lines the registry copy lacks (after checking the local chain against its head)."""
    p = path or default_path()
    with _registry(repo) as (target, name):
        head = _head(target, name, repo)
        if head is not None:
            check_registry(repo, p)
        return _catch_up(p, target, name, head, repo) if p.exists() else head


def check_registry(repo: str, path: Path | None = None) -> RegistryCheck:
    """Verify the local chain (:func:`verify`) and compare it with the registry copy's head: the local line with the
    head's number must hash to the head. A local file with fewer lines was truncated; one whose line differs was
    rewritten. Raises :class:`VerificationError` naming which."""
    p = path or default_path()
    head = registry_head(repo)
    if head is None:
        raise VerificationError(f"audit repository {repo} has no {HEAD_TAG}: nothing was copied there")
    if not p.exists():
        raise VerificationError(f"audit log {p} does not exist, but the registry copy in {repo} has "
                                f"{head.sequence} line(s): truncated")
    report = verify(p)
    if report.lines < head.sequence:
        raise VerificationError(
            f"audit log {p}: truncated: it has {report.lines} line(s), the registry copy in {repo} has "
            f"{head.sequence} (its head is line {head.sequence}, sha256 {head.hash})")
    for n, raw in _lines(p):
        if n == head.sequence:
            if line_hash(raw) != head.hash:
                raise VerificationError(
                    f"audit log {p}: line {n} differs from the registry copy's head in {repo} (sha256 {head.hash}): "
                    "the log was rewritten from there or cut short and appended to")
            break
    return RegistryCheck(path=str(p), lines=report.lines, head=report.head, registry=repo,
                         registry_sequence=head.sequence, registry_head=head.hash,
                         not_in_registry=report.lines - head.sequence)
