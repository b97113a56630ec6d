"""``ociart ui``: the JSON API (Starlette's TestClient) and the pages in a real browser (Playwright driving Debian's
chromium), against a distribution 2.8.2 registry holding a dataset -> model -> report chain, the model signed and
promoted (``ociart tag ... prod``), plus an artifact with hostile text; also the embedded store and an ``oci:``
layout."""

from __future__ import annotations

import base64
import json
import os
import select
import shlex
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit
from urllib.request import ProxyHandler, build_opener

import pytest
from helpers import run_cli
from support.registry import (
    PASSWORD,
    USERNAME,
    RunningRegistry,
    registry_binary,
    start_registry,
)

pytest.importorskip("starlette", reason="the ui extra (pip install 'ociart[ui]') is not installed")
pytest.importorskip("grandalf", reason="the ui extra (pip install 'ociart[ui]') is not installed")

from starlette.testclient import TestClient

from ociart.lifecycle import load_retention_policy
from ociart.ui.app import CSP, create_app, safe_filename
from ociart.ui.service import View

HOSTILE = "<img src=x onerror=alert(1)>"
CHROMIUM = "/usr/bin/chromium"


def _env(base: Path) -> dict[str, str]:
    env = {}
    for sub in ("home", "ociart-home", "docker-config"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(base / "home"), OCIART_HOME=str(base / "ociart-home"), DOCKER_CONFIG=str(base / "docker-config"),
               REGISTRY_AUTH_FILE=str(base / "none.json"), COSIGN_PASSWORD="ui-test", OCIART_ACTOR="tester")
    return env


def _ok(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    r = run_cli(*args, env=env, cwd=cwd)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout.strip()


def _build(env: dict[str, str], work: Path, prefix: str) -> dict[str, Any]:
    """dataset -> model (signed, --input dataset, promoted to prod) -> report (--subject and --input model), and
    a generic artifact whose title, description and file name are markup. ``prefix``: ``host/`` or ''."""
    u = uuid.uuid4().hex[:6]
    (work / "data").mkdir(parents=True)
    (work / "data" / "train.csv").write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(40)))
    (work / "data" / "splits").mkdir()
    (work / "data" / "splits" / "val.csv").write_text("text,label\nv,1\n")
    (work / "model").mkdir()
    (work / "model" / "model.safetensors").write_bytes(os.urandom(70_000))
    (work / "model" / "config.json").write_text(json.dumps({"hidden": 64, "layers": 2}))
    (work / "model2").mkdir()
    (work / "model2" / "model.safetensors").write_bytes(os.urandom(70_000))
    (work / "model2" / "config.json").write_text(json.dumps({"hidden": 128, "layers": 2}))
    (work / "eval").mkdir()
    (work / "eval" / "report.md").write_text("# evaluation\n")
    (work / "hostile").mkdir()
    (work / "hostile" / HOSTILE).write_text("inert\n")
    _ok(env, "keygen", "--output-key-prefix", str(work / "release"))
    names = {"data": f"{prefix}data-{u}/train", "model": f"{prefix}models-{u}/clf",
             "report": f"{prefix}models-{u}/clf-eval", "hostile": f"{prefix}hostile-{u}/x"}
    out: dict[str, Any] = {"names": names, "key": work / "release.pub", "u": u}
    out["data"] = _ok(env, "push", f"{names['data']}:v1", str(work / "data"), "--kind", "dataset", "--no-git")
    out["model0"] = _ok(env, "push", f"{names['model']}:v0", str(work / "model2"), "--kind", "model", "--no-git",
                        "--metric", "accuracy=0.80")
    out["model"] = _ok(env, "push", f"{names['model']}:v1", str(work / "model"), "--kind", "model", "--no-git",
                       "--input", f"train={names['data']}:v1", "--metric", "accuracy=0.91",
                       "--sign", "--key", str(work / "release.key"))
    out["report"] = _ok(env, "push", f"{names['report']}:v1", str(work / "eval"), "--kind", "report", "--no-git",
                        "--subject", f"{names['model']}:v1", "--input", f"{names['model']}:v1",
                        "--metric", "accuracy=0.91")
    _ok(env, "tag", f"{names['model']}:v1", "prod")
    _ok(env, "promote", f"{names['model']}:v1", "--to", "staging", "--key", str(work / "release.pub"))
    out["hostile"] = _ok(env, "push", f"{names['hostile']}:v1", str(work / "hostile"), "--no-git",
                         "--annotation", f"org.opencontainers.image.title={HOSTILE}",
                         "--annotation", "org.opencontainers.image.description=<script>alert(2)</script>",
                         cwd=work / "hostile")
    policy = work / "policy.yaml"
    policy.write_text("apiVersion: ociart.dev/v1alpha1\nkind: VerificationPolicy\nrules:\n"
                      f"  - repositories: [\"**\"]\n    keys: [{work / 'release.pub'}]\n")
    out["policy"] = policy
    return out


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The chain in a registry of its own: the view serves the whole registry (its catalog), and the session-wide
    registry holds every other test's repositories."""
    try:
        registry_binary()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    registry = start_registry(tmp_path_factory.mktemp("ui-registry"))
    try:
        base = tmp_path_factory.mktemp("ui-chain")
        env = _env(base)
        built = _build(env, base / "work", f"{registry.host}/")
        built.update(env=env, host=registry.host, registry=registry)
        yield built
    finally:
        registry.stop()


