"""Header names to subscriber fields: aliases, --map, --attribute, Mailchimp and listmonk."""

from __future__ import annotations

import pytest

from mailer.core.errors import InputError
from mailer.imports.columns import is_email_header, map_columns, normalise, parse_map_options


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Adresse e-mail", "adresseemail"),
        ("Prénom", "prenom"),
        ("  E-MAIL  ", "email"),
        ("Civilité", "civilite"),
        ("Nom de famille", "nomdefamille"),
        ("first_name", "firstname"),
        ("Straße", "strasse"),
        ("\ufeffEmail", "email"),
    ],
)
def test_normalise_ignores_case_accents_spaces_and_punctuation(name: str, expected: str) -> None:
    assert normalise(name) == expected


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("email", "email"),
        ("E-mail", "email"),
        ("Courriel", "email"),
        ("Adresse e-mail", "email"),
        ("Adresse électronique", "email"),
        ("Adresse mail", "email"),
        ("Mél", "email"),
        ("Email Address", "email"),
        ("E-mail address", "email"),
        ("Prénom", "first_name"),
        ("PRENOM", "first_name"),
        ("First Name", "first_name"),
        ("given name", "first_name"),
        ("Nom", "last_name"),
        ("Last Name", "last_name"),
        ("Nom de famille", "last_name"),
        ("surname", "last_name"),
        ("name", "name"),
        ("Nom complet", "name"),
        ("Full name", "name"),
        ("Civilité", "civility"),
        ("title", "civility"),
        ("Civ.", "civility"),
        ("status", "status"),
        ("Statut", "status"),
    ],
)
def test_header_aliases_map_to_their_field(name: str, field: str) -> None:
    columns = map_columns(["Courriel" if field != "email" else "x", name])

    expected_email = 1 if field == "email" else 0
    assert columns.fields["email"] == expected_email
    assert columns.fields[field] == 1


@pytest.mark.parametrize("name", ["Address", "Adresse", "Téléphone", "Ville", "Notes", "TAGS"])
def test_other_headers_fill_no_field(name: str) -> None:
    assert not is_email_header(name)
    columns = map_columns(["email", name])

    assert columns.fields == {"email": 0}
    assert columns.ignored == [name]


def test_first_column_of_a_kind_wins() -> None:
    columns = map_columns(["Email", "Courriel", "Nom", "Last name"])

    assert columns.fields == {"email": 0, "last_name": 2}
    assert columns.ignored == ["Courriel", "Last name"]


def test_no_email_column_is_an_input_error_naming_the_columns() -> None:
    with pytest.raises(InputError) as raised:
        map_columns(["Nom", "Prénom", ""])

    assert raised.value.message == "no email column found in the header (Nom, Prénom)"
    assert raised.value.hint is not None
    assert "--map" in raised.value.hint


def test_map_option_assigns_fields_and_wins_over_aliases() -> None:
    mapping = parse_map_options(
        ["Contact pro=email", "Qui=Name", "E-mail=ignore", "Nom=first-name"]
    )

    assert mapping == {
        "contactpro": "email",
        "qui": "name",
        "email": "ignore",
        "nom": "first_name",
    }
    columns = map_columns(["E-mail", "Contact pro", "Qui", "NOM"], mapping=mapping)
    assert columns.fields == {"email": 1, "name": 2, "first_name": 3}
    assert columns.ignored == ["E-mail"]


def test_map_option_column_name_may_contain_an_equals_sign() -> None:
    assert parse_map_options(["a=b=email"]) == {"ab": "email"}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("Courriel", "invalid --map 'Courriel'"),
        ("=email", "invalid --map '=email'"),
        ("Courriel=phone", "invalid --map 'Courriel=phone': unknown field 'phone'"),
    ],
)
def test_bad_map_option_is_an_input_error(option: str, message: str) -> None:
    with pytest.raises(InputError) as raised:
        parse_map_options([option])
    assert raised.value.message == message


def test_map_option_naming_a_missing_column_is_an_input_error() -> None:
    with pytest.raises(InputError, match="does not have: 'adresse'"):
        map_columns(["email"], mapping={"adresse": "email"})


def test_attribute_option_keeps_named_columns_under_their_header_name() -> None:
    columns = map_columns(["email", " Ville ", "Téléphone", "CP"], attributes=["ville", "CP"])

    assert columns.attributes == {"Ville": 1, "CP": 3}
    assert columns.ignored == ["Téléphone"]


def test_attribute_star_keeps_every_column_that_fills_no_field() -> None:
    columns = map_columns(["email", "Prénom", "Ville", "", "CP"], attributes=["*"])

    assert columns.fields == {"email": 0, "first_name": 1}
    assert columns.attributes == {"Ville": 2, "CP": 4}
    assert columns.ignored == []


def test_attribute_option_naming_a_missing_column_is_an_input_error() -> None:
    with pytest.raises(InputError, match="--attribute names a column that the file does not have"):
        map_columns(["email"], attributes=["Ville"])


def test_mailchimp_unsubscribed_and_cleaned_columns_are_status_markers() -> None:
    header = ["Email Address", "First Name", "UNSUB_TIME", "UNSUB_REASON", "CLEAN_TIME"]
    columns = map_columns(header)

    assert columns.fields == {"email": 0, "first_name": 1}
    assert (columns.unsubscribed_marker, columns.cleaned_marker) == (2, 4)
    assert columns.ignored == ["UNSUB_REASON"]
    # Even with '*', the markers are not copied into attributes.
    assert map_columns(header, attributes=["*"]).attributes == {"UNSUB_REASON": 3}


def test_listmonk_attributes_column_is_json_only_when_asked_for() -> None:
    header = ["uuid", "email", "name", "attributes", "status", "created_at", "updated_at"]

    plain = map_columns(header)
    kept = map_columns(header, attributes=["attributes"])

    assert plain.fields == {"email": 1, "name": 2, "status": 4}
    assert plain.listmonk_attributes is None
    assert plain.ignored == ["uuid", "attributes", "created_at", "updated_at"]
    assert kept.listmonk_attributes == 3
    assert kept.ignored == ["uuid", "created_at", "updated_at"]
