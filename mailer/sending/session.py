"""One SMTP connection's transactions, once aiosmtplib has opened it: `Session`.

aiosmtplib connects, says EHLO, negotiates STARTTLS and logs in (`SmtpPool._open` in
mailer.sending.smtp). `Session.take_over(smtp)` then hands the connection's transport to a
`ReplyReader` of its own, through asyncio's public `Transport.set_protocol`. aiosmtplib 5's
protocol keeps at most one reply, and drops any that arrives while none is awaited (its
`read_response` says so: "if multiple commands are written to the transport without
awaiting, response data will be lost"). The reader keeps every reply, in order, whenever it
comes, so that:

- where the relay offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write and their
  three replies are read afterwards: two round trips per message instead of four;
- a reply that comes while the message is still being handed to the socket is never lost.

Replies are parsed as aiosmtplib parses them (`SMTPResponse`, lines joined by a newline) and
trouble is raised as aiosmtplib's own exceptions, so mailer.sending.smtperrors translates it
the same way whichever of the two read it.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque

from aiosmtplib import (
    SMTP,
    SMTPDataError,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPStatus,
)

from mailer.core.delivery import Stage, Submission
from mailer.sending.smtperrors import SMTP_ERRORS

MAX_LINE_LENGTH = 8192  # as aiosmtplib: one reply line, and a whole reply four times that
MAX_REPLY_LENGTH = 4 * MAX_LINE_LENGTH
# Replies waiting to be read: a group is at most 3 commands, so more is a relay talking
# unasked (a flood would otherwise grow without bound).
MAX_UNREAD = 16
_INVALID = -1  # aiosmtplib's SMTPStatus.invalid_response
# As aiosmtplib's execute_command: no control character in a command line (CR or LF would
# end it and start another). Addresses are checked before (sending.wire.unsendable); this
# is the last guard, and a bug if it ever fires.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


class ReplyReader(asyncio.Protocol):
    """An asyncio protocol that parses an SMTP server's replies into a queue, in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._failure: Exception | None = None  # the connection is over, or talks nonsense
        self._waiter: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        if self._failure is not None:
            return
        self._buffer += data
        try:
            while (reply := self._parse()) is not None:
                self._replies.append(reply)
            if len(self._buffer) > MAX_REPLY_LENGTH:
                raise SMTPResponseException(_INVALID, "Response too long")
            if len(self._replies) > MAX_UNREAD:
                raise SMTPResponseException(_INVALID, "Replies to commands never sent")
        except SMTPResponseException as exc:
            # Out of step: none of what came is trusted as a reply (a lost connection, by
            # contrast, leaves the replies that came before it to be read).
            self._buffer.clear()
            self._replies.clear()
            self._fail(exc)
        self._wake()

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        lost = SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        self._fail(lost)

    async def read_response(self, timeout: float | None = None) -> SMTPResponse:
        """The next reply, waiting up to `timeout` seconds for it (SMTPReadTimeoutError).

        Replies that came before the failure are still given, in order; then the failure
        (SMTPServerDisconnected, or SMTPResponseException for a malformed reply) is raised.
        """
        while not self._replies:
            if self._failure is not None:
                raise self._failure
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(waiter, timeout)
            except TimeoutError as exc:
                raise SMTPReadTimeoutError("Timed out waiting for server response") from exc
            finally:
                self._waiter = None
        return self._replies.popleft()

    @property
    def unread(self) -> int:
        """Replies received and not read yet (between transactions: replies nobody asked
        for, such as a 421 before an idle timeout)."""
        return len(self._replies)

    def _fail(self, exc: Exception) -> None:
        if self._failure is None:
            self._failure = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _parse(self) -> SMTPResponse | None:
        """One whole reply off the front of the buffer, or None if it is not all there."""
        offset = 0
        lines: list[bytes] = []
        while True:
            end = self._buffer.find(b"\n", offset)
            if end == -1:
                if len(self._buffer) - offset > MAX_LINE_LENGTH:
                    raise SMTPResponseException(_INVALID, "Response too long")
                return None
            line = bytes(self._buffer[offset:end + 1])
            if len(line) > MAX_LINE_LENGTH:
                raise SMTPResponseException(_INVALID, "Response too long")
            try:
                code = int(line[:3])
            except ValueError:
                text = line.decode("utf-8", errors="ignore")
                raise SMTPResponseException(
                    _INVALID, f"Malformed SMTP response line: {text}"
                ) from None
            offset = end + 1
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                del self._buffer[:offset]
                return SMTPResponse(code, b"\n".join(lines).decode("utf-8", "surrogateescape"))


