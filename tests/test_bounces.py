"""`mailer bounces import`: a mailbox of real-shaped bounces against a list actually sent.

The people named by the fixtures in tests/fixtures/bounces are imported and sent the closure
notice (to an outbox); each fixture's original Message-ID is then replaced by the one mailer
really gave that person, and the fixtures go into an mbox, a Maildir and a real IMAP server
(dovecot). Each import must turn the right deliveries `failed`, the right subscribers
`bounced`, note delays without changing anything, ignore auto-replies and list what it cannot
understand; importing again changes nothing.
"""

from __future__ import annotations

import json
import mailbox
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, update

from mailer.store.models import Bounce, Delivery, Subscriber
from tests.conftest import REPO_TEMPLATES
from tests.imapserver import ImapAccount

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
# Each fixture's original Message-ID number → the person it was sent to.
SENT_TO = {
    1001: "bob.martin@exemple.fr",
    1002: "claire.petit@exemple.fr",  # multi-recipient: claire (5.2.2) and denis (delayed)
    1003: "camille.durand@exemple.fr",
    1004: "david.lefebvre@exemple.fr",  # not on the list: unmatched
    1005: "emma.garnier@outlook.fr",
    1006: "gerard.bonnet@mairie-exemple.fr",  # Message-ID left as it is: found by address
    1007: "helene.fournier@exemple.fr",
    1008: "isabelle.girard@exemple.fr",
    1014: "jerome.mercier@exemple.fr",
    1015: "lucie.gauthier@exemple.fr",  # base64 body: found by address
    1016: "karine.blanc@exemple.fr",
    1018: "olivier.perrin@exemple.fr",
}
ON_THE_LIST = sorted(
    {a for a in SENT_TO.values() if not a.startswith("david")}
    | {"denis.roux@exemple.fr", "reste.abonne@exemple.fr"}
)
BOUNCED = {  # a permanent failure about the mailbox
    "bob.martin@exemple.fr", "camille.durand@exemple.fr", "emma.garnier@outlook.fr",
    "gerard.bonnet@mairie-exemple.fr", "helene.fournier@exemple.fr",
    "jerome.mercier@exemple.fr", "lucie.gauthier@exemple.fr", "karine.blanc@exemple.fr",
}
EXPECTED = {
    "messages": 20, "bounces": 13, "permanent": 10, "temporary": 3, "matched": 12,
    "unmatched": 1, "ignored": 4, "subscribers_bounced": len(BOUNCED),
}


@pytest.fixture
def sent(cli, tmp_path: Path):  # type: ignore[no-untyped-def]
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    rows = "\n".join(f"{address},Prénom,Nom" for address in ON_THE_LIST)
    (tmp_path / "liste.csv").write_text(f"email,first_name,last_name\n{rows}\n", "utf-8")
    assert cli("import", "liste.csv").code == 0
    result = cli("send", "closure-notice", "--outbox", "out")
    assert result.code == 0, result.stderr
    return cli


def ledger(database_url: str) -> dict[str, tuple[str, str, str | None]]:
    """email -> (subscriber status, delivery state, last reply)."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(Subscriber.email, Subscriber.status, Delivery.state, Delivery.last_reply)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
        ).all()
    engine.dispose()
    return {row.email: (row.status, row.state, row.last_reply) for row in rows}


def fixtures(database_url: str) -> list[bytes]:
    """The fixtures, each carrying the Message-ID mailer gave the person it was sent to."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        ids = dict(connection.execute(
            select(Subscriber.email, Delivery.message_id)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
        ).all())
    engine.dispose()
    messages = []
    for path in sorted(FIXTURES.iterdir()):
        if path.suffix not in {".eml", ".bin"}:
            continue
        raw = path.read_bytes()
        for number, address in SENT_TO.items():
            if address in ids and number != 1006:
                raw = raw.replace(f"<3f9a1c2b7d4e.{number}@asso.fr>".encode(),
                                  ids[address].encode())
        messages.append(raw)
    return messages


def write_box(path: Path, messages: list[bytes], kind: str = "mbox") -> Path:
    """An mbox file or (kind="maildir") a Maildir folder holding these messages."""
    box: mailbox.Mailbox = mailbox.mbox(path) if kind == "mbox" else mailbox.Maildir(path)
    for raw in messages:
        box.add(raw)
    box.close()
    return path


