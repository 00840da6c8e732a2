"""Bytes to text: the message parsed, its headers and bodies decoded, the addresses picked out.

Parsing uses `email.policy.compat32`, not `email.policy.default`: compat32 keeps header values as
raw strings (or `Header` objects for 8-bit bytes) and never parses them into structured objects,
whose parser has raised on malformed address and parameter headers; and the default policy's
content manager raises on unknown charsets. So everything is decoded here, with fallbacks: the
declared charset, then UTF-8, then Windows-1252.
"""

from __future__ import annotations

import codecs
import html
import re
import unicodedata
from datetime import UTC, datetime
from email.header import Header, decode_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import parsedate_to_datetime

from mailer.core.strictaddr import getaddresses  # strict: CVE-2023-27043

MAX_TEXT = 200_000  # characters of one text part that are read
_MAX_HEADER = 4_000  # characters of an address header that are read
_MAX_HEADERS = 50  # occurrences of an address header that are read

# An addr-spec as bounces write it: no display name, no quoted local part.
ADDR = r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+"
ADDR_RE = re.compile(ADDR)
ADDR_ONLY = re.compile(rf"^{ADDR}$")
_HIDDEN_HTML = re.compile(r"(?i)<(head|style|script)\b")


# --- Bytes -------------------------------------------------------------------------------------


def normalise(raw: bytes) -> bytes:
    """LF line endings, without a leading mbox "From " line."""
    data = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if data.startswith(b"From "):
        end = data.find(b"\n")
        data = b"" if end < 0 else data[end + 1 :]
    return data


def fingerprint_bytes(data: bytes) -> bytes:
    """`normalise`d bytes as an mbox, a Maildir and IMAP all give them: ">From " unquoted."""
    return re.sub(rb"(?m)^>+(From )", rb"\1", data).rstrip(b"\n")


def message_of(data: bytes) -> Message:
    return BytesParser(policy=compat32).parsebytes(data)


# --- Text --------------------------------------------------------------------------------------


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Text of `data`: the declared charset if it decodes, else UTF-8, else Windows-1252."""
    candidates: list[str] = []
    declared = (charset or "").strip().strip("\"'").lower()
    if declared in ("iso-8859-1", "iso8859-1", "latin1", "latin-1", "us-ascii", "ascii"):
        declared = "cp1252" if declared not in ("us-ascii", "ascii") else ""
    if declared and declared not in ("unknown-8bit", "x-unknown", "unknown", "8bit", "binary"):
        try:
            if getattr(codecs.lookup(declared), "_is_text_encoding", True):
                candidates.append(declared)
        except (LookupError, ValueError, TypeError):
            pass
    candidates += ["utf-8", "cp1252"]
    for name in candidates:
        try:
            return data.decode(name)
        except Exception:  # noqa: S112 - a charset that cannot decode: try the next one
            continue
    return data.decode("latin-1")


def header_text(value: object) -> str:
    """A header value (str, or compat32's Header for 8-bit bytes) decoded, RFC 2047 included."""
    try:
        chunks = decode_header(value if isinstance(value, (str, Header)) else str(value))
    except Exception:
        return str(value)
    parts: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            parts.append(decode_bytes(chunk, charset))
        else:
            parts.append(str(chunk))
    return "".join(parts)


def header(msg: Message, name: str) -> str:
    value = msg.get(name)
    return "" if value is None else header_text(value)


def headers(msg: Message, name: str) -> list[str]:
    return [header_text(value) for value in (msg.get_all(name) or [])]


def one_line(text: str, limit: int) -> str:
    text = text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return " ".join(text.split())[:limit]


def fold(text: str) -> str:
    """Lower case, accents removed, typographic apostrophes plain: what phrases are matched on."""
    text = unicodedata.normalize("NFKD", text.replace("’", "'").replace("`", "'"))
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


def part_text(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        if not isinstance(raw, str):
            return ""
        payload = raw.encode("ascii", "surrogateescape")
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return decode_bytes(payload, charset)[:MAX_TEXT]


def html_to_text(text: str) -> str:
    kept: list[str] = []
    position = 0
    for match in _HIDDEN_HTML.finditer(text):  # <head>, <style>, <script>: not text
        if match.start() < position:
            continue
        close = re.compile(rf"(?i)</{match.group(1)}").search(text, match.end())
        if close is None:
            break
        kept.append(text[position : match.start()])
        position = close.start()
    text = "".join(kept) + text[position:]
    text = re.sub(r"(?i)<br\s*/?>|</(?:p|div|tr|li|h\d|table|blockquote)\s*>", "\n", text)
    return html.unescape(re.sub(r"<[^<>]*>", " ", text))


# --- Values ------------------------------------------------------------------------------------


def date(value: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
    except Exception:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def addresses(values: list[str]) -> list[str]:
    """The addr-specs in address header values, in order, without duplicates."""
    found: list[str] = []
    values = [value[:_MAX_HEADER] for value in values[:_MAX_HEADERS]]
    try:
        pairs = getaddresses(values)
    except Exception:
        pairs = [("", a) for value in values for a in ADDR_RE.findall(value)]
    for _, address in pairs:
        address = address.strip().strip("<>").strip()
        if ADDR_ONLY.match(address) and address not in found:
            found.append(address)
    return found
