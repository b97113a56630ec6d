"""Issue 17 (part A): hostile registries, artifacts and input, each sent for real.

Credentials (token realm over HTTP, environment credentials per host, missing credential helpers, secrets in git
remotes), references with control characters or a URL scheme, MLflow titles that loop, files that change under a
push, symlinks leaving the pushed tree, undecodable and over-long names, control characters and markup in human
output, DNS failures and refused connections, policy names spelled differently, the digest cache after an in-place
rewrite, and endless response bodies.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.fakeserver import FakeServer
from support.registry import PASSWORD, USERNAME, RunningRegistry, make_test_ca

import ociart
from ociart.errors import AuthError, InvalidReferenceError, UnsafePathError
from ociart.reference import parse_reference

CLI = [sys.executable, "-m", "ociart"]


def cli(*args: str, stdin: str = "", cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {})})


def one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The CLI failed with ``code`` and exactly one ``error:`` line, no traceback; returns that line."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_docker_config(cfg: dict[str, Any]) -> Path:
    path = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    path.write_text(json.dumps(cfg))
    return path


# -- 1. credentials to a token realm only over HTTPS ------------------------------------------------------------------

def test_https_registry_never_sends_password_to_http_token_realm(tmp_path: Path) -> None:
    """An HTTPS registry names an ``http://`` realm on another host: the Basic password must not go there."""
    token_seen: list[dict[str, str]] = []

    def token(method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], bytes]:
        token_seen.append(headers)
        return 200, {"Content-Type": "application/json"}, b'{"token": "t"}'

    ca = make_test_ca(tmp_path / "ca")
    server_ctx = __import__("ssl").SSLContext(__import__("ssl").PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(ca.server_cert), str(ca.server_key))
    with FakeServer(token) as realm_server:
        realm = f"http://localhost:{realm_server.host.rsplit(':', 1)[1]}/token"  # another host name, plain HTTP

        def registry(method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], bytes]:
            return 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="reg",scope="repository:a/b:pull"',
                         "Content-Type": "application/json"}, b'{"errors":[{"code":"UNAUTHORIZED"}]}'

        with FakeServer(registry, tls=server_ctx) as reg:
            with ociart.Client(username="alice", password="s3cret-pw", ca_file=ca.ca_cert) as client, \
                    pytest.raises(AuthError) as refused:
                client.resolve(f"{reg.host}/a/b:v1")
    assert "refusing to send credentials" in str(refused.value) and realm in str(refused.value)
    assert all("authorization" not in h for h in token_seen), token_seen


def test_plain_http_loopback_registry_still_sends_credentials_to_its_http_realm(
        token_registry: RunningRegistry, unique_repo: str, tmp_path: Path) -> None:
    """Control: the rule does not break a plain-HTTP loopback registry whose realm is plain HTTP too."""
    (tmp_path / "f.txt").write_text("x")
    with ociart.Client(username=USERNAME, password=PASSWORD) as client:
        client.push(f"{token_registry.host}/{unique_repo}:v1", [tmp_path / "f.txt"])


# -- 12. environment credentials belong to one host -------------------------------------------------------------------

