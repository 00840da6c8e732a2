"""The recogniser contract: the `Evidence` every recogniser reads, the `Finding` it returns.

A recogniser is any callable `Evidence -> Finding | None`: None means "not mine, ask the next
one". The reader runs them in a fixed order (see `reading.RECOGNISERS`); adding a format is
adding a recogniser, and one wrapping another library's detector (flufl.bounce's, say) only has
to turn what that detector found into a `Finding`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from functools import cached_property

from mailer.bounces.dsn._decoding import fold, header
from mailer.bounces.dsn._mime import Scan
from mailer.bounces.dsn.formats import Family, identify
from mailer.bounces.dsn.report import Kind, RecipientReport


@dataclass(frozen=True)
class Finding:
    """What a recogniser found; the reader adds what every `Report` carries (ids, date...)."""

    kind: Kind
    recipients: tuple[RecipientReport, ...]
    format: str
    reason: str
    structured: bool = False


class Evidence:
    """One message as the recognisers read it. Each reading is done once, when first asked for:
    most messages are settled by the first recogniser that looks."""

    def __init__(
        self, msg: Message, subject: str, scan: Scan, original_recipients: tuple[str, ...]
    ) -> None:
        self.msg = msg  # parsed with compat32: read headers through _decoding.header(s)
        self.subject = subject  # decoded, one line, at most MAX_SUBJECT characters
        self.scan = scan
        self.original_recipients = original_recipients

    @cached_property
    def sender(self) -> str:
        """The From header, `fold`ed."""
        return fold(header(self.msg, "From"))

    @cached_property
    def folded_subject(self) -> str:
        return fold(self.subject)

    @cached_property
    def text(self) -> str:
        """The report's human-readable text, returned original cut off; HTML only if no text."""
        scan = self.scan
        return "\n\n".join(scan.texts) if scan.texts else "\n\n".join(scan.htmls)

    @cached_property
    def folded_text(self) -> str:
        return fold(self.text)

    @cached_property
    def family(self) -> Family | None:
        """The MTA family that wrote the message, when it shows (see `formats`)."""
        return identify(self)


Recogniser = Callable[[Evidence], Finding | None]
