"""Retention and garbage collection (issue 10): the policy file, the ordering, and ``ociart gc`` end to end against
CNCF distribution 2.8.2 (plus distribution's own ``garbage-collect``), killed midway, on a registry that refuses
DELETE, and on the embedded store.

The synthetic history (``build_history``), 63 artifacts in three repositories of one registry:

* ``data/corpus`` v1 (100 days old), v2 (90), v3 (80), signed;
* ``ckpt/bert``: runs A (60 days), B (40), C (20, ended failed), D (2), ten checkpoints each, pushed by
  ``ociart.run()`` (run C raises, so its checkpoints carry a ``failed`` run status); A and B read data v1, C v2, D v3;
* ``models/bert`` v1..v10 (v_i is 110-10i days old), signed, each with an evaluation report attached (tag
  ``eval-v<i>``); v1..v5 were made from data v1 and checkpoint A-9, v6..v10 from data v1 and B-9; ``prod`` on v7,
  ``release-1`` on v3.

POLICY keeps, by hand: models v3 (release-1), v7 (prod), v9 and v10 (newest 2 among the rest); checkpoints D-0..9
(within 7d), A-9 and B-9 (inputs of kept models); run C goes (failed, 20d > 3d); data v3 (newest 1) and v1 (input of
kept models and checkpoints); data v2 goes (only the failed run used it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import run_cli
from support.faultproxy import FaultProxy
from support.registry import RunningRegistry

import ociart
from ociart import Trust, TrustedKey
from ociart.errors import InvalidContentError, NotFoundError
from ociart.lifecycle import Candidate, load_retention_policy, newest_first
from ociart.lifecycle.order import best, version_key
from ociart.lifecycle.runstatus import RUN_STATUS_TYPE
from ociart.lineage.record import LineageOptions
from ociart.targets.referrers import is_scheme_tag

DAY = 86400
POLICY = """\
apiVersion: ociart.dev/v1alpha1
kind: RetentionPolicy
rules:
  - repositories: ["{host}/models/*"]
    protectTags: [prod, "release-*"]
    keepLast: 2
    keepWithin: 14d
  - repositories: ["{host}/ckpt/*"]
    keepLast: 5
    keepWithin: 7d
    failedRuns: 3d
  - repositories: ["{host}/data/*"]
    keepLast: 1
"""
#: What survives POLICY, listed by hand (tags per repository; every other tag and its artifact goes).
SURVIVORS = {
    "models/bert": {"v3", "release-1", "eval-v3", "v7", "prod", "eval-v7", "v9", "eval-v9", "v10", "eval-v10"},
    "ckpt/bert": {f"ckpt-run-d-{s}" for s in range(10)} | {"ckpt-run-a-9", "ckpt-run-b-9"},
    "data/corpus": {"v1", "v3"},
}


@pytest.fixture(autouse=True)
def _auto_referrers_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIART_REFERRERS", raising=False)


def _dated(path: Path, days_ago: float, minutes: int = 0) -> Path:
    t = time.time() - days_ago * DAY + minutes * 60
    for p in [path, *path.rglob("*")]:
        os.utime(p, (t, t))
    return path


def _dir(root: Path, name: str, days_ago: float, minutes: int = 0, size: int = 3000) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "weights.bin").write_bytes(name.encode() * (size // len(name) + 1))
    (d / "config.json").write_text(json.dumps({"name": name}))
    return _dated(d, days_ago, minutes)


def build_history(c: ociart.Client, host: str, tmp: Path, key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The synthetic history of the module docstring on ``host``; returns tag -> digest per ``repo:tag``."""
    out: dict[str, str] = {}
    no_git = LineageOptions(git=False)
    for i, days in ((1, 100), (2, 90), (3, 80)):
        d = c.push(f"{host}/data/corpus:v{i}", [_dir(tmp, f"data-v{i}", days)], kind="dataset", lineage=no_git,
                   sign=key)
        out[f"data/corpus:v{i}"] = d.digest
    for run_name, days, data in (("a", 60, 1), ("b", 40, 1), ("c", 20, 2), ("d", 2, 3)):
        try:
            with ociart.run(name=f"run-{run_name}", run_id=f"run-{run_name}", client=c, git=False) as run:
                run.use(f"{host}/data/corpus:v{data}", name="train")
                ckpts = run.checkpoints(f"{host}/ckpt/bert", keep_last=100)
                for step in range(10):
                    ckpts.submit(step, _dir(tmp, f"ckpt-{run_name}-{step}", days, minutes=step), {"loss": 1 / (step + 1)})
                ckpts.flush()
                for step in range(10):
                    out[f"ckpt/bert:{ckpts.tag(step)}"] = ckpts.pushed[step][0]
                if run_name == "c":
                    raise RuntimeError("diverged")
        except RuntimeError:
            pass
    for i in range(1, 11):
        base = "a" if i <= 5 else "b"
        opts = LineageOptions(git=False, run_id=f"train-v{i}",
                              inputs=[f"train={host}/data/corpus:v1", f"base={host}/ckpt/bert:ckpt-run-{base}-9"])
        m = c.push(f"{host}/models/bert:v{i}", [_dir(tmp, f"model-v{i}", 110 - 10 * i)], kind="model",
                   lineage=opts, sign=key)
        out[f"models/bert:v{i}"] = m.digest
        report = tmp / f"report-v{i}"
        report.mkdir()
        (report / "metrics.json").write_text(json.dumps({"accuracy": 0.5 + i / 100}))
        r = c.push(f"{host}/models/bert:eval-v{i}", [report], kind="report", subject=m.ref, lineage=no_git)
        out[f"models/bert:eval-v{i}"] = r.digest
    c.tag(f"{host}/models/bert:v7", "prod")
    c.tag(f"{host}/models/bert:v3", "release-1")
    out["models/bert:prod"] = out["models/bert:v7"]
    out["models/bert:release-1"] = out["models/bert:v3"]
    return out