class Session:
    """An open, greeted (and, if configured, encrypted and logged-in) SMTP connection."""

    def __init__(
        self, transport: asyncio.WriteTransport, reader: ReplyReader, extensions: set[str],
        *, pipelining: bool = True,
    ) -> None:
        self.transport = transport
        self.reader = reader
        self.extensions = frozenset(extensions)  # EHLO keywords, lower case
        # MAIL, RCPT and DATA in one write: offered by the relay, and not turned off
        self.pipelined = pipelining and "pipelining" in self.extensions

    @classmethod
    def take_over(cls, smtp: SMTP, *, pipelining: bool = True) -> Session:
        """Take the connection aiosmtplib opened; `smtp` must not be used afterwards.
        `pipelining`: smtp_pipelining (used where the relay offers it)."""
        transport = smtp.transport
        if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
            raise SMTPServerDisconnected("Connection lost")
        reader = ReplyReader()
        transport.set_protocol(reader)
        return cls(transport, reader, set(smtp.esmtp_extensions), pipelining=pipelining)

    @property
    def is_connected(self) -> bool:
        return not self.transport.is_closing()

    @property
    def in_step(self) -> bool:
        """Connected, and no reply waiting that no command asked for: a transaction may
        start. A relay that spoke unasked (an idle timeout's 421, anything) would have its
        words taken for the next command's reply; such a connection is replaced."""
        return self.is_connected and self.reader.unread == 0

    def supports(self, extension: str) -> bool:
        return extension.lower() in self.extensions

    def write(self, data: bytes) -> None:
        if self.transport.is_closing():
            raise SMTPServerDisconnected("Connection lost")
        self.transport.write(data)

    async def read_response(self, timeout: float | None = None) -> SMTPResponse:
        return await self.reader.read_response(timeout)

    async def command(self, line: bytes, timeout: float | None = None) -> SMTPResponse:
        """Write one command line (without its CRLF) and read its reply."""
        self.write(_command_line(line))
        return await self.read_response(timeout)

    async def envelope(
        self, mail: bytes, rcpt: bytes, submission: Submission, timeout: float
    ) -> None:
        """MAIL, RCPT and DATA, up to the 354; EnvelopeRefused names the stage that stopped.

        Pipelined (RFC 2920): the three commands in one write, then their replies, each read
        whatever the ones before it said so that the next transaction starts in step (not
        after a 421: the relay is closing). The first refusal is the outcome, even if the
        connection then broke. A DATA accepted after a refused MAIL or RCPT gets a lone dot,
        which ends it with no message (RFC 2920, 3.1). Otherwise each command waits for its
        reply before the next is written.
        """
        commands = ((Stage.MAIL, mail), (Stage.RCPT, rcpt), (Stage.DATA, b"DATA"))
        if not self.pipelined:
            for stage, line in commands:
                try:
                    response = await self.command(line, timeout)
                except SMTP_ERRORS as exc:
                    raise EnvelopeRefused(stage, exc) from exc
                _judge(stage, response, submission)
            return
        self.write(b"".join(_command_line(line) for _, line in commands))
        replies: list[tuple[Stage, SMTPResponse]] = []
        broken: EnvelopeRefused | None = None
        for stage, _ in commands:
            try:
                response = await self.read_response(timeout)
            except SMTP_ERRORS as exc:
                broken = EnvelopeRefused(stage, exc)
                break
            replies.append((stage, response))
            if response.code == SMTPStatus.domain_unavailable:  # 421: the relay is closing
                break
        for stage, response in replies:
            try:
                _judge(stage, response, submission)
            except EnvelopeRefused:
                if broken is None and replies[-1][1].code == SMTPStatus.start_input:
                    try:
                        await self.command(b".", timeout)  # no message: nothing delivered
                    except SMTP_ERRORS:
                        self.close()
                raise
        if broken is not None:
            raise broken

    async def quit(self, timeout: float) -> None:
        """QUIT, wait for the reply (at most `timeout`), and close, whatever happens."""
        try:
            await self.command(b"QUIT", timeout)
        finally:
            self.close()

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


class EnvelopeRefused(Exception):
    """The envelope stopped at `stage`; `error` is aiosmtplib's exception for it (a refusal,
    a lost connection, a timeout), for mailer.sending.smtperrors to translate."""

    def __init__(self, stage: Stage, error: Exception) -> None:
        super().__init__(stage, error)
        self.stage = stage
        self.error = error


def _command_line(line: bytes) -> bytes:
    if _CONTROL.search(line):
        raise ValueError(f"a command line holds a control character: {line[:60]!r}")
    return line + b"\r\n"


def _judge(stage: Stage, response: SMTPResponse, submission: Submission) -> None:
    """Raise EnvelopeRefused unless `response` lets the transaction go on past `stage`."""
    code, text = response.code, response.message
    if stage is Stage.MAIL and code != SMTPStatus.completed:
        raise EnvelopeRefused(stage, SMTPSenderRefused(code, text, submission.sender))
    if stage is Stage.RCPT and code not in (SMTPStatus.completed, SMTPStatus.will_forward):
        raise EnvelopeRefused(stage, SMTPRecipientRefused(code, text, submission.recipient))
    if stage is Stage.DATA and code != SMTPStatus.start_input:
        raise EnvelopeRefused(stage, SMTPDataError(code, text))
