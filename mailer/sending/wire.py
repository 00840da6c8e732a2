"""What goes on the wire in one SMTP transaction: the `<address>` of MAIL FROM and RCPT TO,
and the message with CRLF line ends and its leading dots doubled.
"""

from __future__ import annotations

import re

from aiosmtplib.email import parse_address

_LINE_END = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def normalize_line_ends(data: bytes) -> bytes:
    """CRLF line ends throughout, and a final CRLF: the message as the relay counts it."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") == crlf == data.count(b"\r") and data.endswith(b"\r\n"):
        return data  # already so (mailer's own messages): no copy, no regular expression
    body = _LINE_END.sub(b"\r\n", data)
    return body if body.endswith(b"\r\n") else body + b"\r\n"


def stuff_dots(body: bytes) -> bytes:
    """Double the dot that starts a line (RFC 5321 4.5.2), so no line reads as the end."""
    if not body.startswith(b".") and b"\n." not in body:
        return body  # no line starts with a dot (quoted-printable bodies seldom have one)
    return _LEADING_DOT.sub(b"..", body)


# An address that is a plain dot-atom: nothing in it can end the address on a command line,
# so it goes on the wire as it is (aiosmtplib's parse_address would give the same).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


def command_address(address: str) -> str:
    """The `<address>` of MAIL FROM / RCPT TO: aiosmtplib's quote_address, without its
    parse for the common plain address."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return f"<{parse_address(address)}>"


def unsendable(address: str) -> str | None:
    """Why an address cannot go on an SMTP command line, or None."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return None
    if any(ord(char) < 32 or ord(char) == 127 for char in address):
        return "it contains control characters"
    try:
        parse_address(address)
    except ValueError as exc:
        return str(exc)
    return None
