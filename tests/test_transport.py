"""SmtpPool and OutboxTransport against a real aiosmtpd relay (tests/smtpserver.py)."""

from __future__ import annotations

import asyncio
import inspect
import os
import stat
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import aiosmtplib
import aiosmtplib.errors
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.core.config import Settings
from mailer.core.delivery import Reply, Stage, Submission
from mailer.core.errors import ConfigError, MailerError, RelayTemporaryError
from mailer.sending.outbox import OutboxTransport, outbox_file_name
from mailer.sending.relay import check_auth_allowed, is_loopback
from mailer.sending.smtp import NO_SMTPUTF8, SmtpPool, smtp_transport
from mailer.sending.smtperrors import KNOWN_SMTP_ERRORS, translate_smtp_error
from mailer.sending.wire import stuff_dots

if TYPE_CHECKING:  # imported by pytest_plugins below, so that pytest rewrites its asserts
    from tests.smtpserver import ScriptedSMTPServer, ServerFactory


T = TypeVar("T")
SENDER = "news@example.org"


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
def smtp_server(
    request: pytest.FixtureRequest, smtp_server_factory: ServerFactory
) -> ScriptedSMTPServer:
    """The plain relay of tests/smtpserver.py, once offering PIPELINING and once not: every
    test of a stage holds for both ways of driving the envelope."""
    return smtp_server_factory(pipelining=request.param)
FAST = {"smtp_timeout": 0.5, "smtp_data_timeout": 1.0}


def submission(
    recipient: str, number: int = 1, *, sender: str = SENDER, body: str = "Hello.\r\n",
    smtputf8: bool = False,
) -> Submission:
    message_id = f"<d{number}.{recipient.partition('@')[0]}@mailer.test>"
    data = (
        f"Message-ID: {message_id}\r\nFrom: {sender}\r\nTo: {recipient}\r\n"
        f"Subject: test {number}\r\nMIME-Version: 1.0\r\n\r\n{body}"
    ).encode()
    return Submission(number, sender, recipient, data, message_id, smtputf8)


def run(coroutine: Awaitable[T]) -> T:
    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


def pool_for(settings: Settings, concurrency: int = 1) -> SmtpPool:
    return SmtpPool(settings, concurrency=concurrency, local_hostname="client.mailer.test")


async def send_all(
    settings: Settings, submissions: Sequence[Submission], concurrency: int = 1
) -> list[Reply]:
    """Start a pool, send each submission in turn, close."""
    pool = pool_for(settings, concurrency)
    await pool.start()
    try:
        return [await pool.send(item) for item in submissions]
    finally:
        await pool.close()


def send_one(settings: Settings, recipient: str) -> Reply:
    return run(send_all(settings, [submission(recipient)]))[0]


# -- outcomes per message -----------------------------------------------------------------


def test_accepted_reply_holds_the_relay_queue_id(smtp_server: ScriptedSMTPServer) -> None:
    reply = send_one(smtp_server.settings(), "ok1@example.org")

    assert reply == Reply(250, "2.0.0 Ok: queued as Q1", Stage.DATA_END)
    assert reply.accepted
    [message] = smtp_server.messages
    assert message.sender == SENDER
    assert message.recipients == ("ok1@example.org",)
    assert message.message_id == "<d1.ok1@mailer.test>"
    assert message.data == submission("ok1@example.org").data
    assert f"SIZE={len(message.data)}" in message.mail_options
    assert "BODY=8BITMIME" not in message.mail_options  # 7-bit message: not needed


