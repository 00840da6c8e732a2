"""The same bytes as `reference.build_message(...).as_bytes()`, an order of magnitude faster.

Building an `EmailMessage` and serializing it costs milliseconds: the header registry parses
and refolds every header, the content manager re-encodes every line of both bodies. Across
one campaign almost all of that is the same for every subscriber. A Composer therefore does
once per campaign what is invariant and, per subscriber, only what differs, always with the
library's own encoders:

- invariant headers (From, Reply-To, List-Id, List-Unsubscribe-Post, MIME-Version,
  Content-Type) and the MIME framing are taken from a message the library built and
  serialized itself;
- Subject and Date are folded by the library once per distinct value (remembered);
- List-Unsubscribe is folded by the library once per token length, with a stand-in token, and
  the real token put in its place (folding an unstructured header depends only on where the
  white space is, and a token has none; checked with two stand-ins before it is trusted);
- To is written in the shapes the library's folder gives one mailbox (on one line, moved
  whole to a continuation line, or broken before `<address>`), a name with accents encoded
  with the library's own encoded-word encoder (`encode_phrase`); any other name is folded by
  the library. Message-ID is copied when it is a plain id that fits on its line;
- the bodies are quoted-printable encoded line by line as `email.quoprimime.body_encode`
  does (`quoting.qp_encode`), every line on its own, remembering the lines every message shares;
  a campaign's skeleton brings them already encoded (`messages.bodies`).

A message whose address needs SMTPUTF8 is built by `build_message` itself. When a Composer is
created it composes sample messages both ways and compares them; if they ever differ (another
Python version's library, say), it uses `build_message` for everything and says so in
`fast`. tests/test_compose.py compares both ways on generated subscribers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

# The encoder the header folder itself calls (email._header_value_parser._fold_as_ew).
from email import _encoded_words as encoded_words  # type: ignore[attr-defined]
from functools import lru_cache
from typing import Any

from mailer.core.people import Recipient
from mailer.messages.campaign import Campaign
from mailer.messages.quoting import qp_encode
from mailer.messages.reference import (
    MAX_LINE,
    ONE_CLICK,
    POLICY,
    Envelope,
    build_message,
    mailbox,
)
from mailer.messages.render import Links, Parts, display_name

CRLF = b"\r\n"
Bodies = tuple[bytes | None, bytes | None]
_MAX = MAX_LINE
# Words the header folder copies unchanged: RFC 5322 atext without the characters that make
# the library quote a display name (SPECIALS) or look for an encoded word ('=', '?').
_PLAIN_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/^_`{|}~-]+)*")
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
_PLAIN_MESSAGE_ID = re.compile(r"<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+>")
# A display name of words that may hold non-ASCII letters, separated by single spaces.
_WORD = r"[^\s\x00-\x1f\x7f\"(),.:;<>@\[\]\\=?]+"
_WORDS = re.compile(f"{_WORD}(?: {_WORD})*")
_TOKEN = re.compile(r"[A-Za-z0-9._-]+")
_SENTINEL_TEXT = "MAILER0TEXT0SENTINEL\n"
_SENTINEL_HTML = "MAILER0HTML0SENTINEL\n"


def header_names(data: bytes) -> list[bytes]:
    """The name of each header of a message, in order (continuation lines skipped)."""
    head = data[: data.find(CRLF + CRLF)]
    return [line.partition(b":")[0] for line in head.split(CRLF) if line[:1] not in (b" ", b"\t")]


def header_shape(names: list[bytes]) -> re.Pattern[bytes] | None:
    """A header block whose `header_names` are `names`, then the empty line: lines (no CRLF
    inside) each `name` or `name:…`, in order, continuation lines (SP or HTAB first) between."""
    if not names or any(not name or b":" in name or name[:1] in b" \t" for name in names):
        return None
    line = rb"[^\r]*+(?:\r(?!\n)[^\r]*+)*+"
    continued = rb"(?:[ \t]" + line + rb"\r\n)*+"
    return re.compile(continued + b"".join(
        re.escape(name) + rb"(?::" + line + rb")?+\r\n" + continued for name in names
    ) + rb"\r\n")


def fold(name: str, value: Any) -> bytes:
    """One header as the library writes it in a message of POLICY."""
    return POLICY.fold_binary(*POLICY.header_store_parse(name, value))


qp_line = lru_cache(maxsize=8192)(qp_encode)  # lines every message of a campaign shares


def quoted_printable(text: str) -> bytes:
    """The body lines of a text part: what `email.contentmanager` and the generator write."""
    lines = text.encode("utf-8").splitlines() or [b""]  # "" is written as one empty line
    return b"".join([qp_line(line) for line in lines])


def encode_phrase(words: list[str]) -> str:
    """A display name as the library's folder writes it when the header fits on one line.

    ASCII words are copied; a non-ASCII word becomes an RFC 2047 encoded word, and a later
    non-ASCII word is merged into it, together with the words in between (the folder decodes
    the encoded word it already wrote and encodes the whole run again). Each word is followed
    by the space that separates it from the next word or from `<address>`.
    """
    out = ""
    start = -1  # where the encoded word begins in `out`
    pending = ""  # the decoded text from there on
    for word in words:
        if word.isascii():
            out += word + " "
            pending += word + " "
            continue
        if start < 0:
            start, pending = len(out), ""
        pending += word
        out = out[:start] + encoded_words.encode(pending, charset="utf-8") + " "
        pending += " "
    return out


def _fold_mailbox(phrase: str, address: str, *, ascii_phrase: bool) -> bytes | None:
    """`To: phrase <address>` folded as the library folds it, or None if unsure.

    On one line when it fits. Otherwise the folder moves the whole mailbox to a continuation
    line when it fits there (76 characters for a mailbox with an encoded name, which the
    folder measures before adding the fold's space; 75 for a plain one). Otherwise it breaks
    before `<address>`, the space before it becoming the fold.
    """
    whole = f"{phrase} <{address}>"
    if len(whole) + 4 <= _MAX:
        return f"To: {whole}\r\n".encode("ascii")
    if len(whole) + (1 if ascii_phrase else 0) <= _MAX:
        return f"To:\r\n {whole}\r\n".encode("ascii")
    first, second = f"To: {phrase}", f" <{address}>"
    if len(first) < _MAX and len(second) <= _MAX:
        return f"{first}\r\n{second}\r\n".encode("ascii")
    return None


class Composer:
    """A campaign's invariant parts, ready; `compose()` gives one subscriber's message bytes."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self.fast = False
        self._from = fold("From", campaign.sender)
        self._reply_to = (
            fold("Reply-To", campaign.reply_to) if campaign.reply_to is not None else b""
        )
        self._list_id = fold("List-Id", campaign.list_id) if campaign.list_id else b""
        self._post = fold("List-Unsubscribe-Post", ONE_CLICK)
        self._unsubscribe: dict[int, tuple[bytes, bytes] | None] = {}
        self._subject: Callable[[str], bytes] = lru_cache(maxsize=1024)(
            lambda subject: fold("Subject", subject)
        )
        self._date: Callable[[datetime], bytes] = lru_cache(maxsize=64)(
            lambda date: fold("Date", date)
        )
        # Names come back (first and last names of a list): the encoded display names.
        self._phrase: Callable[[str], str] = lru_cache(maxsize=4096)(
            lambda name: encode_phrase(name.split(" "))[:-1]
        )
        self._names: list[bytes] = []
        self._shape: re.Pattern[bytes] | None = None
        self._framing = self._learn_framing()
        self.fast = self._framing is not None and self._agrees()

    # --- per subscriber ---------------------------------------------------------------------

    def compose(
        self, recipient: Recipient, parts: Parts, links: Links, envelope: Envelope,
        bodies: Bodies = (None, None),
    ) -> bytes:
        """The message's bytes, identical to `build_message(...).as_bytes()`.

        `bodies` may bring the text and HTML bodies already encoded, exactly as
        `quoted_printable(parts.text)` and `(parts.html)` (`messages.bodies`, which encodes
        a campaign's static stretches once).

        Either way, the header block is checked: exactly the headers written, in order, each
        continuation line folded with white space. ValueError otherwise (a header injection
        through some library bug must stop the message, not reach the relay).
        """
        data = self._compose(recipient, parts, links, envelope, bodies)
        self.verify(data)
        return data

    def _compose(
        self, recipient: Recipient, parts: Parts, links: Links, envelope: Envelope,
        bodies: Bodies = (None, None),
    ) -> bytes:
        if not self.fast or recipient.smtputf8 or self._framing is None:
            return self.reference(recipient, parts, links, envelope)
        mime, before_text, between, after = self._framing
        if (parts.html is None) != (between is None):
            return self.reference(recipient, parts, links, envelope)
        text, html = bodies
        chunks = self._headers(recipient, parts, links, envelope)
        chunks += [mime, before_text, quoted_printable(parts.text) if text is None else text]
        if parts.html is not None and between is not None:
            chunks += [between, quoted_printable(parts.html) if html is None else html]
        chunks.append(after)
        return b"".join(chunks)

    def verify(self, data: bytes) -> None:
        """Raise ValueError unless the headers are exactly the ones this campaign writes.

        `_shape` accepts, in one pass, only a header block that `header_names` reads as
        these names (each line one header or a continuation, no CRLF in a line); anything
        else is read line by line as before."""
        if self._shape is not None and self._shape.match(data):
            return
        names = header_names(data)
        if CRLF + CRLF not in data or names != self._names:
            unexpected = sorted({n.decode("ascii", "replace") for n in names}
                                - {n.decode() for n in self._names})
            raise ValueError(
                "the message's header block is not the one written"
                + (f" (unexpected: {', '.join(unexpected)})" if unexpected else "")
            )

    def _headers(
        self, recipient: Recipient, parts: Parts, links: Links, envelope: Envelope
    ) -> list[bytes]:
        """The headers before MIME-Version, in build_message's order."""
        chunks = [
            self._from,
            self._to(recipient),
            self._reply_to,
            self._subject(parts.subject),
            self._date(envelope.date),
            self._message_id(envelope.message_id),
            self._list_id,
        ]
        if links.url is not None or links.mailto is not None:
            chunks.append(self._list_unsubscribe(links))
            if links.url is not None:
                chunks.append(self._post)
        return chunks

    def reference(
        self, recipient: Recipient, parts: Parts, links: Links, envelope: Envelope
    ) -> bytes:
        return build_message(self.campaign, recipient, parts, links, envelope).as_bytes()

    def _to(self, recipient: Recipient) -> bytes:
        """The To header: written directly in the shapes the library's folder produces for
        one plain mailbox, checked by tests/test_compose.py; anything else, by the library."""
        name, address = display_name(recipient), recipient.address
        if _PLAIN_ADDRESS.fullmatch(address):
            if not name:
                line = f"To: {address}"
                if len(line) <= _MAX:
                    return line.encode("ascii") + CRLF
            else:
                plain = _PLAIN_NAME.fullmatch(name) is not None
                if plain or _WORDS.fullmatch(name):
                    phrase = name if plain else self._phrase(name)
                    folded = _fold_mailbox(phrase, address, ascii_phrase=plain)
                    if folded is not None:
                        return folded
        return fold("To", mailbox(name, address))

    def _message_id(self, value: str) -> bytes:
        line = f"Message-ID: {value}"
        if _PLAIN_MESSAGE_ID.fullmatch(value) and len(line) <= _MAX:
            return line.encode("ascii") + CRLF
        return fold("Message-ID", value)

    def _list_unsubscribe(self, links: Links) -> bytes:
        value = links.header_value()
        assert value is not None
        token = links.token
        if links.url is None or value.count(token) != 1 or not _TOKEN.fullmatch(token):
            return fold("List-Unsubscribe", value)
        if len(token) not in self._unsubscribe:
            self._unsubscribe[len(token)] = self._learn_unsubscribe(value, token)
        learned = self._unsubscribe[len(token)]
        if learned is None:
            return fold("List-Unsubscribe", value)
        head, tail = learned
        return head + token.encode("ascii") + tail

    def _learn_unsubscribe(self, value: str, token: str) -> tuple[bytes, bytes] | None:
        """Fold with two stand-in tokens; trust the split only if nothing but the token moved."""
        first, second = "0" * len(token), "1" * len(token)
        folded = fold("List-Unsubscribe", value.replace(token, first))
        other = fold("List-Unsubscribe", value.replace(token, second))
        if folded.count(first.encode()) != 1 or folded.replace(first.encode(),
                                                               second.encode()) != other:
            return None
        head, tail = folded.split(first.encode())
        return head, tail

    # --- learned once per campaign ----------------------------------------------------------

    def _sample(self, name: tuple[str | None, str | None], address: str) -> Recipient:
        return Recipient(id=1, email=address, address=address, first_name=name[0],
                         last_name=name[1])

    def _learn_framing(self) -> tuple[bytes, bytes, bytes | None, bytes] | None:
        """MIME headers and part framing, cut out of a message the library serialized; and
        the header names every message must have (for `verify`)."""
        html = _SENTINEL_HTML if self.campaign.has_html else None
        parts = Parts("Sample", _SENTINEL_TEXT, html)
        recipient = self._sample(("Sample", None), "sample@example.org")
        links = Links.build(self.campaign, "0.sample")
        envelope = Envelope("<sample@example.org>", datetime(2000, 1, 1, tzinfo=UTC))
        data = self.reference(recipient, parts, links, envelope)
        self._names = header_names(data)  # every message of the campaign has these headers
        self._shape = header_shape(self._names)
        head, separator, body = data.partition(CRLF + CRLF)
        prefix = b"".join(self._headers(recipient, parts, links, envelope))
        text_mark = _SENTINEL_TEXT.rstrip("\n").encode() + CRLF
        head += CRLF
        if not separator or not head.startswith(prefix) or body.count(text_mark) != 1:
            return None
        mime = head[len(prefix) :]
        before_text, _, rest = body.partition(text_mark)
        before_text = CRLF + before_text
        if html is None:
            return mime, before_text, None, rest
        html_mark = _SENTINEL_HTML.rstrip("\n").encode() + CRLF
        if rest.count(html_mark) != 1:
            return None
        between, _, after = rest.partition(html_mark)
        return mime, before_text, between, after

    def _agrees(self) -> bool:
        """Compose samples both ways (plain, accented, no name); every byte must match."""
        date = datetime(2026, 11, 26, 10, 30, tzinfo=UTC)
        for index, (name, address) in enumerate(
            [
                (("Jean", "Martin"), "jean.martin@example.org"),
                (("Hélène", "Dupont, « Lena »"), "h.dupont@xn--bcher-kva.example"),
                ((None, None), "x@example.org"),
            ]
        ):
            recipient = self._sample(name, address)
            links = Links.build(self.campaign, f"{index + 1:x}.AbCdEfGhIjKlMnOpQrStUv")
            envelope = Envelope(f"<sample{index}.{index:x}@example.org>", date)
            text = "Bonjour Hélène,\n\nLigne \t\n=?utf-8?q?x?= " + "é" * 60 + "\n"
            parts = Parts(f"Objet {index} : l’été", text, text if self.campaign.has_html
                          else None)
            self.fast = True
            try:
                if self._compose(recipient, parts, links, envelope) != self.reference(
                    recipient, parts, links, envelope
                ):
                    return False
            except (ValueError, UnicodeError):  # a shortcut that cannot even write its bytes
                return False
            finally:
                self.fast = False
        return True
