"""Lineage and provenance: capture on push, the in-toto/SLSA statement attached as a referrer, lineage queries up
and down a dataset → preprocessor → model → report chain, copies, concurrent attaches, the run API and the
checkpoint uploader.

Pushes go through the CLI (``run_cli``) where a flag is what is being tested, through the library elsewhere.
Statements are read back from the registry as stored bytes (the referrer's layer), not re-serialised, before they
are validated against JSON Schemas written here from the in-toto Statement v1 and SLSA Provenance v1 specs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import run_cli, write_random
from jsonschema import Draft202012Validator
from support.faultproxy import FaultProxy
from support.registry import RunningRegistry

import ociart
from ociart.errors import NotFoundError
from ociart.lineage.graph import REPORT_TYPE
from ociart.oci import EMPTY_JSON_DIGEST, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, Descriptor
from ociart.targets.referrers import list_referrers

INTOTO = "application/vnd.in-toto+json"
DATASET_TYPE = "application/vnd.ociart.dataset.manifest.v1+json"
PREPROCESSOR_TYPE = "application/vnd.ociart.preprocessor.manifest.v1+json"
REMOTE = "https://user:token@example.com/org/repo.git"
CLEAN_REMOTE = "https://example.com/org/repo.git"
A_REVISION = "org.opencontainers.image.revision"
A_SOURCE = "org.opencontainers.image.source"
A_BRANCH = "dev.ociart.git.branch"
A_DIRTY = "dev.ociart.git.dirty"
A_RUN_ID = "dev.ociart.run.id"
A_TRACKER = "dev.ociart.run.tracker"
A_INPUTS = "dev.ociart.inputs+json"
A_PARAMS = "dev.ociart.params.digest"
A_METRICS = "dev.ociart.metrics+json"
A_STEP = "dev.ociart.checkpoint.step"
LINEAGE_KEYS = {A_REVISION, A_SOURCE, A_BRANCH, A_DIRTY, A_RUN_ID, A_TRACKER, A_INPUTS, A_PARAMS}


@pytest.fixture(autouse=True)
def _auto_referrers_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIART_REFERRERS", raising=False)  # capability detection per registry


# -- JSON Schemas -----------------------------------------------------------------------------------
# in-toto ResourceURI / TypeURI (spec/v1/field_types.md): an RFC 3986 URI, scheme in lower case (a scheme, ':',
# then no whitespace: a reference such as "127.0.0.1:5000/repo@sha256:..." or "git@host:org/x" is no URI).
URI = {"type": "string", "pattern": r"^[a-z][a-z0-9+.-]*:[^\s]+$"}
# in-toto parsing rules: producers may add extension fields whose names are TypeURIs
_URI_NAMED = {"^[a-z][a-z0-9+.-]*:": {}}
# RFC 3339 date-time (checked again with datetime in _rfc3339 below).
TIMESTAMP = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"}

#: in-toto Attestation Framework v1, spec/v1/statement.md and resource_descriptor.md.
STATEMENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {
        # DigestSet: algorithm -> lower-case hex; at least one entry
        "DigestSet": {
            "type": "object", "minProperties": 1,
            "properties": {"sha256": {"type": "string", "pattern": "^[a-f0-9]{64}$"},
                           "sha512": {"type": "string", "pattern": "^[a-f0-9]{128}$"},
                           "gitCommit": {"type": "string", "pattern": "^([a-f0-9]{40}|[a-f0-9]{64})$"}},
            "additionalProperties": {"type": "string", "pattern": "^[a-f0-9]+$"},
        },
        # ResourceDescriptor: uri, digest, name, downloadLocation, mediaType, content, annotations;
        # at least one of uri, digest, content
        "ResourceDescriptor": {
            "type": "object",
            "properties": {
                "uri": URI,
                "digest": {"$ref": "#/$defs/DigestSet"},
                "name": {"type": "string", "minLength": 1},
                "downloadLocation": URI,
                "mediaType": {"type": "string", "pattern": r"^[\w.+-]+/[\w.+-]+$"},
                "content": {"type": "string", "contentEncoding": "base64"},
                "annotations": {"type": "object"},
            },
            "patternProperties": _URI_NAMED,
            "additionalProperties": False,
            "anyOf": [{"required": ["uri"]}, {"required": ["digest"]}, {"required": ["content"]}],
        },
    },
    "type": "object",
    "required": ["_type", "subject", "predicateType"],  # predicate: optional in Statement v1.1 (SLSA needs it)
    "properties": {
        "_type": {"const": "https://in-toto.io/Statement/v1"},
        # each subject MUST have a digest; matching is by digest
        "subject": {"type": "array", "minItems": 1,
                    "items": {"allOf": [{"$ref": "#/$defs/ResourceDescriptor"}, {"required": ["digest"]}]}},
        "predicateType": URI,
        "predicate": {"type": "object"},
    },
    "patternProperties": _URI_NAMED,
    "additionalProperties": False,
}

_RD = {"$ref": "#/$defs/ResourceDescriptor"}
_EXTENSION = {"^[a-z0-9]+_[A-Za-z0-9_]+$": {}}  # SLSA: extension fields are "<vendor>_<name>"

#: SLSA Provenance v1 (https://slsa.dev/spec/v1.1/provenance), the predicate of the statement.
PROVENANCE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": STATEMENT_SCHEMA["$defs"],
    "type": "object",
    "required": ["buildDefinition", "runDetails"],
    "properties": {
        "buildDefinition": {
            "type": "object",
            "required": ["buildType", "externalParameters"],
            "properties": {
                "buildType": URI,
                "externalParameters": {"type": "object"},
                "internalParameters": {"type": "object"},
                "resolvedDependencies": {"type": "array", "items": _RD},
            },
            "patternProperties": _EXTENSION,
            "additionalProperties": False,
        },
        "runDetails": {
            "type": "object",
            "required": ["builder"],
            "properties": {
                "builder": {
                    "type": "object", "required": ["id"],
                    "properties": {"id": URI, "builderDependencies": {"type": "array", "items": _RD},
                                   "version": {"type": "object", "additionalProperties": {"type": "string"}}},
                    "patternProperties": _EXTENSION,
                    "additionalProperties": False,
                },
                "metadata": {
                    "type": "object",
                    "properties": {"invocationId": {"type": "string"}, "startedOn": TIMESTAMP,
                                   "finishedOn": TIMESTAMP},
                    "patternProperties": _EXTENSION,
                    "additionalProperties": False,
                },
                "byproducts": {"type": "array", "items": _RD},
            },
            "patternProperties": _EXTENSION,
            "additionalProperties": False,
        },
    },
    "patternProperties": _EXTENSION,
    "additionalProperties": False,
}

#: ociart's buildType https://ociart.dev/buildtypes/ml-training/v1 (docs/spec.md §6.2): exactly these fields.
ML_TRAINING_EXTERNAL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "required": ["artifact", "kind"],
    "properties": {
        "artifact": {"type": "string"}, "kind": {"type": "string"}, "entryPoint": {"type": "string"},
        "args": {"type": "array", "items": {"type": "string"}}, "hyperparameters": {"type": "object"},
        "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
    },
    "additionalProperties": False,
}

for _schema in (STATEMENT_SCHEMA, PROVENANCE_SCHEMA, ML_TRAINING_EXTERNAL_PARAMETERS):
    Draft202012Validator.check_schema(_schema)


def _errors(schema: dict[str, Any], doc: Any) -> list[str]:
    return [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in Draft202012Validator(schema).iter_errors(doc)]


def _rfc3339(value: str) -> dt.datetime:
    assert re.fullmatch(TIMESTAMP["pattern"], value), value
    return dt.datetime.fromisoformat(value.upper())


def _nulls(doc: Any, path: str = "") -> list[str]:
    """in-toto: unset and null mean the same; a producer should leave absent fields out."""
    if doc is None:
        return [path or "/"]
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in _nulls(v, f"{path}/{k}")]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in _nulls(v, f"{path}/{i}")]
    return []


def check_statement(stmt: dict[str, Any], subject_digest: str) -> None:
    """Valid in-toto Statement v1 + SLSA Provenance v1 + ociart ml-training buildType, about ``subject_digest``."""
    assert not _errors(STATEMENT_SCHEMA, stmt), _errors(STATEMENT_SCHEMA, stmt)
    assert stmt["predicateType"] == "https://slsa.dev/provenance/v1" and "predicate" in stmt
    assert not _errors(PROVENANCE_SCHEMA, stmt["predicate"]), _errors(PROVENANCE_SCHEMA, stmt["predicate"])
    bd = stmt["predicate"]["buildDefinition"]
    assert bd["buildType"] == "https://ociart.dev/buildtypes/ml-training/v1"
    assert not _errors(ML_TRAINING_EXTERNAL_PARAMETERS, bd["externalParameters"])
    assert stmt["subject"] == [{"name": stmt["subject"][0]["name"],
                                "digest": {"sha256": subject_digest.removeprefix("sha256:")}}]
    assert not _nulls(stmt), _nulls(stmt)
    meta = stmt["predicate"]["runDetails"]["metadata"]
    assert _rfc3339(meta["startedOn"]) <= _rfc3339(meta["finishedOn"])


# -- helpers ----------------------------------------------------------------------------------------
def _client() -> ociart.Client:
    return ociart.Client(plain_http=True)


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run ``ociart ARGS --plain-http`` and return stdout (asserting success)."""
    proc = run_cli(*args, "--plain-http", cwd=cwd, env=env)
    assert proc.returncode == 0, f"ociart {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def push(ref: str, directory: Path, kind: str, *flags: str, cwd: Path | None = None,
         env: dict[str, str] | None = None) -> str:
    """``ociart push REF DIR --kind KIND FLAGS`` → the manifest digest."""
    out = cli("push", ref, str(directory), "--kind", kind, *flags, cwd=cwd, env=env).strip()
    assert re.fullmatch(r"sha256:[a-f0-9]{64}", out), out
    return out


