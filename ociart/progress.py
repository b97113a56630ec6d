"""Transfer progress on stderr for transfers over a few MB.

On a terminal: rich bars. Otherwise (CI logs, pipes): a plain line about every ``OCIART_PROGRESS_INTERVAL`` seconds
(default 5) with the percentage, bytes done of the total and the rate, summed over every transfer of the command,
and a last line when it ends. ``enabled=False`` (``--quiet``, ``--json``, the library's default) prints nothing.

With ``log_format="json"`` (``--log-format json``) the same object is the one structured-progress mechanism: it
writes one JSON object per event on stderr instead (``{"event", "time", ...}``; events: ``resolved``, ``verified``,
``blob_started``, ``blob_finished`` with ``bytes`` and ``seconds``, ``warning``, ``done`` with the totals), for
cluster log pipelines. Events are written whatever ``enabled`` says; bars and lines never appear in that format.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from .text import escape

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress

THRESHOLD = 4 << 20
DEFAULT_INTERVAL = 5.0
#: The values of ``--log-format``.
LOG_FORMATS = ("text", "json")


def human_size(n: float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


class Progress:
    def __init__(self, enabled: bool | None = None, *, stream: TextIO | None = None,
                 interval: float | None = None, log_format: str = "text") -> None:
        """``enabled``: False prints nothing; True or None shows progress (bars on a terminal, lines otherwise).
        ``log_format="json"``: JSON event lines instead (:meth:`event`), whatever ``enabled`` says."""
        if log_format not in LOG_FORMATS:
            from .errors import UsageError

            raise UsageError(f"unknown --log-format {log_format!r}: choose from {', '.join(LOG_FORMATS)}")
        self.json = log_format == "json"
        self.enabled = enabled is not False and not self.json
        self._stream = stream
        if interval is None:
            try:
                interval = float(os.environ.get("OCIART_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
            except ValueError:
                interval = DEFAULT_INTERVAL
        self.interval = interval
        self._rich: RichProgress | None = None
        self._lock = threading.Lock()
        self._total = 0
        self._done = 0
        self._started = 0.0
        self._last = 0.0
        self._printed = False

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        if self._printed and exc_type is None:
            self._line(final=True)

    def event(self, event: str, /, **fields: object) -> None:
        """One JSON event line on the stream (``--log-format json``); nothing in the text format."""
        if not self.json:
            return
        line = json.dumps({"event": event, "time": datetime.now(UTC).isoformat(timespec="milliseconds"), **fields},
                          separators=(",", ":"), default=str)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def warn(self, message: str, **fields: object) -> None:
        """A warning: a ``warning`` event in the JSON format, else a ``warning:`` line (when quiet or disabled: the
        ``ociart`` logger)."""
        if self.json:
            self.event("warning", message=message, **fields)
            return
        if not self.enabled:
            import logging

            logging.getLogger("ociart").warning("%s", message)
            return
        with self._lock:
            self.stream.write(f"warning: {escape(message)}\n")
            self.stream.flush()

    @contextmanager
    def transfer(self, label: str, digest: str, total: int) -> Iterator[Callable[[int], None] | None]:
        """One blob transfer: yields the byte callback for the fetcher (or None); in the JSON format emits
        ``blob_started`` and, when the block ends without error, ``blob_finished`` with bytes and seconds."""
        if not self.json:
            yield self.task(label, total)
            return
        moved = [0]

        def count(n: int) -> None:
            moved[0] += n

        self.event("blob_started", digest=digest, name=label, size=total)
        started = time.monotonic()
        yield count
        self.event("blob_finished", digest=digest, name=label, size=total, bytes=moved[0],
                   seconds=round(time.monotonic() - started, 3))

    def task(self, label: str, total: int) -> Callable[[int], None] | None:
        """A callback advancing the display by the bytes transferred, or None when nothing is shown."""
        if not self.enabled or total < THRESHOLD:
            return None
        if self.stream.isatty():
            return self._rich_task(label, total)
        with self._lock:
            if not self._started:
                self._started = self._last = time.monotonic()
            self._total += total
        return self._advance

    def _advance(self, n: int) -> None:
        with self._lock:
            self._done += n
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            self._last = now
            self._line()

    def _line(self, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        pct = 100.0 * self._done / self._total if self._total else 100.0
        word = "done" if final else "progress"
        self.stream.write(f"{word}: {pct:.0f}% {human_size(self._done)} / {human_size(self._total)}, "
                          f"{human_size(self._done / elapsed)}/s\n")
        self.stream.flush()
        self._printed = True

    def _rich_task(self, label: str, total: int) -> Callable[[int], None]:
        if self._rich is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress as RichProgress,
                TextColumn,
                TransferSpeedColumn,
            )

            # labels are artifact titles: escaped and never read as markup
            self._rich = RichProgress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), console=Console(file=self.stream), transient=True)
            self._rich.start()
        rich = self._rich
        task_id = rich.add_task(escape(label)[:40], total=total)
        return lambda n: rich.update(task_id, advance=n)
