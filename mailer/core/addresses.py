"""Cleaning what people typed: email addresses (validated, IDNA) and names (no control chars).

Pure functions, no I/O: email-validator checks syntax only (no DNS), domains become IDNA
A-labels for the wire while the address as written is kept for display.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email
from email_validator import syntax as _syntax
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, EMAIL_MAX_LENGTH

from mailer.core.errors import AddressError, InputError

# Invisible characters that trimming must also remove (str.strip() already handles
# no-break spaces, which are Unicode white space).
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
# Bidirectional overrides and isolates: they can disguise a name ("Trojan Source").
_BIDI = dict.fromkeys(
    map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
)
_JOINERS = "\u200c\u200d"  # needed inside some scripts and emoji
_SPACES = re.compile(r"\s+")
# `Dave Leroy <dave@example.com>`: one display name, one address in angle brackets.
_ANGLE = re.compile(r"(?P<name>[^<>]*)<(?P<address>[^<>]*)>")
# White space that is also a control: a tab, CR, LF or line separator typed into a name.
_CONTROL_SPACE = frozenset({"Cc", "Zl", "Zp"})
NAME_MAX = 200  # the subscribers.first_name / last_name columns


# A plain `local@domain`: one @-sign, no quotes, brackets, angle brackets or white space.
# Only such an address takes the fast path below; anything else goes to validate_email.
_PLAIN = re.compile(r"[^@\s\"\[\]<>()\\]+@[^@\s\"\[\]<>()\\]+")


@dataclass(frozen=True)
class Address:
    email: str  # as written (trimmed, NFC): for display
    key: str  # dedupe key: case-folded local part @ IDNA domain
    address: str  # for the SMTP envelope and To: local part @ A-label domain
    smtputf8: bool  # the local part is not ASCII: the relay must offer SMTPUTF8


def _strip_mailto(text: str) -> str:
    return text[7:].strip() if text[:7].lower() == "mailto:" else text


def clean_address(raw: str) -> tuple[Address, list[str]]:
    """Validate one cell; return the address and any warnings, or raise AddressError."""
    warnings: list[str] = []
    text = _strip_mailto(unicodedata.normalize("NFC", raw).strip().strip(_INVISIBLE).strip())
    if not text:
        raise AddressError("missing address")
    angle = _ANGLE.fullmatch(text)
    if angle:
        inner = _strip_mailto(angle["address"].strip())
        display = angle["name"].strip().strip("\"'").strip()
        # `alice@example.com <alice@example.com>` (Outlook) is one address; `a@x <b@y>` is two.
        if "@" in display and display.casefold() != inner.casefold():
            raise AddressError("several addresses in one cell")
        if display:
            warnings.append(f"display name around {inner} ignored")
        text = inner
    if text.count("@") > 1 and re.search(r"[,;\s<>]", text):
        raise AddressError("several addresses in one cell")
    if "\ufffd" in text:  # email-validator would take it: the address would never arrive
        raise AddressError(
            "invalid address: it holds \ufffd where bytes could not be decoded (try --encoding)"
        )
    local, domain, smtputf8 = validate(text)
    domain = domain.lower()
    return (
        Address(
            email=text,
            key=f"{local.casefold()}@{domain}",
            address=f"{local}@{domain}",
            smtputf8=smtputf8,
        ),
        warnings,
    )


def address_key(email: str) -> str:
    """The dedupe key of an address someone gave (`mailer subscribers forget EMAIL`);
    InputError naming it if it is not one."""
    try:
        address, _ = clean_address(email)
    except AddressError as exc:
        raise InputError(f"{email!r}: {exc}") from exc
    return address.key


def validate(text: str) -> tuple[str, str, bool]:
    """(normalised local part, IDNA ASCII domain, needs SMTPUTF8) as email-validator says.

    The same answer as `validate_email(text, check_deliverability=False)`, faster: a list
    has thousands of addresses on a few dozen domains, and checking a domain (IDNA, UTS-46)
    is most of email-validator's time. A plain address is checked with the library's own
    steps — local part, then the domain, remembered per domain — and anything else, or any
    doubt, goes through `validate_email` itself, which also words every refusal.
    A test compares both on generated addresses (tests/test_addresses.py).
    """
    fast = _validate_plain(text) if _PLAIN.fullmatch(text) else None
    if fast is not None:
        return fast
    try:
        result = validate_email(
            text, check_deliverability=False, allow_smtputf8=True, allow_display_name=False
        )
    except EmailNotValidError as exc:
        raise AddressError(f"invalid address: {exc}") from None
    return result.local_part, result.ascii_domain, bool(result.smtputf8)


@lru_cache(maxsize=4096)
def _domain(domain_part: str) -> tuple[str, str] | None:
    """(Unicode domain, ASCII domain) of a valid domain part, else None."""
    try:
        info = _syntax.validate_email_domain_name(domain_part)
    except EmailNotValidError:
        return None
    return info["domain"], info["ascii_domain"]


def _validate_plain(text: str) -> tuple[str, str, bool] | None:
    """The fast path of `validate`, or None to let validate_email decide."""
    local_part, domain_part = text.rsplit("@", 1)
    domain = _domain(domain_part)
    if domain is None or not unicodedata.is_normalized("NFC", local_part):
        return None
    try:
        info = _syntax.validate_email_local_part(local_part, allow_smtputf8=True)
    except EmailNotValidError:
        return None
    local, ascii_local = info["local_part"], info["ascii_local_part"]
    if ascii_local is not None and ascii_local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        return None  # validate_email lower-cases these (postmaster@, abuse@ ...)
    unicode_domain, ascii_domain = domain
    forms = (text, f"{local}@{unicode_domain}", f"{ascii_local or local}@{ascii_domain}")
    if any(len(form.encode("utf-8")) > EMAIL_MAX_LENGTH for form in forms):
        return None
    return local, ascii_domain, bool(info["smtputf8"])


def clean_name(raw: str, limit: int | None = NAME_MAX) -> tuple[str | None, bool]:
    """Trim a name and drop control and bidi characters; say whether any were removed.

    A line break or tab becomes a space (`Grace<CR>Hopper` -> `Grace Hopper`) but still
    counts as removed, so the row gets its warning; a no-break space is only a space.
    A lone surrogate (only a JSON `\\ud800` escape makes one) is removed too: no database
    can store it. The result is cut to `limit` characters, the width of its column
    (None: not cut; the caller cuts and says so).
    """
    if not raw:
        return None, False
    text = unicodedata.normalize("NFC", raw)
    removed = False
    if not text.isprintable():  # rare: only then look at each character
        kept: list[str] = []
        for char in text:
            category = unicodedata.category(char)
            if char.isspace():
                kept.append(" ")
                removed = removed or category in _CONTROL_SPACE
            elif char in _JOINERS:
                kept.append(char)
            elif char in _INVISIBLE:  # zero-width space, word joiner, BOM: dropped quietly
                continue
            elif ord(char) in _BIDI or category in {"Cc", "Cf", "Cs"}:
                removed = True
            else:
                kept.append(char)
        text = "".join(kept)
    cleaned = _SPACES.sub(" ", text).strip().strip(_INVISIBLE).strip()
    if limit is not None:
        cleaned = cleaned[:limit].rstrip()
    return (cleaned or None), removed


def split_full_name(full: str) -> tuple[str | None, str | None]:
    """(given, family): `Hélène Dupont`, `DUPONT Hélène` and `Dupont, Hélène` all give Hélène.

    A comma is how directories and Outlook write the family name first (`Nom, Prénom`): what
    comes before the first comma is the family name, what follows the given name, and no
    part keeps a comma (`Dupont,` alone is a family name). Without a comma, a French list
    often writes the family name first in capitals: that is the only order this guesses;
    otherwise the first word is the given name and the rest the family name.
    """
    if "," in full:
        family, _, given = full.partition(",")
        return (" ".join(given.replace(",", " ").split()) or None), (
            " ".join(family.split()) or None
        )
    words = full.split()
    if not words:
        return None, None
    if len(words) == 1:
        return words[0], None
    # A family name in capitals has two letters or more: `J.` or `R.` is an initial.
    capitals = [w for w in words if w.isupper() and sum(c.isalpha() for c in w) > 1]
    if capitals and len(capitals) < len(words) and words[0] in capitals:
        last = [w for w in words if w in capitals]
        first = [w for w in words if w not in capitals]
        return " ".join(first), " ".join(last)
    return words[0], " ".join(words[1:])
