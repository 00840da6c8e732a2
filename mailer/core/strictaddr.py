"""Address headers from untrusted mail parsed in strict mode (CVE-2023-27043).

Before the fix (CPython 3.11.10, 3.12.6, 3.13), `email.utils.getaddresses` reads a crafted
header such as `alice@example.org)<bob@example.org>` as several addresses, one of which the
sender never wrote. Pythons with the fix have a `strict` mode (the default there, and
`email.utils.supports_strict_parsing` says so); on the others the same validation is done
here, ported from the fixed standard library: unbalanced parentheses, a domain literal left
over, or more addresses than the header has commas make the whole value `('', '')`.
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterator

STRICT_IN_STDLIB = bool(getattr(email.utils, "supports_strict_parsing", False))


def getaddresses(values: list[str]) -> list[tuple[str, str]]:
    """(display name, addr-spec) pairs of `values`; a malformed value gives ('', '')."""
    if STRICT_IN_STDLIB:
        return email.utils.getaddresses(values, strict=True)  # type: ignore[call-arg,unused-ignore]
    checked = [value if _balanced(value) else "('', '')" for value in map(str, values)]
    pairs = [
        ("", "") if "[" in address else (name, address)
        for name, address in email.utils.getaddresses([", ".join(checked)])
    ]
    expected = sum(1 + _strip_quoted(value).count(",") for value in checked)
    return pairs if len(pairs) == expected else [("", "")]


def _escaped(text: str) -> Iterator[tuple[int, str]]:
    escape = False
    pos = 0
    for pos, char in enumerate(text):
        if escape:
            yield pos, "\\" + char
            escape = False
        elif char == "\\":
            escape = True
        else:
            yield pos, char
    if escape:
        yield pos, "\\"


def _strip_quoted(text: str) -> str:
    """`text` without its quoted display names (a comma there separates nothing)."""
    if '"' not in text:
        return text
    start, opened, kept = 0, None, []
    for pos, char in _escaped(text):
        if char != '"':
            continue
        if opened is None:
            opened = pos
        else:
            if start != opened:
                kept.append(text[start:opened])
            start, opened = pos + 1, None
    if start < len(text):
        kept.append(text[start:])
    return "".join(kept)


def _balanced(text: str) -> bool:
    depth = 0
    for _, char in _escaped(_strip_quoted(text)):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0
