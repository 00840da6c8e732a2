"""Reading a mailbox of bounces, one raw message at a time: an mbox, a Maildir, or IMAP over TLS.

    with open_mailbox("imaps://bounces%40asso.fr@mail.asso.fr/Bounces", settings) as mailbox:
        mailbox.total                    # how many messages to expect (None: not known)
        for item in mailbox:             # MailItem(key="UID 17", raw=b"Return-Path: ...")
            ...                          # in mailbox order; one message in memory at a time

Memory does not grow with the mailbox: nothing is kept of the messages already given, and no
message larger than `max_bytes` (MAX_MESSAGE_BYTES, 2 MiB) is read: it comes as a MailItem
with no bytes, `too_large`, its `size` said, for the caller to skip and list.

The SOURCE of `mailer bounces import`:

- an existing regular file is an mbox, split on its "From " lines in one pass (a first pass
  counts them for `total`, keeping nothing). The "From " line is removed; a body line quoted
  as ">From " stays as it is (in the common mboxo format the quoting cannot be undone
  without ambiguity): the bytes are the stdlib mailbox.mbox's. Keys: "message 1",
  "message 2", ... An empty file is an empty mbox; a file that does not begin with a "From "
  line is refused (a single .eml file is not an mbox).
- an existing folder with cur/ and new/ is a Maildir: the files of new/, then of cur/, in
  the order the folders list them (nothing is sorted, so no list of names is held); tmp/
  (deliveries in progress) and dot-files are skipped. Keys: "new/1732…" or "cur/1732…:2,S".
  Files are only read: never moved, renamed or re-flagged. Sub-folders (Maildir++
  ".Bounces/") are not walked: name the sub-folder itself.
- `imaps://USER@HOST[:PORT]/FOLDER`: IMAP over implicit TLS (port 993 by default), the
  certificate and host name verified (the system's CAs, plus settings.imap_ca_file). USER
  and FOLDER may be percent-encoded (`bounces%40asso.fr`, `Rebonds/%C3%89t%C3%A9`); FOLDER
  defaults to INBOX, separates sub-folders with "/" whatever the server's own separator, and
  is sent in IMAP's modified UTF-7. The password comes from settings.imap_password (the
  environment), never from the URL. The folder is opened read-only (EXAMINE) and bodies
  are fetched with BODY.PEEK[], so no flag changes and nothing is deleted; messages come in
  UID order, by batches of at most `batch_size` messages and `batch_bytes` bytes (a batch
  is in memory at once). With `resume`, only the messages above the UID it returns for the
  folder (an `ImapFolder`: host, user, folder and UIDVALIDITY) are listed and fetched; the
  Mailbox's `folder` and each item's `uid` say where the caller got to. Keys: "UID 17".

Errors, each one line naming the path or the server, never the password:

    InputError               a missing path, a folder that is no Maildir, an unreadable file,
                             a URL that is not imaps:// or is malformed
    ConfigError              imap:// (clear text), a password in the URL, no password set,
                             an unverifiable certificate, refused credentials
    NotFoundError            the IMAP folder does not exist
    MailboxUnavailableError  the server is unreachable, refuses or times out (`timeout`
                             seconds), or the connection breaks midway: what the caller
                             recorded stays recorded; run again later

One module a kind of source: `files` (mbox, Maildir), `imap` (with `_imapwire`, IMAP's syntax);
`stream` holds what they all yield.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mailer.bounces.mailboxes._imapwire import encode_folder_name, uid_set
from mailer.bounces.mailboxes.files import open_path
from mailer.bounces.mailboxes.imap import (
    IMAP_PORT,
    IMAP_TIMEOUT,
    ImapSource,
    open_imap,
    parse_imap_url,
)
from mailer.bounces.mailboxes.stream import (
    BATCH_BYTES,
    BATCH_SIZE,
    MAX_MESSAGE_BYTES,
    ImapFolder,
    Mailbox,
    MailItem,
    Reading,
    Resume,
)
from mailer.core.config import Settings

__all__ = [
    "BATCH_BYTES",
    "BATCH_SIZE",
    "IMAP_PORT",
    "IMAP_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "ImapFolder",
    "ImapSource",
    "MailItem",
    "Mailbox",
    "Resume",
    "encode_folder_name",
    "open_mailbox",
    "parse_imap_url",
    "uid_set",
]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@contextmanager
def open_mailbox(
    source: str,
    settings: Settings,
    *,
    batch_size: int = BATCH_SIZE,
    batch_bytes: int = BATCH_BYTES,
    max_bytes: int = MAX_MESSAGE_BYTES,
    timeout: float = IMAP_TIMEOUT,
    resume: Resume | None = None,
) -> Iterator[Mailbox]:
    """Open SOURCE (an mbox, a Maildir, or imaps://…; see the module doc) for reading.

    Connecting, logging in and opening the folder happen here, so those errors come before
    the first message; the connection or file is closed when the block ends.
    """
    if batch_size < 1 or batch_bytes < 1 or max_bytes < 0:
        raise ValueError("batch_size and batch_bytes must be at least 1, max_bytes 0")
    reading = Reading(max_bytes, batch_size, batch_bytes)
    opened: Iterator[Mailbox]
    if _URL.match(source):
        opened = open_imap(parse_imap_url(source), settings, reading, timeout, resume)
    else:
        opened = open_path(Path(source).expanduser(), max_bytes)
    yield from opened
