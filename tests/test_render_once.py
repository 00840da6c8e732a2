"""Rendering once per campaign gives, for every subscriber, exactly the plain rendering's bytes.

`MessageFactory` renders what does not depend on the subscriber once per campaign and, per
subscriber, only the holes (`messages.skeleton`, `holes`, `expressions`), with the static
stretches of the bodies quoted-printable encoded once (`messages.bodies`). The plain way is
Jinja2 on the whole template (`Renderer.render`) and the reference builder
(`reference.build_message`), or the same factory with `fast=False`. Here both are compared on
generated subscribers (accents, empty and missing values, long names, SMTPUTF8 addresses,
attributes used in `{% if %}`) over templates that put subscriber data in `if`, `for`,
macros, `set`, filters, `loop`, imports, includes, inheritance; where the skeleton cannot
follow a template it must render that part the plain way, and the tests check which way each
part went, so that the comparison exercises the fast path. Errors must be the same errors.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email import quoprimime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from mailer.core.addresses import clean_address
from mailer.core.config import Settings
from mailer.core.errors import InputError
from mailer.core.people import Recipient
from mailer.messages import bodies as bodies_module
from mailer.messages.bodies import Body
from mailer.messages.campaign import load_campaign
from mailer.messages.compose import quoted_printable
from mailer.messages.factory import MessageFactory
from mailer.messages.preflight import preflight
from mailer.messages.quoting import qp_encode
from mailer.messages.reference import Envelope, build_message
from mailer.messages.render import ending
from tests.conftest import REPO_TEMPLATES, write_campaign

SECRET = b"r" * 32
DATE = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
FIXED = "fast"  # a part made by the skeleton
PLAIN = "plain"  # a part rendered the plain way

# --- templates: what each part must become (subject, text, html) -------------------------

LAYOUT_TXT = """{% import "_lib/hello.txt" as hello with context %}
{{ hello.line }}