@pytest.mark.parametrize(
    ("recipient", "code", "stage"),
    [
        ("temp1@example.org", 451, Stage.RCPT),
        ("greylist1@example.org", 450, Stage.RCPT),
        ("reject1@example.org", 550, Stage.RCPT),
        ("full1@example.org", 552, Stage.RCPT),
        ("refuse-data1@example.org", 554, Stage.DATA_END),
        ("defer-data1@example.org", 451, Stage.DATA_END),
    ],
)
def test_refusal_is_a_reply_and_the_connection_stays_usable(
    smtp_server: ScriptedSMTPServer, recipient: str, code: int, stage: Stage
) -> None:
    refused, accepted = run(send_all(
        smtp_server.settings(),
        [submission(recipient), submission("ok2@example.org", 2)],
    ))

    assert (refused.code, refused.stage) == (code, stage)
    assert not refused.accepted
    assert refused.text.startswith(f"{code // 100}.")  # the relay's own text
    assert accepted.accepted
    assert len(smtp_server.sessions) == 1  # RSET, not a reconnect
    assert smtp_server.copies(recipient) == 0
    assert smtp_server.copies("ok2@example.org") == 1


def test_temporary_refusal_is_accepted_when_tried_again(smtp_server: ScriptedSMTPServer) -> None:
    first, second = run(send_all(
        smtp_server.settings(), [submission("temp7@example.org"), submission("temp7@example.org")]
    ))

    assert (first.code, first.stage) == (451, Stage.RCPT)
    assert second.accepted
    assert smtp_server.copies("temp7@example.org") == 1