def check_first_import(summary: dict[str, object], database_url: str, *, empty: int = 1) -> None:
    """`empty`: how many empty messages the mailbox could hold (an IMAP server takes none)."""
    assert {key: summary[key] for key in EXPECTED} == {
        **EXPECTED, "messages": EXPECTED["messages"] - 1 + empty
    }
    assert summary["deliveries_failed"] == 9  # the permanent ones that matched
    assert summary["unrecognised"] == 3 + empty
    assert summary["already_imported"] == 0
    state = ledger(database_url)
    for address in BOUNCED:
        status, delivery, reply = state[address]
        assert (status, delivery) == ("bounced", "failed"), address
        assert reply is not None
        assert reply.startswith("bounce: "), reply
    assert state["bob.martin@exemple.fr"][2] is not None
    assert "5.1.1" in str(state["bob.martin@exemple.fr"][2])
    # Mailbox full: this message failed, the address still works.
    assert state["claire.petit@exemple.fr"][:2] == ("active", "failed")
    # Delay notices are noted and change nothing.
    for address in ("denis.roux@exemple.fr", "isabelle.girard@exemple.fr",
                    "olivier.perrin@exemple.fr", "reste.abonne@exemple.fr"):
        assert state[address][:2] == ("active", "sent"), address


def test_an_mbox_of_bounces_fails_the_right_deliveries_and_bounces_the_right_people(
    sent, database_url: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    box = write_box(tmp_path / "rebonds.mbox", fixtures(database_url))
    result = sent("bounces", "import", str(box), "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    check_first_import(summary, database_url)
    listed = summary["unrecognised_messages"]
    assert len(listed) == 4
    assert all(item["message"].startswith("message ") and item["reason"] for item in listed)
    # issue 13: an unmatched report is listed with its reason and why it changes nobody
    assert summary["unmatched_reports"] == [
        {"message": summary["unmatched_reports"][0]["message"],
         "recipient": "david.lefebvre@exemple.fr", "status": "5.1.1",
         "reason": "mailbox unknown", "because": "no subscriber with this address"}
    ]
    assert (summary["untrusted"], summary["complaints"]) == (1, 0)
    assert summary["ignored_reasons"]

    # Again: the same counts, nothing changed, every report recognised as already imported.
    before = ledger(database_url)
    again = json.loads(sent("bounces", "import", str(box), "--json").stdout)
    assert again["already_imported"] == 13
    assert again["subscribers_bounced"] == 0
    assert again["deliveries_failed"] == 0
    assert ledger(database_url) == before

    # The same messages read from a Maildir are the same reports.
    folder = write_box(tmp_path / "Maildir", fixtures(database_url), "maildir")
    from_maildir = json.loads(sent("bounces", "import", str(folder), "--json").stdout)
    assert from_maildir["already_imported"] == 13
    assert ledger(database_url) == before
    engine = create_engine(database_url)
    with engine.connect() as connection:
        stored = connection.execute(select(Bounce.severity)).scalars().all()
    engine.dispose()
    assert sorted(stored) == ["permanent"] * 10 + ["temporary"] * 3


def test_the_human_summary_and_a_bounced_subscriber_is_skipped_by_retry(
    sent, database_url: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    # Gérard's message was deferred by the relay, not yet delivered: his bounce names him by
    # address alone, with no delivery sent to him, so it is untrusted (issue 13: "a subscriber
    # is bounced even when no delivery matched" was the forgery) and he stays on the list.
    engine = create_engine(database_url)
    with engine.begin() as connection:
        gerard = select(Subscriber.id).where(
            Subscriber.email == "gerard.bonnet@mairie-exemple.fr"
        ).scalar_subquery()
        connection.execute(
            update(Delivery).where(Delivery.subscriber_id == gerard)
            .values(state="deferred", sent_at=None,
                    next_attempt_at=datetime(2026, 1, 1, tzinfo=UTC))  # due: retry would send
        )
    engine.dispose()
    box = write_box(tmp_path / "rebonds.mbox", fixtures(database_url))
    result = sent("bounces", "import", str(box))
    assert result.code == 0, result.stderr
    assert "20 messages read from" in result.stdout
    assert "13 bounce reports (10 permanent, 3 temporary), 4 ignored, 4 not understood" \
        in result.stdout
    assert "unmatched: message" in result.stdout
    assert "david.lefebvre@exemple.fr" in result.stdout
    assert "not understood: message" in result.stdout
    assert ledger(database_url)["gerard.bonnet@mairie-exemple.fr"][:2] == ("active", "deferred")
    assert "gerard.bonnet@mairie-exemple.fr" in result.stdout  # listed as unmatched, with why
    assert "nothing was sent to it in the last 30 days" in result.stdout
    retry = sent("retry", "--outbox", "out2")
    assert retry.code == 0, retry.stderr
    assert len(list(tmp_path.glob("out2/*.eml"))) == 1  # Gérard's, and nobody bounced's


def test_bounces_from_a_real_imap_server(
    sent, database_url: str, imap_server: ImapAccount, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    # An IMAP server refuses to store an empty message: all the others go in.
    uids = imap_server.append(*(raw for raw in fixtures(database_url) if raw))
    flags_before = imap_server.flags()
    monkeypatch.setenv("MAILER_IMAP_PASSWORD", imap_server.password)
    monkeypatch.setenv("MAILER_IMAP_CA_FILE", str(imap_server.ca_file))
    result = sent("bounces", "import", imap_server.url("INBOX"), "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    check_first_import(summary, database_url, empty=0)
    assert {item["message"] for item in summary["unrecognised_messages"]} <= {
        f"UID {uid}" for uid in uids
    }
    # Read-only: nothing marked seen, nothing deleted.
    assert imap_server.flags() == flags_before
    # The folder's last UID is remembered: the next import fetches nothing it has read.
    before = ledger(database_url)
    again = json.loads(sent("bounces", "import", imap_server.url("INBOX"), "--json").stdout)
    assert (again["messages"], again["subscribers_bounced"]) == (0, 0)
    assert ledger(database_url) == before


def test_unreadable_sources_are_one_line_errors(sent, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for source, code, words in [
        (str(tmp_path / "absent.mbox"), 1, "absent.mbox"),
        ("imap://bounces%40asso.fr@127.0.0.1/INBOX", 78, "imaps"),
        ("imaps://bounces%40asso.fr:secret@127.0.0.1/INBOX", 78, "password"),
    ]:
        result = sent("bounces", "import", source)
        assert result.code == code, (source, result.stderr)
        assert result.stderr.startswith("Error: ")
        assert words in result.stderr
        assert "Traceback" not in result.stderr
        assert "secret" not in result.stderr


VERP_BOUNCE = """\
Return-Path: <>
Delivered-To: {envelope}
From: Mail Delivery System <MAILER-DAEMON@mx.exemple.fr>
To: {envelope}
Subject: Undelivered Mail Returned to Sender
Date: Thu, 26 Nov 2026 10:00:00 +0100
Message-ID: <verp-bounce-1@mx.exemple.fr>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not be delivered.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.exemple.fr

Final-Recipient: rfc822; ancienne.adresse@fournisseur-ferme.fr
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <ancienne.adresse@fournisseur-ferme.fr>: User unknown

--b1--
"""


def test_with_a_bounce_address_each_envelope_sender_names_its_subscriber(
    cli, tmp_path: Path, database_url: str, smtp_server, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """VERP: with MAILER_BOUNCE_ADDRESS the relay sees rebonds+TOKEN@asso.fr as the envelope
    sender, and a bounce that quotes nothing of the original (the message was forwarded to
    another address, which failed) is still tied to the right subscriber by that address."""
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    for name, value in {
        "MAILER_SMTP_HOST": smtp_server.host, "MAILER_SMTP_PORT": str(smtp_server.port),
        "MAILER_SMTP_SECURITY": "none", "MAILER_BOUNCE_ADDRESS": "rebonds@asso.fr",
    }.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "liste.csv").write_text(
        "email\nok.forward@asso.fr\nok.reste@asso.fr\n", "utf-8"
    )
    assert cli("import", "liste.csv").code == 0
    result = cli("send", "closure-notice")
    assert result.code == 0, result.stderr
    senders = {m.recipients[0]: m.sender for m in smtp_server.messages}
    assert len(senders) == 2
    for sender in senders.values():
        local, _, domain = sender.partition("@")
        assert domain == "asso.fr"
        assert local.startswith("rebonds+")
    assert len(set(senders.values())) == 2  # one per subscriber
    # The header From is unchanged: only the envelope carries the token.
    for message in smtp_server.messages:
        assert b"rebonds+" not in message.data
        assert b"\r\nFrom: " in b"\r\n" + message.data

    bounce = VERP_BOUNCE.format(envelope=senders["ok.forward@asso.fr"]).encode()
    box = write_box(tmp_path / "verp.mbox", [bounce])
    summary = json.loads(cli("bounces", "import", str(box), "--json").stdout)
    assert (summary["matched"], summary["subscribers_bounced"]) == (1, 1)
    state = ledger(database_url)
    assert state["ok.forward@asso.fr"][:2] == ("bounced", "failed")
    assert state["ok.reste@asso.fr"][:2] == ("active", "sent")
    # A forged token matches no one.
    forged = VERP_BOUNCE.format(
        envelope=senders["ok.reste@asso.fr"][:-12] + "AAAA@asso.fr"
    ).replace("verp-bounce-1", "verp-bounce-2").encode()
    box = write_box(tmp_path / "forged.mbox", [forged])
    summary = json.loads(cli("bounces", "import", str(box), "--json").stdout)
    assert (summary["matched"], summary["unmatched"]) == (0, 1)
    assert ledger(database_url)["ok.reste@asso.fr"][:2] == ("active", "sent")


def test_a_bad_bounce_address_is_a_configuration_error(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    (tmp_path / "liste.csv").write_text("email\nok@asso.fr\n", "utf-8")
    assert cli("import", "liste.csv").code == 0
    monkeypatch.setenv("MAILER_BOUNCE_ADDRESS", "pas une adresse")
    result = cli("send", "closure-notice", "--outbox", "out")
    assert result.code == 78
    assert result.stderr.startswith("Error: MAILER_BOUNCE_ADDRESS")
