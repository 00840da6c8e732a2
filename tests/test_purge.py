"""`mailer purge`: what it removes, what it keeps, what it refuses; checked on the file's bytes.

The scenario is the closure notice's: the example list is imported and sent (to an outbox),
one person unsubscribes, then the campaign and at last everyone's personal data are purged.
On SQLite, the database file and its WAL are read byte by byte afterwards.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, update

from mailer import api
from mailer.core.config import Settings
from mailer.store.models import Attempt, Bounce, Campaign, Delivery, Purge, Subscriber, Suppression
from tests.conftest import REPO_TEMPLATES
from tests.fakes import FakeClock

EXAMPLE = Path(__file__).parent.parent / "examples" / "abonnes-excel.csv"
ACTIVE = 7
# What names the people of the example list, as it could be stored (lowercased for the search).
PERSONAL = [
    b"helene.dupont", b"francois.lefevre", b"zoe.oeuvray", b"jurgen@", b"xn--bcher-kva",
    b"contact@association-exemple", b"anais.ndiaye", b"benoit.riviere", "lefèvre".encode(),
    "hélène".encode(), b"dupont", "rivière".encode(), b"n'diaye",
]


@pytest.fixture
def sent(cli, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The example list imported and the closure notice sent to ./out; one unsubscribed."""
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    assert cli("import", str(EXAMPLE)).code == 0
    result = cli("send", "closure-notice", "--outbox", "out")
    assert result.code == 0, result.stderr
    assert cli("subscribers", "unsubscribe", "anais.ndiaye@exemple.fr").code == 0
    return cli


def count(database_url: str, model: type) -> int:
    return int(_scalars(database_url, select(func.count()).select_from(model))[0])


def execute(database_url: str, statement: object) -> None:
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(statement)  # type: ignore[call-overload]
    engine.dispose()


def file_bytes(tmp_path: Path) -> bytes:
    """The database file and whatever sits beside it (WAL, shared memory), lowercased."""
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("subscribers.db*"))).lower()


def readable(data: bytes, needles: list[bytes]) -> list[bytes]:
    return [needle for needle in needles if needle.lower() in data]


