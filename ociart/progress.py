"""Transfer progress on stderr (rich), shown only on a TTY and for transfers over a few MB."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

THRESHOLD = 4 << 20


class Progress:
    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._rich: Any = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def task(self, label: str, total: int) -> Callable[[int], None] | None:
        """A callback advancing a bar, or None when no bar is shown."""
        if not self.enabled or total < THRESHOLD:
            return None
        if self._rich is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress as RichProgress,
                TextColumn,
                TransferSpeedColumn,
            )

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), console=Console(stderr=True), transient=True)
            self._rich.start()
        task_id = self._rich.add_task(label[:40], total=total)
        rich = self._rich
        return lambda n: rich.update(task_id, advance=n)
