"""The smtp-sink helper (tests/sink.py) checked with plain aiosmtplib: counts, dumps, faults."""

from __future__ import annotations

import asyncio
import time

import aiosmtplib
import pytest

from tests.sink import (  # noqa: F401 (fixture_smtp_sink_factory: the smtp_sink_factory fixture)
    SinkFactory,
    fixture_smtp_sink_factory,
    require_smtp_sink,
    start_sink,
)

SENDER = "liste@asso.example.org"


def message(number: int, recipient: str) -> bytes:
    return (
        f"From: Asso <{SENDER}>\r\nTo: <{recipient}>\r\nSubject: n°{number}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        f"Bonjour,\r\n.une ligne qui commence par un point\r\nmessage {number}\r\n"
    ).encode()


async def send_all(host: str, port: int, messages: list[tuple[str, bytes]]) -> None:
    """Each message in its own transaction, over one connection."""
    async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False) as smtp:
        for recipient, data in messages:
            await smtp.sendmail(SENDER, [recipient], data)


def test_counts_every_message_and_copy(smtp_sink_factory: SinkFactory) -> None:
    sink = smtp_sink_factory()
    batches = [
        [(f"abonne{n}@exemple.fr", message(n, f"abonne{n}@exemple.fr")) for n in range(i, 20, 2)]
        for i in range(2)
    ]

    async def main() -> None:
        await asyncio.gather(*(send_all(sink.host, sink.port, batch) for batch in batches))

    asyncio.run(main())
    # Each message is recorded before its 250 reply: nothing to wait for.
    assert sink.count() == 20
    assert sink.wait_for(20, timeout=0) == 20
    received = sink.messages()
    assert len(received) == 20
    copies = sink.recipients()
    assert set(copies) == {f"abonne{n}@exemple.fr" for n in range(20)}
    assert set(copies.values()) == {1}
    sent = {recipient: data for batch in batches for recipient, data in batch}
    for item in received:
        assert item.sender == SENDER
        (recipient,) = item.recipients
        assert item.wire_data == sent[recipient]  # byte for byte, dots unstuffed
    assert sink.counters().sessions == 2  # no probe connection is counted


def test_counts_one_copy_per_recipient_of_a_transaction(smtp_sink_factory: SinkFactory) -> None:
    sink = smtp_sink_factory()

    async def main() -> None:
        async with aiosmtplib.SMTP(hostname=sink.host, port=sink.port, start_tls=False) as smtp:
            await smtp.sendmail(SENDER, ["a@exemple.fr", "b@exemple.fr"], message(1, "a"))
            await smtp.sendmail(SENDER, ["a@exemple.fr"], message(2, "a"))

    asyncio.run(main())
    assert sink.count() == 2
    assert sink.recipients() == {"a@exemple.fr": 2, "b@exemple.fr": 1}


def test_count_only_sink_has_no_dump(smtp_sink_factory: SinkFactory) -> None:
    sink = smtp_sink_factory(dump=False)
    asyncio.run(send_all(sink.host, sink.port, [("a@exemple.fr", message(1, "a"))]))
    assert sink.count() == 1
    with pytest.raises(RuntimeError, match="only counts"):
        sink.recipients()


async def rcpt_reply(host: str, port: int) -> tuple[int, bool]:
    """The reply to RCPT TO (refused or not), and whether the connection is still open."""
    smtp = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False)
    await smtp.connect()
    await smtp.mail(SENDER)
    try:
        code = (await smtp.rcpt("a@exemple.fr")).code
    except aiosmtplib.SMTPRecipientRefused as exc:
        code = exc.code
    connected = smtp.is_connected
    if connected:
        await smtp.quit()
    return code, connected


@pytest.mark.parametrize(
    ("flags", "code", "still_connected"),
    [
        (("-f", "RCPT"), 500, True),  # hard: 500 5.3.0 Error: command failed
        (("-r", "RCPT"), 450, True),  # soft: 450 4.3.0 Error: command failed
        (("-B", "550 5.1.1 No such user", "-f", "RCPT"), 550, True),
        (("-b", "451 4.7.1 Try again later", "-r", "RCPT"), 451, True),
        (("-Q", "RCPT"), 421, False),  # 421 4.0.0 Server closing connection
    ],
)
def test_fault_flags_reply_to_rcpt(
    smtp_sink_factory: SinkFactory, flags: tuple[str, ...], code: int, still_connected: bool
) -> None:
    sink = smtp_sink_factory(*flags)
    assert asyncio.run(rcpt_reply(sink.host, sink.port)) == (code, still_connected)
    assert sink.count() == 0


def test_disconnect_without_reply(smtp_sink_factory: SinkFactory) -> None:
    sink = smtp_sink_factory("-q", "RCPT")
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        asyncio.run(rcpt_reply(sink.host, sink.port))


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (("-f", "."), aiosmtplib.SMTPDataError),  # 500 after the message
        (("-Q", "."), aiosmtplib.SMTPDataError),  # 421 after the message
        (("-q", "."), aiosmtplib.SMTPServerDisconnected),  # no reply at all
    ],
)
def test_message_refused_or_unanswered_at_the_end_is_still_received(
    smtp_sink_factory: SinkFactory, flags: tuple[str, ...], error: type[Exception]
) -> None:
    """The sink has the message although the client was told otherwise (or nothing)."""
    sink = smtp_sink_factory(*flags)
    with pytest.raises(error):
        asyncio.run(send_all(sink.host, sink.port, [("a@exemple.fr", message(1, "a"))]))
    assert sink.wait_for(1) == 1
    assert sink.recipients() == {"a@exemple.fr": 1}


def test_delayed_reply(smtp_sink_factory: SinkFactory) -> None:
    sink = smtp_sink_factory("-W", "rcpt:1")
    started = time.monotonic()
    assert asyncio.run(rcpt_reply(sink.host, sink.port)) == (250, True)
    assert time.monotonic() - started >= 0.9


def test_refuses_the_options_it_manages() -> None:
    require_smtp_sink()
    with pytest.raises(ValueError, match="set by start_sink"), start_sink("-d", "/tmp/x"):
        pass


def test_stops_the_process_on_exit() -> None:
    with start_sink(dump=False) as sink:
        process = sink.process
        assert process.poll() is None
    assert process.poll() is not None