@pytest.fixture
def api(chain: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for k, v in chain["env"].items():
        monkeypatch.setenv(k, v)
    view = View([chain["host"]], policy=chain["policy"])
    with TestClient(create_app(view, allowed_hosts=["testserver"])) as client:
        yield client
    view.client.close()


def _q(chain: dict[str, Any], what: str, **extra: str) -> str:
    repo = chain["names"][what].split("/", 1)[1]
    return "&".join([f"s=0&repo={repo}&digest={chain[what]}", *(f"{k}={v}" for k, v in extra.items())])


def _cli_json(chain: dict[str, Any], *args: str) -> Any:
    return json.loads(_ok(chain["env"], *args, "--json"))


# -- the JSON API ---------------------------------------------------------------------------------------------
def test_api_lists_artifacts_with_signature_status_and_promotions(api: TestClient, chain: dict[str, Any]) -> None:
    page = api.get("/api/artifacts", params={"q": chain["u"]}).json()
    rows = {(a["repository"], tuple(a["tags"])): a for a in page["items"]}
    names = {k: v.split("/", 1)[1] for k, v in chain["names"].items()}
    assert set(rows) == {(names["data"], ("v1",)), (names["model"], ("v0",)), (names["model"], ("prod", "staging", "v1")),
                         (names["report"], ("v1",)), (names["hostile"], ("v1",))}
    model = rows[(names["model"], ("prod", "staging", "v1"))]
    assert (model["digest"], model["kind"], model["signature"], model["promoted"]) == \
        (chain["model"], "model", "verified", ["prod", "staging"])
    assert rows[(names["data"], ("v1",))]["signature"] == "unsigned"
    assert rows[(names["report"], ("v1",))]["kind"] == "report"
    assert page["total"] == 5 and page["policy"] is True
    # the same rows as `ociart ls --json` (plus signature and promoted)
    listed = _cli_json(chain, "ls", chain["names"]["model"])
    ls_model = next(a for a in listed["artifacts"] if a["digest"] == chain["model"])
    assert {k: model[k] for k in ls_model} == ls_model
    # filters and pages
    only = api.get("/api/artifacts", params={"q": chain["u"], "kind": "dataset"}).json()
    assert [a["digest"] for a in only["items"]] == [chain["data"]] and only["total"] == 1
    second = api.get("/api/artifacts", params={"q": chain["u"], "per_page": 2, "page": 2}).json()
    first = api.get("/api/artifacts", params={"q": chain["u"], "per_page": 2, "page": 1}).json()
    assert len(second["items"]) == 2 and second["total"] == 5
    assert not {a["digest"] + str(a["tags"]) for a in first["items"]} & \
        {a["digest"] + str(a["tags"]) for a in second["items"]}
    assert api.get("/api/artifacts", params={"q": "no-such-thing-" + chain["u"]}).json()["items"] == []


def test_api_returns_the_cli_json_models(api: TestClient, chain: dict[str, Any]) -> None:
    model_ref = f"{chain['names']['model']}@{chain['model']}"
    assert api.get(f"/api/inspect?{_q(chain, 'model')}").json() == _cli_json(chain, "inspect", model_ref)
    assert api.get(f"/api/lineage?{_q(chain, 'model')}").json() == _cli_json(chain, "lineage", model_ref)
    repos = sorted(chain["names"].values())
    down = api.get(f"/api/lineage?{_q(chain, 'model')}&downstream=1").json()
    assert down == _cli_json(chain, "lineage", model_ref, "--downstream", *(x for r in repos for x in ("--repo", r)))
    assert [c["digest"] for c in down["children"]] == [chain["report"]]
    verified = api.get(f"/api/verify?{_q(chain, 'model')}").json()
    assert verified == _cli_json(chain, "verify", model_ref, "--policy", str(chain["policy"]))
    assert verified["signatures"] and verified["digest"] == chain["model"]
    old = f"{chain['names']['model']}@{chain['model0']}"
    repo = chain["names"]["model"].split("/", 1)[1]
    diff = api.get(f"/api/diff?s=0&repo={repo}&old={chain['model0']}&new={chain['model']}").json()
    assert diff == _cli_json(chain, "diff", old, model_ref)
    assert [c["path"] for c in diff["changed"]] == ["config.json", "model.safetensors"]
    refs = api.get(f"/api/referrers?{_q(chain, 'model')}").json()
    assert refs == _cli_json(chain, "referrers", model_ref)


def test_api_artifact_view_graph_and_compare(api: TestClient, chain: dict[str, Any]) -> None:
    a = api.get(f"/api/artifact?{_q(chain, 'model')}").json()
    assert a["signature"] == "verified" and a["verification"]["signatures"]
    assert "prod" in a["promoted"] and "v1" not in a["promoted"] and {"prod", "v1"} <= set(a["tags"])
    assert {f["path"]: f["role"] for f in a["files"]} == {"config.json": "config", "model.safetensors": "weights"}
    assert {r["label"] for r in a["referrers"]} >= {"signature", "report"}
    report = next(r for r in a["referrers"] if r["label"] == "report")
    assert report["digest"] == chain["report"] and report["metrics"] == {"accuracy": 0.91}
    assert a["provenance"]["inputs"][0]["digest"] == chain["data"]
    assert a["provenance"]["metrics"] == {"accuracy": 0.91}
    pinned = f"{chain['names']['model']}@{chain['model']}"
    assert [c.split(" -o ")[0].split(" --")[0] for c in a["commands"]] == [
        f"ociart pull {pinned}", f"ociart fetch {pinned}", f"ociart verify {pinned}"]
    out = Path(chain["env"]["HOME"]) / f"fetched-{uuid.uuid4().hex[:6]}"
    for cmd in a["commands"]:  # as printed, with the policy file and a fresh directory filled in
        args = shlex.split(cmd.replace("POLICY.yaml", str(chain["policy"])).replace("./clf", str(out)))[1:]
        assert _ok(chain["env"], *args).splitlines()[-1] == chain["model"]
    assert json.loads((out / "config.json").read_text()) == {"hidden": 64, "layers": 2}

    g = api.get(f"/api/graph?{_q(chain, 'model')}").json()
    by_digest = {n["digest"]: n for n in g["nodes"]}
    assert set(by_digest) == {chain["data"], chain["model"], chain["report"]}
    edges = {(next(n["digest"] for n in g["nodes"] if n["id"] == e["source"]),
              next(n["digest"] for n in g["nodes"] if n["id"] == e["target"])) for e in g["edges"]}
    assert edges == {(chain["data"], chain["model"]), (chain["model"], chain["report"])}
    assert by_digest[chain["model"]]["promoted"] == ["prod", "staging"] and by_digest[chain["model"]]["root"]

    repo = chain["names"]["model"].split("/", 1)[1]
    c = api.get(f"/api/compare?s=0&repo={repo}&old={chain['model0']}&new={chain['model']}").json()
    assert {x["key"]: (x["old"], x["new"]) for x in c["metrics"]} == {"accuracy": (0.8, 0.91)}
    assert "modelfs.diffIds" in {x["key"] for x in c["config"]}  # the ModelPack config names the layers
    assert [x["path"] for x in c["diff"]["changed"]] == ["config.json", "model.safetensors"]
    # the page, with the versions named by tag (resolved once)
    html = api.get(f"/compare?s=0&repo={repo}&old=v0&new=v1").text
    assert html.count('<tr class="changed">') == 2 and "<td>accuracy</td><td>0.8</td><td>0.91</td>" in html


def test_file_tree(api: TestClient, chain: dict[str, Any]) -> None:
    a = api.get(f"/api/artifact?{_q(chain, 'data')}").json()
    raw = {f["path"] for f in a["inspection"]["files"] if not f.get("packed")}
    rows = {f["path"]: (f["packed"], f["depth"]) for f in a["files"]}
    assert rows == {p: (p not in raw, p.count("/")) for p in ("splits/val.csv", "train.csv")}
    html = api.get(f"/artifact?{_q(chain, 'data')}").text
    assert '<tr class="dir"><td class="path depth-0" colspan="5">splits/</td></tr>' in html
    r = api.get(f"/download?{_q(chain, 'data')}&path=splits/val.csv")
    assert r.content == b"text,label\nv,1\n" and r.headers["content-disposition"] == 'attachment; filename="val.csv"'


def test_image_and_artifact_forms_link_each_other(api: TestClient, chain: dict[str, Any], tmp_path: Path) -> None:
    u = uuid.uuid4().hex[:6]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(os.urandom(5000))
    art, img = f"{chain['host']}/forms-{u}/clf", f"{chain['host']}/forms-{u}/clf-image"
    digest = _ok(chain["env"], "push", f"{art}:v1", str(tmp_path / "m"), "--kind", "model", "--no-git",
                 "--with-image", f"{img}:v1").splitlines()[-1]
    a = api.get(f"/api/artifact?s=0&repo=forms-{u}/clf&digest={digest}").json()
    [form] = a["forms"]
    assert form["label"] == "image form" and form["reference"].startswith(f"{img}:v1@sha256:")
    image_digest = form["reference"].rsplit("@", 1)[1]
    assert form["href"] == f"/artifact?s=0&repo=forms-{u}%2Fclf-image&digest={image_digest.replace(':', '%3A')}"
    back = api.get(form["href"].replace("/artifact?", "/api/artifact?")).json()
    assert [(f["label"], f["reference"].rsplit("@", 1)[1]) for f in back["forms"]] == [("artifact form", digest)]
    html = api.get(f"/artifact?s=0&repo=forms-{u}/clf&digest={digest}").text
    assert 'class="form-link">image form: <a href="/artifact?s=0&amp;repo=forms-' in html


def test_promotion_history(api: TestClient, chain: dict[str, Any]) -> None:
    repo = chain["names"]["model"].split("/", 1)[1]
    h = api.get(f"/api/history?s=0&repo={repo}&tag=staging").json()
    cli = _cli_json(chain, "history", f"{chain['names']['model']}:staging")
    assert h["entries"] == cli["entries"] and h["current"] == chain["model"]
    assert [(e["digest"], [g["passed"] for g in e["gates"]]) for e in h["entries"]] == [(chain["model"], [True])]
    html = api.get(f"/history?s=0&repo={repo}&tag=staging").text
    assert html.count('class="promotion') == 1 and chain["model"][:19] in html
    assert api.get(f"/api/history?s=0&repo={repo}&tag=v1").json()["entries"] == []
    a = api.get(f"/api/artifact?{_q(chain, 'model')}").json()
    assert a["tags"] == ["prod", "staging", "v1"] and a["promoted"] == ["prod", "staging"]


def test_api_refuses_what_it_does_not_serve(api: TestClient, chain: dict[str, Any]) -> None:
    r = api.get(f"/api/inspect?s=7&repo=x&digest={chain['model']}")
    assert r.status_code == 404 and r.json()["code"] == "not-found"
    r = api.get(f"/api/inspect?s=0&repo=../../etc&digest={chain['model']}")
    assert r.status_code == 400 and "invalid repository name" in r.json()["error"]
    r = api.get("/api/inspect?s=0&repo=a&digest=sha256:zz")
    assert r.status_code == 400
    # a Host header the app was not started for (DNS rebinding) is refused
    assert api.get("/api/sources", headers={"host": "evil.example"}).status_code == 400


def test_repository_target_serves_only_that_repository(chain: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in chain["env"].items():
        monkeypatch.setenv(k, v)
    repo = chain["names"]["model"].split("/", 1)[1]
    view = View([chain["names"]["model"]])
    with TestClient(create_app(view, allowed_hosts=["testserver"])) as api:
        page = api.get("/api/artifacts").json()
        assert {(a["repository"], a["digest"]) for a in page["items"]} == {(repo, chain["model"]), (repo, chain["model0"])}
        assert api.get(f"/api/inspect?s=0&repo={repo}&digest={chain['model']}").status_code == 200
        other = chain["names"]["data"].split("/", 1)[1]
        r = api.get(f"/api/inspect?s=0&repo={other}&digest={chain['data']}")
        assert r.status_code == 404 and "not served here" in r.json()["error"]
    view.client.close()


def test_security_headers_everywhere(api: TestClient, chain: dict[str, Any]) -> None:
    for path in ("/artifacts", f"/artifact?{_q(chain, 'model')}", "/static/style.css", "/api/sources",
                 "/artifact?s=0&repo=nope&digest=sha256:" + "0" * 64, "/audit"):
        r = api.get(path)
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["x-content-type-options"] == "nosniff", path
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP


def test_hostile_text_is_escaped_in_html(api: TestClient, chain: dict[str, Any]) -> None:
    html = api.get(f"/artifact?{_q(chain, 'hostile')}").text
    assert HOSTILE not in html and "<script>alert(2)" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html


def test_download_is_verified_streamed_and_safely_named(api: TestClient, chain: dict[str, Any]) -> None:
    r = api.get(f"/download?{_q(chain, 'model')}&path=config.json")
    assert r.status_code == 200 and json.loads(r.content) == {"hidden": 64, "layers": 2}
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == 'attachment; filename="config.json"'
    r = api.get(f"/download?{_q(chain, 'hostile')}&{urlencode({'path': HOSTILE})}")
    assert r.status_code == 200 and r.content == b"inert\n"
    assert r.headers["content-disposition"] == 'attachment; filename="_img_src_x_onerror_alert_1__"'
    r = api.get(f"/download?{_q(chain, 'model')}&path=../../etc/passwd")
    assert r.status_code == 404
    assert safe_filename('a/"b\r\n.txt') == "_b__.txt" and safe_filename("../..") == "download"


def test_audit_page_and_api(api: TestClient, chain: dict[str, Any]) -> None:
    v = api.get("/api/audit", params={"action": "tag"}).json()
    assert "chain_error" not in v
    assert v["lines"] >= 6
    assert [(e["action"], e["after"]) for e in v["entries"]] == [("tag", chain["model"])]
    html = api.get("/audit").text
    assert "hash chain intact" in html and chain["model"][:19] in html


def _retention(path: Path, prefix: str, u: str) -> Path:
    """keepLast 0 under protectTags [prod] over the chain's model and dataset repositories: the model under prod is
    kept, the other model version goes, the dataset is kept only as the kept model's input."""
    path.write_text("apiVersion: ociart.dev/v1alpha1\nkind: RetentionPolicy\nrules:\n"
                    f"  - repositories: [\"{prefix}models-{u}/*\", \"{prefix}data-{u}/*\"]\n"
                    "    protectTags: [prod]\n    keepLast: 0\n")
    return path


def _writes(registry: Any) -> int:
    """Requests that change a registry, as its log records them."""
    log = registry.log_text()
    return sum(log.count(f"http.request.method={m}") for m in ("PUT", "POST", "PATCH", "DELETE"))


def test_retention_plan_is_gc_dry_run(chain: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``/api/retention`` is ``ociart gc --json`` without ``--apply`` over the source's repositories that a rule
    matches; the page draws it and links each artifact; nothing is written to the registry."""
    for k, v in chain["env"].items():
        monkeypatch.setenv(k, v)
    policy = _retention(tmp_path / "retention.yaml", f"{chain['host']}/", chain["u"])
    names = chain["names"]
    writes = _writes(chain["registry"])
    view = View([chain["host"]], policy=chain["policy"])
    with TestClient(create_app(view, allowed_hosts=["testserver"], retention=load_retention_policy(policy))) as api:
        got = api.get("/api/retention", params={"s": 0}).json()
        html = api.get("/retention", params={"s": 0}).text
        one = api.get("/api/retention", params={"s": 0, "repo": names["model"].split("/", 1)[1]}).json()
        repos = got["plan"]["repositories"]
    view.client.close()
    assert _writes(chain["registry"]) == writes > 0  # the push wrote; the plan did not
    assert {names["model"], names["data"]} <= set(repos) and names["hostile"] not in repos
    cli = _cli_json(chain, "gc", "--policy", str(policy), *repos)
    assert (got["applied"], got["freed_bytes"]) == ([], 0)
    for plan in (got["plan"], cli["plan"]):
        plan.pop("planned")
    assert got["plan"] == cli["plan"]
    items = {(i["repository"], i["digest"]): i for i in got["plan"]["items"]}
    model, old = items[(names["model"], chain["model"])], items[(names["model"], chain["model0"])]
    data = items[(names["data"], chain["data"])]
    assert (model["action"], model["reasons"][0]) == ("keep", "protected: prod")
    assert old["action"] == "delete" and data["action"] == "keep"
    assert any(r.startswith(f"input of {names['model'].split('/', 1)[1]}@{chain['model']}") for r in data["reasons"])
    assert one["plan"]["repositories"] == [names["model"]]
    assert {i["digest"]: i["action"] for i in one["plan"]["items"]} == {chain["model"]: "keep", chain["model0"]: "delete"}
    # the page: one row per planned artifact, the action as a class, each digest a link to its page
    assert html.count('<tr class="plan-item ') == len(got["plan"]["items"])
    repo = names["model"].split("/", 1)[1]
    assert html.count('<tr class="plan-item plan-delete">') == sum(i["action"] == "delete" for i in items.values())
    assert f'href="/artifact?{urlencode({"s": 0, "repo": repo, "digest": chain["model0"]})}"'.replace("&", "&amp;") \
        in html
    assert 'id="unmatched"' in html and f"{names['hostile']}</code>" in html
    assert "nothing is deleted here" in html


def test_retention_needs_a_policy(api: TestClient) -> None:
    r = api.get("/api/retention?s=0")
    assert r.status_code == 400 and "--retention FILE" in r.json()["error"]
    assert "Retention plan" not in api.get("/artifacts").text  # no link to a page that cannot work
    assert api.get("/retention?s=0").status_code == 400


def test_embedded_store_and_oci_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(tmp_path / "env")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    built = _build(env, tmp_path / "work", "")
    layout = tmp_path / "layout"
    _ok(env, "copy", f"{built['names']['model']}:v1", f"oci:{layout}:clf")
    store = Path(env["OCIART_HOME"]) / "store"
    before = _snapshot(store), _snapshot(layout)
    view = View([], policy=built["policy"])
    with TestClient(create_app(view, allowed_hosts=["testserver"])) as api:
        page = api.get("/api/artifacts").json()
        assert {a["repository"] for a in page["items"]} == {n for n in built["names"].values()}
        model = next(a for a in page["items"] if a["digest"] == built["model"] and "prod" in a["tags"])
        assert model["signature"] == "verified" and model["promoted"] == ["prod", "staging"]
        repo = built["names"]["model"]
        g = api.get(f"/api/graph?s=0&repo={repo}&digest={built['model']}").json()
        assert {n["digest"] for n in g["nodes"]} == {built["data"], built["model"], built["report"]}
        assert api.get(f"/lineage?s=0&repo={repo}&digest={built['model']}").status_code == 200
        assert api.get(f"/artifact?s=0&repo={repo}&tag=prod", follow_redirects=True).status_code == 200
    view.client.close()
    retention = load_retention_policy(_retention(tmp_path / "retention.yaml", "", built["u"]))
    view = View([])
    with TestClient(create_app(view, allowed_hosts=["testserver"], retention=retention)) as api:
        plan = api.get("/api/retention").json()["plan"]  # the embedded store's plan, as `gc --local` makes it
        assert "Retention plan" in api.get("/artifacts").text
    view.client.close()
    view = View([f"oci:{layout}"])
    with TestClient(create_app(view, allowed_hosts=["testserver"])) as api:
        page = api.get("/api/artifacts").json()
        assert [(a["repository"], a["tags"], a["digest"]) for a in page["items"]] == [("", ["clf"], built["model"])]
        a = api.get(f"/api/artifact?s=0&repo=&digest={built['model']}").json()
        assert a["signature"] == "signed"  # copied along; no policy given here
        assert "config.json" in {f["path"] for f in a["files"]}
        assert api.get(f"/artifact?s=0&repo=&digest={built['model']}").status_code == 200
        r = api.get(f"/download?s=0&repo=&digest={built['model']}&path=config.json")
        assert json.loads(r.content) == {"hidden": 64, "layers": 2}
    view.client.close()
    assert (_snapshot(store), _snapshot(layout)) == before  # the view wrote nothing to either store
    cli = _cli_json({"env": env}, "gc", "--policy", str(tmp_path / "retention.yaml"), "--local")["plan"]
    assert [(i["repository"], i["digest"], i["action"], i["reasons"]) for i in plan["items"]] == \
        [(i["repository"], i["digest"], i["action"], i["reasons"]) for i in cli["items"]]
    actions = {i["digest"]: i["action"] for i in plan["items"]}
    assert (actions[built["model"]], actions[built["model0"]], actions[built["data"]]) == ("keep", "delete", "keep")


def test_lineage_stays_inside_the_served_stores(chain: dict[str, Any], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An input recorded in provenance that lies outside the served TARGETs is shown, never fetched."""
    registry = chain["registry"]
    env = _env(tmp_path / "env")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"w" * 100)
    digest = _ok(env, "push", "local/model:v1", str(tmp_path / "m"), "--kind", "model", "--no-git",
                 "--input", f"train={chain['names']['data']}:v1")
    repo = chain["names"]["data"].split("/", 1)[1]
    view = View([])
    with TestClient(create_app(view, allowed_hosts=["testserver"])) as api:
        seen = registry.log_text().count(f"/v2/{repo}/")
        assert seen > 0  # the log names requests (the push resolved the input there)
        g = api.get(f"/api/graph?s=0&repo=local/model&digest={digest}").json()
        assert registry.log_text().count(f"/v2/{repo}/") == seen  # nothing asked of the registry
    view.client.close()
    # the retention plan follows lineage too: an input outside the served stores stops it with one line, unfetched
    policy = _retention(tmp_path / "retention.yaml", "", "x")
    policy.write_text(policy.read_text().replace("models-x/*", "local/*").replace("keepLast: 0", "keepLast: 1"))
    view = View([])
    with TestClient(create_app(view, allowed_hosts=["testserver"], retention=load_retention_policy(policy))) as api:
        r = api.get("/api/retention?s=0")
        assert registry.log_text().count(f"/v2/{repo}/") == seen
    view.client.close()
    assert r.status_code == 404 and "outside the stores this view serves" in r.json()["error"]
    assert chain["names"]["data"] in r.json()["error"] and "\n" not in r.json()["error"]
    outside = next(n for n in g["nodes"] if n["id"] != g["root"])
    assert outside["kind"] == "missing" and "href" not in outside and outside["digest"] == chain["data"]
    assert [(e["source"], e["target"]) for e in g["edges"]] == [(outside["id"], g["root"])]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file under ``root``."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def test_empty_store_is_shown_not_created(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OCIART_HOME", str(tmp_path / "home"))
    view = View([])
    with TestClient(create_app(view, allowed_hosts=["testserver"])) as api:
        assert api.get("/api/artifacts").json()["items"] == []
        assert "nothing matches" in api.get("/artifacts").text
        assert api.get("/api/audit").json() == {"entries": []}
        r = api.get("/api/inspect?s=0&repo=a&digest=sha256:" + "0" * 64)
        assert r.status_code == 404
    assert not (tmp_path / "home" / "store").exists()


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    r = run_cli("ui", f"oci:{tmp_path / 'none'}")
    assert r.returncode == 3 and r.stderr.strip().count("\n") == 0 and "not an OCI image layout" in r.stderr
    (tmp_path / "p.yaml").write_text("nope: [")
    r = run_cli("ui", "--policy", str(tmp_path / "p.yaml"))
    assert r.returncode == 5 and "policy file" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "r.yaml").write_text("apiVersion: ociart.dev/v1alpha1\nkind: RetentionPolicy\nrules:\n"
                                     "  - repositories: [x]\n    keepLast: -1\n")
    r = run_cli("ui", "--retention", str(tmp_path / "r.yaml"))
    assert r.returncode == 5 and "retention policy file" in r.stderr and r.stderr.strip().count("\n") == 0
    with socket.socket() as taken:  # --port on a port in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = run_cli("ui", "--port", str(taken.getsockname()[1]))
    assert r.returncode == 8 and "cannot listen on 127.0.0.1:" in r.stderr and "Traceback" not in r.stderr


