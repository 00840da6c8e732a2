"""The MIME walk: a bounce's parts sorted into report text, delivery-status fields and originals.

Only the bounce's own parts are read as text; a returned original (attached, or copied inline
after a marker) is read for its headers only, so its body's words never count as the report's.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from email.message import Message
from email.parser import Parser
from email.policy import compat32

from mailer.bounces.dsn._decoding import fold, header, html_to_text, part_text

_MAX_DEPTH = 30  # MIME nesting deeper than this is not read (a bounce is 3 levels deep at most)
_HEADER_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,60}:([ \t]|$)")
_ORIGINAL_MARKER = re.compile(
    r"(?im)^[ \t>]*+(?:-{2,}+[ \t]*+[^\n]*?(?:original message|message d.origine|message original"
    r"|copy of the message|copie du message|copie de l.en-t|header of the original"
    r"|headers of the original|message header follows|message headers follow|undelivered message"
    r"|returned message|below this line)[^\n]*"
    r"|original message headers:?[ \t]*|en-t[eê]tes? du message d.origine[ \t]*:?[ \t]*)$"
)


@dataclass
class Scan:
    ds: list[dict[str, str]] = field(default_factory=list)  # delivery-status field blocks
    report_types: list[str] = field(default_factory=list)
    mdn: bool = False
    mdn_fields: list[dict[str, str]] = field(default_factory=list)
    arf: bool = False
    arf_fields: list[dict[str, str]] = field(default_factory=list)  # feedback-report fields
    texts: list[str] = field(default_factory=list)  # human-readable text, originals cut off
    htmls: list[str] = field(default_factory=list)
    originals: list[Message] = field(default_factory=list)  # attached original, its headers
    inline: list[Message] = field(default_factory=list)  # original copied after a marker
    all_text: list[str] = field(default_factory=list)  # every text read, for Message-ID lines


def read_parts(msg: Message) -> Scan:
    found = Scan()
    _walk(msg, found, 0)
    return found


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def _walk(part: Message, scan: Scan, depth: int) -> None:
    """Read the bounce's own parts; an attached original is read for its headers only."""
    if depth > _MAX_DEPTH:
        return
    ctype = _content_type(part)
    payload = part.get_payload()
    if ctype.startswith("multipart/") and isinstance(payload, list):
        if ctype == "multipart/report":
            scan.report_types.append(fold(str(part.get_param("report-type") or "")))
        for sub in payload:
            if isinstance(sub, Message):
                _walk(sub, scan, depth + 1)
        return
    if ctype in ("message/delivery-status", "message/global-delivery-status"):
        scan.ds.extend(_ds_blocks(part))
    elif ctype in ("message/disposition-notification", "message/global-disposition-notification"):
        scan.mdn = True
        scan.mdn_fields.extend(_ds_blocks(part))
    elif ctype == "message/feedback-report":
        scan.arf = True
        scan.arf_fields.extend(_ds_blocks(part))
    elif ctype.startswith("message/"):
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            scan.originals.append(payload[0])
        elif isinstance(payload, str):
            scan.originals.append(_headers_from_text(part_text(part)))
    elif ctype in ("text/rfc822-headers", "text/global-headers"):
        text = part_text(part)
        scan.all_text.append(text)
        scan.originals.append(_headers_from_text(text))
    elif ctype == "text/html":
        text = html_to_text(part_text(part))
        scan.all_text.append(text)
        scan.htmls.append(_cut_original(text, scan))
    elif ctype.startswith("text/") or ctype.startswith("multipart/"):  # broken multipart: text
        text = part_text(part)
        scan.all_text.append(text)
        if depth > 0 and _looks_like_headers(text):
            scan.originals.append(_headers_from_text(text))
        else:
            scan.texts.append(_cut_original(text, scan))


def _cut_original(text: str, scan: Scan) -> str:
    """The report before an "original message follows" marker; the original's headers kept."""
    match = _ORIGINAL_MARKER.search(text)
    if match is None:
        return text
    scan.inline.append(_headers_from_text(text[match.end() :]))
    return text[: match.start()]


def _headers_from_text(text: str) -> Message:
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    block = textwrap.dedent("\n".join(lines))
    return Parser(policy=compat32).parsestr(block, headersonly=True)


def _looks_like_headers(text: str) -> bool:
    """True for a text part that only holds a message's headers (an "undelivered headers" part)."""
    lines = text.lstrip().split("\n")[:60]
    if not lines or not _HEADER_LINE.match(lines[0]):
        return False
    names = {line.split(":", 1)[0].lower() for line in lines if _HEADER_LINE.match(line)}
    known = {"received", "message-id", "return-path", "dkim-signature", "from", "to", "date",
             "subject", "mime-version", "content-type"}
    return len(names & known) >= 3


def _ds_blocks(part: Message) -> list[dict[str, str]]:
    """The field blocks of a delivery-status part: per-message first, then one per recipient."""
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):  # the email package parsed each block as a Message
        for item in payload:
            if isinstance(item, Message):
                blocks.append(_fields(item))
                rest = part_text(item) if isinstance(item.get_payload(), str) else ""
                if rest.strip():  # message/global-delivery-status: one Message, the rest its body
                    blocks.extend(_blocks_from_text(rest))
    elif isinstance(payload, str):
        blocks.extend(_blocks_from_text(part_text(part)))
    return [block for block in blocks if block]


def _blocks_from_text(text: str) -> list[dict[str, str]]:
    parser = Parser(policy=compat32)
    return [_fields(parser.parsestr(chunk.strip("\n") + "\n", headersonly=True))
            for chunk in re.split(r"\n[ \t]*\n", text) if chunk.strip()]


def _fields(msg: Message) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name in msg:
        key = name.strip().lower()
        if key not in fields:
            fields[key] = " ".join(header(msg, name).split())
    return fields
