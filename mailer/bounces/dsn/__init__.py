"""Read one bounce message: raw bytes in, a frozen `Report` out. No I/O, and it never raises.

Another module reads the mailbox (mbox, Maildir, IMAP) and hands each message's bytes to
`parse`; another matches the `Report` to a delivery (by `message_ids` first, then by failed
recipient) and records it. This module only reads.

    kind          when
    bounce        a delivery-status report (RFC 3464) with a failed or delayed recipient, or a
                  non-standard bounce (Gmail's old text, Exchange, qmail, Exim, a French MTA...)
                  with failure text or a 4.x.x/5.x.x status
    ignored       an auto-reply (out of office), a read receipt (disposition notification), a
                  delivery-status report that only says "delivered" / "relayed" / "expanded"
    unrecognised  anything else: a human reply, spam, an abuse report (ARF, left for a human),
                  garbage, an empty message; `reason` says why

Severity of each failed recipient:

    RFC 3464 report      Action: failed → permanent, even with a 4.x.x Status (the reporting MTA
                         retried and gave up); Action: delayed → temporary; no Action: the Status
                         class (5 → permanent, 4 → temporary, 2 → success), then the SMTP code of
                         the Diagnostic-Code, else permanent.
    non-standard text    first the subject ("(Delay)", "Delayed Mail", "Warning: could not send"
                         → temporary; "(Failure)" → permanent), then the reporting MTA's words in
                         the recipient's own paragraph, then in the whole report ("failed
                         permanently", "permanent error", "given up", "définitivement" →
                         permanent; "delayed", "will retry", "still trying", "warning", "retardé",
                         "différé" → temporary; both → permanent), then the enhanced status or SMTP
                         code (5 → permanent, 4 → temporary), first in the recipient's paragraph,
                         then anywhere in the report. A failure notice with no code and no such
                         word at all ("could not be delivered") is permanent, with status None.
                         Conditional clauses are not read for these words ("You'll be notified if
                         the delivery fails permanently", "Eventually ... will give up").

What makes a message a bounce candidate: a delivery-status report, an X-Failed-Recipients
header, a sender that is a mail system (MAILER-DAEMON, postmaster, Exchange's
MicrosoftExchange<hex>@), a bounce subject in English or French ("Undelivered Mail Returned to
Sender", "failure notice", "Non remis", "Échec de la remise"...), or an Auto-Submitted
auto-generated message that returns an original message with failure text. A candidate without
failure text nor a 4.x.x/5.x.x status is unrecognised. An auto-reply (RFC 3834 Auto-Submitted:
auto-replied, X-Autoreply, X-Autorespond, Precedence: auto_reply, Exchange's
X-MS-Exchange-Inbox-Rules-Loop with Auto-Submitted: auto-generated, or an out-of-office subject)
is ignored, unless a strong bounce signal (delivery-status, X-Failed-Recipients, mail-system
sender) or a bounce subject says otherwise: Postfix and Exim put "Auto-Submitted: auto-replied"
on their bounces too. An out-of-office subject beats a bounce subject (it may quote the original
subject). X-Auto-Response-Suppress is not a signal: Exchange puts it on ordinary mail.

`message_ids` (the returned message's, most trusted first, never the bounce's own): the
Message-ID of the attached original (message/rfc822, text/rfc822-headers, or a text part that
only holds headers), of the original copied inline after a marker ("--- Below this line is a
copy of the message.", "----- Original message -----", "Original message headers:"), Gmail's
X-Original-Message-ID (a read receipt's Original-Message-ID), then In-Reply-To and References
(latest first), then any "Message-ID: <...>" in the text.

`fingerprint`: sha256 (hex) of the bounce's own Message-ID (unfolded, stripped); without one, of
the raw bytes with CRLF and CR turned into LF, a leading mbox "From " line dropped, ">From "
quoting undone (mboxo and mboxrd write it differently) and trailing newlines dropped: the same
message from an mbox file, a Maildir file or IMAP has the same fingerprint.

Parsing uses `email.policy.compat32`, not `email.policy.default`: compat32 keeps header values as
raw strings (or `Header` objects for 8-bit bytes) and never parses them into structured objects,
whose parser has raised on malformed address and parameter headers; and the default policy's
content manager raises on unknown charsets. Bodies and headers are decoded here with fallbacks:
the declared charset, then UTF-8, then Windows-1252. Addresses are returned as written (case
kept); compare them case-insensitively.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import re
import textwrap
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import Header, decode_header
from email.message import Message
from email.parser import BytesParser, Parser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from typing import Literal

__all__ = ["Kind", "RecipientReport", "Report", "Severity", "parse"]

Kind = Literal["bounce", "ignored", "unrecognised"]
Severity = Literal["permanent", "temporary"]

MAX_DIAGNOSTIC = 500
MAX_SUBJECT = 200
_MAX_DEPTH = 30  # MIME nesting deeper than this is not read (a bounce is 3 levels deep at most)
_MAX_TEXT = 200_000  # characters of one text part that are read
_MAX_HEADER = 4_000  # characters of an address header that are read
_MAX_HEADERS = 50  # occurrences of an address header that are read
_MAX_RECIPIENTS = 100  # failed recipients reported for one bounce (mailer sends one per message)


@dataclass(frozen=True)
class RecipientReport:
    recipient: str | None  # the failed address as an addr-spec, or None if not stated
    severity: Severity
    status: str | None  # enhanced status code "5.1.1", "4.4.7"... or None
    diagnostic: str  # one line, whitespace collapsed, at most 500 characters
    action: str | None  # RFC 3464 Action (failed, delayed) when given
    smtp_code: int | None = None  # the basic SMTP reply code (550, 452...) in the diagnostic


@dataclass(frozen=True)
class Report:
    kind: Kind
    fingerprint: str  # stable id of this bounce message
    recipients: tuple[RecipientReport, ...]  # non-empty iff kind == "bounce"
    message_ids: tuple[str, ...]  # candidate Message-IDs of the original, most trusted first
    original_recipients: tuple[str, ...]  # addr-specs from the returned original's To
    format: str  # rfc3464, gmail, exchange, qmail, exim, text, autoreply, mdn, arf, unknown
    reason: str  # for ignored/unrecognised: why, in English; "" for bounces
    subject: str  # decoded Subject of the bounce, one line, at most 200 characters
    date: datetime | None  # the bounce's Date, aware (a zone-less date is taken as UTC)
    verp: str | None  # TOKEN when the bounce was addressed to bounces+TOKEN@domain
    structured: bool = field(default=False)  # recipients read from a message/delivery-status


def parse(raw: bytes) -> Report:
    """The `Report` of one message. Never raises: at worst kind "unrecognised" with a reason."""
    try:
        return _parse(bytes(raw))
    except Exception as exc:  # the promise is "never raises": whatever was missed is unrecognised
        try:
            fingerprint = hashlib.sha256(_fingerprint_bytes(_normalise(bytes(raw)))).hexdigest()
        except Exception:
            fingerprint = hashlib.sha256(b"").hexdigest()
        return _other("unrecognised", fingerprint, f"unparseable message ({type(exc).__name__})")


# --- Words and shapes --------------------------------------------------------------------------
# Phrase patterns are matched against `_fold`ed text: lower case, accents removed, ’ → '.

_ADDR = r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+"
_ADDR_RE = re.compile(_ADDR)
_ADDR_ONLY = re.compile(rf"^{_ADDR}$")
_MSGID_RE = re.compile(r"<[^<>\s]+>")
_MSGID_LINE = re.compile(r"(?i)\bMessage-ID\s*:\s*(<[^<>\s]+>)")
_ENHANCED = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_SMTP_CODE = re.compile(r"(?<![\w.,/:+=-])([245][0-5]\d)(?=[ :-]|$)", re.MULTILINE)
_HIDDEN_HTML = re.compile(r"(?i)<(head|style|script)\b")
_HEADER_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,60}:([ \t]|$)")
# VERP: LOCAL+TOKEN@domain where TOKEN has the shape of mailer's tokens (MAILER_BOUNCE_ADDRESS
# may have any local part), or anything after `bounces+`.
_VERP = re.compile(
    r"(?i)(?<![\w.+-])(?:[\w.-]+\+([0-9a-f]{1,16}\.[A-Za-z0-9_-]{22})"
    r"|bounces\+([^@\s<>\"',;()]+))@[\w-]+(?:\.[\w-]+)+"
)
_DAEMON_FROM = re.compile(
    r"(?:^|[\s<\"'(])(?:mailer-daemon|mailer_daemon|mail-daemon|maildaemon|postmaster"
    r"|microsoftexchange[0-9a-f]{32})(?:@|>|\s|$)"
)
_DAEMON_LOCAL = frozenset({"mailer-daemon", "mailer_daemon", "mail-daemon", "maildaemon",
                           "postmaster"})

_BOUNCE_SUBJECT = re.compile(
    r"undeliver(?:able|ed)|non-?deliverable|delivery status notification|returned mail"
    r"|mail delivery (?:failed|failure|system|subsystem)|failure notice|delivery (?:has )?failed"
    r"|delivery failure|failed delivery|returned to sender|delayed mail|delivery delayed"
    r"|warning: could not send|message not delivered|could not be delivered"
    r"|non[ -]?remis|echec de (?:la )?(?:remise|distribution|livraison)|non distribuable"
    r"|non delivre|impossible de (?:remettre|distribuer)|remise (?:differee|retardee)"
    r"|notification d'etat de (?:la )?remise|message retourne|retour de (?:courrier|message)"
)
_AUTOREPLY_SUBJECT = re.compile(
    r"^\s*(?:auto:|automatic reply|auto[- ]?reply|auto[- ]?response|autoresponder"
    r"|out of (?:the )?office|ooo\b|reponse automatique|reponse d'absence|message d'absence"
    r"|absence\b|absent\b|abwesenheit|automatische antwort|automatisch antwoord"
    r"|risposta automatica|respuesta automatica|fuori sede|autosvar|automatisk svar|vacation)"
)
_FAILURE_TEXT = re.compile(
    r"could ?n[o']t be delivered|could ?n[o']t deliver|was ?n[o']t delivered|not been delivered"
    r"|not be delivered|undeliverable|undelivered|delivery (?:has )?failed|delivery failure"
    r"|failed permanently|permanent (?:error|failure)|cannot be reached|did not reach"
    r"|unable to deliver|(?:was|were) ?n[o']t able to deliver|no mailbox here|user unknown"
    r"|unknown user|mailbox unavailable|address rejected|address (?:couldn't|could not) be found"
    r"|delivery to the following recipients? (?:failed|has been delayed|was delayed)"
    r"|(?:has|have) been delayed|delivery (?:is )?delayed|delayed delivery|could not send message"
    r"|not yet been delivered|returning message to sender|following address(?:es)? failed"
    r"|n'a pas pu etre (?:remis|distribue|delivre|transmis|achemine|envoye)"
    r"|n'a pas ete (?:remis|distribue|delivre)|non remis|non distribue"
    r"|echec de (?:la )?(?:remise|distribution|livraison)|impossible de (?:remettre|distribuer"
    r"|delivrer|livrer)|adresse (?:inconnue|introuvable)|destinataire inconnu"
    r"|remise (?:differee|retardee)|retard de (?:la )?(?:remise|distribution|livraison)"
    r"|\bretardee?s?\b"
)
_PERMANENT_WORDS = re.compile(
    r"permanent|given up|gave up|giving up|will not (?:be )?retr|won't (?:be )?retr"
    r"|not going to try again|no further (?:attempts|retries)|definiti|erreur fatale"
)
_TEMPORARY_WORDS = re.compile(
    r"delayed|delivery (?:is )?delay|will (?:be )?retr(?:y|ied)"
    r"|will continue (?:to )?(?:try|attempt)"
    r"|continue (?:delivery )?attempts|still (?:be(?:ing)? )?(?:trying|retrying|retried)"
    r"|not yet been delivered|hasn't been delivered yet|this is a warning|warning message only"
    r"|you do not need to resend|could not send message for past|temporary (?:failure|error"
    r"|problem)|retard|\bdifferee?s?\b|nouvelle tentative|nouvel essai"
)
_CONDITIONAL = re.compile(r"\b(?:if|unless|when|eventually|si|lorsque|quand)\b[^.;:!?\n]*")
_SUBJECT_TEMPORARY = re.compile(
    r"\(delay\)|delayed mail|delivery delayed|warning: could not send|still being retried"
    r"|remise (?:differee|retardee)"
)
_SUBJECT_PERMANENT = re.compile(r"\(failure\)|failed permanently")
_ORIGINAL_MARKER = re.compile(
    r"(?im)^[ \t>]*+(?:-{2,}+[ \t]*+[^\n]*?(?:original message|message d.origine|message original"
    r"|copy of the message|copie du message|copie de l.en-t|header of the original"
    r"|headers of the original|message header follows|message headers follow|undelivered message"
    r"|returned message|below this line)[^\n]*"
    r"|original message headers:?[ \t]*|en-t[eê]tes? du message d.origine[ \t]*:?[ \t]*)$"
)
_RCPT_LINES = (
    # qmail, Postfix: "<bob@exemple.fr>:" alone, or followed by the diagnostic
    re.compile(rf"^\s*<({_ADDR})>(?:\s*\(expanded from [^)]*\))?\s*:(.*)$"),
    re.compile(rf"^\s*<({_ADDR})>\s*$"),
    # Exchange 2003: "bob@exemple.fr on 12/03/2024 10:15"
    re.compile(rf"^\s*['\"]?({_ADDR})['\"]?\s+on\s+\S.*$"),
    # a line holding only the address (Gmail, Exim, Exchange), maybe with Outlook's <mailto:...>
    re.compile(rf"^\s*['\"]?({_ADDR})['\"]?\s*(?:<mailto:[^>]*>)?\s*:?\s*$"),
)


# --- Entry -------------------------------------------------------------------------------------


def _parse(raw: bytes) -> Report:
    data = _normalise(raw)
    if not data.strip():
        return _other("unrecognised", hashlib.sha256(_fingerprint_bytes(data)).hexdigest(),
                      "empty message")
    msg = BytesParser(policy=compat32).parsebytes(data)
    own_id = " ".join(_header(msg, "Message-ID").split())
    fingerprint_source = own_id.encode("utf-8", "surrogateescape") if own_id else (
        _fingerprint_bytes(data))
    fingerprint = hashlib.sha256(fingerprint_source).hexdigest()
    subject = _one_line(_header(msg, "Subject"), MAX_SUBJECT)
    scan = _Scan()
    _walk(msg, scan, 0)

    own_ids = set(_MSGID_RE.findall(own_id))
    message_ids = _message_ids(msg, scan, own_ids)
    original_recipients = _original_recipients(scan)
    base = _Base(fingerprint=fingerprint, message_ids=message_ids,
                 original_recipients=original_recipients, subject=subject,
                 date=_date(_header(msg, "Date")), verp=_verp(msg))

    if not msg.keys() and not scan.ds:
        return base.make("unrecognised", (), "unknown", "not an e-mail message: no header found")

    from_ = _fold(_header(msg, "From"))
    folded_subject = _fold(subject)
    report_text = "\n\n".join(scan.texts) if scan.texts else "\n\n".join(scan.htmls)
    producer = _producer(msg, from_, _fold(report_text), scan)

    recipient_blocks = [b for b in scan.ds if _is_recipient_block(b)]
    if recipient_blocks:
        sections = _text_sections(msg, report_text, original_recipients)
        reports, successes = _from_delivery_status(recipient_blocks, sections)
        format_ = producer if producer in ("gmail", "exchange") else "rfc3464"
        if reports:
            return base.make("bounce", tuple(reports), format_, "", structured=True)
        if successes:
            return base.make("ignored", (), format_, "delivery notification of success",
                             structured=True)
    if scan.mdn or "disposition-notification" in scan.report_types:
        return base.make("ignored", (), "mdn", "read receipt (disposition notification)")
    if scan.arf or "feedback-report" in scan.report_types:
        return base.make("unrecognised", (), "arf", "abuse feedback report (ARF), not a bounce")

    # Strong bounce signals beat auto-reply headers (Postfix and Exim bounces say
    # "Auto-Submitted: auto-replied"); an out-of-office subject beats a bounce subject, whose
    # words may come from the original subject it quotes.
    strong_bounce = bool(scan.ds or "delivery-status" in scan.report_types
                         or msg.get("X-Failed-Recipients") is not None
                         or _DAEMON_FROM.search(from_))
    autoreply_subject = bool(_AUTOREPLY_SUBJECT.search(folded_subject))
    auto_generated = _fold(_header(msg, "Auto-Submitted")).startswith("auto-generated")
    candidate = strong_bounce or (not autoreply_subject and (
        bool(_BOUNCE_SUBJECT.search(folded_subject))
        or (auto_generated and bool(scan.originals or scan.inline)
            and bool(_FAILURE_TEXT.search(_fold(report_text))))))
    if candidate:
        reports = _from_text(msg, subject, report_text, original_recipients)
        if reports:
            return base.make("bounce", tuple(reports), producer or "text", "")
    if autoreply_subject or _autoreply_signal(msg):
        return base.make("ignored", (), "autoreply", "out-of-office auto-reply")
    if candidate:
        return base.make("unrecognised", (), producer or "unknown",
                         "bounce-like message but no failure text or status code found")
    return base.make("unrecognised", (), "unknown", "not a bounce: no status or failure text found")


@dataclass(frozen=True)
class _Base:
    fingerprint: str
    message_ids: tuple[str, ...]
    original_recipients: tuple[str, ...]
    subject: str
    date: datetime | None
    verp: str | None

    def make(self, kind: Kind, recipients: tuple[RecipientReport, ...], format_: str,
             reason: str, *, structured: bool = False) -> Report:
        return Report(kind=kind, fingerprint=self.fingerprint, recipients=recipients,
                      message_ids=self.message_ids, original_recipients=self.original_recipients,
                      format=format_, reason=reason, subject=self.subject, date=self.date,
                      verp=self.verp, structured=structured)


def _other(kind: Kind, fingerprint: str, reason: str) -> Report:
    return Report(kind=kind, fingerprint=fingerprint, recipients=(), message_ids=(),
                  original_recipients=(), format="unknown", reason=reason, subject="", date=None,
                  verp=None)


# --- Bytes, fingerprint ------------------------------------------------------------------------


def _normalise(raw: bytes) -> bytes:
    """LF line endings, without a leading mbox "From " line."""
    data = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if data.startswith(b"From "):
        end = data.find(b"\n")
        data = b"" if end < 0 else data[end + 1 :]
    return data


def _fingerprint_bytes(data: bytes) -> bytes:
    return re.sub(rb"(?m)^>+(From )", rb"\1", data).rstrip(b"\n")


# --- Decoding ----------------------------------------------------------------------------------


def _decode_bytes(data: bytes, charset: str | None) -> str:
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


def _header_text(value: object) -> str:
    """A header value (str, or compat32's Header for 8-bit bytes) decoded, RFC 2047 included."""
    try:
        chunks = decode_header(value if isinstance(value, (str, Header)) else str(value))
    except Exception:
        return str(value)
    parts: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            parts.append(_decode_bytes(chunk, charset))
        else:
            parts.append(str(chunk))
    return "".join(parts)


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    return "" if value is None else _header_text(value)


def _headers(msg: Message, name: str) -> list[str]:
    return [_header_text(value) for value in (msg.get_all(name) or [])]


def _one_line(text: str, limit: int) -> str:
    text = text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return " ".join(text.split())[:limit]


def _fold(text: str) -> str:
    """Lower case, accents removed, typographic apostrophes plain: what phrases are matched on."""
    text = unicodedata.normalize("NFKD", text.replace("’", "'").replace("`", "'"))
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


def _part_text(part: Message) -> str:
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
    return _decode_bytes(payload, charset)[:_MAX_TEXT]


def _html_to_text(text: str) -> str:
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


def _date(value: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        date = parsedate_to_datetime(value.strip())
    except Exception:
        return None
    return date if date.tzinfo is not None else date.replace(tzinfo=UTC)


def _addresses(values: list[str]) -> list[str]:
    """The addr-specs in address header values, in order, without duplicates."""
    found: list[str] = []
    values = [value[:_MAX_HEADER] for value in values[:_MAX_HEADERS]]
    try:
        pairs = getaddresses(values)
    except Exception:
        pairs = [("", a) for value in values for a in _ADDR_RE.findall(value)]
    for _, address in pairs:
        address = address.strip().strip("<>").strip()
        if _ADDR_ONLY.match(address) and address not in found:
            found.append(address)
    return found


# --- MIME structure ----------------------------------------------------------------------------


@dataclass
class _Scan:
    ds: list[dict[str, str]] = field(default_factory=list)  # delivery-status field blocks
    report_types: list[str] = field(default_factory=list)
    mdn: bool = False
    mdn_fields: list[dict[str, str]] = field(default_factory=list)
    arf: bool = False
    texts: list[str] = field(default_factory=list)  # human-readable text, originals cut off
    htmls: list[str] = field(default_factory=list)
    originals: list[Message] = field(default_factory=list)  # attached original, its headers
    inline: list[Message] = field(default_factory=list)  # original copied after a marker
    all_text: list[str] = field(default_factory=list)  # every text read, for Message-ID lines


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def _walk(part: Message, scan: _Scan, depth: int) -> None:
    """Read the bounce's own parts; an attached original is read for its headers only."""
    if depth > _MAX_DEPTH:
        return
    ctype = _content_type(part)
    payload = part.get_payload()
    if ctype.startswith("multipart/") and isinstance(payload, list):
        if ctype == "multipart/report":
            scan.report_types.append(_fold(str(part.get_param("report-type") or "")))
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
    elif ctype.startswith("message/"):
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            scan.originals.append(payload[0])
        elif isinstance(payload, str):
            scan.originals.append(_headers_from_text(_part_text(part)))
    elif ctype in ("text/rfc822-headers", "text/global-headers"):
        text = _part_text(part)
        scan.all_text.append(text)
        scan.originals.append(_headers_from_text(text))
    elif ctype == "text/html":
        text = _html_to_text(_part_text(part))
        scan.all_text.append(text)
        scan.htmls.append(_cut_original(text, scan))
    elif ctype.startswith("text/") or ctype.startswith("multipart/"):  # broken multipart: text
        text = _part_text(part)
        scan.all_text.append(text)
        if depth > 0 and _looks_like_headers(text):
            scan.originals.append(_headers_from_text(text))
        else:
            scan.texts.append(_cut_original(text, scan))


def _cut_original(text: str, scan: _Scan) -> str:
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
                rest = _part_text(item) if isinstance(item.get_payload(), str) else ""
                if rest.strip():  # message/global-delivery-status: one Message, the rest its body
                    blocks.extend(_blocks_from_text(rest))
    elif isinstance(payload, str):
        blocks.extend(_blocks_from_text(_part_text(part)))
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
            fields[key] = " ".join(_header(msg, name).split())
    return fields


def _is_recipient_block(block: dict[str, str]) -> bool:
    return any(k in block for k in ("final-recipient", "original-recipient", "action", "status"))


# --- Message-IDs, original recipients, VERP ----------------------------------------------------


def _msgids(value: str) -> list[str]:
    found = _MSGID_RE.findall(value)
    if not found and _ADDR_ONLY.match(value.strip()):
        found = [f"<{value.strip()}>"]
    return found


def _message_ids(msg: Message, scan: _Scan, own: set[str]) -> tuple[str, ...]:
    candidates: list[str] = []
    for original in scan.originals + scan.inline:
        for value in _headers(original, "Message-ID")[:1]:
            candidates += _msgids(value)[:1]
    for block in scan.ds:
        candidates += _msgids(block.get("x-original-message-id", ""))[:1]
    for block in scan.mdn_fields:
        candidates += _msgids(block.get("original-message-id", ""))[:1]
    for value in _headers(msg, "In-Reply-To"):
        candidates += _msgids(value)
    for value in _headers(msg, "References"):
        candidates += reversed(_msgids(value))
    for text in scan.all_text:
        candidates += _MSGID_LINE.findall(text)
    unique: list[str] = []
    for candidate in candidates:
        if candidate not in own and candidate not in unique:
            unique.append(candidate)
    return tuple(unique)


def _original_recipients(scan: _Scan) -> tuple[str, ...]:
    found: list[str] = []
    for original in scan.originals + scan.inline:
        for address in _addresses(_headers(original, "To")):
            if address not in found:
                found.append(address)
    return tuple(found)


def _verp(msg: Message) -> str | None:
    """TOKEN of LOCAL+TOKEN@domain in the bounce's own envelope or address headers."""
    for name in ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "X-Delivered-To",
                 "To", "Cc", "Return-Path"):
        for value in _headers(msg, name):
            match = _VERP.search(value)
            if match:
                return match.group(1) or match.group(2)
    return None


# --- Classification helpers --------------------------------------------------------------------


def _autoreply_signal(msg: Message) -> bool:
    """RFC 3834 and vendor headers of an auto-reply (X-Auto-Response-Suppress is not one)."""
    auto_submitted = _fold(_header(msg, "Auto-Submitted")).strip()
    if auto_submitted.startswith("auto-replied"):
        return True
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-AutoReply-From",
                 "X-Mail-Autoreply"):
        value = _fold(_header(msg, name)).strip()
        if msg.get(name) is not None and value not in ("no", "false", "0"):
            return True
    if _fold(_header(msg, "X-Autogenerated")).strip() == "reply":
        return True
    precedence = {_fold(v).strip() for v in _headers(msg, "Precedence")
                  + _headers(msg, "X-Precedence")}
    if "auto_reply" in precedence:
        return True
    # Exchange's out-of-office and reply rules: no RFC 3834 "auto-replied", but this pair
    return (msg.get("X-MS-Exchange-Inbox-Rules-Loop") is not None
            and auto_submitted.startswith("auto-generated"))


