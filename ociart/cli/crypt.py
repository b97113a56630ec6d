"""``ociart encrypt`` and ``ociart decrypt``: ocicrypt layer encryption of an artifact or image already stored."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import (CaOpt, ConcOpt, DecKeyOpt, EncFilterOpt, InsecureOpt, JsonOpt, PassStdinOpt, PlainOpt, QuietOpt,
                  RecipientOpt, UserOpt, _client, _out, app)


@app.command()
def encrypt(
    src: Annotated[str, typer.Argument(help="Artifact or image to encrypt (registry, embedded store or oci:DIR).")],
    dst: Annotated[str, typer.Argument(help="Where to write the encrypted manifest (a tag; the digest is new).")],
    encrypt_recipient: RecipientOpt = [],  # noqa: B006
    encrypt_filter: EncFilterOpt = [],  # noqa: B006
    decryption_key: DecKeyOpt = [],  # noqa: B006
    rotate: Annotated[bool, typer.Option(
        "--rotate", help="Re-encrypt already encrypted layers with fresh keys (revokes removed recipients).")] = False,
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, concurrency: ConcOpt = 4, as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Encrypt layers for exactly the given recipients; prints the new manifest digest.

    Plaintext layers the filter selects are encrypted. Already encrypted layers need --decryption-key (one current
    recipient's key): their layer keys are re-wrapped for the new recipients and the blobs are shared, or, with
    --rotate, they are re-encrypted with fresh keys."""
    with _client(username, password_stdin, plain_http, insecure, ca_file, concurrency, as_json, quiet) as c:
        desc = c.encrypt(src, dst, recipients=encrypt_recipient, filters=encrypt_filter,
                         decryption_keys=decryption_key, rotate=rotate)
    if as_json:
        _out(desc)
    else:
        print(desc.digest)


@app.command()
def decrypt(
    src: Annotated[str, typer.Argument(help="Encrypted artifact or image.")],
    dst: Annotated[str, typer.Argument(help="Where to write the decrypted manifest (a tag; the digest is new).")],
    decryption_key: DecKeyOpt = [],  # noqa: B006
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, concurrency: ConcOpt = 4, as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Replace every encrypted layer by its plaintext (HMAC- and digest-checked); prints the new manifest digest."""
    with _client(username, password_stdin, plain_http, insecure, ca_file, concurrency, as_json, quiet) as c:
        desc = c.decrypt(src, dst, decryption_keys=decryption_key)
    if as_json:
        _out(desc)
    else:
        print(desc.digest)
