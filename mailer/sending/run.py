"""One `mailer send` or `mailer retry` run (`SendRun`): what it was asked (`SendRequest`), its
one transport and message factory, its worker processes, its stopping, and its `RunReport`.

send:  load and check the campaign → refuse if its templates changed since it was first sent →
       pre-flight the subscribers about to be queued (any problem stops here, before any
       connection) → create the campaign row (first use) → queue one delivery per active
       subscriber not yet queued → expire dead workers' leases → run the dispatcher.
retry: expire leases → find what is due (pending, deferred whose time has come, uncertain
       unless held) → run the dispatcher per campaign. Exits at once when nothing is due.

Orchestration only: SQL is in `store`, the checks before queueing in `prepare`, the loop in
`dispatch`, the forking in `workers`, signals in `stopping`, SMTP in `smtp`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from mailer.core.budget import rate_window
from mailer.core.clock import Clock, system_clock
from mailer.core.config import Rate, Settings, worker_count
from mailer.core.delivery import Transport
from mailer.core.errors import (
    ConfigError,
    InputError,
    MailerError,
    NotFoundError,
    RelayRefusedError,
)
from mailer.core.states import DeliveryState
from mailer.messages.campaign import load_campaign
from mailer.messages.factory import MessageFactory
from mailer.messages.preflight import PreflightReport
from mailer.sending.dispatch import Dispatcher
from mailer.sending.options import ProgressFn, RunOptions, Tally
from mailer.sending.prepare import (
    ListCheck,
    bounce_address,
    check_not_purged,
    check_unchanged,
    fingerprint,
    snapshot,
)
from mailer.sending.routes import Route, adding, open_routes, paused
from mailer.sending.stopping import Stopping
from mailer.sending.workers import CheckProgress, SendingWorkers
from mailer.store import claims, counts, meta, queueing
from mailer.store.engine import read_transaction, write_transaction

DELIVERIES_PER_WORKER = 100  # fewer due deliveries are sent by this process alone
AUTO_PER_WORKER = 1000  # the same when mailer chooses the number of processes itself


class PreflightFailed(InputError):
    """Some messages cannot be made: nothing was sent. Carries the pre-flight report."""

    def __init__(self, report: PreflightReport) -> None:
        super().__init__(
            f"{report.problem_count} of {report.checked} messages of {report.campaign!r} "
            "cannot be made; nothing was sent",
            hint=f"see the problems above, or run: mailer preview {report.campaign} --check",
        )
        self.report = report


@dataclass(frozen=True)
class SendRequest:
    """What `mailer send` or `mailer retry` was asked, besides the settings."""

    campaign: str | None = None  # send: the campaign; retry: one campaign, or None for all
    dry_run: bool = False  # check and count; queue and send nothing
    limit: int | None = None  # send at most this many deliveries in this run
    outbox: Path | None = None  # write each message into this folder instead of a relay
    accept_changes: bool = False  # send the rest with templates changed since the first send

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise InputError("--limit must be at least 1")


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
            "returned": self.tally.returned,
            "slowdowns": self.tally.slowdowns,
            "waiting": {"reason": self.tally.wait, "relay": self.tally.wait_relay,
                        "until": self.tally.wait_until} if self.tally.wait else None,
            "interrupted": self.tally.interrupted,
            "seconds": round(self.tally.elapsed, 3),
        }
        if self.check is not None:
            data["preflight"] = self.check.as_json()
        return data


@dataclass(frozen=True)
class _Target:
    """The campaign being sent: what every process's share of it needs."""

    campaign_id: int
    factory: MessageFactory
    total: int