def _producer(msg: Message, from_: str, text: str, scan: _Scan) -> str:
    """Who wrote the bounce, when it shows: gmail, exchange, qmail, exim; else ""."""
    reporting = " ".join(block.get("reporting-mta", "") for block in scan.ds).lower()
    if re.search(r"@(?:googlemail|google)\.com\b", from_) or "googlemail.com" in reporting:
        return "gmail"
    names = [name.lower() for name in msg]
    if (any(n.startswith("x-ms-exchange") or n == "x-ms-embedded-report" for n in names)
            or "microsoft exchange" in _fold(_header(msg, "X-MimeOLE"))
            or "microsoftexchange" in from_
            or any("x-display-name" in block for block in scan.ds)
            or re.search(r"resolver\.(?:adr|rst)\.|diagnostic information for administrators"
                         r"|did not reach (?:some or all of )?the (?:following|intended) recipient"
                         r"|following recipient\(s\) cannot be reached", text)):
        return "exchange"
    if "qmail-send program" in text:
        return "qmail"
    if "created automatically by mail delivery software" in text:
        return "exim"
    return ""


# --- RFC 3464 ----------------------------------------------------------------------------------


def _field_address(value: str) -> str | None:
    """The address of a Final-Recipient / Original-Recipient value ("rfc822; bob@exemple.fr")."""
    value = value.split(";", 1)[1] if ";" in value else value
    value = value.strip().strip("<>").strip()
    if _ADDR_ONLY.match(value):
        return value
    match = _ADDR_RE.search(value)
    return match.group(0) if match else None