def _tags(c: ociart.Client, host: str, repo: str) -> set[str]:
    try:
        return set(c.tags(f"{host}/{repo}"))
    except NotFoundError:
        return set()


def check_end_state(c: ociart.Client, host: str, history: dict[str, str], key: ec.EllipticCurvePrivateKey,
                    tmp: Path) -> None:
    """Exactly SURVIVORS remain; each survivor pulls, signed ones verify, lineage has no missing input; every other
    artifact of the history is gone by digest, with its signatures and referrers indexes."""
    trust = Trust(keys=[TrustedKey("test", key.public_key())])
    for repo, expected in SURVIVORS.items():
        assert _tags(c, host, repo) == expected, repo
    for name, digest in history.items():
        repo, tag = name.split(":")
        ref = f"{host}/{repo}@{digest}"
        if tag in SURVIVORS[repo]:
            assert c.resolve(ref).digest == digest
            if repo != "ckpt/bert" and not tag.startswith("eval-"):
                c.verify(ref, trust)  # signature and (models) signed provenance still there
        else:
            with pytest.raises(NotFoundError):
                c.resolve(ref)
            all_tags = c.tags(f"{host}/{repo}", all=True)
            assert not any(t.startswith("sha256-" + digest.removeprefix("sha256:")) for t in all_tags), name
    for name in ("models/bert:v7", "models/bert:v3"):
        graph = c.lineage(f"{host}/{name}")
        text = graph.model_dump_json()
        assert '"kind":"missing"' not in text, text
        assert history["data/corpus:v1"] in text
    assert history["ckpt/bert:ckpt-run-b-9"] in c.lineage(f"{host}/models/bert:prod").model_dump_json()
    c.pull(f"{host}/models/bert:prod", tmp / "pulled-prod")
    c.pull(f"{host}/ckpt/bert:ckpt-run-a-9", tmp / "pulled-a9")
    c.pull(f"{host}/data/corpus:v1", tmp / "pulled-data")
    # no referrers index or legacy signature is left whose subject is gone
    for repo in SURVIVORS:
        for t in c.tags(f"{host}/{repo}", all=True):
            if is_scheme_tag(t):
                subject = "sha256:" + t.split("-", 1)[1].split(".", 1)[0]
                c.resolve(f"{host}/{repo}@{subject}")


def _policy(tmp: Path, host: str) -> Path:
    p = tmp / "retention.yaml"
    p.write_text(POLICY.format(host=host))
    return p


