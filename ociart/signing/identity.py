"""Keyless signer identities: what a Fulcio certificate says about its subject and OIDC issuer, and which
identities a verifier trusts (cosign's ``--certificate-identity[-regexp]`` / ``--certificate-oidc-issuer[-regexp]``).
Only ``cryptography``: verification decisions that need no Sigstore client live here."""

from __future__ import annotations

import functools
import re

from cryptography import x509
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

#: Fulcio certificate extensions (fulcio docs/oid-info.md).
OIDC_ISSUER_V2_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # DER UTF8String
OIDC_ISSUER_V1_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # raw bytes (deprecated)
FULCIO_OTHERNAME_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")  # SAN otherName "username"

def _der_utf8_string(data: bytes) -> str | None:
    """Decode a DER UTF8String (tag 0x0c); None when ``data`` is not exactly one."""
    if len(data) < 2 or data[0] != 0x0C:
        return None
    length, offset = data[1], 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or len(data) < 2 + n:
            return None
        length, offset = int.from_bytes(data[2:2 + n], "big"), 2 + n
    if offset + length != len(data):
        return None
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError:
        return None


def certificate_sans(cert: x509.Certificate) -> list[str]:
    """The identities a Fulcio certificate binds: e-mail, URI, DNS SANs and Fulcio's ``username`` otherName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out: list[str] = []
    out += san.get_values_for_type(x509.RFC822Name)
    out += san.get_values_for_type(x509.UniformResourceIdentifier)
    out += san.get_values_for_type(x509.DNSName)
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id == FULCIO_OTHERNAME_OID and (value := _der_utf8_string(other.value)) is not None:
            out.append(value)
    return out


def certificate_issuer(cert: x509.Certificate) -> str | None:
    """The OIDC issuer Fulcio recorded (extension 1.3.6.1.4.1.57264.1.8, else the legacy 1.3.6.1.4.1.57264.1.1)."""
    try:
        ext = cert.extensions.get_extension_for_oid(OIDC_ISSUER_V2_OID).value
        if isinstance(ext, x509.UnrecognizedExtension):
            return _der_utf8_string(ext.value)
    except x509.ExtensionNotFound:
        pass
    try:
        ext = cert.extensions.get_extension_for_oid(OIDC_ISSUER_V1_OID).value
        if isinstance(ext, x509.UnrecognizedExtension):
            return ext.value.decode("utf-8", errors="replace")
    except x509.ExtensionNotFound:
        pass
    return None


def _go_end_anchors(pattern: str) -> str:
    """``pattern`` with Go's end anchors: an unescaped ``$`` outside a character class becomes ``\\Z`` (end of text
    only; Python's ``$`` also matches before a trailing newline, Go's does not), and Go's ``\\z`` becomes ``\\Z``.
    With the multi-line flag (``(?m)``) ``$`` is left alone: it means end of line in both."""
    if re.match(r"\(\?[a-zA-Z]*m", pattern):
        return pattern
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append("\\Z" if nxt == "z" and not in_class else c + nxt)
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "^":
                out.append("[^")
                i += 2
                if pattern[i : i + 1] == "]":
                    out.append("]")
                    i += 1
                continue
            if pattern[i + 1 : i + 2] == "]":
                out.append("[]")
                i += 2
                continue
        elif c == "$":
            out.append("\\Z")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=256)
def go_regexp(pattern: str) -> re.Pattern[str]:
    """Compile a cosign identity/issuer regular expression for :func:`re.search` with Go's ``$`` semantics."""
    return re.compile(_go_end_anchors(pattern))


class TrustedIdentity(BaseModel):
    """Who may have signed: a certificate subject (SAN) and an OIDC issuer, each exact or a regular expression.

    Exactly one of ``subject``/``subject_regexp`` and one of ``issuer``/``issuer_regexp`` is required (cosign's
    ``--certificate-identity[-regexp]`` and ``--certificate-oidc-issuer[-regexp]``). Regular expressions are searched
    like Go's ``regexp.MatchString`` in cosign: they match anywhere unless anchored, so write
    ``^https://github\\.com/org/repo/.+@refs/heads/main$``, not ``github.com/org``. They are compiled by
    :func:`go_regexp` with Python's :mod:`re` after one change that makes anchors mean what they mean in Go: an
    unescaped ``$`` (and Go's ``\\z``) becomes ``\\Z``, the end of the text, so ``...main$`` does not accept
    ``...main\\n`` (Python's ``$`` would). Other syntax is Python's (the common subset of RE2 behaves alike).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str | None = None
    #: policy files spell the regexp fields as policy-controller does: ``subjectRegExp``, ``issuerRegExp``
    subject_regexp: str | None = Field(default=None, validation_alias=AliasChoices("subject_regexp", "subjectRegExp"))
    issuer: str | None = None
    issuer_regexp: str | None = Field(default=None, validation_alias=AliasChoices("issuer_regexp", "issuerRegExp"))

    @model_validator(mode="after")
    def _exactly_one_each(self) -> TrustedIdentity:
        if (self.subject is None) == (self.subject_regexp is None):
            raise ValueError("a trusted identity needs exactly one of a certificate identity (subject) "
                             "or an identity regexp")
        if (self.issuer is None) == (self.issuer_regexp is None):
            raise ValueError("a trusted identity needs exactly one of an OIDC issuer or an issuer regexp")
        for what, pattern in (("identity", self.subject_regexp), ("issuer", self.issuer_regexp)):
            if pattern is not None:
                try:
                    go_regexp(pattern)
                except re.error as exc:
                    raise ValueError(f"invalid {what} regexp {pattern!r}: {exc}") from None
        if self.subject == "" or self.issuer == "":
            raise ValueError("a trusted identity's subject and issuer must not be empty")
        return self

    def describe(self) -> str:
        """``identity alice@example.com, issuer ~ ^https://…$`` (``~`` marks a regexp)."""
        subject = self.subject if self.subject is not None else f"~ {self.subject_regexp}"
        issuer = self.issuer if self.issuer is not None else f"~ {self.issuer_regexp}"
        return f"identity {subject}, issuer {issuer}"

    def matches(self, cert: x509.Certificate) -> str | None:
        """None when ``cert`` matches this identity, else one line saying what differs."""
        sans = certificate_sans(cert)
        if self.subject is not None:
            subject_ok = self.subject in sans
        else:
            assert self.subject_regexp is not None
            subject_ok = any(go_regexp(self.subject_regexp).search(s) for s in sans)
        if not subject_ok:
            got = ", ".join(sans) if sans else "(none)"
            want = self.subject if self.subject is not None else f"regexp {self.subject_regexp!r}"
            return f"certificate identity {got} does not match {want}"
        issuer = certificate_issuer(cert)
        if issuer is None:
            return "certificate has no OIDC issuer extension"
        if self.issuer is not None:
            issuer_ok = issuer == self.issuer
        else:
            assert self.issuer_regexp is not None
            issuer_ok = go_regexp(self.issuer_regexp).search(issuer) is not None
        if not issuer_ok:
            want = self.issuer if self.issuer is not None else f"regexp {self.issuer_regexp!r}"
            return f"certificate issuer {issuer} does not match {want}"
        return None


__all__ = ["TrustedIdentity", "certificate_issuer", "certificate_sans", "go_regexp"]
