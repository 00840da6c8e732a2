"""`mailer import` and `mailer subscribers list|unsubscribe|forget`: who is on the list."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mailer import api
from mailer.cli.output import SHOWN, out, print_json, progress_bar, stderr
from mailer.cli.root import settings_of
from mailer.core.errors import MailerError
from mailer.core.states import SubscriberStatus

subscribers_app = typer.Typer(
    help="List, unsubscribe or erase subscribers.\n\nExample: mailer subscribers list --json",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def import_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The CSV export to import.", metavar="FILE.csv")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report without writing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    encoding: Annotated[
        str | None,
        typer.Option(help="Force an encoding (default: detected; e.g. cp1252).", metavar="ENC"),
    ] = None,
    delimiter: Annotated[
        str | None,
        typer.Option(help="Force a delimiter: , ; | or tab (default: detected).", metavar="D"),
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar="COLUMN=FIELD",
            help="Say which column fills a field: email, first_name, last_name, name, "
            "civility, status or ignore. Repeatable.",
        ),
    ] = None,
    attribute: Annotated[
        list[str] | None,
        typer.Option(
            help="Also keep this column as an attribute ('*' for all). Repeatable.",
            metavar="COLUMN",
        ),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            help="Write rejected rows, with line and reason, to this CSV.", metavar="OUT.csv"
        ),
    ] = None,
) -> None:
    """Import subscribers from a CSV export (Excel, Mailchimp, listmonk, hand-made).

    Encoding and delimiter are detected; columns are recognised by name (email, courriel,
    prénom, nom, ...). Duplicates are skipped, nobody who unsubscribed is resubscribed, and
    every rejected line is reported. Other columns are not stored unless --attribute says so.

    Example: mailer import export.csv --dry-run, then: mailer import export.csv --rejects rejets.csv
    """
    settings = settings_of(ctx)
    with progress_bar(f"Importing {file.name}", not as_json) as progress:
        report = api.import_subscribers(
            settings,
            file,
            dry_run=dry_run,
            encoding=encoding,
            delimiter=delimiter,
            maps=map_,
            attributes=attribute,
            rejects_path=rejects,
            progress=progress,
        )
    if as_json:
        print_json(report.to_json(), compact=True)
        return
    shown_delimiter = {"\t": "tab"}.get(report.delimiter, report.delimiter)
    out.print(
        f"{report.file} ({report.encoding}, delimiter {shown_delimiter!r}): "
        f"{report.rows} rows" + (" — dry run, nothing written" if dry_run else "")
    )
    for label, value in (
        ("imported", report.imported),
        ("updated", report.updated),
        ("unchanged", report.unchanged),
        ("duplicates", report.duplicates),
        ("rejected", len(report.rejected)),
    ):
        out.print(f"  {label:<11}{value:>8}")
    out.print("Columns: " + ", ".join(f"{h} → {f}" for f, h in report.columns.items()))
    if report.ignored_columns:
        out.print(
            "Not stored: "
            + ", ".join(report.ignored_columns)
            + " (keep them with --attribute COLUMN)"
        )
    for title, items in (
        ("Rejected", [(r.line, r.reason) for r in report.rejected]),
        ("Warnings", [(w.line, w.message) for w in report.warnings]),
    ):
        if items:
            out.print(f"{title}:")
            for line, text in items[:SHOWN]:
                out.print(f"  line {line}: {text}", markup=False)
            if len(items) > SHOWN:
                more = "; --rejects FILE writes them all" if title == "Rejected" else ""
                out.print(f"  … and {len(items) - SHOWN} more{more}")
    if rejects and report.rejected:
        out.print(f"Rejected rows written to {rejects}")


@subscribers_app.command("list")
def list_command(
    ctx: typer.Context,
    status: Annotated[
        SubscriberStatus | None, typer.Option(help="Only subscribers of this status.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List subscribers, streamed (tab-separated, or a JSON array with --json).

    Example: mailer subscribers list --status unsubscribed --json
    """
    settings = settings_of(ctx)
    rows = api.list_subscribers(settings, status)
    write = sys.stdout.write
    if as_json:
        write("[")
        for index, row in enumerate(rows):
            write(("," if index else "") + "\n  " + json.dumps(row, ensure_ascii=False))
        write("\n]\n")
        return
    for row in rows:
        name = " ".join(p for p in (row["first_name"], row["last_name"]) if p)
        write(f"{row['email']}\t{name}\t{row['status']}\n")


@subscribers_app.command("unsubscribe")
def unsubscribe_command(
    ctx: typer.Context,
    email: Annotated[
        str | None, typer.Argument(help="The address to unsubscribe.", metavar="EMAIL")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="The token of an unsubscribe link, instead of an address.", metavar="TOKEN"
        ),
    ] = None,
) -> None:
    """Unsubscribe someone: they get nothing more, and no import resubscribes them.

    Example: mailer subscribers unsubscribe helene@example.fr
    """
    if (email is None) == (token is None):
        raise MailerError(
            "give either an EMAIL or --token TOKEN",
            hint="mailer subscribers unsubscribe helene@example.fr",
        )
    change = api.unsubscribe(settings_of(ctx), email, token=token)
    if change.changed:
        out.print(f"{change.email} unsubscribed", markup=False)
    else:
        out.print(f"{change.email} was already {change.status}; nothing changed", markup=False)


@subscribers_app.command("forget")
def forget_command(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The address to erase.", metavar="EMAIL")],
    outbox: Annotated[
        Path | None,
        typer.Option(help="Also delete this person's .eml files in this outbox folder "
                     "(written by `mailer send --outbox DIR`).", metavar="DIR"),
    ] = None,
) -> None:
    """Erase a person for real (right to erasure): every row naming the address is deleted.

    Only a keyed hash is kept, so a later import cannot bring them back. Files written from
    the database (outbox, reports, rejects) are named so you can remove them too.

    Example: mailer subscribers forget helene@example.fr --outbox outbox
    """
    erasure = api.forget(settings_of(ctx), email, outbox=outbox)
    if erasure.was_subscriber:
        out.print(f"{email} erased; a later import will not add it again", markup=False)
    else:
        out.print(f"{email} was not in the list; recorded so that no import adds it", markup=False)
    if outbox is not None:
        out.print(f"{len(erasure.removed)} of their messages removed from {outbox}",
                  markup=False)
    stderr().print(
        "Note: copies may remain outside the database: outbox folders (.eml files; "
        "--outbox DIR removes them), CSV reports (`mailer report --csv`), rejects files "
        "(`mailer import --rejects`) and backups.", markup=False)
