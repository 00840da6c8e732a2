"""The SMTP transport: `SmtpPool`, K persistent connections to one relay.

`SmtpPool` satisfies the `Transport` protocol of mailer.core.delivery (as `OutboxTransport`
in mailer.sending.outbox and the tests' memory fakes do). Its connections are opened lazily,
by aiosmtplib (connect, EHLO, STARTTLS, AUTH), then handed to a `Session` (mailer.sending.
session) that reads every reply in order; `send()` borrows one, runs one transaction for one
recipient, and gives it back. What goes wrong is translated in `smtperrors`; what goes on the
wire is made in `wire`.

Where the relay offers PIPELINING (RFC 2920) and `smtp_pipelining` is on (the default),
MAIL, RCPT and DATA go in one write and their replies are read after it; otherwise each
waits for its reply. Either way each reply is judged at its own stage, so the pool knows
whether the final "." may have been written when a connection broke: before it, the message
surely was not accepted (stage MAIL/RCPT/DATA: deferred); after it, the relay may have it
(stage DATA_END with no code: "uncertain"). An ordinary message goes with its dot in one
write (one system call), and a loss from then on counts as after the dot, the safe side; a
large one (over ONE_WRITE) is written first and its dot after it, so that a loss while the
body is still being sent is known to be before the dot.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from aiosmtplib import (
    SMTP,
    SMTPDataError,
    SMTPServerDisconnected,
    SMTPStatus,
)

from mailer.core.config import Security, Settings
from mailer.core.delivery import Reply, Stage, Submission
from mailer.core.errors import ConfigError, MailerError, RelayTemporaryError
from mailer.core.tls import verified_context
from mailer.sending.relay import DEFAULT_PORTS, check_auth_allowed, relay_address, require_relay
from mailer.sending.session import EnvelopeRefused, Session
from mailer.sending.smtperrors import SMTP_ERRORS, TLS_HINT, translate_smtp_error, whole_run_error
from mailer.sending.wire import command_address, normalize_line_ends, stuff_dots, unsendable

NO_SMTPUTF8 = "the relay does not offer SMTPUTF8, needed for this address"
# Messages up to this size (dots doubled) go with their final dot in one write; a larger
# one is written in two, so that a loss before the dot is known to be before it.
ONE_WRITE = 32 * 1024


@dataclass
class _Slot:
    """One connection of the pool: opened lazily, replaced after max messages or trouble."""

    session: Session | None = None
    messages: int = 0  # transactions begun on this connection
    retired: bool = False  # the relay would not take one more connection


class SmtpPool:
    """A Transport over K persistent connections to one relay (K = concurrency)."""

    def __init__(
        self,
        settings: Settings,
        *,
        concurrency: int | None = None,
        local_hostname: str | None = None,
    ) -> None:
        self.host = require_relay(settings)
        check_auth_allowed(settings)
        self.security: Security = settings.smtp_security
        self.port = settings.smtp_port or DEFAULT_PORTS[self.security]
        self.relay = relay_address(self.host, self.port)
        self.description = f"{self.relay} ({self.security})"
        self.connections_opened = 0  # for logs and tests
        self.refused_connections = 0  # extra connections the relay would not take (throttling)

        self._username = settings.smtp_username
        self._password = settings.smtp_password
        self._timeout = settings.smtp_timeout
        self._data_timeout = settings.smtp_data_timeout
        self._max_messages = settings.smtp_max_messages
        self._pipelining = settings.smtp_pipelining
        self._local_hostname = local_hostname
        self._tls_context = (
            None if self.security == "none"
            else verified_context(settings.smtp_ca_file, "smtp_ca_file")
        )
        size = max(1, concurrency if concurrency is not None else settings.concurrency)
        self._slots = [_Slot() for _ in range(size)]
        self._idle: asyncio.LifoQueue[_Slot] = self._every_slot_idle()

    def _every_slot_idle(self) -> asyncio.LifoQueue[_Slot]:
        # Last in, first out: a sequential caller keeps reusing one warm connection, and
        # K senders of a smaller share (a --workers process) borrow only the top K slots.
        idle: asyncio.LifoQueue[_Slot] = asyncio.LifoQueue()
        for slot in self._slots:
            slot.retired = False
            idle.put_nowait(slot)
        return idle

    async def start(self) -> None:
        """Open the first connection. After close() it starts afresh (a new queue, bound to
        the running event loop): a run's one pool serves each campaign of a retry."""
        self._idle = self._every_slot_idle()
        slot = await self._idle.get()
        try:
            await self._connection(slot)
        finally:
            self._idle.put_nowait(slot)

    async def send(self, submission: Submission) -> Reply:
        while True:
            slot = await self._idle.get()
            try:
                return await self._send_on(slot, submission)
            except RelayTemporaryError:
                # A relay limiting connections per client refuses the Kth one: carry on
                # with the connections it did accept, if any is still alive.
                could_not_open = slot.session is None
                self._discard(slot)
                if not (could_not_open and self._others_alive(slot)):
                    raise
                slot.retired = True
                self.refused_connections += 1
            except BaseException:
                self._discard(slot)  # cancelled or failed mid-transaction: state unknown
                raise
            finally:
                if not slot.retired:
                    self._idle.put_nowait(slot)

    async def close(self) -> None:
        await asyncio.gather(*(self._quit(slot) for slot in self._slots))

    # -- connections -------------------------------------------------------------------

    def _others_alive(self, slot: _Slot) -> bool:
        return any(
            other.session is not None and other.session.is_connected
            for other in self._slots
            if other is not slot and not other.retired
        )

    async def _connection(self, slot: _Slot) -> Session:
        """The slot's connection, (re)opened if it is closed, broken or has sent its share."""
        session = slot.session
        if session is not None and session.in_step and slot.messages < self._max_messages:
            return session
        await self._quit(slot)
        slot.session = await self._open()
        return slot.session

    async def _open(self) -> Session:
        """Connect, EHLO, STARTTLS and AUTH with aiosmtplib; then the Session takes over."""
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        smtp = SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self._timeout,
            local_hostname=self._local_hostname,
            use_tls=self.security == "tls",
            start_tls=False,  # done by hand below: required, never opportunistic
            tls_context=self._tls_context,
        )
        try:
            await smtp.connect()
            await smtp.ehlo()
            if self.security == "starttls":
                if not smtp.supports_extension("starttls"):
                    raise ConfigError(
                        f"the relay {self.relay} does not offer STARTTLS "
                        "(smtp_security = starttls requires it)",
                        hint=TLS_HINT,
                    )
                await smtp.starttls(server_hostname=self.host, tls_context=self._tls_context)
                await smtp.ehlo()
            if self._username is not None:
                await self._login(smtp)
            session = Session.take_over(smtp, pipelining=self._pipelining)
        except BaseException as exc:
            smtp.close()
            if isinstance(exc, SMTP_ERRORS):
                raise whole_run_error(
                    exc, relay=self.relay, secret=self._password, timeout=self._timeout
                ) from exc
            raise
        self.connections_opened += 1
        return session

    async def _login(self, smtp: SMTP) -> None:
        assert self._username is not None
        if not smtp.supports_extension("auth"):
            plain = " over an unencrypted connection" if self.security == "none" else ""
            raise ConfigError(
                f"the relay {self.relay} does not offer AUTH{plain}, but smtp_username is set",
                hint="many relays offer AUTH only over TLS: set smtp_security to starttls",
            )
        await smtp.login(self._username, self._password or "")

    async def _quit(self, slot: _Slot) -> None:
        """QUIT politely and forget the connection; errors do not matter any more."""
        session, slot.session, slot.messages = slot.session, None, 0
        if session is None:
            return
        try:
            if session.is_connected:
                await session.quit(timeout=min(self._timeout, 5.0))
        except SMTP_ERRORS:
            pass
        finally:
            session.close()

    def _discard(self, slot: _Slot) -> None:
        """Drop a connection whose state is unknown (no QUIT: it may be mid-transaction)."""
        if slot.session is not None:
            slot.session.close()
        slot.session, slot.messages = None, 0

    # -- one transaction ---------------------------------------------------------------

    async def _send_on(self, slot: _Slot, submission: Submission) -> Reply:
        problem = unsendable(submission.sender)
        if problem is not None:
            raise ConfigError(f"the sender {submission.sender!r} cannot be sent: {problem}")
        problem = unsendable(submission.recipient)
        if problem is not None:
            return Reply(553, f"mailer cannot send this address: {problem}", Stage.RCPT)
        while True:
            session = await self._connection(slot)
            reused = slot.messages > 0
            slot.messages += 1
            reply = await self._transaction(session, submission)
            if reply.code is None or reply.code == 421 or not session.is_connected:
                self._discard(slot)
            # A connection that idled out while parked fails at once, at MAIL: nothing of
            # this message was sent, so try again on a fresh connection.
            stale = reply.stage is Stage.MAIL and (reply.code is None or reply.code == 421)
            if not (reused and stale):
                return reply

    async def _transaction(self, session: Session, submission: Submission) -> Reply:
        utf8 = submission.smtputf8 or not (submission.sender + submission.recipient).isascii()
        if utf8 and not session.supports("smtputf8"):
            return Reply(553, NO_SMTPUTF8, Stage.MAIL)
        encoding = "utf-8" if utf8 else "ascii"
        body = normalize_line_ends(submission.data)
        mail = b"MAIL FROM:" + command_address(submission.sender).encode(encoding)
        if session.supports("size"):
            mail += b" SIZE=%d" % len(body)  # RFC 1870: no doubled dots, no final dot
        if utf8:
            mail += b" SMTPUTF8"
        if not submission.data.isascii() and session.supports("8bitmime"):
            mail += b" BODY=8BITMIME"
        rcpt = b"RCPT TO:" + command_address(submission.recipient).encode(encoding)

        stage = Stage.MAIL
        try:
            await session.envelope(mail, rcpt, submission, self._timeout)
            stage = Stage.DATA
            data = stuff_dots(body)
            if len(data) <= ONE_WRITE:
                # An ordinary message: body and final dot in one write, one system call.
                # The socket takes it whole at once (nothing left in asyncio's buffer);
                # should it not, a loss from here may be after the dot: DATA_END, the
                # safe side ("uncertain", never a wrong "not accepted").
                session.write(data + b".\r\n")
                stage = Stage.DATA_END
                if not await self._drained(session):
                    return Reply(None, f"timed out: the relay did not take the message "
                                 f"within {self._data_timeout:g} s", stage)
            else:
                # A large one: the body first, and the final dot only once asyncio has
                # passed the body to the socket: until the dot is written the relay cannot
                # accept the message (stage DATA, safe to try again); then it may have.
                session.write(data)
                if not await self._drained(session):
                    return Reply(
                        None,
                        f"timed out: the relay did not take the message within "
                        f"{self._data_timeout:g} s",
                        Stage.DATA,
                    )
                session.write(b".\r\n")  # raises if the connection is gone: nothing sent
                stage = Stage.DATA_END
            response = await session.read_response(timeout=self._data_timeout)
            if not 200 <= response.code < 300:
                raise SMTPDataError(response.code, response.message)
            return Reply(response.code, response.message, Stage.DATA_END)
        except EnvelopeRefused as refused:
            stage, exc = refused.stage, refused.error
        except SMTP_ERRORS as error:
            exc = error
        waited = self._data_timeout if stage is Stage.DATA_END else self._timeout
        outcome = translate_smtp_error(
            exc, stage, relay=self.relay, secret=self._password, timeout=waited
        )
        if isinstance(outcome, MailerError):
            if stage is Stage.DATA_END:
                # Whatever broke, it broke after the whole message was handed over:
                # the relay may have it. That is this message's outcome (uncertain),
                # not a reason to release it as untried.
                return Reply(None, f"the connection failed: {outcome.message}", stage)
            raise outcome from exc
        if outcome.code is not None and outcome.code != 421:
            await self._reset(session)
        return outcome

    async def _drained(self, session: Session) -> bool:
        """Wait until the transport's write buffer is empty; False if that takes too long.

        Ordinary messages leave nothing buffered (no wait at all). Over TLS this sees the
        TLS layer's buffer only, not the socket's beneath it: a loss then counts as after
        the dot (DATA_END), the safe side.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._data_timeout
        pause = 0.001
        while True:
            transport = session.transport
            if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
                raise SMTPServerDisconnected("Connection lost while sending the message")
            if transport.get_write_buffer_size() == 0:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def _reset(self, session: Session) -> None:
        """RSET after a refusal so the connection serves the next message; close if it fails."""
        if not session.is_connected:
            return
        try:
            response = await session.command(b"RSET", self._timeout)
        except SMTP_ERRORS:
            session.close()
            return
        if response.code != SMTPStatus.completed:
            session.close()


def smtp_transport(settings: Settings, concurrency: int | None = None) -> SmtpPool:
    """The SMTP Transport for these settings (K = concurrency, or settings.concurrency)."""
    return SmtpPool(settings, concurrency=concurrency)
