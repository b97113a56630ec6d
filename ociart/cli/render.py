"""Human-readable output for inspect, lineage and verify.

Each table goes to one stream (stdout or stderr). When that stream is a terminal it is a rich table or tree; when it
is not (a pipe, a file, CI logs) it is plain text at full width: aligned columns, full digests, no box drawing, no
markup, nothing cut at 80 columns.

Artifact text (titles, annotations, names, tags, signer identities, reasons) is never interpreted: every string goes
through :func:`escape` (the one escaping function, :mod:`ociart.text`), so control characters show as ``\\x1b``-style
escapes, and rich consoles are created with markup, emoji and highlighting off (``[/]`` in an annotation is text).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from ..progress import human_size as _size
from ..text import escape

if TYPE_CHECKING:
    from rich.console import Console

    from ..client import Inspection
    from ..lineage.graph import Node
    from ..listing import Listing
    from ..signing.results import Verification


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _digest(d: str, tty: bool) -> str:
    return d[:19] if tty else d


def table(stream: TextIO, title: str | None, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table on ``stream``: rich on a terminal, else plain aligned columns (two spaces apart, never cut)."""
    if _is_tty(stream):
        from rich.table import Table

        t = Table(*headers, title=escape(title) if title else None, title_justify="left")
        for col in t.columns:
            col.overflow = "fold"
        for row in rows:
            t.add_row(*(escape(cell) for cell in row))
        _console(stream).print(t)
        return
    rows = [tuple(escape(cell) for cell in row) for row in rows]
    title = escape(title) if title else title
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    if title:
        stream.write(f"{title}:\n")
    for row in (headers, *rows):
        stream.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _console(stream: TextIO) -> "Console":
    from rich.console import Console

    return Console(file=stream, soft_wrap=True, markup=False, emoji=False, highlight=False)


