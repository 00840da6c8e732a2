"""Reading a mailbox of bounces, one raw message at a time: an mbox, a Maildir, or IMAP over TLS.

    with open_mailbox("imaps://bounces%40asso.fr@mail.asso.fr/Bounces", settings) as mailbox:
        mailbox.total                    # how many messages to expect (None: not known)
        for item in mailbox:             # MailItem(key="UID 17", raw=b"Return-Path: ...")
            ...                          # in mailbox order; one message in memory at a time

The SOURCE of `mailer bounces import`:

- an existing regular file is an mbox, read with the stdlib's mailbox.mbox: its table of
  contents holds offsets only, and each message is read when its turn comes. The "From " line
  is removed; a body line quoted as ">From " stays as it is (the stdlib does not unquote:
  in the common mboxo format the quoting cannot be undone without ambiguity). Keys:
  "message 1", "message 2", ... An empty file is an empty mbox; a file that does not begin
  with a "From " line is refused (a single .eml file is not an mbox).
- an existing folder with cur/ and new/ is a Maildir: the files of new/ and cur/, sorted by
  file name (delivery time first, for every common writer); tmp/ (deliveries in progress)
  and dot-files are skipped. Keys: "new/1732…" or "cur/1732…:2,S". Files are only read:
  never moved, renamed or re-flagged. Sub-folders (Maildir++ ".Bounces/") are not walked:
  name the sub-folder itself.
- `imaps://USER@HOST[:PORT]/FOLDER`: IMAP over implicit TLS (port 993 by default), the
  certificate and host name verified (the system's CAs, plus settings.imap_ca_file). USER
  and FOLDER may be percent-encoded (`bounces%40asso.fr`, `Rebonds/%C3%89t%C3%A9`); FOLDER
  defaults to INBOX, separates sub-folders with "/" whatever the server's own separator, and
  is sent in IMAP's modified UTF-7. The password comes from settings.imap_password (the
  environment), never from the URL. The folder is opened read-only (EXAMINE) and bodies
  are fetched with BODY.PEEK[], so no flag changes and nothing is deleted; messages come in
  UID order, by batches of at most `batch_size` messages and `batch_bytes` bytes (a batch
  is in memory at once). Keys: "UID 17".

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
from mailer.bounces.mailboxes.stream import Mailbox, MailItem
from mailer.core.config import Settings

__all__ = [
    "BATCH_BYTES",
    "BATCH_SIZE",
    "IMAP_PORT",
    "IMAP_TIMEOUT",
    "ImapSource",
    "MailItem",
    "Mailbox",
    "encode_folder_name",
    "open_mailbox",
    "parse_imap_url",
    "uid_set",
]

BATCH_SIZE = 100  # messages per UID FETCH
BATCH_BYTES = 16 * 1024 * 1024  # and at most this much of them (one bigger message goes alone)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@contextmanager
def open_mailbox(
    source: str,
    settings: Settings,
    *,
    batch_size: int = BATCH_SIZE,
    batch_bytes: int = BATCH_BYTES,
    timeout: float = IMAP_TIMEOUT,
) -> Iterator[Mailbox]:
    """Open SOURCE (an mbox, a Maildir, or imaps://…; see the module doc) for reading.

    Connecting, logging in and opening the folder happen here, so those errors come before
    the first message; the connection or file is closed when the block ends.
    """
    if batch_size < 1 or batch_bytes < 1:
        raise ValueError("batch_size and batch_bytes must be at least 1")
    opened: Iterator[Mailbox]
    if _URL.match(source):
        opened = open_imap(parse_imap_url(source), settings, batch_size, batch_bytes, timeout)
    else:
        opened = open_path(Path(source).expanduser())
    yield from opened
