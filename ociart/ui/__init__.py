"""``ociart ui``: a local, read-only web view of a store (artifacts, files, lineage graph, signatures, audit log).

Needs the ``ui`` extra (``pip install 'ociart[ui]'``: starlette, jinja2, uvicorn, grandalf)."""

from __future__ import annotations

from ..errors import UsageError

EXTRA_HINT = "ociart ui needs the ui extra: pip install 'ociart[ui]'"


def require() -> None:
    """One clear line when the extra is not installed."""
    import importlib.util

    missing = [m for m in ("starlette", "jinja2", "uvicorn", "grandalf") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"{EXTRA_HINT} (missing: {', '.join(missing)})")
