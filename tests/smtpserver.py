"""A scripted SMTP relay for tests: a real aiosmtpd server on 127.0.0.1, in a background thread.

Register the fixtures once, in tests/conftest.py (importing them by name instead trips
ruff's F401/F811 in every test file; type hints can import under `if TYPE_CHECKING:`):

    pytest_plugins = ["tests.smtpserver"]

Then:

    def test_reject_fails(smtp_server: ScriptedSMTPServer) -> None:
        settings = smtp_server.settings(smtp_timeout=0.5)  # host, port, security, CA file,
                                                           # credentials; timeouts default 5 s
        ...send to "ok1@example.org" and "reject1@example.org"...
        assert smtp_server.copies("ok1@example.org") == 1

Fixtures
    smtp_server          a plain relay: no TLS, no AUTH; SMTPUTF8, 8BITMIME and PIPELINING offered
    smtp_server_factory  `smtp_server_factory(tls="starttls", auth={"user": "pw"}, ...)`: a
                         relay with options (see ScriptedSMTPServer); all stopped after the test
    tls_certificates     (session) a trustme CA, a certificate for 127.0.0.1, ::1 and
                         localhost, and `.ca_file`: the CA in PEM, for `smtp_ca_file`
    closed_port          a port on 127.0.0.1 where nothing listens (connection refused)

What the relay does, by the recipient's local part (a case-insensitive prefix: `reject-7@x`,
`ok42@x`; anything not listed is accepted like `ok`):

    ok…                accepted; the reply after the dot holds a queue id: `2.0.0 Ok: queued as Q1`
    temp…              451 4.3.0 on RCPT the first time this address is seen, accepted afterwards
    greylist…          450 4.7.1 on RCPT the first time, accepted afterwards
    reject…            550 5.1.1 on RCPT
    full…              552 5.2.2 on RCPT
    close421…          421 4.7.0 on RCPT, then the connection is closed
    drop-before-data…  the connection is closed on RCPT, with no reply
    drop-at-data…      RCPT accepted; the connection is closed on DATA, before the 354
    drop-during-data…  354, then the connection is closed after 64 KiB of the message
    stall…             RCPT is answered (250) only after `stall_seconds`
    refuse-data…       554 5.7.1 after the final dot (not recorded as received)
    defer-data…        451 4.3.0 after the final dot (not recorded as received)
    drop-after-data…   recorded as received, then the connection is closed with no reply
    stall-after-data…  recorded; the 250 after the dot comes after `stall_seconds`
    slow…              recorded; the 250 after the dot comes after `slow_seconds`

And by the sender's (MAIL FROM) local part: `refuse-sender…` → 550 5.7.1, `temp-sender…` →
451 4.3.2. A `script(recipient, attempt)` callable (attempt: 1 for the first RCPT of that
address) overrides the vocabulary: it returns a word above, an SMTP reply line given on RCPT
(`"451 4.3.0 busy"`; a 2xx line accepts), or None to fall back to the local part. Example:
`script=lambda rcpt, attempt: "451 4.3.0 busy" if attempt < 3 else "ok"`.

Scripts for the other stages (each returns an SMTP reply line, or None for the usual reply):

    greeting_script(n)            n: the connection's number (1-based, real connections only,
                                  not aiosmtpd's start-up probe). A line replaces the greeting
                                  (the `greeting` option's or the 220); unless it is 2xx, the
                                  relay hangs up after it.
    mail_script(sender, n)        n: the n-th MAIL FROM on this relay. A non-2xx line is the
                                  reply instead of 250 (before the sender vocabulary above);
                                  a 2xx line or None: as usual.
    data_script(recipients, n)    called after the final dot, n: the n-th message on this
                                  relay. A non-2xx line refuses the message (not recorded);
                                  a 2xx line or None: as usual (the vocabulary after the dot).

Whatever the stage, a scripted `421 …` line is followed by a hang-up, as a real relay does.

A relay's budget: `refusal = server.refuse(stage, line, after=n)` installs a Refusal as the
script of `stage` ("greeting", "mail", "rcpt" or "data"): the usual replies until the relay
has accepted `n` messages (`server.accepted`, counted when each final dot is accepted), then
`line` at that stage, for every connection, until the test sets `refusal.active = False`
(the budget is back). A Refusal accepts any script's arguments, so it can also be wrapped or
assigned by hand (`server.mail_script = Refusal(server, line, after=10)`); scripts are read
on each call and may be replaced while the relay runs. Example:

    quota = server.refuse("rcpt", "550 5.4.5 Daily user sending quota exceeded", after=10)
    ...send: 10 accepted, then every RCPT refused...
    quota.active = False          # the next day: everything accepted again

Server options (see ScriptedSMTPServer): tls, auth, auth_over_plain, smtputf8, script,
mail_script, data_script, greeting_script, stall_seconds, slow_seconds, greeting,
greeting_delay, max_connections, idle_timeout, pipelining (offer PIPELINING; the default).

Everything is recorded thread-safely: `messages` (sender, recipients, bytes, Message-ID, MAIL
options, queue id, `received_at`: time.time() when the final dot was accepted), `accepted`
(how many messages), `copies(recipient)`, `copies_by_recipient()`, `rcpt_attempts(address)`,
`sessions` (one per connection that said EHLO or HELO: TLS or not, the AUTH login, its
transactions, closed or not), `connections` (every connection made, said EHLO or not: also
those refused at the greeting by max_connections or a greeting script), `open_connections`
and `max_concurrent_transactions`. `reset()` forgets it all (the scripts' counts start over).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AiosmtpdSMTP
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from mailer.core.config import Settings

TLSMode = Literal["none", "starttls", "tls"]
Script = Callable[[str, int], "str | None"]  # RCPT: (recipient, attempt of that address)
MailScript = Callable[[str, int], "str | None"]  # (sender, n-th MAIL FROM on this relay)
DataScript = Callable[[tuple[str, ...], int], "str | None"]  # (recipients, n-th message)
GreetingScript = Callable[[int], "str | None"]  # (n-th connection to this relay)
RefusalStage = Literal["greeting", "mail", "rcpt", "data"]

# Longest first where one word is the prefix of another.
RECIPIENT_WORDS = (
    "drop-before-data", "drop-after-data", "drop-at-data", "drop-during-data",
    "stall-after-data", "refuse-data",
    "defer-data", "greylist", "close421", "reject", "stall", "temp", "full", "slow", "ok",
)
_DATA_WORDS = ("refuse-data", "defer-data", "drop-after-data", "stall-after-data", "slow")
_REPLY_LINE = re.compile(r"^[2-5]\d\d[ -]")
_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(<[^>\r\n]*>)")


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the relay has (accepted, or received before it hung up)."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes  # as received, dots un-doubled, CRLF line ends
    message_id: str | None
    session: int  # SessionRecord.number of the connection it came on
    mail_options: tuple[str, ...]
    queue_id: str
    received_at: float  # time.time() when the final dot was accepted (before any late reply)


@dataclass
class SessionRecord:
    """One client connection (counted once it says EHLO or HELO)."""

    number: int
    tls: bool = False
    login: str | None = None
    transactions: int = 0  # MAIL FROM accepted
    closed: bool = False


class Refusal:
    """A script for any stage: None (the usual reply) until `server` has accepted `after`
    messages, then `line`, while `active`. Set `active = False` to lift it; `refused` counts
    the replies it gave. Usually made by `server.refuse(stage, line, after=n)`."""

    def __init__(self, server: ScriptedSMTPServer, line: str, after: int = 0) -> None:
        if not _REPLY_LINE.match(line):
            raise ValueError(f"not an SMTP reply line: {line!r}")
        self.server = server
        self.line = line
        self.after = after
        self.active = True
        self.refused = 0

    def __call__(self, *arguments: object) -> str | None:
        if self.active and self.server.accepted >= self.after:
            self.refused += 1
            return self.line
        return None


@dataclass(frozen=True)
class TLSCertificates:
    """A trustme CA, a server certificate for loopback names, and the CA as a PEM file."""

    ca: trustme.CA
    cert: trustme.LeafCert
    ca_file: Path

    @classmethod
    def create(cls, folder: Path) -> TLSCertificates:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "::1", "localhost")
        ca_file = folder / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        return cls(ca, cert, ca_file)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context


class ScriptedSMTPServer:
    """An aiosmtpd relay on 127.0.0.1 (a free port) with scripted replies; see the module doc.

    tls: "none" (plain; STARTTLS not offered), "starttls" (offered), "tls" (implicit TLS);
    the last two need `certificates`. auth: {login: password}; when given, AUTH PLAIN/LOGIN
    is offered (over TLS only unless auth_over_plain) and MAIL requires it. smtputf8: offer
    SMTPUTF8. script, mail_script, data_script, greeting_script: scripted replies at RCPT,
    MAIL, after the final dot, at the greeting (see the module doc). greeting: replaces the
    220 greeting (a non-2xx one is followed by a hang-up); greeting_delay: seconds before
    it. max_connections: connections past this many open at once are greeted with 421 4.7.0
    and closed (a relay's per-client limit). idle_timeout: seconds of client silence before
    the relay closes the connection. pipelining: offer PIPELINING (RFC 2920) in the EHLO
    reply (aiosmtpd reads pipelined commands in order either way). Use as a context
    manager, or start()/stop().
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        tls: TLSMode = "none",
        certificates: TLSCertificates | None = None,
        auth: Mapping[str, str] | None = None,
        auth_over_plain: bool = False,
        smtputf8: bool = True,
        script: Script | None = None,
        mail_script: MailScript | None = None,
        data_script: DataScript | None = None,
        greeting_script: GreetingScript | None = None,
        stall_seconds: float = 2.0,
        slow_seconds: float = 0.3,
        greeting: str | None = None,
        greeting_delay: float = 0.0,
        max_connections: int | None = None,
        idle_timeout: float = 60.0,
        pipelining: bool = True,
    ) -> None:
        if tls != "none" and certificates is None:
            raise ValueError(f"tls={tls!r} needs certificates (the tls_certificates fixture)")
        self.tls = tls
        self.certificates = certificates
        self.auth = dict(auth or {})
        self.script = script
        self.mail_script = mail_script
        self.data_script = data_script
        self.greeting_script = greeting_script
        self.stall_seconds = stall_seconds
        self.slow_seconds = slow_seconds
        self.greeting = greeting
        self.greeting_delay = greeting_delay
        self.max_connections = max_connections
        self.pipelining = pipelining
        self.port = 0
        self._serving = False  # False during aiosmtpd's own start-up probe connection
        self._open = 0  # connections greeted and not yet closed
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._rcpt_attempts: Counter[str] = Counter()
        self._sessions: list[SessionRecord] = []
        self._active = 0
        self._max_active = 0
        self._connections = 0  # every connection made (not the start-up probe)
        self._mails = 0  # MAIL FROM commands received
        self._datas = 0  # messages whose final dot arrived

        smtp_options: dict[str, Any] = {"enable_SMTPUTF8": smtputf8, "timeout": idle_timeout}
        if tls == "starttls":
            assert certificates is not None
            smtp_options["tls_context"] = certificates.server_context()
        if self.auth:  # AUTH is required by handle_MAIL (aiosmtpd warns if told to over plain)
            smtp_options.update(
                authenticator=self._authenticate, auth_require_tls=not auth_over_plain
            )
        self._controller = _Controller(
            self,
            _Handler(self),
            ssl_context=certificates.server_context() if tls == "tls" and certificates else None,
            **smtp_options,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> ScriptedSMTPServer:
        self._controller.start()  # greets its own probe connection before returning
        self.port = self._controller.port
        self._serving = True
        return self

    def stop(self) -> None:
        """Stop the relay (again is fine): its port then refuses connections."""
        if self._controller._thread is not None:
            self._controller.stop()

    def __enter__(self) -> ScriptedSMTPServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def settings(self, **overrides: Any) -> Settings:
        """Settings that reach this relay (credentials too, when it has exactly one user)."""
        values: dict[str, Any] = {
            "smtp_host": self.host,
            "smtp_port": self.port,
            "smtp_security": self.tls,
            "smtp_ca_file": self.certificates.ca_file if self.certificates else None,
            "smtp_timeout": 5.0,
            "smtp_data_timeout": 5.0,
        }
        if len(self.auth) == 1:
            [(values["smtp_username"], values["smtp_password"])] = self.auth.items()
        values.update(overrides)
        return replace(Settings(), **values)

    # -- what was received (safe to call from the test's thread) ----------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def sessions(self) -> list[SessionRecord]:
        with self._lock:
            return [replace(record) for record in self._sessions]

    @property
    def accepted(self) -> int:
        """How many messages the relay has accepted (recorded in `messages`)."""
        with self._lock:
            return len(self._messages)

    @property
    def connections(self) -> int:
        """Every connection made to the relay, including those refused at the greeting."""
        with self._lock:
            return self._connections

    @property
    def open_connections(self) -> int:
        with self._lock:
            return self._open

    @property
    def max_concurrent_transactions(self) -> int:
        with self._lock:
            return self._max_active

    def copies(self, recipient: str) -> int:
        """How many copies of any message this recipient has received."""
        return self.copies_by_recipient()[recipient]

    def copies_by_recipient(self) -> Counter[str]:
        with self._lock:
            return Counter(r for message in self._messages for r in message.recipients)

    def rcpt_attempts(self, address: str) -> int:
        with self._lock:
            return self._rcpt_attempts[address]

    def reset(self) -> None:
        """Forget everything received (the behaviours' "first time" starts over too)."""
        with self._lock:
            self._messages.clear()
            self._rcpt_attempts.clear()
            self._sessions.clear()
            self._max_active = 0
            self._connections = self._mails = self._datas = 0

    def refuse(self, stage: RefusalStage, line: str, *, after: int = 0) -> Refusal:
        """Answer `line` at `stage` once `after` messages are accepted (replacing that stage's
        script); `active = False` on the Refusal returned lifts it."""
        refusal = Refusal(self, line, after)
        if stage == "greeting":
            self.greeting_script = refusal
        elif stage == "mail":
            self.mail_script = refusal
        elif stage == "rcpt":
            self.script = refusal
        elif stage == "data":
            self.data_script = refusal
        else:
            raise ValueError(f"unknown stage {stage!r}: greeting, mail, rcpt or data")
        return refusal

    # -- called from the server thread ------------------------------------------------

    def _session(self, server: _ScriptedSMTP) -> SessionRecord:
        with self._lock:
            if server.record is None:
                server.record = SessionRecord(number=len(self._sessions) + 1)
                self._sessions.append(server.record)
            return server.record

    def _authenticate(
        self, server: _ScriptedSMTP, session: Session, envelope: Envelope, mechanism: str,
        auth_data: LoginPassword,
    ) -> AuthResult:
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        success = login in self.auth and self.auth[login] == password
        if success:
            record = self._session(server)
            with self._lock:
                record.login = login
        return AuthResult(success=success, handled=False)

    def _count_rcpt(self, address: str) -> int:
        with self._lock:
            self._rcpt_attempts[address] += 1
            return self._rcpt_attempts[address]

    def _behaviour(self, address: str, attempt: int) -> str:
        if self.script is not None:
            chosen = self.script(address, attempt)
            if chosen is not None:
                return chosen
        local = address.rpartition("@")[0].lower() if "@" in address else address.lower()
        return next((word for word in RECIPIENT_WORDS if local.startswith(word)), "ok")

    def _begin(self, server: _ScriptedSMTP) -> None:
        record = self._session(server)
        with self._lock:
            record.transactions += 1
            record.tls = _over_tls(server)
            if not server.in_transaction:
                server.in_transaction = True
                self._active += 1
                self._max_active = max(self._max_active, self._active)

    def _end(self, server: _ScriptedSMTP) -> None:
        with self._lock:
            if server.in_transaction:
                server.in_transaction = False
                self._active -= 1

    def _record(self, server: _ScriptedSMTP, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        found = _MESSAGE_ID.search(data.split(b"\r\n\r\n", 1)[0])
        record = self._session(server)
        with self._lock:
            queue_id = f"Q{len(self._messages) + 1}"
            self._messages.append(ReceivedMessage(
                sender=envelope.mail_from or "",
                recipients=tuple(envelope.rcpt_tos),
                data=data,
                message_id=found.group(1).decode("utf-8", "replace") if found else None,
                session=record.number,
                mail_options=tuple(envelope.mail_options),
                queue_id=queue_id,
                received_at=time.time(),
            ))
        return queue_id

    def _greeted(self, server: _ScriptedSMTP) -> tuple[int, bool]:
        """Count a new connection: its number, and False if it is one too many."""
        with self._lock:
            server.counted = True
            self._open += 1
            self._connections += 1
            allowed = self.max_connections is None or self._open <= self.max_connections
            return self._connections, allowed

    def _greeting(self, number: int) -> str | None:
        """The scripted greeting of connection `number`, else the `greeting` option."""
        if self.greeting_script is not None:
            line = self.greeting_script(number)
            if line is not None:
                return line
        return self.greeting

    def _mail_reply(self, sender: str) -> str | None:
        """mail_script's refusal of this MAIL FROM, if any."""
        with self._lock:
            self._mails += 1
            number = self._mails
        return _refusal(self.mail_script(sender, number)) if self.mail_script else None

    def _data_reply(self, recipients: tuple[str, ...]) -> str | None:
        """data_script's refusal of this message, if any."""
        with self._lock:
            self._datas += 1
            number = self._datas
        return _refusal(self.data_script(recipients, number)) if self.data_script else None

    def _closed(self, server: _ScriptedSMTP) -> None:
        self._end(server)
        with self._lock:
            if server.counted:
                server.counted = False
                self._open -= 1
            if server.record is not None:
                server.record.closed = True


def _refusal(line: str | None) -> str | None:
    """A script's answer if it is a refusal (a non-2xx reply line); None otherwise."""
    if line is not None and _REPLY_LINE.match(line) and not line.startswith("2"):
        return line
    return None


async def _refuse(server: AiosmtpdSMTP, line: str) -> str:
    """Reply `line`; after a 421, hang up as a real relay does (then it does not return)."""
    if line.startswith("421"):
        await server.push(line)
        await _hang_up(server)
    return line


def _over_tls(server: AiosmtpdSMTP) -> bool:
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


async def _hang_up(server: AiosmtpdSMTP) -> None:
    """Close the connection without a word; aiosmtpd then cancels this handler."""
    if server.transport is not None:
        server.transport.close()
    await asyncio.sleep(60)


class _ScriptedSMTP(AiosmtpdSMTP):
    """aiosmtpd's session, plus a scripted greeting and a hook when the connection ends."""

    def __init__(self, owner: ScriptedSMTPServer, handler: Any, **options: Any) -> None:
        super().__init__(handler, **options)
        self.owner = owner
        self.record: SessionRecord | None = None
        self.in_transaction = False
        self.counted = False
        self._greeted = False

    async def push(self, status: Any) -> None:
        if self._greeted:
            await super().push(status)
            return
        self._greeted = True  # the first line is the greeting
        if not self.owner._serving:  # aiosmtpd's start-up probe: a plain 220
            await super().push(status)
            return
        number, allowed = self.owner._greeted(self)
        if not allowed:
            await super().push("421 4.7.0 too many connections from your address")
            await _hang_up(self)
            return
        if self.owner.greeting_delay:
            try:
                await asyncio.sleep(self.owner.greeting_delay)
            except asyncio.CancelledError:  # the client gave up: aiosmtpd would not close
                if self.transport is not None:
                    self.transport.close()
                raise
        greeting = self.owner._greeting(number) or status
        await super().push(greeting)
        if not greeting.startswith("2"):
            await _hang_up(self)

    async def smtp_DATA(self, arg: str) -> None:
        scripted = self.envelope.__dict__.get("scripted", {}) if self.envelope else {}
        if "drop-at-data" in scripted.values():
            await _hang_up(self)
        if "drop-during-data" in scripted.values():
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.read(65536)
            await _hang_up(self)
        await super().smtp_DATA(arg)

    def connection_lost(self, error: Exception | None) -> None:
        self.owner._closed(self)
        super().connection_lost(error)


class _Controller(Controller):
    """aiosmtpd's Controller on 127.0.0.1, port 0 (aiosmtpd 1.4 cannot: issue #388)."""

    def __init__(self, owner: ScriptedSMTPServer, handler: Any, **options: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=0, server_hostname="localhost",
                         **options)
        self.owner = owner

    def factory(self) -> _ScriptedSMTP:
        return _ScriptedSMTP(self.owner, self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class _Handler:
    """aiosmtpd hooks: the scripted behaviour of each command."""

    def __init__(self, owner: ScriptedSMTPServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self, server: _ScriptedSMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        record = self.owner._session(server)
        with self.owner._lock:
            record.tls = _over_tls(server)  # again after STARTTLS
        if not self.owner.auth:  # no credentials configured: do not offer AUTH at all
            responses = [line for line in responses if not line[4:].upper().startswith("AUTH")]
        if self.owner.pipelining:  # aiosmtpd answers pipelined commands in order; say so
            responses = [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_HELO(
        self, server: _ScriptedSMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        session.host_name = hostname
        self.owner._session(server)
        return f"250 {server.hostname}"

    async def handle_MAIL(
        self, server: _ScriptedSMTP, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str:
        if self.owner.auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        scripted = self.owner._mail_reply(address)
        if scripted is not None:
            return await _refuse(server, scripted)
        local = address.rpartition("@")[0].lower()
        if local.startswith("refuse-sender"):
            return "550 5.7.1 sender address rejected: not allowed to send from this address"
        if local.startswith("temp-sender"):
            return "451 4.3.2 sender temporarily refused, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.owner._begin(server)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: _ScriptedSMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        attempt = self.owner._count_rcpt(address)
        behaviour = self.owner._behaviour(address, attempt)
        if _REPLY_LINE.match(behaviour) and not behaviour.startswith("2"):
            return await _refuse(server, behaviour)
        if behaviour == "temp" and attempt == 1:
            return "451 4.3.0 temporary failure, try again later"
        if behaviour == "greylist" and attempt == 1:
            return "450 4.7.1 greylisted, try again later"
        if behaviour == "reject":
            return "550 5.1.1 mailbox unavailable: no such user"
        if behaviour == "full":
            return "552 5.2.2 mailbox full"
        if behaviour == "close421":
            await server.push("421 4.7.0 too much mail, closing connection")
            await _hang_up(server)
        if behaviour == "drop-before-data":
            await _hang_up(server)
        if behaviour == "stall":
            await asyncio.sleep(self.owner.stall_seconds)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        scripted: dict[str, str] = envelope.__dict__.setdefault("scripted", {})
        scripted[address] = behaviour
        return behaviour if _REPLY_LINE.match(behaviour) else "250 2.1.5 OK"

    async def handle_DATA(self, server: _ScriptedSMTP, session: Session, envelope: Envelope) -> str:
        chosen = set(envelope.__dict__.get("scripted", {}).values())
        behaviour = next((word for word in _DATA_WORDS if word in chosen), "ok")
        try:
            scripted = self.owner._data_reply(tuple(envelope.rcpt_tos))
            if scripted is not None:
                return await _refuse(server, scripted)
            if behaviour == "refuse-data":
                return "554 5.7.1 message refused: content rejected"
            if behaviour == "defer-data":
                return "451 4.3.0 message deferred, try again later"
            queue_id = self.owner._record(server, envelope)
            if behaviour == "drop-after-data":
                await _hang_up(server)
            if behaviour == "stall-after-data":
                await asyncio.sleep(self.owner.stall_seconds)
            if behaviour == "slow":
                await asyncio.sleep(self.owner.slow_seconds)
            return f"250 2.0.0 Ok: queued as {queue_id}"
        finally:
            self.owner._end(server)

    async def handle_RSET(self, server: _ScriptedSMTP, session: Session, envelope: Envelope) -> str:
        self.owner._end(server)
        return "250 2.0.0 OK"


# -- fixtures ----------------------------------------------------------------------------

ServerFactory = Callable[..., ScriptedSMTPServer]


@pytest.fixture(scope="session")
def tls_certificates(tmp_path_factory: pytest.TempPathFactory) -> TLSCertificates:
    """A trustme CA and a certificate for 127.0.0.1, ::1 and localhost; `.ca_file` is PEM."""
    return TLSCertificates.create(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp_server_factory(request: pytest.FixtureRequest) -> Iterator[ServerFactory]:
    """Start relays with ScriptedSMTPServer's options; every one is stopped after the test."""
    started: list[ScriptedSMTPServer] = []

    def start(**options: Any) -> ScriptedSMTPServer:
        if options.get("tls", "none") != "none" and options.get("certificates") is None:
            options["certificates"] = request.getfixturevalue("tls_certificates")
        server = ScriptedSMTPServer(**options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def smtp_server(smtp_server_factory: ServerFactory) -> ScriptedSMTPServer:
    """A plain relay (no TLS, no AUTH, SMTPUTF8 offered) with the scripted vocabulary."""
    return smtp_server_factory()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: connecting is refused."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


__all__ = [
    "RECIPIENT_WORDS",
    "DataScript",
    "GreetingScript",
    "MailScript",
    "ReceivedMessage",
    "Refusal",
    "RefusalStage",
    "ScriptedSMTPServer",
    "ServerFactory",
    "SessionRecord",
    "TLSCertificates",
    "closed_port",
    "smtp_server",
    "smtp_server_factory",
    "tls_certificates",
]
