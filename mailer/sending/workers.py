"""Several processes on one machine (`--workers N`), to use more than one core: the forking,
the channel back to the parent, the merged progress and the first error of any of them.

Rendering and the SMTP client are CPU-bound Python: one process uses one core. With N workers
the run forks N-1 children after the deliveries are queued; each opens its own database
connection and its own SMTP connections and claims batches like any other worker (leases make
that safe: it is the same mechanism as several machines sharing PostgreSQL). The connections
and the rate are shared out: N workers with --concurrency K and --rate R open K in all and
send at R in all. Each child runs the run's own method on its share (`Sender.send_share`,
`Checker.check_share`); what a signal does is the run's to decide (mailer.sending.run), this
module only passes it on. A child that dies leaves its claimed deliveries to expire into
`uncertain`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queue_module
from collections.abc import Callable
from dataclasses import asdict, fields
from functools import partial
from typing import Any, Protocol

from sqlalchemy import Engine

from mailer.core.errors import MailerError, WorkerError, WorkerReportedError
from mailer.messages.preflight import PreflightReport
from mailer.sending.options import ProgressFn, Tally
from mailer.store.engine import open_engine

CheckProgress = Callable[[int, int], None]
# What a child does: (its index, its own engine, the channel to the parent) -> its result
Work = Callable[[int, Engine, Any], Any]


class Sender(Protocol):
    """What each sending process runs (mailer.sending.run.SendRun)."""

    def send_share(
        self, index: int, engine: Engine, connections: int, progress: ProgressFn | None
    ) -> Tally: ...


class Checker(Protocol):
    """What each pre-flight process runs (mailer.sending.prepare.ListCheck)."""

    def check_share(
        self, index: int, count: int, engine: Engine, progress: CheckProgress | None
    ) -> PreflightReport: ...


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


def _put_tally(channel: Any, index: int, tally: Tally) -> None:
    channel.put(("tally", index, asdict(tally)))


def _send_in_child(
    sender: Sender, connections: list[int], index: int, engine: Engine, channel: Any
) -> dict[str, Any]:
    progress = partial(_put_tally, channel, index)  # each flush's tally, for the parent's bar
    return asdict(sender.send_share(index, engine, connections[index], progress))


class SendingWorkers:
    """`count` sending processes: this one (share 0, run by the caller) and count-1 forked
    children, each running `sender.send_share` on its share of the connections."""

    def __init__(
        self,
        engine: Engine,
        count: int,
        concurrency: int,
        sender: Sender,
        progress: ProgressFn | None,
    ) -> None:
        self.connections = shares(concurrency, count)
        self._engine = engine
        self._count = count
        self._sender = sender
        self._progress = progress
        self._children: _Children | None = None
        self._latest: dict[int, Tally] = {}
        self._finished: dict[int, Tally] = {}
        self._errors: list[MailerError] = []

    def start(self) -> None:
        """Fork the children; they start sending at once."""
        self._children = _Children(
            self._engine, self._count, partial(_send_in_child, self._sender, self.connections)
        )

    def signal(self, signum: int) -> None:
        if self._children is not None:
            self._children.signal(signum)

    def report(self, own: Tally) -> None:
        """The progress of share 0, drawn with the children's latest."""
        if self._progress is not None:
            self._progress(self._merged(own))

    def finish(self, own: Tally | None, error: MailerError | None = None) -> Tally:
        """Wait for every child; the sum of every share, or the first whole-run error (this
        process's `error` first)."""
        children = self._children
        assert children is not None
        if error is not None:
            self._errors.insert(0, error)
        while any(process.is_alive() for process in children.processes):
            self._drain(timeout=0.1)
        children.stop(wait=5)  # all have exited: reap them
        self._drain()
        for index, process in enumerate(children.processes, start=1):
            if index not in self._finished and process.exitcode != 0:
                self._errors.append(WorkerError(
                    f"a sending worker process died (exit status {process.exitcode}); the "
                    "deliveries it held are resent by `mailer retry` once their lease expires"
                ))
        if self._errors:
            raise self._errors[0]
        result = self._merged(own or Tally())
        every = [own or Tally(), *self._finished.values()]
        result.interrupted = any(t.interrupted for t in every)
        result.signal = next((t.signal for t in every if t.signal), 0)
        return result

    def _drain(self, timeout: float | None = None) -> None:
        assert self._children is not None
        for kind, index, data in self._children.messages(timeout):
            if kind == "error":
                self._errors.append(WorkerReportedError(*data))
                self._finished.setdefault(index, Tally())
            else:
                self._latest[index] = _tally(data)
                if kind == "done":
                    self._finished[index] = self._latest[index]

    def _merged(self, own: Tally) -> Tally:
        self._drain()
        combined = Tally(total=own.total, started=own.started)
        for tally in [own, *self._latest.values()]:
            combined.add(tally)
        return combined


def _check_in_child(checker: Checker, count: int, index: int, engine: Engine,
                    _channel: Any) -> PreflightReport:
    return checker.check_share(index, count, engine, None)


def check_in_workers(
    engine: Engine,
    workers: int,
    checker: Checker,
    progress: CheckProgress | None,
) -> PreflightReport:
    """The pre-flight of the whole list, its shares checked by `workers` processes at once."""
    children = _Children(engine, workers, partial(_check_in_child, checker, workers))

    def scaled(done: int, total: int) -> None:
        if progress is not None:
            progress(min(done * workers, total), total)  # this process sees its share only

    finished = False
    try:
        report = checker.check_share(0, workers, engine, scaled)
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