def test_credentials_are_used_never_shown(registry_factory: Any, tmp_path: Path) -> None:
    """Against a registry that needs Basic auth (credentials from the docker config): the pages list and show the
    artifact, and no response carries the password or the encoded ``auth``; a wrong password is a 403 page that does
    not echo it."""
    registry: RunningRegistry = registry_factory(auth="htpasswd")
    config = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    encoded = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {registry.host: {"auth": encoded}}}))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(os.urandom(3000))
    digest = _ok({}, "push", f"{registry.host}/secret/model:v1", str(tmp_path / "m"), "--kind", "model", "--no-git")
    view = View([registry.host])
    with TestClient(create_app(view, allowed_hosts=["testserver"])) as api:
        q = f"s=0&repo=secret/model&digest={digest}"
        bodies = [api.get(p).text for p in ("/artifacts", "/api/artifacts", "/api/sources", f"/artifact?{q}",
                                            f"/api/artifact?{q}", f"/api/inspect?{q}", f"/lineage?{q}")]
    view.client.close()
    assert digest in bodies[1] and "model.safetensors" in bodies[3]  # the credentials were used
    assert not [b for b in bodies if PASSWORD in b or encoded in b]
    wrong = "wr0ng-" + uuid.uuid4().hex[:8]
    config.write_text(json.dumps({"auths": {registry.host: {"auth": base64.b64encode(
        f"{USERNAME}:{wrong}".encode()).decode()}}}))
    view = View([registry.host])
    with TestClient(create_app(view, allowed_hosts=["testserver"])) as api:
        r = api.get("/artifacts")
        j = api.get("/api/artifacts")
    view.client.close()
    assert (r.status_code, j.status_code) == (403, 403)
    assert wrong not in r.text + j.text and "Traceback" not in r.text


