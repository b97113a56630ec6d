"""``ociart promote``, ``rollback``, ``history`` (docs/promotion.md): parsing and printing only; the work is in
:mod:`ociart.promotion`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..errors import UsageError
from .app import (
    ARG_METAVARS,
    EXAMPLES,
    METAVARS,
    CaOpt,
    IdentityOpt,
    IdentityReOpt,
    InsecureOpt,
    IssuerOpt,
    IssuerReOpt,
    JsonOpt,
    PassStdinOpt,
    PlainOpt,
    PolicyOpt,
    PubKeyOpt,
    RequireOpt,
    TrustOpt,
    UserOpt,
    _client,
    _err,
    _out,
    _trust,
    app,
    say,
)

if TYPE_CHECKING:
    from ..promotion.promote import PromotionResult

GateOpt = Annotated[list[str], typer.Option(
    "--gate", help="Metric gate on verified evaluations, e.g. 'accuracy>=0.9' (>= > <= < == !=; repeatable).")]
ExpectOpt = Annotated[Optional[str], typer.Option(
    "--expect", help="Compare-and-set: the digest the target tag must point at now, or 'absent' (default: the value "
                     "read first); exit 7 naming the winner when another writer moved it.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Check and print every gate; change nothing.")]
SignKeyOpt = Annotated[Optional[str], typer.Option(
    "--sign-key", help="Sign the promotion record with this private key (password from COSIGN_PASSWORD).")]
SignTokenOpt = Annotated[Optional[str], typer.Option(
    "--sign-identity-token", help="Sign the promotion record keylessly with this OIDC identity token.")]
SignTrustOpt = Annotated[Optional[Path], typer.Option(
    "--sign-trust-config", help="Sigstore ClientTrustConfig for keyless signing of the record.")]

METAVARS.update({"--to": "TARGET", "--gate": "METRIC OP NUMBER", "--sign-key": "FILE",
                 "--sign-identity-token": "TOKEN", "--sign-trust-config": "FILE"})
ARG_METAVARS.update({"src": "SRC"})
EXAMPLES.update({
    "promote": "ociart promote localhost:5000/models/bert:candidate --to staging --key release.pub "
               "--gate 'accuracy>=0.9' --sign-key release.key",
    "rollback": "ociart rollback localhost:5000/models/bert:prod --policy policy.yaml --sign-key release.key",
    "history": "ociart history localhost:5000/models/bert:prod",
})


def _record_signer(key: str | None, token: str | None, trust_config: Path | None) -> Any:
    """The signer of the promotion record (None: written unsigned)."""
    if key and token:
        raise UsageError("--sign-key and --sign-identity-token exclude each other")
    if key:
        from ..signing.signers import load_signing_key

        return load_signing_key(key)
    if token or trust_config:
        from ..signing.signers import keyless_signer

        return keyless_signer(token, trust_config)
    return None


def _gate_trust(keys: list[str], identity: str | None, identity_re: str | None, issuer: str | None,
                issuer_re: str | None, trust_config: Path | None, policy: Path | None) -> tuple[Any, Any]:
    """(trust, policy) for the gates; no trust at all is allowed (a promotion without gates)."""
    if policy is None and not keys and all(v is None for v in (identity, identity_re, issuer, issuer_re)):
        return None, None
    return _trust(keys, identity, identity_re, issuer, issuer_re, trust_config, policy)


def _report(result: PromotionResult, as_json: bool) -> None:
    if as_json:
        _out(result)
        return
    from .render import table

    rows = [("pass" if g.passed else "FAIL", g.gate, g.detail) for g in result.gates]
    what = "rollback" if result.rollback else "promotion"
    if result.dry_run:
        if rows:
            table(sys.stdout, f"gates of the {what} of {result.digest} to {result.tag}", ("result", "gate", "why"),
                  rows)
        else:
            say(f"no gates: the {what} of {result.digest} to {result.tag} would pass")
        _err(f"dry run: {result.tag} stays at {result.before or 'absent'}; "
             f"the {what} would {'pass' if result.passed else 'be refused'}")
        return
    if rows:
        table(sys.stderr, f"gates of {result.digest}", ("result", "gate", "why"), rows)
    _err(f"{result.tag}: {result.before or 'absent'} -> {result.after}")
    _err(f"{what} record {result.record} ({'signed by ' + result.actor if result.signed else 'unsigned'})")
    if result.image is not None:
        _err(f"image form {result.image.repository}:{result.image.tag}: {result.image.before or 'absent'} -> "
             f"{result.image.after} (record {result.image.record})")
    print(result.digest)


@app.command()
def promote(
    src: Annotated[str, typer.Argument(help="Source artifact (tag or digest), e.g. models/bert-candidates:c1.")],
    to: Annotated[str, typer.Option(
        "--to", help="Target: a tag of SRC's repository (no / : @), or REPO:TAG in another repository or registry.")],
    key: PubKeyOpt = [],  # noqa: B006
    certificate_identity: IdentityOpt = None, certificate_identity_regexp: IdentityReOpt = None,
    certificate_oidc_issuer: IssuerOpt = None, certificate_oidc_issuer_regexp: IssuerReOpt = None,
    trust_config: TrustOpt = None, policy: PolicyOpt = None, require_attestation: RequireOpt = [],  # noqa: B006
    gate: GateOpt = [],  # noqa: B006
    expect: ExpectOpt = None, dry_run: DryRunOpt = False,
    sign_key: SignKeyOpt = None, sign_identity_token: SignTokenOpt = None, sign_trust_config: SignTrustOpt = None,
    with_image: Annotated[bool, typer.Option(
        "--with-image", help="Also move the same tag of SRC's linked image form (push --with-image), after the same "
                             "gates and a signature check of the image.")] = False,
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Move a tag to SRC's digest once its gates pass, by compare-and-set; record it; prints the digest."""
    from ..client import parse_expect

    trust, pol = _gate_trust(key, certificate_identity, certificate_identity_regexp, certificate_oidc_issuer,
                             certificate_oidc_issuer_regexp, trust_config, policy)
    signer = None if dry_run else _record_signer(sign_key, sign_identity_token, sign_trust_config)
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        result = c.promote(src, to, trust, policy=pol, require_attestations=require_attestation, gates=gate,
                           expect=parse_expect(expect) if expect is not None else None, dry_run=dry_run,
                           sign=signer, with_image=with_image)
    _report(result, as_json)
    if dry_run and not result.passed:
        raise typer.Exit(5)


