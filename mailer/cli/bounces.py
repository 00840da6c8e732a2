"""`mailer bounces import`: record the bounce reports of a mailbox, say what was read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from mailer import api
from mailer.cli.output import SHOWN, count, out, print_json, progress_bar
from mailer.cli.root import settings_of

bounces_app = typer.Typer(
    help="Read bounce reports from a mailbox and record them.\n\n"
    "Example: mailer bounces import ~/Mail/bounces.mbox",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@bounces_app.command("import")
def bounces_import_command(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(
        help="An mbox file, a Maildir folder, or imaps://USER@HOST[:PORT]/FOLDER "
        "(password in MAILER_IMAP_PASSWORD or MAILER_IMAP_PASSWORD_FILE).",
        metavar="SOURCE",
    )],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Record the bounces of a mailbox: a permanent failure fails the delivery and marks the
    subscriber bounced; a delay notice is noted; auto-replies are ignored.

    The mailbox is only read, never changed. Importing it again changes nothing.

    Example: mailer bounces import imaps://bounces%40asso.fr@imap.asso.fr/INBOX --json
    """
    with progress_bar("Reading bounces", not as_json, unit="messages") as progress:
        summary = api.import_bounces(settings_of(ctx), source, progress=_counted(progress))
    if as_json:
        print_json(summary.to_json())
        return
    _print_bounces(summary)


def _counted(
    progress: api.Progress | None,
) -> Callable[[int, int | None], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(done, total if total is not None else done)


def _print_bounces(summary: api.BounceSummary) -> None:
    out.print(
        f"{count(summary.messages, 'message')} read from {summary.source}: "
        f"{count(summary.bounces, 'bounce report')} ({summary.permanent} permanent, "
        f"{summary.temporary} temporary), {summary.ignored} ignored, "
        f"{summary.unrecognised} not understood.",
        markup=False,
    )
    out.print(
        f"Matched {summary.matched}, unmatched {summary.unmatched}; "
        f"{count(summary.deliveries_failed, 'delivery', 'deliveries')} failed, "
        f"{count(summary.subscribers_bounced, 'subscriber')} marked bounced.",
        markup=False,
    )
    if summary.complaints or summary.untrusted:
        out.print(
            f"{count(summary.complaints, 'subscriber')} unsubscribed by a complaint; "
            f"{count(summary.untrusted, 'report')} tied to no delivery: recorded, changing "
            "nobody.",
            markup=False,
        )
    if summary.already_imported:
        out.print(
            f"{count(summary.already_imported, 'report')} already imported: left as "
            f"{'it was' if summary.already_imported == 1 else 'they were'}.",
            markup=False,
        )
    if summary.known:
        out.print(
            f"{count(summary.known, 'message')} recorded by an earlier import: not parsed again.",
            markup=False,
        )
    if summary.skipped:
        out.print(
            f"{count(summary.skipped, 'message')} skipped (listed below): the rest is recorded.",
            markup=False,
        )
    for skipped in summary.skipped_messages[:SHOWN]:
        out.print(f"  skipped: {skipped['message']}: {skipped['reason']}", markup=False)
    for reason, number in sorted(summary.ignored_reasons.items()):
        out.print(f"  ignored: {number} × {reason}", markup=False)
    for problem in summary.problems[:SHOWN]:
        out.print(
            f"  not understood: {problem['message']} ({problem['subject'] or 'no subject'}): "
            f"{problem['reason']}",
            markup=False,
        )
    for report in summary.unmatched_reports[:SHOWN]:
        out.print(
            f"  unmatched: {report['message']}: {report['recipient'] or 'no recipient'} "
            f"({report['status'] or 'no status'}, {report['reason']}): {report['because']}",
            markup=False,
        )
    listed = len(summary.problems[:SHOWN]) + len(summary.unmatched_reports[:SHOWN])
    hidden = summary.unrecognised + summary.unmatched - listed
    if hidden > 0:
        out.print(f"  ... and {hidden} more (--json lists up to 100 of each)", markup=False)