def test_script_overrides_the_vocabulary(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(
        script=lambda rcpt, attempt: "452 4.5.3 too many recipients" if attempt < 3 else "ok"
    )
    replies = run(send_all(server.settings(), [submission("anyone@example.org")] * 3))

    assert [(r.code, r.stage) for r in replies] == [
        (452, Stage.RCPT), (452, Stage.RCPT), (250, Stage.DATA_END)
    ]
    assert server.rcpt_attempts("anyone@example.org") == 3


@pytest.mark.parametrize(
    ("recipient", "stage", "received"),
    [
        ("drop-before-data1@example.org", Stage.RCPT, 0),
        ("drop-at-data1@example.org", Stage.DATA, 0),
        ("close421-1@example.org", Stage.RCPT, 0),
        ("drop-after-data1@example.org", Stage.DATA_END, 1),
    ],
)
def test_lost_connection_is_a_reply_and_the_pool_reconnects(
    smtp_server: ScriptedSMTPServer, recipient: str, stage: Stage, received: int
) -> None:
    lost, accepted = run(send_all(
        smtp_server.settings(), [submission(recipient), submission("ok2@example.org", 2)]
    ))

    assert lost.stage is stage
    if recipient.startswith("close421"):
        assert lost.code == 421
    else:
        assert lost.code is None
        assert lost.text.startswith("connection lost")
    assert accepted.accepted
    assert len(smtp_server.sessions) == 2
    assert smtp_server.copies(recipient) == received  # after the dot the relay has it


def test_uncertain_after_the_final_dot_is_data_end_without_code(
    smtp_server: ScriptedSMTPServer,
) -> None:
    reply = send_one(smtp_server.settings(), "drop-after-data9@example.org")

    assert reply == Reply(reply.code, reply.text, Stage.DATA_END)
    assert reply.code is None
    assert not reply.accepted
    assert smtp_server.copies("drop-after-data9@example.org") == 1


BIG_BODY = ("x" * 76 + "\r\n") * (16 * 2**20 // 78)  # more than the socket buffers hold


def test_loss_while_the_body_is_sent_is_before_the_dot(smtp_server: ScriptedSMTPServer) -> None:
    # The relay hangs up after 64 KiB: the final dot was never written, so the message
    # surely was not accepted (deferred, not uncertain).
    reply = run(send_all(
        smtp_server.settings(), [submission("drop-during-data1@example.org", body=BIG_BODY)]
    ))[0]

    assert (reply.code, reply.stage) == (None, Stage.DATA)
    assert reply.text.startswith("connection lost")


def test_loss_while_the_body_is_sent_over_tls_is_never_accepted(
    smtp_server_factory: ServerFactory,
) -> None:
    # Over TLS the pool sees the TLS layer's buffer only, so this may count as after the
    # dot: uncertain is the safe side; accepted would be wrong.
    server = smtp_server_factory(tls="starttls")
    reply = run(send_all(
        server.settings(), [submission("drop-during-data1@example.org", body=BIG_BODY)]
    ))[0]

    assert reply.code is None
    assert reply.stage in {Stage.DATA, Stage.DATA_END}


def test_large_message_is_sent_whole(smtp_server: ScriptedSMTPServer) -> None:
    sent = submission("ok1@example.org", body=BIG_BODY[: 78 * 50_000])  # 3.7 MiB, whole lines
    reply = run(send_all(smtp_server.settings(), [sent]))[0]

    assert reply.accepted
    assert smtp_server.messages[0].data == sent.data


def test_stalled_rcpt_times_out_before_data(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(stall_seconds=3.0)
    started = time.monotonic()
    stalled, accepted = run(send_all(
        server.settings(smtp_timeout=0.3),
        [submission("stall1@example.org"), submission("ok2@example.org", 2)],
    ))

    assert (stalled.code, stalled.stage) == (None, Stage.RCPT)
    assert stalled.text.startswith("timed out")
    assert "0.3 s" in stalled.text
    assert accepted.accepted
    assert time.monotonic() - started < 2.0
    assert server.copies("stall1@example.org") == 0


def test_stall_after_the_dot_times_out_as_uncertain(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(stall_seconds=3.0)
    reply = send_one(
        server.settings(smtp_timeout=0.2, smtp_data_timeout=0.4), "stall-after-data1@example.org"
    )

    assert (reply.code, reply.stage) == (None, Stage.DATA_END)
    assert reply.text.startswith("timed out")
    assert "0.4 s" in reply.text
    assert server.copies("stall-after-data1@example.org") == 1


def test_slow_reply_after_the_dot_waits_for_the_data_timeout(
    smtp_server_factory: ServerFactory,
) -> None:
    # Longer than smtp_timeout, shorter than smtp_data_timeout: a delivered message must
    # not be reported as uncertain (and then sent twice).
    server = smtp_server_factory(slow_seconds=0.6)
    reply = send_one(server.settings(smtp_timeout=0.2, smtp_data_timeout=3.0), "slow1@example.org")

    assert reply.accepted
    assert server.copies("slow1@example.org") == 1


def test_sender_refused_permanently_is_a_configuration_error(
    smtp_server: ScriptedSMTPServer,
) -> None:
    with pytest.raises(ConfigError, match=r"refuses the sender refuse-sender@example\.org: 550"):
        run(send_all(
            smtp_server.settings(),
            [submission("ok1@example.org", sender="refuse-sender@example.org")],
        ))


def test_sender_refused_temporarily_is_a_reply(smtp_server: ScriptedSMTPServer) -> None:
    [reply] = run(send_all(
        smtp_server.settings(), [submission("ok1@example.org", sender="temp-sender@example.org")]
    ))

    assert (reply.code, reply.stage) == (451, Stage.MAIL)


def test_message_is_sent_exactly_as_given_with_leading_dots(
    smtp_server: ScriptedSMTPServer,
) -> None:
    body = ".starts with a dot\r\n..two dots\r\n.\r\nlast line without CRLF"
    sent = submission("ok1@example.org", body=body)
    reply = run(send_all(smtp_server.settings(), [sent]))[0]

    assert reply.accepted
    assert smtp_server.messages[0].data == sent.data + b"\r\n"
    assert stuff_dots(b".a\r\nb\r\n..c\r\n") == b"..a\r\nb\r\n...c\r\n"


def test_unsendable_recipient_is_refused_without_touching_the_relay(
    smtp_server: ScriptedSMTPServer,
) -> None:
    reply = send_one(smtp_server.settings(), "bad address@example.org")

    assert (reply.code, reply.stage) == (553, Stage.RCPT)
    assert smtp_server.rcpt_attempts("bad address@example.org") == 0


# -- SMTPUTF8 --------------------------------------------------------------------------


def test_smtputf8_address_is_sent_with_smtputf8(smtp_server: ScriptedSMTPServer) -> None:
    recipient = "ok-jürgen@bücher.example"
    sent = submission(recipient, smtputf8=True, body="Grüße\r\n")
    reply = run(send_all(smtp_server.settings(), [sent]))[0]

    assert reply.accepted
    [message] = smtp_server.messages
    assert message.recipients == (recipient,)
    assert "SMTPUTF8" in message.mail_options
    assert "BODY=8BITMIME" in message.mail_options  # UTF-8 in the message itself


def test_smtputf8_not_offered_refuses_that_recipient_only(
    smtp_server_factory: ServerFactory,
) -> None:
    server = smtp_server_factory(smtputf8=False)
    refused, accepted = run(send_all(
        server.settings(),
        [submission("ok-jürgen@bücher.example", smtputf8=True), submission("ok2@example.org", 2)],
    ))

    assert refused == Reply(553, NO_SMTPUTF8, Stage.MAIL)
    assert accepted.accepted


# -- the pool ------------------------------------------------------------------------------


def test_pool_uses_k_connections_concurrently(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(slow_seconds=0.3)
    pool = pool_for(server.settings(), concurrency=3)

    async def main() -> list[Reply]:
        await pool.start()
        try:
            return await asyncio.gather(*(
                pool.send(submission(f"slow{n}@example.org", n)) for n in range(6)
            ))
        finally:
            await pool.close()

    started = time.monotonic()
    replies = run(main())

    assert all(reply.accepted for reply in replies)
    assert len(server.sessions) == 3
    assert pool.connections_opened == 3
    assert server.max_concurrent_transactions == 3
    assert time.monotonic() - started < 6 * 0.3  # not one after the other
    assert sum(server.copies_by_recipient().values()) == 6


def test_sequential_sends_reuse_one_connection(smtp_server: ScriptedSMTPServer) -> None:
    replies = run(send_all(
        smtp_server.settings(),
        [submission(f"ok{n}@example.org", n) for n in range(4)],
        concurrency=4,
    ))

    assert all(reply.accepted for reply in replies)
    assert len(smtp_server.sessions) == 1


def test_pool_reconnects_after_max_messages(smtp_server: ScriptedSMTPServer) -> None:
    replies = run(send_all(
        smtp_server.settings(smtp_max_messages=2),
        [submission(f"ok{n}@example.org", n) for n in range(5)],
    ))

    assert all(reply.accepted for reply in replies)
    assert [s.transactions for s in smtp_server.sessions] == [2, 2, 1]


def test_connections_are_closed_with_quit(smtp_server: ScriptedSMTPServer) -> None:
    run(send_all(smtp_server.settings(), [submission("ok1@example.org")]))

    deadline = time.monotonic() + 2
    while smtp_server.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert smtp_server.open_connections == 0
    assert all(session.closed for session in smtp_server.sessions)


def test_idle_connection_closed_by_the_relay_is_replaced(
    smtp_server_factory: ServerFactory,
) -> None:
    server = smtp_server_factory(idle_timeout=0.2)
    pool = pool_for(server.settings())

    async def main() -> list[Reply]:
        await pool.start()
        try:
            first = await pool.send(submission("ok1@example.org"))
            await asyncio.sleep(0.5)  # the relay hangs up on the idle connection
            return [first, await pool.send(submission("ok2@example.org", 2))]
        finally:
            await pool.close()

    assert all(reply.accepted for reply in run(main()))
    assert len(server.sessions) == 2


def test_relay_limiting_connections_leaves_the_pool_smaller(
    smtp_server_factory: ServerFactory,
) -> None:
    server = smtp_server_factory(max_connections=2, slow_seconds=0.1)
    pool = pool_for(server.settings(), concurrency=4)

    async def main() -> list[Reply]:
        await pool.start()
        try:
            return await asyncio.gather(*(
                pool.send(submission(f"slow{n}@example.org", n)) for n in range(8)
            ))
        finally:
            await pool.close()

    replies = run(main())

    assert all(reply.accepted for reply in replies)
    assert pool.connections_opened == 2
    assert sum(server.copies_by_recipient().values()) == 8


def test_reconnect_failing_mid_run_stops_the_run(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory()
    pool = pool_for(server.settings(**FAST))

    async def main() -> Reply:
        await pool.start()
        try:
            lost = await pool.send(submission("drop-before-data1@example.org"))
            server.stop()
            await pool.send(submission("ok2@example.org", 2))
            return lost
        finally:
            await pool.close()

    with pytest.raises(RelayTemporaryError, match=f"127.0.0.1:{server.port}") as caught:
        run(main())
    assert caught.value.exit_code == 75


def test_cancelled_send_frees_its_connection(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(stall_seconds=3.0)
    pool = pool_for(server.settings(smtp_timeout=5.0))

    async def main() -> Reply:
        await pool.start()
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pool.send(submission("stall1@example.org")), 0.2)
            return await pool.send(submission("ok2@example.org", 2))
        finally:
            await pool.close()

    assert run(main()).accepted
    assert len(server.sessions) == 2  # the interrupted session was not reused


# -- whole-run errors while connecting ----------------------------------------------------


def test_connection_refused_is_temporary_and_names_the_relay(closed_port: int) -> None:
    settings = Settings(smtp_host="127.0.0.1", smtp_port=closed_port, smtp_security="none")

    with pytest.raises(RelayTemporaryError) as caught:
        run(pool_for(settings).start())

    assert caught.value.message == (
        f"cannot connect to the relay 127.0.0.1:{closed_port}: connection refused"
    )
    assert caught.value.exit_code == 75


def test_send_without_start_connects_and_reports_the_same(closed_port: int) -> None:
    settings = Settings(smtp_host="127.0.0.1", smtp_port=closed_port, smtp_security="none")
    with pytest.raises(RelayTemporaryError, match="connection refused"):
        run(pool_for(settings).send(submission("ok1@example.org")))


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"greeting": "421 4.3.2 service shutting down"}, "greets with 421 4.3.2"),
        ({"greeting": "554 5.3.2 no service for you"}, "greets with 554"),
        ({"greeting_delay": 2.0}, "does not answer: no greeting within 0.3 s"),
    ],
)
def test_relay_not_ready_is_temporary(
    smtp_server_factory: ServerFactory, options: dict[str, object], pattern: str
) -> None:
    server = smtp_server_factory(**options)

    with pytest.raises(RelayTemporaryError, match=pattern):
        run(pool_for(server.settings(smtp_timeout=0.3)).start())


# -- TLS ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_tls_with_the_trusted_ca_is_accepted(
    smtp_server_factory: ServerFactory, mode: str
) -> None:
    server = smtp_server_factory(tls=mode)
    reply = send_one(server.settings(), "ok1@example.org")

    assert reply.accepted
    assert [session.tls for session in server.sessions] == [True]


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_tls_with_an_unknown_ca_is_a_configuration_error(
    smtp_server_factory: ServerFactory, mode: str
) -> None:
    server = smtp_server_factory(tls=mode)

    with pytest.raises(ConfigError, match="cannot verify the TLS certificate") as caught:
        run(pool_for(server.settings(smtp_ca_file=None)).start())

    assert f"127.0.0.1:{server.port}" in caught.value.message
    assert caught.value.exit_code == 78
    assert server.messages == []


def test_starttls_required_but_not_offered(smtp_server: ScriptedSMTPServer) -> None:
    with pytest.raises(ConfigError, match="does not offer STARTTLS"):
        run(pool_for(smtp_server.settings(smtp_security="starttls")).start())


def test_implicit_tls_to_a_plain_relay_is_a_configuration_error(
    smtp_server: ScriptedSMTPServer,
) -> None:
    with pytest.raises(ConfigError, match=f"TLS with the relay 127.0.0.1:{smtp_server.port}"):
        run(pool_for(smtp_server.settings(smtp_security="tls", smtp_timeout=1.0)).start())


def test_unreadable_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    settings = Settings(smtp_host="127.0.0.1", smtp_ca_file=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=r"missing\.pem"):
        SmtpPool(settings)


# -- AUTH ---------------------------------------------------------------------------------


def test_auth_over_starttls(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="starttls", auth={"mailer": "s3cret"})
    reply = send_one(server.settings(), "ok1@example.org")

    assert reply.accepted
    assert [session.login for session in server.sessions] == ["mailer"]


def test_refused_credentials_are_a_configuration_error_without_the_password(
    smtp_server_factory: ServerFactory,
) -> None:
    server = smtp_server_factory(tls="starttls", auth={"mailer": "s3cret"})
    settings = server.settings(smtp_password="wrong-Pa55word")

    with pytest.raises(ConfigError, match="refuses the SMTP credentials: 535") as caught:
        run(pool_for(settings).start())

    error = caught.value
    assert "wrong-Pa55word" not in f"{error} {error.hint} {error.__cause__!r}"
    assert error.exit_code == 78


def test_auth_over_plain_is_allowed_to_loopback(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(auth={"mailer": "s3cret"}, auth_over_plain=True)
    reply = send_one(server.settings(), "ok1@example.org")

    assert reply.accepted
    assert server.sessions[0].login == "mailer"


def test_auth_not_offered_is_a_configuration_error(smtp_server: ScriptedSMTPServer) -> None:
    settings = smtp_server.settings(smtp_username="mailer", smtp_password="s3cret")
    with pytest.raises(ConfigError, match="does not offer AUTH"):
        run(pool_for(settings).start())


@pytest.mark.parametrize("host", ["smtp.example.org", "192.0.2.25", "2001:db8::25"])
def test_auth_over_plain_to_another_host_is_refused_before_connecting(host: str) -> None:
    # Only the check runs: SmtpPool() never connects, and start() is not called.
    settings = Settings(
        smtp_host=host, smtp_security="none", smtp_username="mailer", smtp_password="s3cret"
    )
    with pytest.raises(ConfigError, match="over an unencrypted connection") as caught:
        SmtpPool(settings)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ConfigError):
        check_auth_allowed(settings)


def test_auth_over_tls_to_another_host_passes_the_check() -> None:
    check_auth_allowed(Settings(
        smtp_host="smtp.example.org", smtp_username="mailer", smtp_password="s3cret"
    ))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
        ("localhost", True), ("LOCALHOST.", True), ("10.0.0.1", False),
        ("localhost.example.org", False), ("smtp.example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# -- description, defaults ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("security", "port"), [("starttls", 587), ("tls", 465), ("none", 25)]
)
def test_description_and_default_ports(security: str, port: int) -> None:
    pool = smtp_transport(Settings(smtp_host="smtp.example.org", smtp_security=security), 2)  # type: ignore[arg-type]
    assert pool.description == f"smtp.example.org:{port} ({security})"


def test_no_relay_configured_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="no SMTP relay"):
        SmtpPool(Settings())