def test_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from ociart.errors import UsageError
    from ociart.ui import require

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "grandalf" else real(name, *a))
    with pytest.raises(UsageError, match=r"pip install 'ociart\[ui\]' \(missing: grandalf\)"):
        require()


# -- in a real browser ----------------------------------------------------------------------------------------
def _start_ui(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "ociart", "ui", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    assert proc.stdout is not None and proc.stderr is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    if not ready:
        proc.kill()
        pytest.fail("ociart ui printed no URL within 60 s")
    url = proc.stdout.readline().strip()
    if not url:
        proc.wait(5)
        pytest.fail(f"ociart ui exited: {proc.stderr.read()}")
    warned = ""
    if select.select([proc.stderr], [], [], 0.5)[0]:
        warned = proc.stderr.readline()
    return proc, url, warned


@pytest.fixture(scope="module")
def served(chain: dict[str, Any]) -> Iterator[str]:
    proc, url, _ = _start_ui([chain["host"], "--policy", str(chain["policy"])], chain["env"])
    assert url.startswith("http://127.0.0.1:")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)", pytrace=False)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = context.new_page()
    dialogs: list[str] = []
    errors: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.dialogs = dialogs  # type: ignore[attr-defined]
    pg.console_errors = errors  # type: ignore[attr-defined]
    yield pg
    context.close()


