"""Cooperative cancellation of the transfer fan-out (:func:`ociart.transfer.parallel`).

Each ``parallel`` call runs its tasks under a :class:`Token` (a child of the caller's, so nested fan-outs stop
together). When the waiting caller is interrupted (SIGINT, SIGTERM) or a task fails, the token is set, and every
running blob transfer notices it between two chunks (:func:`check` in the download, upload-source and copy loops)
and stops with :class:`~ociart.errors.Interrupted`: an interrupt takes effect within about one chunk, not when the
running blobs finish. Outside a fan-out :func:`check` does nothing (the interrupt reaches that thread directly).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar, copy_context
from typing import TypeVar

from .errors import Interrupted

T = TypeVar("T")
R = TypeVar("R")


class Token:
    def __init__(self, parent: Token | None = None) -> None:
        self._event = threading.Event()
        self._parent = parent

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set() or (self._parent is not None and self._parent.cancelled)


_current: ContextVar[Token | None] = ContextVar("ociart_cancel", default=None)


def current() -> Token | None:
    return _current.get()


def check() -> None:
    """Raise :class:`~ociart.errors.Interrupted` when the fan-out this thread works for was cancelled."""
    token = _current.get()
    if token is not None and token.cancelled:
        raise Interrupted()


def bind(token: Token, fn: Callable[[T], R]) -> Callable[[T], R]:
    """``fn`` run under ``token`` (in a copy of the caller's context, so other context variables carry over)."""
    ctx = copy_context()

    def run(item: T) -> R:
        def inner() -> R:
            _current.set(token)
            return fn(item)

        return ctx.copy().run(inner)

    return run
