"""What every kind of mailbox is read as: a `Mailbox`, a stream of `MailItem`s in mailbox order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

# Every error on the SOURCE argument ends with this hint: the user may have mistyped the kind.
SOURCE_HINT = (
    "give an mbox file, a Maildir folder (holding cur/ and new/) or imaps://USER@HOST/FOLDER"
)


@dataclass(frozen=True)
class MailItem:
    """One message of a mailbox, as RFC 5322 bytes, and where it came from."""

    key: str  # for the user's report: "message 3" (mbox), "cur/1732…:2,S" (Maildir), "UID 17"
    raw: bytes


class Mailbox:
    """What open_mailbox yields: iterate it for the MailItems, in order (once).

    `total` is the number of messages the mailbox held when opened (None if unknown), for a
    progress display; a message removed meanwhile is skipped, so fewer may come.
    """

    def __init__(
        self, name: str, total: int | None, items: Callable[[], Iterator[MailItem]]
    ) -> None:
        self.name = name  # "mbox PATH", "Maildir PATH", "imaps://user@host:993/INBOX"
        self.total = total
        self._items = items

    def __iter__(self) -> Iterator[MailItem]:
        return self._items()

    def __repr__(self) -> str:
        return f"<Mailbox {self.name} total={self.total}>"
