"""Fakes behind mailer's real interfaces: a memory Transport and a clock tests move by hand."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from mailer.core.delivery import Reply, Stage, Submission
from mailer.core.errors import MailerError

ACCEPT = Reply(250, "2.0.0 Ok: queued as FAKE", Stage.DATA_END)
Script = Callable[[Submission, int], Reply]  # (submission, how many times seen) -> reply


@dataclass
class FakeClock:
    """A Clock that only moves when told to."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 25, 9, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def by_local_part(replies: dict[str, list[Reply]]) -> Script:
    """Reply by the recipient's local-part prefix: the n-th time seen gets the n-th reply
    (the last one repeats); anything else is accepted."""

    def script(submission: Submission, seen: int) -> Reply:
        local = submission.recipient.split("@", 1)[0]
        for prefix, answers in replies.items():
            if local.startswith(prefix):
                return answers[min(seen, len(answers) - 1)]
        return ACCEPT

    return script


@dataclass
class MemoryTransport:
    """Keeps what it is given; answers by script; may raise a whole-run error on demand."""

    script: Script = field(default=lambda _s, _n: ACCEPT)
    description: str = "memory"
    delay: float = 0.0
    fail_start: MailerError | None = None
    fail_after: int | None = None  # raise `fail_with` once this many messages were sent
    fail_with: MailerError | None = None
    received: list[Submission] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)
    started: int = 0
    calls: int = 0
    closed: int = 0
    in_flight: int = 0
    max_in_flight: int = 0

    async def start(self) -> None:
        self.started += 1
        if self.fail_start is not None:
            raise self.fail_start

    async def send(self, submission: Submission) -> Reply:
        if self.fail_after is not None and self.calls >= self.fail_after:
            assert self.fail_with is not None
            raise self.fail_with
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            reply = self.script(submission, self.seen[submission.recipient])
            self.seen[submission.recipient] += 1
            if reply.accepted or (reply.code is None and reply.stage is Stage.DATA_END):
                self.received.append(submission)
            return reply
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        self.closed += 1

    def copies(self) -> Counter[str]:
        return Counter(s.recipient for s in self.received)