class SendRun:
    """One send or retry run. It builds the transport and each campaign's message factory
    once, runs the dispatcher here or in `worker_count(settings)` processes (each runs `send_share`
    on its own forked copy of this object), and owns its stopping (`Stopping`: the first
    Ctrl-C or SIGTERM stops claiming everywhere, a second one leaves at once)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        request: SendRequest,
        *,
        check_progress: CheckProgress | None = None,
        progress: ProgressFn | None = None,
        clock: Clock = system_clock,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.request = request
        self.check_progress = check_progress
        self.progress = progress
        self.clock = clock
        self.owner = owner
        self.options = RunOptions.from_settings(settings, limit=request.limit, bounce_address=None)
        self.transport: Transport | None = None  # the first route's, for messages
        self.routes: list[Route] = []
        self._target: _Target | None = None
        self._stopping = Stopping()

    # --- send --------------------------------------------------------------------------------

    def send(self) -> RunReport:
        """Check, queue and send one campaign; nothing is ever sent twice."""
        name = self.request.campaign
        assert name is not None
        campaign = load_campaign(self.settings, name)
        current = fingerprint(campaign)
        transport = None if self.request.dry_run else self._open_transport()
        report = RunReport(name, transport.description if transport else "",
                           dry_run=self.request.dry_run)
        # Checking and queueing, one process at a time per campaign (PostgreSQL): workers that
        # start together do not all check the same list; the later ones find it queued.
        with queueing.campaign_lock(self.engine, name):
            with write_transaction(self.engine) as connection:
                secret = meta.token_secret(connection, self.settings.secret)
                row = queueing.find_campaign(connection, name)
            check_not_purged(row)
            check_unchanged(row, current, accept=self.request.accept_changes)
            # A new campaign's nonce is drawn now, so that the pre-flight makes the very
            # messages the run sends. (Should another process create the row first, its
            # nonce is in every queued Message-ID, which the dispatcher always passes.)
            nonce = row.nonce if row else secrets.token_hex(6)
            factory = MessageFactory(campaign, secret, nonce)
            check = ListCheck(factory, row.id if row else None,
                              recheck=row is not None and row.fingerprint != current,
                              date=self.clock())
            report.check = check.run(self.engine, worker_count(self.settings),
                                     self.check_progress)
            if not report.check.ok:
                raise PreflightFailed(report.check)
            if self.request.dry_run:
                return self._count_dry_run(report, row)
            with write_transaction(self.engine) as connection:
                now = self.clock()
                if row is None:
                    row = queueing.create_campaign(
                        connection, name, fingerprint=current, nonce=nonce,
                        sender=campaign.sender.addr_spec, snapshot=snapshot(campaign), now=now,
                    )
                    check_unchanged(row, current, accept=False)  # made by another process
                elif row.fingerprint != current:
                    queueing.accept_changes(connection, row.id, current, snapshot(campaign), now)
                report.queued = queueing.enqueue(connection, row, campaign.sender_domain, now)
                claims.expire_leases(connection, now, row.id)
                report.due = claims.count_due(
                    connection, row.id, now, self.options.include_uncertain
                )
        report.tally = self._dispatch(_Target(row.id, factory, report.due))
        with read_transaction(self.engine) as connection:
            report.status = counts.campaign_status(connection, name) or _empty_status(name)
        return report

    def _count_dry_run(self, report: RunReport, row: queueing.CampaignRow | None) -> RunReport:
        name = report.campaign
        with read_transaction(self.engine) as connection:
            report.queued = queueing.count_to_check(
                connection, row.id if row else None, unqueued_only=True
            )
            report.due = report.queued + (claims.count_due(
                connection, row.id, self.clock(), self.options.include_uncertain
            ) if row else 0)
            report.status = (
                (counts.campaign_status(connection, name) if row else None) or _empty_status(name)
            )
        return report

    # --- retry -------------------------------------------------------------------------------

    def retry(self) -> list[RunReport]:
        """Send what is due in one campaign, or in every campaign; [] when nothing is due."""
        name = self.request.campaign
        include_uncertain = self.options.include_uncertain
        with write_transaction(self.engine) as connection:
            now = self.clock()
            claims.expire_leases(connection, now)
            if name is not None and queueing.find_campaign(connection, name) is None:
                raise NotFoundError(
                    f"unknown campaign {name!r}",
                    hint=f"a campaign exists once `mailer send {name}` has queued it",
                )
            due = claims.due_campaigns(connection, now, include_uncertain=include_uncertain)
            secret = meta.token_secret(connection, self.settings.secret)
        names = [n for n in due if name is None or n == name]
        reports: list[RunReport] = []
        if not names:
            return reports
        description = self._open_transport().description
        for campaign_name in names:
            report = RunReport(campaign_name, description)
            try:
                campaign = load_campaign(self.settings, campaign_name)
                with read_transaction(self.engine) as connection:
                    row = queueing.find_campaign(connection, campaign_name)
                    assert row is not None
                    check_unchanged(row, fingerprint(campaign), accept=False)
                    report.due = claims.count_due(
                        connection, row.id, self.clock(), include_uncertain
                    )
            except (InputError, NotFoundError) as exc:
                # This campaign's folder is gone or changed: say so, and go on with the others
                # (one broken campaign must not keep cron from the rest).
                report.error = exc
                reports.append(report)
                continue
            factory = MessageFactory(campaign, secret, row.nonce)
            report.tally = self._dispatch(_Target(row.id, factory, report.due))
            with read_transaction(self.engine) as connection:
                report.status = counts.campaign_status(connection, campaign_name) or {}
            reports.append(report)
            if report.tally.interrupted:
                break
        return reports

    # --- the way out -------------------------------------------------------------------------

    def _open_transport(self) -> Transport:
        """The run's ways out (one transport per relay, in order, or the outbox), and the
        envelope's bounce address: all checked before anything is queued. Every --workers
        process sends through its forked copies of them (no connection is open when the
        children are forked). A relay whose settings are wrong stops only itself, unless it
        is the only one."""
        if self.transport is not None:
            return self.transport
        self.options = replace(self.options, bounce_address=bounce_address(self.settings))
        self.routes = open_routes(self.settings, self.request.outbox)
        usable = [route.transport for route in self.routes if route.transport is not None]
        if not usable:
            raise next(route.error for route in self.routes if route.error is not None)
        self.transport = usable[0]
        return self.transport

    # --- dispatching -------------------------------------------------------------------------

    def _dispatch(self, target: _Target) -> Tally:
        """One dispatcher, or up to `worker_count(settings)` of them in as many processes."""
        if target.total == 0:
            return Tally()
        self._target = target
        concurrency = self.settings.concurrency
        # Chosen by mailer (MAILER_WORKERS unset), a process is forked only for a list long
        # enough to pay for it; asked for, from DELIVERIES_PER_WORKER on.
        per_worker = DELIVERIES_PER_WORKER if self.settings.workers else AUTO_PER_WORKER
        count = min(worker_count(self.settings), concurrency,
                    max(1, target.total // per_worker))
        if count <= 1 or self.request.limit is not None:
            return self.send_share(0, self.engine, concurrency, self.progress)
        workers = SendingWorkers(self.engine, count, concurrency, self, self.progress)
        workers.start()
        own: Tally | None = None
        error: MailerError | None = None
        with self._stopping.passing_on(workers):
            try:
                own = self.send_share(0, self.engine, workers.connections[0], workers.report)
            except MailerError as exc:
                error = exc
            return workers.finish(own, error)

    def send_share(
        self, index: int, engine: Engine, connections: int, progress: ProgressFn | None
    ) -> Tally:
        """This process's share of the campaign: `connections` of the run's connections and
        as much of its rate, through each relay in turn while one is paused, full or refuses.
        Run here (index 0), and by each forked worker on its copy."""
        target = self._target
        assert target is not None
        if index > 0:
            self._stopping.in_worker = True
        share = connections / self.settings.concurrency
        combined = Tally(total=target.total, started=time.monotonic())
        errors: list[MailerError] = []
        for route in self.routes:
            if route.transport is None:
                assert route.error is not None
                errors.append(route.error)
                combined.notes.append(f"{route.error.message} (it was skipped)")
                continue
            if self.request.limit is not None and combined.done >= self.request.limit:
                break
            pause = paused(engine, route, self.clock)
            if pause is not None:
                combined.add(pause)
                continue
            try:
                tally = self._through(route, index, engine, share, combined, progress)
            except (RelayRefusedError, ConfigError) as exc:
                if len(self.routes) == 1:
                    raise
                errors.append(exc)
                combined.notes.append(f"{exc.message}; the next relay takes over")
                continue
            if not tally.wait or tally.interrupted:
                if not tally.wait:  # this relay sent what was due: no wait to speak of
                    combined.wait = combined.wait_until = combined.wait_relay = ""
                return combined  # everything due was sent (or the run was stopped)
        refusals = [e for e in errors if isinstance(e, RelayRefusedError)]
        if refusals or (errors and len(errors) == len(self.routes)):
            raise (refusals or errors)[0]
        return combined

    def _through(self, route: Route, index: int, engine: Engine, share: float,
                 combined: Tally, progress: ProgressFn | None) -> Tally:
        """One dispatcher through one relay; its tally is added to `combined` as it goes."""
        target, transport, spec = self._target, route.transport, route.spec
        assert target is not None
        assert transport is not None
        rate = (spec.rate if spec is not None else None) or self.options.rate
        own = spec.concurrency if spec and spec.concurrency else self.settings.concurrency
        limit = self.options.limit
        options = replace(
            self.options, concurrency=max(1, round(own * share)),
            rate=Rate(rate.count * share, rate.seconds) if rate else None,
            limit=limit - combined.done if limit is not None else None,
            relay=spec.name if spec else None,
            windows=(spec.quota + ((rate_window(rate.per_second),) if rate else ())
                     if spec else ()),
        )
        dispatcher = Dispatcher(
            engine, target.campaign_id, target.factory, transport, options,
            clock=self.clock, owner=self.owner if index == 0 else None,
            progress=None if progress is None else adding(combined, progress),
        )
        total = min(target.total, options.limit) if options.limit else target.total
        try:
            tally = asyncio.run(self._stopping.run(dispatcher, total))
        finally:
            combined.add(dispatcher.tally)
        return tally


def _empty_status(name: str) -> dict[str, Any]:
    return {"campaign": name, "total": 0,
            "counts": {state.value: 0 for state in DeliveryState}, "next_attempt_at": None}
