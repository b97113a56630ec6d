"""Tags moved with compare-and-set (``ociart tag``, ``Client.tag``) and listing (``ociart ls``, ``Client.ls``).

The race tests start two racer processes (``support/tag_racer.py``), each with its own ``OCIART_HOME``, that meet at
a barrier file before every round and then move the same tag at once; exactly one may win each round, and the loser's
``ConflictError`` must name the winner's digest. Sizes in listings are checked against sums computed here from the
store's own files (layout blobs, distribution's storage directory), not from ociart's descriptors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import REPO_ROOT, push_subject, run_cli, write_random
from support.ocifake import OciFake
from support.registry import RunningRegistry

import ociart
from ociart.errors import ConflictError, InvalidReferenceError, UsageError
from ociart.oci import MANIFEST_ACCEPT
from ociart.targets.layout import LayoutTarget
from ociart.targets.registry import RegistryTarget

RACER = REPO_ROOT / "tests" / "support" / "tag_racer.py"
ROUNDS = 12


# -- helpers ------------------------------------------------------------------------------------------------------
def racer_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "OCIART_HOME": str(home)}


def race(tmp_path: Path, srcs: dict[str, str], prefix: str, expect: str, envs: dict[str, dict[str, str]],
         plain_http: bool = False) -> dict[str, list[dict[str, object]]]:
    """Run one racer process per ``srcs`` entry (name -> source reference) for ``ROUNDS`` lock-step rounds."""
    barrier = tmp_path / f"barrier-{prefix}"
    barrier.mkdir()
    names = ",".join(srcs)
    procs = {
        name: subprocess.Popen([sys.executable, str(RACER), str(barrier), name, names, src, prefix, str(ROUNDS),
                                expect, *(["--plain-http"] if plain_http else [])],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=envs[name])
        for name, src in srcs.items()
    }
    results: dict[str, list[dict[str, object]]] = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"racer {name} exited {proc.returncode}: {err}"
        results[name] = [json.loads(line) for line in out.splitlines()]
        assert [r["round"] for r in results[name]] == list(range(ROUNDS)), out
    return results


def assert_one_winner_per_round(results: dict[str, list[dict[str, object]]], digests: dict[str, str],
                                current: Callable[[str], str | None], prefix: str) -> None:
    """Every round: exactly one racer won, the other's ConflictError named the winner's digest, and the tag points
    at the winner's digest."""
    for i in range(ROUNDS):
        winners = [name for name, rounds in results.items() if rounds[i]["won"]]
        assert len(winners) == 1, f"round {i}: winners {winners}: {results}"
        winner = winners[0]
        for name, rounds in results.items():
            if name != winner:
                assert rounds[i]["current"] == digests[winner], (i, results)
        assert current(f"{prefix}{i}") == digests[winner]


def two_artifacts(c: ociart.Client, base: str, tmp_path: Path, names: tuple[str, ...] = ("a", "b")) -> dict[str, str]:
    """Different artifacts pushed at ``<base>:a``, ``<base>:b`` (...); returns name -> digest."""
    out = {}
    for name in names:
        f = tmp_path / f"art-{name}" / "file.bin"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"artifact {name}\n")
        out[name] = c.push(f"{base}:{name}", [f.parent], lineage=False).digest
    return out


# -- compare-and-set races ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("store", ["oci-layout", "embedded"])
def test_tag_race_on_a_shared_layout(store: str, tmp_path: Path) -> None:
    """Two processes, two OCIART_HOMEs, one layout: as ``oci:PATH``, and as the embedded store of both homes (each
    home's ``store`` is the same directory, as on a shared volume). The lock must live with the layout, not the
    home."""
    shared = tmp_path / "shared-layout"
    homes = {name: tmp_path / f"home-{name}" for name in ("a", "b")}
    envs = {name: racer_env(home) for name, home in homes.items()}
    embedded = store == "embedded"
    layout = LayoutTarget(shared, embedded=embedded)
    repo = "race/model" if embedded else ""
    if embedded:
        for home in homes.values():
            (home / "store").symlink_to(shared)
    digests = {name: push_subject(layout, repo, f"artifact {name}".encode(), tag=name).digest
               for name in ("a", "b", "c")}
    srcs = {name: (f"{repo}:{name}" if embedded else f"oci:{shared}:{name}") for name in ("a", "b")}

    results = race(tmp_path, srcs, "new", "absent", envs)
    assert_one_winner_per_round(results, digests, lambda t: layout.current_tag(repo, t), "new")

    # moving a tag both expect at c: one move wins, the other names the winner
    base = layout.resolve(repo, "c")
    for i in range(ROUNDS):
        layout.tag(repo, f"mv{i}", base)
    results = race(tmp_path, srcs, "mv", digests["c"], envs)
    assert_one_winner_per_round(results, digests, lambda t: layout.current_tag(repo, t), "mv")


