"""One function per user action, shared by the CLI and the tests. Nothing here prints.

Each function opens the database named by the settings (creating or upgrading its schema),
does one job, and returns plain data; errors are MailerError subclasses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from email import policy as email_policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from mailer.bounces import run as bouncing
from mailer.bounces.mailboxes import open_mailbox
from mailer.core.addresses import clean_address
from mailer.core.clock import Clock, system_clock
from mailer.core.config import Settings
from mailer.core.errors import AddressError, InputError, NotFoundError
from mailer.core.people import Recipient
from mailer.core.states import DeliveryState, SubscriberStatus
from mailer.core.tokens import keyed_hash, token_subscriber_id, verify_token
from mailer.imports.columns import map_columns, parse_map_options
from mailer.imports.csvsource import CsvSource
from mailer.imports.run import ImportReport, ImportRun, Progress, open_rejects
from mailer.messages.campaign import Campaign, load_campaign
from mailer.messages.factory import MessageFactory, Outgoing
from mailer.messages.preflight import PreflightReport, preflight
from mailer.privacy import purge as purging
from mailer.sending import run as sending
from mailer.sending.dispatch import ProgressFn
from mailer.sending.run import RunReport
from mailer.store import deliveries, meta, stats
from mailer.store import subscribers as store
from mailer.store.engine import (
    ensure_schema,
    open_engine,
    read_transaction,
    scrub,
    write_transaction,
)


@contextmanager
def open_database(settings: Settings) -> Iterator[Engine]:
    """The engine for the configured database, schema ready; errors translated."""
    engine = open_engine(settings.database_url)
    try:
        ensure_schema(engine)
        yield engine
    finally:
        engine.dispose()


# --- import -------------------------------------------------------------------------------


def import_subscribers(
    settings: Settings,
    path: Path,
    *,
    dry_run: bool = False,
    encoding: str | None = None,
    delimiter: str | None = None,
    maps: list[str] | None = None,
    attributes: list[str] | None = None,
    rejects_path: Path | None = None,
    progress: Progress | None = None,
    clock: Clock = system_clock,
) -> ImportReport:
    """Validate, deduplicate and store the subscribers of a CSV file; report every rejected line.

    A missing email column or an unreadable file is an InputError before anything is
    written; a bad row is a rejection, never an abort.
    """
    mapping = parse_map_options(maps or [])
    with ExitStack() as stack:
        source = stack.enter_context(CsvSource(path, encoding=encoding, delimiter=delimiter))
        columns = map_columns(source.header, mapping=mapping, attributes=attributes)
        rejects = open_rejects(stack, rejects_path, columns, source.delimiter)
        run = ImportRun(
            source, columns, dry_run=dry_run, rejects=rejects, progress=progress, clock=clock
        )
        return run.run(stack.enter_context(open_database(settings)))


# --- subscribers --------------------------------------------------------------------------


def subscriber_json(row: Any) -> dict[str, Any]:
    return {
        "email": row.email,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "civility": row.civility,
        "status": row.status,
        "attributes": row.attributes or {},
    }


def list_subscribers(
    settings: Settings, status: SubscriberStatus | None = None
) -> Iterator[dict[str, Any]]:
    """Every subscriber as the contract's JSON object, streamed."""
    with open_database(settings) as engine, read_transaction(engine) as connection:
        for row in store.iterate(connection, status):
            yield subscriber_json(row)


def _key_of(email: str) -> str:
    try:
        address, _ = clean_address(email)
    except AddressError as exc:
        raise InputError(f"{email!r}: {exc}") from exc
    return address.key


def token_secret(settings: Settings, connection: Any) -> bytes:
    return meta.token_secret(connection, settings.secret)


@dataclass(frozen=True)
class StatusChange:
    email: str
    changed: bool
    status: str


def unsubscribe(
    settings: Settings,
    email: str | None = None,
    *,
    token: str | None = None,
    clock: Clock = system_clock,
) -> StatusChange:
    """Unsubscribe by address or by the token of an unsubscribe link; idempotent."""
    with open_database(settings) as engine, write_transaction(engine) as connection:
        if token is not None:
            subscriber_id = token_subscriber_id(token)
            row = store.get(connection, subscriber_id) if subscriber_id is not None else None
            if row is None or not verify_token(
                token_secret(settings, connection), token, row.id, row.email_key
            ):
                raise NotFoundError("invalid or expired unsubscribe token")
        else:
            assert email is not None
            row = store.find(connection, _key_of(email))
            if row is None:
                raise NotFoundError(f"{email} is not in the list")
        changed = store.set_status(
            connection, row.email_key, SubscriberStatus.UNSUBSCRIBED, clock()
        )
        status = SubscriberStatus.UNSUBSCRIBED.value if changed else row.status
        return StatusChange(row.email, changed is not None, status)


