"""Before a real send: the plan `mailer send` shows and asks about on a terminal
(`send_plan`), and one test message to the operator's own address (`send_test`).

A test message is rendered for a real subscriber (the first active one by default) but goes to
the address given, outside the ledger: no delivery row, nothing counted, the campaign not even
created. Its subject starts with `[TEST] `; its To header and its unsubscribe token are those
of the test address, so a click in the test message cannot unsubscribe the subscriber.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from mailer.core.addresses import address_key, clean_address
from mailer.core.config import Settings, relay_settings, relay_specs
from mailer.core.delivery import Submission
from mailer.core.errors import InputError, NotFoundError, RelayTemporaryError
from mailer.core.people import Recipient
from mailer.core.states import SubscriberStatus
from mailer.messages.campaign import load_campaign
from mailer.messages.factory import MessageFactory
from mailer.messages.reference import Envelope
from mailer.sending.prepare import bounce_address
from mailer.sending.relay import DEFAULT_PORTS, relay_address, require_relay
from mailer.store import claims, meta, queueing
from mailer.store import subscribers as store
from mailer.store.engine import database, read_transaction, write_transaction

TEST_PREFIX = "[TEST] "
# Without a rate, the estimate assumes a relay taking this many messages a second per
# connection: a guess, said as "about".
ASSUMED_PER_CONNECTION = 2.0


@dataclass(frozen=True)
class SendPlan:
    """What `mailer send CAMPAIGN` is about to do through a relay."""

    campaign: str
    recipients: int  # messages this run would send (new subscribers + due deliveries)
    relay: str  # host:port (security)
    sender: str  # the From address
    rate: str | None  # "300/min", or None: unlimited
    concurrency: int
    seconds: float  # the estimated duration
    estimated: bool  # True when no rate bounds it: the duration is a guess


@dataclass(frozen=True)
class TestSent:
    """The test message that was sent."""

    to: str
    subscriber: str  # whom it was rendered for
    subject: str
    reply: str  # the relay's answer (holds its queue id)


def send_plan(settings: Settings, campaign: str, *, limit: int | None = None,
              now: datetime | None = None) -> SendPlan:
    """The plan of a send through the configured relay (nothing is written)."""
    loaded = load_campaign(settings, campaign)
    settings, more = _first_relay(settings)
    host = require_relay(settings)
    relay = relay_address(host, settings.smtp_port or DEFAULT_PORTS[settings.smtp_security])
    relay = f"{relay} ({settings.smtp_security})"
    if more:
        relay += f", then {more} more relay{'s' if more > 1 else ''}"
    with database(settings.database_url) as engine, read_transaction(engine) as connection:
        row = queueing.find_campaign(connection, campaign)
        count = queueing.count_to_check(connection, row.id if row else None, unqueued_only=True)
        if row is not None:
            count += claims.count_due(connection, row.id, now or datetime.now(UTC),
                                      settings.uncertain == "resend")
    count = min(count, limit) if limit else count
    per_second = (settings.rate.per_second if settings.rate
                  else settings.concurrency * ASSUMED_PER_CONNECTION)
    return SendPlan(campaign, count, relay,
                    str(loaded.sender), str(settings.rate) if settings.rate else None,
                    settings.concurrency, count / per_second, settings.rate is None)


def send_test(settings: Settings, campaign: str, to: str, email: str | None = None, *,
              now: datetime | None = None) -> TestSent:
    """One real message rendered for `email` (default: the first active subscriber), sent
    to `to` through the relay, outside the ledger."""
    loaded = load_campaign(settings, campaign)
    try:
        target, _ = clean_address(to)
    except InputError as exc:
        raise InputError(f"--test-to {to!r}: {exc.message}") from exc
    with (database(settings.database_url, create=False) as engine,
          write_transaction(engine) as connection):
        row = (store.find(connection, address_key(email)) if email is not None
               else store.first(connection, SubscriberStatus.ACTIVE))
        if row is None:
            raise NotFoundError(f"{email} is not in the list" if email else
                                "no active subscriber to render the test message for",
                                hint="import a list first, or name one: --email SUBSCRIBER")
        secret = meta.token_secret(connection, settings.secret)
    factory = MessageFactory(loaded, secret, secrets.token_hex(6))
    subscriber = Recipient.from_row(row)
    tester = Recipient(id=subscriber.id, email=target.email, address=target.address,
                       key=target.key, smtputf8=target.smtputf8)
    links = factory.links(tester)  # a token for the test address: useless for the subscriber
    parts = factory.renderer.render(subscriber, links)
    parts = replace(parts, subject=TEST_PREFIX + parts.subject)
    envelope = Envelope(factory.message_id(tester), now or datetime.now(UTC))
    data = factory.composer.compose(tester, parts, links, envelope)
    submission = Submission(0, bounce_address(settings) or loaded.sender.addr_spec,
                            target.address, data, envelope.message_id, target.smtputf8)
    reply = asyncio.run(_send_one(_first_relay(settings)[0], submission))
    return TestSent(target.email, subscriber.email, parts.subject, reply)


def _first_relay(settings: Settings) -> tuple[Settings, int]:
    """The settings as the first relay sees them ([[relay]] tables), and how many follow."""
    specs = relay_specs(settings)
    if not specs:
        return settings, 0
    return relay_settings(settings, specs[0]), len(specs) - 1


async def _send_one(settings: Settings, submission: Submission) -> str:
    from mailer.sending.smtp import SmtpPool  # aiosmtplib: only when sending

    pool = SmtpPool(settings, concurrency=1)
    await pool.start()
    try:
        reply = await pool.send(submission)
    finally:
        await pool.close()
    said = f"{reply.code} {reply.text}" if reply.code else reply.text
    if reply.accepted:
        return said
    if reply.code is not None and reply.code >= 500:
        raise InputError(f"the relay refused the test message to {submission.recipient}: {said}")
    raise RelayTemporaryError(f"the test message to {submission.recipient} was not accepted: "
                              f"{said}", hint="try again later")
