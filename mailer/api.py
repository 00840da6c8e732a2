"""One function per user action, shared by the CLI and the tests. Nothing here prints.

Each function opens the database named by the settings (creating or upgrading its schema),
does one job, and returns plain data; errors are MailerError subclasses. The types of those
results and of the progress callbacks are re-exported here (`__all__`): the CLI needs nothing
past this module and `mailer.core`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from mailer.bounces import run as bouncing
from mailer.bounces.mailboxes import open_mailbox
from mailer.bounces.run import BounceSummary
from mailer.core.addresses import address_key
from mailer.core.clock import Clock, system_clock
from mailer.core.config import Settings
from mailer.core.errors import InputError, NotFoundError
from mailer.core.people import Recipient
from mailer.core.states import DeliveryState, SubscriberStatus
from mailer.core.tokens import keyed_hash, token_subscriber_id, verify_token
from mailer.imports.columns import map_columns, parse_map_options
from mailer.imports.csvsource import CsvSource
from mailer.imports.run import ImportReport, ImportRun, Progress, open_rejects
from mailer.messages.campaign import load_campaign
from mailer.messages.preflight import PreflightReport, preflight
from mailer.messages.preview import Preview, preview_factory
from mailer.messages.scaffold import new_campaign
from mailer.privacy import copies
from mailer.privacy import purge as purging
from mailer.sending import plan
from mailer.sending.options import ProgressFn, Tally
from mailer.sending.report import write_report as write_csv
from mailer.sending.run import PreflightFailed, RunReport, SendRequest, SendRun
from mailer.sending.trial import SendPlan, TestSent, send_plan, send_test
from mailer.store import meta, outcomes, queueing
from mailer.store import subscribers as store
from mailer.store.engine import database, read_transaction, scrub, write_transaction

__all__ = [
    "BounceSummary", "Erasure", "ImportReport", "PreflightFailed", "PreflightReport", "Preview",
    "Progress", "ProgressFn", "RunReport", "SendPlan", "StatusChange", "Tally", "TestSent",
    "check_campaign", "check_database", "forget", "import_bounces", "import_subscribers",
    "list_subscribers", "new_campaign", "open_database", "preview", "purge", "report", "retry",
    "send", "send_plan", "send_test", "serve", "status", "subscriber_json", "token_secret",
    "unsubscribe", "write_report"
]


def open_database(settings: Settings, *, create: bool = True) -> AbstractContextManager[Engine]:
    """The engine, schema ready; create=False (reading commands): no new SQLite file."""
    return database(settings.database_url, create=create)


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
    with open_database(settings, create=False) as engine, read_transaction(engine) as connection:
        for row in store.iterate(connection, status):
            yield subscriber_json(row)


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
            row = store.find(connection, address_key(email))
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
    removed: tuple[Path, ...] = ()  # their .eml files in the outbox given


def forget(settings: Settings, email: str, *, outbox: Path | None = None,
           clock: Clock = system_clock) -> Erasure:
    """Erase a person for real, and their .eml files in `outbox`; keep only a keyed hash."""
    key = address_key(email)
    copies.check_outbox(outbox)
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
    return Erasure(email, row is not None, copies.remove_outbox_copies(outbox, key))


# --- preview and pre-flight --------------------------------------------------------------


def preview(
    settings: Settings,
    campaign_name: str,
    email: str | None = None,
    *,
    clock: Clock = system_clock,
) -> Preview:
    """The message one subscriber (default: the first active one) would receive."""
    campaign = load_campaign(settings, campaign_name)
    with open_database(settings, create=False) as engine, write_transaction(engine) as connection:
        if email is not None:
            row = store.find(connection, address_key(email))
            if row is None:
                raise NotFoundError(f"{email} is not in the list")
        else:
            row = store.first(connection, SubscriberStatus.ACTIVE)
            if row is None:
                raise NotFoundError(
                    "no active subscriber to preview",
                    hint="import a list first: mailer import FILE.csv",
                )
        factory = preview_factory(campaign, token_secret(settings, connection))
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
    with open_database(settings, create=False) as engine:
        with write_transaction(engine) as connection:
            factory = preview_factory(campaign, token_secret(settings, connection))
            total = store.count_by_status(connection)[SubscriberStatus.ACTIVE.value]
        with read_transaction(engine) as connection:
            recipients = (
                Recipient.from_row(row)
                for row in store.iterate(connection, SubscriberStatus.ACTIVE)
            )
            return preflight(factory, recipients, date=clock(), total=total, progress=progress)


# --- status -------------------------------------------------------------------------------


def status(settings: Settings, campaign: str | None = None,
           clock: Clock = system_clock) -> dict[str, Any]:
    """The contract's `mailer status --json` shape, for one campaign or for everything, with
    each relay's windows and pause and each campaign's plan (mailer.sending.plan)."""
    with open_database(settings, create=False) as engine, read_transaction(engine) as connection:
        return plan.status(connection, settings, campaign, clock())


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
    request = SendRequest(campaign, dry_run=dry_run, limit=limit, outbox=outbox,
                          accept_changes=accept_changes)
    with open_database(settings) as engine:
        return SendRun(settings, engine, request, check_progress=check_progress,
                       progress=progress, clock=clock).send()


def retry(
    settings: Settings,
    campaign: str | None = None,
    *,
    outbox: Path | None = None,
    progress: ProgressFn | None = None,
    clock: Clock = system_clock,
) -> list[RunReport]:
    """Send what is due (cron); an empty list when nothing is."""
    request = SendRequest(campaign, outbox=outbox)
    with open_database(settings) as engine:
        return SendRun(settings, engine, request, progress=progress, clock=clock).retry()


REPORT_COLUMNS = (
    "email", "first_name", "last_name", "subscriber_status", "state", "attempts", "last_code",
    "last_reply", "first_attempt_at", "last_attempt_at", "next_attempt_at", "sent_at",
    "message_id", "bounce_reason",
)


def report(
    settings: Settings, campaign: str, states: list[DeliveryState] | None = None
) -> Iterator[list[str]]:
    """The header, then one row per delivery in `states` (default: every one not sent)."""
    wanted = states or [s for s in DeliveryState if s is not DeliveryState.SENT]
    with open_database(settings, create=False) as engine, read_transaction(engine) as connection:
        row = queueing.find_campaign(connection, campaign)
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
        for item in outcomes.report_rows(connection, row.id, wanted):
            yield [
                item.email, item.first_name or "", item.last_name or "", item.subscriber_status,
                item.state, str(item.attempts), "" if item.last_code is None
                else str(item.last_code), item.last_reply or "",
                _iso(item.first_attempt_at), _iso(item.last_attempt_at),
                _iso(item.next_attempt_at), _iso(item.sent_at), item.message_id,
                item.bounce_reason or "",
            ]


def write_report(
    settings: Settings, campaign: str, states: list[DeliveryState] | None = None, *,
    path: Path | None = None, delimiter: str = ",",
) -> int:
    """`report` as CSV into `path` (default: standard output); how many deliveries it lists."""
    rows = report(settings, campaign, states)
    rows = itertools.chain([next(rows)], rows)  # the header: an unknown campaign fails here,
    # before `path` is opened (and emptied)
    if delimiter not in {",", ";", "\t", "|"}:
        raise InputError(f"invalid delimiter {delimiter!r}", hint="use , or ; (or a tab, |)")
    return write_csv(rows, path, delimiter)


# --- bounces, purge, serve ------------------------------------------------------------------


def import_bounces(
    settings: Settings,
    source: str,
    *,
    progress: bouncing.Progress | None = None,
    clock: Clock = system_clock,
) -> BounceSummary:
    """Read every message of a mailbox (mbox, Maildir, imaps://) and record the bounces; from
    an IMAP folder, only those newer than the last import's."""
    with open_database(settings) as engine, open_mailbox(
        source, settings, resume=bouncing.resume_point(engine)
    ) as mailbox:
        return bouncing.import_bounces(
            engine, mailbox, source=source, secret=settings.secret, total=mailbox.total,
            progress=progress, clock=clock, rules=bouncing.rules_of(settings),
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


def serve(settings: Settings, host: str, port: int) -> None:
    """Answer unsubscribe links until stopped (see mailer.web.serve)."""
    from mailer import web  # the web stack (starlette, uvicorn) loads only for this

    with open_database(settings, create=False):  # never a new, empty database
        pass
    web.serve(settings, host, port)


def _iso(moment: Any) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""
