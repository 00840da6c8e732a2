"""`mailer serve` at its edges: bodies, fields, a locked database, the log, huge token ids,
clients that go away, stall or trickle, and too many connections.

Against a real uvicorn (web.Server in a thread, as in test_web.py) and real databases (SQLite
and PostgreSQL through `database_url`); raw sockets where a well-behaved client library
cannot misbehave enough. The limits are small here (`Limits(...)`) so that each case takes
about a second; the bounds on time are generous, to show "not stuck", never to benchmark.
"""

from __future__ import annotations

import http.client
import logging
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from mailer import api, web
from mailer.core.config import Settings
from mailer.core.tokens import token_subscriber_id
from mailer.store.engine import open_engine
from mailer.web.limits import Limits, count_fields
from mailer.web.middleware import masked_path
from tests.test_web import (
    FORM,
    ONE_CLICK,
    PEOPLE,
    Reply,
    assert_secure_page,
    fetch,
    h1,
    import_people,
    multipart,
    post,
    statuses,
    token_of,
)

URL = "https://asso.fr/desinscription/{token}"
PATIENCE = 10.0  # seconds: what "at once" and "not stuck" may take at most on a slow machine


@contextmanager
def serving(settings: Settings, limits: Limits | None = None) -> Iterator[web.Server]:
    if settings.database_url.startswith("sqlite"):
        api.check_database(settings)  # `serve` only reads: it never creates the database
    server = web.Server(web.create_app(settings, limits=limits), web.listen("127.0.0.1", 0),
                       log_config=None)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def listed(settings: Settings, tmp_path: Path) -> Settings:
    """Settings with an unsubscribe URL, and PEOPLE imported (all active): on each backend."""
    settings = replace(settings, unsubscribe_url=URL)
    import_people(settings, tmp_path, PEOPLE)
    return settings


@pytest.fixture
def listed_sqlite(tmp_path: Path) -> Settings:
    """The same on SQLite only: for what happens around the database work (connections,
    bodies, the log), which does not depend on the backend."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'subscribers.db'}",
                        templates_dir=tmp_path / "templates", unsubscribe_url=URL)
    import_people(settings, tmp_path, PEOPLE)
    return settings


def connect(server: web.Server) -> socket.socket:
    port = server.socket.getsockname()[1]
    return socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (socket.timeout if it never does)."""
    chunks = []
    with suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def closed_within(sock: socket.socket, seconds: float, feed: Callable[[], bytes] | None = None,
                  every: float = 0.05) -> float | None:
    """Seconds until the server closes `sock` (feeding it `feed()` meanwhile), or None."""
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        if feed is not None:
            try:
                sock.sendall(feed())
            except OSError:
                return elapsed
        readable, _, _ = select.select([sock], [], [], every)
        if readable:
            try:
                if not sock.recv(65536):
                    return time.monotonic() - start
            except OSError:
                return time.monotonic() - start
    return None


def wait_for(condition: Callable[[], bool], seconds: float = PATIENCE) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert "Traceback" not in caplog.text
    assert "Exception in ASGI application" not in caplog.text
    assert "QueuePool" not in caplog.text


# --- bodies and fields ----------------------------------------------------------------------


