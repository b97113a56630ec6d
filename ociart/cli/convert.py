"""``ociart convert SRC DST --as-image``: the image form of an artifact already in a store (docs/spec.md §7)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..errors import UsageError
from .app import (CaOpt, ConcOpt, EXAMPLES, InsecureOpt, JsonOpt, PassStdinOpt, PlainOpt, QuietOpt, UserOpt, _client,
                  _out, app)

EXAMPLES["convert"] = "ociart convert localhost:5000/models/bert:v1 localhost:5000/models/bert:v1-image --as-image"


@app.command()
def convert(
    src: Annotated[str, typer.Argument(help="The artifact (registry, embedded store or oci:DIR).")],
    dst: Annotated[str, typer.Argument(help="Where to push its image form (a tag).")],
    as_image: Annotated[bool, typer.Option(
        "--as-image", help="Convert to the image form (the one conversion there is; required).")] = False,
    mount_path: Annotated[Optional[str], typer.Option(
        "--mount-path", help="Directory of the files in the image (default /models).")] = None,
    platform: Annotated[list[str], typer.Option(
        "--platform", help="OS/ARCH (repeatable; default linux/amd64 and linux/arm64).")] = [],  # noqa: B006
    base: Annotated[Optional[str], typer.Option("--base", help="Base image whose layers come first.")] = None,
    no_link: Annotated[bool, typer.Option(
        "--no-link", help="Do not attach the two forms to each other as referrers.")] = False,
    username: UserOpt = None, password_stdin: PassStdinOpt = False, plain_http: PlainOpt = False,
    insecure: InsecureOpt = False, ca_file: CaOpt = None, concurrency: ConcOpt = 4, as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Push the image form of an artifact without its directory (layers streamed, nothing copied to disk)."""
    if not as_image:
        raise UsageError("convert needs --as-image (the image form is the one conversion there is)")
    with _client(username, password_stdin, plain_http, insecure, ca_file, concurrency, as_json, quiet) as c:
        desc = c.convert(src, dst, mount_path=mount_path, platforms=[p for v in platform for p in v.split(",") if p],
                         base=base, link=not no_link)
    if as_json:
        _out(desc)
    else:
        print(desc.digest)