def make_dir(root: Path, kind: str, seed: int, extra: dict[str, str] | None = None) -> Path:
    """A small artifact directory of ``kind`` with content unique to ``seed``."""
    root.mkdir(parents=True, exist_ok=True)
    if kind == "dataset":
        (root / "train.csv").write_text("text,label\n" + "".join(f"row {seed}-{i},{i % 2}\n" for i in range(50)))
    elif kind == "preprocessor":
        (root / "tokenizer.json").write_text(json.dumps({"vocab": {f"w{seed}-{i}": i for i in range(20)}}))
    elif kind == "model":
        write_random(root / "model.safetensors", 64 << 10, seed=seed)
        (root / "config.json").write_text(json.dumps({"hidden": 64, "seed": seed}))
    elif kind == "checkpoint":
        write_random(root / "state.bin", 16 << 10, seed=seed)
    elif kind == "report":
        (root / "report.md").write_text(f"# evaluation {seed}\n")
    for name, text in (extra or {}).items():
        (root / name).write_text(text)
    return root


def manifest(c: ociart.Client, ref: str) -> dict[str, Any]:
    _, content = c.manifest(ref)
    return json.loads(content.data)


def annotations(c: ociart.Client, ref: str) -> dict[str, str]:
    return manifest(c, ref).get("annotations") or {}


