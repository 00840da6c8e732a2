"""Cleaning what people typed: addresses (syntax, IDNA, dedupe key) and names."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.core.addresses import clean_address, clean_name, split_full_name

# --- addresses ----------------------------------------------------------------------------
from mailer.core.errors import AddressError


@pytest.mark.parametrize(
    "raw",
    [
        "anne@exemple.fr",
        "  anne@exemple.fr  ",
        "\tanne@exemple.fr\u00a0",
        "\u00a0\u200banne@exemple.fr\ufeff\u202f",
        "mailto:anne@exemple.fr",
        "MAILTO: anne@exemple.fr",
        "<anne@exemple.fr>",
        "<mailto:anne@exemple.fr>",
    ],
)
def test_address_is_trimmed_of_spaces_no_break_spaces_and_mailto(raw: str) -> None:
    address, notes = clean_address(raw)

    assert address.email == "anne@exemple.fr"
    assert address.address == "anne@exemple.fr"
    assert address.key == "anne@exemple.fr"
    assert not address.smtputf8
    assert notes == []


@pytest.mark.parametrize(
    "raw",
    [
        "Anne Dupont <anne@exemple.fr>",
        '"Dupont, Anne" <anne@exemple.fr>',
        "Dupont, Anne <anne@exemple.fr>",
        "anne@exemple.fr <anne@exemple.fr>",  # what Outlook copies
        "ANNE@exemple.fr <anne@exemple.fr>",
    ],
)
def test_display_name_form_keeps_the_address_with_a_warning(raw: str) -> None:
    address, notes = clean_address(raw)

    assert address.email == "anne@exemple.fr"
    assert notes == ["display name around anne@exemple.fr ignored"]


@pytest.mark.parametrize(
    "raw",
    [
        "anne@exemple.fr, bob@exemple.fr",
        "anne@exemple.fr;bob@exemple.fr",
        "anne@exemple.fr bob@exemple.fr",
        "anne@exemple.fr\nbob@exemple.fr",
        "Anne <anne@exemple.fr>, Bob <bob@exemple.fr>",
        "Anne <anne@exemple.fr> Bob <bob@exemple.fr>",
        "bob@exemple.fr <anne@exemple.fr>",
    ],
)
def test_several_addresses_in_one_cell_are_rejected(raw: str) -> None:
    with pytest.raises(AddressError, match=r"^several addresses in one cell$"):
        clean_address(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "missing address"),
        ("  \u00a0 ", "missing address"),
        ("mailto:", "missing address"),
        ("anne", "invalid address: An email address must have an @-sign."),
        ("anne@exemple", "invalid address: The part after the @-sign is not valid. It should"),
        ("anne@@exemple.fr", "invalid address: "),
        ("an ne@exemple.fr", "invalid address: "),
        ("anne@exemple.fr.", "invalid address: "),
        ("anne\x00@exemple.fr", "invalid address: "),
        ('=HYPERLINK("mailto:a@x.fr")', "invalid address: "),
        ("Anne <>", "invalid address: "),
        ("h\ufffdl\ufffdne@exemple.fr", "invalid address: it holds \ufffd where bytes could not"),
    ],
)
def test_invalid_address_is_rejected_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(AddressError) as raised:
        clean_address(raw)
    assert str(raised.value).startswith(reason)


def test_idn_domain_gets_an_a_label_for_sending_and_keeps_its_spelling_for_display() -> None:
    address, _ = clean_address("User@Bücher.DE")

    assert address.email == "User@Bücher.DE"
    assert address.address == "User@xn--bcher-kva.de"
    assert address.key == "user@xn--bcher-kva.de"
    assert not address.smtputf8


def test_a_label_and_u_label_spellings_share_one_key() -> None:
    assert clean_address("user@bücher.de")[0].key == clean_address("USER@xn--bcher-kva.de")[0].key


def test_non_ascii_local_part_is_accepted_and_flagged_smtputf8() -> None:
    address, _ = clean_address("José@exemple.fr")

    assert address.email == "José@exemple.fr"
    assert address.address == "José@exemple.fr"
    assert address.key == "josé@exemple.fr"
    assert address.smtputf8


def test_decomposed_accents_are_composed_so_both_spellings_share_one_key() -> None:
    composed, _ = clean_address("josé@exemple.fr")
    decomposed, _ = clean_address("jose\u0301@exemple.fr")

    assert decomposed.email == "josé@exemple.fr"
    assert decomposed.key == composed.key


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hélène", "Hélène"),
        ("  Jean-Noël  ", "Jean-Noël"),
        ("\u00a0Zoë\u00a0", "Zoë"),
        ("Marie   Claire", "Marie Claire"),
        ("Marie\u00a0Claire", "Marie Claire"),
        ("\u200bŒdipe\ufeff", "Œdipe"),
        ("Œd\u200bipe\u2060", "Œdipe"),
        ("", None),
        ("   ", None),
    ],
)
def test_name_is_trimmed_without_a_warning(raw: str, expected: str | None) -> None:
    assert clean_name(raw) == (expected, False)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Grace\rHopper", "Grace Hopper"),
        ("Grace\r\nHopper", "Grace Hopper"),
        ("Grace\nHopper", "Grace Hopper"),
        ("Grace\tHopper", "Grace Hopper"),
        ("Grace\u2028Hopper", "Grace Hopper"),
        ("Ann\x00e", "Anne"),
        ("Ann\x1be", "Anne"),
        ("\u202eevE", "evE"),
        ("Du\u202dpont\u202c", "Dupont"),
        ("Bob\u2066\u2069", "Bob"),
        ("\u200fRTL\u200e", "RTL"),
        ("Ali\u061c", "Ali"),
        ("\x85Zoë", "Zoë"),
        ("\x00\r\n", None),
    ],
)
def test_control_and_bidi_characters_are_removed_from_names_with_a_warning(
    raw: str, expected: str | None
) -> None:
    assert clean_name(raw) == (expected, True)


def test_zero_width_joiners_inside_a_name_are_kept() -> None:
    # Needed by some scripts (Persian, Indic) and emoji sequences.
    assert clean_name("می\u200cخواهم") == ("می\u200cخواهم", False)


def test_name_is_cut_to_its_column_width_without_trailing_space() -> None:
    assert clean_name("É" * 250) == ("É" * 200, False)
    assert clean_name("a" * 49 + " b", limit=50) == ("a" * 49, False)


@pytest.mark.parametrize(
    ("full", "expected"),
    [
        ("Hélène Dupont", ("Hélène", "Dupont")),
        ("DUPONT Hélène", ("Hélène", "DUPONT")),
        ("Hélène DUPONT", ("Hélène", "DUPONT")),
        ("DE LA FONTAINE Jean", ("Jean", "DE LA FONTAINE")),
        ("Jean-Pierre Le Goff", ("Jean-Pierre", "Le Goff")),
        ("J. R. R. Tolkien", ("J.", "R. R. Tolkien")),
        ("Zoë", ("Zoë", None)),
        ("", (None, None)),
    ],
)
def test_full_name_is_split_into_first_and_last(
    full: str, expected: tuple[str | None, str | None]
) -> None:
    assert split_full_name(full) == expected


@pytest.mark.parametrize(
    ("full", "expected"),
    [
        ("Durand, Michel", ("Michel", "Durand")),
        ("DURAND, Michel", ("Michel", "DURAND")),
        ("Le Goff,Anne-Marie", ("Anne-Marie", "Le Goff")),
        ("de La Fontaine , Jean", ("Jean", "de La Fontaine")),
        ("Durand, Michel, Jr.", ("Michel Jr.", "Durand")),
        ("Durand,", (None, "Durand")),
        (", Michel", ("Michel", None)),
        (" , ", (None, None)),
    ],
)
def test_full_name_with_a_comma_is_family_name_first_and_keeps_no_comma(
    full: str, expected: tuple[str | None, str | None]
) -> None:
    # `Durand, Michel` was split as (`Durand,`, `Michel`): greeted "Bonjour Durand,,".
    assert split_full_name(full) == expected


def test_lone_surrogates_are_removed_from_names_with_a_warning() -> None:
    # Only a JSON escape (`"\ud800"`) makes one; no database driver can encode it.
    assert clean_name("Zo\ud800ë\udfff") == ("Zoë", True)


def test_name_without_a_limit_is_not_cut() -> None:
    assert clean_name("É" * 250, None) == ("É" * 250, False)


# --- the fast path of `validate` gives exactly email-validator's answer --------------------

_DOMAINS = [
    "exemple.fr",
    "EXEMPLE.FR",
    "bücher.de",
    "xn--bcher-kva.de",
    "société.fr",
    "a.bc",
    "sub.domain.co.uk",
    "exemple.fr.",
    "-bad.fr",
    "bad_.fr",
    "ex..fr",
    "123.456",
    "localhost",
    "exemple",
    "日本.jp",
    "ﬁ.fr",
    "e\u0301cole.fr",
    "x" * 63 + ".fr",
    "x" * 64 + ".fr",
    ".".join(["abcdefghi"] * 25) + ".fr",
    "exemple.invalid",
    "exemple.test",
]
_LOCAL_ALPHABET = st.sampled_from(
    [
        *"abcXYZ019.-_+!#$%&'*/=?^`{|}~",
        "é",
        "ü",
        "ß",
        "日",
        "e\u0301",
        "\u00a0",
        " ",
        '"',
        "\u200b",
        "@",
        "(",
        "..",
    ]
)


@st.composite
def _addresses(draw: st.DrawFn) -> str:
    local = "".join(draw(st.lists(_LOCAL_ALPHABET, min_size=0, max_size=70)))
    if draw(st.booleans()):
        local = draw(st.sampled_from(["postmaster", "Abuse", "info", "x" * 64, "x" * 65]))
    return f"{local}@{draw(st.sampled_from(_DOMAINS))}"


def _reference(text: str) -> tuple[str, str, bool] | str:
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(
            text, check_deliverability=False, allow_smtputf8=True, allow_display_name=False
        )
    except EmailNotValidError as exc:
        return f"invalid address: {exc}"
    return result.local_part, result.ascii_domain, bool(result.smtputf8)


def _fast(text: str) -> tuple[str, str, bool] | str:
    from mailer.core.addresses import validate
    from mailer.core.errors import AddressError

    try:
        return validate(text)
    except AddressError as exc:
        return str(exc)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(_addresses(), st.emails(), st.text(max_size=80)))
def test_fast_validation_answers_exactly_as_email_validator(text: str) -> None:
    assert _fast(text) == _reference(text)
