"""`mailer preview` and `mailer status`: a campaign's messages before a send, and where
things stand. `print_check` is also what `mailer send` prints of its pre-flight."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

from mailer import api
from mailer.cli.output import SHOWN, out, print_json, progress_bar, stderr
from mailer.cli.root import settings_of
from mailer.core.errors import InputError
from mailer.core.states import SubscriberStatus

PREVIEW_HEADERS = ("From", "To", "Reply-To", "Subject", "Date", "Message-ID", "List-Id",
                   "List-Unsubscribe")


class Format(StrEnum):
    text = "text"
    html = "html"
    eml = "eml"


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
    settings = settings_of(ctx)
    if check:
        with progress_bar("Checking", not as_json, unit="messages") as progress:
            report = api.check_campaign(settings, campaign, progress=progress)
        print_check(report, as_json)
        if not report.ok:
            raise typer.Exit(1)
        return
    shown = api.preview(settings, campaign, email)
    outgoing = shown.outgoing
    if shown.status != SubscriberStatus.ACTIVE.value:
        stderr().print(f"Note: {outgoing.recipient.email} is {shown.status}: a send skips them.",
                  markup=False)
    if outgoing.smtputf8:
        stderr().print(f"Note: {outgoing.recipient.email} needs a relay that offers SMTPUTF8.",
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


def print_check(report: api.PreflightReport, as_json: bool) -> None:
    if as_json:
        print_json(report.as_json())
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
    data = api.status(settings_of(ctx), campaign)
    if as_json:
        print_json(data)
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
        for held in held_lines(item):
            out.print(f"  {held}", markup=False)
        if item.get("plan"):
            out.print(f"  {plan_line(item['plan'])}", markup=False)
    for relay in data.get("relays") or (campaigns[0].get("relays", []) if campaigns else []):
        out.print(relay_line(relay), markup=False)


def plan_line(plan: dict[str, Any]) -> str:
    """`18000 left; at 2000/day: about 9 days, until 11 December`."""
    until = datetime.fromisoformat(plan["finish_at"]).astimezone()
    days = plan["days"]
    span = (f"about {round(days)} day{'s' if round(days) != 1 else ''}" if days >= 1
            else f"about {max(1, round(days * 24))} h")
    return (f"{plan['left']} left; at {plan['per_day']}/day: {span}, until "
            f"{until:%d %B %Y %H:%M}")


def relay_line(relay: dict[str, Any]) -> str:
    """`Relay smtp.gmail.com: 1200 of 2000/day used; paused until 14:05 (550 5.4.5 ...)`."""
    parts = []
    for window in relay["windows"]:
        unit = {60: "min", 3600: "h", 86400: "day"}.get(window["seconds"],
                                                      f"{window['seconds']}s")
        text = f"{window['used']} of {window['limit']}/{unit} used"
        if window["next_slot_at"]:
            text += f" (full: next slot at {local_time(window['next_slot_at'])[0]})"
        parts.append(text)
    if relay["paused_until"]:
        parts.append(f"paused until {local_time(relay['paused_until'])[0]}"
                     + (f" ({relay['refusal']})" if relay.get("refusal") else ""))
    return f"Relay {relay['name']}: " + ("; ".join(parts) if parts else "no budget declared")


def local_time(iso: str) -> tuple[str, bool]:
    """`23:51` (with the date when not today), local time; and whether it is past."""
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local, now = moment.astimezone(), datetime.now().astimezone()
    shown = f"{local:%H:%M}" if local.date() == now.date() else f"{local:%Y-%m-%d %H:%M}"
    return shown, moment <= now


def held_lines(item: dict[str, Any]) -> list[str]:
    """What holds a campaign's `sending` deliveries and until when (status's "held")."""
    lines = []
    for owner in item.get("held", {}).get("owners", []):
        number, host, pid = owner["count"], owner["host"] or "?", owner["pid"]
        who = (f"a process that stopped (pid {pid} on host {host})" if owner["stopped"]
               else f"pid {pid} on host {host}" if pid is not None
               else f"{owner['owner']!r}")
        if owner["until"] is None:
            lines.append(f"{number} held by {who}")
            continue
        until, past = local_time(owner["until"])
        if past:
            lines.append(f"{number} held by {who}, whose lease ran out at {until}; "
                         "`mailer retry` resends them now")
        elif owner["stopped"] is False:
            lines.append(f"{number} held by {who} (still running) until {until}; if it stops, "
                         "`mailer retry` after that resends them")
        else:
            lines.append(f"{number} held by {who} until {until}; `mailer retry` after that "
                         "resends them")
    return lines
