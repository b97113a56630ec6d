"""The Python API: the five-line push/sign/verify/pull, typed public signatures without ``Any``, lazy re-exports,
the ``transport=`` seam (every HTTP request ociart makes goes through it) and credentials scoped to their registry."""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from helpers import tree_digest, write_random
from support.registry import RunningRegistry

import ociart
from ociart.errors import AuthError

USERNAME, PASSWORD = "alice", "s3cret"
RegistryFactory = Callable[..., RunningRegistry]  # the registry_factory fixture (conftest.py)


class CountingTransport(httpx.BaseTransport):
    """Wraps a real transport; records (host:port, path, Authorization header) of every request."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append((f"{request.url.host}:{request.url.port}", request.url.path,
                                  request.headers.get("authorization")))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def _model(root: Path) -> Path:
    write_random(root / "model.safetensors", 300_000, seed=7)
    (root / "config.json").write_text('{"hidden": 8}\n')
    return root


def test_five_line_api(registry: RunningRegistry, unique_repo: str, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's five lines, with key files named by path (str and Path) and the key pair from ociart itself."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    _model(tmp_path / "model")
    key, pub = ociart.generate_key_pair("cosign")
    assert (key, pub) == (Path("cosign.key"), Path("cosign.pub"))
    ref = f"{registry.host}/{unique_repo}:v1"
    with ociart.Client() as c:
        d = c.push(ref, ["model/"], kind="model", sign="cosign.key")
        v = c.verify(d.ref, keys=["cosign.pub"])
        pulled = c.pull(d.ref, "out/")
    assert isinstance(d, ociart.PushResult) and isinstance(d, ociart.Descriptor)
    assert d.ref == f"{ref}@{d.digest}" and d.reference == d.ref
    assert isinstance(v, ociart.Verification) and v.digest == d.digest and v.signatures
    # the provenance was signed along: the SLSA attestation verifies too, with a Path for the key
    with ociart.Client() as c:
        again = c.verify(ref, keys=[Path("cosign.pub")], require_attestations=["https://slsa.dev/provenance/v1"])
        assert again.attestations
        checked = c.pull(ref, tmp_path / "out2", keys=[pub])
    assert isinstance(pulled, ociart.PullResult) and pulled.digest == d.digest
    assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "model")
    assert checked.verification is not None and checked.verification.digest == d.digest
    assert pulled.verification is None


_ANY = re.compile(r"\bAny\b")


def _public_callables() -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for name in ociart.__all__:
        obj = getattr(ociart, name)
        if inspect.isfunction(obj):
            out.append((name, obj))
        elif inspect.isclass(obj) and obj.__module__.startswith("ociart") and not issubclass(obj, Exception):
            for attr, member in vars(obj).items():
                if (not attr.startswith("_") or attr == "__init__") and inspect.isfunction(member):
                    out.append((f"{name}.{attr}", member))
    return out


def test_public_signatures_have_no_any() -> None:
    callables = _public_callables()
    assert any(n == "Client.push" for n, _ in callables) and any(n == "Run.push" for n, _ in callables)
    offenders = []
    for name, fn in callables:
        sig = inspect.signature(fn)  # type: ignore[arg-type]
        annotations = [str(p.annotation) for p in sig.parameters.values()] + [str(sig.return_annotation)]
        if any(_ANY.search(a) for a in annotations):
            offenders.append(f"{name}{sig}")
    assert not offenders, "Any in public signatures:\n" + "\n".join(offenders)


def test_result_models_have_no_any() -> None:
    from pydantic import BaseModel

    models = [getattr(ociart, n) for n in ociart.__all__]
    models = [m for m in models if inspect.isclass(m) and issubclass(m, BaseModel)]
    # Statement is excluded: in-toto statements carry open JSON (annotations, parameters) by definition
    assert {m.__name__ for m in models} >= {"PushResult", "PullResult", "Inspection", "DiffResult", "DeleteResult",
                                            "SignResult", "AttestResult", "Verification", "Node", "Statement"}
    offenders = [f"{m.__name__}.{f}: {info.annotation}" for m in models if m.__name__ != "Statement"
                 for f, info in m.model_fields.items() if _ANY.search(str(info.annotation))]
    assert not offenders, offenders


def test_lazy_names_are_listed_and_resolve() -> None:
    listed = dir(ociart)
    for name in ("Client", "Trust", "TrustedKey", "LineageOptions", "generate_key_pair", "PushResult",
                 "PullResult", "Verification", "SignResult", "run", "Run", "LocalIOError", "Interrupted"):
        assert name in listed and name in ociart.__all__, name
        assert getattr(ociart, name) is not None
    with pytest.raises(AttributeError):
        ociart.no_such_name  # noqa: B018


def test_transport_seam_with_mock_transport() -> None:
    """An httpx.MockTransport answers everything: no socket is opened, the registry's answer comes back."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url}")
        if request.url.path.endswith("/manifests/v1"):
            body = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":' \
                   b'{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e' \
                   b'8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}'
            return httpx.Response(200, content=body if request.method == "GET" else b"",
                                  headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json",
                                           "Content-Length": str(len(body))})
        return httpx.Response(200, json={})

    with ociart.Client(plain_http=True, transport=httpx.MockTransport(handler)) as c:
        desc = c.resolve("registry.invalid:5000/models/x:v1")
    assert desc.mediaType == "application/vnd.oci.image.manifest.v1+json" and desc.size > 0
    assert seen and all("registry.invalid:5000" in s for s in seen)