def _status(text: str, classes: str = "45") -> str | None:
    for match in _ENHANCED.finditer(text):
        if match.group(1) in classes:
            return ".".join(match.groups())
    return None


def _smtp_code(text: str) -> int | None:
    match = _SMTP_CODE.search(text)
    return int(match.group(1)) if match else None


def _from_delivery_status(
    blocks: list[dict[str, str]], sections: dict[str, str]
) -> tuple[list[RecipientReport], int]:
    """Failed and delayed recipients of the report, and how many were delivered."""
    reports: list[RecipientReport] = []
    successes = 0
    for block in blocks[:_MAX_RECIPIENTS]:
        recipient = _field_address(block.get("final-recipient", "")) or _field_address(
            block.get("original-recipient", ""))
        action = block.get("action", "").split(" ", 1)[0].strip().lower() or None
        status = _status(block.get("status", ""), "245")
        diagnostic = block.get("diagnostic-code", "")
        code = _smtp_code(diagnostic)
        severity: Severity | None
        if action in ("delivered", "relayed", "expanded"):
            severity = None
        elif action == "failed":
            severity = "permanent"
        elif action == "delayed":
            severity = "temporary"
        elif status is not None or code is not None:
            severity = _severity_of_codes(block.get("status", "") + " " + diagnostic)
        else:
            severity = "permanent"
        if severity is None:
            successes += 1
            continue
        if not diagnostic and recipient is not None:
            diagnostic = _diagnostic(_section(sections, recipient))
        if not diagnostic and status is not None:
            diagnostic = f"Status: {status}" + (f" ({action})" if action else "")
        reports.append(RecipientReport(
            recipient=recipient, severity=severity, status=status,
            diagnostic=_one_line(diagnostic, MAX_DIAGNOSTIC), action=action,
            smtp_code=code if code is not None else _smtp_code(diagnostic)))
    return reports, successes


