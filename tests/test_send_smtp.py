"""`mailer send` and `mailer retry` through the CLI against a real SMTP server (aiosmtpd).

The relay answers by the recipient's local part (tests/smtpserver.py): each test imports a
list whose addresses script the replies, sends, and checks what the relay received and what
the ledger says, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import REPO_TEMPLATES

if TYPE_CHECKING:
    from tests.smtpserver import ScriptedSMTPServer, TLSCertificates

STATES = ["pending", "sending", "sent", "deferred", "uncertain", "failed", "skipped"]


@pytest.fixture
def relay(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Point the CLI at a relay; import a list of addresses; return the cli runner."""
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")

    def setup(server: ScriptedSMTPServer, addresses: list[str], **env: str) -> Any:
        monkeypatch.setenv("MAILER_SMTP_HOST", server.host)
        monkeypatch.setenv("MAILER_SMTP_PORT", str(server.port))
        monkeypatch.setenv("MAILER_SMTP_SECURITY", server.tls)
        monkeypatch.setenv("MAILER_SMTP_TIMEOUT", "3")
        monkeypatch.setenv("MAILER_SMTP_DATA_TIMEOUT", "3")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        path = tmp_path / "list.csv"
        rows = [f"{a},Hélène,Dupont" for a in addresses]
        path.write_text("email,first_name,last_name\n" + "\n".join(rows) + "\n", "utf-8")
        result = cli("import", str(path))
        assert result.code == 0, result.stderr
        return cli

    return setup


