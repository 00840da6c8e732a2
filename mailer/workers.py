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

from mailer.dispatch import Dispatcher, ProgressFn, Tally
from mailer.errors import MailerError, WorkerError
from mailer.preflight import PreflightReport
from mailer.store.engine import open_engine

# (worker index, its engine, its share of the connections, of the rate) -> its dispatcher
Build = Callable[[int, Engine, int, float], Dispatcher]
Run = Callable[[Dispatcher, int], Tally]
_COUNTS = ("sent", "deferred", "failed", "uncertain", "skipped", "released", "requeued", "lost")


def shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` whole shares, each at least 1, as even as can be."""
    base, extra = divmod(total, parts)
    return [max(1, base + (1 if index < extra else 0)) for index in range(parts)]


def _tally(data: dict[str, Any]) -> Tally:
    names = {f.name for f in fields(Tally)}
    return Tally(**{k: v for k, v in data.items() if k in names})


def _own_group() -> None:
    """A child leaves the terminal's process group: a Ctrl-C reaches the parent only, which
    passes it on once (twice would read as "leave at once")."""
    os.setpgid(0, 0)


def _child(
    index: int, url: str, concurrency: int, rate_share: float, total: int, build: Build,
    run: Run, channel: Any,
) -> None:
    _own_group()
    engine = open_engine(url)
    try:
        def report(tally: Tally) -> None:
            channel.put(("tally", index, asdict(tally)))

        dispatcher = build(index, engine, concurrency, rate_share)
        dispatcher.progress = report
        dispatcher.leave_on_second_signal = False  # the parent decides, and SIGKILLs
        tally = run(dispatcher, total)
        channel.put(("done", index, asdict(tally)))
    except MailerError as exc:
        channel.put(("error", index, (type(exc).__name__, exc.exit_code, exc.message, exc.hint)))
    finally:
        engine.dispose()


class _Error(MailerError):
    """A child's MailerError, carried back with its exit code."""

    def __init__(self, exit_code: int, message: str, hint: str | None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


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
    context = multiprocessing.get_context("fork")
    channel: Any = context.Queue()
    connections = shares(concurrency, workers)
    url = engine.url.render_as_string(hide_password=False)
    engine.dispose()  # the children must not inherit open database connections
    children = [
        context.Process(
            target=_child,
            args=(index, url, connections[index], connections[index] / concurrency, total,
                  build, run, channel),
            daemon=True,
        )
        for index in range(1, workers)
    ]
    for child in children:
        child.start()
    latest: dict[int, Tally] = {}
    finished: dict[int, Tally] = {}
    errors: list[MailerError] = []

    def drain() -> None:
        with contextlib.suppress(queue_module.Empty):
            while True:
                kind, index, data = channel.get_nowait()
                if kind == "error":
                    errors.append(_Error(data[1], data[2], data[3]))
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
        for child in children:
            if child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum if signals == 1 else signal.SIGKILL)

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
        for child in children:
            while child.is_alive() or child.exitcode is None:
                drain()
                child.join(timeout=0.1)
        drain()
    finally:
        signal.signal(signal.SIGTERM, previous)
    for index, child in enumerate(children, start=1):
        if index not in finished and child.exitcode != 0:
            errors.append(WorkerError(
                f"a sending worker process died (exit status {child.exitcode}); the "
                "deliveries it held are resent by `mailer retry` once their lease expires"
            ))
    if errors:
        raise errors[0]
    result = merged(own or Tally())
    every = [own or Tally(), *finished.values()]
    result.interrupted = any(t.interrupted for t in every)
    result.signal = next((t.signal for t in every if t.signal), 0)
    return result


# (worker index, worker count, its engine, progress or None) -> the report on its share
Check = Callable[[int, int, Engine, Callable[[int, int], None] | None], PreflightReport]


def _check_child(index: int, workers: int, url: str, check: Check, channel: Any) -> None:
    _own_group()
    engine = open_engine(url)
    try:
        channel.put(("done", index, check(index, workers, engine, None)))
    except MailerError as exc:
        channel.put(("error", index, (type(exc).__name__, exc.exit_code, exc.message, exc.hint)))
    finally:
        engine.dispose()


def check_in_workers(
    engine: Engine,
    workers: int,
    check: Check,
    progress: Callable[[int, int], None] | None,
) -> PreflightReport:
    """The pre-flight of the whole list, its shares checked by `workers` processes at once."""
    context = multiprocessing.get_context("fork")
    channel: Any = context.Queue()
    url = engine.url.render_as_string(hide_password=False)
    engine.dispose()
    children = [
        context.Process(target=_check_child, args=(index, workers, url, check, channel),
                        daemon=True)
        for index in range(1, workers)
    ]
    for child in children:
        child.start()

    def scaled(done: int, total: int) -> None:
        if progress is not None:
            progress(min(done * workers, total), total)  # this process sees its share only

    finished = False
    try:
        report = check(0, workers, engine, scaled)
        results: dict[int, PreflightReport] = {}
        while len(results) < len(children):
            try:
                kind, index, data = channel.get(timeout=0.5)
            except queue_module.Empty:
                if any(c.exitcode not in (None, 0) for c in children):
                    raise WorkerError("a pre-flight worker process died") from None
                continue
            if kind == "error":
                raise _Error(data[1], data[2], data[3])
            results[index] = data
        for index in sorted(results):
            report.merge(results[index])
        finished = True
    finally:
        for child in children:
            child.join(timeout=5 if finished else 0)
            if child.is_alive():
                child.kill()  # interrupted (Ctrl-C) or failed: their checks are not wanted
    return report
