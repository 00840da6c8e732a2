"""`mailer send`, `mailer retry` and `mailer report`: the run, its live bars and summary,
and who did not get the message."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mailer import api
from mailer.cli import asking
from mailer.cli.aftermath import Tracked, print_held, print_stopped
from mailer.cli.inspection import held_lines, local_time, print_check
from mailer.cli.output import out, print_json, stderr
from mailer.cli.root import settings_of
from mailer.core.errors import InputError, MailerError
from mailer.core.states import DeliveryState


@dataclass
class SendBars:
    """The callbacks of the live display of `send` / `retry`: the pre-flight, then the run."""

    check: api.Progress | None = None
    send: api.ProgressFn | None = None


@contextmanager
def _send_progress(label: str, enabled: bool) -> Iterator[SendBars]:
    """One live display (rich allows one at a time) with two bars: the pre-flight's count,
    then the run's done of due, sent · deferred · failed, rate and time left. Terminal only."""
    err = stderr()
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

        def send(tally: api.Tally) -> None:
            elapsed = tally.elapsed
            rate = tally.done / elapsed if elapsed > 0 else 0.0
            bar.update(
                sending, completed=tally.done, total=tally.total or None, visible=True,
                detail=f"sent {tally.sent} · deferred {tally.deferred} · failed "
                f"{tally.failed}" + (f" · uncertain {tally.uncertain}" if tally.uncertain
                                     else "") + f" · {rate:.0f}/s",
            )

        yield SendBars(check, send)


def _print_run(report: api.RunReport) -> None:
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
    for held in held_lines(report.status):
        out.print(f"Held: {held}.", markup=False)
    if tally.lost:
        out.print(f"Not sent: {tally.lost} claimed deliveries whose lease ran out first (the "
                  "process was paused?); another run may have taken them over.", markup=False)
    _print_waits(report)
    if tally.uncertain or counts.get("uncertain"):
        out.print(
            f"Uncertain: {counts.get('uncertain', tally.uncertain)} (the connection broke after "
            "the message was transmitted: the relay may have it). `mailer retry` resends them "
            "with the same Message-ID unless MAILER_UNCERTAIN=hold.",
            markup=False,
        )


def _print_waits(report: api.RunReport) -> None:
    """Why the run stopped short, on standard error: a full window, a paused relay."""
    tally, err = report.tally, stderr()
    counts = report.status.get("counts", {})
    left = sum(counts.get(s, 0) for s in ("pending", "deferred", "uncertain", "sending"))
    for note in tally.notes:
        err.print(f"Note: {note}", markup=False)
    until = local_time(tally.wait_until)[0] if tally.wait_until else ""
    if tally.wait == "window":
        err.print(f"The relay {tally.wait_relay}'s declared budget is used up for now: {left} "
                  f"left; next slot at {until}. `mailer retry` (cron) goes on then.",
                  markup=False)
    elif tally.wait == "paused":
        err.print(f"The relay {tally.wait_relay} is paused until {until} (it refused for its "
                  "budget); nothing was sent through it. `mailer retry` (cron) goes on then.",
                  markup=False)
    if tally.slowdowns:
        err.print(f"The relay asked to slow down {tally.slowdowns} time"
                  f"{'s' if tally.slowdowns > 1 else ''}: fewer connections, a slower pace, "
                  "nobody charged.", markup=False)


def _exit_if_interrupted(reports: list[api.RunReport]) -> None:
    """128 + the signal, as a shell reports it: 130 after Ctrl-C, 143 after SIGTERM."""
    for report in reports:
        if report.tally.interrupted:
            raise typer.Exit(128 + (report.tally.signal or signal.SIGINT))


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
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Send without showing the plan and asking (on "
                           "a terminal, a send through a relay asks first).")
    ] = False,
    test_to: Annotated[
        str | None,
        typer.Option("--test-to", help="Send one test message, rendered for a subscriber, to "
                     "ADDRESS only; nothing is recorded.", metavar="ADDRESS"),
    ] = None,
    email: Annotated[
        str | None,
        typer.Option(help="With --test-to: the subscriber it is rendered for (default: the "
                     "first active one).", metavar="SUBSCRIBER"),
    ] = None,
) -> None:
    """Send a campaign: check every message, queue one per active subscriber, send.

    Running it again sends nothing twice and picks up what is left. Ctrl-C stops cleanly:
    messages in flight finish and are recorded, the rest is released for the next run.

    Example: mailer send closure-notice --limit 10, then: mailer send closure-notice
    """
    settings = settings_of(ctx, concurrency=concurrency, rate=rate, workers=workers)
    if test_to is not None or email is not None:
        if test_to is None:
            raise InputError("--email goes with --test-to", hint="--test-to YOUR@ADDRESS")
        asking.send_test_message(settings, campaign, test_to, email)
        return
    if not (yes or dry_run or outbox is not None) and asking.interactive():
        asking.confirm_send(settings, campaign, limit)
    tracked = Tracked(None)
    try:
        with _send_progress(f"Sending {campaign}", not as_json) as bars:
            tracked.forward = bars.send
            report = api.send(
                settings, campaign, dry_run=dry_run, limit=limit, outbox=outbox,
                accept_changes=accept_changes, check_progress=bars.check, progress=tracked,
            )
    except api.PreflightFailed as exc:
        print_check(exc.report, as_json=as_json)
        raise
    except MailerError:
        if not as_json:
            print_stopped(settings, campaign, tracked.tally)
        raise
    if as_json:
        print_json(report.as_json())
        _print_waits(report)
    else:
        if report.check is not None and (dry_run or report.check.warnings):
            print_check(report.check, as_json=False)
        _print_run(report)
    _exit_if_interrupted([report])


class UncertainChoice(StrEnum):
    resend = "resend"
    hold = "hold"


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
    settings = settings_of(
        ctx, uncertain=uncertain.value if uncertain else None, workers=workers
    )
    tracked = Tracked(None)
    try:
        with _send_progress("Retrying", not as_json) as bars:
            tracked.forward = bars.send
            reports = api.retry(settings, campaign, outbox=outbox, progress=tracked)
    except MailerError:
        if not as_json:
            print_stopped(settings, campaign, tracked.tally)
        raise
    sent = [r for r in reports if r.error is None]
    if as_json:
        if campaign is not None:
            print_json(sent[0].as_json() if sent else api.status(settings, campaign))
        else:
            # `mailer status --json`'s shape, with what this run did for each campaign it ran.
            data = api.status(settings)
            runs = {r.campaign: r.as_json()["run"] for r in sent}
            for item in data["campaigns"]:
                if item["campaign"] in runs:
                    item["run"] = runs[item["campaign"]]
            print_json(data)
        for report in sent:
            _print_waits(report)
    elif not reports:
        out.print("Nothing is due.")
        print_held(settings, campaign)
    for report in [] if as_json else sent:
        _print_run(report)
    _exit_if_interrupted(reports)
    errors = [(r.campaign, r.error) for r in reports if r.error is not None]
    for name, error in errors[1:]:
        stderr().print(f"Error: {name}: {error.message}", markup=False)
    if errors:
        raise errors[0][1]  # after the others were sent: exit 1 so cron reports it


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
    written = api.write_report(settings_of(ctx), campaign, state, path=csv_path,
                               delimiter=delimiter)
    if csv_path is not None:
        out.print(f"{written} deliveries written to {csv_path}", markup=False)
    if not written:
        stderr().print(
            f"Nobody missed: every delivery of {campaign} was sent." if not state
            else "No delivery in state " + " or ".join(s.value for s in state) + ".",
            markup=False,
        )