@dataclass(frozen=True)
class Erasure:
    email: str
    was_subscriber: bool


def forget(settings: Settings, email: str, *, clock: Clock = system_clock) -> Erasure:
    """Erase a person for real; keep only a keyed hash so no later import brings them back."""
    key = _key_of(email)
    with open_database(settings) as engine:
        with write_transaction(engine) as connection:
            row = store.find(connection, key)
            if row is not None:
                store.erase(connection, row.id)
            suppression_key = meta.secret(connection, meta.SUPPRESSION_KEY)
            store.suppress(connection, keyed_hash(suppression_key, key), "forget", clock())
        # secure_delete zeroed the freed cells; the checkpoint moves that into the main file
        # and empties the WAL, so the address is gone from the file's bytes.
        scrub(engine, rewrite=False)
        return Erasure(email, row is not None)


# --- preview and pre-flight --------------------------------------------------------------


def _factory(settings: Settings, campaign: Campaign, connection: Any) -> MessageFactory:
    """The campaign's message factory, with the token secret (generated on first use).

    The Message-ID prefix is derived from the campaign and its templates: what a preview
    shows. A send fixes each delivery's own Message-ID when it queues it.
    """
    nonce = hashlib.sha256(f"{campaign.name}\0{campaign.digest}".encode()).hexdigest()[:12]
    return MessageFactory(campaign, token_secret(settings, connection), nonce)


@dataclass(frozen=True)
class Preview:
    outgoing: Outgoing
    status: str  # the subscriber's status: only `active` ones are sent to

    @property
    def message(self) -> EmailMessage:
        """The wire bytes parsed back with the standard library (policy.default)."""
        parsed = BytesParser(policy=email_policy.default).parsebytes(self.outgoing.data)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def header(self, name: str) -> str | None:
        """A header as a reader sees it, decoded per RFC 2047 (email.header.decode_header).

        policy.default's address parser keeps the folding space between two adjacent
        encoded words of one display name, which RFC 2047 (6.2) says to drop; the older
        decoder drops it, so a long name reads exactly as it was written.
        """
        raw = BytesParser(policy=email_policy.compat32).parsebytes(
            self.outgoing.data, headersonly=True
        ).get(name)
        if raw is None:
            return None
        return str(make_header(decode_header(" ".join(str(raw).split()))))


def preview(
    settings: Settings,
    campaign_name: str,
    email: str | None = None,
    *,
    clock: Clock = system_clock,
) -> Preview:
    """The message one subscriber (default: the first active one) would receive."""
    campaign = load_campaign(settings, campaign_name)
    with open_database(settings) as engine, write_transaction(engine) as connection:
        if email is not None:
            row = store.find(connection, _key_of(email))
            if row is None:
                raise NotFoundError(f"{email} is not in the list")
        else:
            row = store.first(connection, SubscriberStatus.ACTIVE)
            if row is None:
                raise NotFoundError(
                    "no active subscriber to preview",
                    hint="import a list first: mailer import FILE.csv",
                )
        factory = _factory(settings, campaign, connection)
    return Preview(factory.make(Recipient.from_row(row), date=clock()), row.status)


def check_campaign(
    settings: Settings,
    campaign_name: str,
    *,
    progress: Progress | None = None,
    clock: Clock = system_clock,
) -> PreflightReport:
    """Pre-flight: make every active subscriber's message without sending; report problems."""
    campaign = load_campaign(settings, campaign_name)
    with open_database(settings) as engine:
        with write_transaction(engine) as connection:
            factory = _factory(settings, campaign, connection)
            total = store.count_by_status(connection)[SubscriberStatus.ACTIVE.value]
        with read_transaction(engine) as connection:
            recipients = (
                Recipient.from_row(row)
                for row in store.iterate(connection, SubscriberStatus.ACTIVE)
            )
            return preflight(factory, recipients, date=clock(), total=total, progress=progress)


# --- status -------------------------------------------------------------------------------


