"""MAILER_QUOTA under a race: several real `mailer` processes at once, one recording relay.

With `MAILER_QUOTA=300/min` and 400 subscribers, the processes (`python -m mailer`, children
of this test, in tmp_path with MAILER_* variables) share the window through the database: the
first 300 go at once, then every process waits in-run for the slots that open a minute later
(under ~90 s away, so they wait rather than stop) and the last 100 follow. The relay runs in a
thread of this test process and stamps each message it accepts (`received_at`): no sliding
60-second window of those stamps may hold more than 300 messages, and each subscriber gets
exactly one copy.

- PostgreSQL (skipped without MAILER_TEST_POSTGRES_URL): two `mailer send` and two
  `mailer retry`, started together (the retries as soon as the campaign is queued).
- SQLite: `mailer send --workers 2` and `mailer retry --workers 2`: four sending processes.

Each test takes a little over a minute: the window's own length.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.children import Child, Done
from tests.conftest import REPO_TEMPLATES
from tests.smtpserver import ScriptedSMTPServer, ServerFactory

CAMPAIGN = "closure-notice"
SUBSCRIBERS = 400
QUOTA = 300  # messages...
WINDOW = 60.0  # ...per this many seconds: MAILER_QUOTA=300/min
CONCURRENCY = 4  # SMTP connections per process
FINISH_WITHIN = 150.0  # seconds a process may run: one window, a wait for slots, the rest
LEFT = ("pending", "sending", "deferred", "uncertain")  # states that still need a run


# --- child processes ---------------------------------------------------------------------


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Every child started by the test; any still running at the end is killed. Request it
    after the database fixture, so that it is torn down first: no child outlives its
    database."""
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in started:
            child.kill()


@dataclass
class Race:
    """One database, one relay, the children's environment."""

    tmp_path: Path
    database_url: str
    relay: ScriptedSMTPServer
    children: list[Child]
    everyone: list[str]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
        env.update({
            "MAILER_DATABASE_URL": self.database_url,
            "MAILER_TEMPLATES_DIR": str(self.tmp_path / "templates"),
            "MAILER_SMTP_HOST": self.relay.host,
            "MAILER_SMTP_PORT": str(self.relay.port),
            "MAILER_SMTP_SECURITY": "none",
            "MAILER_SMTP_TIMEOUT": "10",
            "MAILER_CONCURRENCY": str(CONCURRENCY),
            "MAILER_QUOTA": f"{QUOTA}/min",
        })
        return env

    def start(self, *args: str) -> Child:
        tag = f"{len(self.children) + 1:02d}-{args[0]}"
        child = Child(list(args), self.tmp_path, self.env(), tag)
        self.children.append(child)
        return child

    def run(self, *args: str) -> Done:
        child = self.start(*args)
        done = child.finish(FINISH_WITHIN)
        assert done.code == 0, f"exit status {done.code}: {child.output()}"
        assert "Traceback" not in done.stderr, child.output()
        return done

    def scalar(self, sql: str) -> Any:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                return connection.execute(text(sql)).scalar()
        finally:
            engine.dispose()

    def count(self, states: tuple[str, ...] | None = None) -> int:
        where = "" if states is None else (
            " WHERE state IN (" + ", ".join(f"'{s}'" for s in states) + ")")
        return int(self.scalar(f"SELECT count(*) FROM deliveries{where}"))


@pytest.fixture
def race_factory(
    tmp_path: Path, smtp_server_factory: ServerFactory, children: list[Child]
) -> Any:
    """`race_factory(database_url)`: the templates, 400 subscribers imported (by a child
    `mailer import`), a recording relay."""

    def make(database_url: str) -> Race:
        shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
        everyone = [f"ok{i:05d}@asso.fr" for i in range(SUBSCRIBERS)]
        rows = [f"{address},Hélène,Dupont{i}" for i, address in enumerate(everyone)]
        (tmp_path / "list.csv").write_text(
            "email,first_name,last_name\n" + "\n".join(rows) + "\n", encoding="utf-8")
        race = Race(tmp_path, database_url, smtp_server_factory(), children, everyone)
        race.run("import", "list.csv")
        return race

    return make


