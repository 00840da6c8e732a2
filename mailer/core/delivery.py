"""What a delivery attempt is, whatever carries it: `Submission` in, `Reply` out, at a `Stage`.

The `Transport` protocol every sender satisfies (the SMTP pool, the outbox, the tests'
memory fakes). Pure values: the store, the policy and the transports all use them, and
none of them needs the SMTP client to do so.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Stage(StrEnum):
    """How far an SMTP transaction got when its reply (or silence) came."""

    CONNECT = "connect"  # greeting, EHLO, STARTTLS, AUTH
    MAIL = "mail"  # MAIL FROM
    RCPT = "rcpt"  # RCPT TO
    DATA = "data"  # the DATA command (before 354), or while the message was being written
    DATA_END = "data-end"  # after the final "." was written: the reply to the whole message


@dataclass(frozen=True)
class Submission:
    """One message for one recipient: one SMTP transaction."""

    delivery_id: int
    sender: str  # envelope sender (MAIL FROM), ASCII or UTF-8 with smtputf8
    recipient: str  # RCPT TO, as it goes on the wire
    data: bytes  # the whole message, CRLF line ends
    message_id: str  # `<...@...>`, for logs and the outbox file name
    smtputf8: bool = False  # the recipient needs SMTPUTF8


@dataclass(frozen=True)
class Reply:
    """What the relay said about one submission (or that it said nothing)."""

    code: int | None  # None: no reply at all (connection lost, timed out)
    text: str  # the reply text (it holds the relay's queue id), or what happened
    stage: Stage

    @property
    def accepted(self) -> bool:
        return self.code is not None and 200 <= self.code < 300 and self.stage is Stage.DATA_END


class Transport(Protocol):
    """Where messages go: an SMTP relay through a pool, a folder (outbox), or a test fake."""

    description: str  # for messages: "smtp.example.org:587 (starttls)", "outbox ./out"

    async def start(self) -> None:
        """Connect once and check the session (TLS, AUTH): raise whole-run errors early."""

    async def send(self, submission: Submission) -> Reply:
        """Send one message; per-message outcomes are Replies, whole-run trouble raises."""
        ...

    async def close(self) -> None:
        """Close every connection politely (QUIT)."""