def status(settings: Settings, campaign: str | None = None) -> dict[str, Any]:
    """The contract's `mailer status --json` shape, for one campaign or for everything."""
    with open_database(settings) as engine, read_transaction(engine) as connection:
        if campaign is not None:
            found = stats.campaign_status(connection, campaign)
            if found is None:
                raise NotFoundError(
                    f"unknown campaign {campaign!r}",
                    hint="a campaign exists once `mailer send CAMPAIGN` has queued it",
                )
            return found
        campaigns = [
            stats.campaign_status(connection, name) for name in stats.campaign_names(connection)
        ]
        return {
            "subscribers": store.count_by_status(connection),
            "campaigns": [c for c in campaigns if c is not None],
        }


def check_database(settings: Settings) -> str:
    """Open (and create or upgrade) the database; return its backend name."""
    with open_database(settings) as engine, read_transaction(engine) as connection:
        connection.execute(text("SELECT 1"))
        return engine.dialect.name


# --- send, retry, report ------------------------------------------------------------------


def send(
    settings: Settings,
    campaign: str,
    *,
    dry_run: bool = False,
    limit: int | None = None,
    outbox: Path | None = None,
    accept_changes: bool = False,
    check_progress: Progress | None = None,
    progress: ProgressFn | None = None,
    clock: Clock = system_clock,
) -> RunReport:
    """Check, queue and send a campaign (see mailer.sending.run); nothing is ever sent twice."""
    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1")
    with open_database(settings) as engine:
        return sending.send(
            settings, engine, campaign, dry_run=dry_run, limit=limit, outbox=outbox,
            accept_changes=accept_changes, check_progress=check_progress, progress=progress,
            clock=clock,
        )


def retry(
    settings: Settings,
    campaign: str | None = None,
    *,
    outbox: Path | None = None,
    progress: ProgressFn | None = None,
    clock: Clock = system_clock,
) -> list[RunReport]:
    """Send what is due (cron); an empty list when nothing is."""
    with open_database(settings) as engine:
        return sending.retry(settings, engine, campaign, outbox=outbox, progress=progress,
                             clock=clock)


REPORT_COLUMNS = (
    "email", "first_name", "last_name", "subscriber_status", "state", "attempts", "last_code",
    "last_reply", "first_attempt_at", "last_attempt_at", "next_attempt_at", "sent_at",
    "message_id",
)


def report(
    settings: Settings, campaign: str, states: list[DeliveryState] | None = None
) -> Iterator[list[str]]:
    """The header, then one row per delivery in `states` (default: every one not sent)."""
    wanted = states or [s for s in DeliveryState if s is not DeliveryState.SENT]
    with open_database(settings) as engine, read_transaction(engine) as connection:
        row = deliveries.find_campaign(connection, campaign)
        if row is None:
            raise NotFoundError(
                f"unknown campaign {campaign!r}",
                hint="a campaign exists once `mailer send CAMPAIGN` has queued it",
            )
        if row.purged_at is not None:
            raise NotFoundError(
                f"campaign {campaign!r} was purged on {row.purged_at:%Y-%m-%d}: "
                "only its counts remain",
                hint=f"`mailer status {campaign}` shows them",
            )
        yield list(REPORT_COLUMNS)
        for item in deliveries.report_rows(connection, row.id, wanted):
            yield [
                item.email, item.first_name or "", item.last_name or "", item.subscriber_status,
                item.state, str(item.attempts), "" if item.last_code is None
                else str(item.last_code), item.last_reply or "",
                _iso(item.first_attempt_at), _iso(item.last_attempt_at),
                _iso(item.next_attempt_at), _iso(item.sent_at), item.message_id,
            ]


# --- bounces and purge ---------------------------------------------------------------------


def import_bounces(
    settings: Settings,
    source: str,
    *,
    progress: bouncing.Progress | None = None,
    clock: Clock = system_clock,
) -> bouncing.BounceSummary:
    """Read every message of a mailbox (mbox, Maildir, imaps://) and record the bounces."""
    with open_mailbox(source, settings) as mailbox, open_database(settings) as engine:
        return bouncing.import_bounces(
            engine, mailbox, source=source, secret=settings.secret, total=mailbox.total,
            progress=progress, clock=clock,
        )


def purge(
    settings: Settings,
    *,
    campaign: str | None = None,
    older_than: str | None = None,
    all_personal_data: bool = False,
    clock: Clock = system_clock,
) -> purging.PurgeReport:
    age = purging.parse_age(older_than) if older_than is not None else None
    with open_database(settings) as engine:
        return purging.purge(
            engine, campaign=campaign, older_than=age, all_personal_data=all_personal_data,
            clock=clock,
        )


def _iso(moment: Any) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""
