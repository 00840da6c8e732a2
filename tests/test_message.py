"""Every rendered message parsed back with the standard library: headers, parts, encodings.

The bytes checked here are what `MessageFactory.make` produces: the fast composition, which
tests/test_compose.py proves identical to the EmailMessage construction.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser, Parser
from email.utils import parseaddr
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from mailer.core.addresses import clean_address
from mailer.core.config import Settings
from mailer.core.people import Recipient
from mailer.core.tokens import verify_token
from mailer.messages.campaign import load_campaign
from mailer.messages.factory import MessageFactory
from tests.conftest import REPO_TEMPLATES, write_campaign

SECRET = b"s" * 32
DATE = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
GOLDEN = Path(__file__).parent / "golden" / "closure-notice.eml"
FACTORY = MessageFactory(
    load_campaign(Settings(templates_dir=REPO_TEMPLATES), "closure-notice"), SECRET, "c0ffee0d"
)


def recipient(email: str, first: str | None = "Hélène", last: str | None = "Dupont",
              civility: str | None = "Mme", id_: int = 42) -> Recipient:
    address, _ = clean_address(email)
    return Recipient(id=id_, email=address.email, address=address.address, key=address.key,
                     smtputf8=address.smtputf8, first_name=first, last_name=last,
                     civility=civility)


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def strict(data: bytes) -> EmailMessage:
    """policy.strict raises on any defect the parser finds."""
    message = BytesParser(policy=policy.strict).parsebytes(data)
    assert isinstance(message, EmailMessage)
    for part in message.walk():
        assert not part.defects, part.defects
    return message


def lf(text: str) -> str:
    """Line endings as rendered: the wire has CRLF, and a lone CR in a value is a line end."""
    return re.sub(r"\r\n?", "\n", text)


def rfc2047(data: bytes, name: str) -> str:
    """A header decoded as RFC 2047 says (spaces between adjacent encoded words dropped)."""
    raw = BytesParser(policy=policy.compat32).parsebytes(data, headersonly=True)[name]
    return str(make_header(decode_header(" ".join(str(raw).split()))))


HELENE = recipient("helene.dupont@exemple.fr")


# --- the closure notice, header by header ------------------------------------------------


def test_every_header_of_the_closure_notice() -> None:
    outgoing = FACTORY.make(HELENE, date=DATE)
    message = strict(outgoing.data)
    assert str(message["From"]) == "Cime <contact@cime.example.org>"
    assert message["To"].addresses[0].display_name == "Hélène Dupont"
    assert message["To"].addresses[0].addr_spec == "helene.dupont@exemple.fr"
    assert len(message["To"].addresses) == 1
    assert message["Reply-To"].addresses[0].display_name == "Martine Buron, présidente du Cime"
    assert message["Subject"] == outgoing.parts.subject
    assert message["Date"].datetime == DATE
    assert message["Message-ID"] == "<c0ffee0d.42@cime.example.org>"
    assert message["MIME-Version"] == "1.0"
    assert message["List-Id"] == "Lettre d’information du Cime <lettre.cime.example.org>"
    token = outgoing.links.token
    assert verify_token(SECRET, token, HELENE.id, HELENE.key)
    assert str(message["List-Unsubscribe"]).strip() == (
        f"<https://cime.example.org/desabonnement/{token}>, "
        "<mailto:desabonnement@cime.example.org?subject=unsubscribe>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The raw address never appears in the unsubscribe link: only the token.
    assert "helene" not in str(message["List-Unsubscribe"])


def test_the_parts_are_alternative_text_then_html_in_utf8() -> None:
    outgoing = FACTORY.make(HELENE, date=DATE)
    message = strict(outgoing.data)
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    for part in (text, html):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert lf(text.get_content()) == outgoing.parts.text
    assert lf(html.get_content()) == outgoing.parts.html
    link = outgoing.links.url
    assert link is not None
    assert link in text.get_content()
    assert f'href="{link}"' in html.get_content()


def test_lines_stay_within_the_limits_and_end_in_crlf() -> None:
    data = FACTORY.make(HELENE, date=DATE).data
    assert data.endswith(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 76
    assert data.isascii()


def test_the_message_id_is_stable_for_a_delivery() -> None:
    first = parse(FACTORY.make(HELENE, date=DATE).data)["Message-ID"]
    again = parse(FACTORY.make(HELENE, date=datetime(2026, 11, 27, tzinfo=UTC)).data)
    assert again["Message-ID"] == first
    given_id = parse(FACTORY.make(HELENE, date=DATE, message_id="<x.1@cime.example.org>").data)
    assert given_id["Message-ID"] == "<x.1@cime.example.org>"
    other = parse(FACTORY.make(recipient("a@exemple.fr", id_=43), date=DATE).data)
    assert other["Message-ID"] != first


def test_the_golden_closure_notice() -> None:
    """The whole message, byte for byte. Regenerate with MAILER_UPDATE_GOLDEN=1 after a
    deliberate change of the templates or the construction, and read the diff."""
    data = FACTORY.make(HELENE, date=DATE).data
    if os.environ.get("MAILER_UPDATE_GOLDEN"):
        GOLDEN.write_bytes(data)
    assert data == GOLDEN.read_bytes()
    strict(data)


# --- French text and names round trip -----------------------------------------------------

FRENCH = "éèêëàâçœæÉÈÀÇŒùûîïôÿ’«»\u00a0\u202f…€😀"
french_text = st.text(
    alphabet=st.sampled_from(list("abcdefgh ABC-'") + list(FRENCH)), min_size=1, max_size=120
).map(lambda s: " ".join(s.split())).filter(bool)


def _subject_campaign(tmp_path: Path) -> MessageFactory:
    write_campaign(tmp_path, "s", {
        "subject.txt": "{{ subscriber.attributes.subject }}\n",
        "body.txt": "{{ subscriber.attributes.body }}\n",
        "body.html": "<p>{{ subscriber.attributes.body }}</p>\n",
    })
    return MessageFactory(load_campaign(Settings(templates_dir=tmp_path), "s"), SECRET, "n")


@examples(max_examples=200, deadline=None)
@given(subject=french_text, body=st.text(max_size=300))
def test_french_subjects_and_bodies_decode_to_exactly_what_was_rendered(
    tmp_path_factory: pytest.TempPathFactory, subject: str, body: str
) -> None:
    factory = _subject_campaign(tmp_path_factory.mktemp("s"))
    base = recipient("a@exemple.fr")
    person = Recipient(**{**base.__dict__, "attributes": {"subject": subject, "body": body}})
    outgoing = factory.make(person, date=DATE)
    message = parse(outgoing.data)
    assert message["Subject"] == outgoing.parts.subject == subject
    text, html = message.iter_parts()
    assert lf(text.get_content()) == lf(outgoing.parts.text)
    assert lf(html.get_content()) == lf(outgoing.parts.html or "")


@pytest.mark.parametrize(
    ("first", "last", "shown"),
    [
        ("Hélène", "Dupont", "Hélène Dupont"),
        ("François", "Lefèvre", "François Lefèvre"),
        ("Zoë", "Œuvray", "Zoë Œuvray"),
        ("Anaïs", "N’Diaye", "Anaïs N’Diaye"),
        ("J.-P.", "Lefèvre", "J.-P. Lefèvre"),
        ("Émilie\u00a0Anne", "Le Gall", "Émilie Anne Le Gall"),
        ("😀", "Smiley", "😀 Smiley"),
        ("Bartholomé-Marie-Joséphine-Hortense", "de La Tour d’Auvergne-Lauraguais",
         "Bartholomé-Marie-Joséphine-Hortense de La Tour d’Auvergne-Lauraguais"),
        # What gives a display name structure is left out: it could only make it more
        # than a name.
        ("Jean-François", "Dupont, dit « le Grand »", "Jean-François Dupont dit « le Grand »"),
        ("Marie", 'Dupont "la Grande"', "Marie Dupont la Grande"),
    ],
)
def test_names_decode_to_exactly_the_original(first: str, last: str, shown: str) -> None:
    person = recipient("x@exemple.fr", first=first, last=last)
    assert person.display_name == shown
    data = FACTORY.make(person, date=DATE).data
    assert parseaddr(rfc2047(data, "To")) == (shown, "x@exemple.fr")
    parsed = parse(data)["To"].addresses[0]
    assert parsed.addr_spec == "x@exemple.fr"
    # policy.default keeps the folding space between two adjacent encoded words of a display
    # name (RFC 2047 6.2 says to drop it); a name that fits in one encoded word is exact.
    if len(shown) < 24:
        assert parsed.display_name == shown


@examples(max_examples=300, deadline=None)
@given(first=french_text, last=st.one_of(st.none(), french_text))
def test_any_french_name_round_trips_through_the_to_header(first: str, last: str | None) -> None:
    person = recipient("x@exemple.fr", first=first, last=last)
    data = FACTORY.make(person, date=DATE).data
    to = parse(data)["To"]
    assert len(to.addresses) == 1
    assert to.addresses[0].addr_spec == "x@exemple.fr"
    name, address = parseaddr(rfc2047(data, "To"))
    assert address == "x@exemple.fr"
    raw = BytesParser(policy=policy.compat32).parsebytes(data, headersonly=True)["To"]
    if str(raw).count("=?") <= 1 or sys.version_info >= (3, 12, 5):
        assert name == person.display_name
    else:
        # A name too long for one encoded word is split by the library's folder, which
        # before Python 3.12.5 can drop the space that falls on the split (CPython
        # gh-92081). mailer writes what the library writes, so that is all that may differ.
        assert name.replace(" ", "") == person.display_name.replace(" ", "")
        splits = str(raw).count("=?") - 1  # at most one space lost at each split
        assert len(name) >= len(person.display_name) - splits


# --- IDN, SMTPUTF8 ---------------------------------------------------------------------------


def test_an_idn_domain_is_written_as_an_a_label_and_never_encoded_inside_brackets() -> None:
    person = recipient("jürgen@bücher.de".replace("ü", "u", 1), first="Jürgen", last="Müller")
    outgoing = FACTORY.make(person, date=DATE)
    assert not outgoing.smtputf8
    header = rfc2047(outgoing.data, "To")
    assert header == "Jürgen Müller <jurgen@xn--bcher-kva.de>"
    raw_to = re.search(rb"^To:.*?\r\n(?! )", outgoing.data, re.M | re.S)
    assert raw_to is not None
    assert b"<jurgen@xn--bcher-kva.de>" in raw_to.group()
    assert not re.search(rb"<[^>]*=\?", raw_to.group())


def test_a_non_ascii_local_part_makes_an_smtputf8_message_and_says_so() -> None:
    person = recipient("josé@exemple.fr", first="José", last="García")
    outgoing = FACTORY.make(person, date=DATE)
    assert outgoing.smtputf8
    assert "José García <josé@exemple.fr>".encode() in outgoing.data
    assert b"=?utf-8?" not in outgoing.data.split(b"\r\n\r\n")[0].split(b"\r\nTo:")[1][:80]
    # RFC 6532: the header bytes are UTF-8 (BytesParser would read them as ASCII).
    message = Parser(policy=policy.SMTPUTF8).parsestr(outgoing.data.decode("utf-8"))
    assert message["To"].addresses[0].addr_spec == "josé@exemple.fr"
    assert message["Subject"] == outgoing.parts.subject


# --- header injection ----------------------------------------------------------------------

INJECTIONS = [
    "Eve\r\nBcc: victim@example.com",
    "Eve\nTo: victim@example.com",
    "Eve\rCc: victim@example.com",
    "Eve\u2028Bcc: victim@example.com",
    "Eve\u0085Bcc: victim@example.com",
    "=?utf-8?q?Eve=0D=0ABcc:_victim@example.com?=",
    "=?utf-8?b?RXZlDQpCY2M6IHZpY3RpbUBleGFtcGxlLmNvbQ==?=",
    "Eve <victim@example.com>, Mallory <mallory@example.com>",
    'Eve" <victim@example.com>',
]


@pytest.mark.parametrize("hostile", INJECTIONS)
def test_no_subscriber_field_can_create_a_header_or_a_recipient(
    tmp_path: Path, hostile: str
) -> None:
    write_campaign(tmp_path, "c", {
        "subject.txt": "Pour {{ subscriber.first_name }} {{ subscriber.attributes.x }}\n",
        "body.txt": "{{ subscriber.first_name }}\n",
    })
    factory = MessageFactory(load_campaign(Settings(templates_dir=tmp_path), "c"), SECRET, "n")
    base = recipient("eve@exemple.fr", first=hostile, last=hostile, civility=hostile)
    person = Recipient(**{**base.__dict__, "attributes": {"x": hostile}})
    data = factory.make(person, date=DATE).data
    message = strict(data)
    assert [name.lower() for name in message] == [
        "from", "to", "subject", "date", "message-id", "content-type",
        "content-transfer-encoding", "mime-version",
    ]
    assert [a.addr_spec for a in message["To"].addresses] == ["eve@exemple.fr"]
    head = data.split(b"\r\n\r\n")[0]
    assert not re.search(rb"\r\n(Bcc|Cc)\s*:", head, re.I)
    assert head.count(b"\r\nTo:") == 1
    # Read as RFC 2047 says, too: still one recipient, and a subject on one line.
    assert parseaddr(rfc2047(data, "To"))[1] == "eve@exemple.fr"
    assert "\n" not in rfc2047(data, "Subject")
    assert "\r" not in rfc2047(data, "Subject")


def test_an_encoded_word_that_injects_a_header_through_the_library_does_not_through_mailer(
    tmp_path: Path,
) -> None:
    """Python's email package before 3.11.10 decodes an encoded word found in a value and
    writes its CR LF out as a header break (CVE-2024-6923): mailer must not depend on that."""
    hostile = "=?utf-8?q?Eve=0D=0ABcc:_victim@example.com?="
    plain = EmailMessage(policy=policy.SMTP)
    plain["Subject"] = f"Pour {hostile}"
    library_injects = b"\r\nBcc: victim@example.com" in plain.as_bytes()
    write_campaign(tmp_path, "c", {"subject.txt": "Pour {{ subscriber.first_name }}\n",
                                   "body.txt": "x\n"})
    factory = MessageFactory(load_campaign(Settings(templates_dir=tmp_path), "c"), SECRET, "n")
    data = factory.make(recipient("eve@exemple.fr", first=hostile, last=None), date=DATE).data
    assert b"\r\nBcc:" not in data, f"library alone injects: {library_injects}"
    assert parse(data)["Subject"] == "Pour = ?utf-8?q?Eve=0D=0ABcc:_victim@example.com?="


def test_the_composer_refuses_a_message_whose_headers_were_tampered_with() -> None:
    outgoing = FACTORY.make(HELENE, date=DATE)
    FACTORY.composer.verify(outgoing.data)
    forged = outgoing.data.replace(b"\r\nDate:", b"\r\nBcc: v@example.com\r\nDate:", 1)
    with pytest.raises(ValueError, match="unexpected: Bcc"):
        FACTORY.composer.verify(forged)


def test_a_header_breaking_address_is_a_clear_error_not_a_header() -> None:
    from mailer.core.errors import RecipientError

    person = Recipient(id=1, email="x@y.fr\r\nBcc: v@z.fr", address="x@y.fr\r\nBcc: v@z.fr")
    with pytest.raises(RecipientError, match="cannot be put in a header"):
        FACTORY.make(person, date=DATE)


# --- List-Unsubscribe ------------------------------------------------------------------------


def test_a_long_unsubscribe_url_stays_whole_instead_of_being_encoded(tmp_path: Path) -> None:
    url = "https://www.association-exemple.fr/lettre-d-information/desabonnement/{token}"
    write_campaign(tmp_path, "c", {
        "campaign.toml": f'from = "A <a@asso.fr>"\n[unsubscribe]\nurl = "{url}"\n',
        "subject.txt": "S\n", "body.txt": "{{ unsubscribe_url }}\n",
    })
    factory = MessageFactory(load_campaign(Settings(templates_dir=tmp_path), "c"), SECRET, "n")
    outgoing = factory.make(recipient("a@exemple.fr"), date=DATE)
    head = outgoing.data.split(b"\r\n\r\n")[0]
    line = next(x for x in head.split(b"\r\n") if x.startswith(b"List-Unsubscribe:"))
    assert b"=?" not in line
    assert 76 < len(line) <= 998
    assert str(parse(outgoing.data)["List-Unsubscribe"]).strip() == f"<{outgoing.links.url}>"


def test_no_unsubscribe_configured_means_no_list_unsubscribe(tmp_path: Path) -> None:
    write_campaign(tmp_path, "c", {"subject.txt": "S\n", "body.txt": "x\n"})
    factory = MessageFactory(load_campaign(Settings(templates_dir=tmp_path), "c"), SECRET, "n")
    message = strict(factory.make(recipient("a@exemple.fr"), date=DATE).data)
    assert message["List-Unsubscribe"] is None
    assert message["List-Unsubscribe-Post"] is None
    assert message.get_content_type() == "text/plain"  # no body.html: a single part


def test_mailto_only_has_no_one_click_post(tmp_path: Path) -> None:
    write_campaign(tmp_path, "c", {
        "campaign.toml": 'from = "A <a@asso.fr>"\n[unsubscribe]\nmailto = "stop@asso.fr"\n',
        "subject.txt": "S\n", "body.txt": "x\n",
    })
    factory = MessageFactory(load_campaign(Settings(templates_dir=tmp_path), "c"), SECRET, "n")
    message = strict(factory.make(recipient("a@exemple.fr"), date=DATE).data)
    assert message["List-Unsubscribe"] == "<mailto:stop@asso.fr?subject=unsubscribe>"
    assert message["List-Unsubscribe-Post"] is None