@app.command()
def rollback(
    ref: Annotated[str, typer.Argument(help="REPO:TAG to move back to the digest before its current one.")],
    key: PubKeyOpt = [],  # noqa: B006
    certificate_identity: IdentityOpt = None, certificate_identity_regexp: IdentityReOpt = None,
    certificate_oidc_issuer: IssuerOpt = None, certificate_oidc_issuer_regexp: IssuerReOpt = None,
    trust_config: TrustOpt = None, policy: PolicyOpt = None, require_attestation: RequireOpt = [],  # noqa: B006
    gate: GateOpt = [],  # noqa: B006
    expect: ExpectOpt = None, dry_run: DryRunOpt = False,
    sign_key: SignKeyOpt = None, sign_identity_token: SignTokenOpt = None, sign_trust_config: SignTrustOpt = None,
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Move a tag back to its previous digest (from its history), through the same gates; prints the digest."""
    from ..client import parse_expect

    trust, pol = _gate_trust(key, certificate_identity, certificate_identity_regexp, certificate_oidc_issuer,
                             certificate_oidc_issuer_regexp, trust_config, policy)
    signer = None if dry_run else _record_signer(sign_key, sign_identity_token, sign_trust_config)
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        result = c.rollback(ref, trust, policy=pol, require_attestations=require_attestation, gates=gate,
                            expect=parse_expect(expect) if expect is not None else None, dry_run=dry_run,
                            sign=signer)
    _report(result, as_json)
    if dry_run and not result.passed:
        raise typer.Exit(5)


@app.command()
def history(
    ref: Annotated[str, typer.Argument(help="REPO:TAG whose promotions to list.")],
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """List the promotions into a tag, newest first: time, digest, source, actor, gates."""
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        entries = c.history(ref)
    if as_json:
        _out({"reference": ref, "entries": [e.model_dump(mode="json", exclude_none=True) for e in entries]})
        return
    from .render import table

    rows = []
    for e in entries:
        failed = [g.gate for g in e.gates if not g.passed]
        gates = f"{len(e.gates)} passed" if not failed else f"failed: {', '.join(failed)}"
        rows.append((e.time.isoformat().replace("+00:00", "Z"), e.digest, e.source or "",
                     e.actor or "", ("rollback; " if e.rollback else "") + (gates if e.gates else "none"),
                     "signed" if e.signed else "unsigned"))
    table(sys.stdout, None, ("time", "digest", "from", "actor", "gates", "record"), rows)
    _err(f"{len(entries)} promotion(s)")


# -- ociart audit verify | show -----------------------------------------------------------------------------------
audit_app = typer.Typer(name="audit", help="Check and read the hash-chained audit log.", no_args_is_help=True,
                        add_completion=False, rich_markup_mode=None)
app.add_typer(audit_app, name="audit")
AuditRepoOpt = Annotated[Optional[str], typer.Option(
    "--audit-repo", help="Registry repository holding the copy of the log and its head (env OCIART_AUDIT_REPO).")]
AuditFileOpt = Annotated[Optional[Path], typer.Option(
    "--file", help="The audit log (default: $OCIART_HOME/audit.jsonl).")]
METAVARS.update({"--audit-repo": "REF", "--file": "FILE", "--repository": "GLOB", "--actor": "GLOB",
                 "--action": "GLOB", "--since": "TIME", "--until": "TIME"})
EXAMPLES.update({"audit": "ociart audit verify --audit-repo localhost:5000/ops/audit"})


@audit_app.command("verify", epilog="Example:\n  ociart audit verify --audit-repo localhost:5000/ops/audit")
def audit_verify(
    audit_repo: AuditRepoOpt = None, file: AuditFileOpt = None, as_json: JsonOpt = False,
) -> None:
    """Check the chain (names the first bad line) and, with --audit-repo, the local head against the registry's."""
    from .. import audit

    if audit_repo:
        check = audit.check_registry(audit_repo, file)
        if as_json:
            _out(check)
            return
        _err(f"audit log {check.path}: {check.lines} line(s), chain intact; registry copy {check.registry} has "
             f"line {check.registry_sequence} as its head and it matches"
             + (f"; {check.not_in_registry} newer line(s) not copied yet" if check.not_in_registry else ""))
        say(check.head)
        return
    report = audit.verify(file)
    if as_json:
        _out(report)
        return
    _err(f"audit log {report.path}: {report.lines} line(s), chain intact")
    say(report.head)


@audit_app.command("show", epilog="Example:\n  ociart audit show --action promote --since 2026-12-01T00:00:00Z")
def audit_show(
    repository: Annotated[Optional[str], typer.Option(
        "--repository", help="Only this repository (host/repo; a shell glob).")] = None,
    actor: Annotated[Optional[str], typer.Option("--actor", help="Only this actor (a shell glob).")] = None,
    action: Annotated[Optional[str], typer.Option(
        "--action", help="Only this action: push, tag, promote, rollback, delete, gc (a shell glob).")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="Only from this time (ISO 8601).")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Only up to this time (ISO 8601).")] = None,
    file: AuditFileOpt = None, as_json: JsonOpt = False,
) -> None:
    """List audit entries matching every filter given."""
    from datetime import datetime

    from .. import audit

    def when(value: str | None, flag: str) -> datetime | None:
        if value is None:
            return None
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"{flag} {value!r}: expected an ISO 8601 time, e.g. 2026-12-01T08:00:00Z") from None

    entries = audit.show(file, repository=repository, actor=actor, action=action, since=when(since, "--since"),
                         until=when(until, "--until"))
    if as_json:
        _out({"entries": [e.model_dump(mode="json") for e in entries]})
        return
    from .render import table

    table(sys.stdout, None, ("time", "actor", "action", "reference", "before", "after", "result"),
          [(e.time, e.actor, e.action, e.reference, e.before or "", e.after or "", e.result) for e in entries])
    _err(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
