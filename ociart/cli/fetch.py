"""``ociart fetch``: a thin shell over :func:`ociart.deploy.fetch.fetch` (the init-container / KServe entrypoint)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from .app import (CaOpt, ConcOpt, DecKeyOpt, IdentityOpt, IdentityReOpt, InsecureOpt, IssuerOpt, IssuerReOpt, JsonOpt,
                  LogFormatOpt, MirrorOpt, PassStdinOpt, PlainOpt, PolicyOpt, QuietOpt, RequireOpt, StreamsOpt, TrustOpt,
                  UserOpt, _client, _err, _out, _trust, app)


@app.command()
def fetch(
    ref: Annotated[Optional[str], typer.Argument(
        envvar=["OCIART_REF", "MODELKIT_REF"], show_envvar=False,
        help="Artifact to fetch: REF or oci+ociart://REF (KServe's SRC_URI).")] = None,
    dest: Annotated[Optional[Path], typer.Argument(
        help="Directory to fetch into (KServe's DEST_PATH; same as -o).")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", envvar=["OCIART_OUTPUT", "UNPACK_PATH"], help="Directory to fetch into.")] = None,
    include: Annotated[list[str], typer.Option("--include", help="Only files matching this glob (repeatable).")] = [],  # noqa: B006
    filter_: Annotated[list[str], typer.Option(
        "--filter", help="Only these parts: weights,config,docs,code,dataset (comma-separated or repeated).")] = [],  # noqa: B006
    verify_key: Annotated[list[str], typer.Option(
        "--verify-key", envvar=["OCIART_VERIFY_KEY", "COSIGN_KEY"],
        help="Verify the signature with this public key (repeatable).")] = [],  # noqa: B006
    policy: PolicyOpt = None,
    identity: IdentityOpt = None, identity_re: IdentityReOpt = None, issuer: IssuerOpt = None,
    issuer_re: IssuerReOpt = None, trust_config: TrustOpt = None, require: RequireOpt = [],  # noqa: B006
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Fetch without verifying signatures.")] = False,
    verify_files: Annotated[bool, typer.Option(
        "--verify-files", help="Re-hash the files of an up-to-date DIR instead of checking size and mtime.")] = False,
    no_replace: Annotated[bool, typer.Option(
        "--no-replace", help="Refuse when DIR holds another fetched digest (default: replace its files).")] = False,
    cache: Annotated[Optional[Path], typer.Option("--cache", help="Node cache directory (shared, verified).")] = None,
    link: Annotated[bool, typer.Option(
        "--link", help="Hardlink files from the cache (same filesystem; they share the cache's inodes).")] = False,
    cache_max_size: Annotated[Optional[int], typer.Option(
        "--cache-max-size", min=0, help="Evict least recently used unreferenced cache blobs down to BYTES.")] = None,
    decryption_key: DecKeyOpt = [],  # noqa: B006
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, concurrency: ConcOpt = 4, as_json: JsonOpt = False,
    quiet: QuietOpt = False, log_format: LogFormatOpt = "text", mirror: MirrorOpt = [],  # noqa: B006
    max_streams: StreamsOpt = None,
) -> None:
    """Fetch an artifact into DIR for serving: resolve once, verify, fetch by digest, atomically and idempotently.

    Writes DIR/.ociart/fetched.json last. Verification is required: --policy, --verify-key or
    --certificate-identity/--certificate-oidc-issuer; --no-verify fetches unverified. kitops-init's MODELKIT_REF,
    UNPACK_PATH, UNPACK_FILTER and COSIGN_KEY are accepted too."""
    from ..deploy.fetch import kitops_filters

    if ref is None:
        raise UsageError("no reference: give REF (or OCIART_REF / MODELKIT_REF)")
    if dest is not None and output is not None and dest != output:
        raise UsageError(f"two destinations: {dest} and -o {output}")
    out = dest if dest is not None else output
    if out is None:
        raise UsageError("no destination: give DIR or -o DIR (or OCIART_OUTPUT / UNPACK_PATH)")
    if not filter_ and os.environ.get("UNPACK_FILTER", "").strip():
        filter_ = kitops_filters(os.environ["UNPACK_FILTER"])
    trust, pol = None, None
    if verify_key or policy is not None or any(v is not None for v in (identity, identity_re, issuer, issuer_re)):
        trust, pol = _trust(verify_key, identity, identity_re, issuer, issuer_re, trust_config, policy)
    with _client(username, password_stdin, plain_http, insecure, ca_file, concurrency, as_json, quiet,
                 log_format, mirror, max_streams) as c:
        result = c.fetch(ref, out, trust=trust, policy=pol, require_attestations=require, verify=not no_verify,
                         filters=filter_, include=include, verify_files=verify_files, replace=not no_replace,
                         cache=cache, link=link, cache_max_size=cache_max_size, decryption_keys=decryption_key)
    if as_json:
        _out(result)
        return
    if log_format != "json":
        if result.up_to_date:
            _err(f"{out} already holds {result.digest}")
        else:
            if result.replaced:
                _err(f"replaced {len(result.replaced)} file(s) of the previous fetch")
            _err(f"fetched {len(result.files)} file(s) into {out}" +
                 (f" ({len(result.cache_hits)} blob(s) from the cache)" if result.cache_hits else ""))
    print(result.digest)
