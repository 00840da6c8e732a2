"""The report text cut per failed address, and the line of each paragraph that gives the error.

A plain-text bounce names each failed address on a line of its own (the shapes below, one per
MTA family), followed by what the remote server said; an RFC 3464 report without a
Diagnostic-Code borrows its diagnostic from the same paragraph.
"""

from __future__ import annotations

import re
from email.message import Message

from mailer.bounces.dsn._decoding import ADDR, ADDR_RE, addresses, headers
from mailer.bounces.dsn._originals import MSGID_LINE
from mailer.bounces.dsn._severity import SMTP_CODE, smtp_code, status

# The local parts of a mail system's own addresses: never a failed recipient.
DAEMON_LOCAL = frozenset({"mailer-daemon", "mailer_daemon", "mail-daemon", "maildaemon",
                          "postmaster"})
# First matching shape wins, so the more specific come first.
_RCPT_LINES = (
    # qmail, Postfix: "<bob@exemple.fr>:" alone, or followed by the diagnostic
    re.compile(rf"^\s*<({ADDR})>(?:\s*\(expanded from [^)]*\))?\s*:(.*)$"),
    re.compile(rf"^\s*<({ADDR})>\s*$"),
    # Exchange 2003: "bob@exemple.fr on 12/03/2024 10:15"
    re.compile(rf"^\s*['\"]?({ADDR})['\"]?\s+on\s+\S.*$"),
    # a line holding only the address (Gmail, Exim, Exchange), maybe with Outlook's <mailto:...>
    re.compile(rf"^\s*['\"]?({ADDR})['\"]?\s*(?:<mailto:[^>]*>)?\s*:?\s*$"),
)


def excluded(msg: Message) -> set[str]:
    """Addresses that are not failed recipients: the bounce's sender and addressees, mostly."""
    values: list[str] = []
    for name in ("From", "To", "Cc", "Reply-To", "Sender", "Return-Path", "Delivered-To",
                 "X-Original-To", "Envelope-To"):
        values += headers(msg, name)
    return {address.casefold() for address in addresses(values)}


def section(sections: dict[str, str], address: str) -> str:
    """The paragraphs of `address` (compared case-insensitively), or ""."""
    wanted = address.casefold()
    return next((text for key, text in sections.items() if key.casefold() == wanted), "")


def text_sections(msg: Message, text: str, originals: tuple[str, ...]) -> dict[str, str]:
    """The report's paragraphs per failed address: from the address's line to the next's;
    without such lines, the guess of `named_in_text`."""
    return line_sections(msg, text) or named_in_text(msg, text, originals)


def line_sections(msg: Message, text: str) -> dict[str, str]:
    """The paragraphs per address written on a line of its own, as bounces write a failed
    recipient (the shapes of `_RCPT_LINES`)."""
    own = excluded(msg)
    lines = text.split("\n")
    starts: list[tuple[int, str, str]] = []
    for index, line in enumerate(lines):
        for pattern in _RCPT_LINES:
            match = pattern.match(line)
            if match is None:
                continue
            address = match.group(1).strip("'\"")
            if (address.casefold() not in own
                    and address.split("@", 1)[0].casefold() not in DAEMON_LOCAL):
                rest = match.group(2) if pattern.groups >= 2 else ""
                starts.append((index, address, rest))
            break
    sections: dict[str, str] = {}  # the address as first written → its paragraphs
    spelled: dict[str, str] = {}
    for number, (index, address, rest) in enumerate(starts):
        end = starts[number + 1][0] if number + 1 < len(starts) else len(lines)
        body = "\n".join([rest.strip(), *lines[index + 1 : end]])
        key = spelled.setdefault(address.casefold(), address)
        sections[key] = (sections[key] + "\n" + body) if key in sections else body
    return sections


def named_in_text(msg: Message, text: str, originals: tuple[str, ...]) -> dict[str, str]:
    """A guess, for a report with no address on a line of its own: the address it names, if it
    names only one, or the one it names that the returned original was addressed to. A guess
    never ties a report to a subscriber by itself (its source is "text")."""
    own = excluded(msg)
    named: dict[str, str] = {}
    for found in ADDR_RE.findall(MSGID_LINE.sub(" ", text)):
        address = found.strip("'\"")
        key = address.casefold()
        if key not in own and key.split("@", 1)[0] not in DAEMON_LOCAL:
            named.setdefault(key, address)
    wanted = [named[a.casefold()] for a in originals if a.casefold() in named]
    if wanted or len(named) == 1:
        return dict.fromkeys(wanted or named.values(), text)
    return {}


def diagnostic(paragraph: str) -> str:
    """The line giving the error in a recipient's paragraph, with its continuation lines."""
    lines = [line.strip() for line in paragraph.split("\n")]
    for index, line in enumerate(lines):
        if not (status(line) or smtp_code(line)):
            continue
        code = SMTP_CODE.match(line)
        parts = [re.sub(r"^(\d{3})-", r"\1 ", line)]
        for follow in lines[index + 1 :]:
            if not follow:
                break
            if code is not None:
                follow = re.sub(rf"^{code.group(1)}[ -](?:\d\.\d{{1,3}}\.\d{{1,3}}\s)?", "", follow)
            parts.append(follow)
        return " ".join(parts)
    return " ".join(line for line in lines if line)
