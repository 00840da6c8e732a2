"""What `mailer send` does before sending: one test message (`--test-to`), or, through a real
relay on a terminal, the plan and the question (default no; `--yes` skips it). Scripts, cron,
`--outbox` and `--dry-run` are never asked."""

from __future__ import annotations

import sys

import typer

from mailer import api
from mailer.cli.output import out, stderr
from mailer.core.config import Settings


def interactive() -> bool:
    """Standard input and output are a terminal: someone is there to answer."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def confirm_send(settings: Settings, campaign: str, limit: int | None) -> None:
    """Show the plan and ask; leave (exit 1, nothing sent) unless the answer is yes."""
    plan = api.send_plan(settings, campaign, limit=limit)
    pace = (f"{plan.rate}" if plan.rate else "no limit") + f", {plan.concurrency} connections"
    when = ("about " if plan.estimated else "at least ") + _duration(plan.seconds)
    for line in (
        f"About to send {plan.campaign}:",
        f"  recipients  {plan.recipients}" + (" (limited by --limit)" if limit else ""),
        f"  relay       {plan.relay}",
        f"  sender      {plan.sender}",
        f"  rate        {pace}",
        f"  duration    {when}",
    ):
        out.print(line, markup=False)
    if not typer.confirm(f"Send {plan.recipients} messages now?", default=False):
        stderr().print("Nothing sent. (--yes sends without asking.)", markup=False)
        raise typer.Exit(1)


def send_test_message(settings: Settings, campaign: str, to: str, email: str | None) -> None:
    sent = api.send_test(settings, campaign, to, email)
    out.print(f"Test message sent to {sent.to}, rendered for {sent.subscriber}: "
              f"{sent.subject!r}; the relay said: {sent.reply}", markup=False)
    out.print("Nothing was recorded: the campaign's deliveries are untouched.", markup=False)
