"""`mailer send` and `mailer retry`: from a campaign name to a finished run.

send:  load and check the campaign → refuse if its templates changed since it was first sent →
       pre-flight the subscribers about to be queued (any problem stops here, before any
       connection) → create the campaign row (first use) → queue one delivery per active
       subscriber not yet queued → expire dead workers' leases → run the dispatcher.
retry: expire leases → find what is due (pending, deferred whose time has come, uncertain
       unless held) → run the dispatcher per campaign. Exits at once when nothing is due.

Orchestration only: SQL is in `store.deliveries`, the loop in `dispatch`, SMTP in `transport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from mailer.core.addresses import clean_address
from mailer.core.clock import Clock, system_clock
from mailer.core.config import Rate, Settings
from mailer.core.delivery import Transport
from mailer.core.errors import AddressError, ConfigError, InputError, MailerError, NotFoundError
from mailer.core.people import Recipient
from mailer.core.states import DeliveryState
from mailer.messages.campaign import Campaign, load_campaign
from mailer.messages.factory import MessageFactory
from mailer.messages.preflight import PreflightReport, preflight
from mailer.sending.dispatch import Dispatcher, ProgressFn, RunOptions, Tally
from mailer.sending.policy import Backoff
from mailer.sending.workers import check_in_workers, run_workers
from mailer.store import deliveries as store
from mailer.store import meta, stats
from mailer.store.engine import read_transaction, write_transaction

CheckProgress = Callable[[int, int], None]


class PreflightFailed(InputError):
    """Some messages cannot be made: nothing was sent. Carries the pre-flight report."""

    def __init__(self, report: PreflightReport) -> None:
        super().__init__(
            f"{report.problem_count} of {report.checked} messages of {report.campaign!r} "
            "cannot be made; nothing was sent",
            hint=f"see the problems above, or run: mailer preview {report.campaign} --check",
        )
        self.report = report


@dataclass
class RunReport:
    """One campaign's run: what the pre-flight found, what was queued and sent."""

    campaign: str
    transport: str = ""
    dry_run: bool = False
    queued: int = 0  # deliveries added to the queue by this run
    due: int = 0  # deliveries to send when the run started
    check: PreflightReport | None = None
    tally: Tally = field(default_factory=Tally)
    status: dict[str, Any] = field(default_factory=dict)  # the contract's status shape after
    error: MailerError | None = None  # retry: this campaign could not be sent (see message)

    def as_json(self) -> dict[str, Any]:
        """The contract's status shape, plus what this run did (extra keys)."""
        data = dict(self.status) or {"campaign": self.campaign}
        data["run"] = {
            "dry_run": self.dry_run,
            "queued": self.queued,
            "due": self.due,
            "sent": self.tally.sent,
            "deferred": self.tally.deferred,
            "failed": self.tally.failed,
            "uncertain": self.tally.uncertain,
            "skipped": self.tally.skipped,
            "released": self.tally.released,
            "lease_lost": self.tally.lost,
            "interrupted": self.tally.interrupted,
            "seconds": round(self.tally.elapsed, 3),
        }
        if self.check is not None:
            data["preflight"] = self.check.as_json()
        return data


