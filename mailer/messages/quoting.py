"""Quoted-printable body lines, byte for byte as the email package writes them.

`email.contentmanager` encodes a text part with `quoprimime.body_encode`: each line on its
own, every byte outside its safe set written as =XX (`str.translate` over a 256-entry map),
then the line cut into pieces of at most 76 characters, never inside an =XX, a soft line
break (=) at the end of each piece but the last, white space at the very end quoted. Here
are the same two steps on bytes, the quoting at C speed: `qp_quote` (a regular expression
finds what needs quoting; a short piece is quoted byte by byte, a long one by `re.sub`) and
`qp_wrap`. Quoting never depends on a byte's neighbours, so a line can be quoted a piece at a
time and the pieces joined before the cut (`messages.bodies`). tests/test_render_once.py
compares `qp_encode` with `body_encode` on generated lines and on every position of an =XX,
a blank or an = around the cut.
"""

from __future__ import annotations

import re

from mailer.messages.reference import MAX_LINE

CRLF = b"\r\n"
# What quoted-printable leaves as it is in a body (quoprimime's body map, CR and LF aside).
_UNSAFE = re.compile(
    b"[^" + re.escape(b" !\"#$%&'()*+,-./0123456789:;<>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
                      b"abcdefghijklmnopqrstuvwxyz{|}~\t") + b"]"
)
_BYTES = [bytes([byte]) if _UNSAFE.match(bytes([byte])) is None else b"=%02X" % byte
          for byte in range(256)]
_BLANK = b" \t"
_EQUALS = ord("=")


def qp_encode(line: bytes) -> bytes:
    """One body line (no CR or LF in it), quoted-printable as `set_content(cte=
    "quoted-printable")` writes it: `quoprimime.body_encode(line.decode("latin-1"), 76)`
    with CRLF line ends."""
    return qp_wrap(qp_quote(line))


def qp_quote(data: bytes) -> bytes:
    """Every byte quoted-printable leaves as it is, others as =XX (no line breaks in `data`:
    what is quoted of a piece of a line is that piece of the quoted line)."""
    if not _UNSAFE.search(data):
        return data
    if len(data) <= 96:  # a hole's text: byte by byte costs less than a callback per match
        return b"".join([_BYTES[byte] for byte in data])
    return _UNSAFE.sub(_quote, data)


def qp_wrap(encoded: bytes) -> bytes:
    """A quoted line cut into lines of at most 76 characters, as `body_encode` cuts it."""
    if not encoded:
        return CRLF
    out: list[bytes] = []
    start, last_start = 0, len(encoded) - 1 - MAX_LINE
    while start <= last_start:  # soft line breaks, never inside an =XX
        stop = start + MAX_LINE - 1
        if encoded[stop - 2] == _EQUALS:
            out.append(encoded[start : stop - 1])
            start = stop - 2
        elif encoded[stop - 1] == _EQUALS:
            out.append(encoded[start:stop])
            start = stop - 1
        else:
            out.append(encoded[start:stop] + b"=")
            start = stop
    if encoded[-1] in _BLANK:  # white space at the end of a line is quoted
        room = start - last_start
        if room >= 3:
            end = b"=%02X" % encoded[-1]
        elif room == 2:
            end = encoded[-1:] + b"=" + CRLF
        else:
            end = b"=" + CRLF + b"=%02X" % encoded[-1]
        out.append(encoded[start:-1] + end)
    else:
        out.append(encoded[start:])
    return CRLF.join(out) + CRLF


def _quote(match: re.Match[bytes]) -> bytes:
    return b"=%02X" % match[0][0]


