"""Reference parsing: the Docker host rule, tags, digests, oci: layouts, the embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest

from ociart.errors import InvalidReferenceError
from ociart.reference import parse_reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repo", "tag", "digest"),
    [
        ("localhost:5000/models/bert:v1", "localhost:5000", "models/bert", "v1", None),
        ("localhost/models/bert", "localhost", "models/bert", None, None),
        ("ghcr.io/org/model@" + D, "ghcr.io", "org/model", None, D),
        ("127.0.0.1:41234/a/b:t@" + D, "127.0.0.1:41234", "a/b", "t", D),
        ("registry.example.com/x", "registry.example.com", "x", None, None),
    ],
)
def test_registry_references(text: str, registry: str, repo: str, tag: str | None, digest: str | None) -> None:
    r = parse_reference(text)
    assert (r.registry, r.repository, r.tag, r.digest, r.layout) == (registry, repo, tag, digest, None)
    assert str(r) == text


def test_no_host_goes_to_embedded_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIART_HOME", str(tmp_path))
    r = parse_reference("models/bert:v1")
    assert r.registry is None and r.embedded and r.layout == tmp_path / "store"
    assert (r.repository, r.tag) == ("models/bert", "v1")
    assert r.reference == "v1"
    assert parse_reference("models/bert").reference == "latest"


def test_first_component_without_dot_or_colon_is_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    r = parse_reference("library/ubuntu:22.04")
    assert r.registry is None and r.repository == "library/ubuntu"


def test_ociart_registry_env_overrides_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIART_REGISTRY", "127.0.0.1:5999")
    r = parse_reference("models/bert:v2")
    assert (r.registry, r.repository, r.tag) == ("127.0.0.1:5999", "models/bert", "v2")
    assert r.layout is None


def test_oci_layout_references() -> None:
    r = parse_reference("oci:/tmp/lay:repo:tag")
    assert r.layout == Path("/tmp/lay") and r.tag == "repo:tag" and r.repository == "" and not r.embedded
    r = parse_reference("oci:rel/dir@" + D)
    assert r.layout == Path("rel/dir") and r.digest == D and r.tag is None
    assert str(parse_reference("oci:/x:v1")) == "oci:/x:v1"


@pytest.mark.parametrize(
    "bad",
    ["", "UPPER/case", "localhost:5000/", "repo:bad tag", "repo@sha256:short", "a//b", " x", "oci:", "repo:-x"],
)
def test_invalid_references(bad: str) -> None:
    with pytest.raises(InvalidReferenceError):
        parse_reference(bad)