def _shot(pg: Any, request: pytest.FixtureRequest, tmp_path: Path, name: str) -> None:
    out = tmp_path / "screenshots"
    out.mkdir(exist_ok=True)
    pg.screenshot(path=str(out / f"{request.node.name}-{name}.png"), full_page=True)


def test_browser_lists_the_artifacts(page: Any, served: str, chain: dict[str, Any],
                                     request: pytest.FixtureRequest, tmp_path: Path) -> None:
    page.goto(f"{served}artifacts?q={chain['u']}")
    rows = page.locator("#artifacts tbody tr.artifact")
    assert rows.count() == 5
    repos = {r.split("/", 1)[1] for r in chain["names"].values()}
    assert {t.strip() for t in page.locator("#artifacts a.repo").all_inner_texts()} == repos
    model_row = rows.filter(has_text="prod")
    assert model_row.locator(".sig-verified").count() == 1 and model_row.locator(".tag.promoted").all_inner_texts() == ["prod", "staging"]
    page.select_option("select[name=kind]", "report")
    page.click("form.filters button")
    assert page.locator("#artifacts tbody tr.artifact").count() == 1
    _shot(page, request, tmp_path, "list")
    assert not page.dialogs and not page.console_errors


def test_browser_model_page_shows_a_verified_signature(page: Any, served: str, chain: dict[str, Any],
                                                       request: pytest.FixtureRequest, tmp_path: Path) -> None:
    page.goto(f"{served}artifact?{_q(chain, 'model')}")
    assert page.locator("#sig-status").inner_text() == "verified under the policy"
    assert page.locator("tr.verified-signature").count() >= 1
    assert page.locator("#digest").inner_text() == chain["model"]
    assert page.locator("tr.referrer-report").count() == 1
    _shot(page, request, tmp_path, "model")
    assert not page.console_errors