# --- Non-standard bounces ----------------------------------------------------------------------


def _excluded(msg: Message) -> set[str]:
    """Addresses that are not failed recipients: the bounce's sender and addressees, mostly."""
    values: list[str] = []
    for name in ("From", "To", "Cc", "Reply-To", "Sender", "Return-Path", "Delivered-To",
                 "X-Original-To", "Envelope-To"):
        values += _headers(msg, name)
    return {address.casefold() for address in _addresses(values)}


def _section(sections: dict[str, str], address: str) -> str:
    wanted = address.casefold()
    return next((text for key, text in sections.items() if key.casefold() == wanted), "")


def _text_sections(msg: Message, text: str, originals: tuple[str, ...]) -> dict[str, str]:
    """The report's paragraphs per failed address: from the address's line to the next's."""
    excluded = _excluded(msg)
    lines = text.split("\n")
    starts: list[tuple[int, str, str]] = []
    for index, line in enumerate(lines):
        for pattern in _RCPT_LINES:
            match = pattern.match(line)
            if match is None:
                continue
            address = match.group(1).strip("'\"")
            if (address.casefold() not in excluded
                    and address.split("@", 1)[0].casefold() not in _DAEMON_LOCAL):
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
    if sections:
        return sections
    # no address on a line of its own: an address named in the report, if it is the only one
    # or the original's addressee
    named: dict[str, str] = {}
    for address in _ADDR_RE.findall(_MSGID_LINE.sub(" ", text)):
        key = address.casefold()
        if key not in excluded and key.split("@", 1)[0] not in _DAEMON_LOCAL:
            named.setdefault(key, address)
    wanted = [named[a.casefold()] for a in originals if a.casefold() in named]
    if wanted or len(named) == 1:
        return dict.fromkeys(wanted or named.values(), text)
    return {}