def test_environment_credentials_only_go_to_their_host(htpasswd_registry: RunningRegistry, unique_repo: str,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two registries: the environment's password reaches OCIART_REGISTRY_HOST and never the other one (the MLflow
    plugin takes hosts from tracking-server data anyone may set)."""
    seen: list[dict[str, str]] = []

    def foreign(method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], bytes]:
        seen.append(headers)
        return 401, {"WWW-Authenticate": 'Basic realm="collect"'}, b""

    monkeypatch.setenv("OCIART_REGISTRY_USERNAME", USERNAME)
    monkeypatch.setenv("OCIART_REGISTRY_PASSWORD", PASSWORD)
    monkeypatch.setenv("OCIART_REGISTRY_HOST", htpasswd_registry.host)
    (tmp_path / "f.txt").write_text("x")
    with ociart.Client() as client:
        client.push(f"{htpasswd_registry.host}/{unique_repo}:v1", [tmp_path / "f.txt"])  # the named host: used
    with FakeServer(foreign) as other, ociart.Client(plain_http=True) as client, pytest.raises(AuthError):
        client.resolve(f"{other.host}/victim/model:v1")
    assert seen and all("authorization" not in h for h in seen), seen
    # OCIART_REGISTRY alone names the host too; an unrelated OCIART_REGISTRY keeps them away from it
    monkeypatch.delenv("OCIART_REGISTRY_HOST")
    monkeypatch.setenv("OCIART_REGISTRY", htpasswd_registry.host)
    with ociart.Client() as client:
        client.resolve(f"{htpasswd_registry.host}/{unique_repo}:v1")
        client.resolve(f"{unique_repo}:v1")
    seen.clear()
    with FakeServer(foreign) as other, ociart.Client(plain_http=True) as client, pytest.raises(AuthError):
        client.resolve(f"{other.host}/victim/model:v1")
    assert seen and all("authorization" not in h for h in seen), seen


# -- 3. missing credential helpers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["credsStore", "credHelpers"])
def test_login_logout_with_missing_helper_fail_in_one_line(htpasswd_registry: RunningRegistry, key: str) -> None:
    host = htpasswd_registry.host
    cfg: dict[str, Any] = {"credsStore": "nonexistent-xyz"} if key == "credsStore" else \
        {"credHelpers": {host: "nonexistent-xyz"}}
    path = write_docker_config(cfg)
    login = cli("login", host, "-u", USERNAME, "--password-stdin", stdin=PASSWORD + "\n")
    line = one_line_error(login, 4)
    assert "docker-credential-nonexistent-xyz" in line and "not installed" in line
    assert json.loads(path.read_text()) == cfg  # no plain-text auths entry written in its place
    logout = cli("logout", host)
    assert "docker-credential-nonexistent-xyz" in one_line_error(logout, 4)


def test_reads_fall_back_to_auths_when_the_helper_is_missing(htpasswd_registry: RunningRegistry, unique_repo: str,
                                                            tmp_path: Path) -> None:
    host = htpasswd_registry.host
    write_docker_config({"credsStore": "nonexistent-xyz", "auths": {host: {"auth": b64(f"{USERNAME}:{PASSWORD}")}}})
    (tmp_path / "f.txt").write_text("x")
    with ociart.Client() as client:
        client.push(f"{host}/{unique_repo}:v1", [tmp_path / "f.txt"])


# -- 2. secrets in git remotes ---------------------------------------------------------------------------------------

def test_git_remote_secrets_are_not_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ociart.lineage.capture import git_info

    repo = tmp_path / "code"
    repo.mkdir()
    remote = ("https://oauth2:glpat-SECRET1@gitlab.example.com/org/x.git?access_token=SECRET2&private_token=SECRET3"
              "&X-Amz-Signature=SECRET4&sig=SECRET5&ref=main")
    for args in (["init", "-q"], ["remote", "add", "origin", remote],
                 ["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    info = git_info(repo)
    assert info is not None and info.remote == "https://gitlab.example.com/org/x.git?ref=main"
    # and through a real push: nothing of the secrets in the manifest or the provenance statement
    monkeypatch.chdir(repo)
    (repo / "f.txt").write_text("x")
    with ociart.Client() as client:
        desc = client.push("hard/git:v1", [repo / "f.txt"])
        _, content = client.manifest(f"hard/git@{desc.digest}")
        stmt = client.provenance(f"hard/git@{desc.digest}")
    recorded = content.data.decode() + stmt.model_dump_json()
    assert "gitlab.example.com/org/x.git" in recorded
    assert "SECRET" not in recorded and "oauth2" not in recorded


# -- 6. references ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["repo\n:v1", "repo:v1\n", "repo\n", "localhost:5000/a/b:v1\n", "a/b@sha256:" + "a" * 64
                                 + "\n", "a\x1b[31m/b", "a/b:v\x07", "oci:/tmp/x:na\nme", "a/b\x7f", "a/b\u0085"])
def test_control_characters_in_references_are_refused(bad: str) -> None:
    with pytest.raises(InvalidReferenceError):
        parse_reference(bad)


@pytest.mark.parametrize("url", ["http://localhost:5000/a/b:v1", "https://ghcr.io/org/model:v1"])
def test_url_scheme_in_reference_says_what_to_do(url: str) -> None:
    with pytest.raises(InvalidReferenceError) as err:
        parse_reference(url)
    assert "drop the http:// or https:// scheme" in str(err.value) and "--plain-http" in str(err.value)
    proc = cli("resolve", url)
    assert "--plain-http" in one_line_error(proc, 2)


# -- 13. MLflow titles that MLflow would walk for ever ---------------------------------------------------------------

@pytest.mark.parametrize("title", ["./x", "a/./b", "a//b", "a/"])
def test_mlflow_refuses_unnormalised_titles(registry: RunningRegistry, unique_repo: str, title: str,
                                            tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from helpers import push_subject

    from ociart.integrations.mlflow import OciartArtifactRepository
    from ociart.oci import ANNOTATION_TITLE, Content

    repo_name = f"{unique_repo}/artifacts"
    with ociart.Client() as client:
        target = client.target(client.ref(f"{registry.host}/{repo_name}"))
        desc = push_subject(target, repo_name, b"payload", tag="latest")
        manifest = json.loads(target.get_manifest(repo_name, desc.digest).data)
        manifest["layers"][0]["annotations"] = {ANNOTATION_TITLE: title}
        target.put_manifest(repo_name, Content.of(json.dumps(manifest).encode(), manifest["mediaType"]), "latest")
    repo = OciartArtifactRepository(f"ociart://{registry.host}/{repo_name}")
    (tmp_path / "dl").mkdir()
    with pytest.raises(UnsafePathError) as err:
        repo.download_artifacts("", str(tmp_path / "dl"))
    assert repr(title) in str(err.value)
    assert not any((tmp_path / "dl").rglob("*"))


# -- 9. DNS failures and refused connections are not transient ------------------------------------------------------

class _NoSleep:
    """Stands in for the registry module's ``time``: records every backoff sleep instead of sleeping."""

    def __init__(self) -> None:
        import time

        self._time = time
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._time, name)


