"""The fast composition gives exactly the bytes of the EmailMessage construction.

`Composer.compose` is compared with `build_message(...).as_bytes()` on generated subscribers,
subjects, bodies, tokens and campaigns; each shortcut is also checked on its own against the
library function it stands for, and the self-check is shown to catch a wrong shortcut.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from mailer.core.config import Settings
from mailer.core.people import Recipient
from mailer.messages import compose
from mailer.messages.campaign import Campaign, load_campaign
from mailer.messages.compose import Composer, encode_phrase, fold, quoted_printable
from mailer.messages.reference import MAX_LINE, POLICY, Envelope, build_message
from mailer.messages.render import Links, Parts
from tests.conftest import REPO_TEMPLATES, write_campaign

CLOSURE = load_campaign(Settings(templates_dir=REPO_TEMPLATES), "closure-notice")
LETTERS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
FRENCH = [*"éèêëàâçœæÉÈÀÇŒùûîïôÿ’«»", "\u00a0", "😀", "李", "ß"]
ODD = [*"'-.,;:\"()<>@[]\\=?!#$%&*+/^_`{|}~", "=?", "?=", "\t", "\r", "\n", "\x00"]

def _strings(pieces: list[str], min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(pieces), min_size=min_size, max_size=max_size).map("".join)


names = st.one_of(
    st.none(),
    _strings(LETTERS + FRENCH + [" "]),
    _strings(LETTERS + FRENCH + ODD + [" "], max_size=60),
)
local_parts = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,30}[a-z0-9]", fullmatch=True).filter(
    lambda s: ".." not in s
)
domains = st.sampled_from(
    ["exemple.fr", "xn--bcher-kva.de", "a.b.c.example.org", "x" * 50 + ".fr", "orange.fr"]
)
tokens = st.builds(
    lambda n, mac: f"{n:x}.{mac}",
    st.integers(min_value=1, max_value=2**63),
    st.text(alphabet=st.sampled_from([*LETTERS, "_", "-"]), min_size=22, max_size=22),
)
bodies = st.text(max_size=400)
subjects = _strings(LETTERS + FRENCH + ODD + [" "], min_size=1, max_size=150).map(
    lambda s: " ".join(s.split())
).filter(bool)
dates = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


def _campaign(tmp: Path, *, html: bool, url: str | None, mailto: str | None,
              list_id: str | None, reply_to: str | None) -> Campaign:
    toml = 'from = "Associé·e·s du Cime <contact@cime.example.org>"\n'
    if reply_to:
        toml += f'reply_to = "{reply_to}"\n'
    if list_id:
        toml += f'list_id = "{list_id}"\n'
    toml += "[unsubscribe]\n"
    if url:
        toml += f'url = "{url}"\n'
    if mailto:
        toml += f'mailto = "{mailto}"\n'
    files = {"campaign.toml": toml, "subject.txt": "S\n", "body.txt": "T\n"}
    if html:
        files["body.html"] = "<p>H</p>\n"
    write_campaign(tmp, "c", files)
    return load_campaign(Settings(templates_dir=tmp), "c")


def both(composer: Composer, recipient: Recipient, parts: Parts, links: Links,
         envelope: Envelope) -> tuple[bytes, bytes]:
    return (
        composer.compose(recipient, parts, links, envelope),
        build_message(composer.campaign, recipient, parts, links, envelope).as_bytes(),
    )


def test_the_closure_notice_takes_the_fast_path() -> None:
    assert Composer(CLOSURE).fast


@examples(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=names, last=names, local=local_parts, domain=domains, smtputf8=st.booleans(),
       subject=subjects, text=bodies, html=bodies, token=tokens, date=dates,
       message_id=st.sampled_from(["<a.1@cime.example.org>", "<" + "x" * 70 + "@y.fr>",
                                   "<0f3c9a.2a@cime.example.org>"]))
def test_the_closure_notice_is_byte_identical_to_the_emailmessage_construction(
    first: str | None, last: str | None, local: str, domain: str, smtputf8: bool,
    subject: str, text: str, html: str, token: str, date: datetime, message_id: str,
) -> None:
    composer = _closure_composer()
    address = f"{'é' if smtputf8 else ''}{local}@{domain}"
    recipient = Recipient(id=7, email=address, address=address, smtputf8=smtputf8,
                          first_name=first, last_name=last)
    parts = Parts(subject, text, html)
    links = Links.build(CLOSURE, token)
    fast, reference = both(composer, recipient, parts, links, Envelope(message_id, date))
    assert fast == reference


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> list[Composer]:
    """Campaigns with and without HTML, https and/or mailto, Reply-To and List-Id."""
    found = []
    for index, (html, url, mailto, list_id, reply_to) in enumerate([
        (True, "https://cime.example.org/d/{token}", "stop@cime.example.org",
         "Lettre d’information <l.cime.example.org>", "Réponses <r@cime.example.org>"),
        (False, "https://cime.example.org/d/{token}", None, None, None),
        (True, None, "stop@cime.example.org", None, "r@cime.example.org"),
        (False, None, None, "<l.cime.example.org>", None),
        (True, "https://www.association-exemple.fr/lettre-d-information/desabonnement/{token}",
         "desabonnement@association-exemple.fr", None, None),
    ]):
        campaign = _campaign(tmp_path_factory.mktemp(f"v{index}"), html=html, url=url,
                             mailto=mailto, list_id=list_id, reply_to=reply_to)
        composer = Composer(campaign)
        assert composer.fast, campaign
        found.append(composer)
    return found


@examples(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), first=names, local=local_parts, domain=domains, text=bodies,
       subject=subjects, token=tokens, date=dates)
def test_every_campaign_shape_is_byte_identical(
    variants: list[Composer], data: st.DataObject, first: str | None, local: str, domain: str,
    text: str, subject: str, token: str, date: datetime,
) -> None:
    composer = data.draw(st.sampled_from(variants))
    address = f"{local}@{domain}"
    recipient = Recipient(id=3, email=address, address=address, first_name=first)
    html = text if composer.campaign.has_html else None
    links = Links.build(composer.campaign, token)
    fast, reference = both(composer, recipient, Parts(subject, text, html), links,
                           Envelope("<m.3@cime.example.org>", date))
    assert fast == reference


# --- each shortcut against the library function it stands for -------------------------------


@examples(max_examples=500, deadline=None)
@given(text=st.text(max_size=500))
def test_quoted_printable_is_what_set_content_writes(text: str) -> None:
    part = EmailMessage(policy=POLICY)
    part.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    written = part.as_bytes()
    body = written[written.index(b"\r\n\r\n") + 4 :]
    assert quoted_printable(text) == body


name_words = st.lists(
    st.text(alphabet=st.sampled_from([*LETTERS, *FRENCH[:-4], "'", "-", "’", ".", "!", "😀", "李"]),
            min_size=1, max_size=14),
    min_size=1, max_size=5,
)
long_locals = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,60}[a-z0-9]", fullmatch=True).filter(
    lambda s: ".." not in s
)


@examples(max_examples=1500, deadline=None)
@given(words=name_words, local=long_locals, domain=domains)
def test_the_to_header_is_what_the_header_folder_writes(
    words: list[str], local: str, domain: str
) -> None:
    """Every shape: one line, the mailbox moved to a continuation line, a break before
    `<address>`; plain and encoded names; and whatever goes back to the library."""
    address = f"{local}@{domain}"
    recipient = Recipient(id=1, email=address, address=address, first_name=" ".join(words))
    library = fold("To", Address(display_name=recipient.display_name, addr_spec=address))
    assert _closure_composer()._to(recipient) == library


@examples(max_examples=500, deadline=None)
@given(words=name_words, local=local_parts)
def test_the_phrase_encoder_writes_what_the_header_folder_writes(
    words: list[str], local: str
) -> None:
    address = f"{local}@exemple.fr"
    line = f"To: {encode_phrase(words)}<{address}>"
    if len(line) > MAX_LINE or any(c in "".join(words) for c in ".!"):
        return  # other shapes, tested above through the composer
    library = fold("To", Address(display_name=" ".join(words), addr_spec=address))
    assert (line + "\r\n").encode() == library


@examples(max_examples=200, deadline=None)
@given(date=dates, subject=subjects)
def test_remembered_headers_are_the_library_fold(date: datetime, subject: str) -> None:
    composer = _closure_composer()
    assert composer._date(date) == POLICY.fold_binary("Date", POLICY.header_store_parse(
        "Date", date)[1])
    assert composer._subject(subject) == fold("Subject", subject)


def test_tokens_of_every_length_are_put_in_the_learned_header() -> None:
    composer = _closure_composer()
    for digits in range(1, 17):
        token = f"{'a' * digits}.{'Q' * 11}-_{'z' * 9}"
        links = Links.build(CLOSURE, token)
        value = links.header_value()
        assert composer._list_unsubscribe(links) == fold("List-Unsubscribe", value)


# --- the self-check catches a wrong shortcut ------------------------------------------------


def test_a_wrong_shortcut_is_caught_and_the_library_used_instead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compose, "qp_line", lambda line: line + b"\r\n")  # no encoding at all
    composer = Composer(CLOSURE)
    assert not composer.fast
    recipient = Recipient(id=1, email="a@exemple.fr", address="a@exemple.fr",
                          first_name="Hélène")
    links = Links.build(CLOSURE, "1.AbCdEfGhIjKlMnOpQrStUv")
    parts = Parts("Sujet", "Texte accentué\n", "<p>é</p>\n")
    envelope = Envelope("<x.1@cime.example.org>", datetime(2026, 1, 1, tzinfo=UTC))
    fast, reference = both(composer, recipient, parts, links, envelope)
    assert fast == reference


def test_a_wrong_phrase_encoder_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compose, "encode_phrase", lambda words: " ".join(words) + " ")
    assert not Composer(CLOSURE).fast


def test_the_message_is_the_same_whatever_the_cache_holds() -> None:
    composer = _closure_composer()
    recipient = Recipient(id=1, email="a@exemple.fr", address="a@exemple.fr")
    links = Links.build(CLOSURE, "1.AbCdEfGhIjKlMnOpQrStUv")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for second in range(100):  # more distinct dates than the date cache holds
        envelope = Envelope("<x.1@cime.example.org>", start + timedelta(seconds=second))
        parts = Parts(f"Sujet {second}", f"Ligne {second}\n" * 3, None if second % 2 else "<p/>")
        if parts.html is None:
            continue
        assert both(composer, recipient, parts, links, envelope)[0] == both(
            composer, recipient, parts, links, envelope)[1]


_COMPOSER: list[Composer] = []


def _closure_composer() -> Composer:
    if not _COMPOSER:
        _COMPOSER.append(Composer(CLOSURE))
    return _COMPOSER[0]


def test_policy_is_smtp_with_76_columns() -> None:
    assert POLICY.linesep == "\r\n"
    assert POLICY.max_line_length == 76
    assert not POLICY.utf8
    assert policy.SMTP.max_line_length == 78  # the stock policy, for comparison