def stored_statements(c: ociart.Client, ref: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(referrer manifest, statement) for every in-toto referrer of ``ref``, read as stored in the registry."""
    r = c.ref(ref)
    target = c.target(r)
    out = []
    for desc in c.referrers(ref, INTOTO):
        m = json.loads(target.get_manifest(r.repository, desc.digest).data)
        assert len(m["layers"]) == 1
        layer = m["layers"][0]
        with target.open_blob(r.repository, Descriptor.model_validate(layer)) as chunks:
            out.append((m, json.loads(b"".join(chunks))))
    return out


def the_statement(c: ociart.Client, ref: str) -> dict[str, Any]:
    found = stored_statements(c, ref)
    assert len(found) == 1, f"expected one provenance statement on {ref}, found {len(found)}"
    return found[0][1]


def params_digest(params: dict[str, Any]) -> str:
    raw = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def deps(stmt: dict[str, Any]) -> list[dict[str, Any]]:
    return stmt["predicate"]["buildDefinition"].get("resolvedDependencies") or []


def git(root: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(root), "-c", "user.name=Test", "-c", "user.email=test@example.com",
                          *args], check=False, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def code_repo(tmp_path: Path) -> Path:
    """A git repository of training code: one commit on ``main``, origin with credentials in its URL."""
    root = tmp_path / "code"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text("print('training')\n")
    git(root, "add", "train.py")
    git(root, "commit", "-q", "-m", "training code")
    git(root, "remote", "add", "origin", REMOTE)
    return root


def check_dot(text: str) -> set[tuple[str, str]]:
    """Parse the Graphviz subset ``ociart lineage --dot`` writes, strictly; return the edges (by node label)."""
    lines = text.rstrip("\n").split("\n")
    assert re.fullmatch(r"digraph [A-Za-z_][A-Za-z0-9_]* \{", lines[0]), lines[0]
    assert lines[-1] == "}"
    labels: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    for line in lines[1:-1]:
        s = line.strip()
        if m := re.fullmatch(r"([A-Za-z_]\w*) -> ([A-Za-z_]\w*);", s):
            edges.append((m[1], m[2]))
        elif m := re.fullmatch(r'([A-Za-z_]\w*) \[label="((?:[^"\\]|\\.)*)"\];', s):
            assert m[1] not in labels, f"node {m[1]} declared twice"
            labels[m[1]] = m[2]
        else:
            assert re.fullmatch(r'(rankdir=(LR|TB|RL|BT)|node \[shape=\w+\]);', s), f"not DOT: {s!r}"
    assert edges, "no edges"
    for a, b in edges:
        assert a in labels and b in labels, f"edge {a} -> {b} uses an undeclared node"
    return {(labels[a], labels[b]) for a, b in edges}


def tree_edges(node: dict[str, Any]) -> set[tuple[str, str]]:
    """(child, parent) pairs of a lineage JSON tree, nodes named ``kind name``."""
    me = f"{node['kind']} {node['name']}"
    out: set[tuple[str, str]] = set()
    for child in node.get("children", []):
        out.add((f"{child['kind']} {child['name']}", me))
        out |= tree_edges(child)
    return out


def find(node: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    """Every node of a lineage JSON tree whose fields equal ``match``."""
    hits = [node] if all(node.get(k) == v for k, v in match.items()) else []
    for child in node.get("children", []):
        hits += find(child, **match)
    return hits


# -- capture ----------------------------------------------------------------------------------------
def test_push_records_git_commit_source_branch_and_dirty_flag(registry: RunningRegistry, unique_repo: str,
                                                              code_repo: Path, tmp_path: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    model = make_dir(tmp_path / "model", "model", seed=1)
    head = git(code_repo, "rev-parse", "HEAD")
    assert re.fullmatch(r"[a-f0-9]{40}", head)

    clean = push(f"{base}:clean", model, "model", cwd=code_repo)
    (code_repo / "notes.txt").write_text("untracked files do not make the tree dirty\n")
    untracked = push(f"{base}:clean", model, "model", cwd=code_repo)
    (code_repo / "train.py").write_text("print('changed')\n")  # a tracked file modified
    dirty = push(f"{base}:dirty", model, "model", cwd=code_repo)

    with _client() as c:
        a = annotations(c, f"{base}:clean")
        assert a[A_REVISION] == head
        assert a[A_SOURCE] == CLEAN_REMOTE
        assert a[A_BRANCH] == "main"
        assert A_DIRTY not in a
        assert untracked == clean
        assert dirty != clean
        assert annotations(c, f"{base}:dirty")[A_DIRTY] == "true"
        assert {k: v for k, v in annotations(c, f"{base}:dirty").items() if k != A_DIRTY} == a

        clean_stmt = the_statement(c, f"{base}@{clean}")
        code = {"uri": f"git+{CLEAN_REMOTE}@refs/heads/main", "digest": {"gitCommit": head}}
        assert deps(clean_stmt) == [code]
        assert deps(the_statement(c, f"{base}@{dirty}")) == [{**code, "annotations": {"dirty": True}}]
        for digest in (clean, dirty):  # the credentials in the remote URL are nowhere
            raw = json.dumps([manifest(c, f"{base}@{digest}"), the_statement(c, f"{base}@{digest}")])
            assert "token" not in raw and "user:" not in raw


def test_no_git_and_git_dir(registry: RunningRegistry, unique_repo: str, code_repo: Path, tmp_path: Path,
                            isolated_env: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    model = make_dir(tmp_path / "model", "model", seed=2)
    head = git(code_repo, "rev-parse", "HEAD")

    outside = push(f"{base}:outside", model, "model", cwd=isolated_env)  # cwd is in no git repository
    pointed = push(f"{base}:git-dir", model, "model", "--git-dir", str(code_repo), cwd=isolated_env)
    skipped = push(f"{base}:no-git", model, "model", "--no-git", cwd=code_repo)
    with _client() as c:
        assert not LINEAGE_KEYS & set(annotations(c, f"{base}:outside"))
        assert annotations(c, f"{base}:git-dir")[A_REVISION] == head
        assert annotations(c, f"{base}:git-dir")[A_SOURCE] == CLEAN_REMOTE
        assert not LINEAGE_KEYS & set(annotations(c, f"{base}:no-git"))
        assert skipped == outside != pointed
        assert deps(the_statement(c, f"{base}@{pointed}"))[0]["digest"] == {"gitCommit": head}
        for _, stmt in stored_statements(c, f"{base}@{skipped}"):  # ":outside" and ":no-git": one each
            assert stmt["predicate"]["buildDefinition"]["externalParameters"]["artifact"] in (
                f"{base}:outside", f"{base}:no-git")
            assert "resolvedDependencies" not in stmt["predicate"]["buildDefinition"]


@pytest.mark.parametrize(("remote", "recorded"), [
    ("git@example.com:org/repo.git", "ssh://example.com/org/repo.git"),  # scp-like, GitHub's default
    ("ssh://git:secret@example.com:2222/org/repo.git", "ssh://example.com:2222/org/repo.git"),
    ("../upstream.git", None),  # a local path, relative to the repository: a file:// URL
])
def test_remote_forms_are_recorded_as_urls(registry: RunningRegistry, unique_repo: str, code_repo: Path,
                                           tmp_path: Path, remote: str, recorded: str | None) -> None:
    git(code_repo, "remote", "set-url", "origin", remote)
    recorded = recorded or (tmp_path / "upstream.git").as_uri()
    digest = push(f"{registry.host}/{unique_repo}:v1", make_dir(tmp_path / "model", "model", seed=9), "model",
                  cwd=code_repo)
    with _client() as c:
        assert annotations(c, f"{registry.host}/{unique_repo}:v1")[A_SOURCE] == recorded
        stmt = the_statement(c, f"{registry.host}/{unique_repo}:v1")
    check_statement(stmt, digest)
    assert deps(stmt)[0]["uri"] == f"git+{recorded}@refs/heads/main"
    assert "secret" not in json.dumps(stmt)


def test_run_id_named_and_generated(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    model = make_dir(tmp_path / "model", "model", seed=3)

    named = push(f"{base}:named", model, "model", "--run-id", "exp-7")
    again = push(f"{base}:named", model, "model", "--run-id", "exp-7")
    first = push(f"{base}:generated", model, "model")
    second = push(f"{base}:generated", model, "model")
    with _client() as c:
        a = annotations(c, f"{base}:named")
        assert a[A_RUN_ID] == "exp-7" and a[A_TRACKER] == "ociart"
        assert again == named
        assert the_statement(c, f"{base}@{named}")["predicate"]["runDetails"]["metadata"]["invocationId"] == \
            "ociart:exp-7"

        # a generated run id stays out of the manifest: the same directory keeps its digest ...
        assert first == second != named
        assert not {A_RUN_ID, A_TRACKER} & set(annotations(c, f"{base}:generated"))
        # ... and the second push adds no second statement (one referrer in all, a generated id in it)
        assert len(c.referrers(f"{base}@{first}")) == 1
        invocation = the_statement(c, f"{base}@{first}")["predicate"]["runDetails"]["metadata"]["invocationId"]
        assert re.fullmatch(r"ociart:[a-f0-9]{32}", invocation)


def test_params_from_flags_yaml_and_json(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    model = make_dir(tmp_path / "model", "model", seed=4)
    params = {"lr": 0.0003, "epochs": 3, "layers": [256, 128], "optimizer": {"name": "adamw", "betas": [0.9, 0.999]},
              "warmup": True, "note": "baseline ü"}
    (tmp_path / "params.yaml").write_text(
        "lr: 0.0003\nepochs: 3\nlayers: [256, 128]\noptimizer:\n  name: adamw\n  betas: [0.9, 0.999]\n"
        "warmup: true\nnote: baseline ü\n", encoding="utf-8")
    (tmp_path / "params.json").write_text(json.dumps(params, indent=1))

    from_yaml = push(f"{base}:file", model, "model", "--params-file", str(tmp_path / "params.yaml"))
    from_json = push(f"{base}:file", model, "model", "--params-file", str(tmp_path / "params.json"))
    flags = push(f"{base}:flags", model, "model", "--params-file", str(tmp_path / "params.yaml"),
                 "--param", "epochs=5", "--param", "scheduler=cosine")
    with _client() as c:
        assert annotations(c, f"{base}:file")[A_PARAMS] == params_digest(params)
        assert from_json == from_yaml  # same parameters, same summary, same manifest (and no second statement)
        st = the_statement(c, f"{base}@{from_yaml}")
        assert st["predicate"]["buildDefinition"]["externalParameters"]["hyperparameters"] == params

        overridden = {**params, "epochs": "5", "scheduler": "cosine"}  # flag values are strings
        assert annotations(c, f"{base}:flags")[A_PARAMS] == params_digest(overridden)
        st = the_statement(c, f"{base}@{flags}")
        assert st["predicate"]["buildDefinition"]["externalParameters"]["hyperparameters"] == overridden

    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    proc = run_cli("push", f"{base}:bad", str(model), "--kind", "model", "--params-file", str(bad), "--plain-http")
    assert proc.returncode != 0 and "mapping" in proc.stderr
    with _client() as c, pytest.raises(NotFoundError):
        c.resolve(f"{base}:bad")


def test_inputs_are_pinned_at_push_time_and_files_recorded_by_sha256(registry: RunningRegistry, unique_repo: str,
                                                                     tmp_path: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    data_v1 = push(f"{base}-data:v1", make_dir(tmp_path / "d1", "dataset", seed=1), "dataset")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\nc\n")
    model = push(f"{base}:v1", make_dir(tmp_path / "model", "model", seed=5), "model",
                 "--input", f"train={base}-data:v1", "--input", f"{base}-data:v1", "--input-file", str(vocab))
    # the input's tag moves on afterwards
    data_v2 = push(f"{base}-data:v1", make_dir(tmp_path / "d2", "dataset", seed=2), "dataset")
    assert data_v2 != data_v1

    pinned = f"{base}-data:v1@{data_v1}"
    with _client() as c:
        assert c.resolve(f"{base}-data:v1").digest == data_v2
        inputs = json.loads(annotations(c, f"{base}:v1")[A_INPUTS])
        assert inputs == [
            {"name": "train", "ref": pinned, "digest": data_v1, "artifactType": DATASET_TYPE},
            {"name": f"{unique_repo}-data", "ref": pinned, "digest": data_v1, "artifactType": DATASET_TYPE},
        ]  # the input file is only in the statement
        st = the_statement(c, f"{base}@{model}")
        recorded = [d for d in deps(st) if d.get("mediaType") == DATASET_TYPE]
        assert [d["digest"] for d in recorded] == [{"sha256": data_v1.removeprefix("sha256:")}] * 2
        assert [d["uri"] for d in recorded] == [f"oci://{pinned}"] * 2
        files = [d for d in deps(st) if d["uri"].startswith("file:")]
        assert files == [{"name": "vocab.txt", "uri": vocab.resolve().as_uri(),
                          "digest": {"sha256": hashlib.sha256(b"a\nb\nc\n").hexdigest()},
                          "annotations": {"size": 6}}]
        tree = c.lineage(f"{base}:v1").model_dump(mode="json")
        assert {n["digest"] for n in find(tree, kind="dataset")} == {data_v1}  # never the tag's new target

    missing = run_cli("push", f"{base}:v2", str(tmp_path / "model"), "--kind", "model",
                      "--input", f"{base}-data:no-such-tag", "--plain-http")
    assert missing.returncode != 0 and "no-such-tag" in missing.stderr
    with _client() as c, pytest.raises(NotFoundError):
        c.resolve(f"{base}:v2")  # capture failed before anything was pushed


def test_environment_is_recorded(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    image = "sha256:" + "ab" * 32
    digest = push(f"{base}:v1", make_dir(tmp_path / "model", "model", seed=6), "model",
                  env={"OCIART_IMAGE_DIGEST": image, "CUDA_VERSION": "12.4", "NVIDIA_DRIVER_VERSION": "550.54"})
    with _client() as c:
        env = the_statement(c, f"{base}@{digest}")["predicate"]["buildDefinition"]["internalParameters"][
            "environment"]
    assert env["python"] == platform.python_version()
    assert env["implementation"] == platform.python_implementation()
    assert env["machine"] == platform.machine()
    packages = env["packages"]
    assert packages == sorted(packages) and len(set(packages)) == len(packages)
    assert all(re.fullmatch(r"[^=\sA-Z]+==[^=\s]+", p) for p in packages), packages
    assert f"ociart=={ociart.__version__}" in packages
    assert f"httpx=={httpx.__version__}" in packages
    assert env["packagesDigest"] == "sha256:" + hashlib.sha256("\n".join(packages).encode()).hexdigest()
    assert env["image"] == image and env["cuda"] == "12.4" and env["driver"] == "550.54"


# -- the statement ----------------------------------------------------------------------------------
def test_provenance_statement_shape_and_referrer(registry: RunningRegistry, unique_repo: str, code_repo: Path,
                                                 tmp_path: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    data = push(f"{base}-data:v1", make_dir(tmp_path / "data", "dataset", seed=7), "dataset", cwd=code_repo)
    (tmp_path / "extra.bin").write_bytes(b"\x00\x01")
    digest = push(f"{base}:v1", make_dir(tmp_path / "model", "model", seed=7), "model", "--input",
                  f"train={base}-data:v1", "--input-file", str(tmp_path / "extra.bin"), "--param", "lr=0.1",
                  "--metric", "accuracy=0.9", "--run-id", "r-1", cwd=code_repo)
    with _client() as c:
        subject = c.resolve(f"{base}:v1")
        assert subject.digest == digest
        found = stored_statements(c, f"{base}:v1")
        assert len(found) == 1
        referrer, stmt = found[0]
        check_statement(stmt, digest)
        check_statement(the_statement(c, f"{base}-data@{data}"), data)

        # the referrer: artifactType in-toto, the empty config, one in-toto layer, subject = the artifact
        assert referrer["mediaType"] == OCI_MANIFEST
        assert referrer["artifactType"] == INTOTO
        assert referrer["config"] == {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2}
        assert [layer["mediaType"] for layer in referrer["layers"]] == [INTOTO]
        assert referrer["subject"] == {"mediaType": subject.mediaType, "digest": digest, "size": subject.size}
        assert referrer["annotations"]["dev.ociart.predicateType"] == "https://slsa.dev/provenance/v1"
        _rfc3339(referrer["annotations"]["org.opencontainers.image.created"])

        assert stmt["subject"] == [{"name": base, "digest": {"sha256": digest.removeprefix("sha256:")}}]
        ext = stmt["predicate"]["buildDefinition"]["externalParameters"]
        assert ext == {"artifact": f"{base}:v1", "kind": "model", "entryPoint": "ociart push",
                       "hyperparameters": {"lr": "0.1"}, "metrics": {"accuracy": 0.9}}
        assert stmt["predicate"]["runDetails"]["builder"] == {"id": "https://ociart.dev/builders/ociart-push/v1",
                                                             "version": {"ociart": ociart.__version__}}
        assert stmt["predicate"]["runDetails"]["metadata"]["invocationId"] == "ociart:r-1"
        code, dataset, extra = deps(stmt)
        assert code == {"uri": f"git+{CLEAN_REMOTE}@refs/heads/main",
                        "digest": {"gitCommit": git(code_repo, "rev-parse", "HEAD")}}
        assert dataset["name"] == "train" and dataset["mediaType"] == DATASET_TYPE
        assert dataset["digest"] == {"sha256": data.removeprefix("sha256:")}
        assert dataset["uri"] == f"oci://{base}-data:v1@{data}"  # a URI (lineage-lifecycle.md §1.1 mapping)
        assert extra["uri"] == (tmp_path / "extra.bin").as_uri() and extra["name"] == "extra.bin"
        attached = [d.digest for d in c.referrers(f"{base}:v1", INTOTO)]
        # the library's view is the same document
        assert c.provenance(f"{base}:v1").model_dump(mode="json", by_alias=True, exclude_none=True) == stmt

    printed = cli("provenance", f"{base}:v1")
    assert json.loads(printed) == stmt
    listed = json.loads(cli("referrers", f"{base}:v1", "--artifact-type", INTOTO, "--json"))["referrers"]
    assert [(e["digest"], e["artifactType"]) for e in listed] == [(attached[0], INTOTO)]

    push(f"{base}:bare", make_dir(tmp_path / "bare", "model", seed=8), "model", "--no-provenance", cwd=code_repo)
    with _client() as c:
        assert annotations(c, f"{base}:bare")[A_REVISION]  # the summary is written either way
        assert c.referrers(f"{base}:bare") == []
    missing = run_cli("provenance", f"{base}:bare", "--plain-http")
    assert missing.returncode != 0 and "no provenance" in missing.stderr


# -- the chain dataset -> preprocessor -> model -> report ----------------------------------------------
@pytest.fixture(params=["distribution", "api"])
def chain_host(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(mode, host): a registry without the referrers API (distribution 2.8.2: the tag-schema fallback) or with
    it (the in-process fake)."""
    if request.param == "distribution":
        return "tag", request.getfixturevalue("registry").host
    return "api", request.getfixturevalue("fake_registry").host


def build_chain(host: str, tmp_path: Path, code_repo: Path) -> dict[str, Any]:
    """train, test (datasets) → tokenizer (preprocessor) → clf (model) ← evaluated by clf-eval (report).

    Datasets and the preprocessor live under ``data-<id>/``, the model and report under ``models-<id>/``."""
    u = uuid.uuid4().hex[:8]
    data, models = f"{host}/data-{u}", f"{host}/models-{u}"
    (tmp_path / "params.yaml").write_text("lr: 0.001\nepochs: 4\n")
    out: dict[str, Any] = {"data": data, "models": models, "u": u,
                           "head": git(code_repo, "rev-parse", "HEAD")}
    out["train"] = push(f"{data}/train:v1", make_dir(tmp_path / "train", "dataset", 11), "dataset", cwd=code_repo)
    out["test"] = push(f"{data}/test:v1", make_dir(tmp_path / "test", "dataset", 12), "dataset", cwd=code_repo)
    out["tok"] = push(f"{data}/tokenizer:v1", make_dir(tmp_path / "tok", "preprocessor", 13), "preprocessor",
                      "--input", f"{data}/train:v1", "--param", "vocab_size=8000", cwd=code_repo)
    out["model"] = push(f"{models}/clf:v1", make_dir(tmp_path / "clf", "model", 14), "model",
                        "--input", f"train={data}/train:v1", "--input", f"{data}/tokenizer:v1",
                        "--params-file", str(tmp_path / "params.yaml"), "--run-id", "train-42", cwd=code_repo)
    metrics = {"accuracy": 0.91, "f1": 0.875, "per_class": {"pos": 0.9, "neg": 0.85}}
    out["report"] = push(f"{models}/clf-eval:v1", make_dir(tmp_path / "eval", "report", 15,
                                                           {"metrics.json": json.dumps(metrics)}),
                         "report", "--subject", f"{models}/clf:v1", "--input", f"test={data}/test:v1",
                         cwd=code_repo)
    return out


def test_chain_lineage_up_and_down(chain_host: tuple[str, str], tmp_path: Path, code_repo: Path) -> None:
    mode, host = chain_host
    ch = build_chain(host, tmp_path, code_repo)
    data, models = ch["data"], ch["models"]
    model_ref = f"{models}/clf:v1"

    with _client() as c:
        for ref, digest in ((f"{data}/train:v1", ch["train"]), (f"{data}/tokenizer:v1", ch["tok"]),
                            (model_ref, ch["model"]), (f"{models}/clf-eval:v1", ch["report"])):
            check_statement(the_statement(c, ref), digest)
        # the report: a referrer of the model (also stored in the model's repository), metrics machine-readable
        reports = c.referrers(model_ref, REPORT_TYPE)
        assert [d.digest for d in reports] == [ch["report"]]
        assert json.loads(reports[0].annotations[A_METRICS]) == {"accuracy": 0.91, "f1": 0.875}
        report = manifest(c, f"{models}/clf@{ch['report']}")
        assert report == manifest(c, f"{models}/clf-eval:v1")
        assert report["subject"]["digest"] == ch["model"]
        assert report["annotations"][A_METRICS] == '{"accuracy":0.91,"f1":0.875}'
        assert {d.artifactType for d in c.referrers(model_ref)} == {INTOTO, REPORT_TYPE}
        assert c.target(c.ref(model_ref))._referrers_mode == mode
        index_tags = [t for t in c.tags(f"{models}/clf", all=True) if t.startswith("sha256-")]
        # the fallback index exists only where the registry has no referrers API
        assert index_tags == ([f"sha256-{ch['model'].removeprefix('sha256:')}"] if mode == "tag" else [])

    # upstream, as JSON
    tree = json.loads(cli("lineage", model_ref, "--json"))
    assert (tree["kind"], tree["digest"], tree["ref"]) == ("model", ch["model"], f"{model_ref}@{ch['model']}")
    assert tree["details"]["run"] == "ociart:train-42"
    assert tree["details"]["reports"] == [{"digest": ch["report"], "metrics": {"accuracy": 0.91, "f1": 0.875}}]
    kids = {(n["kind"], n.get("digest")): n for n in tree["children"]}
    assert set(kids) == {("code", ch["head"]), ("dataset", ch["train"]), ("preprocessor", ch["tok"]),
                         ("params", None)}
    assert kids[("params", None)]["details"] == {"lr": 0.001, "epochs": 4}
    assert kids[("dataset", ch["train"])]["details"]["role"] == "train"
    assert kids[("dataset", ch["train"])]["ref"] == f"{data}/train:v1@{ch['train']}"
    tok = kids[("preprocessor", ch["tok"])]
    assert {(n["kind"], n.get("digest")) for n in tok["children"]} == {
        ("code", ch["head"]), ("dataset", ch["train"]), ("params", None)}
    assert find(tok, kind="params")[0]["details"] == {"vocab_size": "8000"}
    assert {n["digest"] for n in find(tree, kind="code")} == {ch["head"]}
    assert not find(tree, kind="missing")

    # upstream, as a tree
    text = cli("lineage", model_ref)
    for needle in (f"data-{ch['u']}/train", f"data-{ch['u']}/tokenizer", ch["head"][:12], "lr=0.001",
                   "vocab_size=8000", ch["report"][:19], "accuracy=0.91", "(as train)"):
        assert needle in text, f"{needle!r} not in:\n{text}"

    # upstream, as dot
    dot = check_dot(cli("lineage", model_ref, "--dot"))
    assert len(dot) == len(tree_edges(tree))

    # downstream from the training set, through both namespaces (the model has a second tag: listed once)
    assert cli("copy", model_ref, f"{models}/clf:prod").strip() == ch["model"]
    down = json.loads(cli("lineage", f"{data}/train:v1", "--downstream", "--repo", f"{data}/tokenizer",
                          "--repo", f"{models}/clf", "--repo", f"{data}/test", "--json"))
    assert down["digest"] == ch["train"]
    assert {n["digest"] for n in find(down, kind="preprocessor")} == {ch["tok"]}
    assert {n["digest"] for n in find(down, kind="model")} == {ch["model"]}
    edges = tree_edges(down)
    tok_name, model_name = f"preprocessor data-{ch['u']}/tokenizer", f"model models-{ch['u']}/clf"
    train_name = f"dataset data-{ch['u']}/train"
    assert edges == {(tok_name, train_name), (model_name, tok_name), (model_name, train_name)}
    assert [n["kind"] for n in down["children"]] == ["preprocessor", "model"]  # model: input of train and tok
    assert len(find(down, digest=ch["model"])) == 2
    assert not find(down, digest=ch["test"])  # unrelated artifacts in the searched repositories stay out
    down_dot = check_dot(cli("lineage", f"{data}/train:v1", "--downstream", "--repo", f"{data}/tokenizer",
                             "--repo", f"{models}/clf", "--dot"))
    assert len(down_dot) == len(edges)
    down_text = cli("lineage", f"{data}/train:v1", "--downstream", "--repo", f"{data}/tokenizer",
                    "--repo", f"{models}/clf")
    assert "built into" in down_text and f"models-{ch['u']}/clf" in down_text

    # the model was built from neither test data nor anything downstream of itself
    none = json.loads(cli("lineage", model_ref, "--downstream", "--repo", f"{data}/tokenizer", "--json"))
    assert none["children"] == []
    usage = run_cli("lineage", model_ref, "--downstream", "--plain-http")
    assert usage.returncode != 0 and "--repo" in usage.stderr


def test_lineage_survives_copy_to_another_registry(registry_factory, tmp_path: Path, code_repo: Path) -> None:
    src, dst = registry_factory(), registry_factory()
    ch = build_chain(src.host, tmp_path, code_repo)
    model_src = f"{ch['models']}/clf:v1"
    model_dst = f"{dst.host}/mirror/clf:v1"
    assert cli("copy", model_src, model_dst).strip() == ch["model"]

    with _client() as c:
        at_src = {(d.digest, d.artifactType) for d in c.referrers(model_src)}
        at_dst = {(d.digest, d.artifactType) for d in c.referrers(model_dst)}
        assert at_dst == at_src and {t for _, t in at_dst} == {INTOTO, REPORT_TYPE}
        assert the_statement(c, model_dst) == the_statement(c, model_src)  # byte-for-byte the same document
        check_statement(the_statement(c, model_dst), ch["model"])
        assert manifest(c, f"{dst.host}/mirror/clf@{ch['report']}")["annotations"][A_METRICS] == \
            '{"accuracy":0.91,"f1":0.875}'

    tree = json.loads(cli("lineage", model_dst, "--json"))
    assert tree["digest"] == ch["model"] and tree["ref"] == f"{model_dst}@{ch['model']}"
    assert tree["details"]["reports"] == [{"digest": ch["report"], "metrics": {"accuracy": 0.91, "f1": 0.875}}]
    # the inputs were recorded where they were at push time: the source registry, pinned by digest
    inputs = [n for n in tree["children"] if n["kind"] in ("dataset", "preprocessor")]
    assert {(n["kind"], n["digest"]) for n in inputs} == {("dataset", ch["train"]), ("preprocessor", ch["tok"])}
    assert all(n["ref"].startswith(f"{src.host}/data-{ch['u']}/") for n in inputs)
    assert {n["kind"] for n in tree["children"]} == {"code", "dataset", "preprocessor", "params"}

    # with the source registry gone the inputs are still listed, by their recorded digests, marked missing
    src.stop()
    gone = run_cli("lineage", model_dst, "--json", "--plain-http", env={"OCIART_RETRY_BUDGET": "1"})
    assert gone.returncode == 0, gone.stderr
    tree = json.loads(gone.stdout)
    missing = {n["digest"]: n for n in tree["children"] if n["kind"] == "missing"}
    assert set(missing) == {ch["train"], ch["tok"]}
    assert all(n["ref"].startswith(f"{src.host}/") for n in missing.values())
    assert {n["kind"] for n in tree["children"]} == {"code", "missing", "params"}


# -- concurrent attaches -----------------------------------------------------------------------------
ATTACH_PROVENANCE = """
import sys, time
import ociart
from ociart.lineage.record import LineageOptions, capture
ref, run_id, go = sys.argv[1], sys.argv[2], float(sys.argv[3])
with ociart.Client(plain_http=True) as c:
    pinned, content = c.manifest(ref)
    captured = capture(c, LineageOptions(run_id=run_id, git=False))
    target = c.target(pinned)
    time.sleep(max(0.0, go - time.time()))
    c._record_provenance(target, c.ref(ref), content, captured, "model")  # what push does after the upload
"""


def test_concurrent_provenance_attaches_both_survive_in_the_fallback_index(registry: RunningRegistry,
                                                                           unique_repo: str,
                                                                           tmp_path: Path) -> None:
    """Two processes attach the statements of two runs (``--run-id a`` and ``b``) to one artifact at the same
    moment: both end up in the ``sha256-<hex>`` index of distribution 2.8.2."""
    base = f"{registry.host}/{unique_repo}"
    with _client() as c:
        subject = c.push(f"{base}:v1", [make_dir(tmp_path / "model", "model", seed=21)], kind="model",
                         lineage=False)
    for round_ in range(2):
        runs = [f"run-{round_}-a", f"run-{round_}-b"]
        go = time.time() + 2.0
        procs = [subprocess.Popen([sys.executable, "-c", ATTACH_PROVENANCE, f"{base}:v1", rid, str(go)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rid in runs]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err

    resp = httpx.get(f"{registry.url}/v2/{unique_repo}/manifests/sha256-{subject.digest.removeprefix('sha256:')}",
                     headers={"Accept": OCI_INDEX}, timeout=10)
    resp.raise_for_status()
    index = resp.json()
    assert index["mediaType"] == OCI_INDEX
    assert len(index["manifests"]) == 4 and {e["artifactType"] for e in index["manifests"]} == {INTOTO}
    with _client() as c:
        found = stored_statements(c, f"{base}:v1")
    runs = sorted(s["predicate"]["runDetails"]["metadata"]["invocationId"] for _, s in found)
    assert runs == ["ociart:run-0-a", "ociart:run-0-b", "ociart:run-1-a", "ociart:run-1-b"]
    for _, stmt in found:
        check_statement(stmt, subject.digest)


# -- the run API and checkpoints -----------------------------------------------------------------------
def test_run_api_records_inputs_params_metrics_and_run_id(registry: RunningRegistry, unique_repo: str,
                                                          tmp_path: Path) -> None:
    base = f"{registry.host}/{unique_repo}"
    data_file = tmp_path / "labels.txt"
    data_file.write_text("pos\nneg\n")
    with _client() as c:
        train = c.push(f"{base}-data:v1", [make_dir(tmp_path / "d1", "dataset", 31)], kind="dataset")
        with ociart.run(name="bert-sst2", params={"lr": 3e-4, "epochs": 2}, client=c) as run:
            assert re.fullmatch(r"[a-f0-9]{32}", run.run_id)
            used = run.use(f"{base}-data:v1", name="train")
            assert used.digest == train.digest
            # the dataset tag moves while training: the run keeps the digest it used
            c.push(f"{base}-data:v1", [make_dir(tmp_path / "d2", "dataset", 32)], kind="dataset")
            run.use_file(data_file)
            run.log_param("seed", 7)
            run.log_metric("accuracy", 0.93)
            run.log_metric("loss", 0.21)
            desc = run.push(f"{base}:v1", make_dir(tmp_path / "model", "model", 33), kind="model")

        a = annotations(c, f"{base}:v1")
        assert a[A_RUN_ID] == run.run_id and a[A_TRACKER] == "ociart"
        assert a[A_PARAMS] == params_digest({"lr": 3e-4, "epochs": 2, "seed": 7})
        assert a["org.opencontainers.image.title"] == "bert-sst2"
        assert json.loads(a[A_INPUTS]) == [{"name": "train", "ref": f"{base}-data:v1@{train.digest}",
                                            "digest": train.digest, "artifactType": DATASET_TYPE}]
        stmt = the_statement(c, f"{base}:v1")
        check_statement(stmt, desc.digest)
        ext = stmt["predicate"]["buildDefinition"]["externalParameters"]
        assert ext["hyperparameters"] == {"lr": 3e-4, "epochs": 2, "seed": 7}
        assert ext["metrics"] == {"accuracy": 0.93, "loss": 0.21}
        assert ext["kind"] == "model" and ext["artifact"] == f"{base}:v1"
        meta = stmt["predicate"]["runDetails"]["metadata"]
        assert meta["invocationId"] == f"ociart:{run.run_id}"
        assert meta["startedOn"] == run.started
        assert [d["digest"]["sha256"] for d in deps(stmt)] == [train.digest.removeprefix("sha256:"),
                                                                 hashlib.sha256(b"pos\nneg\n").hexdigest()]

        named = ociart.run(name="fixed", run_id="my-run-1", client=c)
        with named:
            named.push(f"{base}:named", make_dir(tmp_path / "model2", "model", 34))
        assert annotations(c, f"{base}:named")[A_RUN_ID] == "my-run-1"


def _gate(proxy: FaultProxy) -> threading.Event:
    """Hold every response of ``proxy`` until the returned event is set (the registry has done the work; the
    client just does not hear back): an upload that is as slow as we like."""
    release = threading.Event()

    def hold(value: str) -> str:
        release.wait(timeout=60)
        return value

    proxy.rewrite_header("docker-distribution-api-version", hold)
    return release


def test_checkpoints_never_block_and_keep_last_and_best(registry: RunningRegistry, unique_repo: str,
                                                        tmp_path: Path) -> None:
    dirs = {step: make_dir(tmp_path / f"step-{step}", "checkpoint", seed=100 + step) for step in range(1, 8)}
    loss = {1: 0.5, 2: 0.9, 3: 0.1, 4: 0.8, 5: 0.7, 6: 0.6, 7: 0.65}
    with FaultProxy(registry.url) as proxy, _client() as c:
        release = _gate(proxy)
        try:
            with _client() as through_proxy, ociart.run(name="ckpt", client=through_proxy) as run:
                ck = run.checkpoints(f"{proxy.host}/{unique_repo}", keep_last=2, best="val_loss", mode="min",
                                     max_pending=2)
                held_since = time.monotonic()
                ck.submit(1, dirs[1], {"val_loss": loss[1]})
                deadline = time.monotonic() + 10
                while not proxy.log and time.monotonic() < deadline:  # step 1's upload has started (and hangs)
                    time.sleep(0.01)
                assert proxy.log
                took = []
                for step in (2, 3, 4, 5):
                    t0 = time.perf_counter()
                    ck.submit(step, dirs[step], {"val_loss": loss[step]})
                    took.append(time.perf_counter() - t0)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - held_since)))
                assert not ck.pushed  # nothing has finished: every submit returned while step 1 was uploading
                assert max(took) < 0.25, took
                # queue of 2: step 4 pushed out the oldest waiting (2); step 5 would push out 3, the best: 4 goes
                assert ck.dropped == [2, 4]
                release.set()
                ck.flush()
                assert sorted(ck.pushed) == [3, 5] and ck.deleted == [1]  # last 2 = {3, 5}, best = 3
                for step in (6, 7):
                    ck.submit(step, dirs[step], {"val_loss": loss[step]})
                    ck.flush()
                assert sorted(ck.pushed) == [3, 6, 7]  # last 2 = {6, 7}, best = 3
                assert sorted(ck.deleted) == [1, 5]
                kept = {s: ck.pushed[s][0] for s in ck.pushed}
        finally:
            release.set()  # never leave the uploader hanging on a failed assertion

        repo = f"{registry.host}/{unique_repo}"
        tags = c.tags(repo)
        assert tags == sorted(f"ckpt-{run.run_id}-{s}" for s in (3, 6, 7))
        for step, digest in kept.items():
            assert c.resolve(f"{repo}:ckpt-{run.run_id}-{step}").digest == digest
            a = annotations(c, f"{repo}:ckpt-{run.run_id}-{step}")
            assert a[A_STEP] == str(step) and a[A_RUN_ID] == run.run_id
            assert json.loads(a[A_METRICS]) == {"val_loss": loss[step]}
            stmt = the_statement(c, f"{repo}@{digest}")
            assert stmt["predicate"]["buildDefinition"]["externalParameters"]["metrics"] == {"val_loss": loss[step]}
        # deleted steps are gone with what was attached to them: their provenance statements (PUT by digest) and
        # the sha256-<hex> fallback indexes listing them; the kept ones keep theirs
        for step in (1, 5):
            with pytest.raises(NotFoundError):
                c.resolve(f"{repo}:ckpt-{run.run_id}-{step}")
        statements = {e["path"].rsplit("/", 1)[1] for e in proxy.find("PUT", f"/{unique_repo}/manifests/sha256:")}
        from ociart.lifecycle.runstatus import RUN_STATUS_TYPE

        status = {d.digest for digest in kept.values() for d in c.referrers(f"{repo}@{digest}", RUN_STATUS_TYPE)}
        assert len(status) == 3 and status < statements  # the run's end, recorded on each step it kept
        statements -= status
        assert len(statements) == 5  # one per uploaded step: 1, 3, 5, 6, 7
        kept_statements = {d.digest for digest in kept.values() for d in c.referrers(f"{repo}@{digest}", INTOTO)}
        assert len(kept_statements) == 3 and kept_statements < statements
        for digest in statements - kept_statements:
            with pytest.raises(NotFoundError):
                c.resolve(f"{repo}@{digest}")
        assert c.tags(repo, all=True) == sorted([*tags, *(f"sha256-{d.removeprefix('sha256:')}" for d in
                                                          kept.values())])
        for step in (2, 4):  # dropped: never uploaded
            assert not proxy.find("PUT", f"/manifests/ckpt-{run.run_id}-{step}")