def test_browser_lineage_graph_nodes_edges_and_click(page: Any, served: str, chain: dict[str, Any],
                                                     request: pytest.FixtureRequest, tmp_path: Path) -> None:
    page.goto(f"{served}lineage?{_q(chain, 'model')}")
    # one node per artifact (dataset, model, report) and one edge per recorded input (model <- dataset,
    # report <- model)
    assert page.locator("svg#lineage g.node.artifact").count() == 3
    assert page.locator("svg#lineage path.edge").count() == 2
    assert page.locator("svg#lineage g.node.promoted").count() == 1
    _shot(page, request, tmp_path, "lineage")
    docs = os.environ.get("OCIART_UI_SCREENSHOT")  # set to refresh docs/ui-lineage.png
    if docs:
        page.screenshot(path=docs)
    page.locator("svg#lineage g.node.kind-dataset").click()
    page.wait_for_url("**/artifact?**")
    assert parse_qs(urlsplit(page.url).query)["digest"] == [chain["data"]]
    assert page.locator("#digest").inner_text() == chain["data"]
    assert not page.console_errors


def test_browser_hostile_title_is_text(page: Any, served: str, chain: dict[str, Any],
                                       request: pytest.FixtureRequest, tmp_path: Path) -> None:
    page.goto(f"{served}artifact?{_q(chain, 'hostile')}")
    assert page.locator("#artifact-title").inner_text() == HOSTILE
    assert page.locator("#artifact-description").inner_text() == "<script>alert(2)</script>"
    assert page.locator("tr.file td.path").inner_text() == HOSTILE
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
    page.goto(f"{served}lineage?{_q(chain, 'hostile')}")
    assert page.locator("svg#lineage g.node text.n").text_content().startswith("<img src=x")
    assert HOSTILE in page.locator("svg#lineage g.node title").text_content()
    assert page.locator("svg img, svg foreignObject").count() == 0
    _shot(page, request, tmp_path, "hostile")
    time.sleep(0.3)  # a dialog opened by an onerror handler would have fired by now
    assert page.dialogs == []