def status(cli: Any) -> dict[str, Any]:
    result = cli("status", "closure-notice", "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_send_delivers_one_personal_message_to_each(relay, smtp_server) -> None:  # type: ignore[no-untyped-def]
    addresses = [f"ok{i}@asso.fr" for i in range(12)]
    cli = relay(smtp_server, addresses)
    result = cli("send", "closure-notice", "--concurrency", "3")
    assert result.code == 0, result.stderr
    assert "closure-notice: 12 sent, 0 deferred, 0 failed" in result.stdout
    assert smtp_server.copies_by_recipient() == dict.fromkeys(addresses, 1)
    assert 1 < len(smtp_server.sessions) <= 3
    ids = {m.message_id for m in smtp_server.messages}
    assert len(ids) == 12
    for message in smtp_server.messages:
        assert message.sender == "contact@cime.example.org"
        assert b"Bonjour H=C3=A9l=C3=A8ne," in message.data
        assert f"To: =?utf-8?q?H=C3=A9l=C3=A8ne?= Dupont <{message.recipients[0]}>".encode() \
            in message.data
    data = status(cli)
    assert data["counts"] == {**dict.fromkeys(STATES, 0), "sent": 12}
    # The relay's reply, with its queue id, is kept.
    report = cli("report", "closure-notice", "--state", "sent")
    replies = [row["last_reply"] for row in csv.DictReader(report.stdout.splitlines())]
    assert all(r.startswith("250 2.0.0 Ok: queued as Q") for r in replies)
    assert cli("send", "closure-notice").code == 0
    assert len(smtp_server.messages) == 12  # nothing twice


def test_each_reply_lands_in_its_state_and_retry_finishes_the_job(relay, smtp_server) -> None:  # type: ignore[no-untyped-def]
    addresses = ["ok@asso.fr", "temp@asso.fr", "reject@asso.fr", "full@asso.fr",
                 "refuse-data@asso.fr", "drop-after-data@asso.fr", "drop-before-data@asso.fr",
                 "greylist@asso.fr"]
    cli = relay(smtp_server, addresses, MAILER_RETRY_BASE_DELAY="0.05",
                MAILER_RETRY_MAX_DELAY="0.1")
    result = cli("send", "closure-notice", "--json")
    assert result.code == 0, result.stderr
    counts = json.loads(result.stdout)["counts"]
    assert counts == {**dict.fromkeys(STATES, 0), "sent": 1, "deferred": 4, "failed": 2,
                      "uncertain": 1}
    report = {row["email"]: row for row in csv.DictReader(
        cli("report", "closure-notice").stdout.splitlines())}
    assert report["reject@asso.fr"]["last_code"] == "550"
    assert report["reject@asso.fr"]["subscriber_status"] == "bounced"
    assert report["refuse-data@asso.fr"]["state"] == "failed"
    assert report["refuse-data@asso.fr"]["subscriber_status"] == "active"  # 5.7.1: not 5.1.x
    assert report["full@asso.fr"]["state"] == "deferred"  # 552 on RCPT is temporary
    assert report["drop-after-data@asso.fr"]["state"] == "uncertain"
    assert report["drop-before-data@asso.fr"]["state"] == "deferred"
    human = cli("status")
    assert "1 uncertain" in human.stdout
    time.sleep(0.2)
    retried = cli("retry", "--json")
    assert retried.code == 0, retried.stderr
    after = json.loads(retried.stdout)["campaigns"][0]["counts"]
    # temp and greylist succeed now; the uncertain one is resent (same Message-ID);
    # full and drop-before-data are deferred again; nothing failed is retried.
    assert (after["sent"], after["failed"], after["uncertain"], after["deferred"]) == (3, 2, 1, 2)
    assert smtp_server.copies("temp@asso.fr") == 1
    drops = [m for m in smtp_server.messages if m.recipients == ("drop-after-data@asso.fr",)]
    assert len(drops) == 2
    assert drops[0].message_id == drops[1].message_id
    assert smtp_server.rcpt_attempts("reject@asso.fr") == 1


def test_held_uncertain_deliveries_are_not_resent(relay, smtp_server) -> None:  # type: ignore[no-untyped-def]
    cli = relay(smtp_server, ["drop-after-data@asso.fr", "ok@asso.fr"])
    assert cli("send", "closure-notice").code == 0
    assert cli("retry", "--uncertain", "hold").stdout == "Nothing is due.\n"
    assert smtp_server.copies("drop-after-data@asso.fr") == 1
    assert status(cli)["counts"]["uncertain"] == 1


def test_an_unreachable_relay_stops_the_run_and_marks_nobody(  # type: ignore[no-untyped-def]
    relay, smtp_server, closed_port
) -> None:
    smtp_server.port = closed_port
    cli = relay(smtp_server, [f"ok{i}@asso.fr" for i in range(5)])
    result = cli("send", "closure-notice")
    assert result.code == 75
    assert result.stderr.splitlines()[0] == (
        f"Error: cannot connect to the relay 127.0.0.1:{closed_port}: connection refused")
    assert "Traceback" not in result.stderr
    assert status(cli)["counts"] == {**dict.fromkeys(STATES, 0), "pending": 5}
    assert cli("retry").code == 75  # cron: run again later


def test_a_relay_that_goes_away_mid_run(relay, smtp_server_factory) -> None:  # type: ignore[no-untyped-def]
    server = smtp_server_factory(slow_seconds=0.05)
    cli = relay(server, [f"slow{i}@asso.fr" for i in range(40)], MAILER_CONCURRENCY="2")
    import threading

    def stop_later() -> None:
        while len(server.messages) < 6:
            time.sleep(0.01)
        server.stop()

    stopper = threading.Thread(target=stop_later)
    stopper.start()
    result = cli("send", "closure-notice")
    stopper.join()
    assert result.code == 75, result.stderr
    counts = status(cli)["counts"]
    assert counts["sending"] == 0
    assert counts["failed"] == 0
    # Whatever the relay received is `sent`, or `uncertain` when its reply was cut off:
    # never pending or deferred, which would send it again as if new.
    assert counts["sent"] + counts["uncertain"] >= len(server.messages) >= 6
    assert counts["uncertain"] <= 2  # at most one per connection was cut off
    assert counts["sent"] + counts["pending"] + counts["deferred"] + counts["uncertain"] == 40


def test_refused_credentials_are_a_configuration_error(
    relay, smtp_server_factory, tls_certificates: TLSCertificates  # type: ignore[no-untyped-def]
) -> None:
    server = smtp_server_factory(tls="starttls", certificates=tls_certificates,
                                 auth={"lettre": "bon-mot-de-passe"})
    cli = relay(server, ["ok@asso.fr"], MAILER_SMTP_USERNAME="lettre",
                MAILER_SMTP_PASSWORD="mauvais", MAILER_SMTP_CA_FILE=str(tls_certificates.ca_file))
    result = cli("send", "closure-notice")
    assert result.code == 78
    assert result.stderr.startswith("Error: ")
    assert "mauvais" not in result.stderr
    assert status(cli)["counts"]["pending"] == 1
    import os

    os.environ["MAILER_SMTP_PASSWORD"] = "bon-mot-de-passe"
    good = cli("send", "closure-notice")
    assert good.code == 0, good.stderr
    assert server.copies("ok@asso.fr") == 1
    assert server.sessions[-1].tls
    assert server.sessions[-1].login == "lettre"


def test_an_unknown_certificate_authority_is_refused(
    relay, smtp_server_factory, tls_certificates: TLSCertificates  # type: ignore[no-untyped-def]
) -> None:
    server = smtp_server_factory(tls="tls", certificates=tls_certificates)
    cli = relay(server, ["ok@asso.fr"])
    result = cli("send", "closure-notice")
    assert result.code == 78
    assert "certificate" in result.stderr
    assert status(cli)["counts"]["pending"] == 1
    assert server.messages == []


def test_starttls_required_but_not_offered(relay, smtp_server) -> None:  # type: ignore[no-untyped-def]
    cli = relay(smtp_server, ["ok@asso.fr"], MAILER_SMTP_SECURITY="starttls")
    result = cli("send", "closure-notice")
    assert result.code == 78
    assert "STARTTLS" in result.stderr
    assert status(cli)["counts"]["pending"] == 1


def test_rate_limit_spreads_the_messages(relay, smtp_server) -> None:  # type: ignore[no-untyped-def]
    cli = relay(smtp_server, [f"ok{i}@asso.fr" for i in range(6)])
    started = time.monotonic()
    assert cli("send", "closure-notice", "--rate", "20/s").code == 0
    assert time.monotonic() - started >= 5 / 20
    assert len(smtp_server.messages) == 6
    assert cli("send", "closure-notice", "--rate", "fast").code == 78


def test_several_worker_processes_share_the_list(relay, smtp_server) -> None:  # type: ignore[no-untyped-def]
    addresses = [f"ok{i}@asso.fr" for i in range(300)] + ["reject@asso.fr", "temp@asso.fr"]
    cli = relay(smtp_server, addresses)
    result = cli("send", "closure-notice", "--workers", "2", "--concurrency", "4", "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["run"]["sent"] == 300
    assert (data["run"]["failed"], data["run"]["deferred"]) == (1, 1)
    assert data["counts"]["sent"] == 300
    copies = smtp_server.copies_by_recipient()
    assert all(copies[a] == 1 for a in addresses[:300])
    assert smtp_server.max_concurrent_transactions <= 4  # connections shared out, not multiplied
    owners = _workers_in_attempts(cli)
    assert len(owners) == 2


def _workers_in_attempts(cli: Any) -> set[str]:
    import os

    from sqlalchemy import create_engine, select

    from mailer.store.models import Attempt

    engine = create_engine(os.environ["MAILER_DATABASE_URL"])
    with engine.connect() as connection:
        found = set(connection.scalars(select(Attempt.worker)))
    engine.dispose()
    return found