{% block body %}{% endblock %}
{% if signature %}
-- {# the signature separator ends with a space #}
{{ signature }}
{% endif %}
{% block footer %}Désinscription : {{ unsubscribe_url }}{% endblock %}
"""
LAYOUT_HTML = """{% import "_lib/hello.txt" as hello with context %}
<html><head><title>{{ subject }}</title></head><body>
<p>{{ hello.line }}</p>
{% block body %}{% endblock %}
{% if unsubscribe_mailto %}<a href="{{ unsubscribe_mailto }}">stop</a>{% endif %}
</body></html>
"""
HELLO = """{% set known = {"mme": "Madame", "m.": "Monsieur", "dr": "Docteur"} %}
{% set title = known.get((subscriber.civility or "")|lower|trim, subscriber.civility or "") %}
{% set line = "Bonjour " ~ title ~ " " ~ subscriber.last_name ~ ","
       if title and subscriber.last_name
   else "Bonjour " ~ subscriber.first_name ~ "," if subscriber.first_name else "Bonjour," %}
"""
SHARED = {"_lib/hello.txt": HELLO, "_lib/layout.txt": LAYOUT_TXT, "_lib/layout.html": LAYOUT_HTML,
          "_lib/footer.txt": "Pour {{ subscriber.email }} : {{ subscriber.first_name }}\n",
          "_lib/plain.txt": "{% set x = signature|default('?') %}"}
TOML = ('from = "Asso Cime <asso@cime.example.org>"\nlist_id = "<l.cime.example.org>"\n'
        '[unsubscribe]\nurl = "https://cime.example.org/u/{token}"\n'
        'mailto = "stop@cime.example.org"\n[context]\nsignature = "Le bureau"\n'
        'villes = ["Lyon", "Lille"]\nmarker = "a\\u0000mailer-hole\\u0000b"\nvide = ""\n')

CAMPAIGNS: dict[str, tuple[dict[str, str], tuple[str, str, str]]] = {
    # if, elif, else, comparisons, filters, defaults, `is defined`, `in`, concatenation
    "ifs": ({
        "subject.txt": ("Pour {{ subscriber.first_name or 'vous' }}"
                        " ({{ subscriber.email|length }})\n"),
        "body.txt": (
            "{% extends '_lib/layout.txt' %}{% block body %}"
            "{% if subscriber.attributes.get('vip') %}Cher {{ subscriber.attributes.vip }}"
            "{% elif subscriber.civility == 'Mme' %}Chère Madame"
            "{% elif subscriber.first_name and subscriber.first_name|length > 12 %}Long !"
            "{% else %}Bonjour{% endif %}.\n"
            "Ville : {{ subscriber.attributes.get('ville', '?')|upper }}"
            "{% if subscriber.attributes.ville is defined"
            " and subscriber.attributes.ville in villes %}"
            " (une de nos villes){% endif %}\n"
            "{{ (subscriber.first_name or '')|default('ami', true)|title|truncate(12) }} "
            "{{ subscriber.last_name|replace(' ', '_') if subscriber.last_name else '-' }}\n"
            "{{ 'x' ~ subscriber.email ~ '=' ~ (subscriber.email|length * 3 + 1) }} "
            "{{ '%s <%s>'|format(subscriber.name, subscriber.address) }}\n"
            "{{ (subscriber.name or '')|wordwrap(20) }}|{{ subscriber.email[:5] }}|{{ vide }}|\n"
            "{% endblock %}"),
        "body.html": (
            "{% extends '_lib/layout.html' %}{% block body %}"
            "<p>{{ subscriber.name }} &lt;{{ subscriber.email }}&gt;</p>\n"
            "<p>{{ ('<b>'|safe) ~ subscriber.first_name ~ '</b>'|safe }}"
            "{{ ('<i>'|safe) ~ '<' }}{{ none }}{{ subscriber.last_name if false else none }}"
            "{{ subscriber.civility|e }}{{ subscriber.first_name|striptags }}</p>\n"
            "{% if subscriber.attributes.vip is defined %}<p>{{ subscriber.attributes.vip }}</p>"
            "{% endif %}{% endblock %}"),
    }, (FIXED, FIXED, FIXED)),
    # expressions: arithmetic, chained comparisons, slices, tests with arguments, keyword
    # arguments, methods, str.format through the sandbox, globals, an unsafe attribute
    "exprs": ({
        "subject.txt": "{{ subscriber.email.split('@')[1]|upper }} {{ villes|join('/') }}\n",
        "body.txt": (
            "{% set n = subscriber.attributes.get('n', 7) %}"
            "{{ n // 2 if n is number else n }} {{ -n if n is number else n ~ n }} "
            "{{ (n ** 2) % 1000 if n is number and n < 1000 else 0 }} "
            "{{ 1 < n < 5 if n is number else n in '0123' }}\n"
            "{{ subscriber.email[::-1] }} {{ subscriber.email[2:-3] }} "
            "{{ subscriber.email is string }} {{ n is divisibleby(3) if n is number else '-' }}\n"
            "{{ (subscriber.first_name or 'personne')|truncate(9, killwords=True, end='…') }} "
            "{{ subscriber.last_name|default('?', true)|center(12) }}|"
            "{{ subscriber.attributes|dictsort }}"
            " {{ subscriber.attributes.keys()|sort|join(',') }}\n"
            "{{ '{} <{}>'.format(subscriber.name, subscriber.address) }} "
            "{{ '%s-%s'|format(subscriber.civility, n) }} {{ subscriber.email|urlencode }}\n"
            "{{ range(3 if n is number else 2)|list }} {{ dict(a=subscriber.email)|dictsort }} "
            "{{ cycler('a', 'b').next() }}{{ subscriber.attributes.get('enfants', [])|length }} "
            "{{ subscriber.attributes.get('enfants', ['x'])|first|upper }}\n"
            "{{ subscriber.email.__class__ if subscriber.civility == 'DR' else '' }}\n"),
        "body.html": (
            "<p>{{ subscriber.name|e }}|{{ subscriber.name|safe if subscriber.civility else '' }}"
            "|{{ subscriber.first_name ~ ('<br>'|safe) ~ subscriber.last_name }}"
            "|{{ ('<em>%s</em>'|safe) % subscriber.email }}|{{ subscriber.email|tojson }}"
            "|{{ subscriber.civility|striptags|title }}</p>\n"
            "{% if subscriber.attributes.get('vip') %}{% set vip = 'VIP ' ~ subscriber.email %}"
            "{% endif %}<p>{{ vip if vip is defined else 'non' }}</p>\n"),
    }, (FIXED, FIXED, FIXED)),
    # set on top: static, dynamic, set in an if, read before set, set twice, a static loop
    "sets": ({
        "subject.txt": "Lettre de {{ signature }}\n",
        "body.txt": (
            "{{ early if early is defined else 'rien' }}\n"
            "{% set early = subscriber.first_name %}{% set sig = signature ~ ' !' %}"
            "{% set who = subscriber.first_name or subscriber.email %}"
            "{% if subscriber.attributes.get('vip') %}{% set who = 'VIP ' ~ who %}{% endif %}"
            "Bonjour {{ who }}, {{ sig }} {{ early }}\n"
            "{% for ville in villes %}{{ loop.index }}. {{ ville }}{% endfor %}\n"
            "{% set who = 'fin' %}{{ who }}\n"),
        "body.html": (
            "{% set sig %}<b>{{ signature }}</b>{% endset %}{% set name = subscriber.name %}"
            "<p>{{ sig }} {{ name }}</p>\n<p>{{ (name or '')|length }}</p>\n"),
    }, (FIXED, PLAIN, FIXED)),
    # loops over subscriber data, loop variables: the plain way
    "loops": ({
        "subject.txt": "{% for v in villes %}{{ v }} {% endfor %}\n",
        "body.txt": (
            "{% for child in subscriber.attributes.get('enfants', []) %}"
            "{{ loop.index }}/{{ loop.length }} {{ child|title }}"
            "{% if not loop.last %}, {% endif %}"
            "{% else %}aucun enfant{% endfor %}\n{{ subscriber.first_name }}\n"),
        "body.html": "<p>{% for v in villes %}{{ v }}{{ subscriber.first_name }}{% endfor %}</p>\n",
    }, (FIXED, PLAIN, PLAIN)),
    # a filter taking the template context (`map` may run `random`) is not rendered once
    "mapped": ({
        "subject.txt": "{{ villes|map('upper')|join(' ') }}\n",
        "body.txt": "{{ villes|map('lower')|join(',') }} {{ subscriber.email }}\n",
    }, (PLAIN, PLAIN, PLAIN)),
    # macros, call blocks, include, from-import, namespace: the plain way
    "macros": ({
        "subject.txt": ("{% import '_lib/plain.txt' as p %}{{ p.x }}"
                        "{% macro s(x) %}[{{ x }}]{% endmacro %}{{ s(subscriber.first_name) }}\n"),
        "body.txt": (
            "{% macro hello(name, end='!') %}Bonjour {{ name }}{{ end }}{% endmacro %}"
            "{{ hello(subscriber.first_name or 'toi') }}\n"
            "{% macro box(x) %}[{{ x }}|{{ caller() }}]{% endmacro %}"
            "{% call box(subscriber.email) %}{{ subscriber.last_name }}{% endcall %}\n"
            "{% include '_lib/footer.txt' %}"),
        "body.html": (
            "{% from '_lib/hello.txt' import line with context %}{% set ns = namespace(n=0) %}"
            "{% set ns.n = subscriber.email %}<p>{{ ns.n }} {{ line }}</p>\n"
            "{% autoescape false %}<p>{{ subscriber.name }}</p>{% endautoescape %}\n"),
    }, (PLAIN, PLAIN, PLAIN)),
    # inheritance: three levels, nested blocks, a block defined only in the child, super();
    # no unsubscribe link: `{% if unsubscribe_url %}` is decided the other way
    "heirs": ({
        "subject.txt": "Héritage\n",
        "body.txt": "{% extends 'heirs/middle.txt' %}{% block inner %}[{{ subscriber.email }}]"
                    "{% endblock %}{% block unused %}jamais{% endblock %}",
        "middle.txt": "{% extends 'heirs/base.txt' %}{% block outer %}<{% block inner %}"
                      "{% endblock %}>{{ subscriber.last_name }}{% endblock %}",
        "base.txt": ("Début\n{% block outer %}rien{% endblock %}\nFin {{ subscriber.first_name }}\n"
                     "{% if unsubscribe_url %}U {{ unsubscribe_url }}{% elif unsubscribe_mailto %}"
                     "M {{ unsubscribe_mailto }}{% elif not unsubscribe_url %}N{% endif %}\n"),
        "campaign.toml": 'from = "Asso <asso@asso.fr>"\n',  # no unsubscribe link at all
        "body.html": "{% extends 'heirs/base.html' %}{% block b %}{{ super() }}+{% endblock %}",
        "base.html": "<p>{% block b %}{{ subscriber.email }}{% endblock %}</p>\n",
    }, (FIXED, FIXED, PLAIN)),
    # errors that depend on the data, and one that does not
    "errors": ({
        "subject.txt": "S {{ subscriber.attributes.ville if subscriber.civility else '' }}\n",
        "body.txt": ("{{ subscriber.attributes.n + 1 if subscriber.attributes.n is defined"
                     " else 0 }} {{ subscriber.first_name.upper() if subscriber.last_name"
                     " else '' }}\n"),
        "body.html": "<p>{{ 12 // subscriber.attributes.get('n', 1) }}</p>\n",
    }, (FIXED, FIXED, FIXED)),
    # an error whatever the subscriber: every message refused, with Jinja2's own words
    "broken": ({
        "subject.txt": "S\n",
        "body.txt": "{{ subscriber.email }}\n",
        "body.html": "<p>{{ 1 / 0 }}{{ subscriber.email }}</p>\n",
    }, (FIXED, FIXED, PLAIN)),
    # line ends, white space, '=', long lines, a hole at the very end, the marker in the text
    "lines": ({
        "subject.txt": "{{ subscriber.first_name }}\n",
        "body.txt": ("a=b\r\nc \t\n{{ subscriber.first_name }}\r{{ subscriber.last_name }}\n"
                     + "x" * 70 + "={{ subscriber.first_name }}=" + "y" * 80 + " \n\n"
                     "{{ subscriber.civility }}{{ subscriber.last_name }}"),
        "body.html": "{{ marker }}{{ subscriber.email }}\n",
    }, (FIXED, FIXED, PLAIN)),
}
CAMPAIGN_NAMES = [*CAMPAIGNS, "closure-notice"]


@pytest.fixture(scope="module")
def factories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[MessageFactory,
                                                                            MessageFactory]]:
    """For each campaign: (the factory, the same with fast=False)."""
    root = tmp_path_factory.mktemp("templates")
    for folder in ("_lib", "_layout"):
        (root / folder).mkdir()
    for name, content in SHARED.items():
        (root / name).write_text(content, encoding="utf-8")
    for path in (REPO_TEMPLATES / "_layout").iterdir():
        (root / "_layout" / path.name).write_text(path.read_text(encoding="utf-8"),
                                                  encoding="utf-8")
    write_campaign(root, "closure-notice", {
        p.name: p.read_text(encoding="utf-8") for p in (REPO_TEMPLATES / "closure-notice").iterdir()
    })
    for name, (files, _) in CAMPAIGNS.items():
        write_campaign(root, name, {"campaign.toml": TOML, **files})
    found = {}
    for name in CAMPAIGN_NAMES:
        campaign = load_campaign(Settings(templates_dir=root), name)
        found[name] = (MessageFactory(campaign, SECRET, "n0nce"),
                       MessageFactory(campaign, SECRET, "n0nce", fast=False))
    return found


def ways(factory: MessageFactory) -> tuple[str, str, str]:
    skeleton = factory.skeleton
    if skeleton is None:
        return (PLAIN, PLAIN, PLAIN)
    made = (skeleton.subject_program, skeleton.text, skeleton.html)
    return tuple(PLAIN if part is None else FIXED for part in made)  # type: ignore[return-value]


@pytest.mark.parametrize("name", CAMPAIGN_NAMES)
def test_each_part_goes_the_expected_way(
    factories: dict[str, tuple[MessageFactory, MessageFactory]], name: str
) -> None:
    """So that the comparisons below compare the fast path where it should be taken, and the
    plain one where the skeleton cannot follow the template."""
    expected = CAMPAIGNS[name][1] if name in CAMPAIGNS else (FIXED, FIXED, FIXED)
    factory, _ = factories[name]
    assert ways(factory) == expected, factory.skeleton and factory.skeleton.reasons


# --- subscribers ----------------------------------------------------------------------------

WORDS = ["Hélène", "Zoë", "Jean-Pierre", "N'Diaye", "Œuvray", "de la Fontaine", "LE GALL", "Ana",
         "Müller", "李", "😀", "O'Brien", "<b>", "a & b", '"x"', "{{ 7*7 }}", "=?utf-8?q?x?=",
         "Dupont (née Martin)", "J.-P.", "x" * 70, " ", ""]
CIVILITIES = [None, "", "Mme", "M.", "mme ", "DR", "Madame", "Dr.", "<i>"]
LOCALS = ["helene.dupont", "a", "Jean.Pierre+news", "x" * 60, "o'brien", "zoë"]
DOMAINS = ["exemple.fr", "bücher.de", "Gmail.COM", "a.b.c.example.org"]

names = st.one_of(st.none(), st.sampled_from(WORDS),
                  st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join),
                  st.text(max_size=30))
attributes = st.fixed_dictionaries({}, optional={
    "vip": st.sampled_from(["", "or", "<argent>", "0"]),
    "ville": st.sampled_from(["Lyon", "Lille", "Paris", "é"]),
    "enfants": st.lists(st.sampled_from(["léa", "tom", "<z>"]), max_size=3),
    "n": st.one_of(st.integers(-5, 10**6), st.just("3")),
})


@st.composite
def subscribers(draw: st.DrawFn) -> Recipient:
    local, domain = draw(st.sampled_from(LOCALS)), draw(st.sampled_from(DOMAINS))
    address, _ = clean_address(f"{local}{draw(st.integers(1, 999))}@{domain}")
    return Recipient(
        id=draw(st.integers(1, 10**9)), email=address.email, address=address.address,
        key=address.key, smtputf8=address.smtputf8, first_name=draw(names),
        last_name=draw(names), civility=draw(st.sampled_from(CIVILITIES)),
        attributes=draw(attributes),
    )


def outcome(factory: MessageFactory, recipient: Recipient) -> tuple[Any, ...]:
    try:
        made = factory.make(recipient, date=DATE)
    except InputError as exc:
        return ("refused", type(exc).__name__, exc.message)
    return ("made", made.parts, made.data)


def reference(factory: MessageFactory, recipient: Recipient) -> bytes:
    """Jinja2 on the whole templates, then the EmailMessage construction."""
    links = factory.links(recipient)
    parts = factory.renderer.render(recipient, links)
    envelope = Envelope(factory.message_id(recipient), DATE)
    return build_message(factory.campaign, recipient, parts, links, envelope).as_bytes()


def assert_same(pair: tuple[MessageFactory, MessageFactory], recipient: Recipient) -> None:
    fast, plain = pair
    fallbacks = fast.fallbacks
    made, expected = outcome(fast, recipient), outcome(plain, recipient)
    assert made == expected, recipient
    if made[0] == "made":
        assert made[2] == reference(plain, recipient), recipient
        assert fast.fallbacks == fallbacks, "made the plain way though the skeleton could"


@examples(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), recipient=subscribers())
def test_the_fast_path_gives_the_plain_bytes_for_every_subscriber(
    factories: dict[str, tuple[MessageFactory, MessageFactory]], data: st.DataObject,
    recipient: Recipient,
) -> None:
    name = data.draw(st.sampled_from(CAMPAIGN_NAMES))
    assert_same(factories[name], recipient)


def test_the_closure_notice_on_a_realistic_list(
    factories: dict[str, tuple[MessageFactory, MessageFactory]],
) -> None:
    """The benchmark's generated French list (accents, capitals, no names, IDN, SMTPUTF8)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    from render_bench import generate

    pair = factories["closure-notice"]
    for recipient in generate(1500, seed=7, smtputf8_rate=0.01):
        assert_same(pair, recipient)


def test_a_data_error_is_the_plain_ways_error(
    factories: dict[str, tuple[MessageFactory, MessageFactory]],
) -> None:
    fast, plain = factories["errors"]
    assert ways(fast) == (FIXED, FIXED, FIXED)
    cases = [
        (Recipient(id=1, email="a@exemple.fr", address="a@exemple.fr", civility="M."),
         r"subject\.txt, line 1: undefined variable: .*ville"),
        (Recipient(id=2, email="b@exemple.fr", address="b@exemple.fr", last_name="B",
                   attributes={"n": 1}),
         r"body\.txt, line 1: undefined variable: .*upper"),
        (Recipient(id=3, email="c@exemple.fr", address="c@exemple.fr",
                   attributes={"n": "1"}),
         r"body\.txt, line 1: TypeError: can only concatenate str"),
        (Recipient(id=4, email="d@exemple.fr", address="d@exemple.fr", attributes={"n": 0}),
         r"body\.html, line 1: ZeroDivisionError"),
    ]
    for recipient, reason in cases:
        for factory in (fast, plain):
            with pytest.raises(InputError, match=reason):
                factory.make(recipient, date=DATE)
    fast.make(Recipient(id=5, email="e@exemple.fr", address="e@exemple.fr", first_name="E",
                        last_name="F", attributes={"n": 2}), date=DATE)


def test_the_pre_flight_says_the_same_either_way(
    factories: dict[str, tuple[MessageFactory, MessageFactory]],
) -> None:
    rng = random.Random(3)
    people = [Recipient(id=i, email=f"p{i}@exemple.fr", address=f"p{i}@exemple.fr",
                        first_name=rng.choice([None, "Zoë", "Jean"]),
                        attributes=rng.choice([{}, {"ville": "Lyon", "n": 2},
                                               {"ville": "Lille", "n": "x"}]))
              for i in range(1, 200)]
    for name in ("errors", "ifs", "closure-notice"):
        fast, plain = factories[name]
        one = preflight(fast, people, date=DATE)
        other = preflight(plain, people, date=DATE)
        one.seconds = other.seconds = 0.0
        assert one == other


def test_a_wrong_skeleton_is_caught_when_the_campaign_is_compiled(
    factories: dict[str, tuple[MessageFactory, MessageFactory]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = Body.make
    monkeypatch.setattr(Body, "make", lambda self, holes: (made(self, holes)[0], b"x\r\n"))
    campaign = factories["closure-notice"][0].campaign
    assert MessageFactory(campaign, SECRET, "n").skeleton is None


# --- the pieces on their own ----------------------------------------------------------------


def _library_line(line: bytes) -> bytes:
    return quoprimime.body_encode(line.decode("latin-1"), 76).replace("\n", "\r\n").encode(
        "ascii") + b"\r\n"


line_bytes = st.one_of(
    st.binary(max_size=400).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.lists(st.sampled_from([b"a", b"=", b" ", b"\t", b"\xc3\xa9", b"xyz", b"\x00"]),
             max_size=200).map(b"".join),
)


@examples(max_examples=3000, deadline=None)
@given(line=line_bytes)
def test_a_line_is_encoded_as_the_library_encodes_it(line: bytes) -> None:
    assert qp_encode(line) == _library_line(line)


def test_every_line_length_and_position_of_an_escape_near_the_fold() -> None:
    for length in range(0, 240):
        for special in (b"=", b" ", b"\t", b"\xe9", b"\x00"):
            for position in (length - 1, length - 2, length - 3, 73, 74, 75, 76):
                line = bytearray(b"a" * length)
                if 0 <= position < length:
                    line[position : position + 1] = special
                for end in (b"", b" ", b"\t", b"=", b"\xe9"):
                    data = bytes(line) + end
                    assert qp_encode(data) == _library_line(data), data


stretch = st.lists(st.sampled_from(["a", "é", " ", "\t", "\n", "\r", "\r\n", "=", "x" * 80,
                                    "’", "\n\n", "\u2028", "\x0c"]), max_size=12).map("".join)


@examples(max_examples=3000, deadline=None)
@given(data=st.data(), statics=st.lists(stretch, min_size=1, max_size=6))
def test_a_body_of_stretches_and_holes_is_the_whole_texts_encoding(
    data: st.DataObject, statics: list[str]
) -> None:
    holes = data.draw(st.lists(stretch, min_size=len(statics) - 1, max_size=len(statics) - 1))
    pieces = [statics[0]]
    for hole, static in zip(holes, statics[1:], strict=True):
        pieces += (hole, static)
    text = ending("".join(pieces))
    assert Body(statics).make(holes) == (text, quoted_printable(text))


def test_a_body_that_ends_in_newlines_only_falls_back_whole() -> None:
    body = Body(["Bonjour ", ",\n\n", "\n"])
    assert body.make(["Zoë", "\n\n"]) == ("Bonjour Zoë,\n", quoted_printable("Bonjour Zoë,\n"))
    assert bodies_module.Body(["", ""]).make([""]) == ("\n", b"\r\n")
