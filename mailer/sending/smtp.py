"""Async SMTP delivery: a pool of persistent aiosmtplib connections behind `Transport`.

`SmtpPool` satisfies the `Transport` protocol of mailer.core.delivery (as `OutboxTransport`
in mailer.sending.outbox and the tests' memory fakes do). This is the one place where
aiosmtplib's exceptions are translated: `translate_smtp_error` turns each into either a
per-message `Reply` (a refusal, a timeout, a lost connection) or a MailerError that stops the
whole run (unreachable relay: RelayTemporaryError; TLS, credentials or a refused sender:
ConfigError).

`SmtpPool` keeps K persistent connections, opened lazily; `send()` borrows one, runs one
transaction for one recipient, and gives it back. MAIL, RCPT and DATA are driven one by one
(not `sendmail()`, whose DATA writes body and dot at once) so the pool knows whether the
final "." had been written when a connection broke: before it, the message surely was not
accepted (stage MAIL/RCPT/DATA: deferred); after it, the relay may have it (stage DATA_END
with no code: "uncertain").
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass, replace

from aiosmtplib import (
    SMTP,
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)
from aiosmtplib.email import parse_address

from mailer.core.config import Security, Settings
from mailer.core.delivery import Reply, Stage, Submission
from mailer.core.errors import ConfigError, MailerError, RelayTemporaryError
from mailer.core.tls import verified_context

DEFAULT_PORTS: dict[Security, int] = {"starttls": 587, "tls": 465, "none": 25}
NO_SMTPUTF8 = "the relay does not offer SMTPUTF8, needed for this address"
# What translate_smtp_error is caught around: aiosmtplib's root, plus the ssl and socket
# errors that aiosmtplib lets through (ssl.SSLError and TimeoutError are OSErrors).
SMTP_ERRORS: tuple[type[Exception], ...] = (SMTPException, OSError)
# Every exception class aiosmtplib exports, each reviewed in translate_smtp_error; a test
# fails when a new aiosmtplib version adds one that is not listed here.
KNOWN_SMTP_ERRORS: frozenset[type[Exception]] = frozenset({
    SMTPAuthenticationError, SMTPConnectError, SMTPConnectResponseError,
    SMTPConnectTimeoutError, SMTPDataError, SMTPException, SMTPHeloError, SMTPNotSupported,
    SMTPReadTimeoutError, SMTPRecipientRefused, SMTPRecipientsRefused, SMTPResponseException,
    SMTPSenderRefused, SMTPServerDisconnected, SMTPTimeoutError,
})
_COMMANDS = {
    Stage.CONNECT: "the greeting, EHLO, STARTTLS or AUTH",
    Stage.MAIL: "MAIL FROM",
    Stage.RCPT: "RCPT TO",
    Stage.DATA: "DATA",
    Stage.DATA_END: "the message (after the final dot)",
}
_TLS_HINT = "check smtp_security (tls for port 465, starttls for 587) and smtp_ca_file"


def relay_address(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": a relay on this machine."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_auth_allowed(settings: Settings) -> None:
    """Refuse credentials that would cross the network unencrypted (checked before connecting)."""
    if settings.smtp_username is None:
        return
    host = settings.smtp_host or ""
    if settings.smtp_security == "none" and not is_loopback(host):
        port = settings.smtp_port or DEFAULT_PORTS["none"]
        raise ConfigError(
            f"refusing to send the SMTP password to {relay_address(host, port)} over an "
            "unencrypted connection (smtp_security = none)",
            hint="set smtp_security to starttls or tls, or use a relay on localhost",
        )
    if settings.smtp_password is None:
        raise ConfigError(
            "smtp_username is set but no SMTP password was given",
            hint="set MAILER_SMTP_PASSWORD or MAILER_SMTP_PASSWORD_FILE",
        )


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind `exc` (aiosmtplib wraps it when TLS fails while connecting)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _os_reason(exc: BaseException) -> str:
    """`connection refused`, `timed out`, ...: the socket reason behind a connect failure."""
    cause = exc.__cause__ if isinstance(exc, SMTPException) else exc
    if isinstance(cause, SMTPServerDisconnected):
        return "it closed the connection before its greeting"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, TimeoutError):
        return "timed out"
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host name ({cause.strerror})"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return str(exc) or type(exc).__name__


def translate_smtp_error(
    exc: Exception,
    stage: Stage,
    *,
    relay: str,
    secret: str | None = None,
    timeout: float | None = None,
) -> Reply | MailerError:
    """The one translation of aiosmtplib (and ssl/socket) exceptions.

    At Stage.CONNECT everything is whole-run trouble: a MailerError to raise. Inside a
    transaction, what concerns this message is a Reply; a refused sender, refused
    credentials and TLS failures are still whole-run errors. `secret` (the password) is
    replaced by *** wherever it would appear.
    """
    outcome = _translate(exc, stage, relay=relay, timeout=timeout)
    if isinstance(outcome, Reply):
        return replace(outcome, text=_scrub(outcome.text, secret))
    hint = _scrub(outcome.hint, secret) if outcome.hint else None
    return type(outcome)(_scrub(outcome.message, secret), hint=hint)


def _translate(
    exc: Exception, stage: Stage, *, relay: str, timeout: float | None
) -> Reply | MailerError:
    """translate_smtp_error without the scrubbing; most specific classes first."""
    message = str(getattr(exc, "message", "") or exc)
    waited = f" within {timeout:g} s" if timeout is not None else ""
    command = "EHLO" if isinstance(exc, SMTPHeloError) else _COMMANDS[stage]

    tls_error = _ssl_error(exc)
    if isinstance(tls_error, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
        tls_error = None  # the connection dropped during TLS: not a configuration problem
    if tls_error is not None and (stage is Stage.CONNECT or not isinstance(exc, SMTPException)):
        if isinstance(tls_error, ssl.SSLCertVerificationError):
            reason = tls_error.verify_message or tls_error.reason or str(tls_error)
            return ConfigError(
                f"cannot verify the TLS certificate of the relay {relay}: {reason}",
                hint="set smtp_ca_file to the CA that signed the relay's certificate",
            )
        reason = tls_error.reason or str(tls_error)
        return ConfigError(f"TLS with the relay {relay} failed: {reason}", hint=_TLS_HINT)

    if isinstance(exc, SMTPAuthenticationError):
        text = f"{exc.code} {message}"
        if 400 <= exc.code < 500:
            return RelayTemporaryError(f"the relay {relay} cannot check credentials now: {text}")
        return ConfigError(
            f"the relay {relay} refuses the SMTP credentials: {text}",
            hint="check MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD",
        )
    if isinstance(exc, SMTPSenderRefused) and stage is not Stage.CONNECT:
        # 552 at MAIL is the SIZE check (the message, not the sender).
        if 500 <= exc.code < 600 and exc.code != 552:
            return ConfigError(
                f"the relay {relay} refuses the sender {exc.sender}: {exc.code} {message}",
                hint="set a sender the relay accepts (the campaign's From, or MAILER_FROM)",
            )
        return Reply(exc.code, message, Stage.MAIL)
    if isinstance(exc, SMTPRecipientRefused) and stage is not Stage.CONNECT:
        return Reply(exc.code, message, Stage.RCPT)
    if isinstance(exc, SMTPRecipientsRefused) and stage is not Stage.CONNECT:
        first = exc.recipients[0] if exc.recipients else None
        if first is None:
            return Reply(None, "the relay refused every recipient", Stage.RCPT)
        return Reply(first.code, first.message, Stage.RCPT)
    if isinstance(exc, SMTPConnectTimeoutError):
        if isinstance(exc.__cause__, SMTPTimeoutError):  # connected, but no greeting
            return RelayTemporaryError(f"the relay {relay} does not answer: no greeting{waited}")
        return RelayTemporaryError(f"cannot connect to the relay {relay}: timed out{waited}")
    if isinstance(exc, SMTPConnectResponseError):
        return RelayTemporaryError(
            f"the relay {relay} is not ready: it greets with {exc.code} {message}"
        )
    if isinstance(exc, SMTPConnectError):
        return RelayTemporaryError(f"cannot connect to the relay {relay}: {_os_reason(exc)}")
    if isinstance(exc, SMTPResponseException):  # SMTPDataError, SMTPHeloError, RSET, STARTTLS
        if exc.code < 0:  # aiosmtplib's "invalid response": the session is out of step
            if stage is Stage.CONNECT:
                return RelayTemporaryError(f"the relay {relay} sent an invalid reply: {message}")
            return Reply(None, f"connection lost: invalid reply from the relay: {message}", stage)
        if stage is not Stage.CONNECT:
            return Reply(exc.code, message, stage)
        text = f"the relay {relay} refuses {command}: {exc.code} {message}"
        if exc.code < 500:
            return RelayTemporaryError(text)
        return ConfigError(text)
    if isinstance(exc, (SMTPTimeoutError, TimeoutError)):  # incl. SMTPReadTimeoutError
        if stage is Stage.CONNECT:
            return RelayTemporaryError(f"the relay {relay} does not answer {command}{waited}")
        return Reply(None, f"timed out: no reply to {command}{waited}", stage)
    if isinstance(exc, (SMTPServerDisconnected, OSError)):
        reason = message if isinstance(exc, SMTPException) else _os_reason(exc)
        if stage is Stage.CONNECT:
            return RelayTemporaryError(
                f"the relay {relay} closed the connection during {command}: {reason}"
            )
        return Reply(None, f"connection lost during {command}: {reason}", stage)
    if isinstance(exc, SMTPNotSupported):
        if stage is Stage.CONNECT:
            return ConfigError(f"the relay {relay} does not support it: {message}")
        return Reply(553, f"the relay does not support it: {message}", stage)
    if isinstance(exc, SMTPException):  # the root: STARTTLS or AUTH not offered, ...
        if stage is Stage.CONNECT:
            return ConfigError(f"the relay {relay}: {message}")
        return Reply(None, f"connection lost: {message}", stage)
    raise TypeError(f"not an SMTP error: {exc!r}") from exc


def _whole_run(exc: Exception, *, relay: str, secret: str | None, timeout: float) -> MailerError:
    outcome = translate_smtp_error(exc, Stage.CONNECT, relay=relay, secret=secret, timeout=timeout)
    assert isinstance(outcome, MailerError)
    return outcome


_LINE_END = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def normalize_line_ends(data: bytes) -> bytes:
    """CRLF line ends throughout, and a final CRLF: the message as the relay counts it."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") == crlf == data.count(b"\r") and data.endswith(b"\r\n"):
        return data  # already so (mailer's own messages): no copy, no regular expression
    body = _LINE_END.sub(b"\r\n", data)
    return body if body.endswith(b"\r\n") else body + b"\r\n"


