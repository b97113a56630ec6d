"""Verification policy files (ociart.signing.policy): parsing, repository globs, rule order, paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ociart.errors import InvalidContentError, VerificationError
from ociart.signing import keys
from ociart.signing.policy import glob_regex, load_policy


@pytest.mark.parametrize(("pattern", "name", "matches"), [
    ("registry.example.com/models/*", "registry.example.com/models/bert", True),
    ("registry.example.com/models/*", "registry.example.com/models/nlp/bert", False),
    ("registry.example.com/models/**", "registry.example.com/models/nlp/bert", True),
    ("registry.example.com/models/**", "registry.example.com/modelsx/bert", False),
    ("127.0.0.1:*/models/bert", "127.0.0.1:5000/models/bert", True),
    ("models/bert-v?", "models/bert-v2", True),
    ("models/bert-v?", "models/bert-v10", False),
    ("models.example.com/a+b", "models.example.com/a+b", True),   # regex metacharacters are literal
    ("models.example.com/a+b", "models.example.com/aab", False),
    ("**", "anything/at/all", True),
])
def test_glob(pattern: str, name: str, matches: bool) -> None:
    assert bool(glob_regex(pattern).fullmatch(name)) is matches


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    return p


def test_first_matching_rule_decides_and_paths_are_relative_to_the_policy(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    for name in ("prod", "any"):
        (tmp_path / "keys" / f"{name}.pub").write_bytes(keys.public_key_pem(ec.generate_private_key(ec.SECP256R1())))
    policy = load_policy(write(tmp_path, """\
apiVersion: ociart.dev/v1alpha1
kind: VerificationPolicy
rules:
  - name: prod
    repositories: ["reg.example/models/prod/**"]
    keys: [keys/prod.pub]
    identities:
      - subjectRegExp: "@example\\\\.com$"
        issuerRegExp: "^https://accounts\\\\."
    attestations: [https://slsa.dev/provenance/v1]
  - name: everything else
    repositories: ["**"]
    keys: [keys/any.pub]
"""))
    trust, rule = policy.trust_for("reg.example/models/prod/bert")
    assert rule.name == "prod" and rule.attestations == ["https://slsa.dev/provenance/v1"]
    assert [k.name for k in trust.keys] == ["keys/prod.pub"]
    [ident] = trust.identities
    assert ident.subject_regexp == "@example\\.com$" and ident.issuer_regexp == "^https://accounts\\."
    trust, rule = policy.trust_for("reg.example/models/dev/bert")
    assert rule.name == "everything else" and not trust.identities


@pytest.mark.parametrize(("text", "needle"), [
    ("apiVersion: ociart.dev/v1alpha1\nkind: VerificationPolicy\nrules: []\n", "rules"),
    ("apiVersion: ociart.dev/v2\nkind: VerificationPolicy\nrules: [{repositories: [x], keys: [k]}]\n", "apiVersion"),
    ("apiVersion: ociart.dev/v1alpha1\nkind: VerificationPolicy\nrules: [{repositories: [x]}]\n",
     "a rule needs keys or identities"),
    ("apiVersion: ociart.dev/v1alpha1\nkind: VerificationPolicy\nrules: [{repositories: [x], identities: "
     "[{subject: a, subjectRegExp: b, issuer: c}]}]\n", "exactly one of"),
    ("apiVersion: ociart.dev/v1alpha1\nkind: VerificationPolicy\nrules: [{repositories: [x], identities: "
     "[{subjectRegExp: '(', issuer: c}]}]\n", "invalid identity regexp"),
    ("rules: [\n", "not valid YAML"),
    ("- a list\n", "expected a mapping"),
])
def test_malformed_policies_are_refused(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(InvalidContentError) as err:
        load_policy(write(tmp_path, text))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unmatched_repository_is_denied(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_bytes(keys.public_key_pem(ec.generate_private_key(ec.SECP256R1())))
    policy = load_policy(write(tmp_path, "apiVersion: ociart.dev/v1alpha1\nkind: VerificationPolicy\n"
                                         "rules: [{repositories: ['a/*'], keys: [k.pub]}]\n"))
    with pytest.raises(VerificationError, match="no rule of the verification policy matches"):
        policy.trust_for("b/c")
