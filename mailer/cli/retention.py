"""`mailer purge`: remove what is past its use, keep the counts."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mailer import api
from mailer.cli.output import count, out, print_json
from mailer.cli.root import settings_of


def purge_command(
    ctx: typer.Context,
    campaign: Annotated[str | None, typer.Option(
        "--campaign", help="Purge this campaign only, as soon as it is finished.",
        metavar="NAME",
    )] = None,
    older_than: Annotated[str | None, typer.Option(
        "--older-than",
        help="Only campaigns idle for this long: 30d, 12h, 2w (default 30d; 0 with --campaign).",
        metavar="AGE",
    )] = None,
    all_personal_data: Annotated[bool, typer.Option(
        "--all-personal-data",
        help="The end of the list: erase every subscriber, delivery, attempt and bounce; keep "
        "only counts and keyed hashes of the addresses that unsubscribed or bounced.",
    )] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Do not ask for confirmation (--all-personal-data on a terminal)."
    )] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Remove attempt logs, bounce reports and personal data past their use; keep the counts.

    An unfinished campaign (something still pending, deferred or uncertain) is never purged.
    A purged campaign cannot be sent again. On SQLite nothing removed stays readable in the
    database file.

    Example: mailer purge --campaign closure-notice
    """
    settings = settings_of(ctx)
    if all_personal_data and not yes and sys.stdin.isatty() and not as_json:
        typer.confirm(
            "Erase every subscriber, delivery and bounce report for good?", abort=True,
            err=True,
        )
    result = api.purge(
        settings, campaign=campaign, older_than=older_than, all_personal_data=all_personal_data
    )
    if as_json:
        print_json(result.to_json())
        return
    removed = result.removed
    for name in result.purged:
        out.print(f"Purged {name}: its counts remain (mailer status {name}).", markup=False)
    for name in result.already_purged:
        if campaign is not None or all_personal_data:
            out.print(f"{name} was already purged.", markup=False)
    for skipped in result.skipped:
        out.print(f"Kept {skipped.campaign}: {skipped.reason}.", markup=False)
    erased = (
        f", {count(removed.subscribers, 'subscriber')} (keyed hashes kept for "
        f"{removed.suppressions} who unsubscribed or bounced)"
    )
    out.print(
        f"Removed {count(removed.deliveries, 'delivery', 'deliveries')}, "
        f"{count(removed.attempts, 'attempt log entry', 'attempt log entries')}, "
        f"{count(removed.bounces, 'bounce report')}{erased if all_personal_data else ''}.",
        markup=False,
    )