@pytest.mark.parametrize("where", ["dns", "refused"])
def test_unreachable_hosts_fail_at_once(where: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import socket

    from ociart.errors import NetworkError
    from ociart.targets import registry as registry_module

    clock = _NoSleep()
    monkeypatch.setattr(registry_module, "time", clock)
    if where == "dns":
        host, cause = "no-such-host.invalid", "does not resolve"
    else:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            host, cause = f"127.0.0.1:{s.getsockname()[1]}", "connection refused"
    (tmp_path / "f.txt").write_text("x")
    for call in ("resolve", "push"):
        with ociart.Client(plain_http=True, retry_budget=60) as client, pytest.raises(NetworkError) as err:
            if call == "resolve":
                client.resolve(f"{host}/a/b:v1")
            else:
                client.push(f"{host}/a/b:v1", [tmp_path / "f.txt"], lineage=False)
        assert cause in str(err.value) and host in str(err.value)
    assert clock.sleeps == []  # not one backoff wait
    proc = cli("resolve", f"{host}/a/b:v1", "--plain-http")
    assert cause in one_line_error(proc, 6)


# -- 4. files that change while they are pushed -----------------------------------------------------------------------

def _mutate(path: Path, how: str) -> None:
    st = path.stat()
    if how == "shrink":
        os.truncate(path, st.st_size // 2)
    elif how == "grow":
        with open(path, "ab") as f:
            f.write(b"more" * 1000)
    elif how == "vanish":
        path.unlink()
    elif how == "mtime":
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    elif how == "rewrite":  # same size, same inode, mtime put back: only the ctime tells
        data = path.read_bytes()
        path.write_bytes(bytes(b ^ 0xFF for b in data[:64]) + data[64:])
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("how", ["shrink", "grow", "vanish", "mtime", "rewrite"])
@pytest.mark.parametrize("kind", ["generic", "model-raw", "model-tar"])
def test_file_changing_under_push_fails_without_manifest(tmp_path: Path, how: str, kind: str) -> None:
    from helpers import write_random
    from support.ocifake import OciFake

    from ociart.errors import UsageError

    src = tmp_path / "src"
    write_random(src / "model.safetensors", 3 << 20, seed=1)
    (src / "config.json").write_text('{"hidden": 8}')
    for i in range(3):
        (src / "docs" / f"n{i}.md").parent.mkdir(exist_ok=True)
        (src / "docs" / f"n{i}.md").write_text(f"note {i}\n" * 50)
    victim = src / ("docs/n1.md" if kind == "model-tar" else "model.safetensors")
    fake_registry = OciFake()  # not the fixture: the client abandoning an upload body is an error on the fake's side
    original = fake_registry._server.handler
    fired: list[str] = []

    def handler(method: str, path: str, headers: dict[str, str], body: Any) -> Any:
        if method == "POST" and "/blobs/uploads/" in path and not fired:
            fired.append(path)
            _mutate(victim, how)  # after push stat-ed the file, before its bytes are read
        return original(method, path, headers, body)

    fake_registry._server.handler = handler
    ref = f"{fake_registry.host}/hard/changing:v1"
    try:
        with ociart.Client(plain_http=True, concurrency=1) as client, pytest.raises(UsageError) as err:
            if kind == "generic":
                client.push(ref, [victim], lineage=False)
            else:
                client.push(ref, [src], kind="model", lineage=False)
    finally:
        fake_registry.stop()
    assert fired and str(victim) in str(err.value)
    assert ("vanished" if how == "vanish" else "changed while it was being pushed") in str(err.value)
    repo = fake_registry.repos.get("hard/changing")
    assert repo is None or (not repo.manifests and not repo.tags)  # no manifest left behind
    assert all(isinstance(e, ConnectionError) for e in fake_registry.errors), fake_registry.errors


def test_file_changing_under_a_cached_tar_layer_push_fails(registry: RunningRegistry, unique_repo: str,
                                                          tmp_path: Path, monkeypatch: Any) -> None:
    """A re-push whose tar layer the digest cache knows and the registry holds reads none of its members; a member
    changed after the walk is still caught (one error naming it, no manifest for the new tag)."""
    import ociart.packaging.pack as pack_mod
    from ociart.errors import NotFoundError, UsageError

    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    for i in range(3):
        (src / "docs" / f"n{i}.md").write_text(f"note {i}\n" * 50)
    (src / "config.json").write_text('{"hidden": 8}')
    old = time.time() - 3600  # older than the cache's racy window: the tar layer's digest is cached
    for p in src.rglob("*"):
        os.utime(p, (old, old))
    with ociart.Client(plain_http=True) as client:
        client.push(f"{registry.host}/{unique_repo}:v1", [src], kind="model", lineage=False)
        real = pack_mod.plan

        def plan_then_touch(*args: Any, **kw: Any) -> Any:
            p = real(*args, **kw)
            os.utime(src / "docs" / "n1.md", (old, old + 60))  # after the walk, before the push
            return p

        monkeypatch.setattr(pack_mod, "plan", plan_then_touch)
        with pytest.raises(UsageError, match=r"n1\.md changed while it was being pushed"):
            client.push(f"{registry.host}/{unique_repo}:v2", [src], kind="model", lineage=False)
        with pytest.raises(NotFoundError):
            client.resolve(f"{registry.host}/{unique_repo}:v2")


def test_digest_cache_sees_in_place_rewrite_and_retries_refused_digest(registry: RunningRegistry, unique_repo: str,
                                                                       tmp_path: Path, caplog: Any) -> None:
    """A file rewritten in place (same size, inode, mtime restored) is not pushed as its old blob; and a cached digest
    the registry refuses with DIGEST_INVALID is dropped, re-hashed and retried once."""
    from ociart.cache import DigestCache, stat_key
    from ociart.oci.digest import sha256_file

    f = tmp_path / "w.bin"
    f.write_bytes(b"A" * 100_000)
    old = f.stat().st_mtime - 3600
    os.utime(f, (old, old))
    ref = f"{registry.host}/{unique_repo}:v1"
    with ociart.Client() as client:
        first = client.push(ref, [f], lineage=False)
        _mutate(f, "rewrite")
        second = client.push(ref, [f], lineage=False)
        assert second.digest != first.digest
        pulled = client.pull(ref, tmp_path / "out")
    assert (tmp_path / "out" / "w.bin").read_bytes() == f.read_bytes()
    assert pulled.files[0].digest == sha256_file(f)[0]
    # a stale entry (what an old cache keyed without ctime would hold): the registry refuses it, ociart recovers
    cache = DigestCache()
    key = stat_key(f)
    assert key is not None
    cache._conn().execute("INSERT OR REPLACE INTO digests2 VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (*key, "sha256:" + "0" * 64))
    f2 = f  # same path, same stat
    with caplog.at_level("WARNING", logger="ociart"), ociart.Client() as client:
        client.push(f"{registry.host}/{unique_repo}:v2", [f2], lineage=False)
    assert any("re-hashing and retrying once" in r.getMessage() for r in caplog.records)
    assert cache.get(f) == sha256_file(f)


# -- 5. symlinks leaving the pushed directory -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["generic", "model"])
def test_symlink_out_of_the_pushed_directory_is_refused(tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "home" / ".ssh" / "id_ed25519"
    secret.parent.mkdir(parents=True)
    secret.write_text("PRIVATE KEY MATERIAL\n")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(b"w" * 1000)
    (src / "sub" / "inside.txt").write_text("inside\n")
    (src / "alias.txt").symlink_to("sub/inside.txt")  # stays inside: followed, stored as a regular file
    (src / "key").symlink_to(secret)  # leaves the tree
    args = ["push", "hard/sym:v1", str(src), "--no-git"] + (["--kind", "model"] if kind == "model" else [])
    refused = cli(*args)
    line = one_line_error(refused, 2)
    assert "symlink that leaves" in line and "--follow-symlinks" in line and str(src / "key") in line
    with ociart.Client() as client:
        with pytest.raises(ociart.errors.UsageError):
            client.push("hard/sym:v1", [src], kind=None if kind == "generic" else kind, lineage=False)
        (src / "key").unlink()
        client.push("hard/sym:v2", [src], kind=None if kind == "generic" else kind, lineage=False)
        out = tmp_path / "out"
        client.pull("hard/sym:v2", out)
    assert (out / "alias.txt").read_text() == "inside\n" and not (out / "alias.txt").is_symlink()
    # opting in pushes what the link points to
    (src / "key").symlink_to(secret)
    assert cli(*args, "--follow-symlinks").returncode == 0
    with ociart.Client() as client:
        client.pull("hard/sym:v1", tmp_path / "out2")
    assert (tmp_path / "out2" / "key").read_text() == "PRIVATE KEY MATERIAL\n"


def test_symlinked_directory_out_of_a_typed_push_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "creds.json").write_text("{}")
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"w" * 100)
    (src / "linked").symlink_to(outside, target_is_directory=True)
    with ociart.Client() as client, pytest.raises(ociart.errors.UsageError) as err:
        client.push("hard/symdir:v1", [src], kind="model", lineage=False)
    assert "symlink that leaves" in str(err.value)


# -- 7. undecodable and over-long names -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["generic", "model"])
def test_non_utf8_file_name_is_refused_in_one_line(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("ok")
    with open(os.path.join(os.fsencode(src), b"caf\xe9.txt"), "wb") as f:
        f.write(b"latin-1 name")
    args = ["push", "hard/names:v1", str(src), "--no-git"] + (["--kind", "model"] if kind == "model" else [])
    line = one_line_error(cli(*args), 2)
    assert "caf\\xe9.txt" in line and "not valid UTF-8" in line


def test_control_characters_in_names_still_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "line\nbreak.txt").write_text("a")
    (src / "bell\x07.txt").write_text("b")
    with ociart.Client() as client:
        client.push("hard/ctl:v1", [src], lineage=False)
        client.pull("hard/ctl:v1", tmp_path / "out")
    assert (tmp_path / "out" / "line\nbreak.txt").read_text() == "a"
    assert (tmp_path / "out" / "bell\x07.txt").read_text() == "b"


def _push_layers(target: Any, repo: str, layers: list[tuple[bytes, str, str]], tag: str = "v1") -> None:
    """A manifest of (data, mediaType, title-or-filepath) layers, written straight to ``target``."""
    from ociart.oci import EMPTY_JSON, EMPTY_JSON_DIGEST, OCI_EMPTY, Content, Descriptor, Manifest
    from ociart.oci.digest import sha256_bytes
    from ociart.targets.base import bytes_opener

    descs = []
    for data, media_type, name in layers:
        key = "org.cncf.model.filepath" if "tar" in media_type else "org.opencontainers.image.title"
        d = Descriptor(mediaType=media_type, digest=sha256_bytes(data), size=len(data), annotations={key: name})
        target.push_blob_stream(repo, d, bytes_opener(data))
        descs.append(d)
    cfg = Descriptor(mediaType=OCI_EMPTY, digest=EMPTY_JSON_DIGEST, size=2)
    target.push_blob_stream(repo, cfg, bytes_opener(EMPTY_JSON))
    target.put_manifest(repo, Content.from_model(Manifest(artifactType="application/vnd.example", config=cfg,
                                                          layers=descs)), tag)


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("where", ["title", "tar-member", "deep-path"])
def test_over_long_names_fail_the_pull_before_anything_is_placed(tmp_path: Path, where: str) -> None:
    long = "n" * 300
    deep = "/".join(["d" * 200] * 25) + "/f.txt"  # every name fits, the whole path does not
    layers: list[tuple[bytes, str, str]] = [(b"first", "application/octet-stream", "a-first.txt")]
    if where == "title":
        layers.append((b"x", "application/octet-stream", long))
    elif where == "tar-member":
        layers.append((_tar([("ok.txt", b"ok"), (f"dir/{long}", b"x")]), "application/vnd.oci.image.layer.v1.tar",
                       "."))
    else:
        layers.append((_tar([(deep, b"x")]), "application/vnd.oci.image.layer.v1.tar", "."))
    with ociart.Client() as client:
        _push_layers(client.target(client.ref("hard/long")), "hard/long", layers)
    out = tmp_path / "out"
    line = one_line_error(cli("pull", "hard/long:v1", "-o", str(out)), 5)
    assert "longer than the file system allows" in line
    assert not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith(".ociart-"))


# -- 8. control characters and markup in human output ----------------------------------------------------------------

EVIL = "evil\x1b]0;pwned\x07\x1b[2J\r\nforged line [/] [bold red]x[/bold red] :smile: \u202e"


def _assert_clean(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "\u202e" not in text, repr(text)
    assert "forged line" not in {line.strip() for line in text.splitlines()}


def test_hostile_titles_annotations_and_tags_are_escaped(fake_registry: Any, tmp_path: Path) -> None:
    repo = "hard/out"
    with ociart.Client(plain_http=True) as client:
        target = client.target(client.ref(f"{fake_registry.host}/{repo}"))
        _push_layers(target, repo, [(b"one", "application/octet-stream", "a.txt")], tag="v1")
        _push_layers(target, repo, [(b"two", "application/octet-stream", EVIL.replace("/", "_"))], tag="v2")
        desc = client.resolve(f"{fake_registry.host}/{repo}:v2")
        manifest = json.loads(target.get_manifest(repo, desc.digest).data)
        manifest["annotations"] = {"note": EVIL, EVIL: "key"}
        from ociart.oci import Content

        target.put_manifest(repo, Content.of(json.dumps(manifest).encode(), manifest["mediaType"]), "v3")
    fake_registry.repos[repo].tags["tag\x1b[31m\nforged line"] = fake_registry.repos[repo].tags["v1"]
    host = fake_registry.host
    inspect = cli("inspect", f"{host}/{repo}:v3", "--plain-http")
    assert inspect.returncode == 0, inspect.stderr  # `[/]` used to crash rich
    _assert_clean(inspect.stdout)
    assert "[/]" in inspect.stdout and "[bold red]x[/bold red]" in inspect.stdout and "\\x1b]0;pwned\\x07" in inspect.stdout
    diff = cli("diff", f"{host}/{repo}:v1", f"{host}/{repo}:v3", "--plain-http")
    assert diff.returncode == 0, diff.stderr
    _assert_clean(diff.stdout)
    assert len(diff.stdout.splitlines()) == 2  # one + and one -, no forged third line
    tags = cli("tags", f"{host}/{repo}", "--plain-http")
    assert tags.returncode == 0, tags.stderr
    _assert_clean(tags.stdout)
    assert "tag\\x1b[31m\\nforged line" in tags.stdout.splitlines()
    as_json = cli("inspect", f"{host}/{repo}:v3", "--plain-http", "--json")
    assert json.loads(as_json.stdout)["manifest"]["annotations"]["note"] == EVIL  # --json is unaffected


def test_lineage_and_verify_printers_escape(capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from ociart.cli.render import print_lineage, print_verification
    from ociart.lineage.graph import Node, to_dot

    leaf = Node(kind="dataset", name=EVIL, digest="sha256:" + "b" * 64,
                details={"role": EVIL, "reports": [{"digest": "sha256:" + "c" * 64, "metrics": {EVIL: 1}}]})
    root = Node(kind=EVIL, name=EVIL, details={"run": EVIL}, children=[leaf])
    print_lineage(root, downstream=False)
    out = capsys.readouterr().out
    _assert_clean(out)
    assert "[/]" in out
    dot = to_dot(root)
    _assert_clean(dot)
    assert all(line.count('"') % 2 == 0 for line in dot.splitlines())  # no label breaks out of its quotes
    verified = SimpleNamespace(format="bundle", predicateType=EVIL, signer=EVIL, source=EVIL)
    print_verification(SimpleNamespace(reference=EVIL, digest="sha256:" + "d" * 64, signatures=[verified],
                                       attestations=[], rejected=[EVIL]))
    captured = capsys.readouterr()
    _assert_clean(captured.err)
    assert "[/]" in captured.err


def test_error_lines_escape_artifact_text(fake_registry: Any, tmp_path: Path) -> None:
    """An error naming hostile artifact text stays one escaped line."""
    repo = "hard/errline"
    with ociart.Client(plain_http=True) as client:
        _push_layers(client.target(client.ref(f"{fake_registry.host}/{repo}")), repo,
                     [(b"x", "application/octet-stream", "../" + EVIL.replace("/", "_"))])
    proc = cli("pull", f"{fake_registry.host}/{repo}:v1", "-o", str(tmp_path / "o"), "--plain-http")
    line = one_line_error(proc, 5)
    _assert_clean(proc.stderr)
    assert "unsafe file name" in line


# -- 10. trust decisions on canonical names ---------------------------------------------------------------------------

def _two_key_policy(tmp_path: Path, prod_patterns: list[str]) -> tuple[Any, Any]:
    """A policy whose prod rule demands the release key and whose last ``**`` rule accepts a dev key; returns the
    loaded policy and the dev private key."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from ociart.signing import keys
    from ociart.signing.policy import load_policy

    release, dev = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "release.pub").write_bytes(keys.public_key_pem(release))
    (tmp_path / "dev.pub").write_bytes(keys.public_key_pem(dev))
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: ociart.dev/v1alpha1\nkind: VerificationPolicy\nrules:\n"
        f"  - name: prod\n    repositories: {json.dumps(prod_patterns)}\n    keys: [release.pub]\n"
        "  - name: dev\n    repositories: ['**']\n    keys: [dev.pub]\n")
    return load_policy(tmp_path / "policy.yaml"), dev


def test_policy_cannot_be_sidestepped_by_spelling_the_registry_differently(registry: RunningRegistry,
                                                                           tmp_path: Path) -> None:
    from ociart.errors import VerificationError

    port = registry.host.rsplit(":", 1)[1]
    policy, dev = _two_key_policy(tmp_path, [f"127.0.0.1:{port}/prod/**"])
    (tmp_path / "w.bin").write_bytes(b"weights")
    with ociart.Client() as client:
        client.push(f"127.0.0.1:{port}/prod/model:v1", [tmp_path / "w.bin"], sign=dev, lineage=False)
        client.push(f"127.0.0.1:{port}/dev/model:v1", [tmp_path / "w.bin"], sign=dev, lineage=False)
        assert client.verify(f"127.0.0.1:{port}/dev/model:v1", policy=policy).signatures  # control: dev rule works
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"127.1:{port}",
                     f"[::ffff:127.0.0.1]:{port}", f"0x7f.0.0.1:{port}", f"127.0.0.1:0{port}"):
            with pytest.raises(VerificationError) as err:
                client.verify(f"{host}/prod/model:v1", policy=policy)
            assert "release.pub" in str(err.value) or "no valid signature" in str(err.value).lower(), (host, err.value)
    out = tmp_path / "out"
    proc = cli("pull", f"127.1:{port}/prod/model:v1", "-o", str(out), "--policy", str(tmp_path / "policy.yaml"))
    one_line_error(proc, 5)
    assert not out.exists()


def test_policy_cannot_be_sidestepped_through_layout_paths(tmp_path: Path) -> None:
    from ociart.errors import VerificationError

    layouts = tmp_path / "layouts"
    (layouts / "prod").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "alias").symlink_to(layouts / "prod", target_is_directory=True)
    policy, dev = _two_key_policy(tmp_path, [f"oci:{layouts}/prod/**", f"oci:{layouts}/prod:*"])
    (tmp_path / "w.bin").write_bytes(b"weights")
    with ociart.Client() as client:
        client.push(f"oci:{layouts}/prod:v1", [tmp_path / "w.bin"], sign=dev, lineage=False)
        for spelled in (f"oci:{layouts}/prod:v1", f"oci:{tmp_path}/elsewhere/../layouts/prod:v1",
                        f"oci:{tmp_path}/alias:v1", f"oci:{layouts}/./prod/:v1"):
            with pytest.raises(VerificationError):
                client.verify(spelled, policy=policy)


def test_canonical_names() -> None:
    from ociart.reference import canonical_host, canonical_name
    from ociart.signing.policy import canonical_pattern

    assert {canonical_host(h) for h in ("LOCALHOST:5000", "127.1:5000", "[::ffff:127.0.0.1]:5000",
                                        "127.0.0.1:05000", "localhost.:5000")} == {"127.0.0.1:5000"}
    assert canonical_host("Registry.Example.COM.:443") == "registry.example.com"
    assert canonical_host("bücher.example") == "xn--bcher-kva.example"
    assert canonical_host("[0:0::1]:5000") == "[::1]:5000"
    assert canonical_name(parse_reference("index.docker.io/ubuntu:22.04")) == "docker.io/library/ubuntu"
    assert canonical_name(parse_reference("oci:/tmp/x/../y:NAME")) == f"oci:{os.path.realpath('/tmp/y')}:NAME"
    assert canonical_pattern("Registry-1.Docker.io/ubuntu") == "docker.io/library/ubuntu"
    assert canonical_pattern("REG.example:443/prod/**") == "reg.example/prod/**"


@pytest.mark.parametrize(("pattern", "text", "matches"), [
    (r"^release@example\.com$", "release@example.com", True),
    (r"^release@example\.com$", "release@example.com\n", False),  # Go: $ is the end of the text
    (r"example\.com$", "x@example.com\n", False),
    (r"example\.com\z", "x@example.com", True),
    (r"@example\.com", "x@example.com.evil", True),  # search semantics, as cosign
    (r"[$]", "a$b", True),
    (r"(?m)^a$", "a\nb", True),
])
def test_identity_regexp_has_go_semantics(pattern: str, text: str, matches: bool) -> None:
    from ociart.signing.identity import go_regexp

    assert bool(go_regexp(pattern).search(text)) is matches


# -- 14. every response body and every pagination is bounded ---------------------------------------------------------

@pytest.mark.parametrize(("mode", "error"), [("401", "AuthError"), ("404", "NotFoundError"),
                                             ("500", "NetworkError")])
def test_endless_error_bodies_are_not_read(mode: str, error: str) -> None:
    from support.liar import LyingRegistry

    from ociart import errors

    with LyingRegistry(mode) as liar, ociart.Client(plain_http=True, retry_budget=0.5) as client:
        with pytest.raises(getattr(errors, error)):
            client.resolve(f"{liar.host}/a/b:v1")
        with pytest.raises(getattr(errors, error)):
            client.tags(f"{liar.host}/a/b")
    # what the client took off the wire before hanging up: the error cap and socket buffers, not the gigabyte offered
    assert liar.sent < 64 << 20, liar.sent


@pytest.mark.parametrize(("mode", "call"), [("tags", "tags"), ("referrers", "referrers"), ("config", "inspect")])
def test_endless_listing_and_config_bodies_fail_naming_the_cap(mode: str, call: str) -> None:
    from support.liar import LyingRegistry

    from ociart import limits
    from ociart.errors import InvalidContentError

    with LyingRegistry(mode) as liar, ociart.Client(plain_http=True) as client:
        ref = f"{liar.host}/a/b:v1"
        with pytest.raises(InvalidContentError) as err:
            if call == "tags":
                client.tags(ref)
            elif call == "referrers":
                client.referrers(f"{liar.host}/a/b@{liar.manifest_digest}")
            else:
                client.inspect(ref)
    cap = {"tags": limits.TAG_PAGE_BYTES, "referrers": limits.MANIFEST_BYTES, "config": limits.CONFIG_BYTES}[mode]
    assert f"{cap}-byte limit" in str(err.value)
    assert liar.sent < cap + (64 << 20), liar.sent


@pytest.mark.parametrize("mode", ["tag-pages", "referrer-pages"])
def test_endless_pagination_is_cut_by_time(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from support.liar import LyingRegistry

    from ociart import limits
    from ociart.errors import InvalidContentError

    monkeypatch.setattr(limits, "PAGINATION_SECONDS", 1.0)  # the one place the bound lives
    with LyingRegistry(mode) as liar, ociart.Client(plain_http=True) as client:
        with pytest.raises(InvalidContentError) as err:
            if mode == "tag-pages":
                client.tags(f"{liar.host}/a/b")
            else:
                client.referrers(f"{liar.host}/a/b@{liar.manifest_digest}")
    assert "pagination still going after 1 s" in str(err.value)
    assert 1 < liar.pages < limits.PAGES
