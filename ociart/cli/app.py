"""Typer application. stdout carries only results; messages, progress and errors go to stderr."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer import _click as click  # typer (>= 0.29) carries its own click
from typer.core import TyperArgument, TyperGroup, TyperOption

from ..errors import Interrupted, OciartError, UsageError, VerificationError, from_os_error

if TYPE_CHECKING:
    from ..client import Client

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
def _parse_size(value: str | None) -> int | None:
    """``67108864``, ``64MiB``, ``64M``, ``1GiB``, ``512KiB`` → bytes (powers of 1024)."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", value, re.IGNORECASE)
    if m is None or int(m.group(1)) == 0:
        raise UsageError(f"--chunk-size {value!r}: give a positive size in bytes, or with KiB, MiB or GiB")
    return int(m.group(1)) << (10 * " KMGT".index((m.group(2) or " ").upper()))


ChunkOpt = Annotated[Optional[str], typer.Option(
    "--chunk-size", envvar="OCIART_UPLOAD_CHUNK_SIZE",
    help="Upload blobs in resumable chunks of this size (e.g. 64MiB; default: only blobs of 4 GiB or more, in "
         "64 MiB chunks). OCI-Chunk-Min-Length and host limits are honoured.")]
StreamsOpt = Annotated[Optional[int], typer.Option(
    "--max-streams", min=1, max=64, envvar="OCIART_MAX_STREAMS",
    help="Most parallel ranged GETs per blob of 64 MiB or more (one stream first; more only where a second one adds throughput; 1 = one stream; default 8).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
MirrorOpt = Annotated[list[str], typer.Option(
    "--mirror", help="Registry mirror HOST[:PORT] tried first for manifests by digest and blobs (repeatable).")]
LogFormatOpt = Annotated[str, typer.Option(
    "--log-format", help="Progress on stderr: text (bars or lines) or json (one JSON object per event).")]
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
# encryption (ocicrypt; docs/encryption.md)
RecipientOpt = Annotated[list[str], typer.Option(
    "--encrypt-recipient", help="Encrypt layers for this public key: jwe:PUB.pem, RSA or EC (repeatable).")]
EncFilterOpt = Annotated[list[str], typer.Option(
    "--encrypt-filter", help="Layers to encrypt: weights,config,docs,code,dataset or all (default weights,dataset).")]
DecKeyOpt = Annotated[list[str], typer.Option(
    "--decryption-key", help="Private key KEY.pem[:PASSWORD] that opens encrypted layers (repeatable).")]


def _password(stdin: bool) -> str | None:
    if not stdin:
        return None
    pw = sys.stdin.readline().rstrip("\r\n")
    if not pw:
        raise UsageError("--password-stdin: no password on stdin")
    return pw


def _client(username: str | None = None, password_stdin: bool = False, plain_http: bool = False,
            insecure: bool = False, ca_file: Path | None = None, concurrency: int = 4, as_json: bool = False,
            quiet: bool = False, log_format: str = "text", mirrors: list[str] | None = None,
            max_streams: int | None = None, chunk_size: str | None = None) -> Client:
    """A client for one command; ``-u`` credentials apply to the registry of the command's reference(s)."""
    from ..client import Client

    password = _password(password_stdin)
    if username and password is None:
        raise UsageError("--username needs --password-stdin (or use OCIART_REGISTRY_USERNAME/PASSWORD)")
    if password is not None and not username:
        raise UsageError("--password-stdin needs --username")
    return Client(username=username, password=password, plain_http=plain_http, insecure=insecure,
                  ca_file=ca_file, concurrency=concurrency, progress=False if (as_json or quiet) else None,
                  log_format=log_format, mirrors=mirrors or (), max_streams=max_streams,
                  chunk_size=_parse_size(chunk_size))


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
    if policy is not None:
        if keys or any(v is not None for v in (identity, identity_re, issuer, issuer_re)):
            raise UsageError("--policy excludes --key and --certificate-* options")
        from ..signing.policy import load_policy

        return None, load_policy(policy)
    from ..signing.verify import build_trust

    return build_trust(keys=keys, certificate_identity=identity, certificate_identity_regexp=identity_re,
                       certificate_oidc_issuer=issuer, certificate_oidc_issuer_regexp=issuer_re,
                       trust_config=trust_config), None


def _out(obj: Any) -> None:
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json", exclude_none=True, by_alias=True)
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def _err(msg: str) -> None:
    """One message line on stderr, control characters escaped (artifact text never reaches the terminal raw)."""
    from .render import escape

    sys.stderr.write(escape(msg) + "\n")


def say(text: str) -> None:
    """One result line on stdout, control characters escaped."""
    from .render import escape

    sys.stdout.write(escape(text) + "\n")


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
    follow_symlinks: Annotated[bool, typer.Option(
        "--follow-symlinks", help="Push what symlinks leading outside the directory point to (refused by default).")] = False,
    small_file_threshold: Annotated[Optional[int], typer.Option(
        "--small-file-threshold", min=0, help="Bytes; smaller files of a directory share a tar layer (0: never).")] = None,
    subject: Annotated[Optional[str], typer.Option(
        "--subject", help="With --kind report: the model this report evaluated (attached as its referrer).")] = None,
    as_image: Annotated[bool, typer.Option(
        "--as-image", help="Push the image form only: a runnable image (index) holding the files under --mount-path.")] = False,
    mount_path: Annotated[Optional[str], typer.Option(
        "--mount-path", help="Image form: directory of the files in the image (default /models).")] = None,
    platform: Annotated[list[str], typer.Option(
        "--platform", help="Image form: OS/ARCH (repeatable; default linux/amd64 and linux/arm64).")] = [],  # noqa: B006
    base: Annotated[Optional[str], typer.Option(
        "--base", help="Image form: base image whose layers come first (e.g. one with a shell for KServe).")] = None,
    with_image: Annotated[Optional[str], typer.Option(
        "--with-image", help="Also push the image form to this reference, each form linked to the other.")] = None,
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
    encrypt_recipient: RecipientOpt = [], encrypt_filter: EncFilterOpt = [],  # noqa: B006
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, concurrency: ConcOpt = 4, as_json: JsonOpt = False,
    quiet: QuietOpt = False, chunk_size: ChunkOpt = None,
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
    with _client(username, password_stdin, plain_http, insecure, ca_file, concurrency, as_json, quiet,
                 chunk_size=chunk_size) as c:
        desc = c.push(ref, paths, kind=kind, artifact_type=artifact_type, annotations=_kv(annotation, "--annotation"),
                      config=cfg, config_media_type=cfg_type, metadata=metadata, reproducible=reproducible,
                      small_file_threshold=small_file_threshold, lineage=lineage, subject=subject, sign=signer,
                      legacy_signature=legacy_signature, follow_symlinks=follow_symlinks, as_image=as_image,
                      mount_path=mount_path, platforms=[p for v in platform for p in v.split(",") if p.strip()],
                      base=base, with_image=with_image, encrypt_recipients=encrypt_recipient,
                      encrypt_filter=encrypt_filter)
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
    max_size: Annotated[Optional[int], typer.Option(
        "--max-size", min=0, envvar="OCIART_MAX_SIZE",
        help="Bytes the restored files may add up to (default: what the artifact declares).")] = None,
    verify_key: Annotated[list[str], typer.Option(
        "--verify-key", help="Verify the signature with this public key before pulling (repeatable).")] = [],  # noqa: B006
    policy: PolicyOpt = None, decryption_key: DecKeyOpt = [],  # noqa: B006
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, concurrency: ConcOpt = 4, as_json: JsonOpt = False,
    quiet: QuietOpt = False, log_format: LogFormatOpt = "text", mirror: MirrorOpt = [],  # noqa: B006
    max_streams: StreamsOpt = None,
) -> None:
    """Pull an artifact's files (digest-verified) into a directory; prints the manifest digest.

    With --verify-key or --policy the signatures are verified first and exactly the verified digest is pulled."""
    with _client(username, password_stdin, plain_http, insecure, ca_file, concurrency, as_json, quiet,
                 log_format, mirror, max_streams) as c:
        result = c.pull(ref, output, include=include, filters=filter_, overwrite=overwrite, keys=verify_key,
                        policy=policy, max_size=max_size, decryption_keys=decryption_key)
    if result.verification is not None and not as_json:
        _err(f"verified {result.digest}: {len(result.verification.signatures)} signature(s)")
    if result.cleaned:
        _err(f"removed what an interrupted pull left in {output}: {', '.join(result.cleaned)}")
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
            say(t)


@app.command()
def tag(
    src: Annotated[str, typer.Argument(help="Source artifact, by tag or digest (e.g. models/bert:v1).")],
    tags: Annotated[list[str], typer.Argument(help="Tags to point at it, in the source's repository.")],
    expect: Annotated[Optional[str], typer.Option(
        "--expect", help="Compare-and-set (one TAG only): the digest the tag must point at now, or 'absent'; "
                         "exit 7 when another writer moved it.")] = None,
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Point tags at an existing artifact without uploading it again; prints the digest."""
    from ..client import parse_expect

    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        result = c.tag(src, tags, expect=parse_expect(expect) if expect is not None else None)
    if as_json:
        _out(result)
        return
    _err(f"tagged {result.digest} as {', '.join(result.tags)}")
    print(result.digest)


@app.command("ls")
def ls(
    where: Annotated[Optional[str], typer.Argument(
        help="HOST[:PORT] (every repository), a repository, or oci:PATH; default: the embedded store.")] = None,
    all_: Annotated[bool, typer.Option(
        "--all", help="Also untagged manifests, signatures, attestations, provenance and sha256-* tags.")] = False,
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """List artifacts: one line each with its tags, digest, kind, creation time and size."""
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        listing = c.ls(where, all=all_)
    if as_json:
        _out(listing)
        return
    from .render import print_listing

    print_listing(listing)


@app.command()
def delete(
    ref: Annotated[str, typer.Argument(help="REPO@sha256:... deletes the manifest; REPO:TAG only the tag.")],
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, as_json: JsonOpt = False,
    keep_referrers: Annotated[bool, typer.Option(
        "--keep-referrers", help="Delete only the manifest: leave its signatures, attestations, provenance and "
                                 "reports.")] = False,
) -> None:
    """Delete a manifest by digest with its referrers (every tag on it goes too), or a tag alone where supported."""
    with _client(username, password_stdin, plain_http, insecure, ca_file) as c:
        result = c.delete(ref, referrers=not keep_referrers)
    if as_json:
        _out(result)
        return
    if result.tag_only:
        _err(f"deleted tag {result.tags[0]} (manifest {result.digest} kept)")
    else:
        gone = f"; tags removed with it: {', '.join(result.tags)}" if result.tags else "; it had no tags"
        if result.referrers:
            gone += f"; {len(result.referrers)} referrer(s)"
        if result.scheme_tags:
            gone += f"; {', '.join(result.scheme_tags)}"
        if result.blobs:
            gone += f"; {result.blobs} blob(s), {result.freed_bytes} bytes freed"
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
    decryption_key: DecKeyOpt = [],  # noqa: B006
    quiet: QuietOpt = False, max_streams: StreamsOpt = None, chunk_size: ChunkOpt = None,
) -> None:
    """Copy an artifact (manifest bytes and digest unchanged) with its referrers between registries and layouts.

    With --decryption-key the copy is decrypted instead (as ociart decrypt: a new digest, no referrers)."""
    with _client(username, password_stdin, plain_http, insecure, ca_file, concurrency, as_json, quiet,
                 max_streams=max_streams, chunk_size=chunk_size) as c:
        desc = c.copy(src, dst, referrers=not no_referrers, decryption_keys=decryption_key)
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
        say(f"+ {f.path}  {f.new}")
    for f in result.removed:
        say(f"- {f.path}  {f.old}")
    for f in result.changed:
        say(f"~ {f.path}  {f.old} -> {f.new}")
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
        say(f"{d.digest}  {d.artifactType or ''}")


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
        _err(f"private key written to {key_path}")
        _err(f"public key written to {pub_path}")


# -- one rule for every command: help metavars, an example, flags from the environment -------------------------
#: Metavars by option (anything not listed: the flag's name in capitals). No Python types in help.
METAVARS = {
    "--kind": "KIND", "--artifact-type": "TYPE", "--annotation": "KEY=VALUE", "--config": "FILE[:MEDIATYPE]",
    "--name": "NAME", "--artifact-version": "VERSION", "--description": "TEXT", "--author": "NAME",
    "--license": "SPDX", "--framework": "NAME", "--architecture": "NAME", "--precision": "NAME",
    "--metric": "KEY=NUMBER", "--label": "KEY=VALUE", "--small-file-threshold": "BYTES", "--subject": "REF",
    "--git-dir": "DIR", "--run-id": "ID", "--param": "KEY=VALUE", "--params-file": "FILE", "--input": "[NAME=]REF",
    "--input-file": "FILE", "--key": "FILE", "--identity-token": "TOKEN", "--trust-config": "FILE",
    "--legacy-signature": "always|never", "--username": "USER", "--ca-file": "FILE", "--concurrency": "N",
    "--max-streams": "N", "--chunk-size": "SIZE",
    "--output": "DIR", "--include": "GLOB", "--filter": "PARTS", "--verify-key": "FILE", "--policy": "FILE",
    "--predicate": "FILE", "--type": "URI", "--certificate-identity": "IDENTITY",
    "--certificate-identity-regexp": "REGEXP", "--certificate-oidc-issuer": "URL",
    "--certificate-oidc-issuer-regexp": "REGEXP", "--require-attestation": "URI", "--repo": "REPO", "--depth": "N",
    "--output-key-prefix": "PREFIX", "--expect": "DIGEST|absent", "--cache": "DIR", "--cache-max-size": "BYTES",
    "--log-format": "text|json", "--mirror": "HOST[:PORT]",
    "--encrypt-recipient": "jwe:PUB.pem", "--encrypt-filter": "PARTS|all", "--decryption-key": "KEY.pem[:PASSWORD]",
}
#: Metavars of positional arguments by parameter name (else the name in capitals).
ARG_METAVARS = {"paths": "PATH", "old": "OLD", "new": "NEW", "tags": "TAG", "where": "HOST|REPO|oci:PATH", "dest": "DIR",
                "repositories": "REPO"}
#: One example per command, shown at the end of its --help.
EXAMPLES = {
    "push": "ociart push localhost:5000/models/bert:v1 ./bert --kind model",
    "pull": "ociart pull localhost:5000/models/bert:v1 -o ./bert",
    "resolve": "ociart resolve localhost:5000/models/bert:v1",
    "inspect": "ociart inspect localhost:5000/models/bert:v1",
    "tags": "ociart tags localhost:5000/models/bert",
    "delete": "ociart delete localhost:5000/models/bert@sha256:4f3c…",
    "copy": "ociart copy localhost:5000/models/bert:v1 registry.example/models/bert:v1",
    "diff": "ociart diff localhost:5000/models/bert:v1 localhost:5000/models/bert:v2",
    "referrers": "ociart referrers localhost:5000/models/bert:v1",
    "sign": "ociart sign localhost:5000/models/bert:v1 --key cosign.key",
    "attest": "ociart attest localhost:5000/models/bert:v1 --predicate eval.json --type https://example.com/eval/v1 "
              "--key cosign.key",
    "verify": "ociart verify localhost:5000/models/bert:v1 --key cosign.pub",
    "provenance": "ociart provenance localhost:5000/models/bert:v1",
    "lineage": "ociart lineage localhost:5000/models/bert:v1",
    "login": "echo \"$PASSWORD\" | ociart login localhost:5000 -u alice --password-stdin",
    "logout": "ociart logout localhost:5000",
    "keygen": "COSIGN_PASSWORD=… ociart keygen --output-key-prefix release",
    "tag": "ociart tag localhost:5000/models/bert:v1 prod stable",
    "ls": "ociart ls localhost:5000/models/bert",
    "fetch": "ociart fetch localhost:5000/models/bert:v1 -o /models --policy /etc/ociart/policy.yaml",
    "encrypt": "ociart encrypt localhost:5000/models/bert:v1 localhost:5000/models/bert:v1-enc "
               "--encrypt-recipient jwe:team.pub.pem",
    "decrypt": "ociart decrypt localhost:5000/models/bert:v1-enc oci:./plain:v1 --decryption-key team.pem",
    "ui": "ociart ui localhost:5000 --policy policy.yaml",
    "gc": "ociart gc --policy retention.yaml localhost:5000/models/bert",
}
ENV_PREFIX = "OCIART_"


class _Argument(TyperArgument):
    """A positional argument shown as ``REF`` / ``PATH...`` (``[REF]`` when optional), never as a Python type."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        return self.display_name_raw + ("..." if self.nargs != 1 else ""), record[1]


class _Option(TyperOption):
    """An option whose environment variable takes a comma-separated list when the option is repeatable."""

    def value_from_envvar(self, ctx: click.Context) -> str | list[str] | None:
        if self.multiple and not self.is_flag:
            raw = self.resolve_envvar_value(ctx)
            return None if raw is None else [v.strip() for v in raw.split(",") if v.strip()]
        return super().value_from_envvar(ctx)


def env_name(option: TyperOption) -> str:
    """``--foo-bar`` -> ``OCIART_FOO_BAR``: the environment variable every flag may come from."""
    long = max(option.opts, key=len)
    return ENV_PREFIX + long.lstrip("-").replace("-", "_").upper()


def _finish(command: click.Command) -> None:
    """Apply the CLI's conventions to one command: metavars, its example, environment variables."""
    example = EXAMPLES.get(command.name or "")
    if example and not command.epilog:
        command.epilog = f"Example:\n  {example}"
    for param in command.params:
        if isinstance(param, TyperArgument):
            param.__class__ = _Argument
            if param.metavar is None:
                param.metavar = ARG_METAVARS.get(param.name or "", (param.name or "").upper())
        elif isinstance(param, TyperOption):
            param.__class__ = _Option
            if param.name in ("help", "version"):
                continue
            long = max(param.opts, key=len)
            if not param.is_flag and param.metavar is None:
                param.metavar = METAVARS.get(long, long.lstrip("-").replace("-", "_").upper())
            if param.envvar is None:
                param.envvar = env_name(param)
                param.show_envvar = False  # the rule is written once in the README, not on every option


@lru_cache(maxsize=1)
def command() -> TyperGroup:
    """The command group behind ``ociart``, with :func:`_finish` applied to every command."""
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    todo: list[click.Command] = list(group.commands.values())
    while todo:  # command groups (``ociart audit …``) too
        sub = todo.pop()
        _finish(sub)
        if isinstance(sub, TyperGroup):
            todo.extend(sub.commands.values())
    return group


def _show_version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"ociart {__version__}")
        raise typer.Exit()


@app.callback(epilog="Example:\n  ociart push localhost:5000/models/bert:v1 ./bert --kind model")
def _main(
    version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """An artifact store for machine learning on OCI registries."""


# -- running: errors, --json errors, exit codes, interrupts ------------------------------------------------------
_signal_received: list[int] = []


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _signal_received.append(signum)
    raise KeyboardInterrupt


def _wants_json(argv: list[str]) -> bool:
    args = argv[: argv.index("--")] if "--" in argv else argv
    env = os.environ.get(ENV_PREFIX + "JSON", "").strip().lower()
    return "--json" in args or env in ("1", "true", "yes", "on", "y", "t")


def _fail(message: str, code: str, exit_code: int, as_json: bool, rejected: list[str] | None = None) -> int:
    """One line on stderr; with --json also an error object on stdout."""
    _err(f"error: {message}")
    if as_json:
        obj: dict[str, Any] = {"error": message, "code": code, "exit_code": exit_code}
        if rejected is not None:
            obj["rejected"] = rejected
        try:
            _out(obj)
        except OSError:
            pass
    return exit_code


def run(argv: list[str]) -> int:
    """Run the CLI; map every error to one line on stderr (and a JSON object under --json) and its exit code.

    Library errors exit with their class's code; a local ``OSError`` becomes :class:`~ociart.errors.LocalIOError`
    (or not-found); SIGINT/SIGTERM exit 130/143 with ``interrupted``.
    """
    as_json = _wants_json(argv)
    _signal_received.clear()
    previous: Callable[[int, FrameType | None], Any] | int | None = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        previous = None
    try:
        try:
            group = command()
            with group.make_context("ociart", list(argv)) as ctx:
                group.invoke(ctx)
            return 0
        except (KeyboardInterrupt, typer.Abort):
            raise Interrupted(_signal_received[-1] if _signal_received else signal.SIGINT) from None
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                return 1
            raise from_os_error(exc) from None
    except typer.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        if as_json:
            _out({"error": exc.format_message(), "code": "usage", "exit_code": exc.exit_code})
        exc.show()
        return exc.exit_code
    except OciartError as exc:
        return _fail(str(exc), exc.kind, exc.exit_code, as_json,
                     exc.rejected if isinstance(exc, VerificationError) else None)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


from . import fetch as _fetch  # noqa: E402,F401 - registers `ociart fetch`
from . import convert as _convert  # noqa: E402,F401 - registers `ociart convert`
from . import promote as _promote  # noqa: E402,F401 - registers `ociart promote`, `rollback`, `history`, `audit`
from . import crypt as _crypt  # noqa: E402,F401 - registers `ociart encrypt`, `ociart decrypt`
from . import ui as _ui  # noqa: E402,F401 - registers `ociart ui`
from . import gc as _gc  # noqa: E402,F401 - registers `ociart gc`
