"""Read one bounce message: raw bytes in, a frozen `Report` out. No I/O, and it never raises.

Another module reads the mailbox (mbox, Maildir, IMAP) and hands each message's bytes to
`parse`; another matches the `Report` to a delivery (by `message_ids` first, then by failed
recipient) and records it. This package only reads.

    kind          when
    bounce        a delivery-status report (RFC 3464) with a failed or delayed recipient, a
                  Sieve/Dovecot rejection (a disposition notification saying "deleted"), or a
                  non-standard bounce (Gmail's old text, Exchange, qmail, Exim, a French MTA,
                  and every format flufl.bounce's detectors know) with failure text or a
                  4.x.x/5.x.x status
    complaint     an abuse feedback report (ARF, RFC 5965): its Original-Rcpt-To, or no
                  recipient when the provider redacted it (the Message-ID then ties it)
    ignored       an auto-reply (out of office), a read receipt (disposition notification), a
                  delivery-status report that only says "delivered" / "relayed" / "expanded"
    unrecognised  anything else: a human reply, spam, a feedback report that is no complaint,
                  garbage, an empty message; `reason` says why

Each recipient report has a `reason` from a small vocabulary (`reasons`: mailbox unknown,
mailbox full, blocked or spam...) and a `source`: whether its address was read from a
recipient field or format ("dsn", "header", "format") or guessed from the text ("text"), which
never ties a report to a subscriber by itself.

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

Headers and bodies are decoded with fallbacks (see `_decoding`). Addresses are returned as
written (case kept); compare them case-insensitively.

The package, one job a module: `reading` parses the bytes once and asks the recognisers in
order, the first `Finding` deciding; `rfc3464` (delivery-status reports and success notices),
`receipts` (rejections, read receipts, abuse complaints), `library` (flufl.bounce's detectors:
who failed in the non-standard formats), `plaintext` (the rest of the non-standard bounces,
with the MTA family told by `formats`: Gmail, Exchange, qmail, Exim), `autoreply`; `reasons`
gives each recipient report its reason. A recogniser is one
callable `Evidence -> Finding | None` (`evidence`); the `_` modules are the readings they share.
"""

from __future__ import annotations

from mailer.bounces.dsn.reading import parse
from mailer.bounces.dsn.report import MAX_DIAGNOSTIC as MAX_DIAGNOSTIC
from mailer.bounces.dsn.report import MAX_SUBJECT as MAX_SUBJECT
from mailer.bounces.dsn.report import Kind, RecipientReport, Report, Severity

__all__ = ["Kind", "RecipientReport", "Report", "Severity", "parse"]
