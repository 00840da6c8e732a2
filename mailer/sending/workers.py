"""Several sending processes on one machine (`--workers N`), to use more than one core.

Rendering and the SMTP client are CPU-bound Python: one process uses one core. With N workers
the run forks N-1 children after the deliveries are queued; each opens its own database
connection and its own SMTP connections and claims batches like any other worker (leases make
that safe: it is the same mechanism as several machines sharing PostgreSQL). The connections
and the rate are shared out: N workers with --concurrency K and --rate R open K in all and
send at R in all.

The parent draws the progress of all of them (each child sends its tally every flush), stops
them all on Ctrl-C or SIGTERM (the signal is passed on), and reports the first whole-run error
any of them met. A child that dies leaves its claimed deliveries to expire into `uncertain`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queue_module
import signal
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any

from sqlalchemy import Engine

from mailer.core.errors import MailerError, WorkerError, WorkerReportedError
from mailer.messages.preflight import PreflightReport
from mailer.sending.dispatch import Dispatcher, ProgressFn, Tally
from mailer.store.engine import open_engine

# (worker index, its engine, its share of the connections, of the rate) -> its dispatcher
Build = Callable[[int, Engine, int, float], Dispatcher]
Run = Callable[[Dispatcher, int], Tally]
# (worker index, worker count, its engine, progress or None) -> the report on its share
Check = Callable[[int, int, Engine, Callable[[int, int], None] | None], PreflightReport]
# What a child does: (its index, its own engine, the channel to the parent) -> its result
Work = Callable[[int, Engine, Any], Any]
_COUNTS = ("sent", "deferred", "failed", "uncertain", "skipped", "released", "requeued", "lost")


def shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` whole shares, each at least 1, as even as can be."""
    base, extra = divmod(total, parts)
    return [max(1, base + (1 if index < extra else 0)) for index in range(parts)]


def _tally(data: dict[str, Any]) -> Tally:
    names = {f.name for f in fields(Tally)}
    return Tally(**{k: v for k, v in data.items() if k in names})


def _child(index: int, url: str, work: Work, channel: Any) -> None:
    """A forked worker: its own process group (a Ctrl-C reaches the parent only, which
    passes it on once: twice would read as "leave at once"), its own database connections;
    its result or its MailerError goes back through `channel`."""
    os.setpgid(0, 0)
    engine = open_engine(url)
    try:
        channel.put(("done", index, work(index, engine, channel)))
    except MailerError as exc:
        channel.put(("error", index, (exc.exit_code, exc.message, exc.hint)))
    finally:
        engine.dispose()


class _Children:
    """workers-1 forked children running `work`, and the channel they report on."""

    def __init__(self, engine: Engine, workers: int, work: Work) -> None:
        context = multiprocessing.get_context("fork")
        self.channel: Any = context.Queue()
        url = engine.url.render_as_string(hide_password=False)
        engine.dispose()  # the children must not inherit open database connections
        self.processes = [
            context.Process(target=_child, args=(index, url, work, self.channel), daemon=True)
            for index in range(1, workers)
        ]
        for process in self.processes:
            process.start()

    def messages(self, timeout: float | None = None) -> list[tuple[str, int, Any]]:
        """What the children sent: everything waiting, or the first within `timeout`."""
        found = []
        with contextlib.suppress(queue_module.Empty):
            if timeout is not None:
                found.append(self.channel.get(timeout=timeout))
            while True:
                found.append(self.channel.get_nowait())
        return found

    def died(self) -> bool:
        return any(p.exitcode not in (None, 0) for p in self.processes)

    def signal(self, signum: int) -> None:
        for process in self.processes:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    def stop(self, wait: float) -> None:
        for process in self.processes:
            process.join(timeout=wait)
            if process.is_alive():
                process.kill()