def _pre_read_barrier(fake: OciFake, racers: int, prefixes: tuple[str, ...]) -> None:
    """Hold each racer's first read of a raced tag (its compare) until every racer has read it: the writes that
    follow always race, so only the registry's If-Match / If-None-Match can pick one winner. The wait is long because
    a racer starting late on a loaded machine broke a 60 s barrier (its HEAD then answered 500 and was retried after
    the winner's PUT)."""
    handler = fake._server.handler
    lock = threading.Lock()
    barriers: dict[str, threading.Barrier] = {}
    heads: dict[str, int] = {}

    def held(method: str, path: str, headers: dict[str, str], body: object) -> object:
        if method == "HEAD" and "/manifests/" in path and path.rsplit("/", 1)[1].startswith(prefixes):
            with lock:
                n = heads[path] = heads.get(path, 0) + 1
                barrier = barriers.setdefault(path, threading.Barrier(racers, timeout=300))
            if n <= racers:
                barrier.wait()
        return handler(method, path, headers, body)  # type: ignore[arg-type]

    fake._server.handler = held  # type: ignore[assignment]


def _registry_picked_the_winners(puts: list[dict[str, object]]) -> None:
    """Each round has one winning PUT; every other PUT was refused by the registry's precondition (412). Nearly every
    round must reach the registry with both PUTs: on a loaded machine a racer's held pre-read can time out and be
    retried past the barrier, so that racer sees the winner's tag and loses before writing (still one winner, but
    that round did not test the registry); more than two such rounds fail the test."""
    assert sum(p["status"] in (200, 201) for p in puts) == ROUNDS
    assert sum(p["status"] == 412 for p in puts) == len(puts) - ROUNDS  # every losing write stopped by the registry
    assert len(puts) >= 2 * ROUNDS - 2, f"only {len(puts) - ROUNDS} of {ROUNDS} rounds raced at the registry"


def test_tag_race_on_a_registry_that_honours_if_match(tmp_path: Path) -> None:
    fake = OciFake()
    try:
        with ociart.Client() as c:
            digests = two_artifacts(c, f"{fake.host}/race/model", tmp_path, ("a", "b", "c"))
        _pre_read_barrier(fake, 2, ("new", "mv"))
        before = len(fake.log)
        envs = {name: racer_env(tmp_path / f"home-{name}") for name in ("a", "b")}
        srcs = {name: f"{fake.host}/race/model:{name}" for name in ("a", "b")}
        results = race(tmp_path, srcs, "new", "absent", envs)
        repo = fake.repos["race/model"]
        assert_one_winner_per_round(results, digests, lambda t: repo.tags.get(t), "new")
        puts = fake.requests("PUT", "/manifests/new")
        assert all(p["headers"].get("if-none-match") == "*" for p in puts)
        _registry_picked_the_winners(puts)

        for i in range(ROUNDS):  # both expect the tag at c; one moves it, the other's If-Match fails
            repo.tags[f"mv{i}"] = digests["c"]
        results = race(tmp_path, srcs, "mv", digests["c"], envs)
        assert_one_winner_per_round(results, digests, lambda t: repo.tags.get(t), "mv")
        moves = fake.requests("PUT", "/manifests/mv")
        assert all(p["headers"].get("if-match") == f'"{digests["c"]}"' for p in moves)
        _registry_picked_the_winners(moves)
        assert not [e for e in fake.log[before:] if "/blobs/" in e["path"] and e["method"] != "HEAD"]  # no upload
    finally:
        fake.stop()
    assert not fake.errors


