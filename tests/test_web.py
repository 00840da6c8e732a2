"""`mailer serve`: the one-click unsubscribe endpoint, over real HTTP against a real uvicorn.

Each test starts the server on a free port of 127.0.0.1 in a background thread (web.Server,
the same code `mailer serve` runs) and talks to it with http.client; the database cases run
on SQLite and on PostgreSQL. The test list is real: subscribers imported by the importer, two
campaigns sent to an outbox, one person left with a pending and a deferred delivery.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from mailer import api, web
from mailer.core.config import Settings
from mailer.core.errors import ConfigError
from mailer.core.tokens import make_token
from mailer.store import meta
from mailer.store.engine import read_transaction, write_transaction
from mailer.store.models import Campaign, Delivery, Subscriber
from mailer.web import pages, service
from mailer.web.middleware import masked_path
from tests.conftest import write_campaign

PEOPLE = ["helene.dupont@exemple.fr", "zoe.oeuvray@exemple.fr", "anais.ndiaye@exemple.fr"]
LIST_ID = "Lettre des Amis du quartier <lettre.amis.example.org>"
LIST_NAME = "Lettre des Amis du quartier"
ONE_CLICK = urlencode({"List-Unsubscribe": "One-Click"})
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SECURITY = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


# --- HTTP ----------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str


def fetch(
    base: str, path: str, method: str = "GET", body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    parts = urlsplit(base)
    assert parts.hostname == "127.0.0.1"  # loopback only
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read().decode("utf-8"))
    finally:
        connection.close()


def post(base: str, path: str, body: str = ONE_CLICK, headers: dict[str, str] | None = None
         ) -> Reply:
    return fetch(base, path, "POST", body, FORM if headers is None else headers)


def multipart(fields: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    boundary = "----mailer-test-7d3f"
    chunks = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    body = ("".join(chunks) + f"--{boundary}--\r\n").encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def assert_secure_page(reply: Reply, status: int) -> None:
    """The status, and what every page carries: headers, French, UTF-8, nothing external."""
    assert reply.status == status, reply.body
    for name, value in SECURITY.items():
        assert reply.headers[name] == value, name
    assert "noindex" in reply.headers["x-robots-tag"]
    csp = reply.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "form-action 'self'" in csp
    assert "script-src" not in csp
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.headers.get("server") is None
    if reply.body:  # not for HEAD
        assert '<html lang="fr">' in reply.body
        assert '<meta charset="utf-8">' in reply.body
        assert 'name="viewport"' in reply.body
        assert "<script" not in reply.body.lower()
        assert not re.search(r"""(src|href)\s*=""", reply.body, re.I)  # no external resource
        assert "Traceback" not in reply.body
        style = re.search(r"<style>(.*?)</style>", reply.body, re.S)
        assert style is not None
        digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
        assert f"style-src 'sha256-{digest}'" in csp  # the one inline style, allowed by hash


def h1(reply: Reply) -> str:
    found = re.search(r"<h1>(.*?)</h1>", reply.body, re.S)
    assert found is not None, reply.body
    return found.group(1)


# --- the server and the list ---------------------------------------------------------------


@contextmanager
def running(settings: Settings, sock: socket.socket | None = None) -> Iterator[web.Server]:
    """`web.create_app` under uvicorn on 127.0.0.1, in a background thread. A SQLite
    database is created first: the server only reads and never creates one."""
    if settings.database_url.startswith("sqlite"):
        api.check_database(settings)
    server = web.Server(web.create_app(settings), sock or web.listen("127.0.0.1", 0),
                        log_config=None)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class World:
    base: str  # http://127.0.0.1:PORT
    settings: Settings
    outbox: Path
    target: str  # has a pending delivery (lettre) and a deferred one (rappel)

    def path(self, token: str) -> str:
        return f"/desinscription/{token}"


def write_lettre(templates_dir: Path, name: str, list_id: str = LIST_ID) -> None:
    write_campaign(templates_dir, name, {
        "campaign.toml": f'from = "Les Amis <amis@asso.fr>"\nlist_id = "{list_id}"\n',
        "subject.txt": "Des nouvelles du quartier\n",
        "body.txt": "Bonjour {{ subscriber.first_name }},\n\nÀ bientôt.\n\n"
                    "Se désinscrire : {{ unsubscribe_url }}\n",
    })


def import_people(settings: Settings, folder: Path, people: list[str]) -> None:
    path = folder / "amis.csv"
    path.write_text("email,first_name\n" + "".join(f"{p},Camille\n" for p in people),
                    encoding="utf-8")
    report = api.import_subscribers(settings, path)
    assert report.imported == len(people), report


def token_of(settings: Settings, email: str) -> str:
    with api.open_database(settings) as engine, write_transaction(engine) as connection:
        row = connection.execute(select(Subscriber).where(Subscriber.email == email)).one()
        return make_token(meta.token_secret(connection, settings.secret), row.id, row.email_key)


def statuses(settings: Settings) -> dict[str, str]:
    with api.open_database(settings) as engine, read_transaction(engine) as connection:
        return dict(connection.execute(select(Subscriber.email, Subscriber.status)).all())


def deliveries(settings: Settings) -> dict[tuple[str, str], str]:
    """(campaign, email) -> delivery state."""
    with api.open_database(settings) as engine, read_transaction(engine) as connection:
        rows = connection.execute(
            select(Campaign.name, Subscriber.email, Delivery.state)
            .join(Delivery, Delivery.campaign_id == Campaign.id)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        ).all()
    return {(name, email): state for name, email, state in rows}


def snapshot(settings: Settings) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    return statuses(settings), deliveries(settings)


def outbox_recipients(outbox: Path) -> list[str]:
    """The To address of every message in the outbox."""
    parser = BytesParser(policy=policy.default)
    return sorted(
        parser.parsebytes(f.read_bytes())["To"].addresses[0].addr_spec
        for f in outbox.glob("*.eml")
    )


def make_world(settings: Settings, tmp_path: Path, server: web.Server) -> World:
    """Import PEOPLE; send `lettre` and `rappel` to one person each; leave one person with
    `lettre` pending and `rappel` deferred (due now): the one the tests unsubscribe."""
    import_people(settings, tmp_path, PEOPLE)
    outbox = tmp_path / "outbox"
    for campaign in ("lettre", "rappel"):
        report = api.send(settings, campaign, outbox=outbox, limit=1)
        assert report.tally.sent == 1
    states = deliveries(settings)
    target = next(p for p in PEOPLE
                  if states[("lettre", p)] == states[("rappel", p)] == "pending")
    with api.open_database(settings) as engine, write_transaction(engine) as connection:
        target_id = connection.scalar(select(Subscriber.id).where(Subscriber.email == target))
        rappel = connection.scalar(select(Campaign.id).where(Campaign.name == "rappel"))
        connection.execute(
            update(Delivery)
            .where(Delivery.subscriber_id == target_id, Delivery.campaign_id == rappel)
            .values(state="deferred", attempts=1, last_code=451, last_reply="4.3.0 try later",
                    next_attempt_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    assert deliveries(settings)[("rappel", target)] == "deferred"
    return World(server.base_url, settings, outbox, target)


@pytest.fixture
def world(settings: Settings, tmp_path: Path) -> Iterator[World]:
    sock = web.listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    settings = replace(settings,
                       unsubscribe_url=f"http://127.0.0.1:{port}/desinscription/{{token}}")
    write_lettre(settings.templates_dir, "lettre")
    write_lettre(settings.templates_dir, "rappel")
    with running(settings, sock) as server:
        yield make_world(settings, tmp_path, server)


# --- GET and HEAD --------------------------------------------------------------------------


def test_get_shows_the_french_page_and_changes_nothing(world: World) -> None:
    before = snapshot(world.settings)
    token = token_of(world.settings, world.target)
    reply = fetch(world.base, world.path(token))
    assert_secure_page(reply, 200)
    assert h1(reply) == f"Se désinscrire de la lettre «\u00a0{LIST_NAME}\u00a0»"
    assert f"<title>Se désinscrire de la lettre «\u00a0{LIST_NAME}\u00a0»</title>" in reply.body
    masked = world.target[0] + "••••@exemple.fr"
    assert f"<strong>{masked}</strong>" in reply.body
    assert world.target not in reply.body
    assert token not in reply.body
    forms = re.findall(r"<form[^>]*>", reply.body)
    assert forms == ['<form method="post">']  # to the same URL
    assert reply.body.count("<button") == 1
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in reply.body
    # A link scanner, a preview pane, a second look: nothing changes.
    for _ in range(3):
        assert fetch(world.base, world.path(token)).status == 200
    assert fetch(world.base, world.path(token), "HEAD").status == 200
    assert snapshot(world.settings) == before
    assert statuses(world.settings)[world.target] == "active"


def test_head_answers_like_get_without_a_body(world: World) -> None:
    token = token_of(world.settings, world.target)
    get = fetch(world.base, world.path(token))
    head = fetch(world.base, world.path(token), "HEAD")
    assert_secure_page(head, 200)
    assert head.body == ""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert fetch(world.base, "/desinscription/0.AAAAAAAAAAAAAAAAAAAAAA", "HEAD").status == 404


# --- POST ----------------------------------------------------------------------------------


def test_post_one_click_unsubscribes_and_skips_pending_and_deferred(world: World) -> None:
    status_before, deliveries_before = snapshot(world.settings)
    token = token_of(world.settings, world.target)
    reply = post(world.base, world.path(token))
    assert_secure_page(reply, 200)
    assert h1(reply) == "Vous êtes désinscrit·e"
    assert f"<strong>{world.target[0]}••••@exemple.fr</strong>" in reply.body
    assert "<form" not in reply.body
    status_after, deliveries_after = snapshot(world.settings)
    assert status_after == {**status_before, world.target: "unsubscribed"}
    assert deliveries_before[("lettre", world.target)] == "pending"
    assert deliveries_before[("rappel", world.target)] == "deferred"
    assert deliveries_after == {
        **deliveries_before,
        ("lettre", world.target): "skipped",
        ("rappel", world.target): "skipped",
    }
    # Again (a second click, a mail provider's retry): 200, already done, nothing changes.
    again = post(world.base, world.path(token))
    assert_secure_page(again, 200)
    assert h1(again) == "Vous êtes déjà désinscrit·e"
    assert "déjà désinscrite" in again.body
    look = fetch(world.base, world.path(token))
    assert_secure_page(look, 200)
    assert h1(look) == "Vous êtes déjà désinscrit·e"
    assert "<form" not in look.body
    assert snapshot(world.settings) == (status_after, deliveries_after)
    # The next retry sends everyone else what is left, and the unsubscribed person nothing.
    due = [k for k, v in deliveries_after.items() if v in ("pending", "deferred")]
    assert due
    assert all(email != world.target for _, email in due)
    reports = api.retry(world.settings, outbox=world.outbox)
    assert sum(r.tally.sent for r in reports) == len(due)
    assert world.target not in outbox_recipients(world.outbox)
    final = deliveries(world.settings)
    assert final[("lettre", world.target)] == final[("rappel", world.target)] == "skipped"
    others = {k: v for k, v in final.items() if k[1] != world.target}
    assert set(others.values()) == {"sent"}


def test_post_multipart_form_data_is_accepted(world: World) -> None:
    body, headers = multipart({"List-Unsubscribe": "One-Click"})
    reply = fetch(world.base, world.path(token_of(world.settings, world.target)), "POST",
                  body, headers)
    assert_secure_page(reply, 200)
    assert h1(reply) == "Vous êtes désinscrit·e"
    assert statuses(world.settings)[world.target] == "unsubscribed"
    assert deliveries(world.settings)[("rappel", world.target)] == "skipped"


def test_post_without_the_one_click_field_is_400_and_changes_nothing(world: World) -> None:
    before = snapshot(world.settings)
    path = world.path(token_of(world.settings, world.target))
    cases: list[tuple[bytes | str, dict[str, str]]] = [
        ("", FORM),
        ("List-Unsubscribe=", FORM),
        ("List-Unsubscribe=one-click", FORM),
        ("List-Unsubscribe=Yes", FORM),
        ("Unsubscribe=One-Click", FORM),
        (ONE_CLICK, {"Content-Type": "text/plain"}),
        (ONE_CLICK, {}),
        multipart({"Other": "One-Click"}),
    ]
    with_file = (
        b"--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"; filename=\"x\"\r\n"
        b"Content-Type: text/plain\r\n\r\nOne-Click\r\n--b--\r\n"
    )
    cases.append((with_file, {"Content-Type": "multipart/form-data; boundary=b"}))
    for body, headers in cases:
        reply = fetch(world.base, path, "POST", body, headers)
        assert_secure_page(reply, 400)
        assert h1(reply) == "Demande incomplète", body
    # Over the limits, the one-click field included or not: 413, before any parsing.
    for body in ("List-Unsubscribe=" + "x" * 20_000,  # over the body size limit
                 "&".join(f"f{i}=1" for i in range(100)) + "&" + ONE_CLICK):  # too many fields
        reply = fetch(world.base, path, "POST", body, FORM)
        assert_secure_page(reply, 413)
        assert h1(reply) == "Demande trop volumineuse", body
    assert snapshot(world.settings) == before


# --- tokens that are not genuine ------------------------------------------------------------


def test_invalid_tampered_unknown_or_erased_tokens_are_404_and_change_nothing(
    world: World,
) -> None:
    token = token_of(world.settings, world.target)
    ident, mac = token.split(".")
    other = next(p for p in PEOPLE if p != world.target)
    erased_token = token_of(world.settings, other)
    assert api.forget(world.settings, other).was_subscriber
    before = snapshot(world.settings)
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    forged = make_token(b"not the secret", int(ident, 16), world.target)
    bad = [
        f"{ident}.{flipped}",  # tampered MAC
        f"{int(ident, 16) + 1:x}.{mac}",  # another id, this MAC
        f"{10**6:x}.{mac}",  # nobody
        forged,  # signed with another key
        erased_token,  # a genuine token of someone erased since
        token + "A",  # too long
        token[:-1],  # too short
        "n'importe-quoi",
        "%00",
        "A" * 300,
    ]
    bodies = set()
    for candidate in bad:
        for reply in (fetch(world.base, world.path(candidate)),
                      post(world.base, world.path(candidate))):
            assert_secure_page(reply, 404)
            assert h1(reply) == "Lien de désinscription invalide"
            assert "@" not in reply.body
            bodies.add(reply.body)
    assert len(bodies) == 1  # the same page whatever was wrong: nothing to learn from it
    assert snapshot(world.settings) == before


# --- everything else -------------------------------------------------------------------------


def test_other_methods_are_405_and_other_paths_404(world: World) -> None:
    token = token_of(world.settings, world.target)
    before = snapshot(world.settings)
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        reply = fetch(world.base, world.path(token), method, ONE_CLICK, FORM)
        assert_secure_page(reply, 405)
        assert h1(reply) == "Méthode non autorisée"
        assert set(reply.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    for path in ("/", "/desinscription", "/desinscription/", f"/desinscription/{token}/",
                 f"/desinscription/{token}/x", "/favicon.ico", f"/Desinscription/{token}",
                 f"/unsubscribe/{token}"):
        for method in ("GET", "POST"):
            reply = fetch(world.base, path, method, ONE_CLICK if method == "POST" else None,
                          FORM if method == "POST" else None)
            assert_secure_page(reply, 404)
            assert h1(reply) == "Page introuvable", path
    assert snapshot(world.settings) == before


def test_a_token_in_the_query_string(settings: Settings, tmp_path: Path) -> None:
    settings = replace(settings, unsubscribe_url="http://127.0.0.1:8080/u?liste=amis&t={token}")
    write_lettre(settings.templates_dir, "lettre")
    import_people(settings, tmp_path, PEOPLE[:1])
    token = token_of(settings, PEOPLE[0])
    with running(settings) as server:
        look = fetch(server.base_url, f"/u?liste=amis&t={token}")
        assert_secure_page(look, 200)
        assert '<form method="post">' in look.body  # no action: the same URL, query included
        assert fetch(server.base_url, f"/u?t={token}").status == 200
        for path in ("/u", "/u?t=", "/u?token=" + token, f"/u/{token}", f"/desinscription/{token}"):
            assert fetch(server.base_url, path).status == 404, path
        assert statuses(settings)[PEOPLE[0]] == "active"
        done = post(server.base_url, f"/u?liste=amis&t={token}")
        assert_secure_page(done, 200)
        assert h1(done) == "Vous êtes désinscrit·e"
    assert statuses(settings)[PEOPLE[0]] == "unsubscribed"


# --- where the server answers ---------------------------------------------------------------


def test_routes_come_from_every_campaign_unless_the_url_is_set(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    settings = Settings(templates_dir=templates)
    write_campaign(templates, "a", {"campaign.toml": (
        'from = "Les Amis <amis@asso.fr>"\nlist_id = "Lettre des Amis <a.asso.fr>"\n'
        '[unsubscribe]\nurl = "https://asso.fr/desinscription/{token}"\n')})
    write_campaign(templates, "b", {"campaign.toml": (  # the same path on another host
        'from = "Les Amis <amis@asso.fr>"\nlist_id = "Lettre des Amis <a.asso.fr>"\n'
        '[unsubscribe]\nurl = "https://www.asso.fr/desinscription/{token}"\n')})
    write_campaign(templates, "c", {"campaign.toml": (  # a query, no List-Id: the sender
        'from = "Club de lecture <club@asso.fr>"\n'
        '[unsubscribe]\nurl = "https://asso.fr/club/d%C3%A9part?x={token}"\n')})
    write_campaign(templates, "d", {"campaign.toml": 'from = "x@asso.fr"\n'})  # no URL
    write_campaign(templates, "_layout", {"campaign.toml": "not toml at all ["})  # not one
    routes = web.unsubscribe_routes(settings)
    assert [(r.path, r.query_names, r.list_name) for r in routes] == [
        ("/club/départ", ("x",), "Club de lecture"),
        ("/desinscription/{token}", (), "Lettre des Amis"),
    ]
    assert routes[0].display == "/club/départ?x={token}"
    assert routes[1].urls == ("https://asso.fr/desinscription/{token}",
                              "https://www.asso.fr/desinscription/{token}")
    # MAILER_UNSUBSCRIBE_URL wins: one route; the campaigns do not agree on a name.
    override = web.unsubscribe_routes(
        replace(settings, unsubscribe_url="https://asso.fr/stop/{token}"))
    assert [(r.path, r.list_name) for r in override] == [("/stop/{token}", None)]


def test_a_broken_campaign_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    templates = tmp_path / "templates"
    write_lettre(templates, "ok")
    (templates / "ok" / "campaign.toml").write_text(
        'from = "a@asso.fr"\n[unsubscribe]\nurl = "https://asso.fr/d/{token}"\n', "utf-8")
    write_campaign(templates, "draft", {"campaign.toml": "from = [unclosed\n"})
    with caplog.at_level(logging.WARNING, logger="mailer.web"):
        routes = web.unsubscribe_routes(Settings(templates_dir=templates))
    assert [r.path for r in routes] == ["/d/{token}"]
    assert "skipping campaign draft" in caplog.text


@pytest.mark.parametrize(("url", "message"), [
    ("http://asso.fr/d/{token}", "must start with https://"),
    ("https://asso.fr/d/x", "must contain {token} exactly once"),
    ("https://asso.fr/d?t=x{token}", "must be a path segment or a whole query value"),
    ("https://asso.fr/d#{token}", "must be a path segment or a whole query value"),
    ("https://{token}.asso.fr/d", "must be a path segment or a whole query value"),
])
def test_an_unusable_url_is_a_config_error(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        web.create_app(Settings(templates_dir=tmp_path, unsubscribe_url=url))
    assert message in caught.value.message
    assert caught.value.exit_code == 78


def test_no_url_at_all_is_a_config_error_with_a_hint(tmp_path: Path) -> None:
    write_campaign(tmp_path / "templates", "lettre", {})  # no [unsubscribe]
    for templates in (tmp_path / "templates", tmp_path / "missing"):
        with pytest.raises(ConfigError) as caught:
            web.create_app(Settings(templates_dir=templates))
        assert caught.value.exit_code == 78
        assert "no unsubscribe URL" in caught.value.message
        assert caught.value.hint is not None
        assert "MAILER_UNSUBSCRIBE_URL" in caught.value.hint


def test_without_a_list_name_the_wording_is_neutral() -> None:
    page = pages.confirm(None, "camille@exemple.fr").html
    assert "<h1>Se désinscrire de la lettre d’information</h1>" in page
    named = pages.confirm("Les <Amis> & co", "camille@exemple.fr").html
    assert "«\u00a0Les &lt;Amis&gt; &amp; co\u00a0»" in named  # escaped


def test_the_address_is_masked() -> None:
    assert pages.mask_address("helene.dupont@exemple.fr") == "h••••@exemple.fr"
    assert pages.mask_address("a@b.fr") == "a••••@b.fr"
    assert pages.mask_address("jürgen@bücher.de") == "j••••@bücher.de"
    assert masked_path("/desinscription/2a.Q1w2e3r4t5y6u7i8o9p0aZ") == \
        "/desinscription/<token>"
    assert masked_path("/d/2a.Q1w/x") == "/d/<token>/x"


def test_a_bug_is_a_500_page_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, token: str) -> None:
        raise RuntimeError("a bug, with a secret detail")

    monkeypatch.setattr(service.Service, "find", broken)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", templates_dir=tmp_path,
                        unsubscribe_url="https://asso.fr/desinscription/{token}")
    with running(settings) as server:
        reply = fetch(server.base_url, "/desinscription/" + make_token(b"k", 1, "a@b.fr"))
    assert_secure_page(reply, 500)
    assert h1(reply) == "Erreur inattendue"
    assert "secret detail" not in reply.body


# --- the database ---------------------------------------------------------------------------


def test_a_database_down_at_startup_gives_503_pages_not_tracebacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    port = closed.getsockname()[1]
    settings = Settings(
        database_url=f"postgresql+psycopg://nobody@127.0.0.1:{port}/nothing",
        templates_dir=tmp_path, unsubscribe_url="https://asso.fr/desinscription/{token}",
    )
    path = "/desinscription/" + make_token(b"k", 1, "a@b.fr")
    try:
        with caplog.at_level(logging.INFO, logger="mailer.web"), running(settings) as server:
            for reply in (fetch(server.base_url, path), post(server.base_url, path)):
                assert_secure_page(reply, 503)
                assert h1(reply) == "Service momentanément indisponible"
                assert reply.headers["retry-after"] == str(pages.RETRY_AFTER_SECONDS)
                assert "nobody" not in reply.body
                assert "127.0.0.1" not in reply.body
            # A malformed token needs no database: still the plain 404.
            assert fetch(server.base_url, "/desinscription/nope").status == 404
    finally:
        closed.close()
    assert "database unavailable at startup" in caplog.text
    assert "database unavailable:" in caplog.text


class Relay:
    """A TCP relay on 127.0.0.1 to the PostgreSQL server, which the test can cut and restore."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for sock in self.sockets:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.mark.postgres
