"""Many small files (issue 12): the tar reader that skips ``tarfile`` for our own format, and the grouping of small
directories into fewer tar layers (docs/spec.md §2.2).

The reader is checked against ``tarfile`` itself on archives written by ociart, by ``tarfile`` in every format and
by GNU tar; the grouping on the plans it makes and on a real push and pull through distribution 2.8.2.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from helpers import make_tar, tree_digest

import ociart
from ociart.errors import UnsafePathError
from ociart.oci import Manifest
from ociart.packaging.kinds import Kind
from ociart.packaging.pack import FileEntry, _groups, _tar_bytes, plan
from ociart.packaging.tarlayer import Archive, TarMember, extract, iter_tar, scan

A_FILEPATH = "org.cncf.model.filepath"
DATASET_TAR = "application/vnd.cncf.model.dataset.v1.tar"


def _listing_by_tarfile(path: Path, mode: str = "r:") -> list[tuple[str, str, int, int, str]]:
    def kind(m: tarfile.TarInfo) -> str:
        return ("s" if m.issparse() else "f" if m.isreg() else "d" if m.isdir() else "l" if m.issym() else
                "h" if m.islnk() else "c" if (m.ischr() or m.isblk() or m.isfifo()) else "?")

    with tarfile.open(path, mode) as tf:
        return [(m.name, kind(m), m.size, m.mode, m.linkname) for m in tf.getmembers()]


def _listing(ar: Archive) -> list[tuple[str, str, int, int, str]]:
    return [(m.name, m.kind, m.size, m.mode, m.linkname) for m in ar.members]


def _contents(ar: Archive) -> dict[str, bytes]:
    return {m.name: b"".join(ar.chunks(m)) for m in ar.members if m.kind == "f"}


def _write_tarfile(path: Path, fmt: int, members: list[tuple[str, bytes | None]]) -> None:
    """A tar written by ``tarfile`` in ``fmt``; ``None`` data makes a directory entry."""
    path.write_bytes(make_tar(members, fmt, mode=0o640))


LONG = "d" * 60 + "/" + "e" * 60 + "/file.bin"  # > 100 bytes: ustar splits it into prefix + name, pax records it
NAMES = [("a.txt", b"alpha"), ("dir", None), ("dir/b.bin", os.urandom(1000)), (LONG, b"long"),
         ("ünïcode/ñame.txt", b"utf8"), ("empty", b""), ("x" * 99, b"99")]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_reader_lists_what_tarfile_lists(tmp_path: Path, fmt: int) -> None:
    names = NAMES if fmt == tarfile.PAX_FORMAT else [(n, d) for n, d in NAMES if n.isascii()]
    path = tmp_path / "t.tar"
    _write_tarfile(path, fmt, names)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert scan(fd) is not None  # POSIX archives take the fast path
    finally:
        os.close(fd)
    with Archive(path, DATASET_TAR, "layer") as ar:
        assert _listing(ar) == _listing_by_tarfile(path)
        assert _contents(ar) == {n: d for n, d in names if d is not None}


def test_reader_reads_ociarts_own_tars_without_tarfile(tmp_path: Path) -> None:
    files = []
    for i, name in enumerate(["a", "b/c.bin", "b/" + "long" * 40, "exec.sh", "ü/ß"]):
        p = tmp_path / "src" / f"f{i}"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(os.urandom(i * 700))
        files.append(TarMember(p, name, i * 700, 0o755 if name.endswith(".sh") else 0o644))
    path = tmp_path / "t.tar"
    path.write_bytes(b"".join(iter_tar(files)))
    fd = os.open(path, os.O_RDONLY)
    try:
        headers = scan(fd)
    finally:
        os.close(fd)
    assert headers is not None and [h.name for h in headers] == [m.name for m in files]
    with Archive(path, DATASET_TAR, "layer") as ar:
        assert _listing(ar) == _listing_by_tarfile(path)
        assert _contents(ar) == {m.name: Path(m.path).read_bytes() for m in files}  # type: ignore[arg-type]


def test_gnu_tar_and_gzip_go_through_tarfile(tmp_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_bytes(b"gnu")
    (src / ("n" * 120)).write_bytes(b"long gnu name")  # GNU format: a ././@LongLink member
    gnu = tmp_path / "gnu.tar"
    subprocess.run(["tar", "--format=gnu", "-cf", str(gnu), "-C", str(src), "."], check=True)
    fd = os.open(gnu, os.O_RDONLY)
    try:
        assert scan(fd) is None  # not POSIX: left to tarfile
    finally:
        os.close(fd)
    with Archive(gnu, DATASET_TAR, "layer") as ar:
        assert _listing(ar) == _listing_by_tarfile(gnu)
        assert _contents(ar)["./" + "n" * 120] == b"long gnu name"
    tgz = tmp_path / "t.tar.gz"
    subprocess.run(["tar", "-czf", str(tgz), "-C", str(src), "."], check=True)
    with Archive(tgz, DATASET_TAR + "+gzip", "layer") as ar:
        assert _listing(ar) == _listing_by_tarfile(tgz, "r:gz")
        assert _contents(ar)["./sub/f.txt"] == b"gnu"


def _bad_checksum(data: bytearray) -> None:
    data[148:156] = b"0000000\0"


def _truncated(data: bytearray) -> None:
    del data[700:]


@pytest.mark.parametrize("damage", [_bad_checksum, _truncated])
def test_damaged_archives_fail_as_tarfile_says(tmp_path: Path, damage: Any) -> None:
    path = tmp_path / "t.tar"
    _write_tarfile(path, tarfile.PAX_FORMAT, [("a.bin", os.urandom(2000)), ("b.bin", b"b")])
    data = bytearray(path.read_bytes())
    damage(data)
    path.write_bytes(bytes(data))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert scan(fd) is None
    finally:
        os.close(fd)
    with pytest.raises(UnsafePathError, match="layer: not a valid tar archive"):
        with Archive(path, DATASET_TAR, "layer") as ar:
            _contents(ar)


def test_fast_path_refuses_what_the_rules_refuse(tmp_path: Path) -> None:
    """Hostile members in a POSIX archive (the fast path) get the same one-line refusals, before anything is
    written."""
    cases = {"../up.txt": "would escape the target directory", "a//b": "would escape the target directory",
             "/abs.txt": "is an absolute path", "dup.txt": "appears twice"}
    for name, why in cases.items():
        path = tmp_path / "t.tar"
        members = [("ok.txt", b"ok"), (name, b"x")] + ([(name, b"y")] if name == "dup.txt" else [])
        _write_tarfile(path, tarfile.PAX_FORMAT, members)
        out = tmp_path / "out"
        out.mkdir()
        with pytest.raises(UnsafePathError, match=why):
            extract(path, out, DATASET_TAR, "layer")
        assert not any(out.iterdir()), name
        out.rmdir()
    path = tmp_path / "link.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("ln")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(UnsafePathError, match="is a symlink to '/etc/passwd', which leaves the target directory"):
        extract(path, tmp_path, DATASET_TAR, "layer")


def test_extract_hashes_what_it_writes(tmp_path: Path) -> None:
    path = tmp_path / "t.tar"
    names = [("d/a.bin", os.urandom(5000)), ("d/e/b.bin", os.urandom(3 << 20)), ("c", b"")]
    _write_tarfile(path, tarfile.PAX_FORMAT, names)
    out = tmp_path / "out"
    out.mkdir()
    got = extract(path, out, DATASET_TAR, "layer")
    assert [(n, s, m) for n, s, m, _ in got] == [(n, len(d), 0o644) for n, d in names]
    for (name, data), (_, _, _, digest) in zip(names, got, strict=True):
        assert (out / name).read_bytes() == data
        assert digest == "sha256:" + hashlib.sha256(data).hexdigest()


# -- grouping ------------------------------------------------------------------------------------------------
def _entries(sizes: dict[str, int]) -> list[FileEntry]:
    return [FileEntry(f"/x/{rel}", rel, size, 0o644, "dataset", False, (rel, 0, 0, size, 0, 0))
            for rel, size in sorted(sizes.items(), key=lambda kv: kv[0].encode())]


def _dirs_whole(groups: list[list[FileEntry]], cap: int) -> None:
    """Every directory whose files fit in ``cap`` is in exactly one group."""
    where: dict[str, set[int]] = {}
    size: dict[str, int] = {}
    for i, g in enumerate(groups):
        for e in g:
            parts = e.rel.split("/")[:-1]
            for k in range(1, len(parts) + 1):
                d = "/".join(parts[:k])
                where.setdefault(d, set()).add(i)
                size[d] = size.get(d, 0) + _tar_bytes(e)
    for d, gs in where.items():
        if size[d] <= cap:
            assert len(gs) == 1, (d, gs)


def test_small_directories_share_layers_and_stay_whole() -> None:
    cap = 64 * 1024
    sizes = {f"part-{d:03d}/{i:03d}.bin": 1000 for d in range(40) for i in range(10)}  # 40 dirs of ~15 KiB
    groups = _groups(_entries(sizes), cap)
    assert 3 <= len(groups) < 40
    assert sum(len(g) for g in groups) == 400
    assert all(sum(_tar_bytes(e) for e in g) <= cap for g in groups)
    _dirs_whole(groups, cap)
    flat = [e.rel for g in groups for e in g]
    assert flat == sorted(flat, key=str.encode)  # groups are runs of the byte order
    assert _groups(_entries(sizes), cap) == groups  # deterministic


def test_large_directories_are_cut_inside() -> None:
    cap = 64 * 1024
    sizes = {f"big/{i:04d}.bin": 3000 for i in range(200)} | {"small/a": 10, "small/b": 10, "top.txt": 5}
    groups = _groups(_entries(sizes), cap)
    big = [g for g in groups if g[0].rel.startswith("big/")]
    assert len(big) >= 200 * _tar_bytes(_entries({"x": 3000})[0]) // cap
    assert all(sum(_tar_bytes(e) for e in g) <= cap for g in groups)
    assert ["small/a", "small/b", "top.txt"] in [[e.rel for e in g] for g in groups]


def test_an_edit_moves_only_nearby_boundaries() -> None:
    """Cuts are anchored on names: growing one directory regroups its neighbourhood, not every group after it."""
    cap = 64 * 1024
    sizes = {f"part-{d:03d}/{i:02d}.bin": 1000 for d in range(200) for i in range(8)}
    before = [[e.rel for e in g] for g in _groups(_entries(sizes), cap)]
    sizes["part-020/00.bin"] = 9000
    after = [[e.rel for e in g] for g in _groups(_entries(sizes), cap)]
    same = [g for g in after if g in before]
    assert len(before) >= 10
    assert len(after) - len(same) <= 3, (len(before), len(after), len(same))


def test_plan_names_the_common_directory(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for d in ("train/a", "train/b", "val"):
        (root / d).mkdir(parents=True)
        for i in range(3):
            (root / d / f"{i}.csv").write_bytes(b"1,2\n" * 10)
    (root / "README.md").write_bytes(b"# data\n")
    p = plan(root, Kind.DATASET)
    tars = [(lp.filepath, [e.rel for e in lp.files]) for lp in p.layers if lp.tar]
    assert tars == [(".", ["train/a/0.csv", "train/a/1.csv", "train/a/2.csv", "train/b/0.csv", "train/b/1.csv",
                           "train/b/2.csv", "val/0.csv", "val/1.csv", "val/2.csv"])]
    raws = [lp.filepath for lp in p.layers if not lp.tar]
    assert raws == ["README.md"]  # the only doc: a raw layer
    assert plan(root / "train", Kind.DATASET).layers[0].filepath == "."
    only_a = [lp for lp in plan(root, Kind.DATASET, group_bytes=2048).layers if lp.tar]
    assert [lp.filepath for lp in only_a] == ["train/a", "train/b", "val"]


def test_many_small_files_round_trip_in_few_layers(registry: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """2,000 files in 100 directories, over a group's cap (lowered to 2 MiB here): a few tar layers instead of 100,
    pulled back byte for byte; a second push with one file changed re-sends one layer."""
    monkeypatch.setattr("ociart.packaging.pack.GROUP_BYTES", 2 << 20)
    from ociart.packaging import pack

    src = tmp_path / "ds"
    total = 0
    for d in range(100):
        (src / f"part-{d:03d}").mkdir(parents=True)
        for i in range(20):
            (src / f"part-{d:03d}" / f"{i:02d}.bin").write_bytes(os.urandom(4096 + d))
            total += 512 + 4096 + d + (-(4096 + d) % 512)
    assert total > pack.GROUP_BYTES
    ref = f"{registry.host}/small/many:v1"
    with ociart.Client(plain_http=True) as c:
        desc = c.push(ref, [str(src)], kind="dataset")
        manifest = Manifest.model_validate_json(c.manifest(ref)[1].data)
        tars = [x for x in manifest.layers if x.mediaType == DATASET_TAR]
        assert len(tars) == len(manifest.layers) and 2 <= len(tars) <= total // (pack.GROUP_BYTES // 4) + 1
        res = c.pull(ref, str(tmp_path / "out"))
        assert len(res.files) == 2000 and res.digest == desc.digest
    assert tree_digest(tmp_path / "out") == tree_digest(src)
    (src / "part-050" / "07.bin").write_bytes(os.urandom(4096))
    with ociart.Client(plain_http=True) as c:
        c.push(f"{registry.host}/small/many:v2", [str(src)], kind="dataset")
        after = Manifest.model_validate_json(c.manifest(f"{registry.host}/small/many:v2")[1].data)
    assert len({x.digest for x in after.layers} - {x.digest for x in manifest.layers}) == 1


# -- whole directories into place ------------------------------------------------------------------------------
def _tree_of_dirs(root: Path, dirs: int, files: int) -> None:
    for d in range(dirs):
        (root / f"part-{d:02d}").mkdir(parents=True)
        for i in range(files):
            (root / f"part-{d:02d}" / f"{i:02d}.csv").write_bytes(os.urandom(300 + i))


def test_new_directories_move_whole_and_existing_ones_file_by_file(tmp_path: Path, monkeypatch: Any) -> None:
    """Directories the output lacks arrive in one rename each; into a directory that exists (here with a file of
    its own) the pulled files move one by one, and the file already there stays."""
    import ociart.packaging.unpack as unpack_mod

    src = tmp_path / "src"
    _tree_of_dirs(src, 6, 5)
    (src / "big.bin").write_bytes(os.urandom(2 << 20))  # a raw layer beside the tar layer
    out = tmp_path / "out"
    (out / "part-03").mkdir(parents=True)
    (out / "part-03" / "mine.txt").write_bytes(b"keep me")
    seen: list[list[tuple[str, int]]] = []
    real = unpack_mod.place

    def spy(staging_root: Path, out_dir: Path, moves: Any) -> None:
        seen.append([(m.dest, m.mode) for m in moves])
        real(staging_root, out_dir, moves)

    monkeypatch.setattr(unpack_mod, "place", spy)
    with ociart.Client() as c:
        ref = f"oci:{tmp_path / 'store'}:ds"
        c.push(ref, [str(src)], kind="dataset")
        c.pull(ref, str(out))
    (moves,) = seen
    dirs = sorted(d for d, mode in moves if mode == unpack_mod.DIRECTORY)
    assert dirs == ["part-00", "part-01", "part-02", "part-04", "part-05"]
    assert sorted(d for d, mode in moves if mode != unpack_mod.DIRECTORY) == \
        ["big.bin"] + [f"part-03/{i:02d}.csv" for i in range(5)]
    assert (out / "part-03" / "mine.txt").read_bytes() == b"keep me"
    got = tree_digest(out)
    del got["part-03/mine.txt"]
    assert got == tree_digest(src)


@pytest.mark.parametrize("intruder", ["directory", "symlink"])
def test_a_directory_that_appears_before_the_move_is_not_written_through(tmp_path: Path, monkeypatch: Any,
                                                                        intruder: str) -> None:
    """Another user creates the new directory (or a symlink to elsewhere) between the pull's check and its move:
    one error line, nothing written into it or through it."""
    import ociart.packaging.unpack as unpack_mod
    from ociart.errors import LocalIOError

    src = tmp_path / "src"
    _tree_of_dirs(src, 2, 3)
    out = tmp_path / "out"
    out.mkdir()  # an output holding a file: the tree is not adopted whole, its directories move one by one
    (out / "already.txt").write_bytes(b"here before")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    real = unpack_mod.place

    def racing(staging_root: Path, out_dir: Path, moves: Any) -> None:
        if intruder == "directory":
            (out_dir / "part-01").mkdir()
            (out_dir / "part-01" / "theirs").write_bytes(b"x")
        else:
            (out_dir / "part-01").symlink_to(elsewhere)
        real(staging_root, out_dir, moves)

    monkeypatch.setattr(unpack_mod, "place", racing)
    with ociart.Client() as c:
        ref = f"oci:{tmp_path / 'store'}:ds"
        c.push(ref, [str(src)], kind="dataset")
        with pytest.raises(LocalIOError, match=r"part-01: appeared while the pull ran"):
            c.pull(ref, str(out))
    assert not any(elsewhere.iterdir())
    if intruder == "directory":
        assert sorted(os.listdir(out / "part-01")) == ["theirs"]


# -- a new output directory appears whole ----------------------------------------------------------------------
def test_a_new_output_directory_appears_whole(tmp_path: Path, monkeypatch: Any) -> None:
    """Pulled into a directory that did not exist, the extracted tree takes its place in one rename: no file or
    directory is moved on its own, several tar layers included (one extraction tree), and nothing is left beside
    it."""
    import ociart.packaging.unpack as unpack_mod

    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):
        (src / f"{i:03d}.bin").write_bytes(os.urandom(4096))
    (src / "sub").mkdir()
    (src / "sub" / "x.txt").write_bytes(b"x")
    placed: list[int] = []
    real = unpack_mod.place
    monkeypatch.setattr(unpack_mod, "place", lambda root, out, moves: (placed.append(len(moves)),
                                                                        real(root, out, moves)))
    monkeypatch.setattr("ociart.packaging.pack.GROUP_BYTES", 64 * 1024)  # several tar layers, all at the root
    parent = tmp_path / "deploy"
    parent.mkdir()
    with ociart.Client() as c:
        ref = f"oci:{tmp_path / 'store'}:ds"
        c.push(ref, [str(src)], kind="dataset")
        layers = Manifest.model_validate_json(c.manifest(ref)[1].data).layers
        assert len(layers) >= 4
        res = c.pull(ref, str(parent / "out"))
    assert placed == []  # adopted: place() never ran
    assert len(res.files) == 201 and tree_digest(parent / "out") == tree_digest(src)
    assert sorted(os.listdir(parent)) == ["out"]


def test_adoption_steps_aside_when_the_directory_is_written_meanwhile(tmp_path: Path, monkeypatch: Any) -> None:
    """Something written into the new output directory during the pull: the tree cannot replace it, so the files
    move in one by one beside what is there, and nothing is left beside the output."""
    import ociart.packaging.unpack as unpack_mod

    src = tmp_path / "src"
    _tree_of_dirs(src, 3, 4)
    (src / "top.txt").write_bytes(b"top")
    out = tmp_path / "out"
    real = unpack_mod._unpack_staged

    def meanwhile(*args: Any, **kw: Any) -> Any:
        (out / "theirs.txt").write_bytes(b"theirs")
        return real(*args, **kw)

    monkeypatch.setattr(unpack_mod, "_unpack_staged", meanwhile)
    with ociart.Client() as c:
        ref = f"oci:{tmp_path / 'store'}:ds"
        c.push(ref, [str(src)], kind="dataset")
        c.pull(ref, str(out))
    got = tree_digest(out)
    assert got.pop("theirs.txt") == hashlib.sha256(b"theirs").hexdigest()
    assert got == tree_digest(src)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".out")]


def test_a_killed_adoption_is_cleaned_by_the_next_pull(tmp_path: Path) -> None:
    """The tree left beside the output by a pull killed between its renames is removed by the next pull, which
    says so."""
    src = tmp_path / "src"
    _tree_of_dirs(src, 2, 2)
    side = tmp_path / ".out.ociart-pull-new"
    (side / "part-00").mkdir(parents=True)
    (side / "part-00" / "00.csv").write_bytes(b"half")
    with ociart.Client() as c:
        ref = f"oci:{tmp_path / 'store'}:ds"
        c.push(ref, [str(src)], kind="dataset")
        res = c.pull(ref, str(tmp_path / "out"))
    assert not side.exists() and str(side) in res.cleaned
    assert tree_digest(tmp_path / "out") == tree_digest(src)


def test_an_empty_output_directory_is_replaced_keeping_its_mode(tmp_path: Path, monkeypatch: Any) -> None:
    """An empty directory made beforehand (``mkdir out && ociart pull REF out``) is adopted too, with its mode; one
    holding anything is not."""
    import ociart.packaging.unpack as unpack_mod

    src = tmp_path / "src"
    _tree_of_dirs(src, 2, 3)
    placed: list[int] = []
    real = unpack_mod.place
    monkeypatch.setattr(unpack_mod, "place", lambda root, out, moves: (placed.append(len(moves)),
                                                                        real(root, out, moves)))
    empty, used = tmp_path / "empty", tmp_path / "used"
    empty.mkdir(mode=0o750)
    os.chmod(empty, 0o750)
    used.mkdir()
    (used / "keep").write_bytes(b"k")
    with ociart.Client() as c:
        ref = f"oci:{tmp_path / 'store'}:ds"
        c.push(ref, [str(src)], kind="dataset")
        c.pull(ref, str(empty))
        assert placed == []
        c.pull(ref, str(used))
        assert placed == [2]  # the two new directories, each in one rename
    assert os.stat(empty).st_mode & 0o777 == 0o750
    assert tree_digest(empty) == tree_digest(src)
    assert (used / "keep").read_bytes() == b"k"


def test_the_working_directory_is_never_replaced(tmp_path: Path, monkeypatch: Any) -> None:
    """``cd out && ociart pull REF .`` into an empty directory: the files move in (a shell in it would otherwise be
    left in the replaced directory); the directory keeps its inode."""
    src = tmp_path / "src"
    _tree_of_dirs(src, 2, 3)
    out = tmp_path / "out"
    out.mkdir()
    inode = out.stat().st_ino
    with ociart.Client() as c:
        ref = f"oci:{tmp_path / 'store'}:ds"
        c.push(ref, [str(src)], kind="dataset")
        monkeypatch.chdir(out)
        c.pull(ref, ".")
    assert out.stat().st_ino == inode
    assert tree_digest(out) == tree_digest(src)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]