def _diagnostic(section: str) -> str:
    """The line giving the error in a recipient's paragraph, with its continuation lines."""
    lines = [line.strip() for line in section.split("\n")]
    for index, line in enumerate(lines):
        if not (_status(line) or _smtp_code(line)):
            continue
        code = _SMTP_CODE.match(line)
        parts = [re.sub(r"^(\d{3})-", r"\1 ", line)]
        for follow in lines[index + 1 :]:
            if not follow:
                break
            if code is not None:
                follow = re.sub(rf"^{code.group(1)}[ -](?:\d\.\d{{1,3}}\.\d{{1,3}}\s)?", "", follow)
            parts.append(follow)
        return " ".join(parts)
    return " ".join(line for line in lines if line)


def _severity_of_words(text: str) -> Severity | None:
    text = _CONDITIONAL.sub(" ", text)
    if _PERMANENT_WORDS.search(text):
        return "permanent"
    if _TEMPORARY_WORDS.search(text):
        return "temporary"
    return None


def _severity_of_codes(text: str) -> Severity | None:
    status = _status(text)
    if status is not None:
        return "permanent" if status[0] == "5" else "temporary"
    code = _smtp_code(text)
    if code is not None and code >= 400:
        return "permanent" if code >= 500 else "temporary"
    return None