def fingerprint(campaign: Campaign) -> str:
    """What a campaign's messages are made of: template sources, sender and links."""
    parts = [
        campaign.digest,
        str(campaign.sender),
        str(campaign.reply_to or ""),
        campaign.list_id or "",
        campaign.unsubscribe_url or "",
        campaign.unsubscribe_mailto or "",
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _snapshot(campaign: Campaign) -> dict[str, Any]:
    return {
        "digest": campaign.digest,
        "sender": str(campaign.sender),
        "reply_to": str(campaign.reply_to or ""),
        "list_id": campaign.list_id,
        "unsubscribe_url": campaign.unsubscribe_url,
        "unsubscribe_mailto": campaign.unsubscribe_mailto,
    }


def _check_not_purged(row: store.CampaignRow | None) -> None:
    if row is not None and row.purged_at is not None:
        raise InputError(
            f"campaign {row.name!r} was purged on {row.purged_at:%Y-%m-%d}: its deliveries are "
            "gone, so sending it again would send everyone a second copy",
            hint="to send these templates again, copy the folder under a new campaign name",
        )


def _check_unchanged(row: store.CampaignRow | None, current: str, *, accept: bool) -> None:
    if row is None or row.fingerprint == current or accept:
        return
    raise InputError(
        f"the campaign {row.name!r} has changed since it was first sent on "
        f"{row.created_at:%Y-%m-%d %H:%M} UTC (templates, sender or unsubscribe links): "
        "its remaining deliveries would differ from those already sent",
        hint=f"restore the templates, or send the rest with the new ones: "
        f"mailer send {row.name} --accept-changes",
    )


def open_transport(settings: Settings, outbox: Path | None, concurrency: int) -> Transport:
    """The relay pool, or the outbox folder; ConfigError (with a hint) when neither is set."""
    # Imported here: commands that send nothing do not load aiosmtplib.
    from mailer.sending.outbox import OutboxTransport
    from mailer.sending.smtp import SmtpPool

    if outbox is not None:
        return OutboxTransport(outbox)
    if not settings.smtp_host:
        raise ConfigError(
            "no relay configured: MAILER_SMTP_HOST is not set",
            hint="set MAILER_SMTP_HOST (and MAILER_SMTP_PORT, MAILER_SMTP_SECURITY), or write "
            "the messages to a folder instead: --outbox DIR",
        )
    return SmtpPool(settings, concurrency=concurrency)


def _bounce_address(settings: Settings) -> str | None:
    """MAILER_BOUNCE_ADDRESS, checked: an ASCII address with room for a token in its local part."""
    if not settings.bounce_address:
        return None
    try:
        address, _ = clean_address(settings.bounce_address)
    except AddressError as exc:
        raise ConfigError(f"MAILER_BOUNCE_ADDRESS {settings.bounce_address!r}: {exc}") from exc
    local = address.address.rpartition("@")[0]
    if address.smtputf8 or len(local) > 64 - 40:
        raise ConfigError(
            f"MAILER_BOUNCE_ADDRESS {settings.bounce_address!r}: the local part must be ASCII "
            "and at most 24 characters, to leave room for +TOKEN"
        )
    return address.address


def run_options(settings: Settings, *, limit: int | None, include_uncertain: bool) -> RunOptions:
    return RunOptions(
        bounce_address=_bounce_address(settings),
        concurrency=settings.concurrency,
        rate=settings.rate,
        limit=limit,
        include_uncertain=include_uncertain,
        lease_seconds=settings.lease_seconds,
        backoff=Backoff(settings.retry_base_delay, settings.retry_max_delay,
                        settings.retry_max_age),
    )


@contextlib.contextmanager
def _stop_on_signals(dispatcher: Dispatcher) -> Iterator[None]:
    """Ctrl-C and SIGTERM stop claiming; what is in flight finishes and is recorded."""
    loop = asyncio.get_running_loop()
    installed = []

    def stop(signum: int) -> None:
        again = dispatcher.stop.is_set() and bool(dispatcher.tally.signal)
        if dispatcher.on_signal is not None:
            dispatcher.on_signal(signum)  # the other worker processes, if any
        if again:
            if dispatcher.leave_on_second_signal:
                # A second Ctrl-C: leave now, without waiting for a slow relay. What is held
                # stays `sending` and becomes `uncertain` when its lease expires: safe.
                os.write(2, b"Stopped at once: the deliveries in flight become uncertain "
                            b"and `mailer retry` resends them once their lease expires.\n")
                os._exit(128 + signum)
            return
        dispatcher.tally.interrupted = True
        dispatcher.tally.signal = signum
        dispatcher.stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (tests call this from threads): no handler
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def run_dispatcher(dispatcher: Dispatcher, total: int) -> Tally:
    async def main() -> Tally:
        with _stop_on_signals(dispatcher):
            return await dispatcher.run(total)

    return asyncio.run(main())


def send(
    settings: Settings,
    engine: Engine,
    name: str,
    *,
    dry_run: bool = False,
    limit: int | None = None,
    outbox: Path | None = None,
    accept_changes: bool = False,
    check_progress: CheckProgress | None = None,
    progress: ProgressFn | None = None,
    clock: Clock = system_clock,
    owner: str | None = None,
) -> RunReport:
    campaign = load_campaign(settings, name)
    current = fingerprint(campaign)
    transport = None if dry_run else open_transport(settings, outbox, settings.concurrency)
    report = RunReport(name, transport.description if transport else "", dry_run=dry_run)
    include_uncertain = settings.uncertain == "resend"
    # Checking and queueing, one process at a time per campaign (PostgreSQL): workers that
    # start together do not all check the same list; the later ones find it queued.
    with store.campaign_lock(engine, name):
        with write_transaction(engine) as connection:
            secret = meta.token_secret(connection, settings.secret)
            row = store.find_campaign(connection, name)
        _check_not_purged(row)
        _check_unchanged(row, current, accept=accept_changes)
        report.check = _preflight(
            engine, settings, MessageFactory(campaign, secret, row.nonce if row else "preflight"),
            row.id if row else None, recheck=row is not None and row.fingerprint != current,
            date=clock(), progress=check_progress,
        )
        if not report.check.ok:
            raise PreflightFailed(report.check)
        if dry_run:
            with read_transaction(engine) as connection:
                report.queued = store.count_to_check(
                    connection, row.id if row else None, unqueued_only=True
                )
                report.due = report.queued + (
                    store.count_due(connection, row.id, clock(), True) if row else 0
                )
                report.status = (
                    (stats.campaign_status(connection, name) if row else None)
                    or _empty_status(name)
                )
            return report
        assert transport is not None
        with write_transaction(engine) as connection:
            now = clock()
            if row is None:
                row = store.create_campaign(
                    connection, name, fingerprint=current, nonce=secrets.token_hex(6),
                    sender=campaign.sender.addr_spec, snapshot=_snapshot(campaign), now=now,
                )
                _check_unchanged(row, current, accept=False)  # made by another process
            elif row.fingerprint != current:
                store.accept_changes(connection, row.id, current, _snapshot(campaign), now)
            report.queued = store.enqueue(connection, row, campaign.sender_domain, now)
            store.expire_leases(connection, now, row.id)
            report.due = store.count_due(connection, row.id, now, include_uncertain)
    report.tally = _run(engine, row, MessageFactory(campaign, secret, row.nonce), settings, outbox,
                        limit=limit, include_uncertain=include_uncertain, progress=progress,
                        clock=clock, owner=owner, total=report.due)
    with read_transaction(engine) as connection:
        report.status = stats.campaign_status(connection, name) or _empty_status(name)
    return report


def _preflight(
    engine: Engine,
    settings: Settings,
    factory: MessageFactory,
    campaign_id: int | None,
    *,
    recheck: bool,
    date: Any,
    progress: CheckProgress | None,
) -> PreflightReport:
    """Make the message of everyone not yet queued (after a template change: of everyone
    still to send), in `settings.workers` processes for a long list."""
    with read_transaction(engine) as connection:
        total = store.count_to_check(connection, campaign_id, unqueued_only=not recheck)

    def check(index: int, count: int, check_engine: Engine,
              progress: CheckProgress | None) -> PreflightReport:
        with read_transaction(check_engine) as connection:
            recipients = (
                Recipient.from_row(r)
                for r in store.recipients_to_check(
                    connection, campaign_id, unqueued_only=not recheck, shard=(index, count)
                )
            )
            return preflight(factory, recipients, date=date, total=total, progress=progress)

    workers = min(settings.workers, max(1, total // 2000))
    if workers <= 1:
        return check(0, 1, engine, progress)
    return check_in_workers(engine, workers, check, progress)


def _run(
    engine: Engine,
    row: store.CampaignRow,
    factory: MessageFactory,
    settings: Settings,
    outbox: Path | None,
    *,
    limit: int | None,
    include_uncertain: bool,
    progress: ProgressFn | None,
    clock: Clock,
    owner: str | None,
    total: int,
) -> Tally:
    """One dispatcher, or `settings.workers` of them in as many processes."""
    if total == 0:
        return Tally()
    options = run_options(settings, limit=limit, include_uncertain=include_uncertain)

    def build(index: int, worker_engine: Engine, connections: int, share: float) -> Dispatcher:
        rate = settings.rate
        return Dispatcher(
            worker_engine, row.id, factory, open_transport(settings, outbox, connections),
            replace(options, concurrency=connections,
                    rate=Rate(rate.count * share, rate.seconds) if rate else None),
            clock=clock, owner=owner if index == 0 else None, progress=progress,
        )

    workers = min(settings.workers, settings.concurrency, max(1, total // 100))
    if workers <= 1 or limit is not None:
        return run_dispatcher(build(0, engine, settings.concurrency, 1.0),
                              min(total, limit) if limit else total)
    return run_workers(engine, workers, settings.concurrency, total, build, run_dispatcher,
                       progress)


def _empty_status(name: str) -> dict[str, Any]:
    return {"campaign": name, "total": 0,
            "counts": {state.value: 0 for state in DeliveryState}, "next_attempt_at": None}


def retry(
    settings: Settings,
    engine: Engine,
    name: str | None = None,
    *,
    outbox: Path | None = None,
    progress: ProgressFn | None = None,
    clock: Clock = system_clock,
    owner: str | None = None,
) -> list[RunReport]:
    """Send what is due in one campaign, or in every campaign; [] when nothing is due."""
    include_uncertain = settings.uncertain == "resend"
    with write_transaction(engine) as connection:
        now = clock()
        store.expire_leases(connection, now)
        if name is not None and store.find_campaign(connection, name) is None:
            raise NotFoundError(
                f"unknown campaign {name!r}",
                hint=f"a campaign exists once `mailer send {name}` has queued it",
            )
        due = store.due_campaigns(connection, now, include_uncertain=include_uncertain)
        secret = meta.token_secret(connection, settings.secret)
    names = [n for n in due if name is None or n == name]
    reports: list[RunReport] = []
    if not names:
        return reports
    description = open_transport(settings, outbox, settings.concurrency).description
    for campaign_name in names:
        report = RunReport(campaign_name, description)
        try:
            campaign = load_campaign(settings, campaign_name)
            with read_transaction(engine) as connection:
                row = store.find_campaign(connection, campaign_name)
                assert row is not None
                _check_unchanged(row, fingerprint(campaign), accept=False)
                report.due = total = store.count_due(
                    connection, row.id, clock(), include_uncertain
                )
        except (InputError, NotFoundError) as exc:
            # This campaign's folder is gone or changed: say so, and go on with the others
            # (one broken campaign must not keep cron from the rest).
            report.error = exc
            reports.append(report)
            continue
        report.tally = _run(
            engine, row, MessageFactory(campaign, secret, row.nonce), settings, outbox,
            limit=None, include_uncertain=include_uncertain,
            progress=progress,
            clock=clock, owner=owner, total=total,
        )
        with read_transaction(engine) as connection:
            report.status = stats.campaign_status(connection, campaign_name) or {}
        reports.append(report)
        if report.tally.interrupted:
            break
    return reports
