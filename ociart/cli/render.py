"""Human-readable output (rich tables) for inspect."""

from __future__ import annotations

from typing import Any


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def print_inspection(info: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    m = info.manifest
    console.print(f"[bold]{info.reference}[/bold]")
    console.print(f"kind:         {info.kind}")
    console.print(f"mediaType:    {m.get('mediaType', '')}")
    if m.get("artifactType"):
        console.print(f"artifactType: {m['artifactType']}")
    console.print(f"digest:       {info.descriptor.digest}  ({_size(info.descriptor.size)})")
    if "config" in m:
        cfg = m["config"]
        console.print(f"config:       {cfg['mediaType']}  {cfg['digest']}  ({_size(cfg['size'])})")
    for k, v in sorted((m.get("annotations") or {}).items()):
        console.print(f"  {k} = {v}")
    if "layers" in m:
        table = Table("file", "part", "mediaType", "size", "digest", title="layers", title_justify="left")
        for f in info.files:
            table.add_row(f.path, f.category or "", f.mediaType, _size(f.size), f.digest[:19])
        console.print(table)
        total = sum(f.size for f in info.files)
        console.print(f"{len(info.files)} layer(s), {_size(total)}")
    if "manifests" in m:
        table = Table("digest", "mediaType", "artifactType", "platform", "size", title="manifests",
                      title_justify="left")
        for child in m["manifests"]:
            plat = child.get("platform") or {}
            table.add_row(child["digest"][:19], child["mediaType"], child.get("artifactType", ""),
                          "/".join(filter(None, [plat.get("os"), plat.get("architecture")])), _size(child["size"]))
        console.print(table)


def _label(n: Any) -> str:
    text = f"[bold]{n.kind}[/bold] {n.name}"
    if n.digest:
        text += f"  {n.digest[:19]}"
    role = n.details.get("role")
    if role:
        text += f"  (as {role})"
    if n.kind == "params":
        text += "  " + ", ".join(f"{k}={v}" for k, v in sorted(n.details.items()))
    elif n.details.get("metrics"):
        text += "  " + ", ".join(f"{k}={v}" for k, v in sorted(n.details["metrics"].items()))
    if n.details.get("run"):
        text += f"  run {n.details['run']}"
    for rep in n.details.get("reports") or []:
        metrics = ", ".join(f"{k}={v}" for k, v in sorted((rep.get("metrics") or {}).items()))
        text += f"\n  evaluated by report {rep['digest'][:19]}" + (f": {metrics}" if metrics else "")
    return text


def print_lineage(root: Any, downstream: bool) -> None:
    from rich.console import Console
    from rich.tree import Tree

    tree = Tree(_label(root))

    def add(branch: Any, node: Any) -> None:
        for child in node.children:
            add(branch.add(_label(child)), child)

    add(tree, root)
    Console(soft_wrap=True).print(("built into:\n" if downstream else "built from:\n") if root.children else "", tree)


def print_verification(result: Any) -> None:
    """Verified signatures and attestations as a table on stderr; the digest on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    table = Table(title=f"verified {result.reference}", show_edge=False)
    for col in ("kind", "format", "predicate type", "signed by", "stored in"):
        table.add_column(col, overflow="fold")
    for kind, items in (("signature", result.signatures), ("attestation", result.attestations)):
        for v in items:
            table.add_row(kind, v.format, v.predicateType, v.signer, v.source[:19])
    console.print(table)
    if result.rejected:
        console.print(f"{len(result.rejected)} other signature(s) not accepted:")
        for reason in result.rejected:
            console.print(f"  {reason}", markup=False, highlight=False)
    print(result.digest)