# -- every aiosmtplib exception is translated -------------------------------------------


def _aiosmtplib_exceptions() -> list[type[Exception]]:
    exported = {getattr(aiosmtplib, name) for name in aiosmtplib.__all__}
    exported |= {getattr(aiosmtplib.errors, name) for name in aiosmtplib.errors.__all__}
    exported |= {
        value for _, value in inspect.getmembers(aiosmtplib.errors, inspect.isclass)
        if value.__module__ == aiosmtplib.errors.__name__
    }
    return sorted(
        (c for c in exported if isinstance(c, type) and issubclass(c, Exception)),
        key=lambda c: c.__name__,
    )


def _instance(cls: type[Exception]) -> Exception:
    if issubclass(cls, aiosmtplib.SMTPRecipientsRefused):
        return cls([aiosmtplib.SMTPRecipientRefused(550, "5.1.1 no", "a@example.org")])
    if issubclass(cls, (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPRecipientRefused)):
        return cls(550, "5.7.1 refused s3cret", "a@example.org")
    if issubclass(cls, aiosmtplib.SMTPResponseException):
        return cls(554, "5.0.0 refused s3cret")
    return cls("something happened s3cret")


def test_every_aiosmtplib_exception_is_known() -> None:
    classes = _aiosmtplib_exceptions()
    assert len(classes) >= 15
    assert set(classes) <= KNOWN_SMTP_ERRORS


