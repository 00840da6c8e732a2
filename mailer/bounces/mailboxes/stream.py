"""What every kind of mailbox is read as: a `Mailbox`, a stream of `MailItem`s in mailbox order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

# Every error on the SOURCE argument ends with this hint: the user may have mistyped the kind.
SOURCE_HINT = (
    "give an mbox file, a Maildir folder (holding cur/ and new/) or imaps://USER@HOST/FOLDER"
)

# What one message may cost. A bounce about a message mailer sent (text and HTML, no
# attachments) is that message plus a few kilobytes, so one 20 times a large newsletter is
# not one. It is neither kept, fetched nor parsed: parsing takes about ten times a message's
# size in memory, and seconds a megabyte for junk made of short lines (issue 13: 67 MB peaked
# at 655 MB). It comes as a MailItem without its bytes, for the import to skip and list.
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
BATCH_SIZE = 100  # IMAP: messages per UID FETCH
BATCH_BYTES = 16 * 1024 * 1024  # and at most this much of them (one bigger message goes alone)


@dataclass(frozen=True)
class Reading:
    """What reading a mailbox may hold at once: one message of at most `limit` bytes (files),
    or (IMAP) a batch of at most `count` messages and `batch_bytes` bytes."""

    limit: int = MAX_MESSAGE_BYTES
    count: int = BATCH_SIZE
    batch_bytes: int = BATCH_BYTES


@dataclass(frozen=True)
class MailItem:
    """One message of a mailbox, as RFC 5322 bytes, and where it came from."""

    key: str  # for the user's report: "message 3" (mbox), "cur/1732…:2,S" (Maildir), "UID 17"
    raw: bytes  # the whole message; b"" when it is larger than the limit (see `too_large`)
    size: int = -1  # its size in bytes when known (-1: len(raw))
    uid: int | None = None  # IMAP: its UID in the folder (`Mailbox.folder`)

    @property
    def too_large(self) -> bool:
        """Not read: larger than the mailbox's limit (`size` says how large)."""
        return self.size > len(self.raw)


@dataclass(frozen=True)
class ImapFolder:
    """An IMAP folder as the server identifies it for this session: UIDs only mean the same
    messages from one session to the next while UIDVALIDITY stays the same (RFC 3501 2.3.1.1)."""

    host: str
    user: str
    folder: str
    uidvalidity: int


# Given an IMAP folder, the highest UID an earlier run has read in it (0: none): the reader
# then fetches only the messages above it.
Resume = Callable[[ImapFolder], int]


class Mailbox:
    """What open_mailbox yields: iterate it for the MailItems, in order (once).

    `total` is the number of messages the mailbox held when opened (None if unknown), for a
    progress display; a message removed meanwhile is skipped, so fewer may come. `folder` is
    set for an IMAP folder whose server gives a UIDVALIDITY: its items carry their UID.
    """

    def __init__(
        self,
        name: str,
        total: int | None,
        items: Callable[[], Iterator[MailItem]],
        folder: ImapFolder | None = None,
    ) -> None:
        self.name = name  # "mbox PATH", "Maildir PATH", "imaps://user@host:993/INBOX"
        self.total = total
        self.folder = folder
        self._items = items

    def __iter__(self) -> Iterator[MailItem]:
        return self._items()

    def __repr__(self) -> str:
        return f"<Mailbox {self.name} total={self.total}>"