# -- the policy file and the ordering -------------------------------------------------------------------------------
def test_policy_file_is_strict(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(POLICY.format(host="r.example") + "    keepLats: 3\n")
    with pytest.raises(InvalidContentError, match=r"rules\.2\.keepLats: Extra inputs are not permitted"):
        load_retention_policy(p)
    p.write_text(POLICY.format(host="r.example").replace("14d", "two weeks"))
    with pytest.raises(InvalidContentError, match="keepWithin: 'two weeks' is not a duration"):
        load_retention_policy(p)
    p.write_text(POLICY.format(host="r.example").replace("RetentionPolicy", "VerificationPolicy"))
    with pytest.raises(InvalidContentError, match="kind"):
        load_retention_policy(p)
    policy = load_retention_policy(_policy(tmp_path, "R.Example:443"))
    assert [i for i, _ in policy.rules_for("r.example/models/bert")] == [0]  # canonical names, as in verification
    assert policy.rules_for("r.example/models/bert/x") == []  # `*` stays within one segment
    assert policy.rules[0].protects("release-7") and not policy.rules[0].protects("prod-x")
    r = run_cli("gc", "--policy", str(p), "x.example/models/a")
    assert r.returncode == 5 and r.stderr.startswith("error: retention policy file") and "Traceback" not in r.stderr


def test_newest_first_dated_then_version_order_then_digest() -> None:
    import datetime as dt

    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cands = [Candidate("sha256:" + "1" * 64, ["v9"]), Candidate("sha256:" + "2" * 64, ["v10"]),
             Candidate("sha256:" + "3" * 64, ["old"], t), Candidate("sha256:" + "4" * 64, ["new"], t + dt.timedelta(1)),
             Candidate("sha256:" + "5" * 64, ["same"], t), Candidate("sha256:" + "6" * 64, ["same"], t)]
    order = [c.digest[7] for c in newest_first(cands)]
    # dated first (newest first); equal times by tag version ("same" > "old"), then digest; undated: v10 before v9
    assert order == ["4", "6", "5", "3", "2", "1"], order
    assert version_key("v10") > version_key("v9") > version_key("v1.2")
    scored = [Candidate("a", ["s1"], metrics={"loss": 0.3}), Candidate("b", ["s2"], metrics={"loss": 0.1}),
              Candidate("c", ["s3"], metrics={"loss": 0.1})]
    assert best(scored, "loss").digest == "c" and best(scored, "loss", "max").digest == "a"  # ties: the newer


# -- distribution, end to end -----------------------------------------------------------------------------------
def test_gc_apply_and_registry_gc_keep_exactly_the_policy(registry_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reg: RunningRegistry = registry_factory()
    key = ec.generate_private_key(ec.SECP256R1())
    with ociart.Client() as c:
        history = build_history(c, reg.host, tmp_path, key)
        assert len(history) == 63 + 2  # 63 artifacts, and the prod and release-1 tags
        run_c = c.referrers(f"{reg.host}/ckpt/bert:ckpt-run-c-3", artifact_type=RUN_STATUS_TYPE)
        assert [(r.annotations or {}).get("dev.ociart.run.status") for r in run_c] == ["failed"]
        policy = _policy(tmp_path, reg.host)

        planned = run_cli("gc", "--policy", str(policy), "--json")
        assert planned.returncode == 0, planned.stderr
        plan = json.loads(planned.stdout)["plan"]
        by_tag = {(i["repository"].split("/", 1)[1], t): i for i in plan["items"] for t in i["tags"]}
        assert by_tag[("models/bert", "prod")]["reasons"] == ["protected: prod"]
        assert f"input of models/bert@{history['models/bert:v3']}" in by_tag[("ckpt/bert", "ckpt-run-a-9")]["reasons"]
        assert by_tag[("ckpt/bert", "ckpt-run-c-0")]["reasons"] == ["failed run run-c, 20d old"]
        assert "newest 2" in by_tag[("models/bert", "v9")]["reasons"]
        assert by_tag[("data/corpus", "v2")]["action"] == "delete"
        assert len([i for i in plan["items"] if i["action"] == "delete"]) == 6 + 28 + 1
        assert plan["reclaimable"] > 0
        human = run_cli("gc", "--policy", str(policy))
        assert human.returncode == 0 and "protected: prod" in human.stdout and "reclaimable" in human.stderr
        assert _tags(c, reg.host, "models/bert") >= {"v1", "v2"}  # the plan changed nothing

        before = reg.storage_bytes()
        applied = run_cli("gc", "--policy", str(policy), "--apply", "--json")
        assert applied.returncode == 0, applied.stderr
        result = json.loads(applied.stdout)
        assert len(result["applied"]) == 35 and all(a["action"] == "deleted" for a in result["applied"])
        audit_log = Path(os.environ["OCIART_HOME"]) / "audit.jsonl"
        logged = [json.loads(line) for line in audit_log.read_text().splitlines()]
        assert sum(1 for e in logged if e["action"] == "gc-delete" and e["result"] == "ok") == 35

        reg.garbage_collect()
        assert reg.storage_bytes() < before
        gone_layer = json.loads(c.manifest(f"{reg.host}/ckpt/bert@{history['ckpt/bert:ckpt-run-d-0']}")[1].data)
        assert reg.blob_data_path(gone_layer["layers"][0]["digest"]).exists()  # a kept blob stays
    with ociart.Client() as c:
        check_end_state(c, reg.host, history, key, tmp_path)
        # the blobs only deleted artifacts used are gone from the registry's storage
        for name in ("ckpt/bert:ckpt-run-c-4", "models/bert:v1"):
            hexd = history[name].removeprefix("sha256:")
            assert not (reg.root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd).exists(), name
        again = c.gc(_policy(tmp_path, reg.host), apply=True)
        assert again.applied == [] and not again.plan.going()  # converged


def test_gc_killed_midway_converges(registry_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL after the 12th DELETE the registry sees: nothing protected lost, no referrer left on a deleted
    subject; a re-run ends exactly where an uninterrupted run does."""
    reg: RunningRegistry = registry_factory()
    key = ec.generate_private_key(ec.SECP256R1())
    with FaultProxy(reg.url) as proxy, ociart.Client() as c:
        history = build_history(c, proxy.host, tmp_path, key)
        policy = _policy(tmp_path, proxy.host)
        proc = subprocess.Popen([sys.executable, "-m", "ociart", "gc", "--policy", str(policy), "--apply",
                                 "--concurrency", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        killed = threading.Event()

        def watch() -> None:
            while proc.poll() is None:
                if len(proxy.find("DELETE")) >= 12:
                    proc.send_signal(signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        proc.wait(timeout=600)
        watcher.join()
        assert killed.is_set() and proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
        # consistent midway: every survivor still resolves and verifies; no scheme tag names a deleted subject
        trust = Trust(keys=[TrustedKey("test", key.public_key())])
        for repo, tags in SURVIVORS.items():
            for tag in tags:
                assert c.resolve(f"{proxy.host}/{repo}:{tag}").digest == history[f"{repo}:{tag}"]
        c.verify(f"{proxy.host}/models/bert:prod", trust)
        for repo in SURVIVORS:
            for t in c.tags(f"{proxy.host}/{repo}", all=True):
                if is_scheme_tag(t):
                    c.resolve(f"{proxy.host}/{repo}@sha256:" + t.split("-", 1)[1].split(".", 1)[0])
        assert len(_tags(c, proxy.host, "ckpt/bert")) > len(SURVIVORS["ckpt/bert"])  # it really stopped midway

        rerun = run_cli("gc", "--policy", str(policy), "--apply")
        assert rerun.returncode == 0, rerun.stderr
        check_end_state(c, proxy.host, history, key, tmp_path)


def test_gc_on_a_registry_that_refuses_delete(registry_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reg: RunningRegistry = registry_factory(delete=False)
    with ociart.Client() as c:
        for i in range(1, 4):
            c.push(f"{reg.host}/models/m:v{i}", [_dir(tmp_path, f"m{i}", 10 - i)], kind="model",
                   lineage=LineageOptions(git=False))
    policy = tmp_path / "p.yaml"
    policy.write_text(f"apiVersion: ociart.dev/v1alpha1\nkind: RetentionPolicy\nrules:\n"
                      f"  - repositories: ['{reg.host}/models/**']\n    keepLast: 1\n")
    plan = run_cli("gc", "--policy", str(policy), f"{reg.host}/models/m", "--json")
    assert plan.returncode == 0, plan.stderr
    assert [i["tags"] for i in json.loads(plan.stdout)["plan"]["items"] if i["action"] == "delete"] == [["v1"], ["v2"]]
    applied = run_cli("gc", "--policy", str(policy), f"{reg.host}/models/m", "--apply")
    assert applied.returncode == 1
    assert applied.stderr.startswith("error: ") and "refuses DELETE (HTTP 405)" in applied.stderr
    assert "Traceback" not in applied.stderr and applied.stderr.count("\n") == 1
    with ociart.Client() as c:
        assert set(c.tags(f"{reg.host}/models/m")) == {"v1", "v2", "v3"}


def test_gc_stops_when_a_protected_tag_moved(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    from ociart.errors import ConflictError
    from ociart.lifecycle import apply_plan, make_plan

    repo = f"{registry.host}/{unique_repo}"
    with ociart.Client() as c:
        for i in range(1, 4):
            c.push(f"{repo}:v{i}", [_dir(tmp_path, f"p{i}", 10 - i)], kind="model", lineage=LineageOptions(git=False))
        c.tag(f"{repo}:v2", "prod")
        p = tmp_path / "p.yaml"
        p.write_text(f"apiVersion: ociart.dev/v1alpha1\nkind: RetentionPolicy\nrules:\n"
                     f"  - repositories: ['{repo}']\n    protectTags: [prod]\n    keepLast: 1\n")
        policy = load_retention_policy(p)
        plan = make_plan(c, policy, [repo])
        assert [i.tags for i in plan.going()] == [["v1"]]
        c.tag(f"{repo}:v1", "prod")  # someone promotes v1 after planning
        with pytest.raises(ConflictError, match=r"protected tag .*:prod moved since planning"):
            apply_plan(c, plan, policy)
        assert set(c.tags(repo)) == {"v1", "v2", "v3", "prod"}


# -- failedRuns from MLflow's run status ----------------------------------------------------------------------------
def _mlflow(uri: str, code: str) -> str:
    """Run ``code`` with ``mlflow`` imported and the tracking URI set, in a subprocess (an interpreter that imported
    mlflow is ~200 MB: kept out of the test process); its stdout."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    p = subprocess.run([sys.executable, "-c", "import mlflow\n" + code], check=False, capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_failed_runs_read_from_mlflow(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    """Artifacts pushed in MLflow runs (``MLFLOW_RUN_ID``: the manifest names the run, tracker ``mlflow``) carry no
    run-status referrer; with MLflow configured, gc reads each run's status from the tracking store: a FAILED or
    KILLED run's artifacts older than ``failedRuns`` go, and so does a dataset only the failed run read; a FINISHED
    or still RUNNING run's, a young failed one's and an artifact with no run are kept. Without MLflow configured
    nothing is recorded as failed, so nothing matches ``failedRuns``."""
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = json.loads(_mlflow(uri, (
        "import json\nc = mlflow.MlflowClient()\nexp = c.create_experiment('gc-failed-runs')\n"
        "print(json.dumps({n: c.create_run(exp, run_name=n).info.run_id "
        "for n in ('failed', 'killed', 'young', 'finished', 'running')}))")))
    ckpt, data = f"{registry.host}/{unique_repo}/ckpt", f"{registry.host}/{unique_repo}/data"
    digest: dict[str, str] = {}

    def push(ref: str, days: float, *args: str, run: str | None = None) -> str:
        env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_RUN_ID": runs[run]} if run else {}
        p = run_cli("push", ref, str(_dir(tmp_path, ref.rsplit(":", 1)[1], days)), "--no-git", *args, env=env)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    digest["d-finished"] = push(f"{data}:d-finished", 50, "--kind", "dataset")
    digest["d-failed"] = push(f"{data}:d-failed", 40, "--kind", "dataset")
    digest["d-newest"] = push(f"{data}:d-newest", 30, "--kind", "dataset")
    for name, days, run, used in (("failed", 10, "failed", "d-failed"), ("killed", 10, "killed", None),
                                  ("young", 1, "young", None), ("finished", 10, "finished", "d-finished"),
                                  ("running", 10, "running", None), ("norun", 10, None, None)):
        digest[name] = push(f"{ckpt}:{name}", days, "--kind", "model",
                            *(("--input", f"train={data}:{used}") if used else ()), run=run)
    with ociart.Client() as c:
        annotations = json.loads(c.manifest(f"{ckpt}:failed")[1].data)["annotations"]
        assert (annotations["dev.ociart.run.tracker"], annotations["dev.ociart.run.id"]) == ("mlflow", runs["failed"])
        assert c.referrers(f"{ckpt}:failed", artifact_type=RUN_STATUS_TYPE) == []  # the status is only in MLflow
    _mlflow(uri, "c = mlflow.MlflowClient()\n" + "".join(
        f"c.set_terminated({runs[n]!r}, status={s!r})\n"
        for n, s in (("failed", "FAILED"), ("killed", "KILLED"), ("young", "FAILED"), ("finished", "FINISHED"))))

    policy = tmp_path / "p.yaml"
    policy.write_text(f"apiVersion: ociart.dev/v1alpha1\nkind: RetentionPolicy\nrules:\n"
                      f"  - repositories: ['{ckpt}']\n    keepWithin: 30d\n    failedRuns: 3d\n"
                      f"  - repositories: ['{data}']\n    keepLast: 1\n")

    # --concurrency 8: the planner's parallel loads all ask MLflow at once; the first `import mlflow` is taken once,
    # under a lock (a thread that met the module half-imported used to record "no status")
    sequential = ("--concurrency", "8")

    def plan(*args: str, env: dict[str, str]) -> dict[str, tuple[str, list[str], str | None]]:
        p = run_cli("gc", "--policy", str(policy), ckpt, data, "--json", *sequential, *args, env=env)
        assert p.returncode == 0, p.stderr
        items = json.loads(p.stdout)["plan"]["items"]
        return {i["tags"][0]: (i["action"], i["reasons"], i.get("runStatus")) for i in items}

    # MLflow not configured: no artifact has a recorded status, so failedRuns matches none
    unconfigured = plan(env={"MLFLOW_TRACKING_URI": ""})
    assert {t: a for t, (a, _, _) in unconfigured.items()} == {
        "failed": "keep", "killed": "keep", "young": "keep", "finished": "keep", "running": "keep", "norun": "keep",
        "d-newest": "keep", "d-finished": "keep", "d-failed": "keep"}  # d-failed: input of the kept failed run
    assert unconfigured["failed"][1] == ["within 30d"] and unconfigured["failed"][2] is None

    configured = plan(env={"MLFLOW_TRACKING_URI": uri})
    assert configured["failed"] == ("delete", [f"failed run {runs['failed']}, 10d old"], "failed")
    assert configured["killed"] == ("delete", [f"failed run {runs['killed']}, 10d old"], "failed")
    assert configured["young"] == ("keep", [f"failed run {runs['young']}, 1d old (failedRuns 3d)"], "failed")
    assert configured["finished"] == ("keep", ["within 30d"], "succeeded")
    assert configured["running"] == ("keep", ["within 30d"], None)  # not ended: no status
    assert configured["norun"] == ("keep", ["within 30d"], None)
    assert configured["d-newest"][:2] == ("keep", ["newest 1"])
    assert configured["d-finished"][:2] == ("keep", [f"input of {unique_repo}/ckpt@{digest['finished']}"])
    assert configured["d-failed"][0] == "delete"  # only the failed run read it

    applied = run_cli("gc", "--policy", str(policy), ckpt, data, "--apply", *sequential,
                      env={"MLFLOW_TRACKING_URI": uri})
    assert applied.returncode == 0, applied.stderr
    with ociart.Client() as c:
        assert set(c.tags(ckpt)) == {"young", "finished", "running", "norun"}
        assert set(c.tags(data)) == {"d-newest", "d-finished"}
        for name in ("failed", "killed"):
            with pytest.raises(NotFoundError):
                c.resolve(f"{ckpt}@{digest[name]}")
        with pytest.raises(NotFoundError):
            c.resolve(f"{data}@{digest['d-failed']}")
        graph = c.lineage(f"{ckpt}:finished").model_dump_json()
        assert digest["d-finished"] in graph and '"kind":"missing"' not in graph


# -- the embedded store -------------------------------------------------------------------------------------------
def test_gc_local_shrinks_the_embedded_store(tmp_path: Path) -> None:
    from ociart.cache import DigestCache

    with ociart.Client() as c:
        c.push("data/local:v1", [_dir(tmp_path, "ld1", 50, size=200_000)], kind="dataset",
               lineage=LineageOptions(git=False))
        keep = c.push("models/local:v1", [_dir(tmp_path, "lm1", 40, size=200_000)], kind="model",
                      lineage=LineageOptions(git=False, inputs=["data/local:v1"]))
        store = Path(c.ref("models/local").layout)  # type: ignore[arg-type]

        def size() -> int:
            return sum(p.stat().st_size for p in store.rglob("*") if p.is_file() and p.name != "index.json")

        c.push("data/local:v5", [_dir(tmp_path, "ld5", 45, size=200_000)], kind="dataset",
               lineage=LineageOptions(git=False))
        gone_file = _dir(tmp_path, "scratch", 1, size=100)
        c.push("scratch/x:v1", [gone_file / "weights.bin"])
        for p in gone_file.iterdir():
            p.unlink()
        before = size()  # what the policy keeps
        for i in range(2, 5):  # older than v5: they go
            c.push(f"data/local:v{i}", [_dir(tmp_path, f"ld{i}", 50 - i, size=200_000)], kind="dataset",
                   lineage=LineageOptions(git=False))
        partial = store / ".ociart-tmp" / "ingest" / ("ab" * 32 + ".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(b"x" * 5000)
        os.utime(partial, (time.time() - 3 * DAY, time.time() - 3 * DAY))
        assert size() > before
    policy = tmp_path / "local.yaml"
    policy.write_text("apiVersion: ociart.dev/v1alpha1\nkind: RetentionPolicy\nrules:\n"
                      "  - repositories: ['data/*', 'models/*']\n    keepLast: 1\n")
    r = run_cli("gc", "--local", "--policy", str(policy), "--apply", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    reasons = {tuple(i["tags"]): i["reasons"] for i in result["plan"]["items"] if i["repository"] == "data/local"}
    assert reasons[("v1",)] == [f"input of models/local@{keep.digest}"] and reasons[("v5",)] == ["newest 1"]
    assert result["local"]["partials"] == 1 and result["local"]["cache_rows"] >= 1
    assert result["freed_bytes"] >= 3 * 200_000
    assert not partial.exists()
    assert size() == before  # back to what the kept artifacts need
    with ociart.Client() as c:
        assert c.tags("data/local") == ["v1", "v5"] and c.tags("scratch/x") == ["v1"]  # no rule: left alone
        cache = DigestCache()
        assert cache.prune() == 0
        cache.close()


def test_formerly_prod_within_keep_within_is_protected(registry: RunningRegistry, unique_repo: str,
                                                      tmp_path: Path) -> None:
    """The promotion history (``ociart.promotion.history``) protects what was in production within ``keepWithin``;
    what left production before the window is not protected by it."""
    import datetime as dt

    from ociart import promotion
    repo = f"{registry.host}/{unique_repo}"
    with ociart.Client() as c:
        d = {i: c.push(f"{repo}:v{i}", [_dir(tmp_path, f"f{i}", 60 - i)], kind="model",
                       lineage=LineageOptions(git=False)).digest for i in range(1, 6)}
        c.tag(f"{repo}:v4", "prod")
        target = c.target(c.ref(repo))
        now = dt.datetime.now(dt.UTC)
        for when, digest, previous in ((now - dt.timedelta(days=40), d[1], None),
                                       (now - dt.timedelta(days=20), d[2], d[1]),
                                       (now - dt.timedelta(days=2), d[4], d[2])):
            promotion.append(target, unique_repo, "prod",
                             promotion.HistoryEntry(time=when, digest=digest, previous=previous))
        p = tmp_path / "p.yaml"
        p.write_text(f"apiVersion: ociart.dev/v1alpha1\nkind: RetentionPolicy\nrules:\n"
                     f"  - repositories: ['{repo}']\n    protectTags: [prod]\n    keepLast: 1\n    keepWithin: 7d\n")
        plan = c.gc(p, [repo])
        actions = {tuple(i.tags): (i.action, i.reasons) for i in plan.plan.items}
        assert actions[("prod", "v4")] == ("keep", ["protected: prod"])
        assert actions[("v2",)] == ("keep", ["formerly prod (promotion history, within 7d)"])  # left prod 2d ago
        assert actions[("v1",)][0] == "delete"  # left prod 20 days ago, before the 7d window
        assert actions[("v5",)] == ("keep", ["newest 1"]) and actions[("v3",)][0] == "delete"
        assert not any(t.startswith("_promotions.") for i in plan.plan.items for t in i.tags)
        c.gc(p, [repo], apply=True)
        assert set(c.tags(repo)) >= {"v2", "v4", "v5", "prod"} and not {"v1", "v3"} & set(c.tags(repo))
        assert promotion.history(target, unique_repo, "prod")[0].digest == d[4]  # the history itself is kept


def test_archive_copies_with_signatures_then_deletes(registry: RunningRegistry, unique_repo: str,
                                                     tmp_path: Path) -> None:
    """``archiveTo``: what goes is copied with its referrers and legacy signature, verified there, then deleted."""
    repo = f"{registry.host}/{unique_repo}"
    key = ec.generate_private_key(ec.SECP256R1())
    trust = Trust(keys=[TrustedKey("test", key.public_key())])
    with ociart.Client() as c:
        d = {i: c.push(f"{repo}:v{i}", [_dir(tmp_path, f"a{i}", 30 - i)], kind="model", sign=key,
                       lineage=LineageOptions(git=False)).digest for i in range(1, 4)}
        p = tmp_path / "p.yaml"
        p.write_text(f"apiVersion: ociart.dev/v1alpha1\nkind: RetentionPolicy\nrules:\n"
                     f"  - repositories: ['{repo}']\n    keepLast: 1\n    archiveTo: {registry.host}/archive\n")
        result = c.gc(p, [repo], apply=True)
        dest = f"{registry.host}/archive/{unique_repo}"
        assert [(a.action, a.destination) for a in result.applied] == [("archived", dest)] * 2
        assert c.tags(repo) == ["v3"] and sorted(c.tags(dest)) == ["v1", "v2"]
        for i in (1, 2):
            assert c.resolve(f"{dest}:v{i}").digest == d[i]
            c.verify(f"{dest}:v{i}", trust)  # bundle and legacy .sig came along
            with pytest.raises(NotFoundError):
                c.resolve(f"{repo}@{d[i]}")
        c.verify(f"{repo}:v3", trust)
        logged = [json.loads(line) for line in
                  (Path(os.environ["OCIART_HOME"]) / "audit.jsonl").read_text().splitlines()]
        assert [e["detail"]["destination"] for e in logged if e["action"] == "gc-archive"] == [dest, dest]


def test_expire_untagged_in_an_oci_layout(tmp_path: Path) -> None:
    """An ``oci:`` layout lists untagged manifests (index.json entries without a name, as other tools write them):
    ``expireUntagged`` removes those older than the limit and keeps younger ones and everything tagged."""
    layout = tmp_path / "layout"
    with ociart.Client() as c:
        old = c.push(f"oci:{layout}:old", [_dir(tmp_path, "u-old", 30)], kind="model", lineage=False).digest
        young = c.push(f"oci:{layout}:young", [_dir(tmp_path, "u-young", 1)], kind="model", lineage=False).digest
        tagged = c.push(f"oci:{layout}:v1", [_dir(tmp_path, "u-tagged", 90)], kind="model", lineage=False).digest
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:  # "old" and "young" lose their names: untagged entries
        if entry["digest"] in (old, young):
            del entry["annotations"]
    (layout / "index.json").write_text(json.dumps(index))
    policy = tmp_path / "p.yaml"
    policy.write_text(f"apiVersion: ociart.dev/v1alpha1\nkind: RetentionPolicy\nrules:\n"
                      f"  - repositories: ['oci:{layout}']\n    expireUntagged: 7d\n")
    with ociart.Client() as c:
        result = c.gc(policy, [f"oci:{layout}"], apply=True)
        actions = {i.digest: (i.action, i.reasons) for i in result.plan.items}
        assert actions[old] == ("delete", ["expired untagged 30d"])
        assert actions[young] == ("keep", ["untagged, 1d old (expireUntagged 7d)"])
        assert actions[tagged] == ("keep", ["rule 1 sets no keepLast or keepWithin"])
        assert result.freed_bytes > 0
    digests = {e["digest"] for e in json.loads((layout / "index.json").read_text())["manifests"]}
    assert digests == {young, tagged} and not (layout / "blobs/sha256" / old.removeprefix("sha256:")).exists()


def test_expire_untagged_keeps_signature_and_history_manifests_in_a_layout(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """In a layout, a cosign ``.sig`` manifest and a promotion history are named only by machinery tags: they are
    not untagged artifacts, so ``expireUntagged`` (here 0d: every untagged artifact) leaves them, and the kept
    artifact still verifies and still has its history."""
    from ociart.promotion import history
    from ociart.signing import keys
    from ociart.targets.layout import LayoutTarget
    from ociart.targets.referrers import legacy_tag

    monkeypatch.setenv("COSIGN_PASSWORD", "gc-test")
    keys.generate_key_pair(tmp_path / "k", b"gc-test")
    layout = tmp_path / "layout"
    with ociart.Client() as c:
        art = c.push(f"oci:{layout}:candidate", [_dir(tmp_path, "signed", 90)], kind="model", lineage=False,
                     sign=str(tmp_path / "k.key"))
        c.promote(f"oci:{layout}:candidate", "prod")
    names = {(e.get("annotations") or {}).get("org.opencontainers.image.ref.name")
             for e in json.loads((layout / "index.json").read_text())["manifests"]}
    assert {legacy_tag(art.digest, ".sig"), "_promotions.prod"} <= names, names
    policy = tmp_path / "p.yaml"
    policy.write_text(f"apiVersion: ociart.dev/v1alpha1\nkind: RetentionPolicy\nrules:\n"
                      f"  - repositories: ['oci:{layout}']\n    expireUntagged: 0d\n")
    with ociart.Client() as c:
        result = c.gc(policy, [f"oci:{layout}"], apply=True)
        assert [i.action for i in result.plan.items if i.action != "keep"] == []
        assert c.verify(f"oci:{layout}:prod", keys=[tmp_path / "k.pub"]).signatures
    assert [e.digest for e in history(LayoutTarget(layout), "", "prod")] == [art.digest]
    after = {(e.get("annotations") or {}).get("org.opencontainers.image.ref.name")
             for e in json.loads((layout / "index.json").read_text())["manifests"]}
    assert after == names
