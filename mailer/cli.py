"""The `mailer` command line: parse, call one api function, print, exit with the contract's code.

No SQL or SMTP here. Errors are MailerError only: one line `Error: ...` (and a `Hint: ...`)
on standard error, never a traceback. Results go to standard output; progress to standard
error, and only on a terminal.
"""

from __future__ import annotations

import itertools
import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from mailer import __version__, api
from mailer.bounces.run import BounceSummary
from mailer.core.config import Settings, load_settings
from mailer.core.errors import InputError, MailerError
from mailer.core.states import DeliveryState, SubscriberStatus
from mailer.imports.run import Progress as ProgressCallback
from mailer.messages.preflight import PreflightReport
from mailer.sending.dispatch import ProgressFn, Tally
from mailer.sending.report import write_report
from mailer.sending.run import PreflightFailed, RunReport

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

app = typer.Typer(
    name="mailer",
    help="A mailing-list dispatcher: import a list, send a campaign, retry, never twice.\n\n"
    "Example: mailer import subscribers.csv && mailer status",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
subscribers_app = typer.Typer(
    help="List, unsubscribe or erase subscribers.\n\nExample: mailer subscribers list --json",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(subscribers_app, name="subscribers")


@dataclass
class Global:
    config: Path | None = None

    def settings(self, **overrides: Any) -> Settings:
        return load_settings(self.config).with_overrides(**overrides)


def _version(value: bool) -> None:
    if value:
        out.print(f"mailer {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Settings file (default: ./mailer.toml or $MAILER_CONFIG).",
            metavar="PATH",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Settings: defaults < mailer.toml < MAILER_* environment < options."""
    ctx.obj = Global(config)


def _global(ctx: typer.Context) -> Global:
    return ctx.obj if isinstance(ctx.obj, Global) else Global()


def _print_json(data: Any, *, compact: bool = False) -> None:
    # Compact output uses the json module's C encoder: an import report may list many
    # thousands of lines, and the indenting encoder is pure Python (slow, memory-hungry).
    indent = None if compact else 2
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=indent) + "\n")


@contextmanager
def _progress(
    label: str, enabled: bool, *, unit: str = "bytes"
) -> Iterator[ProgressCallback | None]:
    if not (enabled and err.is_terminal):
        yield None
        return
    with Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn() if unit == "bytes" else MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# --- import -------------------------------------------------------------------------------

SHOWN = 20  # rejected lines / warnings printed before "... and N more"


@app.command("import")
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
    settings = _global(ctx).settings()
    with _progress(f"Importing {file.name}", not as_json) as progress:
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
        _print_json(report.to_json(), compact=True)
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


# --- subscribers --------------------------------------------------------------------------


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
    settings = _global(ctx).settings()
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
    change = api.unsubscribe(_global(ctx).settings(), email, token=token)
    if change.changed:
        out.print(f"{change.email} unsubscribed", markup=False)
    else:
        out.print(f"{change.email} was already {change.status}; nothing changed", markup=False)


@subscribers_app.command("forget")
def forget_command(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The address to erase.", metavar="EMAIL")],
) -> None:
    """Erase a person for real (right to erasure): every row naming the address is deleted.

    Only a keyed hash is kept, so a later import cannot bring them back.

    Example: mailer subscribers forget helene@example.fr
    """
    erasure = api.forget(_global(ctx).settings(), email)
    if erasure.was_subscriber:
        out.print(f"{email} erased; a later import will not add it again", markup=False)
    else:
        out.print(f"{email} was not in the list; recorded so that no import adds it", markup=False)


# --- preview ------------------------------------------------------------------------------

PREVIEW_HEADERS = ("From", "To", "Reply-To", "Subject", "Date", "Message-ID", "List-Id",
                   "List-Unsubscribe")


class Format(StrEnum):
    text = "text"
    html = "html"
    eml = "eml"


@app.command("preview")
def preview_command(
    ctx: typer.Context,
    campaign: Annotated[
        str, typer.Argument(help="The campaign: a folder under the templates directory.")
    ],
    email: Annotated[
        str | None,
        typer.Option(help="The subscriber (default: the first active one).", metavar="EMAIL"),
    ] = None,
    fmt: Annotated[
        Format,
        typer.Option("--format", help="text: headers and text part; html: the HTML part; "
                     "eml: the raw message bytes."),
    ] = Format.text,
    check: Annotated[
        bool,
        typer.Option("--check", help="Pre-flight: render for every active subscriber, send "
                     "nothing, report problems (exit 1 if any)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --check: print JSON.")] = False,
) -> None:
    """Show exactly what a subscriber would receive; or check the whole campaign.

    Example: mailer preview closure-notice --email helene.dupont@exemple.fr
    """
    if as_json and not check:
        raise InputError("--json goes with --check", hint="for the raw message: --format eml")
    settings = _global(ctx).settings()
    if check:
        with _progress("Checking", not as_json, unit="messages") as progress:
            report = api.check_campaign(settings, campaign, progress=progress)
        _print_check(report, as_json)
        if not report.ok:
            raise typer.Exit(1)
        return
    shown = api.preview(settings, campaign, email)
    outgoing = shown.outgoing
    if shown.status != SubscriberStatus.ACTIVE.value:
        err.print(f"Note: {outgoing.recipient.email} is {shown.status}: a send skips them.",
                  markup=False)
    if outgoing.smtputf8:
        err.print(f"Note: {outgoing.recipient.email} needs a relay that offers SMTPUTF8.",
                  markup=False)
    if fmt is Format.eml:
        sys.stdout.buffer.write(outgoing.data)
        sys.stdout.flush()
        return
    if fmt is Format.html:
        if outgoing.parts.html is None:
            raise InputError(f"campaign {campaign!r} has no HTML part (body.html)")
        sys.stdout.write(outgoing.parts.html)
        return
    for name in PREVIEW_HEADERS:
        value = shown.header(name)
        if value is not None:
            out.print(f"{name}: {value}", markup=False)
    sys.stdout.write("\n" + outgoing.parts.text)


def _print_check(report: PreflightReport, as_json: bool) -> None:
    if as_json:
        _print_json(report.as_json())
        return
    out.print(
        f"{report.campaign}: {report.ready} of {report.checked} messages ready"
        + (f", {report.problem_count} with problems" if report.problem_count else "")
        + (f" (largest {report.largest / 1024:.1f} KiB)" if report.ready else "")
        + f"; checked in {report.seconds:.1f} s.",
        markup=False,
    )
    if report.domains:
        top = report.top_domains()
        rest = sum(report.domains.values()) - sum(n for _, n in top)
        listed = ", ".join(f"{domain} {n}" for domain, n in top)
        out.print(f"Domains: {listed}" + (f", others {rest}" if rest else ""), markup=False)
    for problem in report.problems[:SHOWN]:
        out.print(f"Problem: {problem.email}: {problem.reason}", markup=False)
    if report.problem_count > SHOWN:
        out.print(f"... and {report.problem_count - SHOWN} more problems; by reason:",
                  markup=False)
        for reason, count in report.reasons.most_common(SHOWN):
            out.print(f"  {count} × {reason}", markup=False)
    for warning in report.warnings:
        out.print(f"Warning: {warning}", markup=False)


# --- status -------------------------------------------------------------------------------


@app.command("status")
def status_command(
    ctx: typer.Context,
    campaign: Annotated[
        str | None, typer.Argument(help="One campaign (default: all).", metavar="CAMPAIGN")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Where things stand: subscribers by status, deliveries by state per campaign.

    Example: mailer status closure-notice --json
    """
    data = api.status(_global(ctx).settings(), campaign)
    if as_json:
        _print_json(data)
        return
    campaigns = [data] if campaign else data["campaigns"]
    if not campaign:
        counts = data["subscribers"]
        out.print("Subscribers: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
        if not campaigns:
            out.print("No campaign yet.")
    for item in campaigns:
        states = ", ".join(f"{n} {s}" for s, n in item["counts"].items() if n)
        line = f"{item['campaign']}: {item['total']} deliveries"
        line += f" ({states})" if states else ""
        if item["next_attempt_at"]:
            line += f"; next attempt at {item['next_attempt_at']}"
        out.print(line, markup=False)


# --- send, retry, report ------------------------------------------------------------------


@dataclass
class SendBars:
    """The callbacks of the live display of `send` / `retry`: the pre-flight, then the run."""

    check: ProgressCallback | None = None
    send: ProgressFn | None = None


@contextmanager
def _send_progress(label: str, enabled: bool) -> Iterator[SendBars]:
    """One live display (rich allows one at a time) with two bars: the pre-flight's count,
    then the run's done of due, sent · deferred · failed, rate and time left. Terminal only."""
    if not (enabled and err.is_terminal):
        yield SendBars()
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        checking = bar.add_task("Checking", total=None, detail="", visible=False)
        sending = bar.add_task(label, total=None, detail="", visible=False)

        def check(done: int, total: int) -> None:
            bar.update(checking, completed=done, total=total or None, visible=True)

        def send(tally: Tally) -> None:
            elapsed = tally.elapsed
            rate = tally.done / elapsed if elapsed > 0 else 0.0
            bar.update(
                sending, completed=tally.done, total=tally.total or None, visible=True,
                detail=f"sent {tally.sent} · deferred {tally.deferred} · failed "
                f"{tally.failed}" + (f" · uncertain {tally.uncertain}" if tally.uncertain
                                     else "") + f" · {rate:.0f}/s",
            )

        yield SendBars(check, send)


def _print_run(report: RunReport) -> None:
    tally = report.tally
    if report.dry_run:
        out.print(
            f"{report.campaign}: dry run, nothing sent: {report.queued} deliveries would be "
            f"queued, {report.due} sent.",
            markup=False,
        )
        return
    rate = tally.done / tally.elapsed if tally.elapsed > 0 else 0.0
    line = (
        f"{report.campaign}: {tally.sent} sent, {tally.deferred} deferred, {tally.failed} "
        f"failed, {tally.uncertain} uncertain, {tally.skipped} skipped"
    )
    if report.queued:
        line += f"; {report.queued} newly queued"
    if tally.done:
        line += f"; {tally.elapsed:.1f} s, {rate:.0f} messages/s via {report.transport}"
    out.print(line + ".", markup=False)
    counts = report.status.get("counts", {})
    left = sum(counts.get(s, 0) for s in ("pending", "deferred", "uncertain", "sending"))
    if tally.interrupted:
        out.print(f"Stopped: {tally.released} claimed deliveries released; run "
                  f"`mailer send {report.campaign}` again to continue.", markup=False)
    elif left:
        when = report.status.get("next_attempt_at")
        out.print(
            f"Still to send: {left}" + (f" (next retry due {when})" if when else "")
            + f"; `mailer send {report.campaign}` again continues, and `mailer retry` (cron) "
            "sends each when due.",
            markup=False,
        )
    if tally.lost:
        out.print(f"Not sent: {tally.lost} claimed deliveries whose lease ran out first (the "
                  "process was paused?); another run may have taken them over.", markup=False)
    if tally.uncertain or counts.get("uncertain"):
        out.print(
            f"Uncertain: {counts.get('uncertain', tally.uncertain)} (the connection broke after "
            "the message was transmitted: the relay may have it). `mailer retry` resends them "
            "with the same Message-ID unless MAILER_UNCERTAIN=hold.",
            markup=False,
        )


def _exit_if_interrupted(reports: list[RunReport]) -> None:
    """128 + the signal, as a shell reports it: 130 after Ctrl-C, 143 after SIGTERM."""
    for report in reports:
        if report.tally.interrupted:
            raise typer.Exit(128 + (report.tally.signal or signal.SIGINT))


@app.command("send")
def send_command(
    ctx: typer.Context,
    campaign: Annotated[
        str, typer.Argument(help="The campaign: a folder under the templates directory.")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and count everything; connect to nothing, "
                           "queue nothing.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(help="Send at most N in this run (a first small batch).",
                                 metavar="N")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="SMTP connections in parallel.", metavar="K")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Sending processes, one core each (the K connections "
                                 "and the rate are shared among them).", metavar="N")
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option(help="At most R messages per second, or N/min, N/h.", metavar="R"),
    ] = None,
    outbox: Annotated[
        Path | None,
        typer.Option(help="Write each message as an .eml file into DIR instead of a relay.",
                     metavar="DIR"),
    ] = None,
    accept_changes: Annotated[
        bool,
        typer.Option("--accept-changes", help="The templates changed since the first send: "
                     "send the rest with the new ones."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Send a campaign: check every message, queue one per active subscriber, send.

    Running it again sends nothing twice and picks up what is left. Ctrl-C stops cleanly:
    messages in flight finish and are recorded, the rest is released for the next run.

    Example: mailer send closure-notice --limit 10, then: mailer send closure-notice
    """
    settings = _global(ctx).settings(concurrency=concurrency, rate=rate, workers=workers)
    try:
        with _send_progress(f"Sending {campaign}", not as_json) as bars:
            report = api.send(
                settings, campaign, dry_run=dry_run, limit=limit, outbox=outbox,
                accept_changes=accept_changes, check_progress=bars.check, progress=bars.send,
            )
    except PreflightFailed as exc:
        _print_check(exc.report, as_json=as_json)
        raise
    if as_json:
        _print_json(report.as_json())
    else:
        if report.check is not None and (dry_run or report.check.warnings):
            _print_check(report.check, as_json=False)
        _print_run(report)
    _exit_if_interrupted([report])


class UncertainChoice(StrEnum):
    resend = "resend"
    hold = "hold"


@app.command("retry")
def retry_command(
    ctx: typer.Context,
    campaign: Annotated[
        str | None, typer.Argument(help="One campaign (default: all).", metavar="CAMPAIGN")
    ] = None,
    uncertain: Annotated[
        UncertainChoice | None,
        typer.Option(help="Deliveries the relay may already have: resend them (default, same "
                     "Message-ID) or hold them."),
    ] = None,
    outbox: Annotated[
        Path | None,
        typer.Option(help="Write the messages into DIR instead of a relay.", metavar="DIR"),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Sending processes, one core each.", metavar="N")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Send what is due: deferred deliveries whose time has come, interrupted and uncertain ones.

    Made for cron: exits 0 at once when nothing is due.

    Example: mailer retry --json; in a crontab: */10 * * * * cd /srv/liste && mailer retry
    """
    settings = _global(ctx).settings(
        uncertain=uncertain.value if uncertain else None, workers=workers
    )
    with _send_progress("Retrying", not as_json) as bars:
        reports = api.retry(settings, campaign, outbox=outbox, progress=bars.send)
    sent = [r for r in reports if r.error is None]
    if as_json:
        if campaign is not None:
            _print_json(sent[0].as_json() if sent else api.status(settings, campaign))
        else:
            # `mailer status --json`'s shape, with what this run did for each campaign it ran.
            data = api.status(settings)
            runs = {r.campaign: r.as_json()["run"] for r in sent}
            for item in data["campaigns"]:
                if item["campaign"] in runs:
                    item["run"] = runs[item["campaign"]]
            _print_json(data)
    elif not reports:
        out.print("Nothing is due.")
    for report in [] if as_json else sent:
        _print_run(report)
    _exit_if_interrupted(reports)
    errors = [(r.campaign, r.error) for r in reports if r.error is not None]
    for name, error in errors[1:]:
        err.print(f"Error: {name}: {error.message}", markup=False)
    if errors:
        raise errors[0][1]  # after the others were sent: exit 1 so cron reports it


@app.command("report")
def report_command(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Argument(help="The campaign.")],
    state: Annotated[
        list[DeliveryState] | None,
        typer.Option(help="Only deliveries in this state (repeatable; default: all but sent).",
                     metavar="STATE"),
    ] = None,
    delimiter: Annotated[
        str, typer.Option(help="Cell separator: , (default) or ; for a French Excel.",
                          metavar="D")
    ] = ",",
    csv_path: Annotated[
        Path | None,
        typer.Option("--csv", help="Write the report to this CSV file (default: standard "
                     "output).", metavar="OUT.csv"),
    ] = None,
) -> None:
    """Who did not get the message, and why: one CSV row per delivery, ready to act on.

    Example: mailer report closure-notice --state failed --csv echecs.csv
    """
    rows = api.report(_global(ctx).settings(), campaign, state)
    rows = itertools.chain([next(rows)], rows)  # the header: an unknown campaign fails here,
    # before --csv opens (and empties) the file
    if delimiter not in {",", ";", "\t", "|"}:
        raise InputError(f"invalid delimiter {delimiter!r}", hint="use , or ; (or a tab, |)")
    written = write_report(rows, csv_path, delimiter)
    if csv_path is not None:
        out.print(f"{written} deliveries written to {csv_path}", markup=False)


# --- bounces ------------------------------------------------------------------------------

bounces_app = typer.Typer(
    help="Read bounce reports from a mailbox and record them.\n\n"
    "Example: mailer bounces import ~/Mail/bounces.mbox",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(bounces_app, name="bounces")


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
    with _progress("Reading bounces", not as_json, unit="messages") as progress:
        summary = api.import_bounces(_global(ctx).settings(), source, progress=_counted(progress))
    if as_json:
        _print_json(summary.to_json())
        return
    _print_bounces(summary)


def _counted(
    progress: ProgressCallback | None,
) -> Callable[[int, int | None], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(done, total if total is not None else done)


def _count(number: int, singular: str, plural: str | None = None) -> str:
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def _print_bounces(summary: BounceSummary) -> None:
    out.print(
        f"{_count(summary.messages, 'message')} read from {summary.source}: "
        f"{_count(summary.bounces, 'bounce report')} ({summary.permanent} permanent, "
        f"{summary.temporary} temporary), {summary.ignored} ignored, "
        f"{summary.unrecognised} not understood.",
        markup=False,
    )
    out.print(
        f"Matched {summary.matched}, unmatched {summary.unmatched}; "
        f"{_count(summary.deliveries_failed, 'delivery', 'deliveries')} failed, "
        f"{_count(summary.subscribers_bounced, 'subscriber')} marked bounced.",
        markup=False,
    )
    if summary.already_imported:
        out.print(
            f"{_count(summary.already_imported, 'report')} already imported: left as "
            f"{'it was' if summary.already_imported == 1 else 'they were'}.",
            markup=False,
        )
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
            f"({report['status'] or 'no status'})",
            markup=False,
        )
    listed = len(summary.problems[:SHOWN]) + len(summary.unmatched_reports[:SHOWN])
    hidden = summary.unrecognised + summary.unmatched - listed
    if hidden > 0:
        out.print(f"  ... and {hidden} more (--json lists up to 100 of each)", markup=False)


# --- serve --------------------------------------------------------------------------------


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(
        help="Address to listen on (plain HTTP; put a reverse proxy with TLS in front)."
    )] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        min=0, max=65535, help="Port to listen on (0: any free port, printed)."
    )] = 8080,
) -> None:
    """Answer one-click unsubscribe links (RFC 8058) at the path of MAILER_UNSUBSCRIBE_URL.

    GET shows a page in French with a button; only the POST unsubscribes.

    Example: mailer serve --port 8080
    """
    from mailer import web  # the web stack loads only for this command

    web.serve(_global(ctx).settings(), host, port)


# --- purge --------------------------------------------------------------------------------


@app.command("purge")
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
    settings = _global(ctx).settings()
    if all_personal_data and not yes and sys.stdin.isatty() and not as_json:
        typer.confirm(
            "Erase every subscriber, delivery and bounce report for good?", abort=True,
            err=True,
        )
    result = api.purge(
        settings, campaign=campaign, older_than=older_than, all_personal_data=all_personal_data
    )
    if as_json:
        _print_json(result.to_json())
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
        f", {_count(removed.subscribers, 'subscriber')} (keyed hashes kept for "
        f"{removed.suppressions} who unsubscribed or bounced)"
    )
    out.print(
        f"Removed {_count(removed.deliveries, 'delivery', 'deliveries')}, "
        f"{_count(removed.attempts, 'attempt log entry', 'attempt log entries')}, "
        f"{_count(removed.bounces, 'bounce report')}{erased if all_personal_data else ''}.",
        markup=False,
    )


# --- entry point --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; MailerError becomes `Error: ...` and its exit code."""
    try:
        app(args=argv, prog_name="mailer")
    except MailerError as exc:
        err.print(f"Error: {exc.message}", markup=False)
        if exc.hint:
            err.print(f"Hint: {exc.hint}", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("Interrupted.")
        sys.exit(130)
    except SystemExit as exc:
        # Usage errors are the user's to fix: exit 1 as the contract says (click uses 2).
        if exc.code == 2:
            sys.exit(1)
        raise
