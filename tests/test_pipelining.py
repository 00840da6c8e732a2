"""SMTP PIPELINING (RFC 2920) and the reply reader behind every connection (sending/session.py).

The transport's behaviour per stage is tested in test_transport.py, against a relay that
offers PIPELINING and one that does not. Here: the reader itself (fed by asyncio's protocol
interface), what goes in each write, and relays scripted line by line (a raw asyncio server on
127.0.0.1) for what aiosmtpd will not do: withhold replies until the whole group has come,
and accept DATA after refusing every recipient.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import pytest
from aiosmtplib import SMTPReadTimeoutError, SMTPResponseException, SMTPServerDisconnected

from mailer.core.config import Settings, load_settings
from mailer.core.delivery import Reply, Stage, Submission
from mailer.core.errors import ConfigError
from mailer.sending.session import MAX_LINE_LENGTH, ReplyReader, Session
from mailer.sending.smtp import ONE_WRITE, SmtpPool

if TYPE_CHECKING:
    from tests.smtpserver import ServerFactory

T = TypeVar("T")
SENDER = "news@example.org"


def submission(recipient: str, number: int = 1, body: str = "Hello.\r\n") -> Submission:
    message_id = f"<p{number}@mailer.test>"
    data = (f"Message-ID: {message_id}\r\nFrom: {SENDER}\r\nTo: {recipient}\r\n"
            f"Subject: test {number}\r\n\r\n{body}").encode()
    return Submission(number, SENDER, recipient, data, message_id)


def run(coroutine: Awaitable[T]) -> T:
    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


async def send_all(settings: Settings, submissions: list[Submission]) -> list[Reply]:
    pool = SmtpPool(settings, concurrency=1, local_hostname="client.mailer.test")
    await pool.start()
    try:
        return [await pool.send(item) for item in submissions]
    finally:
        await pool.close()


# -- the reader -----------------------------------------------------------------------------


def read_all(chunks: list[bytes], count: int, *, lost: bool = False) -> list[object]:
    """Feed `chunks` to a ReplyReader as a transport would, then read `count` replies (or
    the exception raised in their place)."""

    async def main() -> list[object]:
        reader = ReplyReader()
        for chunk in chunks:
            reader.data_received(chunk)
        if lost:
            reader.connection_lost(None)
        out: list[object] = []
        for _ in range(count):
            try:
                out.append(tuple(await reader.read_response(timeout=0.2)))
            except Exception as exc:  # the test looks at which
                out.append(exc)
        return out

    return asyncio.run(main())


def test_every_reply_of_one_chunk_is_kept_in_order() -> None:
    # What aiosmtplib's own protocol loses: the second and third reply of one chunk.
    assert read_all([b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data\r\n"], 3) == [
        (250, "2.1.0 Ok"), (250, "2.1.5 Ok"), (354, "End data"),
    ]


def test_replies_split_anywhere_and_multiline_replies_are_whole() -> None:
    stream = b"250-first line\r\n250-second\r\n250 last\r\n550 5.1.1 no such user\r\n"
    for cut in range(1, len(stream)):
        assert read_all([stream[:cut], stream[cut:]], 2) == [
            (250, "first line\nsecond\nlast"), (550, "5.1.1 no such user"),
        ]


def test_replies_before_a_lost_connection_come_first_then_the_loss() -> None:
    first, second = read_all([b"250 Ok\r\n"], 2, lost=True)
    assert first == (250, "Ok")
    assert isinstance(second, SMTPServerDisconnected)


def test_a_malformed_or_endless_reply_is_an_smtp_error_not_a_hang() -> None:
    [malformed] = read_all([b"hello there\r\n"], 1)
    assert isinstance(malformed, SMTPResponseException)
    assert "Malformed SMTP response line: hello there" in malformed.message
    [endless] = read_all([b"250 " + b"x" * MAX_LINE_LENGTH], 1)
    assert isinstance(endless, SMTPResponseException)
    assert endless.message == "Response too long"
    [continued] = read_all([b"250-more\r\n" * 5000], 1)
    assert isinstance(continued, SMTPResponseException)


def test_a_flood_of_replies_is_refused_and_none_of_it_is_read_as_a_reply() -> None:
    [flood] = read_all([b"250 2.1.0 Ok\r\n" * 40], 1)
    assert isinstance(flood, SMTPResponseException)
    assert flood.message == "Replies to commands never sent"


def test_a_reply_that_does_not_come_is_a_read_timeout() -> None:
    [partial] = read_all([b"250 no end of line"], 1)
    assert isinstance(partial, SMTPReadTimeoutError)


def test_no_command_line_can_carry_another_command() -> None:
    """The last guard (addresses are refused before: sending.wire.unsendable): a line with
    CR, LF or any control character is never written."""

    class Recorder(asyncio.WriteTransport):
        def __init__(self) -> None:
            super().__init__()
            self.data = b""

        def write(self, data: bytes | bytearray | memoryview) -> None:
            self.data += bytes(data)

        def is_closing(self) -> bool:
            return False

    async def main() -> None:
        transport = Recorder()
        session = Session(transport, ReplyReader(), {"pipelining"})
        for line in (b"RCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>", b"MAIL FROM:<\x00>"):
            with pytest.raises(ValueError, match="control character"):
                await session.command(line, 0.1)
            with pytest.raises(ValueError, match="control character"):
                await session.envelope(line, b"RCPT TO:<c@example.org>",
                                       submission("c@example.org"), 0.1)
        assert transport.data == b""

    asyncio.run(main())


# -- what goes in each write, against aiosmtpd -------------------------------------------------


def spy_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    writes: list[bytes] = []
    original = Session.write

    def spy(self: Session, data: bytes) -> None:
        writes.append(data)
        original(self, data)

    monkeypatch.setattr(Session, "write", spy)
    return writes


@pytest.mark.parametrize(
    ("offered", "setting", "pipelined"),
    [(True, True, True), (False, True, False), (True, False, False)],
    ids=["offered", "not-offered", "turned-off"],
)
def test_the_envelope_goes_in_one_write_only_where_pipelining_is_offered_and_on(
    smtp_server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch,
    offered: bool, setting: bool, pipelined: bool,
) -> None:
    server = smtp_server_factory(pipelining=offered)
    writes = spy_writes(monkeypatch)
    replies = run(send_all(server.settings(smtp_pipelining=setting),
                           [submission("ok1@example.org"), submission("ok2@example.org", 2)]))
    assert all(reply.accepted for reply in replies)
    envelopes = [w for w in writes if w.startswith(b"MAIL FROM:")]
    assert len(envelopes) == 2
    if pipelined:
        for number, envelope in enumerate(envelopes, 1):
            assert envelope.endswith(b"\r\nRCPT TO:<ok%d@example.org>\r\nDATA\r\n" % number)
    else:
        assert all(w.count(b"\r\n") == 1 for w in envelopes)  # MAIL alone
        assert writes.count(b"DATA\r\n") == 2
    assert server.copies("ok1@example.org") == server.copies("ok2@example.org") == 1


def test_an_ordinary_message_and_its_dot_go_in_one_write(
    smtp_server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to ONE_WRITE bytes, the body and the final dot are one write (one system call);
    a larger body is written first, its dot after (so a loss before the dot is known)."""
    server = smtp_server_factory()
    writes = spy_writes(monkeypatch)
    small = submission("ok1@example.org")
    large = submission("ok2@example.org", 2, body=("y" * 76 + "\r\n") * (ONE_WRITE // 78 + 1))
    replies = run(send_all(server.settings(), [small, large]))
    assert all(reply.accepted for reply in replies)
    ends = [w for w in writes if w.endswith(b".\r\n")]
    assert ends[0] == small.data + b".\r\n"  # the whole message and its dot, at once
    assert ends[1] == b".\r\n"  # the large one: its dot alone, after the body
    assert [m.data for m in server.messages] == [small.data, large.data]


def test_pipelining_over_starttls_with_auth(
    smtp_server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader takes over the TLS transport aiosmtplib negotiated (set_protocol)."""
    server = smtp_server_factory(tls="starttls", auth={"news": "s3cret"})
    writes = spy_writes(monkeypatch)
    settings = server.settings()
    replies = run(send_all(settings, [submission(f"ok{n}@example.org", n) for n in range(3)]))
    assert [reply.code for reply in replies] == [250, 250, 250]
    assert sum(w.startswith(b"MAIL FROM:") and w.endswith(b"DATA\r\n") for w in writes) == 3
    [session] = server.sessions
    assert session.tls
    assert session.login == "news"


# -- relays scripted line by line ---------------------------------------------------------------

Answer = Callable[[bytes, "LineRelay"], "bytes | None"]
HANG_UP = b""  # an answer that closes the connection without a word


@dataclass
class LineRelay:
    """A relay on 127.0.0.1 written with asyncio streams: `answer(line, relay)` gives the
    reply bytes for each command line (None: no reply yet). Records every chunk read."""

    answer: Answer
    pipelining: bool = True
    chunks: list[bytes] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    held: list[bytes] = field(default_factory=list)  # replies withheld until DATA
    after_message: bytes = b""  # written after each message's reply, unasked
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 relay.test ESMTP\r\n")
        pending = b""
        in_data = False
        body = b""
        try:
            while chunk := await reader.read(65536):
                self.chunks.append(chunk)
                pending += chunk
                while b"\r\n" in pending:
                    line, pending = pending.split(b"\r\n", 1)
                    if in_data:
                        if line == b".":
                            in_data = False
                            self.messages.append(body)
                            body = b""
                            writer.write(b"250 2.0.0 queued\r\n" + self.after_message)
                        else:
                            body += line + b"\r\n"
                        continue
                    self.lines.append(line)
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        extra = b"250-PIPELINING\r\n" if self.pipelining else b""
                        writer.write(b"250-relay.test\r\n" + extra + b"250 8BITMIME\r\n")
                        continue
                    if verb == b"QUIT":
                        writer.write(b"221 bye\r\n")
                        await writer.drain()
                        writer.close()
                        return
                    reply = self.answer(line, self)
                    if reply == HANG_UP:
                        return
                    if reply is not None:
                        writer.write(reply)
                    if verb == b"DATA" and reply is not None and reply.endswith(b"354 go\r\n"):
                        in_data = True
                await writer.drain()
        finally:
            writer.close()

    async def __aenter__(self) -> LineRelay:
        self._server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    def settings(self) -> Settings:
        return Settings(smtp_host="127.0.0.1", smtp_port=self.port, smtp_security="none",
                        smtp_timeout=1.0, smtp_data_timeout=1.0)


def holds_until_data(line: bytes, relay: LineRelay) -> bytes | None:
    """A relay that answers MAIL and RCPT only once DATA has come: a client that waits for
    the MAIL reply before writing RCPT would wait in vain."""
    verb = line[:4].upper()
    if verb in (b"MAIL", b"RCPT"):
        relay.held.append(b"250 2.1.0 Ok\r\n")
        return None
    if verb == b"DATA":
        replies = b"".join(relay.held) + b"354 go\r\n"
        relay.held.clear()
        return replies
    return b"250 Ok\r\n"


def test_a_pipelined_group_is_one_round_trip_before_the_message() -> None:
    async def main() -> tuple[list[Reply], LineRelay]:
        async with LineRelay(holds_until_data) as relay:
            replies = await send_all(relay.settings(), [submission("a@example.org"),
                                                        submission("b@example.org", 2)])
            return replies, relay

    replies, relay = run(main())
    assert [reply.code for reply in replies] == [250, 250]
    assert len(relay.messages) == 2
    assert b"MAIL FROM:<news@example.org>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n" in relay.chunks


def test_without_pipelining_offered_each_command_waits_for_its_reply() -> None:
    def strict(line: bytes, relay: LineRelay) -> bytes | None:
        # Every chunk holds one command: nothing was written before the last reply.
        assert relay.chunks[-1] == line + b"\r\n", relay.chunks[-1]
        return b"354 go\r\n" if line == b"DATA" else b"250 Ok\r\n"

    async def main() -> tuple[list[Reply], LineRelay]:
        async with LineRelay(strict, pipelining=False) as relay:
            return await send_all(relay.settings(), [submission("a@example.org")]), relay

    [reply], relay = run(main())
    assert reply.code == 250
    assert relay.lines[1:4] == [b"MAIL FROM:<news@example.org>", b"RCPT TO:<a@example.org>",
                                b"DATA"]


def test_data_accepted_after_a_refused_recipient_gets_a_lone_dot_and_no_message() -> None:
    """RFC 2920, 3.1: a relay may say 354 though it refused every RCPT; the client then
    sends a lone dot (no message) and the refusal is the outcome."""

    def careless(line: bytes, relay: LineRelay) -> bytes | None:
        verb = line[:4].upper()
        if verb == b"RCPT" and b"nobody" in line:
            return b"550 5.1.1 no such user\r\n"
        if verb == b"DATA":
            return b"354 go\r\n"
        return b"250 Ok\r\n"

    async def main() -> tuple[list[Reply], LineRelay]:
        async with LineRelay(careless) as relay:
            replies = await send_all(relay.settings(), [submission("nobody@example.org"),
                                                        submission("a@example.org", 2)])
            return replies, relay

    (refused, accepted), relay = run(main())
    assert (refused.code, refused.stage) == (550, Stage.RCPT)
    assert refused.text == "5.1.1 no such user"
    assert accepted.accepted
    assert relay.messages[0] == b""  # the lone dot: an empty message, not the notice
    assert relay.messages[1].startswith(b"Message-ID: <p2@mailer.test>")


def test_a_relay_that_speaks_unasked_between_messages_gets_a_new_connection() -> None:
    """Words the relay sends with no command pending (here an extra line after a message's
    250) would be taken for the next command's reply: that connection is replaced."""

    def chatty(line: bytes, relay: LineRelay) -> bytes | None:
        return b"354 go\r\n" if line[:4].upper() == b"DATA" else b"250 Ok\r\n"

    async def main() -> tuple[list[Reply], LineRelay]:
        async with LineRelay(chatty, after_message=b"250 2.0.0 and one more thing\r\n") as relay:
            replies = await send_all(relay.settings(), [submission("a@example.org"),
                                                        submission("b@example.org", 2)])
            return replies, relay

    replies, relay = run(main())
    assert [(reply.code, reply.text) for reply in replies] == [(250, "2.0.0 queued")] * 2
    assert relay.lines.count(b"EHLO client.mailer.test") == 2  # a second connection
    assert len(relay.messages) == 2


def test_the_first_refusal_is_the_outcome_even_if_the_relay_then_hangs_up() -> None:
    def hangs_up(line: bytes, relay: LineRelay) -> bytes | None:
        return HANG_UP if line[:4].upper() == b"MAIL" else b"250 Ok\r\n"

    def refuses_then_hangs_up(line: bytes, relay: LineRelay) -> bytes | None:
        verb = line[:4].upper()
        return b"451 4.3.2 try later\r\n" if verb == b"MAIL" else HANG_UP

    async def main(answer: Answer) -> Reply:
        async with LineRelay(answer) as relay:
            [reply] = await send_all(relay.settings(), [submission("a@example.org")])
            return reply

    lost = run(main(hangs_up))
    assert (lost.code, lost.stage) == (None, Stage.MAIL)  # nothing sent: safe to try again
    refused = run(main(refuses_then_hangs_up))
    assert (refused.code, refused.stage, refused.text) == (451, Stage.MAIL, "4.3.2 try later")


# -- the setting --------------------------------------------------------------------------------


def test_smtp_pipelining_setting() -> None:
    assert load_settings(environ={}).smtp_pipelining is True
    for text, value in (("false", False), ("no", False), ("0", False), ("On", True)):
        assert load_settings(environ={"MAILER_SMTP_PIPELINING": text}).smtp_pipelining is value
    with pytest.raises(ConfigError, match="smtp_pipelining: must be true or false"):
        load_settings(environ={"MAILER_SMTP_PIPELINING": "maybe"})