def test_a_body_or_a_form_over_the_limits_is_413_at_once(listed_sqlite: Settings) -> None:
    token = token_of(listed_sqlite, PEOPLE[0])
    path = f"/desinscription/{token}"
    before = statuses(listed_sqlite)
    with serving(listed_sqlite) as server:  # the production limits
        # 200 MB announced, 1 KB sent: the answer comes without waiting for the rest.
        sock = connect(server)
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 200000000\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
                     + b"&" * 1024)
        answer = read_all(sock)  # and the server closes the connection
        sock.close()
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b"connection: close" in answer.lower()
        # Chunked, no length announced: 413 as soon as it goes past the limit.
        sock = connect(server)
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode())
        for _ in range(5):
            sock.sendall(b"400\r\n" + b"&" * 1024 + b"\r\n")
        answer = read_all(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        # Within the size, too many fields: empty ones count too.
        cases: list[tuple[bytes | str, dict[str, str]]] = [
            ("&" * 3000 + ONE_CLICK, FORM),
            (ONE_CLICK + "&" * 3000, FORM),
            multipart({f"f{i}": "" for i in range(30)} | {"List-Unsubscribe": "One-Click"}),
        ]
        for body, headers in cases:
            reply = fetch(server.base_url, path, "POST", body, headers)
            assert_secure_page(reply, 413)
            assert h1(reply) == "Demande trop volumineuse"
        assert statuses(listed_sqlite) == before
        # The same server still answers a real click, as before.
        assert post(server.base_url, path).status == 200
    assert statuses(listed_sqlite)[PEOPLE[0]] == "unsubscribed"


def test_fields_are_counted_on_the_raw_bytes() -> None:
    assert count_fields("application/x-www-form-urlencoded", b"") == 0
    assert count_fields("application/x-www-form-urlencoded", ONE_CLICK.encode()) == 1
    assert count_fields("application/x-www-form-urlencoded", b"&&&&") == 5
    body, headers = multipart({"a": "1", "b": ""})
    assert count_fields(headers["Content-Type"], body) == 2


# --- a locked database ----------------------------------------------------------------------


@contextmanager
def write_lock(settings: Settings) -> Iterator[None]:
    """Another process holding the database's write lock (reads still go through)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        holder = sqlite3.connect(str(url.database), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    engine = open_engine(settings.database_url)
    try:
        with engine.connect() as connection, connection.begin():
            connection.execute(text("LOCK TABLE subscribers IN EXCLUSIVE MODE"))
            yield
    finally:
        engine.dispose()


def test_a_locked_database_is_a_quick_503_and_one_log_line(
    listed: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Many POSTs while another process holds the write lock: each waits a bounded time,
    then 503 with Retry-After; the pool is never exhausted; a GET is answered meanwhile."""
    target = f"/desinscription/{token_of(listed, PEOPLE[0])}"
    other = f"/desinscription/{token_of(listed, PEOPLE[1])}"
    limits = Limits(database_wait=1.0)
    replies: list[Reply] = []

    def one_post() -> None:
        replies.append(post(server.base_url, target))

    with caplog.at_level(logging.INFO), serving(listed, limits) as server:
        with write_lock(listed):
            posts = [threading.Thread(target=one_post) for _ in range(30)]
            for thread in posts:
                thread.start()
            time.sleep(0.3)  # they are all waiting now: for their turn, or for the lock
            start = time.monotonic()
            look = fetch(server.base_url, other)  # a client timeout here: stuck behind them
            looked_in = time.monotonic() - start
            for thread in posts:
                thread.join(PATIENCE)
        assert_secure_page(look, 200)
        assert looked_in < PATIENCE / 2
        assert len(replies) == 30
        for reply in replies:
            assert_secure_page(reply, 503)
            assert h1(reply) == "Service momentanément indisponible"
            assert reply.headers["retry-after"] == "60"
        # The lock released: the same click goes through.
        assert post(server.base_url, target).status == 200
    assert statuses(listed)[PEOPLE[0]] == "unsubscribed"
    busy = [r for r in caplog.records if r.getMessage().startswith("database busy")]
    assert len(busy) == 1, caplog.text
    assert "database unavailable" not in caplog.text  # busy, not down
    no_traceback(caplog)


# --- the log ----------------------------------------------------------------------------------


def test_what_a_client_sends_cannot_forge_log_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
                        templates_dir=tmp_path, unsubscribe_url=URL)
    forged = "INFO:%20subscriber%20%2342%20unsubscribed%20(one-click)"
    paths = [
        f"/desinscription/x%0D%0A{forged}",
        f"/desinscription/x%0A{forged}",
        f"/desinscription/x%E2%80%A8{forged}",  # U+2028, a line separator to some viewers
        "/desinscription/x%1B%5B2J%1B%5B31mred",  # ANSI: clear the screen, colour
        "/desinscription/x%22%20200%20%22",  # quotes: a fake end of the logged path
    ]
    formatter = logging.Formatter("%(levelname)s: %(message)s")
    with caplog.at_level(logging.INFO, logger="mailer.web"), serving(settings) as server:
        for path in paths:
            assert fetch(server.base_url, path).status == 404
    lines = [formatter.format(r) for r in caplog.records if r.name == "mailer.web.access"]
    assert len(lines) == len(paths)
    for line in lines:
        assert line.splitlines() == [line]
        assert line.isprintable(), repr(line)
        assert line.count('"') == 2, line
    assert "%0D%0AINFO: subscriber #42 unsubscribed" in lines[0]
    assert "%E2%80%A8" in lines[2]
    assert "%1B[2J" in lines[3]
    assert masked_path("/d/2a.Q1w\r\n") == "/d/<token>%0D%0A"
    assert masked_path("/d/100%") == "/d/100%25"


# --- token ids past 64 bits ---------------------------------------------------------------------