# --- what the relay saw -------------------------------------------------------------------


def busiest_window(stamps: list[float], seconds: float) -> tuple[int, float]:
    """The most messages stamped within any `seconds` (a window [t, t + seconds)), and the
    stamp that window starts at."""
    stamps = sorted(stamps)
    best, start, first = 0, stamps[0] if stamps else 0.0, 0
    for last, stamp in enumerate(stamps):
        while stamp - stamps[first] >= seconds:
            first += 1
        if last - first + 1 > best:
            best, start = last - first + 1, stamps[first]
    return best, start


def test_busiest_window() -> None:
    assert busiest_window([], 60) == (0, 0.0)
    assert busiest_window([0.0, 59.9, 60.0, 61.0, 119.5], 60) == (4, 59.9)
    assert busiest_window([0.0, 30.0, 60.0, 90.0], 60) == (2, 0.0)
    assert busiest_window([5.0, 1.0, 2.0], 10) == (3, 1.0)


def the_race(race: Race, senders: list[tuple[str, ...]], latecomers: list[tuple[str, ...]]
             ) -> None:
    """Start `senders`; once the campaign is queued, `latecomers` (retries); wait for all;
    then `mailer retry` until nothing is left. Check the window and the copies."""
    started = [race.start(*args) for args in senders]
    deadline = time.monotonic() + 60
    while race.count() < SUBSCRIBERS:
        assert any(child.running() for child in started) or race.count() >= SUBSCRIBERS, (
            "the senders ended before the campaign was queued: "
            + "\n".join(child.output() for child in started))
        assert time.monotonic() < deadline, "the campaign was not queued within 60 s"
        time.sleep(0.02)
    started += [race.start(*args) for args in latecomers]
    for child in started:
        done = child.finish(FINISH_WITHIN)
        assert done.code == 0, f"exit status {done.code}: {child.output()}"
        assert "Traceback" not in done.stderr, child.output()
    for _ in range(3):  # normally none is left; if some are, the next slots are not far
        if race.count(LEFT) == 0:
            break
        race.run("retry")
    assert race.count(LEFT) == 0

    stamps = [message.received_at for message in race.relay.messages]
    busiest, start = busiest_window(stamps, WINDOW)
    assert busiest <= QUOTA, (
        f"{busiest} messages within {WINDOW:g} s from {start - min(stamps):.2f} s in")
    copies = race.relay.copies_by_recipient()
    missing = [a for a in race.everyone if copies[a] == 0]
    twice = {a: n for a, n in copies.items() if n > 1}
    assert not missing, f"{len(missing)} subscribers got nothing, e.g. {missing[:5]}"
    assert not twice, f"{len(twice)} got more than one copy: {dict(list(twice.items())[:10])}"
    assert set(copies) == set(race.everyone)
    assert race.count(("sent",)) == SUBSCRIBERS
    assert race.scalar("SELECT count(*) FROM subscribers WHERE status = 'bounced'") == 0


@pytest.mark.postgres
def test_the_window_holds_across_four_processes_on_postgresql(
    postgres_url: str, race_factory: Any, children: list[Child]
) -> None:
    race = race_factory(postgres_url)
    the_race(race, senders=[("send", CAMPAIGN), ("send", CAMPAIGN)],
             latecomers=[("retry",), ("retry",)])


def test_the_window_holds_across_workers_on_sqlite(
    tmp_path: Path, race_factory: Any, children: list[Child]
) -> None:
    race = race_factory(f"sqlite:///{tmp_path / 'subscribers.db'}")
    the_race(race, senders=[("send", CAMPAIGN, "--workers", "2")],
             latecomers=[("retry", "--workers", "2")])
