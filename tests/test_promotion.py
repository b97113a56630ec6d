"""Promotion by retagging digests (issue 9): gates, compare-and-set, records, history, rollback, promotedTo, the audit
log's registry copy, and registry-enforced access control with scoped tokens. Real distribution 2.8.2 registries
(fixtures in conftest.py), the embedded store, and sigstore-js as a second verifier of the record."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from helpers import run_cli
from support.registry import RunningRegistry
from support.sigstore_mock import SigstoreMock

import ociart
from ociart import audit
from ociart.errors import ConflictError, VerificationError
from ociart.promotion import (
    EVALUATION_PREDICATE,
    PROMOTION_PREDICATE,
    history,
    history_tag,
)
from ociart.signing import keys
from ociart.targets.base import ABSENT
from ociart.targets.referrers import legacy_tag

PASSWORD = "promotion-test-pw"
NODE_DIR = Path(__file__).resolve().parent / "support" / "node"


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("promotion-keys")
    for name in ("release", "trainer", "evaluator"):
        keys.generate_key_pair(d / name, PASSWORD.encode())
    return d


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)


def _model(root: Path, seed: str) -> Path:
    d = root / f"model-{seed}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "weights.bin").write_bytes(f"weights {seed}".encode() * 100)
    (d / "config.json").write_text(json.dumps({"seed": seed}))
    return d


def _evaluate(c: ociart.Client, ref: str, key: Path, accuracy: float, when: str = "2026-12-01T00:00:00Z") -> None:
    c.attest(ref, str(key), EVALUATION_PREDICATE,
             {"metrics": {"accuracy": accuracy}, "dataset": {"uri": "oci://data/sst2", "digest": "sha256:" + "a" * 64},
              "evaluator": "eval-job", "timestamp": when})


def _ok(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> str:
    p = run_cli(*args, env=env, input=input)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


def _raw_manifest(reg: RunningRegistry, repo: str, ref: str) -> bytes:
    r = httpx.get(f"{reg.url}/v2/{repo}/manifests/{ref}",
                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                     "application/vnd.oci.image.index.v1+json"})
    assert r.status_code == 200, r.text
    return r.content


# -- promote, identical bytes, record, history, promotedTo ---------------------------------------------------------
def test_promote_on_registry_keeps_bytes_records_and_verifies(registry: RunningRegistry, unique_repo: str,
                                                                keydir: Path, tmp_path: Path) -> None:
    repo = f"{registry.host}/{unique_repo}"
    rel, pub = keydir / "release.key", keydir / "release.pub"
    with ociart.Client() as c:
        d = c.push(f"{repo}:candidate", [_model(tmp_path, "a")], kind="model", sign=str(rel))
        _evaluate(c, d.ref, rel, 0.95)
    out = run_cli("promote", f"{repo}:candidate", "--to", "staging", "--key", str(pub), "--gate", "accuracy>=0.9",
                  "--require-attestation", EVALUATION_PREDICATE, "--sign-key", str(rel))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == d.digest
    assert f"staging: absent -> {d.digest}" in out.stderr
    # identical manifest bytes under the new tag, as the registry serves them
    assert _raw_manifest(registry, unique_repo, "staging") == _raw_manifest(registry, unique_repo, "candidate")

    # the history: one read of the tag's history artifact
    with ociart.Client() as c:
        target = c.target(c.ref(repo))
        entries = history(target, unique_repo, "staging")
    assert [e.digest for e in entries] == [d.digest] and entries[0].previous is None and entries[0].signed
    assert entries[0].source == f"{repo}:candidate" and {g.gate for g in entries[0].gates} == {
        "signature", f"attestation:{EVALUATION_PREDICATE}", "accuracy>=0.9"}
    listed = json.loads(_ok("history", f"{repo}:staging", "--json"))
    assert listed["entries"][0]["record"] == entries[0].record

    # the record verifies as an attestation with ociart verify
    v = json.loads(_ok("verify", f"{repo}:staging", "--key", str(pub), "--require-attestation", PROMOTION_PREDICATE,
                       "--json"))
    assert PROMOTION_PREDICATE in {a["predicateType"] for a in v["attestations"]}
    # and promotedTo: [staging] passes for the digest now at staging
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"apiVersion: ociart.dev/v1alpha1\nkind: VerificationPolicy\nrules:\n"
                      f"  - repositories: ['{repo}']\n    keys: ['{pub}']\n    promotedTo: [staging]\n")
    v = json.loads(_ok("verify", f"{repo}:staging", "--policy", str(policy), "--json"))
    assert v["promotedTo"] == ["staging"]
    pulled = tmp_path / "pulled"
    _ok("pull", f"{repo}:staging", "-o", str(pulled), "--policy", str(policy))
    assert (pulled / "weights.bin").read_bytes() == (tmp_path / "model-a" / "weights.bin").read_bytes()
    # the audit log has the promotion with before and after
    line = [e for e in audit.read() if e.action == "promote"][-1]
    assert (line.reference, line.before, line.after, line.result) == (f"{repo}:staging", None, d.digest, "ok")


def test_promote_in_the_embedded_store_keeps_bytes(keydir: Path, tmp_path: Path) -> None:
    with ociart.Client() as c:
        d = c.push("models/emb:candidate", [_model(tmp_path, "e")], kind="model")
        res = c.promote("models/emb:candidate", "prod")
        assert res.after == d.digest and res.record is not None and not res.signed
        store = c.target(c.ref("models/emb:prod"))
        assert store.get_manifest("models/emb", "prod").data == store.get_manifest("models/emb", "candidate").data
        assert store.resolve("models/emb", "prod").digest == d.digest
        assert c.history("models/emb:prod")[0].record == res.record


# -- gates ---------------------------------------------------------------------------------------------------------
def test_gates_block_unsigned_unattested_low_and_self_reported(registry: RunningRegistry, unique_repo: str,
                                                                keydir: Path, tmp_path: Path) -> None:
    repo = f"{registry.host}/{unique_repo}"
    rel, pub, ev = keydir / "release.key", keydir / "release.pub", keydir / "evaluator.key"
    gate_args = ("--key", str(pub), "--gate", "accuracy>=0.9")
    with ociart.Client() as c:
        c.push(f"{repo}:unsigned", [_model(tmp_path, "u")], kind="model")
        # signed, and its own metadata, annotations and provenance say accuracy 0.99: not an evaluation
        selfrep = c.push(f"{repo}:selfrep", [_model(tmp_path, "s")], kind="model", sign=str(rel),
                         metadata={"metrics": {"accuracy": 0.99}})
        low = c.push(f"{repo}:low", [_model(tmp_path, "l")], kind="model", sign=str(rel))
        _evaluate(c, low.ref, rel, 0.5)
        foreign = c.push(f"{repo}:foreign", [_model(tmp_path, "f")], kind="model", sign=str(rel))
        _evaluate(c, foreign.ref, ev, 0.99)  # signed by a key the gate does not trust
        newer = c.push(f"{repo}:newer", [_model(tmp_path, "n")], kind="model", sign=str(rel))
        _evaluate(c, newer.ref, rel, 0.95, "2026-11-01T00:00:00Z")
        _evaluate(c, newer.ref, rel, 0.7, "2026-11-20T00:00:00Z")  # the newest evaluation decides
        assert "dev.ociart.metrics+json" in json.dumps(c.inspect(selfrep.ref).manifest)
        assert c.provenance(selfrep.ref).predicate.buildDefinition.externalParameters.metrics == {"accuracy": 0.99}

    def refused(tag: str, *extra: str) -> str:
        p = run_cli("promote", f"{repo}:{tag}", "--to", "prod", *gate_args, *extra)
        assert p.returncode == 5, (tag, p.stdout, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        return p.stderr

    err = refused("unsigned")
    assert "signature: no signature by a trusted signer" in err and "accuracy>=0.9: no verified evaluation" in err
    err = refused("selfrep")
    assert "accuracy>=0.9: no verified evaluation" in err and "signature" not in err.split("refused by")[1]
    assert "refused by 1 gate(s)" in err
    assert "accuracy=0.5 fails >=0.9" in refused("low")
    assert "accuracy>=0.9: no verified evaluation" in refused("foreign")
    assert "accuracy=0.7 fails >=0.9" in refused("newer")
    err = refused("unsigned", "--require-attestation", EVALUATION_PREDICATE)
    assert f"attestation:{EVALUATION_PREDICATE}: no verified attestation" in err
    with ociart.Client() as c:
        assert "prod" not in c.tags(repo)  # nothing moved
    # with the evaluator's key trusted for evaluations (policy signers), the foreign evaluation counts
    policy = tmp_path / "p.yaml"
    policy.write_text(f"""apiVersion: ociart.dev/v1alpha1
