"""Stopping a run on a signal, in one place: the first Ctrl-C or SIGTERM stops claiming (here
and, passed on, in the --workers processes) and lets what is in flight finish and be recorded,
the rest released; a second one leaves at once.

A forked worker runs in its own process group, so a Ctrl-C at the terminal reaches the parent
only, which passes it on once (twice would read as "leave at once"); a worker leaves the
second signal to its parent, which kills it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

from mailer.sending.dispatch import Dispatcher
from mailer.sending.options import Tally
from mailer.sending.workers import SendingWorkers

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopping:
    """What a signal does to one process of a run, wherever it lands in it."""

    def __init__(self) -> None:
        self.signals: list[int] = []  # received so far, the first one first
        self.in_worker = False  # a forked child: a second signal is its parent's to act on
        self._dispatcher: Dispatcher | None = None  # the one running in this process
        self._workers: SendingWorkers | None = None  # this process's children, while they run

    def on_signal(self, signum: int) -> None:
        self.signals.append(signum)
        again = len(self.signals) > 1
        if self._workers is not None:
            self._workers.signal(signal.SIGKILL if again else signum)
        if not again:
            if self._dispatcher is not None:
                self._dispatcher.interrupt(signum)
            return
        if self.in_worker:
            return  # the parent decides, and kills
        # Leave now, without waiting for a slow relay. What is held stays `sending` and
        # becomes `uncertain` when its lease expires: safe.
        os.write(2, b"Stopped at once: the deliveries in flight become uncertain "
                    b"and `mailer retry` resends them once their lease expires.\n")
        os._exit(128 + signum)

    async def run(self, dispatcher: Dispatcher, total: int) -> Tally:
        """Run this process's dispatcher, the event loop handling the signals meanwhile."""
        self._dispatcher = dispatcher
        if self.signals:
            dispatcher.interrupt(self.signals[0])  # signalled already: claim nothing
        try:
            with self._loop_handlers():
                return await dispatcher.run(total)
        finally:
            self._dispatcher = None

    @contextlib.contextmanager
    def passing_on(self, workers: SendingWorkers) -> Iterator[None]:
        """While this process has workers: signals are passed on to them, outside this
        process's own loop too (before it starts, while the children finish)."""
        self._workers = workers
        previous: dict[signal.Signals, Any] = {}
        for signum in SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: no handler
                previous[signum] = signal.signal(signum, self._on_process_signal)
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            self._workers = None

    def _on_process_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.on_signal(signum)

    @contextlib.contextmanager
    def _loop_handlers(self) -> Iterator[None]:
        """The event loop's own handlers, so that a signal wakes it up."""
        loop = asyncio.get_running_loop()
        installed = []
        for signum in SIGNALS:
            try:
                loop.add_signal_handler(signum, self.on_signal, signum)
                installed.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (tests call this from threads): no handler
        try:
            yield
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
                if self._workers is not None:
                    # Removing reset it to the default: the children still need it passed on.
                    signal.signal(signum, self._on_process_signal)