def test_tag_race_loser_overwritten_after_write_is_detected(tmp_path: Path) -> None:
    """A registry without conditional PUT: another writer's PUT lands right after ours; the read-back sees it."""
    fake = OciFake(conditional=False)
    try:
        with ociart.Client() as c:
            digests = two_artifacts(c, f"{fake.host}/race/model", tmp_path)
            repo = fake.repos["race/model"]

            def intrude(name: str, ref: str, digest: str) -> None:
                if ref == "prod" and digest == digests["a"]:
                    repo.tags["prod"] = digests["b"]  # the other writer, between our PUT and our read-back

            fake.after_manifest_put = intrude
            with pytest.raises(ConflictError) as err:
                c.tag(f"{fake.host}/race/model:a", "prod", expect=ociart.ABSENT)
            assert err.value.current == digests["b"] and digests["b"] in str(err.value)
            assert err.value.exit_code == 7 and err.value.kind == "conflict"
    finally:
        fake.stop()
    assert not fake.errors


def test_tag_compare_and_set_sequential_on_distribution(registry: RunningRegistry, unique_repo: str,
                                                          tmp_path: Path) -> None:
    """distribution 2.8.2 has no conditional PUT: a racer that reads after the other's write loses, and says so."""
    base = f"{registry.host}/{unique_repo}"
    with ociart.Client() as c:
        digests = two_artifacts(c, base, tmp_path)
    home_a = {"OCIART_HOME": str(tmp_path / "home-a")}
    home_b = {"OCIART_HOME": str(tmp_path / "home-b")}

    first = run_cli("tag", f"{base}:a", "prod", "--expect", "absent", env=home_a)
    assert first.returncode == 0, first.stderr
    assert first.stdout == digests["a"] + "\n"
    second = run_cli("tag", f"{base}:b", "prod", "--expect", "absent", env=home_b)
    assert second.returncode == 7, second.stderr
    assert second.stdout == "" and second.stderr.count("\n") == 1 and second.stderr.startswith("error: ")
    assert digests["a"] in second.stderr and "Traceback" not in second.stderr
    assert _tag_digest(registry, unique_repo, "prod") == digests["a"]

    moved = run_cli("tag", f"{base}:b", "prod", "--expect", digests["a"], "--json", env=home_b)
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout) == {"reference": f"{base}:b@{digests['b']}", "digest": digests["b"],
                                        "tags": ["prod"]}
    stale = run_cli("tag", f"{base}:a", "prod", "--expect", digests["a"], env=home_a)
    assert stale.returncode == 7 and digests["b"] in stale.stderr, stale.stderr
    assert _tag_digest(registry, unique_repo, "prod") == digests["b"]

    # the bytes under the tag are the source's bytes, unchanged (never re-serialised)
    raw_b = httpx.get(f"http://{registry.host}/v2/{unique_repo}/manifests/{digests['b']}",
                      headers={"Accept": MANIFEST_ACCEPT}).content
    raw_prod = httpx.get(f"http://{registry.host}/v2/{unique_repo}/manifests/prod",
                         headers={"Accept": MANIFEST_ACCEPT}).content
    assert raw_prod == raw_b