kind: VerificationPolicy
rules:
  - repositories: ["{repo}"]
    keys: ["{pub}"]
    promotion:
      - to: "pr*"
        from: ["foreign", "staging"]
        gates: ["accuracy>=0.9"]
        signers: {{keys: ["{keydir / 'evaluator.pub'}"]}}
""")
    dry = run_cli("promote", f"{repo}:foreign", "--to", "prod", "--policy", str(policy), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert re.search(r"pass +accuracy>=0.9", dry.stdout) and re.search(r"pass +from", dry.stdout)
    assert "dry run: prod stays at absent" in dry.stderr
    dry = run_cli("promote", f"{repo}:low", "--to", "prod", "--policy", str(policy), "--dry-run")
    assert dry.returncode == 5 and re.search(r"FAIL +from", dry.stdout) and re.search(r"FAIL +accuracy>=0.9",
                                                                                        dry.stdout)
    no_entry = run_cli("promote", f"{repo}:foreign", "--to", "canary", "--policy", str(policy))
    assert no_entry.returncode == 5 and "allows no promotion into tag 'canary'" in no_entry.stderr
    _ok("promote", f"{repo}:foreign", "--to", "prod", "--policy", str(policy))
    with ociart.Client() as c:
        assert c.resolve(f"{repo}:prod").digest == foreign.digest
        staged = c.push(f"{repo}:staging", [_model(tmp_path, "st")], kind="model", sign=str(rel))
        _evaluate(c, staged.ref, ev, 0.97)
    _ok("promote", f"{repo}:staging", "--to", "prod", "--policy", str(policy))
    # a rollback's source is the tag's earlier digest: `from` passes for it, the other gates are checked again
    back = json.loads(_ok("rollback", f"{repo}:prod", "--policy", str(policy), "--json"))
    assert back["after"] == foreign.digest and back["before"] == staged.digest
    assert {g["gate"]: g["passed"] for g in back["gates"]} == {"signature": True, "from": True, "accuracy>=0.9": True}


def test_policy_promotion_schema_is_strict(tmp_path: Path, keydir: Path) -> None:
    base = (f"apiVersion: ociart.dev/v1alpha1\nkind: VerificationPolicy\nrules:\n  - repositories: ['m/**']\n"
            f"    keys: ['{keydir / 'release.pub'}']\n    promotion:\n")
    for body, needle in [("      - to: prod\n        gatez: []\n", "gatez"),
                         ("      - to: prod\n        gates: ['accuracy=>0.9']\n", "accuracy=>0.9"),
                         ("      - from: [staging]\n", "to")]:
        p = tmp_path / "bad.yaml"
        p.write_text(base + body)
        out = run_cli("verify", "m/x:v1", "--policy", str(p))
        assert out.returncode == 5 and needle in out.stderr and "Traceback" not in out.stderr, out.stderr


# -- keyless signer identity as the gate (local mock Fulcio/Rekor) --------------------------------------------------
def test_promotion_gated_by_keyless_signer_identity(sigstore_mock: SigstoreMock, registry: RunningRegistry,
                                                    unique_repo: str, tmp_path: Path) -> None:
    """The candidate and its evaluation are signed keylessly as the mock's identity; a promotion trusting another
    identity (or another issuer) is refused in one line and moves nothing; trusting the signer's identity it passes,
    and its record, signed keylessly too, verifies by identity and satisfies ``promotedTo``."""
    mock = sigstore_mock
    repo = f"{registry.host}/{unique_repo}"
    signing = ("--identity-token", mock.token(), "--trust-config", str(mock.trust_config))
    digest = _ok("push", f"{repo}:candidate", str(_model(tmp_path, "kl")), "--kind", "model", "--sign",
                 *signing).strip()
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"metrics": {"accuracy": 0.95}, "dataset": {
        "uri": "oci://data/sst2", "digest": "sha256:" + "a" * 64}, "evaluator": "eval-job",
        "timestamp": "2026-12-01T00:00:00Z"}))
    _ok("attest", f"{repo}:candidate", "--type", EVALUATION_PREDICATE, "--predicate", str(evaluation), *signing)

    def gates(identity: str, issuer: str) -> tuple[str, ...]:
        return ("--certificate-identity", identity, "--certificate-oidc-issuer", issuer,
                "--trust-config", str(mock.trusted_root), "--gate", "accuracy>=0.9",
                "--require-attestation", EVALUATION_PREDICATE)

    for identity, issuer, why in (("mallory@example.com", mock.issuer, "mallory@example.com"),
                                  (mock.identity, "https://other.example", "issuer")):
        p = run_cli("promote", f"{repo}:candidate", "--to", "prod", *gates(identity, issuer))
        assert p.returncode == 5, (p.stdout, p.stderr)
        assert p.stdout == "" and len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("error: ")
        assert "Traceback" not in p.stderr and "refused by 3 gate(s)" in p.stderr, p.stderr
        assert "signature: no signature by a trusted signer" in p.stderr and "does not match" in p.stderr
        assert why in p.stderr and "accuracy>=0.9: no verified evaluation" in p.stderr, p.stderr
        assert run_cli("resolve", f"{repo}:prod").returncode == 3  # the tag did not move
    with ociart.Client() as c:
        assert "prod" not in c.tags(repo)
        assert c.history(f"{repo}:prod") == []

    # the signer's identity (exact, then by regexp in a dry run): promoted, the record signed keylessly
    dry = run_cli("promote", f"{repo}:candidate", "--to", "prod", "--certificate-identity-regexp", "^alice@",
                  "--certificate-oidc-issuer-regexp", r"^https://issuer\.ociart\.", "--trust-config",
                  str(mock.trusted_root), "--gate", "accuracy>=0.9", "--dry-run")
    assert dry.returncode == 0 and re.search(r"pass +signature", dry.stdout), (dry.stdout, dry.stderr)
    out = run_cli("promote", f"{repo}:candidate", "--to", "prod", *gates(mock.identity, mock.issuer),
                  "--sign-identity-token", mock.token(), "--sign-trust-config", str(mock.trust_config), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["after"] == digest and result.get("before") is None and result["signed"] is True
    assert {g["gate"]: g["passed"] for g in result["gates"]} == {
        "signature": True, f"attestation:{EVALUATION_PREDICATE}": True, "accuracy>=0.9": True}
    assert mock.identity in result["actor"]
    assert _raw_manifest(registry, unique_repo, "prod") == _raw_manifest(registry, unique_repo, "candidate")
    v = json.loads(_ok("verify", f"{repo}:prod", "--certificate-identity", mock.identity,
                       "--certificate-oidc-issuer", mock.issuer, "--trust-config", str(mock.trusted_root),
                       "--require-attestation", PROMOTION_PREDICATE, "--json"))
    assert v["digest"] == digest and PROMOTION_PREDICATE in {a["predicateType"] for a in v["attestations"]}
    policy = tmp_path / "keyless-policy.yaml"
    policy.write_text(f"apiVersion: ociart.dev/v1alpha1\nkind: VerificationPolicy\nrules:\n"
                      f"  - repositories: ['{repo}']\n    identities:\n      - subject: {mock.identity}\n"
                      f"        issuer: {mock.issuer}\n    trustConfig: {mock.trusted_root}\n"
                      f"    promotedTo: [prod]\n")
    assert json.loads(_ok("verify", f"{repo}:prod", "--policy", str(policy), "--json"))["promotedTo"] == ["prod"]
    with ociart.Client() as c:
        [entry] = c.history(f"{repo}:prod")
    assert entry.digest == digest and entry.signed and mock.identity in entry.actor


# -- into another repository: the legacy .sig and the bundle referrer come along -----------------------------------
def test_cross_repository_promotion_carries_legacy_signature_and_bundle(registry: RunningRegistry, unique_repo: str,
                                                                        keydir: Path, tmp_path: Path) -> None:
    cand_name, prod_name = f"{unique_repo}-candidates", f"{unique_repo}-prod"
    cand, prod = f"{registry.host}/{cand_name}", f"{registry.host}/{prod_name}"
    rel, pub = keydir / "release.key", keydir / "release.pub"
    with ociart.Client() as c:
        d = c.push(f"{cand}:c1", [_model(tmp_path, "xr")], kind="model", sign=str(rel))
        sig_tag = legacy_tag(d.digest, ".sig")
        assert sig_tag in c.tags(cand, all=True)
        bundles = {r.digest for r in c.referrers(f"{cand}@{d.digest}")
                   if r.artifactType == "application/vnd.dev.sigstore.bundle.v0.3+json"}
        assert bundles
    out = run_cli("promote", f"{cand}:c1", "--to", f"{prod}:prod", "--key", str(pub))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == d.digest and f"prod: absent -> {d.digest}" in out.stderr
    assert _raw_manifest(registry, prod_name, "prod") == _raw_manifest(registry, cand_name, "c1")
    with ociart.Client() as c:
        tags = set(c.tags(prod, all=True))
        assert sig_tag in tags and "c1" not in tags, tags  # the .sig came along; the source tag did not
        carried = {r.digest for r in c.referrers(f"{prod}@{d.digest}")}
        assert bundles <= carried
    # the .sig manifest is byte-identical in the production repository
    assert _raw_manifest(registry, prod_name, sig_tag) == _raw_manifest(registry, cand_name, sig_tag)
    v = json.loads(_ok("verify", f"{prod}:prod", "--key", str(pub), "--json"))
    assert v["digest"] == d.digest
    assert sorted(s["format"] for s in v["signatures"]) == ["bundle", "legacy"], v["signatures"]


# -- compare-and-set ----------------------------------------------------------------------------------------------
def test_racing_promotions_exactly_one_wins(tmp_path: Path) -> None:
    with ociart.Client() as c:
        a = c.push("models/race:a", [_model(tmp_path, "ra")])
        b = c.push("models/race:b", [_model(tmp_path, "rb")])
    for round_ in range(5):
        barrier = threading.Barrier(2)
        outcomes: dict[str, object] = {}

        def racer(src: str, name: str, tag: str = f"prod{round_}", barrier: threading.Barrier = barrier,
                  outcomes: dict[str, object] = outcomes) -> None:
            with ociart.Client() as c:
                c.resolve(src)
                barrier.wait()
                try:
                    outcomes[name] = c.promote(src, tag, expect=ABSENT).digest
                except ConflictError as exc:
                    outcomes[name] = exc

        threads = [threading.Thread(target=racer, args=(f"models/race:{n}", n)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [n for n, o in outcomes.items() if isinstance(o, str)]
        lost = [o for o in outcomes.values() if isinstance(o, ConflictError)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        winner = a.digest if won == ["a"] else b.digest
        assert lost[0].current == winner and winner in str(lost[0])
        with ociart.Client() as c:
            assert c.resolve(f"models/race:prod{round_}").digest == winner
            assert [e.digest for e in c.history(f"models/race:prod{round_}")] == [winner]  # the loser recorded nothing


def test_expect_names_the_winner(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    repo = f"{registry.host}/{unique_repo}"
    with ociart.Client() as c:
        a = c.push(f"{repo}:a", [_model(tmp_path, "xa")])
        b = c.push(f"{repo}:b", [_model(tmp_path, "xb")])
        c.promote(f"{repo}:a", "prod")
    p = run_cli("promote", f"{repo}:b", "--to", "prod", "--expect", "absent")
    assert p.returncode == 7 and a.digest in p.stderr, p.stderr
    _ok("promote", f"{repo}:b", "--to", "prod", "--expect", a.digest)
    with ociart.Client() as c:
        assert c.resolve(f"{repo}:prod").digest == b.digest


# -- rollback and promotedTo --------------------------------------------------------------------------------------
def test_rollback_restores_and_promoted_to_refuses_the_demoted(registry: RunningRegistry, unique_repo: str,
                                                               keydir: Path, tmp_path: Path) -> None:
    repo = f"{registry.host}/{unique_repo}"
    rel, pub = keydir / "release.key", keydir / "release.pub"
    sign = ("--sign-key", str(rel))
    with ociart.Client() as c:
        v1 = c.push(f"{repo}:v1", [_model(tmp_path, "r1")], kind="model", sign=str(rel))
        v2 = c.push(f"{repo}:v2", [_model(tmp_path, "r2")], kind="model", sign=str(rel))
    _ok("promote", f"{repo}:v1", "--to", "prod", "--key", str(pub), *sign)
    _ok("promote", f"{repo}:v2", "--to", "prod", "--key", str(pub), *sign)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"apiVersion: ociart.dev/v1alpha1\nkind: VerificationPolicy\nrules:\n"
                      f"  - repositories: ['{repo}']\n    keys: ['{pub}']\n    promotedTo: [prod]\n")
    _ok("verify", f"{repo}@{v2.digest}", "--policy", str(policy))
    out = run_cli("rollback", f"{repo}:prod", "--key", str(pub), *sign, "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["rollback"] is True and res["before"] == v2.digest and res["after"] == v1.digest
    with ociart.Client() as c:
        assert c.resolve(f"{repo}:prod").digest == v1.digest
        entries = c.history(f"{repo}:prod")
    assert [(e.digest, e.previous, e.rollback) for e in entries] == [
        (v1.digest, v2.digest, True), (v2.digest, v1.digest, False), (v1.digest, None, False)]
    # the demoted digest no longer passes; the restored one does
    demoted = run_cli("verify", f"{repo}@{v2.digest}", "--policy", str(policy))
    assert demoted.returncode == 5 and "not promoted to prod" in demoted.stderr and v1.digest in demoted.stderr
    pulled = run_cli("pull", f"{repo}@{v2.digest}", "-o", str(tmp_path / "no"), "--policy", str(policy))
    assert pulled.returncode == 5 and not (tmp_path / "no" / "weights.bin").exists()
    fetched = run_cli("fetch", f"{repo}@{v2.digest}", str(tmp_path / "fetched"), "--policy", str(policy))
    assert fetched.returncode == 5 and "not promoted to prod" in fetched.stderr, fetched.stderr
    assert not (tmp_path / "fetched" / "weights.bin").exists()
    _ok("fetch", f"{repo}:prod", str(tmp_path / "fetched"), "--policy", str(policy))
    assert (tmp_path / "fetched" / "weights.bin").read_bytes() == (tmp_path / "model-r1" / "weights.bin").read_bytes()
    _ok("verify", f"{repo}:prod", "--policy", str(policy))
    # a tag moved by hand to v2 (outside promote): the newest record names v1, so v2 still fails
    with ociart.Client() as c:
        c.tag(f"{repo}@{v2.digest}", "prod")
    moved = run_cli("verify", f"{repo}:prod", "--policy", str(policy))
    assert moved.returncode == 5 and f"the newest promotion into 'prod' names {v1.digest}" in moved.stderr
    # an unsigned promotion record does not satisfy promotedTo
    with ociart.Client() as c:
        c.promote(f"{repo}@{v1.digest}", "prod")
    unsigned = run_cli("verify", f"{repo}:prod", "--policy", str(policy))
    assert unsigned.returncode == 5 and "is not signed by a trusted signer (it is unsigned)" in unsigned.stderr
    rb = [e for e in audit.read() if e.action == "rollback"]
    assert rb and (rb[-1].before, rb[-1].after) == (v2.digest, v1.digest)


# -- promotion into another repository, access control with scoped tokens -----------------------------------------
def test_scoped_tokens_reader_trainer_releaser(registry_factory, keydir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reg = registry_factory(auth="token")
    ts = reg.token_server
    users = {"reader": "reader-pw-31", "trainer": "trainer-pw-47", "releaser": "releaser-pw-59"}
    ts.users.update(users)
    ts.grants = {
        None: [],
        "reader": [("models/*", {"pull"})],
        "trainer": [("models/*-candidates", {"pull", "push"}), ("models/*", {"pull"})],
        "releaser": [("models/*-candidates", {"pull"}), ("models/*", {"pull", "push", "delete"})],
    }
    rel, pub = keydir / "release.key", keydir / "release.pub"
    cand, prod = f"{reg.host}/models/bert-candidates", f"{reg.host}/models/bert"

    def cli(user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "-u", user, "--password-stdin", input=users[user] + "\n")

    model = _model(tmp_path, "tok")
    p = cli("trainer", "push", f"{cand}:c1", str(model), "--kind", "model", "--sign", "--key", str(rel))
    assert p.returncode == 0, p.stderr
    digest = p.stdout.strip()
    outputs = [p]
    # reader: may pull, not push or promote
    outputs.append(p := cli("reader", "pull", f"{cand}:c1", "-o", str(tmp_path / "r")))
    assert p.returncode == 0, p.stderr
    outputs.append(p := cli("reader", "push", f"{cand}:c2", str(model)))
    assert p.returncode == 4 and "missing scope repository:models/bert-candidates:push" in p.stderr, p.stderr
    outputs.append(p := cli("reader", "promote", f"{cand}:c1", "--to", "staging"))
    assert p.returncode == 4 and "missing scope repository:models/bert-candidates:push" in p.stderr, p.stderr
    # trainer: may promote inside the candidates repository, not into production
    outputs.append(p := cli("trainer", "promote", f"{cand}:c1", "--to", "staging", "--key", str(pub)))
    assert p.returncode == 0, p.stderr
    outputs.append(p := cli("trainer", "promote", f"{cand}:staging", "--to", f"{prod}:prod", "--key", str(pub)))
    assert p.returncode == 4 and "missing scope repository:models/bert:push" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    # releaser: pulls candidates, pushes production: blobs, referrers and signatures carried along
    outputs.append(p := cli("releaser", "promote", f"{cand}:staging", "--to", f"{prod}:prod", "--key", str(pub),
                            "--sign-key", str(rel), "--json"))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["after"] == digest
    outputs.append(p := cli("releaser", "verify", f"{prod}:prod", "--key", str(pub), "--require-attestation",
                            PROMOTION_PREDICATE))
    assert p.returncode == 0, p.stderr
    outputs.append(p := cli("releaser", "history", f"{prod}:prod", "--json"))
    assert json.loads(p.stdout)["entries"][0]["digest"] == digest
    outputs.append(p := cli("reader", "history", f"{prod}:prod"))
    assert p.returncode == 0 and digest in p.stdout
    # no secret in any output, audit line or error of this run
    logged = (audit.default_path()).read_text()
    scopes = [r for r in ts.requests if r["authorized_user"]]
    assert scopes, "the token server saw authenticated requests"
    for secret in [*users.values()]:
        for out in outputs:
            assert secret not in out.stdout and secret not in out.stderr
        assert secret not in logged
    for r in ts.requests:  # bearer tokens issued never show up either
        for out in outputs:
            assert "eyJ" not in out.stdout + out.stderr
    assert "eyJ" not in logged


# -- the record verifies with sigstore-js ---------------------------------------------------------------------------
def test_promotion_record_verifies_with_sigstore_js(keydir: Path, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@sigstore" / "verify").is_dir():
        pytest.fail("sigstore-js unavailable: install Node.js and run `npm ci --prefix tests/support/node`",
                    pytrace=False)
    with ociart.Client() as c:
        d = c.push("models/js:c", [_model(tmp_path, "js")])
        res = c.promote("models/js:c", "prod", sign=str(keydir / "release.key"))
        target = c.target(c.ref("models/js:c"))
        node_ = target.get_manifest("models/js", res.record).parse()
        with target.open_blob("models/js", node_.layers[0]) as chunks:
            bundle = b"".join(chunks)
    path = tmp_path / "record.json"
    path.write_bytes(bundle)
    p = subprocess.run([node, str(NODE_DIR / "verify-bundle.js"), str(path), str(keydir / "release.pub"), d.digest,
                        PROMOTION_PREDICATE], check=False, capture_output=True, text=True, timeout=60)
    result = json.loads(p.stdout.strip())
    assert p.returncode == 0 and result["ok"] is True, (result, p.stderr)
    payload = json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
    assert payload["predicate"]["target"] == {"repository": "models/js", "tag": "prod"}
    assert payload["predicate"]["source"]["digest"] == d.digest and payload["predicate"]["previous"] is None


# -- evaluations from attest and from signed reports -----------------------------------------------------------------
def test_signed_report_attests_its_metrics_and_attest_checks_the_schema(keydir: Path, tmp_path: Path) -> None:
    rel, pub = keydir / "release.key", keydir / "release.pub"
    with ociart.Client() as c:
        m = c.push("models/rep:c", [_model(tmp_path, "rep")], kind="model", sign=str(rel))
    report = tmp_path / "report"
    report.mkdir()
    (report / "results.json").write_text('{"accuracy": 0.93}')
    _ok("push", "models/rep:report-1", str(report), "--kind", "report", "--subject", "models/rep:c",
        "--metric", "accuracy=0.93", "--sign", "--key", str(rel))
    dry = run_cli("promote", "models/rep:c", "--to", "prod", "--key", str(pub), "--gate", "accuracy>0.92",
                  "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    gates = {g["gate"]: g for g in json.loads(dry.stdout)["gates"]}
    assert gates["accuracy>0.92"]["passed"] and "accuracy=0.93" in gates["accuracy>0.92"]["detail"]
    bad = tmp_path / "eval.json"
    bad.write_text('{"metrics": {"accuracy": "high"}, "timestamp": "2026-12-01T00:00:00Z"}')
    p = run_cli("attest", "models/rep:c", "--type", EVALUATION_PREDICATE, "--predicate", str(bad), "--key", str(rel))
    assert p.returncode == 2 and "metrics.accuracy" in p.stderr, p.stderr
    good = tmp_path / "good.json"
    good.write_text('{"metrics": {"f1": 0.8}, "dataset": {"uri": "oci://d", "digest": "sha256:' + "b" * 64 +
                    '"}, "evaluator": "ci", "timestamp": "2026-12-01T00:00:00Z"}')
    _ok("attest", "models/rep:c", "--type", EVALUATION_PREDICATE, "--predicate", str(good), "--key", str(rel))
    with ociart.Client() as c:
        res = c.promote(m.ref, "prod", keys=[pub], gates=["f1>=0.8", "accuracy>0.9"])
    assert res.passed and res.after == m.digest


# -- the audit log's registry copy -----------------------------------------------------------------------------------
def test_audit_registry_copy_detects_truncation(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    audit_repo = f"{registry.host}/{unique_repo}-audit"
    monkeypatch.setenv("OCIART_AUDIT_REPO", audit_repo)
    with ociart.Client() as c:
        c.push("models/aud:a", [_model(tmp_path, "aa")])
        c.promote("models/aud:a", "prod")
        c.tag("models/aud:a", "v1")
    log = audit.default_path()
    lines = log.read_bytes().splitlines()
    assert len(lines) == 3
    head = audit.registry_head(audit_repo)
    assert head is not None and head.sequence == 3 and head.hash == audit.head()
    out = json.loads(_ok("audit", "verify", "--json"))  # --audit-repo from OCIART_AUDIT_REPO
    assert out["registry_sequence"] == 3 and out["not_in_registry"] == 0
    # truncation: the last line dropped; the chain alone is fine, the registry head says otherwise
    log.write_bytes(b"".join(x + b"\n" for x in lines[:2]))
    audit.verify()
    p = run_cli("audit", "verify")
    assert p.returncode == 5 and "truncated: it has 2 line(s), the registry copy" in p.stderr, p.stderr
    # truncated and appended to: line 3 differs from the registry's head
    monkeypatch.delenv("OCIART_AUDIT_REPO")
    audit.append("tag", "models/aud:v9")
    p = run_cli("audit", "verify", "--audit-repo", audit_repo, env={"OCIART_AUDIT_REPO": ""})
    assert p.returncode == 5 and "line 3 differs from the registry copy's head" in p.stderr, p.stderr
    # edited, dropped and reordered lines are named by the chain check through the CLI
    log.write_bytes(b"".join(x + b"\n" for x in [lines[0], lines[2], lines[1]]))
    p = run_cli("audit", "verify", env={"OCIART_AUDIT_REPO": ""})
    assert p.returncode == 5 and "chain broken at line 2" in p.stderr
    shown = json.loads(_ok("audit", "show", "--action", "promote", "--repository", "models/aud", "--json",
                           env={"OCIART_AUDIT_REPO": ""}))
    assert [e["action"] for e in shown["entries"]] == ["promote"]


def test_history_tag_names() -> None:
    assert history_tag("prod") == "_promotions.prod"
    long = "t" * 128
    assert len(history_tag(long)) <= 128 and history_tag(long) != history_tag("t" * 127)


def test_refused_promotion_leaves_tag_and_library_raises(tmp_path: Path, keydir: Path) -> None:
    with ociart.Client() as c:
        a = c.push("models/lib:a", [_model(tmp_path, "la")], sign=str(keydir / "release.key"))
        c.promote("models/lib:a", "prod")
        b = c.push("models/lib:b", [_model(tmp_path, "lb")])
        with pytest.raises(VerificationError) as info:
            c.promote("models/lib:b", "prod", keys=[keydir / "release.pub"], gates=["loss<0.1"])
        assert {r.split(":")[0] for r in info.value.rejected} == {"signature", "loss<0.1"}
        assert c.resolve("models/lib:prod").digest == a.digest
        assert len(c.history("models/lib:prod")) == 1
        assert b.digest not in {e.digest for e in c.history("models/lib:prod")}


# -- promote --with-image: both forms move together, through the same gates -----------------------------------------
def test_promote_with_image_moves_both_forms_through_the_same_gates(registry: RunningRegistry, unique_repo: str,
                                                                     keydir: Path, tmp_path: Path) -> None:
    repo, img_repo = f"{registry.host}/{unique_repo}", f"{registry.host}/{unique_repo}-image"
    rel, pub, trainer = keydir / "release.key", keydir / "release.pub", keydir / "trainer.key"
    with ociart.Client() as c:
        art = c.push(f"{repo}:c1", [_model(tmp_path, "img")], kind="model", with_image=f"{img_repo}:c1",
                     sign=str(rel))
        image = c.resolve(f"{img_repo}:c1").digest
        _evaluate(c, art.ref, rel, 0.8)
        # below threshold: refused, neither tag moves
        out = run_cli("promote", f"{repo}:c1", "--to", "prod", "--with-image", "--key", str(pub),
                      "--gate", "accuracy>=0.9")
        assert out.returncode == 5 and "accuracy>=0.9" in out.stderr, out.stderr
        for r in (repo, img_repo):
            assert run_cli("resolve", f"{r}:prod").returncode == 3
        _evaluate(c, art.ref, rel, 0.93, when="2026-12-02T00:00:00Z")
    out = run_cli("promote", f"{repo}:c1", "--to", "prod", "--with-image", "--key", str(pub), "--gate",
                  "accuracy>=0.9", "--sign-key", str(rel), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["after"] == art.digest and result["image"]["after"] == image
    assert {"image:link", "image:signature"} <= {g["gate"] for g in result["gates"]}
    assert _raw_manifest(registry, f"{unique_repo}-image", "prod") == _raw_manifest(registry, f"{unique_repo}-image",
                                                                                  "c1")
    with ociart.Client() as c:
        assert [e.digest for e in history(c.target(c.ref(img_repo)), f"{unique_repo}-image", "prod")] == [image]

    # an image form signed only by an untrusted key does not move, and neither does the artifact
    with ociart.Client() as c:
        art2 = c.push(f"{repo}:c2", [_model(tmp_path, "img2")], kind="model", with_image=f"{img_repo}:c2",
                      sign=str(trainer))
        c.sign(art2.ref, str(rel))  # the artifact is release-signed; its image form is not
        _evaluate(c, art2.ref, rel, 0.97, when="2026-12-03T00:00:00Z")
    out = run_cli("promote", f"{repo}:c2", "--to", "prod", "--with-image", "--key", str(pub), "--gate",
                  "accuracy>=0.9")
    assert out.returncode == 5 and "refused by 1 gate(s)" in out.stderr and "image:signature:" in out.stderr, \
        out.stderr  # the artifact's own gates pass: only the image's signature refuses
    with ociart.Client() as c:
        assert c.resolve(f"{repo}:prod").digest == art.digest and c.resolve(f"{img_repo}:prod").digest == image
    # an artifact with no image form: one clear line
    with ociart.Client() as c:
        c.push(f"{repo}:plain", [_model(tmp_path, "plain")], kind="model")
    out = run_cli("promote", f"{repo}:plain", "--to", "prod", "--with-image")
    assert out.returncode == 3 and "no image form is linked" in out.stderr, out.stderr
    out = run_cli("promote", f"{repo}:c1", "--to", f"{repo}-other:prod", "--with-image")
    assert out.returncode == 2 and "give --to as a tag" in out.stderr