def test_transport_sees_registry_and_token_requests(token_registry: RunningRegistry, unique_repo: str,
                                                    tmp_path: Path) -> None:
    """A wrapping transport in front of a real token-auth registry sees the registry and the token server."""
    assert token_registry.token_server is not None
    counting = CountingTransport()
    ref = f"{token_registry.host}/{unique_repo}:v1"
    with ociart.Client(username=USERNAME, password=PASSWORD, transport=counting) as c:
        d = c.push(ref, [_model(tmp_path / "m")], lineage=False)
        c.pull(d.ref, tmp_path / "o")
    token_host = httpx.URL(token_server_url := token_registry.token_server.url)
    hosts = {h for h, _, _ in counting.requests}
    assert token_registry.host in hosts, hosts
    assert f"{token_host.host}:{token_host.port}" in hosts, (token_server_url, hosts)
    assert any(p.endswith("/blobs/uploads/") for _, p, _ in counting.requests)
    assert len(token_registry.token_server.requests) == sum(
        1 for h, _, _ in counting.requests if h == f"{token_host.host}:{token_host.port}")


def test_explicit_credentials_stay_with_their_registry(registry_factory: RegistryFactory, unique_repo: str,
                                                       tmp_path: Path) -> None:
    """Client(username, password) is for one registry: a second registry (same user database) never sees them."""
    first, second = registry_factory(auth="htpasswd"), registry_factory(auth="htpasswd")
    model = _model(tmp_path / "m")
    counting = CountingTransport()
    with ociart.Client(username=USERNAME, password=PASSWORD, transport=counting) as c:
        c.push(f"{first.host}/{unique_repo}:v1", [model], lineage=False)
        with pytest.raises(AuthError):
            c.push(f"{second.host}/{unique_repo}:v1", [model], lineage=False)
    sent = [(h, a) for h, _, a in counting.requests if a]
    assert sent and all(h == first.host for h, _ in sent), sent
    assert any(h == second.host for h, _, _ in counting.requests)
    # named explicitly: the credentials go to the registry named, not to the first one used
    counting = CountingTransport()
    with ociart.Client(username=USERNAME, password=PASSWORD, registry=second.host, transport=counting) as c:
        with pytest.raises(AuthError):
            c.resolve(f"{first.host}/{unique_repo}:v1")
        c.push(f"{second.host}/{unique_repo}:v1", [model], lineage=False)
    sent = [(h, a) for h, _, a in counting.requests if a]
    assert sent and all(h == second.host for h, _ in sent), sent


def test_cli_username_applies_to_the_commands_registry(registry_factory: RegistryFactory, unique_repo: str,
                                                       tmp_path: Path) -> None:
    """`-u` credentials are for the command's reference: `copy` gets them for both of its registries."""
    from helpers import run_cli

    first, second = registry_factory(auth="htpasswd"), registry_factory(auth="htpasswd")
    model = _model(tmp_path / "m")
    src, dst = f"{first.host}/{unique_repo}:v1", f"{second.host}/{unique_repo}:v1"
    pushed = run_cli("push", src, str(model), "--no-provenance", "-u", USERNAME, "--password-stdin",
                     input=PASSWORD + "\n")
    assert pushed.returncode == 0, pushed.stderr
    copied = run_cli("copy", src, dst, "-u", USERNAME, "--password-stdin", input=PASSWORD + "\n")
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout == pushed.stdout


def test_checkpoint_queue_default_absorbs_a_burst_and_logs_each_drop(
        registry: RunningRegistry, unique_repo: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With the default queue, 16 checkpoints wait behind one stuck upload without a drop; the 17th waiting one
    drops the oldest, and the drop is logged with its reason."""
    import logging

    from support.faultproxy import FaultProxy

    from ociart.lineage.run import DEFAULT_MAX_PENDING

    dirs = {}
    for step in range(DEFAULT_MAX_PENDING + 2):
        dirs[step] = tmp_path / f"step-{step}"
        write_random(dirs[step] / "model.safetensors", 1000, seed=step)
    caplog.set_level(logging.WARNING, logger="ociart.run")
    with FaultProxy(registry.url) as proxy:
        release = threading.Event()

        def hold(value: str) -> str:  # every response waits: the first upload is as slow as we like
            release.wait(timeout=60)
            return value

        proxy.rewrite_header("docker-distribution-api-version", hold)
        try:
            with ociart.Client(plain_http=True) as client, \
                    ociart.run(name="burst", client=client, git=False) as run:
                ck = run.checkpoints(f"{proxy.host}/{unique_repo}", keep_last=1)
                assert ck.max_pending == DEFAULT_MAX_PENDING
                ck.submit(0, dirs[0])
                while not proxy.log:  # step 0's upload has started (and hangs)
                    threading.Event().wait(0.01)
                for step in range(1, DEFAULT_MAX_PENDING + 1):
                    ck.submit(step, dirs[step])
                assert ck.dropped == [] and not caplog.records
                ck.submit(DEFAULT_MAX_PENDING + 1, dirs[DEFAULT_MAX_PENDING + 1])
                assert ck.dropped == [1]
                (record,) = caplog.records
                assert record.getMessage().startswith(
                    f"checkpoint step 1 dropped: step {DEFAULT_MAX_PENDING + 1} arrived while {DEFAULT_MAX_PENDING} "
                    f"checkpoints were waiting for the upload (max_pending={DEFAULT_MAX_PENDING})")
                release.set()
        finally:
            release.set()
    assert sorted(ck.pushed) == [DEFAULT_MAX_PENDING + 1] and not ck.errors
