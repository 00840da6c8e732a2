"""`mailer purge`: remove what is past its use, keep the counts.

    mailer purge                          every finished campaign idle for 30 days (or
                                          --older-than), and loose bounce reports as old
    mailer purge --campaign NAME          that campaign, as soon as it is finished
    mailer purge --all-personal-data      every campaign, every bounce report, every
                                          subscriber: the end of the list

A campaign is finished when nothing is left to send: no delivery pending, sending, deferred
or uncertain. An unfinished one is never purged: `retry` still needs its addresses. A purged
campaign keeps its counts by state (`mailer status` shows them) and can never be sent again:
its deliveries are gone, so a new send would send everyone a second copy.

Erasing everyone keeps only the keyed hashes of the addresses that unsubscribed or bounced,
so that importing an old file again cannot bring them back. On SQLite the file is rebuilt and
its WAL emptied, so no erased address stays readable in its bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine

from mailer.core.clock import Clock, system_clock
from mailer.core.errors import InputError, NotFoundError
from mailer.store import meta
from mailer.store import purge as store
from mailer.store.engine import scrub, write_transaction

DEFAULT_AGE = timedelta(days=30)
_AGE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 86400}


def parse_age(text: str) -> timedelta:
    """`30d`, `12h`, `2w`, `90m`, `45s`; a bare number is days."""
    match = _AGE.match(text.lower())
    if not match:
        raise InputError(
            f"--older-than {text!r}: expected a number of days or a duration such as 30d, "
            "12h or 2w"
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True)
class Skipped:
    campaign: str
    reason: str


@dataclass
class PurgeReport:
    scope: str
    removed: store.Removed = field(default_factory=store.Removed)
    purged: list[str] = field(default_factory=list)
    already_purged: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "scope": self.scope,
            "purged": self.purged,
            "already_purged": self.already_purged,
            "skipped": [{"campaign": s.campaign, "reason": s.reason} for s in self.skipped],
            "removed": vars(self.removed),
        }


def _unfinished(info: store.CampaignInfo) -> str:
    states = ", ".join(f"{number} {state}" for state, number in info.unfinished.items())
    return f"still to send: {states}"


def purge(
    engine: Engine,
    *,
    campaign: str | None = None,
    older_than: timedelta | None = None,
    all_personal_data: bool = False,
    clock: Clock = system_clock,
) -> PurgeReport:
    if all_personal_data and (campaign is not None or older_than is not None):
        raise InputError(
            "--all-personal-data removes everything; it takes no --campaign or --older-than"
        )
    if all_personal_data:
        report = _purge_everything(engine, clock)
    else:
        report = _purge_campaigns(engine, campaign, older_than, clock)
    removed = report.removed
    if removed.deliveries or removed.attempts or removed.bounces or removed.subscribers:
        scrub(engine, rewrite=True)
    return report


def _purge_campaigns(
    engine: Engine, name: str | None, older_than: timedelta | None, clock: Clock
) -> PurgeReport:
    age = older_than if older_than is not None else (timedelta(0) if name else DEFAULT_AGE)
    scope = f"campaign {name}" if name else "finished campaigns"
    report = PurgeReport(f"{scope}, idle for at least {_describe(age)}")
    with write_transaction(engine) as connection:
        now = clock()
        cutoff = now - age
        infos = store.campaigns(connection, name)
        if name is not None and not infos:
            raise NotFoundError(f"unknown campaign {name!r}")
        for info in infos:
            if info.purged_at is not None:
                report.already_purged.append(info.name)
            elif info.unfinished:
                if name is not None:
                    raise InputError(
                        f"campaign {name!r} is not finished ({_unfinished(info)}); "
                        "nothing was purged",
                        hint="`mailer retry` finishes it: deferred deliveries fail after "
                        "MAILER_RETRY_MAX_AGE; `mailer status` shows what is left",
                    )
                report.skipped.append(Skipped(info.name, _unfinished(info)))
            elif info.deliveries == 0:
                report.skipped.append(Skipped(info.name, "nothing was queued"))
            elif info.last_activity is not None and info.last_activity > cutoff:
                report.skipped.append(Skipped(
                    info.name, f"last activity {info.last_activity:%Y-%m-%d %H:%M} UTC, "
                    f"less than {_describe(age)} ago",
                ))
            else:
                report.removed.add(store.purge_campaign(connection, info.id, now))
                report.purged.append(info.name)
        if name is None:
            report.removed.bounces += store.purge_loose_bounces(connection, cutoff)
        store.log(connection, report.scope, report.removed, now)
    return report


def _purge_everything(engine: Engine, clock: Clock) -> PurgeReport:
    report = PurgeReport("all personal data")
    with write_transaction(engine) as connection:
        now = clock()
        infos = store.campaigns(connection)
        busy = [info for info in infos if info.unfinished and info.purged_at is None]
        if busy:
            listed = "; ".join(f"{info.name}: {_unfinished(info)}" for info in busy)
            raise InputError(
                f"campaigns are not finished ({listed}); nothing was purged",
                hint="`mailer retry` finishes them (deferred deliveries fail after "
                "MAILER_RETRY_MAX_AGE); `mailer status` shows what is left",
            )
        for info in infos:
            if info.purged_at is not None:
                report.already_purged.append(info.name)
            elif info.deliveries:
                report.removed.add(store.purge_campaign(connection, info.id, now))
                report.purged.append(info.name)
        key = meta.secret(connection, meta.SUPPRESSION_KEY)
        report.removed.add(store.erase_subscribers(connection, key, now))
        store.log(connection, report.scope, report.removed, now)
    return report


def _describe(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