def _from_text(msg: Message, subject: str, text: str,
               originals: tuple[str, ...]) -> list[RecipientReport]:
    """Recipients of a bounce without a delivery-status part, read from its text."""
    folded = _fold(text)
    failed = _addresses(_headers(msg, "X-Failed-Recipients"))
    if not (failed or _FAILURE_TEXT.search(folded) or _status(text)):
        return []
    sections = _text_sections(msg, text, originals)
    if failed:
        chosen: list[str | None] = list(failed)
    else:
        chosen = list(sections) or [None]
    folded_subject = _fold(subject)
    by_subject: Severity | None = (
        "temporary" if _SUBJECT_TEMPORARY.search(folded_subject)
        else "permanent" if _SUBJECT_PERMANENT.search(folded_subject) else None)
    reports: list[RecipientReport] = []
    for recipient in chosen[:_MAX_RECIPIENTS]:
        section = _section(sections, recipient) if recipient else ""
        if not section.strip():
            section = text
        severity = (by_subject or _severity_of_words(_fold(section))
                    or _severity_of_words(folded) or _severity_of_codes(section)
                    or _severity_of_codes(text) or "permanent")
        diagnostic = _diagnostic(section)
        status = _status(section) or _status(text)
        reports.append(RecipientReport(
            recipient=recipient, severity=severity, status=status,
            diagnostic=_one_line(diagnostic, MAX_DIAGNOSTIC), action=None,
            smtp_code=_smtp_code(diagnostic)))
    return reports
