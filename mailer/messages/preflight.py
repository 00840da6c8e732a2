"""Pre-flight: render a campaign for every subscriber it would go to, send nothing, report.

Used by `mailer preview CAMPAIGN --check`, and by `mailer send` before it queues anyone (`send
--dry-run` shows it). Each subscriber whose message cannot be made is a problem with the reason; the
summary counts the messages and their domains, and warns about what would hurt delivery
(a free-mail or placeholder sender, no unsubscribe link, addresses that need SMTPUTF8).
Memory stays flat: only counters and the first problems are kept.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailer.core.errors import InputError
from mailer.core.people import Recipient
from mailer.messages.campaign import Campaign
from mailer.messages.factory import MessageFactory

KEPT_PROBLEMS = 100
TOP_DOMAINS = 10

# Mailbox providers whose domains publish DMARC policies a relay cannot sign for: mail "from"
# them sent through any other server is rejected or sent to spam.
FREE_MAIL = frozenset(
    """
    gmail.com googlemail.com yahoo.com yahoo.fr ymail.com hotmail.com hotmail.fr live.com
    live.fr outlook.com outlook.fr msn.com aol.com aol.fr icloud.com me.com mac.com gmx.com
    gmx.fr gmx.de gmx.net web.de orange.fr wanadoo.fr free.fr laposte.net sfr.fr neuf.fr
    bbox.fr numericable.fr protonmail.com proton.me yandex.com yandex.ru mail.ru zoho.com
    """.split()  # noqa: SIM905 - a list of words reads better as words
)
PLACEHOLDER_SUFFIXES = ("example.org", "example.com", "example.net", ".example", ".test",
                        ".invalid", ".localhost", ".local")


@dataclass(frozen=True)
class Problem:
    email: str
    reason: str


@dataclass
class PreflightReport:
    campaign: str
    checked: int = 0
    ready: int = 0
    problem_count: int = 0
    problems: list[Problem] = field(default_factory=list)  # the first KEPT_PROBLEMS
    reasons: Counter[str] = field(default_factory=Counter)
    domains: Counter[str] = field(default_factory=Counter)
    smtputf8: int = 0
    largest: int = 0
    total_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def merge(self, other: PreflightReport) -> None:
        """Add the report of another share of the same list (a worker process's)."""
        self.checked += other.checked
        self.ready += other.ready
        self.problem_count += other.problem_count
        self.problems = (self.problems + other.problems)[:KEPT_PROBLEMS]
        self.reasons.update(other.reasons)
        self.domains.update(other.domains)
        self.smtputf8 += other.smtputf8
        self.largest = max(self.largest, other.largest)
        self.total_bytes += other.total_bytes
        self.warnings += [w for w in other.warnings if w not in self.warnings]
        self.seconds = max(self.seconds, other.seconds)

    def add_problem(self, email: str, reason: str) -> None:
        self.problem_count += 1
        self.reasons[reason] += 1
        if len(self.problems) < KEPT_PROBLEMS:
            self.problems.append(Problem(email, reason))

    def top_domains(self) -> list[tuple[str, int]]:
        """The most frequent domains, most first, then alphabetically (a stable order)."""
        ranked = sorted(self.domains.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:TOP_DOMAINS]

    def as_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "checked": self.checked,
            "ready": self.ready,
            "problems": [{"email": p.email, "reason": p.reason} for p in self.problems],
            "problem_count": self.problem_count,
            "reasons": dict(self.reasons.most_common()),
            "domains": dict(self.top_domains()),
            "other_domains": sum(self.domains.values())
            - sum(n for _, n in self.top_domains()),
            "smtputf8": self.smtputf8,
            "largest_bytes": self.largest,
            "average_bytes": round(self.total_bytes / self.ready) if self.ready else 0,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }


def campaign_warnings(campaign: Campaign) -> list[str]:
    """What would hurt delivery whatever the list: the sender, the unsubscribe links."""
    warnings = []
    domain = campaign.sender_domain.lower()
    if domain in FREE_MAIL:
        warnings.append(
            f"From {campaign.sender.addr_spec} is a free-mail address: your relay cannot sign "
            f"for {domain}, whose DMARC policy makes receivers reject or file the messages as "
            "spam; send from an address on your own domain"
        )
    placeholders = sorted(
        {d for d in (domain, _domain_of(campaign.unsubscribe_url),
                     _domain_of(campaign.unsubscribe_mailto)) if d and _placeholder(d)}
    )
    if placeholders:
        warnings.append(
            f"{', '.join(placeholders)} is a placeholder domain: edit "
            f"{campaign.folder / 'campaign.toml'} (or set MAILER_FROM, MAILER_UNSUBSCRIBE_URL)"
        )
    if campaign.unsubscribe_url is None and campaign.unsubscribe_mailto is None:
        warnings.append(
            "no unsubscribe link: large mailbox providers require List-Unsubscribe for bulk "
            "mail; set [unsubscribe] url or mailto in campaign.toml"
        )
    elif campaign.unsubscribe_url is None:
        warnings.append("no one-click unsubscribe URL (RFC 8058): only a mailto link is given")
    elif campaign.unsubscribe_url.startswith("http://"):
        warnings.append("the unsubscribe URL is plain http on the loopback: for testing only")
    if campaign.list_id is None:
        warnings.append("no list_id in campaign.toml: receivers cannot tell this list apart")
    return warnings


def _domain_of(value: str | None) -> str | None:
    if not value:
        return None
    if "@" in value and "://" not in value:
        return value.rsplit("@", 1)[1].lower()
    from urllib.parse import urlsplit

    return (urlsplit(value.replace("{token}", "t")).hostname or "").lower() or None


def _placeholder(domain: str) -> bool:
    return domain in PLACEHOLDER_SUFFIXES or domain.endswith(
        tuple(suffix if suffix[0] == "." else "." + suffix for suffix in PLACEHOLDER_SUFFIXES)
    )


def preflight(
    factory: MessageFactory,
    recipients: Iterable[Recipient],
    *,
    date: datetime,
    total: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PreflightReport:
    """Make every recipient's message, keep none; count, collect problems, warn."""
    started = time.perf_counter()
    report = PreflightReport(factory.campaign.name, warnings=campaign_warnings(factory.campaign))
    for recipient in recipients:
        report.checked += 1
        try:
            outgoing = factory.make(recipient, date=date)
        except InputError as exc:
            report.add_problem(recipient.email, exc.message)
        else:
            report.ready += 1
            report.domains[recipient.address.rsplit("@", 1)[-1].lower()] += 1
            size = len(outgoing.data)
            report.total_bytes += size
            report.largest = max(report.largest, size)
            if outgoing.smtputf8:
                report.smtputf8 += 1
        if progress is not None and report.checked % 500 == 0:
            progress(report.checked, total or 0)
    if progress is not None:
        progress(report.checked, total or report.checked)
    if report.smtputf8:
        report.warnings.append(
            f"{report.smtputf8} address(es) have a non-ASCII local part: only a relay that "
            "offers SMTPUTF8 can deliver them"
        )
    if report.checked == 0:
        report.warnings.append("no active subscriber: nothing would be sent")
    report.seconds = time.perf_counter() - started
    return report