def stuff_dots(body: bytes) -> bytes:
    """Double the dot that starts a line (RFC 5321 4.5.2), so no line reads as the end."""
    if not body.startswith(b".") and b"\n." not in body:
        return body  # no line starts with a dot (quoted-printable bodies seldom have one)
    return _LEADING_DOT.sub(b"..", body)


# An address that is a plain dot-atom: nothing in it can end the address on a command line,
# so it goes on the wire as it is (aiosmtplib's parse_address would give the same).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


def command_address(address: str) -> str:
    """The `<address>` of MAIL FROM / RCPT TO: aiosmtplib's quote_address, without its
    parse for the common plain address."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return f"<{parse_address(address)}>"


def _unsendable(address: str) -> str | None:
    """Why an address cannot go on an SMTP command line, or None."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return None
    if any(ord(char) < 32 or ord(char) == 127 for char in address):
        return "it contains control characters"
    try:
        parse_address(address)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass
class _Slot:
    """One connection of the pool: opened lazily, replaced after max messages or trouble."""

    smtp: SMTP | None = None
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
        if not settings.smtp_host:
            raise ConfigError(
                "no SMTP relay is configured",
                hint="set MAILER_SMTP_HOST (and MAILER_SMTP_PORT), or send with --outbox DIR",
            )
        check_auth_allowed(settings)
        self.host = settings.smtp_host
        self.security: Security = settings.smtp_security
        self.port = settings.smtp_port or DEFAULT_PORTS[self.security]
        self.relay = relay_address(self.host, self.port)
        self.description = f"{self.relay} ({self.security})"
        self.connections_opened = 0  # for logs and tests

        self._username = settings.smtp_username
        self._password = settings.smtp_password
        self._timeout = settings.smtp_timeout
        self._data_timeout = settings.smtp_data_timeout
        self._max_messages = settings.smtp_max_messages
        self._local_hostname = local_hostname
        self._tls_context = (
            None if self.security == "none"
            else verified_context(settings.smtp_ca_file, "smtp_ca_file")
        )
        size = max(1, concurrency if concurrency is not None else settings.concurrency)
        self._slots = [_Slot() for _ in range(size)]
        # Last in, first out: a sequential caller keeps reusing one warm connection.
        self._idle: asyncio.LifoQueue[_Slot] = asyncio.LifoQueue()
        for slot in self._slots:
            self._idle.put_nowait(slot)

    async def start(self) -> None:
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
                could_not_open = slot.smtp is None
                self._discard(slot)
                if not (could_not_open and self._others_alive(slot)):
                    raise
                slot.retired = True
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
            other.smtp is not None and other.smtp.is_connected
            for other in self._slots
            if other is not slot and not other.retired
        )

    async def _connection(self, slot: _Slot) -> SMTP:
        """The slot's connection, (re)opened if it is closed, broken or has sent its share."""
        smtp = slot.smtp
        if smtp is not None and smtp.is_connected and slot.messages < self._max_messages:
            return smtp
        await self._quit(slot)
        slot.smtp = await self._open()
        return slot.smtp

    async def _open(self) -> SMTP:
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
                        hint=_TLS_HINT,
                    )
                await smtp.starttls(server_hostname=self.host, tls_context=self._tls_context)
                await smtp.ehlo()
            if self._username is not None:
                await self._login(smtp)
        except BaseException as exc:
            smtp.close()
            if isinstance(exc, SMTP_ERRORS):
                raise _whole_run(
                    exc, relay=self.relay, secret=self._password, timeout=self._timeout
                ) from exc
            raise
        self.connections_opened += 1
        return smtp

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
        smtp, slot.smtp, slot.messages = slot.smtp, None, 0
        if smtp is None:
            return
        try:
            if smtp.is_connected:
                await smtp.quit(timeout=min(self._timeout, 5.0))
        except SMTP_ERRORS:
            pass
        finally:
            smtp.close()

    def _discard(self, slot: _Slot) -> None:
        """Drop a connection whose state is unknown (no QUIT: it may be mid-transaction)."""
        if slot.smtp is not None:
            slot.smtp.close()
        slot.smtp, slot.messages = None, 0

    # -- one transaction ---------------------------------------------------------------

    async def _send_on(self, slot: _Slot, submission: Submission) -> Reply:
        problem = _unsendable(submission.sender)
        if problem is not None:
            raise ConfigError(f"the sender {submission.sender!r} cannot be sent: {problem}")
        problem = _unsendable(submission.recipient)
        if problem is not None:
            return Reply(553, f"mailer cannot send this address: {problem}", Stage.RCPT)
        while True:
            smtp = await self._connection(slot)
            reused = slot.messages > 0
            slot.messages += 1
            reply = await self._transaction(smtp, submission)
            if reply.code is None or reply.code == 421 or not smtp.is_connected:
                self._discard(slot)
            # A connection that idled out while parked fails at once, at MAIL: nothing of
            # this message was sent, so try again on a fresh connection.
            stale = reply.stage is Stage.MAIL and (reply.code is None or reply.code == 421)
            if not (reused and stale):
                return reply

    async def _transaction(self, smtp: SMTP, submission: Submission) -> Reply:
        utf8 = submission.smtputf8 or not (submission.sender + submission.recipient).isascii()
        if utf8 and not smtp.supports_extension("smtputf8"):
            return Reply(553, NO_SMTPUTF8, Stage.MAIL)
        encoding = "utf-8" if utf8 else "ascii"
        body = normalize_line_ends(submission.data)
        options: list[str] = []
        if smtp.supports_extension("size"):
            options.append(f"SIZE={len(body)}")  # RFC 1870: no doubled dots, no final dot
        if utf8:
            options.append("SMTPUTF8")
        if not submission.data.isascii() and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")

        stage = Stage.MAIL
        try:
            # MAIL and RCPT as aiosmtplib's mail() and rcpt() send them and judge the reply;
            # the addresses were checked above, so they are not parsed again.
            response = await smtp.execute_command(
                b"MAIL",
                b"FROM:" + command_address(submission.sender).encode(encoding),
                *(option.encode("ascii") for option in options),
            )
            if response.code != SMTPStatus.completed:
                raise SMTPSenderRefused(response.code, response.message, submission.sender)
            stage = Stage.RCPT
            response = await smtp.execute_command(
                b"RCPT", b"TO:" + command_address(submission.recipient).encode(encoding)
            )
            if response.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
                raise SMTPRecipientRefused(response.code, response.message, submission.recipient)
            stage = Stage.DATA
            response = await smtp.execute_command(b"DATA")
            if response.code != 354:
                raise SMTPDataError(response.code, response.message)
            protocol = smtp.protocol
            if protocol is None:
                raise SMTPServerDisconnected("Connection lost")
            # The body first, and the final dot only once asyncio has passed the body to
            # the socket: until the dot is written the relay cannot accept the message
            # (stage DATA, safe to try again); from then on it may have (stage DATA_END).
            protocol.write(stuff_dots(body))
            if not await self._drained(smtp):
                return Reply(
                    None,
                    f"timed out: the relay did not take the message within "
                    f"{self._data_timeout:g} s",
                    Stage.DATA,
                )
            protocol.write(b".\r\n")  # raises if the connection is gone: nothing sent
            stage = Stage.DATA_END
            response = await protocol.read_response(timeout=self._data_timeout)
            if not 200 <= response.code < 300:
                raise SMTPDataError(response.code, response.message)
            return Reply(response.code, response.message, Stage.DATA_END)
        except SMTP_ERRORS as exc:
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
                await self._reset(smtp)
            return outcome

    async def _drained(self, smtp: SMTP) -> bool:
        """Wait until the transport's write buffer is empty; False if that takes too long.

        Ordinary messages leave nothing buffered (no wait at all). Over TLS this sees the
        TLS layer's buffer only, not the socket's beneath it: a loss then counts as after
        the dot (DATA_END), the safe side.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._data_timeout
        pause = 0.001
        while True:
            transport = smtp.transport
            if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
                raise SMTPServerDisconnected("Connection lost while sending the message")
            if transport.get_write_buffer_size() == 0:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def _reset(self, smtp: SMTP) -> None:
        """RSET after a refusal so the connection serves the next message; close if it fails."""
        if not smtp.is_connected:
            return
        try:
            await smtp.rset()
        except SMTP_ERRORS:
            smtp.close()


def smtp_transport(settings: Settings, concurrency: int | None = None) -> SmtpPool:
    """The SMTP Transport for these settings (K = concurrency, or settings.concurrency)."""
    return SmtpPool(settings, concurrency=concurrency)
