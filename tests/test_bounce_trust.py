"""Bounces you can trust (issue 13): forged reports change nobody, a genuine one changes only
the delivery it is about, reasons decide what it changes, complaints unsubscribe.

A list is imported and really sent the closure notice (to an outbox), then mailboxes of
hand-made reports are imported with `mailer bounces import --json`, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from mailer.core.tokens import message_mac
from mailer.store import meta
from mailer.store.models import Bounce, Campaign, Delivery, Subscriber
from tests.conftest import REPO_TEMPLATES
from tests.test_bounces import ledger, write_box

LIST_ADDRESS = "contact@cime.example.org"  # the closure notice's From (templates/)


def send_to(cli, tmp_path: Path, addresses: list[str], *env: tuple[str, str]):  # type: ignore[no-untyped-def]
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates", dirs_exist_ok=True)
    rows = "\n".join(addresses)
    (tmp_path / "liste.csv").write_text(f"email\n{rows}\n", "utf-8")
    assert cli("import", "liste.csv").code == 0
    result = cli("send", "closure-notice", "--outbox", "out")
    assert result.code == 0, result.stderr


def message_ids(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        found = dict(connection.execute(
            select(Subscriber.email, Delivery.message_id)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)).all())
    engine.dispose()
    return found


def dsn(number: int, recipients: list[str], *, original_id: str = "", original_to: str = "",
        status: str = "5.1.1", sender: str = "MAILER-DAEMON@mx.exemple.fr",
        references: str = "", diagnostic: str = "550 5.1.1 user unknown",
        action: str = "failed") -> bytes:
    blocks = "\n".join(
        f"Final-Recipient: rfc822; {address}\nAction: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {diagnostic}\n" for address in recipients)
    original = "".join(
        f"{name}: {value}\n" for name, value in
        (("Message-ID", original_id), ("To", original_to), ("From", LIST_ADDRESS)) if value)
    extra = f"References: {references}\n" if references else ""
    return (
        f"From: {sender}\nTo: rebonds@asso.fr\nSubject: Undelivered Mail Returned to Sender\n"
        f"Date: Thu, 26 Nov 2026 10:00:00 +0100\nMessage-ID: <report-{number}@mx.exemple.fr>\n"
        f"{extra}MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\n\n'
        "--b1\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
        "--b1\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.exemple.fr\n\n"
        f"{blocks}\n--b1\nContent-Type: text/rfc822-headers\n\n{original}\n--b1--\n"
    ).encode()


def imported(cli, tmp_path: Path, name: str, messages: list[bytes]) -> dict[str, object]:  # type: ignore[no-untyped-def]
    result = cli("bounces", "import", str(write_box(tmp_path / name, messages)), "--json")
    assert result.code == 0, result.stderr
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


def statuses(database_url: str) -> dict[str, str]:
    return {email: state[0] for email, state in ledger(database_url).items()}


# --- forgery -----------------------------------------------------------------------------------


def test_a_stranger_naming_900_subscribers_changes_nobody(
    cli, database_url: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    people = [f"abonne{n:03d}@exemple.fr" for n in range(900)]
    send_to(cli, tmp_path, people)
    forged = [dsn(n, people[n * 100:(n + 1) * 100], sender="attacker@evil.example")
              for n in range(9)]
    summary = imported(cli, tmp_path, "forged.mbox", forged)
    assert (summary["bounces"], summary["matched"], summary["untrusted"]) == (900, 0, 900)
    assert (summary["subscribers_bounced"], summary["deliveries_failed"]) == (0, 0)
    assert "naming 100 recipients" in str(summary["unmatched_reports"])
    assert {state[:2] for state in ledger(database_url).values()} == {("active", "sent")}


def test_predicted_message_ids_change_nobody(
    cli, database_url: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    people = ["recu@exemple.fr", "cible1@exemple.fr", "cible2@exemple.fr", "cible3@exemple.fr"]
    send_to(cli, tmp_path, people)
    ids = message_ids(database_url)
    received = ids["recu@exemple.fr"]  # the one copy the attacker holds
    nonce, _number, mac = received.strip("<>").split("@")[0].split(".")
    domain = received.split("@")[1].rstrip(">")
    engine = create_engine(database_url)
    with engine.connect() as connection:
        others = dict(connection.execute(select(Subscriber.email, Subscriber.id)).all())
    engine.dispose()
    predicted = []
    for email in people[1:]:
        sid = others[email]
        predicted += [f"<{nonce}.{sid}@{domain}>", f"<{nonce}.{sid}.{mac}@{domain}>"]
        assert ids[email] not in predicted  # the MAC is the delivery's own
    forged = [dsn(n, ["attacker@evil.example"], original_id=pid) for n, pid in enumerate(predicted)]
    forged.append(dsn(99, [], references=" ".join(predicted)))
    summary = imported(cli, tmp_path, "forged.mbox", forged)
    assert (summary["matched"], summary["subscribers_bounced"], summary["deliveries_failed"]) == (
        0, 0, 0)
    assert {state[:2] for state in ledger(database_url).values()} == {("active", "sent")}
    # The genuine id ties its report to that one delivery, whatever address the report names.
    genuine = dsn(100, ["cible1@exemple.fr"], original_id=received)
    summary = imported(cli, tmp_path, "genuine.mbox", [genuine])
    assert (summary["matched"], summary["subscribers_bounced"]) == (1, 1)
    state = ledger(database_url)
    assert state["recu@exemple.fr"][:2] == ("bounced", "failed")
    assert state["cible1@exemple.fr"][:2] == ("active", "sent")


def test_a_report_about_the_lists_own_address_changes_nobody(
    cli, database_url: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    send_to(cli, tmp_path, [LIST_ADDRESS, "ami@exemple.fr"])
    forged = [
        # the returned original's To is the list (a digest, a message to the list itself)
        dsn(1, [], original_to=LIST_ADDRESS),
        # the list named as the failed recipient, and as the sender "not accepting mail from"
        dsn(2, [LIST_ADDRESS]),
        dsn(3, ["ami@exemple.fr"], sender=LIST_ADDRESS, status="5.7.1",
            diagnostic=f"550 5.7.1 not accepting mail from {LIST_ADDRESS}"),
    ]
    summary = imported(cli, tmp_path, "forged.mbox", forged)
    assert summary["subscribers_bounced"] == 0
    assert statuses(database_url)[LIST_ADDRESS] == "active"
    assert "the list's own address" in str(summary["unmatched_reports"])
    # The third names ami@ in a recipient field with a recent delivery: tied by address, but
    # a block (5.7.1) fails at most that delivery.
    assert ledger(database_url)["ami@exemple.fr"][:2] == ("active", "failed")


def test_address_only_needs_a_recent_delivery_and_never_bounces_with_verp(
    cli, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    send_to(cli, tmp_path, ["ancien@exemple.fr", "recent@exemple.fr", "verp@exemple.fr"])
    engine = create_engine(database_url)
    with engine.begin() as connection:  # ancien's message went out 40 days ago
        old = datetime.now(UTC) - timedelta(days=40)
        connection.execute(Delivery.__table__.update().where(
            Delivery.subscriber_id == select(Subscriber.id).where(
                Subscriber.email == "ancien@exemple.fr").scalar_subquery()
        ).values(sent_at=old, first_attempt_at=old))
    engine.dispose()
    summary = imported(cli, tmp_path, "a.mbox", [dsn(1, ["ancien@exemple.fr"]),
                                                  dsn(2, ["recent@exemple.fr"])])
    assert (summary["matched"], summary["untrusted"], summary["subscribers_bounced"]) == (1, 1, 1)
    assert statuses(database_url)["ancien@exemple.fr"] == "active"
    assert statuses(database_url)["recent@exemple.fr"] == "bounced"
    monkeypatch.setenv("MAILER_BOUNCE_ADDRESS", "rebonds@asso.fr")
    summary = imported(cli, tmp_path, "b.mbox", [dsn(3, ["verp@exemple.fr"])])
    assert (summary["untrusted"], summary["subscribers_bounced"]) == (1, 0)
    assert "VERP is configured" in str(summary["unmatched_reports"])
    assert statuses(database_url)["verp@exemple.fr"] == "active"


# --- reasons and the allow-list ------------------------------------------------------------------


def test_only_a_gone_mailbox_bounces_at_once_and_a_full_one_when_it_repeats(
    cli, database_url: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    send_to(cli, tmp_path, ["plein@exemple.fr", "spam@exemple.fr", "inconnu@exemple.fr",
                            "retard@exemple.fr"])
    ids = message_ids(database_url)
    first = [
        dsn(1, ["plein@exemple.fr"], original_id=ids["plein@exemple.fr"], status="5.2.2",
            diagnostic="552 5.2.2 Mailbox full"),
        dsn(2, ["spam@exemple.fr"], original_id=ids["spam@exemple.fr"], status="5.7.1",
            diagnostic="550 5.7.1 Message rejected as spam"),
        dsn(3, ["inconnu@exemple.fr"], original_id=ids["inconnu@exemple.fr"], status="5.3.0",
            diagnostic="553 5.3.0 No such user here"),
        dsn(4, ["retard@exemple.fr"], original_id=ids["retard@exemple.fr"], status="4.4.1",
            action="delayed",
            diagnostic="451 4.4.1 no answer; delivery attempts will continue to be made"),
    ]
    summary = imported(cli, tmp_path, "a.mbox", first)
    assert summary["reasons"] == {"mailbox full": 1, "blocked or spam": 1,
                                  "mailbox unknown": 1, "delayed": 1}
    state = ledger(database_url)
    assert state["plein@exemple.fr"][:2] == ("active", "failed")
    assert state["spam@exemple.fr"][:2] == ("active", "failed")
    assert state["inconnu@exemple.fr"][:2] == ("bounced", "failed")
    assert state["retard@exemple.fr"][:2] == ("active", "sent")
    # Two more full-mailbox reports within 14 days: the third bounces.
    again = [dsn(n, ["plein@exemple.fr"], original_id=ids["plein@exemple.fr"], status="4.2.2",
                 action="delayed", diagnostic="452 4.2.2 over quota") for n in (5, 6)]
    summary = imported(cli, tmp_path, "b.mbox", again[:1])
    assert statuses(database_url)["plein@exemple.fr"] == "active"
    summary = imported(cli, tmp_path, "c.mbox", again[1:])
    assert summary["subscribers_bounced"] == 1
    assert statuses(database_url)["plein@exemple.fr"] == "bounced"
    report = cli("report", "closure-notice", "--state", "failed")
    assert report.code == 0, report.stderr
    assert report.stdout.splitlines()[0].endswith(",message_id,bounce_reason")
    assert any(line.startswith("inconnu@") and line.endswith(",mailbox unknown")
               for line in report.stdout.splitlines())
    engine = create_engine(database_url)
    with engine.connect() as connection:
        trusts = set(connection.scalars(select(Bounce.trust)))
    engine.dispose()
    assert trusts == {"message-id"}


# --- complaints ----------------------------------------------------------------------------------


def arf(provider: str, message_id: str, rcpt: str | None) -> bytes:
    """An abuse report as Yahoo's and Outlook's feedback loops send them (RFC 5965)."""
    sender, agent = {
        "yahoo": ("feedbackloop@yahoo.com", "Yahoo!-Mail-Feedback/2.0"),
        "outlook": ("staff@hotmail.com", "Microsoft JMR 1.0 (JMRP)"),
    }[provider]
    rcpt_line = f"Original-Rcpt-To: {rcpt}\n" if rcpt else ""
    return (
        f"From: {sender}\nTo: abuse@asso.fr\nSubject: FW: Complaint about message\n"
        f"Message-ID: <arf-{provider}@feedback.example>\nDate: Fri, 27 Nov 2026 08:00:00 +0000\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="arf"\n\n'
        "--arf\nContent-Type: text/plain\n\nThis is an email abuse report for an email "
        "message received from IP 192.0.2.25.\n\n"
        "--arf\nContent-Type: message/feedback-report\n\n"
        f"Feedback-Type: abuse\nUser-Agent: {agent}\nVersion: 1\n{rcpt_line}"
        "Source-IP: 192.0.2.25\nArrival-Date: Thu, 26 Nov 2026 09:01:00 +0000\n\n"
        "--arf\nContent-Type: message/rfc822\nContent-Disposition: inline\n\n"
        f"From: {LIST_ADDRESS}\nTo: redacted@{provider}.example\nSubject: Fermeture\n"
        f"Message-ID: {message_id}\n\nLe message.\n--arf--\n"
    ).encode()


def test_feedback_loop_complaints_unsubscribe_for_good(
    cli, database_url: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    people = ["yahoo.plainte@exemple.fr", "outlook.plainte@exemple.fr", "reste@exemple.fr"]
    send_to(cli, tmp_path, people)
    ids = message_ids(database_url)
    reports = [arf("yahoo", ids[people[0]], None),  # recipient redacted: the Message-ID ties
               arf("outlook", ids[people[1]], people[1])]
    summary = imported(cli, tmp_path, "fbl.mbox", reports)
    assert (summary["complaints"], summary["bounces"], summary["subscribers_bounced"]) == (2, 0, 0)
    assert statuses(database_url) == {people[0]: "unsubscribed", people[1]: "unsubscribed",
                                      people[2]: "active"}
    # A later import of the same list does not subscribe them again.
    assert cli("import", "liste.csv").code == 0
    assert statuses(database_url)[people[0]] == "unsubscribed"
    # A forged complaint (a guessed id, an address alone) unsubscribes nobody.
    forged = arf("yahoo", ids[people[0]].replace(".", "x", 1), people[2]).replace(
        b"arf-yahoo", b"arf-forged")
    forged = forged.replace(b"Original-Rcpt-To: reste@exemple.fr\n", b"")
    summary = imported(cli, tmp_path, "forged.mbox", [forged])
    assert (summary["complaints"], summary["untrusted"]) == (0, 1)
    assert statuses(database_url)[people[2]] == "active"


# --- Message-IDs ---------------------------------------------------------------------------------


def test_message_ids_carry_the_mac_of_their_delivery(
    cli, database_url: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    send_to(cli, tmp_path, ["a@exemple.fr", "b@exemple.fr"])
    engine = create_engine(database_url)
    with engine.connect() as connection:
        key = meta.secret(connection, meta.MESSAGE_ID_KEY)
        nonce = connection.scalar(select(Campaign.snapshot))["nonce"]
        rows = connection.execute(select(Delivery.subscriber_id, Delivery.message_id)).all()
    engine.dispose()
    assert {message_id for _, message_id in rows} == {
        f"<{nonce}.{sid}.{message_mac(key, nonce, sid)}@cime.example.org>" for sid, _ in rows}
    sent = {path.name for path in (tmp_path / "out").iterdir()}
    assert sent == {message_id.strip("<>") + ".eml" for _, message_id in rows}
