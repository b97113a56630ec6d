"""Shared by the benchmark scripts: load ``transfer.py`` (the registry starter and measurement helpers) as a module,
and log progress to stderr."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load_transfer() -> Any:
    spec = importlib.util.spec_from_file_location("ociart_bench_transfer", HERE / "transfer.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
