"""Typer application. stdout carries only results; messages, progress and errors go to stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import OciartError, UsageError

app = typer.Typer(
    name="ociart",
    help="An artifact store for machine learning on OCI registries.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# -- shared options ---------------------------------------------------------------------------------
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON result on stdout.")]
UserOpt = Annotated[Optional[str], typer.Option("--username", "-u", help="Registry username.")]
PassStdinOpt = Annotated[bool, typer.Option("--password-stdin", help="Read the registry password from stdin.")]
PlainOpt = Annotated[bool, typer.Option("--plain-http", help="Use plain HTTP for every registry.")]
InsecureOpt = Annotated[bool, typer.Option("--insecure", help="Do not verify TLS certificates.")]
CaOpt = Annotated[Optional[Path], typer.Option("--ca-file", help="PEM file of CA certificates to trust.")]
ConcOpt = Annotated[int, typer.Option("--concurrency", min=1, max=64, help="Parallel blob transfers.")]
# signing and verification
KeyOpt = Annotated[Optional[str], typer.Option(
    "--key", help="Private key file or key URI (cosign format; password from COSIGN_PASSWORD). Without it: keyless.")]
TokenOpt = Annotated[Optional[str], typer.Option(
    "--identity-token", help="OIDC identity token for keyless signing (else SIGSTORE_ID_TOKEN or ambient CI).")]
TrustOpt = Annotated[Optional[Path], typer.Option(
    "--trust-config", help="Sigstore ClientTrustConfig or trusted_root.json (default: public-good Sigstore).")]
LegacyOpt = Annotated[str, typer.Option(
    "--legacy-signature", help="Also write the legacy cosign .sig signature: always or never.")]
PubKeyOpt = Annotated[list[str], typer.Option("--key", help="Trusted public key file (repeatable).")]
IdentityOpt = Annotated[Optional[str], typer.Option(
    "--certificate-identity", help="Keyless: the signer's certificate identity (email or URI), exactly.")]
IdentityReOpt = Annotated[Optional[str], typer.Option(
    "--certificate-identity-regexp", help="Keyless: a regular expression the identity must match.")]
IssuerOpt = Annotated[Optional[str], typer.Option(
    "--certificate-oidc-issuer", help="Keyless: the OIDC issuer of the signer's token, exactly.")]
IssuerReOpt = Annotated[Optional[str], typer.Option(
    "--certificate-oidc-issuer-regexp", help="Keyless: a regular expression the issuer must match.")]
PolicyOpt = Annotated[Optional[Path], typer.Option("--policy", help="Verification policy file (YAML).")]
RequireOpt = Annotated[list[str], typer.Option(
    "--require-attestation", help="Predicate type URI of an attestation that must verify (repeatable).")]


def _password(stdin: bool) -> str | None:
    if not stdin:
        return None
    pw = sys.stdin.readline().rstrip("\r\n")
    if not pw:
        raise UsageError("--password-stdin: no password on stdin")
    return pw


def _client(username: str | None = None, password_stdin: bool = False, plain_http: bool = False,
            insecure: bool = False, ca_file: Path | None = None, concurrency: int = 4, as_json: bool = False) -> Any:
    from ..client import Client

    password = _password(password_stdin)
    if username and password is None:
        raise UsageError("--username needs --password-stdin (or use OCIART_REGISTRY_USERNAME/PASSWORD)")
    if password is not None and not username:
        raise UsageError("--password-stdin needs --username")
    return Client(username=username, password=password, plain_http=plain_http, insecure=insecure,
                  ca_file=ca_file, concurrency=concurrency, progress=None if not as_json else False)


def _signer(key: str | None, identity_token: str | None, trust_config: Path | None) -> Any:
    from ..signing.signers import keyless_signer, load_signing_key

    if key:
        if identity_token:
            raise UsageError("--key and --identity-token exclude each other")
        return load_signing_key(key)
    return keyless_signer(identity_token, trust_config)


def _trust(keys: list[str], identity: str | None, identity_re: str | None, issuer: str | None,
           issuer_re: str | None, trust_config: Path | None, policy: Path | None) -> tuple[Any, Any]:
    """(trust, policy) from the verify options; exactly one of them is set."""
    keyless_given = any(v is not None for v in (identity, identity_re, issuer, issuer_re))
    if policy is not None:
        if keys or keyless_given:
            raise UsageError("--policy excludes --key and --certificate-* options")
        from ..signing.policy import load_policy

        return None, load_policy(policy)
    from ..signing.identity import TrustedIdentity
    from ..signing.signers import load_verification_key
    from ..signing.verify import Trust, TrustedKey

    identities = []
    if keyless_given:
        if (identity is None) == (identity_re is None):
            raise UsageError("give one of --certificate-identity, --certificate-identity-regexp")
        if (issuer is None) == (issuer_re is None):
            raise UsageError("give one of --certificate-oidc-issuer, --certificate-oidc-issuer-regexp")
        identities.append(TrustedIdentity(subject=identity, subject_regexp=identity_re, issuer=issuer,
                                          issuer_regexp=issuer_re))
    trusted = [TrustedKey(name=k, key=load_verification_key(k)) for k in keys]
    return Trust(keys=trusted, identities=identities, trust_config=trust_config), None


def _out(obj: Any) -> None:
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json", exclude_none=True, by_alias=True)
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def _err(msg: str) -> None:
    sys.stderr.write(msg + "\n")


def _kv(pairs: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise UsageError(f"{what} {p!r}: expected KEY=VALUE")
        out[k] = v
    return out


# -- commands ---------------------------------------------------------------------------------------
@app.command()
def push(
    ref: Annotated[str, typer.Argument(help="Destination, e.g. localhost:5000/models/bert:v1 or models/bert:v1.")],
    paths: Annotated[list[str], typer.Argument(help="Files or directories (one directory with --kind).")],
    kind: Annotated[Optional[str], typer.Option(
        "--kind", help="model, dataset, preprocessor, report, checkpoint or generic (default; one layer per file).")] = None,
    artifact_type: Annotated[Optional[str], typer.Option("--artifact-type", help="Manifest artifactType.")] = None,
    annotation: Annotated[list[str], typer.Option("--annotation", "-a", help="Manifest annotation KEY=VALUE.")] = [],  # noqa: B006
    config: Annotated[Optional[str], typer.Option("--config", help="Config blob FILE[:MEDIATYPE].")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Artifact name (overrides ociart.yaml).")] = None,
    artifact_version: Annotated[Optional[str], typer.Option("--artifact-version", help="Artifact version.")] = None,
    description: Annotated[Optional[str], typer.Option("--description", help="Description.")] = None,
    author: Annotated[list[str], typer.Option("--author", help="Author (repeatable).")] = [],  # noqa: B006
    license_: Annotated[Optional[str], typer.Option("--license", help="SPDX license expression.")] = None,
    framework: Annotated[Optional[str], typer.Option("--framework", help="e.g. pytorch, sklearn.")] = None,
    architecture: Annotated[Optional[str], typer.Option("--architecture", help="e.g. transformer.")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="e.g. bfloat16.")] = None,
    metric: Annotated[list[str], typer.Option("--metric", help="Metric KEY=NUMBER (repeatable).")] = [],  # noqa: B006
    label: Annotated[list[str], typer.Option("--label", help="Free-form label KEY=VALUE (repeatable).")] = [],  # noqa: B006
    reproducible: Annotated[bool, typer.Option(
        "--reproducible", help="Leave out the creation time (SOURCE_DATE_EPOCH still wins).")] = False,
    small_file_threshold: Annotated[Optional[int], typer.Option(
        "--small-file-threshold", min=0, help="Bytes; smaller files of a directory share a tar layer (0: never).")] = None,
    subject: Annotated[Optional[str], typer.Option(
        "--subject", help="With --kind report: the model this report evaluated (attached as its referrer).")] = None,
    git_dir: Annotated[Optional[Path], typer.Option("--git-dir", help="Repository of the training code (default: cwd).")] = None,
    no_git: Annotated[bool, typer.Option("--no-git", help="Do not record git state.")] = False,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Run id (default: active MLflow/W&B run).")] = None,
    param: Annotated[list[str], typer.Option("--param", help="Hyperparameter KEY=VALUE (repeatable).")] = [],  # noqa: B006
    params_file: Annotated[Optional[Path], typer.Option("--params-file", help="Hyperparameters, YAML or JSON.")] = None,
    input_: Annotated[list[str], typer.Option(
        "--input", help="Input artifact [NAME=]REF, recorded by digest (repeatable).")] = [],  # noqa: B006
    input_file: Annotated[list[Path], typer.Option("--input-file", help="Local input file, recorded by sha256.")] = [],  # noqa: B006
    no_provenance: Annotated[bool, typer.Option(
        "--no-provenance", help="Do not attach the provenance statement (annotations are still written).")] = False,
    sign: Annotated[bool, typer.Option(
        "--sign", help="Sign the artifact and its provenance (signed attestation instead of the unsigned one).")] = False,
    key: KeyOpt = None, identity_token: TokenOpt = None, trust_config: TrustOpt = None,
    legacy_signature: LegacyOpt = "always",
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, concurrency: ConcOpt = 4, as_json: JsonOpt = False,
) -> None:
    """Push files as an OCI artifact (or a directory as a typed ML artifact); prints the manifest digest."""
    cfg, cfg_type = None, "application/vnd.oci.image.config.v1+json"
    if config:
        path, sep, mt = config.partition(":")
        cfg = path
        if sep and mt:
            cfg_type = mt
    metrics: dict[str, float] = {}
    for k, v in _kv(metric, "--metric").items():
        try:
            metrics[k] = float(v)
        except ValueError:
            raise UsageError(f"--metric {k}={v}: the value must be a number") from None
    metadata = {"name": name, "version": artifact_version, "description": description, "authors": author,
                "license": license_, "framework": framework, "architecture": architecture, "precision": precision,
                "metrics": metrics, "labels": _kv(label, "--label")}
    from ..lineage.capture import load_params_file
    from ..lineage.record import LineageOptions

    params: dict[str, Any] = load_params_file(params_file) if params_file else {}
    params.update(_kv(param, "--param"))
    lineage = LineageOptions(git=not no_git, git_dir=git_dir, run_id=run_id, params=params, metrics=metrics,
                             inputs=list(input_), input_files=list(input_file), provenance=not no_provenance,
                             entry_point="ociart push")
    if not sign and (key or identity_token):
        raise UsageError("--key and --identity-token sign the pushed artifact: add --sign")
    _legacy_mode(legacy_signature)
    signer = _signer(key, identity_token, trust_config) if sign else None
    with _client(username, password_stdin, plain_http, insecure, ca_file, concurrency, as_json) as c:
        desc = c.push(ref, paths, kind=kind, artifact_type=artifact_type, annotations=_kv(annotation, "--annotation"),
                      config=cfg, config_media_type=cfg_type, metadata=metadata, reproducible=reproducible,
                      small_file_threshold=small_file_threshold, lineage=lineage, subject=subject, sign=signer,
                      legacy_signature=legacy_signature)
    if as_json:
        _out(desc)
    else:
        print(desc.digest)


@app.command()
def pull(
    ref: Annotated[str, typer.Argument(help="Artifact to pull.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write files into.")] = Path("."),
    include: Annotated[list[str], typer.Option("--include", help="Only files matching this glob (repeatable).")] = [],  # noqa: B006
    filter_: Annotated[list[str], typer.Option(
        "--filter", help="Only these parts: weights,config,docs,code,dataset (comma-separated or repeated).")] = [],  # noqa: B006
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing different files.")] = False,
    verify_key: Annotated[list[str], typer.Option(
        "--verify-key", help="Verify the signature with this public key before pulling (repeatable).")] = [],  # noqa: B006
    policy: PolicyOpt = None,
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, concurrency: ConcOpt = 4, as_json: JsonOpt = False,
) -> None:
    """Pull an artifact's files (digest-verified) into a directory; prints the manifest digest.

    With --verify-key or --policy the signatures are verified first and exactly the verified digest is pulled."""
    with _client(username, password_stdin, plain_http, insecure, ca_file, concurrency, as_json) as c:
        if verify_key or policy is not None:
            trust, pol = _trust(verify_key, None, None, None, None, None, policy)
            checked = c.verify(ref, trust, policy=pol)
            ref = str(c.ref(ref).with_digest(checked.digest))
            if not as_json:
                _err(f"verified {checked.digest}: {len(checked.signatures)} signature(s)")
        result = c.pull(ref, output, include=include, filters=filter_, overwrite=overwrite)
    if as_json:
        _out(result)
        return
    written = [f for f in result.files if not f.skipped]
    _err(f"pulled {len(written)} file(s) into {output}" +
         (f", {len(result.files) - len(written)} already up to date" if len(written) < len(result.files) else ""))
    print(result.digest)


@app.command()
def resolve(
    ref: Annotated[str, typer.Argument(help="Reference to resolve.")],
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Print the manifest digest a reference points at."""
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        desc = c.resolve(ref)
    if as_json:
        _out(desc)
    else:
        print(desc.digest)