def _tag_digest(registry: RunningRegistry, repo: str, tag: str) -> str:
    resp = httpx.head(f"http://{registry.host}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT})
    assert resp.status_code == 200
    return resp.headers["docker-content-digest"]


def test_tag_several_tags_and_usage_errors(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    with ociart.Client() as c:
        digests = two_artifacts(c, base, tmp_path)
    ok = run_cli("tag", f"{base}@{digests['a']}", "v1", "stable", "prod")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == digests["a"] + "\n"
    for t in ("v1", "stable", "prod"):
        assert _tag_digest(registry, unique_repo, t) == digests["a"]

    two = run_cli("tag", f"{base}:a", "x", "y", "--expect", "absent")
    assert two.returncode == 2 and "exactly one tag" in two.stderr, two.stderr
    bad = run_cli("tag", f"{base}:a", "x", "--expect", "sha256:nothex")
    assert bad.returncode == 2 and "invalid digest" in bad.stderr, bad.stderr
    bad_tag = run_cli("tag", f"{base}:a", "no/slash")
    assert bad_tag.returncode == 2 and "invalid tag" in bad_tag.stderr, bad_tag.stderr
    missing = run_cli("tag", f"{base}:nope", "x")
    assert missing.returncode == 3, missing.stderr
    with ociart.Client() as c:
        with pytest.raises(UsageError):
            c.tag(f"{base}:a", ["x", "y"], expect=ociart.ABSENT)
        with pytest.raises(InvalidReferenceError):
            c.tag(f"{base}:a", "bad tag")
        # idempotent: the tag is already at the digest asked for, whatever was expected
        assert c.tag(f"{base}:a", "prod", expect=ociart.ABSENT).tags == ["prod"]
    assert sorted(ociart.Client().tags(base)) == ["a", "b", "prod", "stable", "v1"]


def test_tag_on_a_layout_uploads_nothing(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    with ociart.Client() as c:
        digests = two_artifacts(c, f"oci:{layout}", tmp_path)
        blobs_before = sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())
        c.tag(f"oci:{layout}:a", ["prod"], expect=ociart.ABSENT)
        with pytest.raises(ConflictError) as err:
            c.tag(f"oci:{layout}:b", ["prod"], expect=ociart.ABSENT)
        assert err.value.current == digests["a"]
        with pytest.raises(ConflictError) as err:
            c.tag(f"oci:{layout}:b", ["prod"], expect=digests["b"])
        assert err.value.current == digests["a"]
        c.tag(f"oci:{layout}:b", ["prod"], expect=digests["a"])
        assert c.resolve(f"oci:{layout}:prod").digest == digests["b"]
        with pytest.raises(ConflictError) as err:
            c.tag(f"oci:{layout}:b", ["ghost"], expect=digests["a"])
        assert err.value.current is None and "absent" in str(err.value)
    assert sorted(p.name for p in (layout / "blobs" / "sha256").iterdir()) == blobs_before
    names = [m["annotations"]["org.opencontainers.image.ref.name"]
             for m in json.loads((layout / "index.json").read_text())["manifests"]]
    assert sorted(names) == ["a", "b", "prod"]


# -- listing ------------------------------------------------------------------------------------------------------
def _manifest_parts(read: Callable[[str], bytes], size_of: Callable[[str], int], digest: str) -> dict[str, int]:
    """Digest -> stored size of a manifest and everything it references, from the store's files."""
    parts = {digest: size_of(digest)}
    obj = json.loads(read(digest))
    for d in [obj.get("config"), *obj.get("layers", [])]:
        if d:
            parts[d["digest"]] = size_of(d["digest"])
    for child in obj.get("manifests", []):
        parts.update(_manifest_parts(read, size_of, child["digest"]))
    return parts


def _layout_fs(root: Path) -> tuple[Callable[[str], bytes], Callable[[str], int]]:
    def path(d: str) -> Path:
        return root / "blobs" / "sha256" / d.removeprefix("sha256:")

    return (lambda d: path(d).read_bytes()), (lambda d: path(d).stat().st_size)


def _model(tmp_path: Path, name: str, shared: Path, extra: int) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "weights.bin").write_bytes(shared.read_bytes())  # the same large file in every artifact: deduped
    write_random(d / "extra.bin", extra, seed=extra)
    (d / "config.json").write_text(json.dumps({"name": name}))
    return d


def test_ls_embedded_store(tmp_path: Path) -> None:
    shared = write_random(tmp_path / "shared.bin", 300_000, seed=1)
    with ociart.Client() as c:
        a1 = c.push("team/bert:v1", [_model(tmp_path, "m1", shared, 1000)], kind="model").digest
        c.tag("team/bert:v1", ["stable"])
        a2 = c.push("team/bert:v2", [_model(tmp_path, "m2", shared, 2000)], kind="model").digest
        d1 = c.push("data/sst2:v3", [_model(tmp_path, "d1", shared, 3000)]).digest
        c.sign("team/bert:v2", ec.generate_private_key(ec.SECP256R1()))
        listing = c.ls()
        full = c.ls(all=True)
        only_bert = c.ls("team/bert")
    root = Path(os.environ["OCIART_HOME"]) / "store"
    read, size_of = _layout_fs(root)

    got = {(a.repository, tuple(a.tags)): a for a in listing.artifacts}
    assert set(got) == {("team/bert", ("stable", "v1")), ("team/bert", ("v2",)), ("data/sst2", ("v3",))}
    assert listing.repositories == ["data/sst2", "team/bert"] and listing.location == "embedded store"
    expected = {a1: _manifest_parts(read, size_of, a1), a2: _manifest_parts(read, size_of, a2),
                d1: _manifest_parts(read, size_of, d1)}
    for a in listing.artifacts:
        assert a.size == sum(expected[a.digest].values()), a
    assert got[("team/bert", ("v2",))].kind == "model" and got[("data/sst2", ("v3",))].kind == "generic"
    assert got[("team/bert", ("v2",))].created  # typed pushes record org.opencontainers.image.created
    union: dict[str, int] = {}
    for parts in expected.values():
        union.update(parts)
    assert listing.total == sum(union.values())
    assert sum(a.size for a in listing.artifacts) - listing.total >= 2 * 300_000  # the shared file counted once
    assert {a.digest for a in only_bert.artifacts} == {a1, a2} and only_bert.repositories == ["team/bert"]

    # --all: provenance of each push, the bundle signature of v2, the legacy .sig tag; everything in index.json
    index = json.loads((root / "index.json").read_text())["manifests"]
    assert {a.digest for a in full.artifacts} == {m["digest"] for m in index}
    kinds = sorted((a.kind, a.subject) for a in full.artifacts if a.subject)
    assert kinds == sorted([("provenance", a1), ("provenance", a2), ("provenance", d1), ("signature", a2)])
    legacy = [a for a in full.artifacts if any(t.endswith(".sig") for t in a.tags)]
    assert len(legacy) == 1 and legacy[0].kind == "signature" and legacy[0].repository == "team/bert"
    union = {}
    for m in index:
        union.update(_manifest_parts(read, size_of, m["digest"]))
    assert full.total == sum(union.values())

    out = run_cli("ls")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3
    cols = {line.split()[0]: line.split() for line in lines}
    assert set(cols) == {"team/bert:stable,v1", "team/bert:v2", "data/sst2:v3"}
    assert cols["team/bert:v2"][1:4] == [a2, "model", got[("team/bert", ("v2",))].created]
    assert "3 artifact(s)" in out.stderr
    as_json = run_cli("ls", "--all", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["total"] == full.total


def test_ls_oci_layout_with_untagged(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    target = LayoutTarget(layout)
    s1 = push_subject(target, "", b"first", tag="one")
    s2 = push_subject(target, "", b"second", tag="two")
    with ociart.Client() as c:
        c.tag(f"oci:{layout}:one", ["also"])
        report = tmp_path / "report"
        report.mkdir()
        (report / "metrics.json").write_text('{"acc": 0.9}')
        c.push(f"oci:{layout}:orphan", [report / "metrics.json"], lineage=False)
        c.delete(f"oci:{layout}:orphan")  # gone from index.json: a blob only, not listed
        c.sign(f"oci:{layout}:one", ec.generate_private_key(ec.SECP256R1()))
        evaluation = tmp_path / "evaluation"
        evaluation.mkdir()
        (evaluation / "metrics.json").write_text('{"accuracy": 0.91}')
        rep = c.push(f"oci:{layout}:eval", [evaluation], kind="report", subject=f"oci:{layout}:two",
                     lineage=False).digest
        listing = c.ls(f"oci:{layout}")
        full = c.ls(f"oci:{layout}", all=True)
    read, size_of = _layout_fs(layout)
    assert listing.repositories == [""] and listing.location == f"oci:{layout}"
    assert sorted(tuple(a.tags) for a in listing.artifacts) == [("also", "one"), ("eval",), ("two",)]
    report = next(a for a in listing.artifacts if a.tags == ["eval"])  # a referrer, but tagged: listed
    assert (report.digest, report.kind, report.subject) == (rep, "report", s2.digest)
    for a in full.artifacts:
        assert a.size == sum(_manifest_parts(read, size_of, a.digest).values())
    untagged = [a for a in full.artifacts if not a.tags]
    assert [(a.kind, a.subject) for a in untagged] == [("signature", s1.digest)]
    assert {a.digest for a in full.artifacts} == {m["digest"] for m in
                                                  json.loads((layout / "index.json").read_text())["manifests"]}

    out = run_cli("ls", f"oci:{layout}", "--all")
    assert out.returncode == 0, out.stderr
    firsts = sorted(line.split()[0] for line in out.stdout.splitlines())
    assert firsts[:3] == ["<none>", "also,one", "eval"] and "sha256-" in " ".join(firsts)
    assert run_cli("ls", f"oci:{layout}:one").returncode == 2
    assert run_cli("ls", f"oci:{tmp_path / 'nothing'}").returncode == 3


def test_ls_distribution_catalog_pages_and_sizes(registry_factory: Callable[..., RunningRegistry],
                                                 tmp_path: Path) -> None:
    reg = registry_factory()
    shared = write_random(tmp_path / "shared.bin", 200_000, seed=2)
    pushed: dict[str, str] = {}
    with ociart.Client() as c:
        for i in range(5):
            ref = f"{reg.host}/ls/repo{i}:v1"
            pushed[ref] = c.push(ref, [_model(tmp_path, f"r{i}", shared, 500 * (i + 1))], kind="model").digest
        c.tag(f"{reg.host}/ls/repo0:v1", ["latest"])
        c.sign(f"{reg.host}/ls/repo1:v1", ec.generate_private_key(ec.SECP256R1()))
        listing = c.ls(reg.host)
        full = c.ls(f"{reg.host}/ls/repo1", all=True)

    target = RegistryTarget(reg.host)
    try:
        assert target.repositories(page_size=2) == [f"ls/repo{i}" for i in range(5)]
    finally:
        target.close()
    pages = [line for line in reg.log_text().splitlines() if '"GET /v2/_catalog?' in line and "n=2" in line]
    assert len(pages) == 3 and sum("last=" in line for line in pages) == 2, pages  # 2 + 2 + 1, by n and last

    def read(d: str) -> bytes:
        return reg.blob_data_path(d).read_bytes()

    def size_of(d: str) -> int:
        return reg.blob_data_path(d).stat().st_size

    assert listing.repositories == [f"ls/repo{i}" for i in range(5)] and listing.location == reg.host
    assert sorted((a.repository, tuple(a.tags)) for a in listing.artifacts) == \
        [("ls/repo0", ("latest", "v1"))] + [(f"ls/repo{i}", ("v1",)) for i in range(1, 5)]
    union: dict[str, int] = {}
    for a in listing.artifacts:
        parts = _manifest_parts(read, size_of, a.digest)
        assert a.digest == pushed[f"{reg.host}/{a.repository}:v1"] and a.kind == "model"
        assert a.size == sum(parts.values())
        union.update(parts)
    assert listing.total == sum(union.values())

    # --all on a registry without the referrers API: the fallback index, the bundle, the provenance, the .sig
    kinds = sorted(a.kind for a in full.artifacts)
    assert kinds == ["model", "provenance", "referrers-index", "signature", "signature"], full.artifacts
    subject = pushed[f"{reg.host}/ls/repo1:v1"]
    assert all(a.subject == subject for a in full.artifacts if not a.tags)
    for a in full.artifacts:
        assert a.size == sum(_manifest_parts(read, size_of, a.digest).values())

    out = run_cli("ls", reg.host, "--plain-http")
    assert out.returncode == 0, out.stderr
    assert sorted(line.split()[0] for line in out.stdout.splitlines()) == \
        ["ls/repo0:latest,v1"] + [f"ls/repo{i}:v1" for i in range(1, 5)]
    js = run_cli("ls", f"{reg.host}/ls/repo3", "--json")
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert [a["digest"] for a in doc["artifacts"]] == [pushed[f"{reg.host}/ls/repo3:v1"]]
    assert doc["total"] == doc["artifacts"][0]["size"]
    assert run_cli("ls", f"{reg.host}/ls/repo3:v1").returncode == 2


def test_promotion_history_tags_are_machinery_not_artifacts(tmp_path: Path) -> None:
    """A tag's promotion history lives at ``_promotions.<tag>``: ``ls`` and ``tags`` hide it like the sha256-* tags,
    ``--all`` shows it."""
    (tmp_path / "w.bin").write_bytes(b"weights")
    with ociart.Client() as c:
        c.push("models/h:c1", [tmp_path / "w.bin"])
        c.promote("models/h:c1", "prod")
        assert c.tags("models/h") == ["c1", "prod"]
        assert "_promotions.prod" in c.tags("models/h", all=True)
        shown = [t for a in c.ls("models/h").artifacts for t in a.tags]
        assert sorted(shown) == ["c1", "prod"]
        assert "_promotions.prod" in [t for a in c.ls("models/h", all=True).artifacts for t in a.tags]
