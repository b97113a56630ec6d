"""Shared pytest fixtures: real distribution 2.8.2 registries on loopback and an isolated user environment.

Helpers live in ``tests/support`` and are imported as ``support.*`` (pytest puts ``tests/`` on ``sys.path`` because
``tests/`` has no ``__init__.py``).
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.ocifake import OciFake
from support.registry import AuthMode, RunningRegistry, registry_binary, start_registry
from support.s3 import S3Server, S3Unavailable, start_s3
from support.sigstore_mock import MockUnavailable, SigstoreMock, start_sigstore_mock

# The interrupt tests send SIGINT to ociart subprocesses. A child only turns SIGINT into KeyboardInterrupt when it
# starts with the default disposition; a suite started in the background by a non-interactive shell (`cmd &`, as
# some CI runners do) inherits SIGINT *ignored*, and every child would then ignore the signal. Catching it here makes
# children start with the default again (a caught signal is reset by exec; an ignored one is not).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

RegistryFactory = Callable[..., RunningRegistry]

_ISOLATED_UNSET = ("OCIART_REGISTRY", "OCIART_REGISTRY_HOST", "OCIART_REGISTRY_USERNAME", "OCIART_REGISTRY_PASSWORD",
                   "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def _require_registry() -> None:
    try:
        registry_binary()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every credential/config location at fresh temp dirs so the user's real setup never leaks in.

    Returns the temp dir used as ``HOME``.
    """
    base = tmp_path_factory.mktemp("env")
    for sub in ("home", "ociart-home", "docker-config", "xdg-runtime", "xdg-config"):
        (base / sub).mkdir()
    monkeypatch.setenv("HOME", str(base / "home"))
    monkeypatch.setenv("OCIART_HOME", str(base / "ociart-home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(base / "docker-config"))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(base / "no-such-auth.json"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base / "xdg-runtime"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "xdg-config"))
    for name in _ISOLATED_UNSET:
        monkeypatch.delenv(name, raising=False)
    for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "SOURCE_DATE_EPOCH", "OCIART_IMAGE_DIGEST"):
        monkeypatch.delenv(name, raising=False)
    # outside any git repository, so lineage capture records no commit unless a test sets one up
    monkeypatch.chdir(base / "home")
    return base / "home"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """Session-wide anonymous plain-HTTP registry; use a unique repository name per test."""
    _require_registry()
    running = start_registry(tmp_path_factory.mktemp("registry-session"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Session-wide local S3 (``moto_server``, ``support/s3.py``) with one bucket and a FaultProxy in front
    (``.proxy``: its log shows every request reaching the S3 origin). Each registry on it has its own prefix."""
    try:
        server = start_s3(tmp_path_factory.mktemp("s3"))
    except S3Unavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_registry(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[RunningRegistry]:
    """Session-wide anonymous registry whose storage is the ``s3`` driver on ``s3_server``, redirects on: blob GETs
    answer 307 to a presigned URL on the S3 origin (through ``s3_server.proxy``)."""
    _require_registry()
    running = start_registry(tmp_path_factory.mktemp("registry-s3"), s3=s3_server)
    yield running
    running.stop()


@pytest.fixture(params=["filesystem", "s3"])
def any_registry(request: pytest.FixtureRequest) -> RunningRegistry:
    """The session registry, once on the filesystem driver and once on S3 with redirects (``s3_registry``)."""
    return request.getfixturevalue("registry" if request.param == "filesystem" else "s3_registry")


@pytest.fixture
def registry_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RegistryFactory]:
    """``registry_factory(auth=None|"htpasswd"|"token", tls=False, token_expires_in=300, delete=True, s3=False)`` →
    a started registry in its own temp dir, stopped at teardown (``s3=True``: blobs on ``s3_server``)."""
    _require_registry()
    started: list[RunningRegistry] = []

    def factory(auth: AuthMode = None, tls: bool = False, token_expires_in: int = 300,
                delete: bool = True, s3: bool = False) -> RunningRegistry:
        server = request.getfixturevalue("s3_server") if s3 else None
        running = start_registry(tmp_path / f"registry-{len(started)}", auth=auth, tls=tls,
                                 token_expires_in=token_expires_in, delete=delete, s3=server)
        started.append(running)
        return running

    yield factory
    for running in started:
        running.stop()


@pytest.fixture
def htpasswd_registry(registry_factory: RegistryFactory) -> RunningRegistry:
    """Plain-HTTP registry with htpasswd Basic auth (``alice``/``s3cret``)."""
    return registry_factory(auth="htpasswd")


@pytest.fixture
def tls_registry(registry_factory: RegistryFactory) -> RunningRegistry:
    """Anonymous HTTPS registry; its CA is ``.ca_file``."""
    return registry_factory(tls=True)


@pytest.fixture
def token_registry(registry_factory: RegistryFactory) -> RunningRegistry:
    """Plain-HTTP registry with token auth; ``.token_server`` grants anonymous pull, push/delete to alice."""
    return registry_factory(auth="token")


@pytest.fixture
def unique_repo() -> str:
    """A fresh repository name, ``test/<12 hex>``."""
    return f"test/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def fake_registry() -> Iterator[OciFake]:
    """In-memory OCI 1.1 registry with the native referrers API (``support/ocifake.py``) on a loopback port.

    Stopped at teardown; a request its handler could not serve (a 500 from an exception) fails the test.
    """
    fake = OciFake()
    yield fake
    fake.stop()
    assert not fake.errors, f"fake registry handler raised: {fake.errors!r}"


# -- keyless signing: a local Sigstore instance (Fulcio + CT log + Rekor v1) from npm @sigstore/mock ----------------
#: Rekor time shift of ``sigstore_mock_skewed``: entries are logged two hours after their certificate (10 minutes)
#: expired.
SIGSTORE_MOCK_SKEW = 2 * 3600


def _start_sigstore_mock(tmp_path_factory: pytest.TempPathFactory, rekor_time_skew: int = 0) -> SigstoreMock:
    try:
        return start_sigstore_mock(tmp_path_factory.mktemp("sigstore-mock"), rekor_time_skew=rekor_time_skew)
    except MockUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def sigstore_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigstoreMock]:
    """Session-wide local Sigstore (``support/sigstore_mock.py``): ``.url``, ``.trust_config`` (ClientTrustConfig
    path, sign with it), ``.trusted_root`` (trusted_root.json path, verify with it), ``.identity`` /
    ``.issuer`` (certificate SAN and OIDC issuer of ``.token()``, an unsigned identity token; ``.token(identity=…,
    issuer=…)`` for others). Fails with the fix if node or ``tests/support/node/node_modules`` is missing."""
    mock = _start_sigstore_mock(tmp_path_factory)
    yield mock
    mock.stop()


@pytest.fixture(scope="session")
def sigstore_mock_skewed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigstoreMock]:
    """Like ``sigstore_mock`` (another instance, other keys) but Rekor's integratedTime is ``SIGSTORE_MOCK_SKEW``
    seconds ahead: its signatures were logged when their certificate was no longer valid."""
    mock = _start_sigstore_mock(tmp_path_factory, rekor_time_skew=SIGSTORE_MOCK_SKEW)
    yield mock
    mock.stop()
