"""A text part's quoted-printable body, its static stretches encoded once per campaign.

The composer writes a part the way `email.contentmanager` does: the text ends with exactly
one newline (`render.ending`), is encoded to UTF-8, split into lines (`bytes.splitlines`:
LF, CR LF or CR), and each line is quoted-printable encoded on its own (`quoting.qp_encode`:
every byte quoted, then the line cut at 76 characters). A line never depends on another,
and the quoting of a byte never on its neighbours, so a part made of static stretches and
holes is encoded a stretch at a time:

- every complete line of a static stretch (from just after its first LF to its last LF, with
  no CR in it, so that nothing can join it to a neighbour) once per campaign;
- the rest of a stretch, the beginning of its first line and the end of its last, quoted
  once per campaign; per message only a hole's text is quoted, and the line it sits in,
  pieces joined, is cut at 76 characters (`qp_wrap`). A hole that holds a line break has
  its lines encoded from the text;
- the end: the last stretch is given its single final newline once, when it holds any other
  character; otherwise the final newlines are trimmed per message, and the whole text is
  encoded the plain way in the one case where trimming would reach back into lines encoded
  already (a hole that renders to nothing but newlines at the very end).
"""

from __future__ import annotations

from collections.abc import Sequence

from mailer.messages.compose import qp_line, quoted_printable
from mailer.messages.quoting import qp_encode, qp_quote, qp_wrap


def encode_lines(text: str) -> bytes:
    """Complete lines (`text` ends with LF), as `quoted_printable` encodes them."""
    return b"".join([qp_encode(line) for line in text.encode("utf-8").splitlines()])


class Cut:
    """A static stretch with a line break: the end of the line before it (`head`, quoted,
    without its LF), its own lines (`middle`, encoded), the start of the next (`tail`)."""

    __slots__ = ("head", "head_quoted", "middle", "tail", "tail_quoted")

    def __init__(self, stretch: str) -> None:
        first, final = stretch.find("\n"), stretch.rfind("\n")
        self.head, self.tail = stretch[: first + 1], stretch[final + 1 :]
        self.head_quoted = qp_quote(stretch[:first].encode("utf-8"))
        self.tail_quoted = qp_quote(self.tail.encode("utf-8"))
        lines = stretch[first + 1 : final + 1].encode("utf-8").splitlines()
        self.middle = b"".join([qp_line(line) for line in lines])


class Group:
    """Lines put together per message: static ends of lines and holes (`texts`, a hole by its
    index), the same quoted (`quoted`; None when a static piece holds a CR), then the complete
    lines that follow (`middle`, encoded)."""

    __slots__ = ("middle", "quoted", "texts")

    def __init__(self, texts: list[str | int], quoted: list[bytes | int] | None,
                 middle: bytes) -> None:
        self.texts, self.middle = tuple(texts), middle
        self.quoted = None if quoted is None else tuple(quoted)


def _text(items: Sequence[str | int], holes: Sequence[str]) -> str:
    return "".join([holes[item] if isinstance(item, int) else item for item in items])


class Body:
    """One part: `statics[0] hole[0] statics[1] … statics[n]`, n holes."""

    def __init__(self, statics: Sequence[str]) -> None:
        statics = list(statics)
        last = statics[-1].rstrip("\n")
        self.ends = bool(last)  # the last stretch holds the end of the text
        if self.ends:
            statics[-1] = last + "\n"
        self.statics = statics
        self.groups: list[Group] = []
        texts: list[str | int] = []
        quoted: list[bytes | int] | None = []
        for index, stretch in enumerate(statics):
            if index:
                texts.append(index - 1)
                if quoted is not None:
                    quoted.append(index - 1)
            if index == len(statics) - 1 and not self.ends:
                break  # nothing but newlines: trimmed per message
            if "\n" not in stretch or "\r" in stretch:  # no line of its own
                texts.append(stretch)
                if quoted is not None and "\r" not in stretch:
                    quoted.append(qp_quote(stretch.encode("utf-8")))
                else:
                    quoted = None
                continue
            cut = Cut(stretch)
            texts.append(cut.head)
            if quoted is not None:
                quoted.append(cut.head_quoted)
            self.groups.append(Group(texts, quoted, cut.middle))
            texts, quoted = [cut.tail], [cut.tail_quoted]
        self.rest = Group(texts, quoted, b"")  # the end of the text

    def make(self, holes: Sequence[str]) -> tuple[str, bytes]:
        """The part's text (as `render.ending` leaves it) and its encoded body lines."""
        statics = self.statics
        pieces = [statics[0]]
        for hole, stretch in zip(holes, statics[1:], strict=True):
            pieces += (hole, stretch)
        text = "".join(pieces)
        if not self.ends:
            text = text.rstrip("\n") + "\n"
        out: list[bytes] = []
        for group in self.groups:
            out += (_line(group, holes), group.middle)
        rest = _text(self.rest.texts, holes)
        if self.ends:
            if rest:  # a last stretch with a CR: it ends with its LF
                out.append(encode_lines(rest))
        elif rest and "\n" not in rest and "\r" not in rest:
            out.append(_line(self.rest, holes))  # one line: no final newline to trim
        else:
            rest = rest.rstrip("\n")
            if not rest:  # the final newlines reach back into lines encoded already
                return text, quoted_printable(text)
            out.append(encode_lines(rest + "\n"))
        return text, b"".join(out)


def _line(group: Group, holes: Sequence[str]) -> bytes:
    """The group's lines: the pieces quoted and joined, cut at 76 characters; from the text
    when a hole brings a line break."""
    if group.quoted is not None:
        quoted: list[bytes] = []
        for item in group.quoted:
            if isinstance(item, int):
                hole = holes[item]
                if "\n" in hole or "\r" in hole:
                    break
                quoted.append(qp_quote(hole.encode("utf-8")))
            else:
                quoted.append(item)
        else:
            return qp_wrap(b"".join(quoted))
    return encode_lines(_text(group.texts, holes))
