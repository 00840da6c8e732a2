"""What a send or retry run leaves behind, said plainly: deliveries held by a process (perhaps
one killed) until its lease runs out, and what a run stopped by a whole-run error (the relay
gone mid-run) had done before that error is printed."""

from __future__ import annotations

from typing import Any

from mailer import api
from mailer.cli.inspection import held_lines
from mailer.cli.output import out
from mailer.core.config import Settings
from mailer.core.errors import MailerError


class Tracked:
    """The run's progress callback, passed on to the bars, keeping the last tally: what a run
    stopped by an error (the relay gone mid-run) had done, to print before the error."""

    def __init__(self, forward: api.ProgressFn | None) -> None:
        self.forward = forward
        self.tally: api.Tally | None = None

    def __call__(self, tally: api.Tally) -> None:
        self.tally = tally
        if self.forward is not None:
            self.forward(tally)


def print_stopped(settings: Settings, campaign: str | None, tally: api.Tally | None) -> None:
    """A run stopped by a whole-run error: what it did, and what is still waiting."""
    if tally is None or not tally.done:
        return
    left = None
    try:
        data = api.status(settings, campaign)
    except MailerError:
        data = {}
    counts: dict[str, Any] = data.get("counts") or {}
    for item in data.get("campaigns", []):
        for state, number in item["counts"].items():
            counts[state] = counts.get(state, 0) + number
    if counts:
        left = sum(counts.get(s, 0) for s in ("pending", "deferred", "uncertain", "sending"))
    out.print(
        (f"{campaign}: " if campaign else "")
        + f"stopped early: {tally.sent} sent, {tally.deferred} deferred, {tally.failed} "
        f"failed, {tally.uncertain} uncertain in this run"
        + (f"; still waiting: {left}" if left is not None else "")
        + ("; `mailer retry` (cron) sends them once the relay is back." if left else "."),
        markup=False,
    )


def print_held(settings: Settings, campaign: str | None) -> None:
    """Deliveries nothing sends now: held by a process (perhaps one killed) until its lease
    runs out."""
    data = api.status(settings, campaign)
    for item in [data] if campaign else data["campaigns"]:
        for held in held_lines(item):
            out.print(f"{item['campaign']}: {held}.", markup=False)