@pytest.mark.parametrize("cls", _aiosmtplib_exceptions(), ids=lambda c: c.__name__)
def test_every_aiosmtplib_exception_is_translated(cls: type[Exception]) -> None:
    exc = _instance(cls)

    connecting = translate_smtp_error(exc, Stage.CONNECT, relay="127.0.0.1:25", secret="s3cret")
    assert isinstance(connecting, MailerError)
    assert "127.0.0.1:25" in connecting.message
    assert "s3cret" not in connecting.message

    for stage in (Stage.MAIL, Stage.RCPT, Stage.DATA, Stage.DATA_END):
        outcome = translate_smtp_error(exc, stage, relay="127.0.0.1:25", secret="s3cret")
        assert isinstance(outcome, (Reply, MailerError))
        text = outcome.text if isinstance(outcome, Reply) else outcome.message
        assert "s3cret" not in text


def test_timeout_and_loss_after_the_dot_are_uncertain() -> None:
    for exc in (aiosmtplib.SMTPReadTimeoutError("t"), aiosmtplib.SMTPServerDisconnected("l")):
        outcome = translate_smtp_error(exc, Stage.DATA_END, relay="r:25")
        assert outcome == Reply(None, outcome.text, Stage.DATA_END)  # type: ignore[union-attr]