def test_postgresql_going_away_gives_503_then_recovers(
    postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = make_url(postgres_url)
    relay = Relay(url.host or "127.0.0.1", url.port or 5432)
    settings = Settings(
        database_url=url.set(host="127.0.0.1", port=relay.port).render_as_string(False),
        templates_dir=tmp_path / "templates",
        unsubscribe_url="https://asso.fr/desinscription/{token}",
    )
    try:
        import_people(settings, tmp_path, PEOPLE[:1])
        path = "/desinscription/" + token_of(settings, PEOPLE[0])
        with caplog.at_level(logging.ERROR, logger="mailer.web"), running(settings) as server:
            assert fetch(server.base_url, path).status == 200
            relay.cut()
            for reply in (fetch(server.base_url, path), post(server.base_url, path)):
                assert_secure_page(reply, 503)
            relay.up = True
            assert fetch(server.base_url, path).status == 200
            assert post(server.base_url, path).status == 200
        assert "database unavailable" in caplog.text
        assert statuses(settings)[PEOPLE[0]] == "unsubscribed"
    finally:
        relay.close()


# --- mailer serve ---------------------------------------------------------------------------


def test_serve_on_a_port_in_use_is_a_one_line_error(settings: Settings, tmp_path: Path) -> None:
    busy = socket.create_server(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        with pytest.raises(ConfigError) as caught:
            web.serve(replace(settings, unsubscribe_url="https://asso.fr/d/{token}"),
                      "127.0.0.1", port)
    finally:
        busy.close()
    assert caught.value.message == (
        f"cannot listen on 127.0.0.1:{port}: the address is already in use")
    assert caught.value.hint is not None
    assert "--port" in caught.value.hint


def test_serve_answers_logs_no_token_and_stops_on_ctrl_c(
    settings: Settings, tmp_path: Path
) -> None:
    """`web.serve` in a process of its own, as `mailer serve` runs it."""
    url = "http://127.0.0.1:9/desinscription/{token}"
    settings = replace(settings, unsubscribe_url=url)
    import_people(settings, tmp_path, PEOPLE[:1])
    token = token_of(settings, PEOPLE[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(MAILER_DATABASE_URL=settings.database_url, MAILER_UNSUBSCRIBE_URL=url,
               MAILER_TEMPLATES_DIR=str(settings.templates_dir))
    code = ("from mailer import web; from mailer.core import config; "
            "web.serve(config.load_settings(), '127.0.0.1', 0)")
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        found = re.fullmatch(r"Answering unsubscribe links at (http://127\.0\.0\.1:\d+)"
                             r"/desinscription/\{token\}\n", first)
        assert found, first + process.stderr.read() if process.stderr else first
        base = found.group(1)
        assert process.stdout.readline() == f"  for {url}\n"
        while (line := process.stdout.readline()) != "Press Ctrl-C to stop.\n":
            assert line, "serve stopped early"
        assert fetch(base, f"/desinscription/{token}").status == 200
        assert post(base, f"/desinscription/{token}").status == 200
        assert fetch(base, f"/desinscription/{token[:-3]}").status == 404
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out.endswith("Stopped.\n")
    assert token not in out + err
    assert token[:-3] not in out + err
    assert '"GET /desinscription/<token>" 200' in err
    assert '"POST /desinscription/<token>" 200' in err
    assert '"GET /desinscription/<token>" 404' in err
    assert "unsubscribed (one-click)" in err
    assert "Traceback" not in err
    assert statuses(settings)[PEOPLE[0]] == "unsubscribed"
