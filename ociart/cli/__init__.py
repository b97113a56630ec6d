"""The ``ociart`` command: parsing, printing and exit codes only; the work is done by :mod:`ociart.client`."""

from __future__ import annotations

import sys


def main() -> None:
    from .app import run

    sys.exit(run(sys.argv[1:]))
