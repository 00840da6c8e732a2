"""Postfix's smtp-sink for the tests: a real, fast SMTP server on 127.0.0.1 with fault flags.

    from tests.sink import start_sink

    def test_something() -> None:
        with start_sink("-r", "RCPT") as sink:     # RCPT answers 450 4.3.0
            ...send to sink.host, sink.port...
        assert sink.count() == 3                    # transactions received
        assert sink.recipients()["a@b.fr"] == 1     # copies per envelope recipient

or the fixtures `smtp_sink` (a sink that accepts everything) and `smtp_sink_factory` (call
it with flags, as many times as needed; every sink it started is stopped after the test).
pytest finds a fixture in the test module's namespace, so import them there (or once in
conftest.py for every test):

    from tests.sink import fixture_smtp_sink, fixture_smtp_sink_factory  # noqa: F401

The sink itself is tests/smtpsink.py (no pytest there, so the benchmarks import it too); see its
docstring for what is counted. The replies each fault flag gives, as tests/test_sink.py
checks them (smtp-sink 3.7):

| flag | reply |
|---|---|
| `-f CMD[,CMD]` | `500 5.3.0 Error: command failed` (`-B "550 5.1.1 …"` sets the text) |
| `-r CMD[,CMD]` | `450 4.3.0 Error: command failed` (`-b "451 4.7.1 …"` sets the text) |
| `-q CMD` | none: the connection is closed after the command |
| `-Q CMD` | `421 4.0.0 Server closing connection`, then closed |
| `-W CMD:S` | the normal reply, S seconds late (S >= 1) |
| `-W CMD:S:ODDS` | late by a random multiple of S, possibly 0 (d100 rolls until one >= ODDS) |
| `-w S` | the DATA command's 354 reply, S seconds late |
| `-A 0` | `550 This violates SMTP` right after 354, then closed; nothing counted |

CMD is one of CONNECT (the greeting), HELO, EHLO, MAIL, RCPT, DATA, `.` (the end of the
message), RSET, NOOP, QUIT. With `.` the message is counted whatever the reply: the sink has
it, the client was told it failed or nothing (an "uncertain" delivery).

When smtp-sink is missing the tests that use it are skipped, except in CI (CI=true), where
they fail: .ci/run installs Postfix for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.smtpsink import (
    Counters,
    Received,
    Sink,
    SinkError,
    SinkMissing,
    smtp_sink_path,
)
from tests.smtpsink import start_sink as _start_sink

__all__ = [
    "Counters",
    "Received",
    "Sink",
    "SinkError",
    "SinkFactory",
    "fixture_smtp_sink",
    "fixture_smtp_sink_factory",
    "require_smtp_sink",
    "start_sink",
]

MISSING = (
    "Postfix's smtp-sink is not installed (Debian/Ubuntu: apt-get install postfix, then"
    " `postfix stop`); CI installs it"
)


def require_smtp_sink() -> str:
    """smtp-sink's path; skip the test when it is missing, but fail it in CI (CI=true)."""
    path = smtp_sink_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{MISSING}: in CI it must be there (see .ci/run)", pytrace=False)
        pytest.skip(MISSING)
    return path


@contextmanager
def start_sink(*flags: str, dump: bool = True, folder: Path | None = None) -> Iterator[Sink]:
    """benchmarks._sink.start_sink, skipping (or in CI failing) the test without smtp-sink."""
    require_smtp_sink()
    try:
        with _start_sink(*flags, dump=dump, folder=folder) as sink:
            yield sink
    except SinkMissing:  # removed between the check and the start
        require_smtp_sink()
        raise


SinkFactory = Callable[..., Sink]


@pytest.fixture(name="smtp_sink_factory")
def fixture_smtp_sink_factory() -> Iterator[SinkFactory]:
    """`smtp_sink_factory("-f", "RCPT", dump=True)` starts a sink; all stop after the test."""
    require_smtp_sink()
    with ExitStack() as stack:

        def start(*flags: str, dump: bool = True) -> Sink:
            started: AbstractContextManager[Sink] = start_sink(*flags, dump=dump)
            return stack.enter_context(started)

        yield start


@pytest.fixture(name="smtp_sink")
def fixture_smtp_sink(smtp_sink_factory: SinkFactory) -> Sink:
    """An smtp-sink that accepts everything, dumping each message (see Sink.messages)."""
    return smtp_sink_factory()