def test_purging_a_finished_campaign_keeps_its_counts_and_nothing_else(
    sent, database_url: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    before = json.loads(sent("status", "closure-notice", "--json").stdout)
    assert before["counts"]["sent"] == ACTIVE
    message_ids = [
        mid.encode() for mid in _scalars(database_url, select(Delivery.message_id))
    ]
    assert count(database_url, Attempt) == ACTIVE

    result = sent("purge", "--campaign", "closure-notice")
    assert result.code == 0, result.stderr
    assert "Purged closure-notice" in result.stdout
    assert f"Removed {ACTIVE} deliveries, {ACTIVE} attempt log entries" in result.stdout

    assert count(database_url, Delivery) == 0
    assert count(database_url, Attempt) == 0
    after = json.loads(sent("status", "closure-notice", "--json").stdout)
    assert after["counts"] == before["counts"]
    assert after["total"] == before["total"]
    assert after["purged_at"]
    # The subscribers stay (the list is not over); the purge is logged, with counts only.
    assert count(database_url, Subscriber) == ACTIVE
    assert _scalars(database_url, select(Purge.deliveries)) == [ACTIVE]
    if database_url.startswith("sqlite"):
        # The attempts log named each message by its Message-ID and outbox file.
        assert readable(file_bytes(tmp_path), message_ids) == []


def test_a_purged_campaign_is_never_sent_again(sent) -> None:  # type: ignore[no-untyped-def]
    assert sent("purge", "--campaign", "closure-notice").code == 0
    again = sent("send", "closure-notice", "--outbox", "out2")
    assert again.code == 1
    assert "was purged" in again.stderr
    assert "second copy" in again.stderr
    assert "Traceback" not in again.stderr
    assert not Path("out2").exists() or not list(Path("out2").glob("*.eml"))
    report = sent("report", "closure-notice")
    assert report.code == 1
    assert "only its counts remain" in report.stderr
    retry = sent("retry", "--outbox", "out2")
    assert retry.code == 0
    assert "Nothing is due" in retry.stdout
    twice = sent("purge", "--campaign", "closure-notice")
    assert twice.code == 0
    assert "already purged" in twice.stdout


def test_an_unfinished_campaign_is_refused_and_nothing_is_removed(
    sent, database_url: str  # type: ignore[no-untyped-def]
) -> None:
    execute(database_url, update(Delivery).where(Delivery.id.in_(
        select(Delivery.id).order_by(Delivery.id).limit(2).scalar_subquery()
    )).values(state="deferred"))
    result = sent("purge", "--campaign", "closure-notice")
    assert result.code == 1
    assert result.stderr.startswith("Error: campaign 'closure-notice' is not finished")
    assert "2 deferred" in result.stderr
    assert "Hint:" in result.stderr
    everything = sent("purge", "--all-personal-data", "--yes")
    assert everything.code == 1
    assert "not finished" in everything.stderr
    # Without --campaign it is kept and said so.
    kept = sent("purge", "--older-than", "0d")
    assert kept.code == 0
    assert "Kept closure-notice: still to send: 2 deferred" in kept.stdout
    assert count(database_url, Delivery) == ACTIVE
    assert count(database_url, Attempt) == ACTIVE
    assert count(database_url, Subscriber) == ACTIVE


def test_older_than_keeps_recent_campaigns(settings: Settings, sent) -> None:  # type: ignore[no-untyped-def]
    result = sent("purge")  # default: idle for 30 days
    assert result.code == 0
    assert "Kept closure-notice: last activity" in result.stdout
    assert "less than 30d ago" in result.stdout
    later = FakeClock(datetime.now(UTC) + timedelta(days=31))
    report = api.purge(settings, older_than="30d", clock=later)
    assert report.purged == ["closure-notice"]


def test_bad_options_are_one_line_errors(sent) -> None:  # type: ignore[no-untyped-def]
    for args, words in [
        (["--older-than", "soon"], "--older-than 'soon'"),
        (["--all-personal-data", "--campaign", "closure-notice"], "takes no --campaign"),
        (["--campaign", "nope"], "unknown campaign 'nope'"),
    ]:
        result = sent("purge", *args)
        assert result.code == 1, args
        assert result.stderr.startswith("Error: ")
        assert words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_all_personal_data_leaves_no_address_readable(
    sent, database_url: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    bystander = None
    if database_url.startswith("sqlite"):
        assert len(readable(file_bytes(tmp_path), PERSONAL)) == len(PERSONAL)
        # Another process holds the database open (`mailer serve`, say): closing the purge's
        # own connection then does not checkpoint the WAL; the purge must do it.
        bystander = sqlite3.connect(tmp_path / "subscribers.db")
        bystander.execute("SELECT count(*) FROM subscribers").fetchone()
    result = sent("purge", "--all-personal-data", "--yes", "--json")
    assert result.code == 0, result.stderr
    if bystander is not None:
        assert readable(file_bytes(tmp_path), PERSONAL) == []
        bystander.close()
    data = json.loads(result.stdout)
    assert data["purged"] == ["closure-notice"]
    assert data["removed"]["subscribers"] == ACTIVE
    assert data["removed"]["suppressions"] == 1  # the one who unsubscribed

    for model in (Subscriber, Delivery, Attempt, Bounce):
        assert count(database_url, model) == 0, model
    assert count(database_url, Suppression) == 1
    status = json.loads(sent("status", "--json").stdout)
    assert status["subscribers"] == {"active": 0, "unsubscribed": 0, "bounced": 0}
    assert status["campaigns"][0]["counts"]["sent"] == ACTIVE
    assert _scalars(database_url, select(Campaign.purged_at))[0] is not None
    if database_url.startswith("sqlite"):
        assert readable(file_bytes(tmp_path), PERSONAL) == []
        wal = tmp_path / "subscribers.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0

    # An old file imported again cannot bring back the one who unsubscribed.
    again = sent("import", str(EXAMPLE), "--json")
    rejected = json.loads(again.stdout)["rejected"]
    assert [r["reason"] for r in rejected if "purged" in r["reason"]] == [
        "address unsubscribed before the list was purged; not imported again"
    ]


def _scalars(database_url: str, query: object) -> list:  # type: ignore[type-arg]
    engine = create_engine(database_url)
    with engine.connect() as connection:
        values = list(connection.scalars(query))  # type: ignore[call-overload]
    engine.dispose()
    return values