# -- outbox -------------------------------------------------------------------------------


def test_outbox_writes_each_message_as_eml(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    outbox = OutboxTransport(folder)
    sent = submission("ok1@example.org")

    async def main() -> Reply:
        await outbox.start()
        try:
            return await outbox.send(sent)
        finally:
            await outbox.close()

    reply = run(main())

    path = folder / "d1.ok1@mailer.test.eml"
    assert reply == Reply(250, f"written to {path}", Stage.DATA_END)
    assert reply.accepted
    assert path.read_bytes() == sent.data
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [p.name for p in folder.iterdir()] == [path.name]  # no temporary file left
    assert outbox.description == f"outbox {folder}"


def test_outbox_resend_overwrites_the_same_file(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path)
    first = submission("ok1@example.org", body="first\r\n")
    second = submission("ok1@example.org", body="second\r\n")

    async def main() -> None:
        await outbox.send(first)
        await outbox.send(second)

    run(main())
    [path] = tmp_path.iterdir()
    assert path.read_bytes() == second.data


def test_outbox_file_names_are_safe() -> None:
    assert outbox_file_name("<a.b@example.org>") == "a.b@example.org.eml"
    assert outbox_file_name("<../../etc/passwd@x>") == "_.._etc_passwd@x.eml"
    assert "/" not in outbox_file_name("<a/b\\c d@x>")
    assert outbox_file_name("<>") == "message.eml"


def test_outbox_folder_that_cannot_be_created_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    outbox = OutboxTransport(blocker / "out")

    with pytest.raises(ConfigError, match=str(blocker / "out")):
        run(outbox.start())
    with pytest.raises(ConfigError, match=str(blocker / "out")):
        run(outbox.send(submission("ok1@example.org")))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_outbox_folder_that_cannot_be_written_is_a_configuration_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=str(tmp_path)):
            run(OutboxTransport(tmp_path).send(submission("ok1@example.org")))
    finally:
        tmp_path.chmod(0o700)



@given(st.one_of(
    st.emails(),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1).map(
        lambda local: f"{local}@asso.fr"),
))
def test_command_address_is_aiosmtplibs_quote_address(address: str) -> None:
    from aiosmtplib.email import quote_address

    from mailer.sending.wire import command_address

    try:
        expected = quote_address(address)
    except ValueError:
        with pytest.raises(ValueError):
            command_address(address)
        return
    assert command_address(address) == expected


@given(st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n")))
def test_fast_paths_agree_with_the_regular_expressions(data: bytes) -> None:
    from mailer.sending.wire import _LEADING_DOT, _LINE_END, normalize_line_ends, stuff_dots

    body = _LINE_END.sub(b"\r\n", data)
    assert normalize_line_ends(data) == (body if body.endswith(b"\r\n") else body + b"\r\n")
    assert stuff_dots(data) == _LEADING_DOT.sub(b"..", data)