def print_inspection(info: Inspection, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    tty = _is_tty(out)
    m = info.manifest
    lines = [info.reference, f"kind:         {info.kind}", f"mediaType:    {m.get('mediaType', '')}"]
    if m.get("artifactType"):
        lines.append(f"artifactType: {m['artifactType']}")
    lines.append(f"digest:       {info.descriptor.digest}  ({_size(info.descriptor.size)})")
    cfg = m.get("config")
    if isinstance(cfg, dict):
        size = _size(int(str(cfg.get("size", 0))))
        lines.append(f"config:       {cfg.get('mediaType')}  {cfg.get('digest')}  ({size})")
    if info.form:
        lines.append(f"form:         {info.form}" + (f" (files under {info.mount_path})" if info.mount_path else ""))
    for link in info.links:
        other = "image form" if link.artifactType.endswith("image-form.v1") else "artifact form"
        lines.append(f"linked:       {other} {link.reference or link.digest}")
    annotations = m.get("annotations")
    if isinstance(annotations, dict):
        lines += [f"  {k} = {v}" for k, v in sorted(annotations.items())]
    out.write("\n".join(escape(line) for line in lines) + "\n")
    if "layers" in m or info.form == "image":
        rows = [(f.path, f.category or "", f.mediaType, _size(f.size), _digest(f.digest, tty)) for f in info.files]
        encrypted = [f for f in info.files if f.encrypted]
        if encrypted:  # ocicrypt layers: which, and for how many recipients (read without a key)
            table(out, "layers", ("file", "part", "mediaType", "size", "digest", "encryption"),
                  [(*row, f"encrypted ({f.recipients} recipient{'s' if f.recipients != 1 else ''})"
                    if f.encrypted else "") for row, f in zip(rows, info.files, strict=True)])
        else:
            table(out, "layers", ("file", "part", "mediaType", "size", "digest"), rows)
        out.write(f"{len(info.files)} layer(s), {_size(sum(f.size for f in info.files))}"
                  + (f", {len(encrypted)} encrypted" if encrypted else "") + "\n")
    children = m.get("manifests")
    if isinstance(children, list):
        rows = []
        for child in children:
            if not isinstance(child, dict):
                continue
            plat = child.get("platform")
            plat = plat if isinstance(plat, dict) else {}
            rows.append((_digest(str(child.get("digest", "")), tty), str(child.get("mediaType", "")),
                         str(child.get("artifactType", "")),
                         "/".join(str(p) for p in (plat.get("os"), plat.get("architecture")) if p),
                         _size(int(str(child.get("size", 0))))))
        table(out, "manifests", ("digest", "mediaType", "artifactType", "platform", "size"), rows)


def _label(n: Node, tty: bool) -> str:
    """The node's lines, each escaped; the line breaks between them are ours."""
    first, *more = _label_lines(n, tty)
    return "\n".join([escape(first), *(f"  {escape(line)}" for line in more)])


def _label_lines(n: Node, tty: bool) -> list[str]:
    text = f"{n.kind} {n.name}"
    if n.digest:
        text += f"  {_digest(n.digest, tty)}"
    role = n.details.get("role")
    if role:
        text += f"  (as {role})"
    if n.kind == "params":
        text += "  " + ", ".join(f"{k}={v}" for k, v in sorted(n.details.items()))
    elif n.details.get("metrics"):
        text += "  " + ", ".join(f"{k}={v}" for k, v in sorted(n.details["metrics"].items()))
    if n.details.get("run"):
        text += f"  run {n.details['run']}"
    lines = [text]
    for rep in n.details.get("reports") or []:
        metrics = ", ".join(f"{k}={v}" for k, v in sorted((rep.get("metrics") or {}).items()))
        lines.append(f"evaluated by report {_digest(str(rep['digest']), tty)}" + (f": {metrics}" if metrics else ""))
    return lines


def print_lineage(root: Node, downstream: bool, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    tty = _is_tty(out)
    heading = ("built into:" if downstream else "built from:") if root.children else ""
    if tty:
        from rich.text import Text
        from rich.tree import Tree

        tree = Tree(Text(_label(root, tty)))

        def add(branch: Tree, node: Node) -> None:
            for child in node.children:
                add(branch.add(Text(_label(child, tty))), child)

        add(tree, root)
        console = _console(out)
        if heading:
            console.print(heading)
        console.print(tree)
        return
    if heading:
        out.write(heading + "\n")

    def walk(node: Node, depth: int) -> None:
        pad = "  " * depth
        out.write("\n".join(pad + line for line in _label(node, tty).split("\n")) + "\n")
        for child in node.children:
            walk(child, depth + 1)

    walk(root, 0)


def print_verification(result: Verification, stream: TextIO | None = None) -> None:
    """Verified signatures and attestations as a table on stderr; the digest on stdout."""
    err = stream or sys.stderr
    tty = _is_tty(err)
    rows = [(kind, v.format, v.predicateType, v.signer, _digest(v.source, tty))
            for kind, items in (("signature", result.signatures), ("attestation", result.attestations))
            for v in items]
    table(err, f"verified {result.reference}", ("kind", "format", "predicate type", "signed by", "stored in"), rows)
    if result.rejected:
        err.write(f"{len(result.rejected)} other signature(s) not accepted:\n")
        for reason in result.rejected:
            err.write(f"  {escape(reason)}\n")
    print(result.digest)


def _printable(text: str) -> str:
    """Names and annotations come from the store: control characters are shown escaped, never sent raw."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def print_listing(listing: Listing) -> None:
    """One line per artifact on stdout — ``repo:tag,tag``, digest, kind, created, size — in aligned columns that
    are never cut; the count and total on stderr."""
    rows = []
    for a in listing.artifacts:
        name = _printable(a.repository)
        tags = ",".join(_printable(t) for t in a.tags) or "<none>"
        ref = f"{name}:{tags}" if name else tags
        rows.append([ref, a.digest, _printable(a.kind), _printable(a.created or "-"), _size(a.size)])
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(5)]
    for r in rows:
        cells = [r[i].ljust(widths[i]) for i in range(4)] + [r[4].rjust(widths[4])]
        sys.stdout.write("  ".join(cells) + "\n")
    where = _printable(listing.location)
    sys.stderr.write(f"{len(rows)} artifact(s) in {len(listing.repositories)} repositor"
                     f"{'y' if len(listing.repositories) == 1 else 'ies'} of {where}; {_size(listing.total)} "
                     f"in all (shared blobs counted once)\n")