def test_a_token_id_past_a_signed_64_bit_integer_is_404(listed: Settings) -> None:
    mac = "A" * 22
    assert token_subscriber_id(f"{2**63 - 1:x}.{mac}") == 2**63 - 1
    huge = [f"{2**63:x}.{mac}", f"{2**64 - 1:x}.{mac}"]
    for token in huge:
        assert token_subscriber_id(token) is None
    with serving(listed) as server:
        for token in huge:
            for reply in (fetch(server.base_url, f"/desinscription/{token}"),
                          post(server.base_url, f"/desinscription/{token}")):
                assert_secure_page(reply, 404)
                assert h1(reply) == "Lien de désinscription invalide"


# --- clients that go away, stall, trickle ------------------------------------------------------


def test_a_client_going_away_mid_body_is_one_quiet_line(
    listed_sqlite: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    path = f"/desinscription/{token_of(listed_sqlite, PEOPLE[0])}"
    aborted = 10
    with caplog.at_level(logging.INFO), serving(listed_sqlite) as server:
        for _ in range(aborted):
            sock = connect(server)
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 26\r\n"
                         "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
                         + ONE_CLICK.encode()[:10])
            sock.close()

        def gone() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "went away" in r.getMessage()]

        assert wait_for(lambda: len(gone()) >= aborted), caplog.text
        time.sleep(0.2)  # anything else would have been logged by now
    assert len(gone()) == aborted
    assert all(r.name == "mailer.web.access" and r.levelno == logging.INFO for r in gone())
    assert '"POST /desinscription/<token>" 499' in gone()[0].getMessage()
    no_traceback(caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert statuses(listed_sqlite)[PEOPLE[0]] == "active"


def test_idle_trickled_and_stalled_connections_are_closed(
    listed_sqlite: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    path = f"/desinscription/{token_of(listed_sqlite, PEOPLE[0])}"
    head = (f"POST {path} HTTP/1.1\r\nHost: a\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n").encode()
    limits = Limits(read_timeout=0.5, keep_alive=1)
    with caplog.at_level(logging.INFO), serving(listed_sqlite, limits) as server:
        # Connected, never a byte sent.
        idle = connect(server)
        assert closed_within(idle, PATIENCE) is not None
        # Headers trickled a line at a time, for ever.
        trickled = connect(server)
        trickled.sendall(f"GET {path} HTTP/1.1\r\n".encode())
        assert closed_within(trickled, PATIENCE, lambda: b"X-Slow: 1\r\n") is not None
        # A body that stops half-way; a body trickled a byte at a time.
        stalled = connect(server)
        stalled.sendall(head + b"Content-Length: 26\r\n\r\n" + ONE_CLICK.encode()[:5])
        assert closed_within(stalled, PATIENCE) is not None
        slow = connect(server)
        slow.sendall(head + b"Content-Length: 4000\r\n\r\n")
        assert closed_within(slow, PATIENCE, lambda: b"&") is not None
        # After an answer, the next request has its own deadline: trickling it is closed too.
        again = connect(server)
        again.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        assert closed_within(again, PATIENCE, lambda: b"G") is not None
        for sock in (idle, trickled, stalled, slow, again):
            sock.close()
        # A client that takes its time between requests, but sends each one whole, is served.
        port = server.socket.getsockname()[1]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE)
        for _ in range(3):
            connection.request("GET", path)
            assert connection.getresponse().read()
            time.sleep(0.2)  # 0.6 s in all: more than one read timeout, less than a keep-alive
        connection.close()
    # The requests cut short are one line each in the access log, nothing more.
    cut = [r.getMessage() for r in caplog.records if " 499 " in r.getMessage()]
    assert cut == ['"POST /desinscription/<token>" 499 (not received whole within the read '
                   'timeout)'] * 2, caplog.text
    no_traceback(caplog)
    assert statuses(listed_sqlite)[PEOPLE[0]] == "active"


def test_connections_past_the_limit_are_refused_at_once(
    listed_sqlite: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    path = f"/desinscription/{token_of(listed_sqlite, PEOPLE[0])}"
    limits = Limits(max_connections=5, read_timeout=PATIENCE)
    with caplog.at_level(logging.INFO), serving(listed_sqlite, limits) as server:
        state = server.uvicorn.server_state
        held = [connect(server) for _ in range(5)]
        assert wait_for(lambda: len(state.connections) == 5)
        for _ in range(3):
            extra = connect(server)
            answer = read_all(extra)  # answered and closed at once
            extra.close()
            assert answer.startswith(b"HTTP/1.1 503 "), answer
        for sock in held:
            sock.close()
        assert wait_for(lambda: not state.connections)
        assert fetch(server.base_url, path).status == 200
    refused = [r for r in caplog.records if "refusing new ones" in r.getMessage()]
    assert len(refused) == 1, caplog.text
    no_traceback(caplog)
