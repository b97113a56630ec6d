"""Deterministic tar layers (written as a stream) and safe extraction (docs/spec.md §5).

Writer: regular files only, sorted by UTF-8 path, names relative with ``/``; mtime 0, uid/gid 0, empty
uname/gname; mode 0755 when the owner-executable bit is set, else 0644; POSIX pax format (pax records only
where ustar cannot hold a name or size); two zero blocks, padded to a 10240-byte record — the bytes Python's
``tarfile`` writes for the same members.

Reader: every member is checked before anything is written. Refused, with one error naming the member: absolute
names, ``..`` components, symlinks and hardlinks, device files and FIFOs, sparse files (``tarfile`` would expand
them: 10 KiB of archive restoring as 1 GiB), and names that collide. What one layer may write is bounded
(:class:`Budget`): the sum of the member sizes is checked against it before the first byte is written.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from ..cache import StatKey, check_unchanged
from ..errors import TooLargeError, UnsafePathError, UsageError
from ..fsutil import write_all
from ..oci.digest import Digester
from ..safepath import NameCheck

BLOCK = 512
RECORD = 20 * BLOCK
FLUSH = 1 << 20


@dataclass(frozen=True)
class TarMember:
    path: str | Path | None  # on disk (None: read from ``source``)
    name: str  # in the archive
    size: int
    mode: int  # 0o755 or 0o644
    #: Another source of the member's bytes than ``path``: called once, yields exactly ``size`` bytes (convert
    #: streams a registry blob through it).
    source: Callable[[], AbstractContextManager[Iterator[bytes]]] | None = None
    #: The walk's stat of ``path``: once read, the open file must still match it
    #: (:func:`~ociart.cache.check_unchanged`), so the bytes sent are the bytes that stat describes.
    stat: StatKey | None = None


def normal_mode(st_mode: int) -> int:
    return 0o755 if st_mode & 0o100 else 0o644


def _ustar_header(name: bytes, size: int, mode: int) -> bytes:
    """The 512-byte ustar header ``tarfile`` writes for a regular file with our constant fields (ASCII name that
    fits the 100-byte field, size under 8 GiB); about 5x faster than ``TarInfo.tobuf``."""
    parts = [
        name.ljust(100, b"\0"),
        b"%07o\0" % mode, b"0000000\0", b"0000000\0",  # mode, uid, gid
        b"%011o\0" % size, b"00000000000\0",  # size, mtime
        b"        ", b"0", b"\0" * 100,  # checksum placeholder, typeflag, linkname
        b"ustar\x0000", b"\0" * 32, b"\0" * 32,  # magic + version, uname, gname
        b"\0" * 16, b"\0" * 155,  # devmajor, devminor (empty for regular files), prefix
    ]
    header = b"".join(parts).ljust(BLOCK, b"\0")
    chksum = sum(header)
    return header[:148] + b"%06o\0 " % chksum + header[156:]


def _header(m: TarMember) -> bytes:
    raw = m.name.encode("utf-8", "surrogateescape")
    if len(raw) < 100 and raw.isascii() and m.size < 0o77777777777:
        return _ustar_header(raw, m.size, m.mode)
    info = tarfile.TarInfo(m.name)
    info.size, info.mode, info.mtime, info.type = m.size, m.mode, 0, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def iter_tar(members: Iterable[TarMember]) -> Iterator[bytes]:
    """Stream a deterministic tar of ``members`` (in the given order) in pieces of about 1 MiB. ``members`` may be
    produced lazily: each one is read whole before the next is asked for (convert re-tars a stream this way)."""
    buf = bytearray()
    total = 0
    for m in members:
        buf += _header(m)
        seen = 0
        with _open_member(m) as chunks:
            for chunk in chunks:
                seen += len(chunk)
                if seen > m.size:
                    break
                buf += chunk
                if len(buf) >= FLUSH:
                    total += len(buf)
                    yield bytes(buf)
                    buf.clear()
        if seen != m.size:
            raise UsageError(f"{m.path or m.name} changed while it was being pushed (size {m.size} -> {seen} bytes); "
                             "nothing was published: push again once it is no longer written to")
        pad = -m.size % BLOCK
        buf += b"\0" * pad
        if len(buf) >= FLUSH:
            total += len(buf)
            yield bytes(buf)
            buf.clear()
    buf += b"\0" * (2 * BLOCK)
    end = total + len(buf)
    buf += b"\0" * (-end % RECORD)
    yield bytes(buf)


@contextmanager
def _open_member(m: TarMember) -> Iterator[Iterator[bytes]]:
    if m.source is not None:
        with m.source() as chunks:
            yield chunks
        return
    assert m.path is not None
    try:
        fd = os.open(m.path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"{m.path} vanished while it was being pushed; nothing was published") from None
    try:
        yield _read_fd(fd, m)
    finally:
        os.close(fd)


def _read_fd(fd: int, m: TarMember) -> Iterator[bytes]:
    """The file's bytes, read with requests sized to what is left (a 4 KiB file is one ``read`` of 4 KiB, not of
    a 1 MiB buffer) and one more to see the end; then the open file is checked against ``m.stat``."""
    left = m.size
    while chunk := os.read(fd, min(FLUSH, max(left, 0) + 1)):
        left -= len(chunk)
        yield chunk
    if m.stat is not None:
        assert m.path is not None
        check_unchanged(m.path, m.stat, os.fstat(fd))


# -- reading ----------------------------------------------------------------------------------------
@dataclass(slots=True)
class Header:
    """One archive member as the reader needs it; ``kind``: ``f`` regular file, ``d`` directory, ``l`` symlink,
    ``h`` hardlink, ``s`` sparse file, ``c`` device or FIFO, ``?`` anything else (``type`` says what)."""

    name: str  # as in the archive (uncleaned)
    kind: str
    size: int
    mode: int
    offset: int = -1  # of the data in an uncompressed archive; -1: read through ``info``
    linkname: str = ""
    type: bytes = b"0"
    info: tarfile.TarInfo | None = None


def _from_info(m: tarfile.TarInfo) -> Header:
    kind = ("s" if m.issparse() else "f" if m.isreg() else "d" if m.isdir() else "l" if m.issym() else
            "h" if m.islnk() else "c" if (m.ischr() or m.isblk() or m.isfifo() or m.isdev()) else "?")
    return Header(m.name, kind, m.size, m.mode, -1, m.linkname, m.type, m)


_KINDS = {b"0": "f", b"\0": "f", b"5": "d", b"2": "l", b"1": "h", b"3": "c", b"4": "c", b"6": "c"}
ZERO_BLOCK = bytes(BLOCK)
#: The largest pax extended header the fast reader parses (longer ones go through ``tarfile``).
PAX_MAX = 1 << 16


def _nts(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _octal(field: bytes) -> int:
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def _pax(buf: bytes) -> dict[str, str] | None:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(buf):
        sp = buf.find(b" ", pos)
        if sp < 0 or not buf[pos:sp].isdigit():
            return None
        n = int(buf[pos:sp])
        if n <= sp - pos or pos + n > len(buf) or buf[pos + n - 1] != 0x0A:
            return None
        key, eq, value = buf[sp + 1:pos + n - 1].partition(b"=")
        if not eq or key == b"hdrcharset" or key.startswith(b"GNU."):
            return None  # other encodings, GNU sparse maps: ``tarfile``'s business
        if key in (b"path", b"linkpath", b"size"):
            out[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += n
    return out


def scan(fd: int) -> list[Header] | None:
    """The members of an uncompressed POSIX (ustar/pax) archive, read header by header with ``pread``: what
    ``tarfile`` would list, without its per-member objects. None for anything else (GNU or v7 headers, global
    pax headers, base-256 numbers, a bad checksum, a truncated member), which :class:`Archive` then reads with
    ``tarfile``, errors included."""
    end = os.fstat(fd).st_size
    out: list[Header] = []
    pos = 0
    pax: dict[str, str] | None = None
    try:
        while pos < end:
            hdr = os.pread(fd, BLOCK, pos)
            if len(hdr) < BLOCK:
                return None
            if hdr == ZERO_BLOCK:
                return out if out and pax is None else None
            if hdr[257:265] != b"ustar\x0000" or hdr[124] & 0x80 or \
                    _octal(hdr[148:156]) != sum(hdr) - sum(hdr[148:156]) + 256:
                return None
            t = hdr[156:157]
            size = _octal(hdr[124:136])
            data = pos + BLOCK
            if t == b"x":
                if size > PAX_MAX or pax is not None:
                    return None
                pax = _pax(os.pread(fd, size, data))
                if pax is None:
                    return None
                pos = data + size + (-size % BLOCK)
                continue
            kind = _KINDS.get(t)
            if kind is None:
                return None
            name, prefix = _nts(hdr[0:100]), _nts(hdr[345:500])
            if prefix:
                name = prefix + "/" + name
            linkname = _nts(hdr[157:257])
            if pax is not None:
                name = pax.get("path", name)
                linkname = pax.get("linkpath", linkname)
                size = int(pax.get("size", size))
                pax = None
            if t == b"\0" and name.endswith("/"):
                kind = "d"
            if kind == "d":
                name = name.rstrip("/")  # as tarfile names directories
            if kind != "f":
                out.append(Header(name, kind, size, _octal(hdr[100:108]), -1, linkname, t))
                pos = data
                continue
            if data + size > end:
                return None
            out.append(Header(name, kind, size, _octal(hdr[100:108]), data, linkname, t))
            pos = data + size + (-size % BLOCK)
    except ValueError:
        return None
    return out if out and pax is None else None


class Archive:
    """A tar layer opened for reading: :attr:`members` lists every member (headers only), :meth:`chunks` reads one
    member's bytes. Uncompressed POSIX archives (what :func:`iter_tar` writes) are read by :func:`scan`; gzip and
    anything :func:`scan` declines go through ``tarfile``. ``tarfile.TarError`` escapes as :class:`UnsafePathError`
    naming ``what``."""

    def __init__(self, path: Path, media_type: str, what: str) -> None:
        self.what = what
        self._tf: tarfile.TarFile | None = None
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            mode = tar_mode(media_type)
            members = scan(self._fd) if mode == "r:" else None
            if members is None:
                self._tf = tarfile.open(path, mode)
                members = [_from_info(m) for m in self._tf.getmembers()]
        except tarfile.TarError as exc:
            self.close()
            raise UnsafePathError(f"{what}: not a valid tar archive ({exc})") from None
        except BaseException:
            self.close()
            raise
        self.members = members

    def chunks(self, m: Header) -> Iterator[bytes]:
        """Exactly ``m.size`` bytes, in pieces of at most :data:`FLUSH` (a small member of an uncompressed archive:
        one ``pread``)."""
        if m.info is None:
            pos, left = m.offset, m.size
            while left:
                chunk = os.pread(self._fd, min(left, FLUSH), pos)
                if not chunk:
                    raise UnsafePathError(f"{self.what}: tar member {m.name!r} is cut short")
                pos += len(chunk)
                left -= len(chunk)
                yield chunk
            return
        assert self._tf is not None
        try:
            src = self._tf.extractfile(m.info)
            assert src is not None
            while chunk := src.read(FLUSH):
                yield chunk
        except tarfile.TarError as exc:
            raise UnsafePathError(f"{self.what}: not a valid tar archive ({exc})") from None

    def close(self) -> None:
        if self._tf is not None:
            self._tf.close()
            self._tf = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- extraction -------------------------------------------------------------------------------------
def _clean_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if "/." in name:  # inner ``.`` components: ``a/./b`` is ``a/b``
        name = "/".join(p for p in name.split("/") if p != ".")
    return name


def check_members(members: Sequence[Header], what: str) -> None:
    seen: dict[str, bool] = {}
    fits = NameCheck()
    for m in members:
        raw = m.name
        name = _clean_name(raw)
        isdir = m.kind == "d"
        if not name or name == ".":
            if isdir:
                continue
            raise UnsafePathError(f"{what}: tar member {raw!r} has no name")
        if raw.startswith("/"):
            raise UnsafePathError(f"{what}: tar member {raw!r} is an absolute path")
        if "\\" in name or "\x00" in name or "//" in name or name == ".." or name.startswith("../") or \
                name.endswith("/..") or "/../" in name:
            raise UnsafePathError(f"{what}: tar member {raw!r} would escape the target directory")
        if m.kind in ("l", "h"):
            kind = "symlink" if m.kind == "l" else "hardlink"
            target = m.linkname
            escapes = target.startswith("/") or ".." in target.split("/")
            why = "leaves the target directory" if escapes else "is not allowed in ociart layers"
            raise UnsafePathError(f"{what}: tar member {raw!r} is a {kind} to {target!r}, which {why}")
        if m.kind == "s":
            raise UnsafePathError(f"{what}: tar member {raw!r} is a sparse file, which ociart does not restore")
        if m.kind == "c":
            raise UnsafePathError(f"{what}: tar member {raw!r} is a device or FIFO")
        if m.kind not in ("f", "d"):
            raise UnsafePathError(f"{what}: tar member {raw!r} has unsupported type {m.type!r}")
        fits(name, f"{what}: tar member")
        # a name may not repeat, nor be both a file and a directory (file 'a' then 'a/b')
        cut = name.find("/")
        while cut >= 0:
            parent = name[:cut]
            if seen.get(parent) is False:
                raise UnsafePathError(f"{what}: tar member {raw!r} collides with the file {parent!r}")
            cut = name.find("/", cut + 1)
        if name in seen and not (isdir and seen[name]):
            raise UnsafePathError(f"{what}: tar member {raw!r} appears twice (colliding names)")
        seen[name] = isdir


def tar_mode(media_type: str) -> Literal["r:gz", "r:"]:
    if media_type.endswith(("+gzip", ".tar.gzip")):  # OCI, Docker (application/vnd.docker.image.rootfs.diff.tar.gzip)
        return "r:gz"
    if media_type.endswith(("+zstd", ".tar.zstd")):
        raise UsageError(f"layer type {media_type}: zstd-compressed tar layers are not supported")
    return "r:"


class Budget:
    """Bytes one pull may still write; :meth:`take` raises :class:`TooLargeError` once the bound is crossed."""

    def __init__(self, limit: int, why: str) -> None:
        self.limit = limit
        self.used = 0
        self.why = why  # what the limit is, for the error ("the sizes the artifact declares", "--max-size")

    def take(self, n: int, what: str) -> None:
        self.used += n
        if self.used > self.limit:
            raise TooLargeError(f"{what}: restoring it would write more than {self.limit} bytes ({self.why}); "
                                f"pass --max-size (OCIART_MAX_SIZE) to allow more")


DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def extract(tar_path: Path, dest: Path, media_type: str, what: str,
            want: Callable[[str], bool] = lambda _: True, budget: Budget | None = None,
            layer_limit: int | None = None,
            scope: Callable[[str], bool] | None = None) -> list[tuple[str, int, int, str]]:
    """Extract the regular files ``want`` selects into ``dest`` (a directory of the caller's, fresh or holding
    other layers' members: a name already there is a collision); returns (name, size, mode, sha256 digest) in
    archive order, each file hashed as it is written.

    ``scope`` (image layers: the mount path) limits the archive to the members it accepts: the others (a base
    image's system files, symlinks and devices included) are neither checked nor written.

    All members are validated first; files are created fresh (``O_EXCL``, relative to their directory's
    descriptor). ``layer_limit`` bounds this layer's members and ``budget`` the whole pull: both are checked
    against the sizes the headers declare before anything is written (the reader reads exactly those sizes).
    """
    out: list[tuple[str, int, int, str]] = []
    with Archive(tar_path, media_type, what) as ar:
        members = _scoped(ar.members, scope)
        check_members(members, what)
        chosen = [m for m in members if m.kind == "f" and want(_clean_name(m.name))]
        total = sum(m.size for m in chosen)
        if layer_limit is not None and total > layer_limit:
            raise TooLargeError(f"{what}: its files add up to {total} bytes, more than the {layer_limit} this "
                                f"layer may expand to; pass --max-size (OCIART_MAX_SIZE) to allow more")
        if budget is not None:
            budget.take(total, what)
        fits = NameCheck(dest)
        base = str(dest)
        dirs: dict[str, int] = {}
        try:
            for m in chosen:
                name = _clean_name(m.name)
                fits(name, f"{what}: tar member")
                parent, _, leaf = name.rpartition("/")
                mode = normal_mode(m.mode)
                h = Digester()
                try:
                    dfd = dirs.get(parent)
                    if dfd is None:
                        path = os.path.join(base, parent) if parent else base
                        os.makedirs(path, exist_ok=True)
                        dfd = dirs[parent] = os.open(path, DIR_FLAGS)
                    fd = os.open(leaf, NEW_FILE, mode, dir_fd=dfd)
                except (FileExistsError, NotADirectoryError, IsADirectoryError):
                    # ``dest`` may hold other layers' members (pull extracts them all into one tree); within this
                    # layer check_members already refused every repeat and file/directory clash
                    raise UnsafePathError(f"{what}: {name!r} is also in another layer (colliding names)") from None
                try:
                    for chunk in ar.chunks(m):
                        h.update(chunk)
                        write_all(fd, chunk)
                finally:
                    os.close(fd)
                out.append((name, m.size, mode, h.digest))
        finally:
            for dfd in dirs.values():
                os.close(dfd)
    return out


def member_digests(tar_path: Path, media_type: str, what: str, want: Callable[[str], bool] = lambda _: True,
                   scope: Callable[[str], bool] | None = None) -> Iterator[tuple[str, str, int]]:
    """(name, sha256 digest, size) of each regular member ``want`` selects, streamed; the archive (the members in
    ``scope``) is validated first."""
    with Archive(tar_path, media_type, what) as ar:
        members = _scoped(ar.members, scope)
        check_members(members, what)
        for m in members:
            if m.kind != "f" or not want(_clean_name(m.name)):
                continue
            h = Digester()
            for chunk in ar.chunks(m):
                h.update(chunk)
            yield _clean_name(m.name), h.digest, m.size


def _scoped(members: list[Header], scope: Callable[[str], bool] | None) -> list[Header]:
    return members if scope is None else [m for m in members if scope(_clean_name(m.name))]


#: image-spec layer.md: ``.wh.NAME`` deletes NAME of the layers below; ``.wh..wh..opq`` empties its directory.
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def changeset(tar_path: Path, media_type: str, what: str) -> Iterator[tuple[Literal["file", "delete", "opaque"], str]]:
    """What an image layer changes, in archive order: ``("file", name)`` for each regular file, ``("delete", name)``
    for each whiteout and ``("opaque", directory)`` for each opaque whiteout (names cleaned, ``""`` the root).
    Only headers are read; nothing is validated here (the extraction checks what it writes)."""
    with Archive(tar_path, media_type, what) as ar:
        for m in ar.members:
            name = _clean_name(m.name)
            if name in ("", "."):
                continue
            parent, _, base = name.rpartition("/")
            if base == OPAQUE:
                yield "opaque", parent
            elif base.startswith(WHITEOUT):
                yield "delete", (parent + "/" if parent else "") + base[len(WHITEOUT):]
            elif m.kind == "f":
                yield "file", name


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (``tarfile`` stream mode reads it)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._buf = nxt
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def restream(open_chunks: Callable[[], AbstractContextManager[Iterator[bytes]]], media_type: str, what: str,
             prefix: str) -> Iterator[TarMember]:
    """The regular members of a tar stream as :class:`TarMember` s named ``prefix/<name>`` whose bytes are read from
    the stream, in archive order, for :func:`iter_tar` to write again (each is read whole before the next is
    produced). Every member passes :func:`check_members`; the stream is read to its end, so a digest check in
    ``open_chunks`` runs."""
    gz = tar_mode(media_type) == "r:gz"
    with open_chunks() as chunks:
        reader = io.BufferedReader(_ChunkReader(chunks), FLUSH)
        names: set[str] = set()
        try:
            with tarfile.open(fileobj=reader, mode="r|gz" if gz else "r|") as tf:
                for m in tf:
                    check_members([_from_info(m)], what)
                    if not m.isreg():
                        continue
                    if _clean_name(m.name) in names:
                        raise UnsafePathError(f"{what}: tar member {m.name!r} appears twice (colliding names)")
                    names.add(_clean_name(m.name))
                    src = tf.extractfile(m)
                    assert src is not None

                    @contextmanager
                    def body(src: IO[bytes] = src) -> Iterator[Iterator[bytes]]:
                        yield iter(lambda: src.read(FLUSH), b"")

                    yield TarMember(None, f"{prefix}/{_clean_name(m.name)}", m.size, normal_mode(m.mode),
                                    source=body)
        except tarfile.TarError as exc:
            raise UnsafePathError(f"{what}: not a valid tar archive ({exc})") from None
        while reader.read(FLUSH):
            pass
