"""Authentication, credential sources and TLS against real distribution 2.8.2 registries on loopback.

* htpasswd (Basic): explicit credentials, ``OCIART_REGISTRY_USERNAME/PASSWORD``, Docker ``config.json``
  (``auths``, ``credHelpers``, ``credsStore`` and their precedence), ``REGISTRY_AUTH_FILE``, containers
  ``auth.json``; ``ociart login`` / ``logout`` through the CLI.
* token (Bearer): anonymous pull, refused anonymous push, scope upgrade, one token per repository, no
  token re-fetch storms, cross-repository mount, expiry, OAuth2 identity tokens.
* TLS: ``ca_file`` / ``--ca-file``, the certificate error without it (and no plain-HTTP fallback),
  ``insecure``, the plain-HTTP fallback on loopback, ``--plain-http`` against an HTTPS registry.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.registry import PASSWORD, USERNAME, RunningRegistry

import ociart
from ociart.errors import AuthError, NetworkError, OciartError
from ociart.targets.registry import RegistryTarget

# -- helpers ----------------------------------------------------------------------------------------------------------

_MAIN = Path(ociart.__file__).parent / "__main__.py"
CLI = [sys.executable, "-m", "ociart"] if _MAIN.exists() else [str(Path(sys.executable).with_name("ociart"))]


def cli(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the ``ociart`` CLI in a subprocess with the (isolated) test environment."""
    return subprocess.run([*CLI, *args], input=stdin if stdin is not None else "", capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def assert_clean_failure(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The CLI failed with ``code`` and one ``error:`` line, no traceback; returns stderr."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    assert proc.stdout == "", proc.stdout
    return proc.stderr


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def docker_config_file() -> Path:
    return Path(os.environ["DOCKER_CONFIG"]) / "config.json"


def write_docker_config(cfg: dict[str, Any]) -> Path:
    path = docker_config_file()
    path.write_text(json.dumps(cfg))
    return path


def make_files(base: Path, n: int = 2) -> Path:
    """A directory of ``n`` small files with distinct contents (pushed as one layer each)."""
    src = base / f"src-{uuid.uuid4().hex[:8]}"
    src.mkdir(parents=True)
    for i in range(n):
        (src / f"file-{i}.bin").write_bytes(f"{src.name} payload {i}\n".encode() * (i + 1))
    return src


def assert_same_files(src: Path, out: Path) -> None:
    names = sorted(p.name for p in src.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        assert (out / name).read_bytes() == (src / name).read_bytes(), name


def roundtrip(client: ociart.Client, ref: str, base: Path, n: int = 2) -> None:
    """Push ``n`` files to ``ref`` and pull them back with the same client; contents must match."""
    src = make_files(base, n)
    desc = client.push(ref, [src])
    out = base / f"out-{uuid.uuid4().hex[:8]}"
    result = client.pull(ref, out)
    assert result.digest == desc.digest
    assert_same_files(src, out)


def registry_target(client: ociart.Client, ref: str) -> RegistryTarget:
    target = client.target(client.ref(ref))
    assert isinstance(target, RegistryTarget)
    return target


def token_log(reg: RunningRegistry, since: int = 0) -> list[dict[str, Any]]:
    assert reg.token_server is not None
    return reg.token_server.requests[since:]


def scope_sets(records: list[dict[str, Any]]) -> Counter[tuple[str, ...]]:
    return Counter(tuple(sorted(r["scopes"])) for r in records)


def registry_statuses(reg: RunningRegistry, needle: str) -> list[int]:
    """HTTP statuses of the registry's access-log lines whose request line contains ``needle``."""
    statuses = []
    for line in reg.log_text().splitlines():
        # 127.0.0.1 - - [date] "POST /v2/... HTTP/1.1" 201 0 "" "ociart/0.1"
        if line.startswith("127.0.0.1 - - [") and needle in line:
            statuses.append(int(line.split('" ', 1)[1].split()[0]))
    return statuses


class FakeHelpers:
    """Fake ``docker-credential-<name>`` executables in one directory; every invocation is logged."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.log = bindir / "calls.jsonl"

    def make(self, name: str, host: str, username: str, secret: str) -> Path:
        """The helper answers ``get`` for ``host`` only; anything else exits 1 (the protocol's "not found")."""
        script = self.bindir / f"docker-credential-{name}"
        script.write_text(
            f"#!{sys.executable}\n"
            "import json, sys\n"
            "action = sys.argv[1] if len(sys.argv) > 1 else ''\n"
            "server = sys.stdin.read().strip()\n"
            f"with open({str(self.log)!r}, 'a') as log:\n"
            f"    log.write(json.dumps({{'helper': {name!r}, 'action': action, 'server': server}}) + '\\n')\n"
            f"if action != 'get' or server != {host!r}:\n"
            "    print('credentials not found in native keychain')\n"
            "    sys.exit(1)\n"
            f"print(json.dumps({{'ServerURL': server, 'Username': {username!r}, 'Secret': {secret!r}}}))\n")
        script.chmod(0o755)
        return script

    def calls(self) -> list[dict[str, str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHelpers:
    """A :class:`FakeHelpers` whose directory is first on ``PATH``."""
    bindir = tmp_path / "helper-bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return FakeHelpers(bindir)


# -- htpasswd: credential sources --------------------------------------------------------------------------------------

def test_htpasswd_refuses_missing_and_wrong_credentials(htpasswd_registry: RunningRegistry, unique_repo: str,
                                                        tmp_path: Path) -> None:
    ref = f"{htpasswd_registry.host}/{unique_repo}:v1"
    src = make_files(tmp_path)
    with ociart.Client() as anonymous, pytest.raises(AuthError) as missing:
        anonymous.push(ref, [src])
    assert "ociart login" in str(missing.value) and htpasswd_registry.host in str(missing.value)
    with ociart.Client(username=USERNAME, password="wrong") as wrong, pytest.raises(AuthError) as refused:
        wrong.push(ref, [src])
    assert repr(USERNAME) in str(refused.value)


def test_htpasswd_explicit_credentials(htpasswd_registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    with ociart.Client(username=USERNAME, password=PASSWORD) as client:
        roundtrip(client, f"{htpasswd_registry.host}/{unique_repo}:v1", tmp_path)


def test_htpasswd_environment_credentials(htpasswd_registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIART_REGISTRY_HOST", htpasswd_registry.host)
    monkeypatch.setenv("OCIART_REGISTRY_USERNAME", USERNAME)
    monkeypatch.setenv("OCIART_REGISTRY_PASSWORD", PASSWORD)
    with ociart.Client() as client:
        roundtrip(client, f"{htpasswd_registry.host}/{unique_repo}:v1", tmp_path)


def test_explicit_credentials_beat_environment(htpasswd_registry: RunningRegistry, unique_repo: str,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIART_REGISTRY_HOST", htpasswd_registry.host)
    monkeypatch.setenv("OCIART_REGISTRY_USERNAME", USERNAME)
    monkeypatch.setenv("OCIART_REGISTRY_PASSWORD", "wrong-from-env")
    ref = f"{htpasswd_registry.host}/{unique_repo}:v1"
    with ociart.Client() as client, pytest.raises(AuthError) as refused:  # the env credentials really are wrong
        client.push(ref, [make_files(tmp_path)])
    assert "environment" in str(refused.value)
    with ociart.Client(username=USERNAME, password=PASSWORD) as client:
        roundtrip(client, ref, tmp_path)


def test_environment_beats_docker_config(htpasswd_registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    write_docker_config({"auths": {htpasswd_registry.host: {"auth": b64(f"{USERNAME}:wrong")}}})
    monkeypatch.setenv("OCIART_REGISTRY_HOST", htpasswd_registry.host)
    monkeypatch.setenv("OCIART_REGISTRY_USERNAME", USERNAME)
    monkeypatch.setenv("OCIART_REGISTRY_PASSWORD", PASSWORD)
    with ociart.Client() as client:
        roundtrip(client, f"{htpasswd_registry.host}/{unique_repo}:v1", tmp_path)


def test_htpasswd_docker_config_auths(htpasswd_registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    ref = f"{htpasswd_registry.host}/{unique_repo}:v1"
    write_docker_config({"auths": {"other.example:5000": {"auth": b64("bob:nope")}}})
    with ociart.Client() as client, pytest.raises(AuthError):  # another host's entry is not used
        client.push(ref, [make_files(tmp_path)])
    write_docker_config({"auths": {"other.example:5000": {"auth": b64("bob:nope")},
                                   htpasswd_registry.host: {"auth": b64(f"{USERNAME}:{PASSWORD}")}}})
    with ociart.Client() as client:
        roundtrip(client, ref, tmp_path)


def test_htpasswd_registry_auth_file(htpasswd_registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {htpasswd_registry.host: {"auth": b64(f"{USERNAME}:{PASSWORD}")}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    with ociart.Client() as client:
        roundtrip(client, f"{htpasswd_registry.host}/{unique_repo}:v1", tmp_path)


def test_htpasswd_containers_auth_json(htpasswd_registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    path = Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"auths": {htpasswd_registry.host: {"auth": b64(f"{USERNAME}:{PASSWORD}")}}}))
    with ociart.Client() as client:
        roundtrip(client, f"{htpasswd_registry.host}/{unique_repo}:v1", tmp_path)


def test_cred_helper_beats_creds_store_and_auths(htpasswd_registry: RunningRegistry, unique_repo: str,
                                                 tmp_path: Path, helpers: FakeHelpers) -> None:
    host = htpasswd_registry.host
    ref = f"{host}/{unique_repo}:v1"
    helpers.make("test", host, USERNAME, PASSWORD)
    helpers.make("wrongstore", host, USERNAME, "wrong-from-store")
    wrong_auths = {host: {"auth": b64(f"{USERNAME}:wrong-from-auths")}}

    # Controls: the auths entry and the credsStore really hold wrong credentials, and they are used.
    write_docker_config({"auths": wrong_auths})
    with ociart.Client() as client, pytest.raises(AuthError):
        client.push(ref, [make_files(tmp_path)])
    write_docker_config({"auths": wrong_auths, "credsStore": "wrongstore"})
    with ociart.Client() as client, pytest.raises(AuthError):
        client.push(ref, [make_files(tmp_path)])
    assert {c["helper"] for c in helpers.calls()} == {"wrongstore"}
    mark = len(helpers.calls())

    # credHelpers[host] wins over both.
    write_docker_config({"auths": wrong_auths, "credsStore": "wrongstore", "credHelpers": {host: "test"}})
    with ociart.Client() as client:
        roundtrip(client, ref, tmp_path)
    calls = helpers.calls()[mark:]
    assert calls and all(c == {"helper": "test", "action": "get", "server": host} for c in calls), calls


def test_creds_store_beats_auths(htpasswd_registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                 helpers: FakeHelpers) -> None:
    host = htpasswd_registry.host
    helpers.make("test", host, USERNAME, PASSWORD)
    write_docker_config({"auths": {host: {"auth": b64(f"{USERNAME}:wrong-from-auths")}}, "credsStore": "test",
                         "credHelpers": {"other.example:5000": "missing-helper"}})
    with ociart.Client() as client:
        roundtrip(client, f"{host}/{unique_repo}:v1", tmp_path)
    assert {"helper": "test", "action": "get", "server": host} in helpers.calls()


def test_cred_helper_runs_once_per_client(htpasswd_registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                          helpers: FakeHelpers) -> None:
    """Eight parallel layer uploads look the credentials up once (a helper may be slow or prompt the user)."""
    host = htpasswd_registry.host
    helpers.make("test", host, USERNAME, PASSWORD)
    write_docker_config({"credHelpers": {host: "test"}})
    with ociart.Client(concurrency=8) as client:
        roundtrip(client, f"{host}/{unique_repo}:v1", tmp_path, n=8)
    assert helpers.calls() == [{"helper": "test", "action": "get", "server": host}]


# -- CLI login / logout ------------------------------------------------------------------------------------------------

def test_cli_login_push_logout(htpasswd_registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    host = htpasswd_registry.host
    config = docker_config_file()
    config.write_text(json.dumps({"auths": {"other.example:5000": {"auth": b64("bob:pw")}}}))

    login = cli("login", host, "--username", USERNAME, "--password-stdin", stdin=f"{PASSWORD}\n")
    assert login.returncode == 0, login.stderr
    cfg = json.loads(config.read_text())
    assert base64.b64decode(cfg["auths"][host]["auth"]).decode() == f"{USERNAME}:{PASSWORD}"
    assert cfg["auths"]["other.example:5000"] == {"auth": b64("bob:pw")}  # other entries kept
    assert config.stat().st_mode & 0o077 == 0, oct(config.stat().st_mode)  # secrets are not world-readable

    src = make_files(tmp_path)
    push = cli("push", f"{host}/{unique_repo}:v1", str(src))  # no credential flags
    assert push.returncode == 0, push.stderr
    digest = push.stdout.strip()
    assert digest.startswith("sha256:")
    out = tmp_path / "out"
    pull = cli("pull", f"{host}/{unique_repo}:v1", "-o", str(out))
    assert pull.returncode == 0, pull.stderr
    assert pull.stdout.strip() == digest
    assert_same_files(src, out)

    logout = cli("logout", host)
    assert logout.returncode == 0, logout.stderr
    cfg = json.loads(config.read_text())
    assert host not in cfg.get("auths", {})
    assert cfg["auths"]["other.example:5000"] == {"auth": b64("bob:pw")}
    after = cli("push", f"{host}/{unique_repo}:v2", str(src))
    assert_clean_failure(after, 4)


def test_cli_login_wrong_password_writes_nothing(htpasswd_registry: RunningRegistry) -> None:
    host = htpasswd_registry.host
    config = docker_config_file()
    login = cli("login", host, "--username", USERNAME, "--password-stdin", stdin="wrong\n")
    err = assert_clean_failure(login, 4)
    assert host in err
    assert not config.exists()

    before = json.dumps({"auths": {"other.example:5000": {"auth": b64("bob:pw")}}})
    config.write_text(before)
    login = cli("login", host, "--username", USERNAME, "--password-stdin", stdin="wrong\n")
    assert_clean_failure(login, 4)
    assert config.read_text() == before


def test_cli_login_token_registry(token_registry: RunningRegistry) -> None:
    host = token_registry.host
    wrong = cli("login", host, "--username", USERNAME, "--password-stdin", stdin="wrong\n")
    assert_clean_failure(wrong, 4)
    assert not docker_config_file().exists()
    assert any(r["status"] == 401 for r in token_log(token_registry))  # the token service judged the password
    ok = cli("login", host, "--username", USERNAME, "--password-stdin", stdin=f"{PASSWORD}\n")
    assert ok.returncode == 0, ok.stderr
    assert token_log(token_registry)[-1]["authorized_user"] == USERNAME
    auths = json.loads(docker_config_file().read_text())["auths"]
    assert base64.b64decode(auths[host]["auth"]).decode() == f"{USERNAME}:{PASSWORD}"


# -- token registry ----------------------------------------------------------------------------------------------------

def test_token_anonymous_pull(token_registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    ref = f"{token_registry.host}/{unique_repo}:v1"
    src = make_files(tmp_path)
    with ociart.Client(username=USERNAME, password=PASSWORD) as alice:
        pushed = alice.push(ref, [src])
    mark = len(token_log(token_registry))
    with ociart.Client() as anonymous:
        result = anonymous.pull(ref, tmp_path / "out")
    assert result.digest == pushed.digest
    assert_same_files(src, tmp_path / "out")
    anon = token_log(token_registry, mark)
    assert anon, "the anonymous pull did not use the token service"
    assert all(r["authorized_user"] is None and r["status"] == 200 for r in anon), anon
    assert {tuple(r["scopes"]) for r in anon} == {(f"repository:{unique_repo}:pull",)}


def test_token_anonymous_push_refused(token_registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    ref = f"{token_registry.host}/{unique_repo}:v1"
    src = make_files(tmp_path)
    with ociart.Client() as anonymous, pytest.raises(AuthError) as refused:
        anonymous.push(ref, [src])
    message = str(refused.value)
    assert token_registry.host in message and (unique_repo in message or "login" in message), message
    # the token service was asked for push and granted only pull
    asked = [r for r in token_log(token_registry) if f"repository:{unique_repo}:pull,push" in r["scopes"]]
    assert asked and all(r["authorized_user"] is None for r in asked)
    assert all(g["actions"] == ["pull"] for r in asked for g in r["granted"]), asked
    assert len(token_log(token_registry)) <= 4, "token requests loop on a refused push"

    err = assert_clean_failure(cli("push", ref, str(src)), 4)
    assert token_registry.host in err


def test_token_scope_upgrade_pull_then_push(token_registry: RunningRegistry, unique_repo: str,
                                            tmp_path: Path) -> None:
    ref = f"{token_registry.host}/{unique_repo}"
    with ociart.Client(username=USERNAME, password=PASSWORD) as seeder:
        seeder.push(f"{ref}:v1", [make_files(tmp_path)])
    mark = len(token_log(token_registry))
    with ociart.Client(username=USERNAME, password=PASSWORD) as client:
        client.pull(f"{ref}:v1", tmp_path / "out1")
        pulled = token_log(token_registry, mark)
        assert [r["scopes"] for r in pulled] == [[f"repository:{unique_repo}:pull"]]
        assert pulled[0]["granted"] == [{"type": "repository", "name": unique_repo, "actions": ["pull"]}]

        src = make_files(tmp_path)
        pushed = client.push(f"{ref}:v2", [src])
        later = token_log(token_registry, mark + len(pulled))
        upgrade = [r for r in later if f"repository:{unique_repo}:pull,push" in r["scopes"]]
        assert upgrade, later
        assert all(r["authorized_user"] == USERNAME and r["status"] == 200 for r in upgrade)
        assert "push" in upgrade[0]["granted"][0]["actions"]
        result = client.pull(f"{ref}:v2", tmp_path / "out2")
    assert result.digest == pushed.digest
    assert_same_files(src, tmp_path / "out2")


def test_token_challenge_driven_scope_upgrade(token_registry: RunningRegistry, unique_repo: str) -> None:
    """A request sent with a too-narrow scope is upgraded from the registry's challenge, not refused."""
    with ociart.Client(username=USERNAME, password=PASSWORD) as client:
        target = registry_target(client, f"{token_registry.host}/{unique_repo}:x")
        # learn the Bearer challenge and cache a pull-only token
        tags = target.request("GET", f"/v2/{unique_repo}/tags/list",
                              scopes=(f"repository:{unique_repo}:pull",))
        assert tags.status_code == 404, tags.status_code  # authorized, but the repository is empty
        resp = target.request("POST", f"/v2/{unique_repo}/blobs/uploads/",
                              scopes=(f"repository:{unique_repo}:pull",), headers={"Content-Length": "0"})
        assert resp.status_code == 202, resp.status_code
        assert resp.headers["location"]
    asked = [r["scopes"] for r in token_log(token_registry)]
    assert asked == [[f"repository:{unique_repo}:pull"], [f"repository:{unique_repo}:pull,push"]], asked


def test_token_parallel_uploads_share_one_token(token_registry: RunningRegistry, unique_repo: str,
                                                tmp_path: Path) -> None:
    """Eight layers pushed by eight threads: one token request per scope set, not one per thread."""
    with ociart.Client(username=USERNAME, password=PASSWORD, concurrency=8) as client:
        roundtrip(client, f"{token_registry.host}/{unique_repo}:v1", tmp_path, n=8)
    counts = scope_sets(token_log(token_registry))
    assert counts[(f"repository:{unique_repo}:pull,push",)] == 1, counts
    assert all(n == 1 for n in counts.values()), counts


def test_token_two_repositories_alternating(token_registry: RunningRegistry, tmp_path: Path) -> None:
    repos = [f"test/{uuid.uuid4().hex[:12]}" for _ in range(2)]
    host = token_registry.host
    with ociart.Client(username=USERNAME, password=PASSWORD) as client:
        sources = {}
        for repo in repos:
            sources[repo] = make_files(tmp_path, 3)
            client.push(f"{host}/{repo}:v1", [sources[repo]])
        first = len(token_log(token_registry))
        for round_ in range(3):
            for repo in repos:
                out = tmp_path / f"out-{round_}-{repo.replace('/', '_')}"
                client.pull(f"{host}/{repo}:v1", out)
                assert_same_files(sources[repo], out)
                client.resolve(f"{host}/{repo}:v1")
                assert client.tags(f"{host}/{repo}") == ["v1"]
    log = token_log(token_registry)
    # every token is for exactly one repository: each repository gets its own
    for r in log:
        assert len({s.split(":")[1] for s in r["scopes"]}) == 1, r["scopes"]
    counts = scope_sets(log)
    for repo in repos:
        assert counts[(f"repository:{repo}:pull,push",)] >= 1, counts
        assert counts[(f"repository:{repo}:pull",)] >= 1, counts
    # The cache is keyed by (host, service, scopes) and tokens live 300 s: nothing is fetched twice, and
    # alternating between the repositories adds at most the first pull token of each.
    assert all(n == 1 for n in counts.values()), counts
    assert len(log) - first <= len(repos), log[first:]


def test_token_mount_across_repositories(token_registry: RunningRegistry, tmp_path: Path) -> None:
    repo_a, repo_b = (f"test/{uuid.uuid4().hex[:12]}" for _ in range(2))
    host = token_registry.host
    src = make_files(tmp_path, 2)
    with ociart.Client(username=USERNAME, password=PASSWORD) as pusher:
        pushed = pusher.push(f"{host}/{repo_a}:v1", [src])
        assert registry_target(pusher, f"{host}/{repo_a}:v1").bytes_uploaded > 0  # the counter counts
    mark = len(token_log(token_registry))
    with ociart.Client(username=USERNAME, password=PASSWORD) as client:
        copied = client.copy(f"{host}/{repo_a}:v1", f"{host}/{repo_b}:v1")
        assert copied.digest == pushed.digest
        assert registry_target(client, f"{host}/{repo_b}:v1").bytes_uploaded == 0
        result = client.pull(f"{host}/{repo_b}:v1", tmp_path / "out")
    assert result.digest == pushed.digest
    assert_same_files(src, tmp_path / "out")
    mount_scopes = [r for r in token_log(token_registry, mark)
                    if f"repository:{repo_a}:pull" in r["scopes"] and f"repository:{repo_b}:pull,push" in r["scopes"]]
    assert mount_scopes, token_log(token_registry, mark)
    assert all(r["authorized_user"] == USERNAME for r in mount_scopes)
    # 2 file layers + the empty config + the provenance statement (copied along as a referrer):
    # all mounted (201), no upload session opened on B
    mounts = registry_statuses(token_registry, f"POST /v2/{repo_b}/blobs/uploads/?mount=")
    assert mounts.count(201) == 4, mounts
    assert registry_statuses(token_registry, f'"POST /v2/{repo_b}/blobs/uploads/ HTTP') == []
    assert registry_statuses(token_registry, f"PATCH /v2/{repo_b}/blobs/uploads/") == []
    assert registry_statuses(token_registry, f"PUT /v2/{repo_b}/blobs/uploads/") == []


def test_token_expiry_fetches_a_new_token(registry_factory: Callable[..., RunningRegistry], unique_repo: str,
                                          tmp_path: Path) -> None:
    reg = registry_factory(auth="token", token_expires_in=2)
    ref = f"{reg.host}/{unique_repo}"
    with ociart.Client(username=USERNAME, password=PASSWORD) as client:
        roundtrip(client, f"{ref}:v1", tmp_path)
        mark, log_mark = len(token_log(reg)), len(reg.log_text())
        time.sleep(3.5)  # the registry rejects these tokens 1-2 s after expires_in (see TokenServer)
        roundtrip(client, f"{ref}:v2", tmp_path)
        assert client.tags(ref) == ["v1", "v2"]
    # renewed before use, not after the registry refused the stale token (a streamed body cannot be re-sent)
    refused = [line for line in reg.log_text()[log_mark:].splitlines()
               if line.startswith("127.0.0.1") and '" 401 ' in line]
    assert refused == [], refused
    fresh = token_log(reg, mark)
    assert any(f"repository:{unique_repo}:pull,push" in r["scopes"] for r in fresh), fresh
    assert any(r["scopes"] == [f"repository:{unique_repo}:pull"] for r in fresh), fresh
    assert all(r["status"] == 200 and r["authorized_user"] == USERNAME for r in fresh)


def test_token_rejected_early_is_refreshed_once(registry_factory: Callable[..., RunningRegistry], unique_repo: str,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token service promises 300 s but the registry stops accepting the token after ~2 s (clock skew,
    revocation): the client gets 401 with a token it thought valid, fetches a new one once, and succeeds."""
    reg = registry_factory(auth="token", token_expires_in=300)
    ts = reg.token_server
    assert ts is not None
    sign = ts.make_token
    monkeypatch.setattr(ts, "make_token", lambda user, scopes, **kw: sign(user, scopes, **{**kw, "expires_in": 2}))
    ref = f"{reg.host}/{unique_repo}"
    with ociart.Client(username=USERNAME, password=PASSWORD) as client:
        roundtrip(client, f"{ref}:v1", tmp_path)
        mark, log_mark = len(token_log(reg)), len(reg.log_text())
        time.sleep(3.5)
        desc = client.resolve(f"{ref}:v1")
        result = client.pull(f"{ref}:v1", tmp_path / "again")
        assert result.digest == desc.digest
    rejected = [line for line in reg.log_text()[log_mark:].splitlines()
                if line.startswith("127.0.0.1") and '" 401 ' in line]
    assert rejected, "the registry never rejected the stale token: the test did not exercise the refresh"
    fresh = token_log(reg, mark)
    assert [r["scopes"] for r in fresh] == [[f"repository:{unique_repo}:pull"]], fresh


def test_token_identity_token_refresh_grant(token_registry: RunningRegistry, unique_repo: str,
                                            tmp_path: Path) -> None:
    ts = token_registry.token_server
    assert ts is not None
    host = token_registry.host
    write_docker_config({"auths": {host: {"identitytoken": "not-a-known-refresh-token"}}})
    with ociart.Client() as client, pytest.raises(AuthError) as refused:
        client.push(f"{host}/{unique_repo}:v1", [make_files(tmp_path)])
    assert token_log(token_registry)[-1]["status"] == 401
    assert token_log(token_registry)[-1]["method"] == "POST"
    # the error names the refused identity token and where it came from, not "anonymous access"
    message = str(refused.value)
    assert "identity token" in message and str(docker_config_file()) in message, message
    assert "anonymous" not in message, message

    write_docker_config({"auths": {host: {"identitytoken": ts.issue_refresh_token(USERNAME)}}})
    mark = len(token_log(token_registry))
    with ociart.Client() as client:
        roundtrip(client, f"{host}/{unique_repo}:v1", tmp_path)
    used = token_log(token_registry, mark)
    assert used and all(r["method"] == "POST" for r in used), used
    assert all(r["authorized_user"] == USERNAME and r["status"] == 200 for r in used), used
    assert any(f"repository:{unique_repo}:pull,push" in r["scopes"] for r in used)



def test_token_cred_helper_identity_token(token_registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                          helpers: FakeHelpers) -> None:
    """A helper answering ``Username: "<token>"`` hands over an identity token: the refresh grant is used."""
    ts = token_registry.token_server
    assert ts is not None
    host = token_registry.host
    helpers.make("idtoken", host, "<token>", ts.issue_refresh_token(USERNAME))
    write_docker_config({"credHelpers": {host: "idtoken"}})
    with ociart.Client() as client:
        roundtrip(client, f"{host}/{unique_repo}:v1", tmp_path)
    log = token_log(token_registry)
    assert log and all(r["method"] == "POST" and r["authorized_user"] == USERNAME for r in log), log
    assert helpers.calls() == [{"helper": "idtoken", "action": "get", "server": host}]

# -- TLS and scheme selection ------------------------------------------------------------------------------------------

def _record_requests(client: ociart.Client, ref: str) -> list[str]:
    """URLs of every HTTP request the registry target sends (including the scheme probe)."""
    seen: list[str] = []
    target = registry_target(client, ref)
    target._client.event_hooks = {"request": [lambda req: seen.append(str(req.url))],  # noqa: SLF001
                                  "response": []}
    return seen


def test_tls_with_ca_file(tls_registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    ref = f"{tls_registry.host}/{unique_repo}:v1"
    with ociart.Client(ca_file=tls_registry.ca_file) as client:
        seen = _record_requests(client, ref)
        roundtrip(client, ref, tmp_path)
        assert registry_target(client, ref).origin == f"https://{tls_registry.host}"
    assert seen and all(u.startswith("https://") for u in seen), seen


def test_tls_cli_ca_file(tls_registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    ref = f"{tls_registry.host}/{unique_repo}:v1"
    src = make_files(tmp_path)
    push = cli("push", "--ca-file", str(tls_registry.ca_file), ref, str(src))
    assert push.returncode == 0, push.stderr
    pull = cli("pull", "--ca-file", str(tls_registry.ca_file), ref, "-o", str(tmp_path / "out"))
    assert pull.returncode == 0, pull.stderr
    assert pull.stdout.strip() == push.stdout.strip()
    assert_same_files(src, tmp_path / "out")


@pytest.mark.parametrize("operation", ["push", "pull"])
def test_tls_untrusted_certificate(tls_registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                                   operation: str) -> None:
    ref = f"{tls_registry.host}/{unique_repo}:v1"
    src = make_files(tmp_path)
    with ociart.Client() as client:
        seen = _record_requests(client, ref)
        started = time.monotonic()
        with pytest.raises(NetworkError) as failed:
            if operation == "push":
                client.push(ref, [src])
            else:
                client.pull(ref, tmp_path / "out")
        elapsed = time.monotonic() - started
    assert "certificate" in str(failed.value).lower(), failed.value
    assert seen and all(u.startswith("https://") for u in seen), seen  # no fallback to plain HTTP
    assert elapsed < 5, f"an untrusted certificate is not transient, yet failing took {elapsed:.1f} s"

    args = [ref, str(src)] if operation == "push" else [ref, "-o", str(tmp_path / "out")]
    err = assert_clean_failure(cli(operation, *args), 6)
    assert "certificate" in err.lower()


def test_tls_insecure(tls_registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    ref = f"{tls_registry.host}/{unique_repo}:v1"
    with ociart.Client(insecure=True) as client:
        seen = _record_requests(client, ref)
        roundtrip(client, ref, tmp_path)
    assert seen and all(u.startswith("https://") for u in seen), seen
    push = cli("push", "--insecure", f"{tls_registry.host}/{unique_repo}:v2", str(make_files(tmp_path)))
    assert push.returncode == 0, push.stderr


def test_plain_http_fallback_on_loopback(registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    ref = f"{registry.host}/{unique_repo}:v1"
    with ociart.Client() as client:
        roundtrip(client, ref, tmp_path)
        assert registry_target(client, ref).origin == f"http://{registry.host}"


def test_plain_http_flag_against_tls_registry(tls_registry: RunningRegistry, unique_repo: str,
                                              tmp_path: Path) -> None:
    ref = f"{tls_registry.host}/{unique_repo}:v1"
    src = make_files(tmp_path)
    with ociart.Client(plain_http=True) as client, pytest.raises(OciartError) as failed:
        client.push(ref, [src])
    assert tls_registry.host in str(failed.value)
    err = assert_clean_failure(cli("push", "--plain-http", ref, str(src)), failed.value.exit_code)
    assert tls_registry.host in err
    assert len(err.strip().splitlines()) == 1, err
