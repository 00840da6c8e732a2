"""Before a send queues anything: the campaign checked against what was already sent (purged?
changed since?), and the pre-flight of the list about to be queued, in shares for --workers.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from mailer.core.addresses import clean_address
from mailer.core.config import Settings
from mailer.core.errors import AddressError, ConfigError, InputError
from mailer.core.people import Recipient
from mailer.core.states import DeliveryState
from mailer.messages.campaign import Campaign
from mailer.messages.factory import MessageFactory
from mailer.messages.preflight import PreflightReport, preflight
from mailer.sending.workers import CheckProgress, check_in_workers
from mailer.store import counts, queueing
from mailer.store.engine import read_transaction

CHECKS_PER_WORKER = 2000  # a shorter list is checked in this process alone
WAITING = (DeliveryState.PENDING, DeliveryState.SENDING, DeliveryState.DEFERRED,
           DeliveryState.UNCERTAIN)


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


def snapshot(campaign: Campaign) -> dict[str, Any]:
    """What the fingerprint covers, kept readable in the campaign row."""
    return {
        "digest": campaign.digest,
        "sender": str(campaign.sender),
        "reply_to": str(campaign.reply_to or ""),
        "list_id": campaign.list_id,
        "unsubscribe_url": campaign.unsubscribe_url,
        "unsubscribe_mailto": campaign.unsubscribe_mailto,
    }


def check_not_purged(row: queueing.CampaignRow | None) -> None:
    if row is not None and row.purged_at is not None:
        raise InputError(
            f"campaign {row.name!r} was purged on {row.purged_at:%Y-%m-%d}: its deliveries are "
            "gone, so sending it again would send everyone a second copy",
            hint="to send these templates again, copy the folder under a new campaign name",
        )


def check_unchanged(row: queueing.CampaignRow | None, current: str, *, accept: bool) -> None:
    if row is None or row.fingerprint == current or accept:
        return
    raise InputError(
        f"the campaign {row.name!r} has changed since it was first sent on "
        f"{row.created_at:%Y-%m-%d %H:%M} UTC (templates, sender or unsubscribe links): "
        "its remaining deliveries would differ from those already sent",
        hint=f"restore the templates, or send the rest with the new ones: "
        f"mailer send {row.name} --accept-changes",
    )


def bounce_address(settings: Settings) -> str | None:
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


class ListCheck:
    """The pre-flight of everyone not yet queued (after a template change: of everyone still
    to send); `check_share` is what each --workers process runs on its shard."""

    def __init__(
        self, factory: MessageFactory, campaign_id: int | None, *, recheck: bool, date: datetime
    ) -> None:
        self.factory = factory
        self.campaign_id = campaign_id
        self.unqueued_only = not recheck
        self.date = date
        self.total = 0

    def count(self, engine: Engine) -> int:
        with read_transaction(engine) as connection:
            self.total = queueing.count_to_check(
                connection, self.campaign_id, unqueued_only=self.unqueued_only
            )
        return self.total

    def check_share(
        self, index: int, count: int, engine: Engine, progress: CheckProgress | None
    ) -> PreflightReport:
        with read_transaction(engine) as connection:
            recipients = (
                Recipient.from_row(r)
                for r in queueing.recipients_to_check(
                    connection, self.campaign_id, unqueued_only=self.unqueued_only,
                    shard=(index, count),
                )
            )
            return preflight(
                self.factory, recipients, date=self.date, total=self.total, progress=progress
            )

    def run(self, engine: Engine, workers: int, progress: CheckProgress | None) -> PreflightReport:
        """The whole list, in up to `workers` processes for a long one."""
        workers = min(workers, max(1, self.count(engine) // CHECKS_PER_WORKER))
        if workers <= 1:
            report = self.check_share(0, 1, engine, progress)
        else:
            report = check_in_workers(engine, workers, self, progress)
        if report.checked == 0 and self.campaign_id is not None:
            self._say_what_is_queued(engine, report)
        return report

    def _say_what_is_queued(self, engine: Engine, report: PreflightReport) -> None:
        """Nobody left to check because everyone is queued already: say so, not "nothing
        would be sent" (the run may well send what is queued)."""
        with read_transaction(engine) as connection:
            found = counts.campaign_status(connection, self.factory.campaign.name)
        if not found or not found["total"]:
            return
        states = found["counts"]
        waiting = sum(states[s.value] for s in WAITING)
        done = found["total"] - waiting - states[DeliveryState.SENT.value]
        report.warnings = [w for w in report.warnings if not w.startswith("no active subscriber")]
        report.warnings.append(
            f"no new subscriber to queue: {waiting} already queued, "
            f"{states[DeliveryState.SENT.value]} already sent"
            + (f", {done} failed or skipped" if done else "")
        )
