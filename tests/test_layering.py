"""The architecture's layering, checked on the import graph (ast, no imports executed).

* ``ociart.targets`` (registry, layout, referrers, auth, ingest) sits on the foundations only: errors, wire formats,
  limits, file utilities, cooperative cancellation, reference parsing, text escaping. Nothing above it (transfer,
  packaging, lineage, signing, client, CLI).
* ``ociart.oci`` (wire formats) sits below the targets.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "ociart"
FOUNDATIONS = {"ociart.errors", "ociart.oci", "ociart.limits", "ociart.fsutil", "ociart.reference", "ociart.text",
               "ociart.cancel"}


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the ociart modules a file imports (relative imports resolved)."""
    module = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if path.name == "__init__.py":
        module = package
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name.startswith("ociart"):
                # ``from ..errors import X`` → ociart.errors.X; ``from .. import limits`` → ociart.limits
                found.update(f"{name}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ociart"))
    return found


def allowed(name: str, own: str) -> bool:
    return name.startswith(own + ".") or any(name == f or name.startswith(f + ".") for f in FOUNDATIONS)


@pytest.mark.parametrize("layer", ["targets", "oci"])
def test_lower_layers_import_nothing_above_them(layer: str) -> None:
    own = f"ociart.{layer}"
    bad: list[str] = []
    for path in sorted((PKG / layer).rglob("*.py")):
        for name in sorted(imported_modules(path)):
            if layer == "oci" and name.startswith("ociart.targets"):
                bad.append(f"{path.relative_to(PKG)} imports {name}")
            elif not allowed(name, own):
                bad.append(f"{path.relative_to(PKG)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_an_upward_import() -> None:
    """The scan is not vacuous: an upward import in a targets-like file is reported."""
    names = imported_modules(PKG / "targets" / "registry.py")
    assert any(n.startswith("ociart.errors.") for n in names) and all(allowed(n, "ociart.targets") for n in names)
    assert not allowed("ociart.transfer", "ociart.targets")
    assert not allowed("ociart.client", "ociart.targets")
    assert not allowed("ociart.signing.verify", "ociart.targets")