def test_ui_host_warns(chain: dict[str, Any]) -> None:
    proc, url, warned = _start_ui(["--host", "0.0.0.0", chain["host"]], chain["env"])
    try:
        assert url.startswith("http://0.0.0.0:")
        assert "no authentication" in warned
    finally:
        proc.terminate()
        proc.wait(10)


def test_ui_port_and_open(chain: dict[str, Any], tmp_path: Path) -> None:
    """``--port N`` serves on N; ``--open`` hands the URL to the user's browser (``$BROWSER``, here a script that
    records it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}.tmp && mv {opened}.tmp {opened}\n')
    browser.chmod(0o755)
    proc, url, _ = _start_ui(["--port", str(port), "--open", chain["host"]], {**chain["env"], "BROWSER": f"{browser} %s"})
    try:
        assert url == f"http://127.0.0.1:{port}/"
        sources = None
        for _ in range(600):  # until the browser script ran and the server answers (or the process died)
            if proc.poll() is not None:
                break
            try:
                with build_opener(ProxyHandler({})).open(f"{url}api/sources", timeout=10) as r:
                    sources = json.loads(r.read())
            except OSError:
                pass
            if sources is not None and opened.exists():
                break
            time.sleep(0.1)
        assert sources == [{"id": 0, "label": chain["host"]}]
        assert opened.read_text() == url
    finally:
        proc.terminate()
        proc.wait(10)


def test_ui_json_prints_url(chain: dict[str, Any]) -> None:
    proc, line, _ = _start_ui(["--json", chain["host"]], chain["env"])
    try:
        out = json.loads(line)
        assert out["url"].startswith("http://127.0.0.1:") and out["sources"] == [{"id": 0, "label": chain["host"]}]
    finally:
        proc.terminate()
        proc.wait(10)