def test_checkpoint_errors_surface_on_close(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    with FaultProxy(registry.url) as proxy:
        proxy.inject_status(f"/{unique_repo}/manifests/ckpt-", 403, times=10, method="PUT")
        with pytest.raises(ociart.OciartError) as caught, _client() as through_proxy, \
                ociart.run(name="failing", client=through_proxy) as run:
            ck = run.checkpoints(f"{proxy.host}/{unique_repo}", keep_last=1)
            ck.submit(1, make_dir(tmp_path / "s1", "checkpoint", seed=1))
            ck.flush()  # the training loop goes on: the failure is kept, not raised here
            assert len(ck.errors) == 1 and not ck.pushed
            ck.submit(2, make_dir(tmp_path / "s2", "checkpoint", seed=2))
        assert caught.value is ck.errors[0]
        assert len(ck.errors) == 2
        with pytest.raises(ociart.UsageError):
            ck.submit(3, tmp_path / "s1")  # closed with the run


def test_checkpoint_retention_in_the_embedded_store(tmp_path: Path) -> None:
    """The same retention without a registry: deleted steps leave no manifest and no referrer in the store."""
    with _client() as c, ociart.run(name="local", client=c) as run:
        ck = run.checkpoints("team/ckpts", keep_last=1)
        digests = {}
        for step in (1, 2, 3):
            ck.submit(step, make_dir(tmp_path / f"s{step}", "checkpoint", seed=200 + step))
            ck.flush()
            digests[step] = ck.pushed[step][0]
            assert c.resolve(f"team/ckpts:{ck.tag(step)}").digest == digests[step]
        assert sorted(ck.pushed) == [3] and ck.deleted == [1, 2] and not ck.errors
    with _client() as c:
        assert c.tags("team/ckpts", all=True) == [ck.tag(3)]
        target = c.target(c.ref("team/ckpts"))
        for step in (1, 2):  # gone with their referrers, and their blobs freed at once
            assert list_referrers(target, "team/ckpts", digests[step]) == []
            assert not target.blob_path(digests[step]).exists()  # type: ignore[attr-defined]
        from ociart.lifecycle.runstatus import RUN_STATUS_TYPE

        assert sorted(d.artifactType for d in c.referrers(f"team/ckpts:{ck.tag(3)}")) == sorted(
            [INTOTO, RUN_STATUS_TYPE])  # its provenance, and the run's end recorded when the run closed
        index = json.loads((Path(c.ref("team/ckpts").layout) / "index.json").read_text())  # type: ignore[arg-type]
        assert len(index["manifests"]) == 3  # step 3, its statement and its run status
        statement = c.referrers(f"team/ckpts:{ck.tag(3)}", INTOTO)[0].digest
    # an attached referrer of the embedded store can be deleted by digest like any manifest (its subject stays)
    deleted = run_cli("delete", f"team/ckpts@{statement}")
    assert deleted.returncode == 0 and deleted.stdout.strip() == statement, deleted.stderr
    with _client() as c:
        assert c.referrers(f"team/ckpts:{ck.tag(3)}", INTOTO) == [] and c.tags("team/ckpts") == [ck.tag(3)]