@app.command()
def inspect(
    ref: Annotated[str, typer.Argument(help="Artifact to inspect.")],
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Show the manifest, config and layers."""
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        info = c.inspect(ref)
    if as_json:
        _out(info)
        return
    from .render import print_inspection

    print_inspection(info)


@app.command()
def tags(
    repo: Annotated[str, typer.Argument(help="Repository, e.g. localhost:5000/models/bert.")],
    all_tags: Annotated[bool, typer.Option("--all", help="Include sha256-* referrer/signature tags.")] = False,
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """List tags (sorted)."""
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        found = c.tags(repo, all=all_tags)
    if as_json:
        _out({"tags": found})
    else:
        for t in found:
            print(t)


@app.command()
def delete(
    ref: Annotated[str, typer.Argument(help="REPO@sha256:... deletes the manifest; REPO:TAG only the tag.")],
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Delete a manifest by digest (every tag on it goes too) or a tag alone where supported."""
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        result = c.delete(ref)
    if as_json:
        _out(result)
        return
    if result.tag_only:
        _err(f"deleted tag {result.tags[0]} (manifest {result.digest} kept)")
    else:
        gone = f"; tags removed with it: {', '.join(result.tags)}" if result.tags else "; it had no tags"
        _err(f"deleted manifest {result.digest}{gone}")
    print(result.digest)


@app.command()
def copy(
    src: Annotated[str, typer.Argument(help="Source reference (registry, embedded store or oci:DIR).")],
    dst: Annotated[str, typer.Argument(help="Destination reference.")],
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, concurrency: ConcOpt = 4, as_json: JsonOpt = False,
    no_referrers: Annotated[bool, typer.Option(
        "--no-referrers", help="Do not copy signatures, attestations, provenance and reports along.")] = False,
) -> None:
    """Copy an artifact (manifest bytes and digest unchanged) with its referrers between registries and layouts."""
    with _client(username, password_stdin, plain_http, insecure, ca_file, concurrency, as_json) as c:
        desc = c.copy(src, dst, referrers=not no_referrers)
    if as_json:
        _out(desc)
    else:
        print(desc.digest)


@app.command()
def diff(
    old: Annotated[str, typer.Argument(help="Earlier artifact.")],
    new: Annotated[str, typer.Argument(help="Later artifact.")],
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """List files added (+), removed (-) and changed (~) between two artifacts, by digest."""
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        result = c.diff(old, new)
    if as_json:
        _out(result)
        return
    for f in result.added:
        print(f"+ {f.path}  {f.new}")
    for f in result.removed:
        print(f"- {f.path}  {f.old}")
    for f in result.changed:
        print(f"~ {f.path}  {f.old} -> {f.new}")
    _err(f"{len(result.added)} added, {len(result.removed)} removed, {len(result.changed)} changed, "
         f"{result.unchanged} unchanged")


@app.command()
def referrers(
    ref: Annotated[str, typer.Argument(help="Subject artifact.")],
    artifact_type: Annotated[Optional[str], typer.Option("--artifact-type", help="Only this artifactType.")] = None,
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """List the manifests that refer to an artifact (signatures, attestations, provenance, reports)."""
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        found = c.referrers(ref, artifact_type)
    if as_json:
        _out({"referrers": [d.model_dump(mode="json", exclude_none=True) for d in found]})
        return
    for d in found:
        print(f"{d.digest}  {d.artifactType or ''}")


def _legacy_mode(value: str) -> str:
    if value not in ("always", "never"):
        raise UsageError(f"--legacy-signature {value!r}: choose always or never")
    return value


@app.command()
def sign(
    ref: Annotated[str, typer.Argument(help="Artifact to sign (a tag is resolved once; its digest is signed).")],
    key: KeyOpt = None, identity_token: TokenOpt = None, trust_config: TrustOpt = None,
    legacy_signature: LegacyOpt = "always",
    annotation: Annotated[list[str], typer.Option(
        "--annotation", "-a", help="Signed annotation KEY=VALUE in the legacy payload (repeatable).")] = [],  # noqa: B006
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Sign an artifact the cosign v3 way (Sigstore bundle referrer) and, by default, the legacy .sig way."""
    _legacy_mode(legacy_signature)
    signer = _signer(key, identity_token, trust_config)
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        result = c.sign(ref, signer, legacy_signature=legacy_signature,
                        annotations=_kv(annotation, "--annotation") or None)
    if as_json:
        _out(result)
        return
    parts = [f"bundle referrer {result.bundle}" if result.bundle else "bundle already present"]
    if result.legacy:
        parts.append(f"legacy signature at {result.legacy_tag}")
    _err(f"signed {result.reference} as {result.signer}: " + ", ".join(parts))
    print(result.digest)


@app.command()
def attest(
    ref: Annotated[str, typer.Argument(help="Artifact the attestation is about.")],
    predicate: Annotated[Path, typer.Option(
        "--predicate", help="Predicate JSON file (or a whole in-toto statement, e.g. from `ociart provenance`).")],
    type_: Annotated[Optional[str], typer.Option("--type", help="Predicate type URI.")] = None,
    key: KeyOpt = None, identity_token: TokenOpt = None, trust_config: TrustOpt = None,
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Sign an in-toto predicate about an artifact (provenance, an evaluation) and attach it as a bundle referrer."""
    from ..signing.service import read_predicate

    predicate_type, body = read_predicate(predicate, type_)
    signer = _signer(key, identity_token, trust_config)
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        result = c.attest(ref, signer, predicate_type, body)
    if as_json:
        _out(result)
        return
    _err(f"attested {result.predicateType} for {result.reference} as {result.signer}: bundle referrer {result.bundle}")
    print(result.digest)


@app.command()
def verify(
    ref: Annotated[str, typer.Argument(help="Artifact to verify (a tag is resolved once).")],
    key: PubKeyOpt = [],  # noqa: B006
    certificate_identity: IdentityOpt = None, certificate_identity_regexp: IdentityReOpt = None,
    certificate_oidc_issuer: IssuerOpt = None, certificate_oidc_issuer_regexp: IssuerReOpt = None,
    trust_config: TrustOpt = None, policy: PolicyOpt = None, require_attestation: RequireOpt = [],  # noqa: B006
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Verify signatures (bundle referrers and legacy .sig) and required attestations; exit 5 when not verified."""
    trust, pol = _trust(key, certificate_identity, certificate_identity_regexp, certificate_oidc_issuer,
                        certificate_oidc_issuer_regexp, trust_config, policy)
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        result = c.verify(ref, trust, policy=pol, require_attestations=require_attestation)
    if as_json:
        _out(result)
        return
    from .render import print_verification

    print_verification(result)


@app.command()
def provenance(
    ref: Annotated[str, typer.Argument(help="Artifact.")],
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Print the in-toto SLSA provenance statement attached to an artifact."""
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        stmt = c.provenance(ref)
    sys.stdout.write(json.dumps(stmt.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2) + "\n")


@app.command()
def lineage(
    ref: Annotated[str, typer.Argument(help="Artifact.")],
    downstream: Annotated[bool, typer.Option(
        "--downstream", help="Find artifacts built from this one, in the --repo repositories.")] = False,
    repo: Annotated[list[str], typer.Option("--repo", help="Repository to search downstream (repeatable).")] = [],  # noqa: B006
    depth: Annotated[int, typer.Option("--depth", min=1, help="How many levels to follow.")] = 10,
    dot: Annotated[bool, typer.Option("--dot", help="Print Graphviz dot.")] = False,
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Show what data, code, parameters and environment produced an artifact (or, --downstream, what used it)."""
    if downstream and not repo:
        raise UsageError("--downstream needs at least one --repo to search")
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        root = c.lineage(ref, downstream=repo if downstream else None, depth=depth)
    if as_json:
        _out(root)
        return
    from ..lineage import graph

    if dot:
        sys.stdout.write(graph.to_dot_downstream(root) if downstream else graph.to_dot(root))
        return
    from .render import print_lineage

    print_lineage(root, downstream)


@app.command()
def login(
    host: Annotated[str, typer.Argument(help="Registry host[:port].")],
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Check credentials against a registry and store them in Docker's config.json."""
    from ..client import Client

    if not username:
        if not sys.stdin.isatty():
            raise UsageError("login: --username is required")
        username = typer.prompt("Username", err=True)
    password = _password(password_stdin)
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError("login: use --password-stdin to give the password")
        password = typer.prompt("Password", hide_input=True, err=True)
    with Client(plain_http=plain_http, insecure=insecure, ca_file=ca_file) as c:
        path = c.login(host, username, password)
    if as_json:
        _out({"host": host, "username": username, "config": str(path)})
    else:
        _err(f"login succeeded; credentials stored in {path}")


@app.command()
def logout(
    host: Annotated[str, typer.Argument(help="Registry host[:port].")],
    as_json: JsonOpt = False,
) -> None:
    """Remove stored credentials for a registry."""
    from ..client import Client

    removed = Client().logout(host)
    if as_json:
        _out({"host": host, "removed": removed})
    else:
        _err(f"removed credentials for {host}" if removed else f"no stored credentials for {host}")


@app.command()
def keygen(
    output_key_prefix: Annotated[str, typer.Option(
        "--output-key-prefix", help="Write PREFIX.key and PREFIX.pub (cosign's format).")] = "cosign",
    as_json: JsonOpt = False,
) -> None:
    """Generate a cosign-compatible ECDSA P-256 key pair; the password comes from COSIGN_PASSWORD or a prompt."""
    from ..signing import keys

    key_path, pub_path = keys.generate_key_pair(Path(output_key_prefix), keys.read_password(confirm=True))
    if as_json:
        _out({"private_key": str(key_path), "public_key": str(pub_path)})
    else:
        _err(f"private key written to {key_path}\npublic key written to {pub_path}")


def run(argv: list[str]) -> int:
    """Run the CLI; map every error to one line on stderr and its exit code.

    Usage errors are reported by typer itself (exit 2); library errors by their class's exit code.
    """
    try:
        app(args=argv, prog_name="ociart")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except OciartError as exc:
        _err(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _err("error: interrupted")
        return 130
    except BrokenPipeError:
        return 1
    return 0