def run_workers(
    engine: Engine,
    workers: int,
    concurrency: int,
    total: int,
    build: Build,
    run: Run,
    progress: ProgressFn | None,
) -> Tally:
    """Run `workers` dispatchers (this process and workers-1 forked children); sum them."""
    connections = shares(concurrency, workers)

    def work(index: int, child_engine: Engine, channel: Any) -> dict[str, Any]:
        def report(tally: Tally) -> None:
            channel.put(("tally", index, asdict(tally)))

        dispatcher = build(index, child_engine, connections[index],
                           connections[index] / concurrency)
        dispatcher.progress = report
        dispatcher.leave_on_second_signal = False  # the parent decides, and kills
        return asdict(run(dispatcher, total))

    children = _Children(engine, workers, work)
    latest: dict[int, Tally] = {}
    finished: dict[int, Tally] = {}
    errors: list[MailerError] = []

    def drain(timeout: float | None = None) -> None:
        for kind, index, data in children.messages(timeout):
            if kind == "error":
                errors.append(WorkerReportedError(*data))
                finished.setdefault(index, Tally())
            else:
                latest[index] = _tally(data)
                if kind == "done":
                    finished[index] = latest[index]

    def merged(own: Tally) -> Tally:
        drain()
        combined = Tally(total=own.total, started=own.started, interrupted=own.interrupted,
                         signal=own.signal)
        for tally in [own, *latest.values()]:
            for name in _COUNTS:
                setattr(combined, name, getattr(combined, name) + getattr(tally, name))
        return combined

    def report(own: Tally) -> None:
        if progress is not None:
            progress(merged(own))

    signals = 0

    def forward(signum: int, _frame: Any) -> None:
        """The first signal asks the children to stop cleanly; a second one ends them."""
        nonlocal signals
        signals += 1
        children.signal(signum if signals == 1 else signal.SIGKILL)

    own_dispatcher = build(0, engine, connections[0], connections[0] / concurrency)
    own_dispatcher.progress = report
    own_dispatcher.on_signal = lambda signum: forward(signum, None)  # during the loop
    previous = signal.signal(signal.SIGTERM, forward)  # before and after it
    own: Tally | None = None
    try:
        try:
            own = run(own_dispatcher, total)
        except MailerError as exc:
            errors.insert(0, exc)
        signal.signal(signal.SIGTERM, forward)  # the loop's removal reset it to the default
        while any(process.is_alive() for process in children.processes):
            drain(timeout=0.1)
        children.stop(wait=5)  # all have exited: reap them
        drain()
    finally:
        signal.signal(signal.SIGTERM, previous)
    for index, process in enumerate(children.processes, start=1):
        if index not in finished and process.exitcode != 0:
            errors.append(WorkerError(
                f"a sending worker process died (exit status {process.exitcode}); the "
                "deliveries it held are resent by `mailer retry` once their lease expires"
            ))
    if errors:
        raise errors[0]
    result = merged(own or Tally())
    every = [own or Tally(), *finished.values()]
    result.interrupted = any(t.interrupted for t in every)
    result.signal = next((t.signal for t in every if t.signal), 0)
    return result


def check_in_workers(
    engine: Engine,
    workers: int,
    check: Check,
    progress: Callable[[int, int], None] | None,
) -> PreflightReport:
    """The pre-flight of the whole list, its shares checked by `workers` processes at once."""
    children = _Children(
        engine, workers, lambda index, child_engine, _channel: check(index, workers,
                                                                     child_engine, None)
    )

    def scaled(done: int, total: int) -> None:
        if progress is not None:
            progress(min(done * workers, total), total)  # this process sees its share only

    finished = False
    try:
        report = check(0, workers, engine, scaled)
        results: dict[int, PreflightReport] = {}
        while len(results) < len(children.processes):
            for kind, index, data in children.messages(timeout=0.5):
                if kind == "error":
                    raise WorkerReportedError(*data)
                results[index] = data
            if len(results) < len(children.processes) and children.died():
                raise WorkerError("a pre-flight worker process died")
        for index in sorted(results):
            report.merge(results[index])
        finished = True
    finally:
        # Interrupted (Ctrl-C) or failed: the other checks are not wanted.
        children.stop(wait=5 if finished else 0)
    return report
