"""Which CSV column is which: header names matched to subscriber fields.

Names are compared case-insensitively, without accents, spaces or punctuation, against the
usual French and English aliases and the columns of Mailchimp and listmonk exports.
`--map COLUMN=FIELD` settles what the guess cannot.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from mailer.core.errors import InputError

# The fields a column can fill. `ignore` drops a column that the guess would have used.
FIELDS = ("email", "first_name", "last_name", "name", "civility", "status", "ignore")

_ALIASES: dict[str, frozenset[str]] = {
    "email": frozenset(
        {
            "email",
            "mail",
            "emails",
            "emailaddress",
            "emailadresse",
            "adresseemail",
            "adressemail",
            "adresseelectronique",
            "adressemel",
            "courriel",
            "adressecourriel",
            "adressedecourriel",
            "adressedemessagerie",
            "messagerie",
            "mel",
            "email1value",
            "emailaddr",
            "subscriberemail",
            "primaryemail",
            "mailaddress",
        }
    ),
    "first_name": frozenset(
        {
            "prenom",
            "prenoms",
            "firstname",
            "givenname",
            "fname",
            "first",
            "forename",
        }
    ),
    "last_name": frozenset(
        {
            "nom",
            "nomdefamille",
            "nomdusage",
            "lastname",
            "surname",
            "familyname",
            "lname",
            "last",
        }
    ),
    "name": frozenset(
        {
            "name",
            "fullname",
            "nomcomplet",
            "displayname",
            "nomprenom",
            "prenomnom",
            "nometprenom",
            "prenometnom",
            "contact",
            "contactname",
        }
    ),
    "civility": frozenset({"civilite", "civ", "title", "salutation", "titre", "honorific"}),
    "status": frozenset(
        {
            "status",
            "statut",
            "etat",
            "subscriptionstatus",
            "subscriberstatus",
            "memberstatus",
        }
    ),
}
# Columns that say, by being filled, that the person left (Mailchimp's export per audience
# status) or that the address bounced ("cleaned").
MAILCHIMP_UNSUBSCRIBED = "unsubtime"
MAILCHIMP_CLEANED = "cleantime"
LISTMONK_ATTRIBUTES = "attributes"


def normalise(name: str) -> str:
    """`Adresse e-mail` -> `adresseemail`; `Prénom` -> `prenom`."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if c.isalnum()).casefold()


def is_email_header(name: str) -> bool:
    return normalise(name) in _ALIASES["email"]


@dataclass
class ColumnMap:
    """Header positions for each field; `attributes` maps stored attribute names to columns."""

    header: list[str]
    fields: dict[str, int] = field(default_factory=dict)
    attributes: dict[str, int] = field(default_factory=dict)
    listmonk_attributes: int | None = None
    unsubscribed_marker: int | None = None
    cleaned_marker: int | None = None
    headerless: bool = False  # the first line is data: a bare list of addresses

    @property
    def ignored(self) -> list[str]:
        used = set(self.fields.values()) | set(self.attributes.values())
        used |= {
            i
            for i in (self.listmonk_attributes, self.unsubscribed_marker, self.cleaned_marker)
            if i is not None
        }
        return [name for i, name in enumerate(self.header) if i not in used and name]


def parse_map_options(options: list[str]) -> dict[str, str]:
    """`["Adresse=email", ...]` -> {normalised column: field}."""
    result: dict[str, str] = {}
    for option in options:
        column, sep, target = option.rpartition("=")
        target = target.strip().lower().replace("-", "_")
        if not sep or not column.strip():
            raise InputError(f"invalid --map {option!r}", hint="write --map COLUMN=FIELD")
        if target not in FIELDS:
            raise InputError(
                f"invalid --map {option!r}: unknown field {target!r}",
                hint=f"fields: {', '.join(FIELDS)}",
            )
        result[normalise(column)] = target
    return result


def map_columns(
    header: list[str], *, mapping: dict[str, str] | None = None, attributes: list[str] | None = None
) -> ColumnMap:
    """Decide which column fills which field; raise InputError when no email column is found."""
    mapping = mapping or {}
    normalised = [normalise(name) for name in header]
    result = ColumnMap(header=header)

    for wanted in mapping:
        if wanted not in normalised:
            raise InputError(
                f"--map names a column that the file does not have: {wanted!r}",
                hint=f"columns: {', '.join(header)}",
            )
    for index, name in enumerate(normalised):
        target = mapping.get(name)
        if target is None:
            target = next((f for f, names in _ALIASES.items() if name in names), None)
            if target in result.fields:  # first column of a kind wins
                continue
        if target is None or target == "ignore":
            if mapping.get(name) != "ignore":
                if name == MAILCHIMP_UNSUBSCRIBED:
                    result.unsubscribed_marker = index
                elif name == MAILCHIMP_CLEANED:
                    result.cleaned_marker = index
            continue
        result.fields[target] = index

    if attributes:
        wanted_all = "*" in attributes
        wanted_names = {normalise(a) for a in attributes if a != "*"}
        for missing in wanted_names - set(normalised):
            raise InputError(
                f"--attribute names a column that the file does not have: {missing!r}",
                hint=f"columns: {', '.join(header)}",
            )
        used = set(result.fields.values())
        # listmonk's `attributes` column holds JSON: its keys become attributes.
        for index, name in enumerate(normalised):
            if (
                index in used
                or not (wanted_all or name in wanted_names)
                or not header[index].strip()
            ):
                continue
            if name == LISTMONK_ATTRIBUTES:
                result.listmonk_attributes = index
            elif index not in (result.unsubscribed_marker, result.cleaned_marker) or not wanted_all:
                result.attributes[header[index].strip()] = index

    if "email" not in result.fields:
        bare = _headerless(header) if not mapping else None
        if bare is not None:
            return bare
        raise InputError(
            f"no email column found in the header ({', '.join(h for h in header if h) or 'empty'})",
            hint="name it email/courriel, or say which it is: --map 'COLUMN=email'",
        )
    return result


def _headerless(first_row: list[str]) -> ColumnMap | None:
    """A file without a header row, whose first line already holds an address."""
    from mailer.core.addresses import clean_address
    from mailer.core.errors import AddressError

    for index, cell in enumerate(first_row):
        if "@" not in cell:
            continue
        try:
            clean_address(cell)
        except AddressError:
            continue
        names = [f"column {number}" for number in range(1, len(first_row) + 1)]
        return ColumnMap(header=names, fields={"email": index}, headerless=True)
    return None
