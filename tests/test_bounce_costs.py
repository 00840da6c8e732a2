"""What one bounce import may cost (issue 13, bounded cost): hostile and oversized messages,
a message that cannot be recorded, a second import that parses nothing it has seen, an IMAP
folder read from where the last run stopped, and mailbox readers that keep nothing.

Real parts: a SQLite file and PostgreSQL (`database_url`), real mbox and Maildir files, the
private dovecot of tests/imapserver.py. Speed is the benchmark's (benchmarks/bounces_bench.py):
the only clock here is a generous ceiling that catches a quadratic blow-up.
"""

from __future__ import annotations

import imaplib
import json
import mailbox
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import create_engine, func, select

from mailer import api
from mailer.bounces import intake
from mailer.bounces import run as bouncing
from mailer.bounces.dsn import Report, parse
from mailer.bounces.mailboxes import files as mailbox_files
from mailer.bounces.mailboxes import open_mailbox
from mailer.bounces.mailboxes._imapwire import uids_above
from mailer.core.config import Settings
from mailer.store import bounces as bounce_store
from mailer.store.engine import open_engine
from mailer.store.models import Bounce, Delivery, MailboxFolder, MailboxMessage, Subscriber
from tests.conftest import REPO_TEMPLATES
from tests.imapserver import ImapAccount

PEOPLE = ["alice@exemple.fr", "bruno@exemple.fr", "chloe@exemple.fr", "denis@exemple.fr"]
CEILING_S = 30.0  # the old code took minutes for 70,000 Message-IDs: this only catches that

BOUNCE = """\
Return-Path: <>
From: Mail Delivery System <MAILER-DAEMON@mx.exemple.fr>
To: asso@asso.fr
Subject: Undelivered Mail Returned to Sender
Date: Thu, 26 Nov 2026 10:00:00 +0100
Message-ID: <bounce-{number}@mx.exemple.fr>
{headers}MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not be delivered.
{text}
--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.exemple.fr

Final-Recipient: rfc822; {address}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{address}>: User unknown{said}

--b1
Content-Type: text/rfc822-headers

From: Asso <asso@asso.fr>
To: {address}
Subject: Fermeture
Message-ID: {message_id}

--b1--
"""

AUTO_REPLY = b"""\
From: Chloe <chloe@exemple.fr>
To: asso@asso.fr
Subject: Absent du bureau
Auto-Submitted: auto-replied
Message-ID: <away-1@exemple.fr>

Je suis absente jusqu'au 3 janvier.
"""

NOT_A_BOUNCE = b"""\
From: Denis <denis@exemple.fr>
To: asso@asso.fr
Subject: Re: Fermeture
Message-ID: <reply-1@exemple.fr>

Merci pour ces nouvelles, et bon courage.
"""


def bounce(number: int, address: str, message_id: str = "<nobody@asso.fr>", *,
           headers: str = "", text: str = "", said: str = "") -> bytes:
    return BOUNCE.format(number=number, address=address, message_id=message_id,
                         headers=headers, text=text, said=said).encode()


def references(count: int) -> str:
    """A References header naming `count` Message-IDs (none of them mailer's)."""
    return "References: " + " ".join(f"<{n}@x.y>" for n in range(count)) + "\n"


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    box = mailbox.mbox(str(path))
    for raw in messages:
        box.add(raw)
    box.close()
    return path


def write_maildir(path: Path, messages: list[bytes]) -> Path:
    box = mailbox.Maildir(str(path))
    for raw in messages:
        box.add(raw)
    box.close()
    return path


@pytest.fixture
def sent(cli: Any, tmp_path: Path, database_url: str) -> dict[str, str]:
    """PEOPLE imported and sent the closure notice (to an outbox): address → Message-ID."""
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    (tmp_path / "liste.csv").write_text("email\n" + "\n".join(PEOPLE) + "\n", "utf-8")
    assert cli("import", "liste.csv").code == 0
    result = cli("send", "closure-notice", "--outbox", "out")
    assert result.code == 0, result.stderr
    engine = create_engine(database_url)
    with engine.connect() as connection:
        ids = dict(connection.execute(
            select(Subscriber.email, Delivery.message_id)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
        ).all())
    engine.dispose()
    return ids


def statuses(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        found = dict(connection.execute(select(Subscriber.email, Subscriber.status)).all())
    engine.dispose()
    return found


def count_rows(database_url: str, table: Any) -> int:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        number = connection.scalar(select(func.count()).select_from(table))
    engine.dispose()
    return int(number or 0)


def import_json(cli: Any, source: Path | str) -> dict[str, Any]:
    result = cli("bounces", "import", str(source), "--json")
    assert result.code == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The raw bytes of every message the import parses."""
    seen: list[bytes] = []

    def counting(raw: bytes) -> Report:
        seen.append(raw)
        return parse(raw)

    monkeypatch.setattr(intake, "parse", counting)
    return seen


# -- one message's cost ------------------------------------------------------------------


def test_hostile_message_ids_cost_little_and_the_real_bounces_of_the_batch_are_recorded(
    cli: Any, sent: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    """70,000 Message-IDs in References used to take minutes (quadratic); 200,000 failed on
    PostgreSQL (more than 65,535 bound parameters) and rolled the whole batch back."""
    alice, bruno = "alice@exemple.fr", "bruno@exemple.fr"
    box = write_mbox(tmp_path / "rebonds.mbox", [
        bounce(1, alice, sent[alice]),
        bounce(2, "stranger@ailleurs.fr", headers=references(70_000)),  # 0.8 MB: parsed
        bounce(3, "stranger@ailleurs.fr", headers=references(200_000)),  # 2.5 MB: too large
        bounce(4, bruno, sent[bruno]),
    ])
    started = time.perf_counter()
    summary = import_json(cli, box)
    assert time.perf_counter() - started < CEILING_S
    assert (summary["messages"], summary["bounces"], summary["skipped"]) == (4, 3, 1)
    assert summary["skipped_messages"] == [
        {"message": "message 3", "reason": summary["skipped_messages"][0]["reason"]}
    ]
    assert "too large" in summary["skipped_messages"][0]["reason"]
    state = statuses(database_url)
    assert (state[alice], state[bruno]) == ("bounced", "bounced")
    assert state["chloe@exemple.fr"] == "active"

    # With no size limit, the 200,000 Message-IDs are read, and capped: a few lookups.
    engine = open_engine(database_url)
    try:
        with open_mailbox(str(box), Settings(), max_bytes=64 * 2**20) as source:
            started = time.perf_counter()
            again = bouncing.import_bounces(engine, source, source=str(box))
            assert time.perf_counter() - started < CEILING_S
    finally:
        engine.dispose()
    assert (again.skipped, again.known, again.bounces) == (0, 3, 1)
    assert count_rows(database_url, Bounce) == 4


def test_an_oversized_message_is_skipped_unread_and_listed(
    cli: Any, sent: dict[str, str], database_url: str, tmp_path: Path,
    parsed: list[bytes],
) -> None:
    alice = "alice@exemple.fr"
    chloe = "chloe@exemple.fr"
    big = bounce(2, chloe, sent[chloe], text=("y" * 75 + "\n") * 42_000)
    assert len(big) > 3 * 2**20
    for source in (
        write_mbox(tmp_path / "rebonds.mbox", [bounce(1, alice, sent[alice]), big]),
        write_maildir(tmp_path / "Maildir", [big]),
    ):
        summary = import_json(cli, source)
        assert summary["skipped"] == 1, source
        [listed] = summary["skipped_messages"]
        assert "MiB, too large" in listed["reason"]
        assert listed["message"] == "message 2" or listed["message"].startswith("new/")
    assert all(len(raw) < 2**20 for raw in parsed)
    state = statuses(database_url)
    assert (state[alice], state["chloe@exemple.fr"]) == ("bounced", "active")


def test_a_message_that_cannot_be_recorded_is_skipped_and_the_rest_recorded(
    cli: Any, sent: dict[str, str], database_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, parsed: list[bytes],
) -> None:
    real = bounce_store.record

    def record(connection: Any, **values: Any) -> Any:
        done = real(connection, **values)  # written, then the database refuses: rolled back
        if "POISON" in str(values.get("diagnostic")):
            raise sqlalchemy.exc.DataError(
                "INSERT INTO bounces …", {}, ValueError("text fields cannot contain NUL bytes")
            )
        return done

    monkeypatch.setattr(bounce_store, "record", record)
    alice, bruno, chloe = "alice@exemple.fr", "bruno@exemple.fr", "chloe@exemple.fr"
    box = write_mbox(tmp_path / "rebonds.mbox", [
        bounce(1, alice, sent[alice]),
        bounce(2, bruno, sent[bruno], said=" POISON"),
        bounce(3, chloe, sent[chloe]),
    ])
    summary = import_json(cli, box)
    assert (summary["messages"], summary["bounces"], summary["skipped"]) == (3, 2, 1)
    assert summary["subscribers_bounced"] == 2
    assert summary["skipped_messages"] == [{
        "message": "message 2", "reason": "not recorded: ValueError: text fields cannot "
        "contain NUL bytes",
    }]
    state = statuses(database_url)
    assert (state[alice], state[bruno], state[chloe]) == ("bounced", "active", "bounced")
    assert count_rows(database_url, Bounce) == 2

    # Not remembered: the next run tries it again (and lists it again).
    parsed.clear()
    again = import_json(cli, box)
    assert (again["known"], again["skipped"], len(parsed)) == (2, 1, 1)

    # When every message fails, the fault is not in a message: the run stops.
    def refuse(connection: Any, **values: Any) -> Any:
        raise sqlalchemy.exc.DataError("INSERT …", {}, ValueError("always"))

    monkeypatch.setattr(bounce_store, "record", refuse)
    box = write_mbox(tmp_path / "others.mbox", [bounce(5, "x@ailleurs.fr"),
                                                 bounce(6, "y@ailleurs.fr")])
    with pytest.raises(sqlalchemy.exc.DataError):
        api.import_bounces(Settings(database_url=database_url), str(box))


# -- a second import ---------------------------------------------------------------------


def test_a_second_import_skips_known_messages_before_parsing_them(
    cli: Any, sent: dict[str, str], database_url: str, tmp_path: Path,
    parsed: list[bytes], monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, bruno, chloe = "alice@exemple.fr", "bruno@exemple.fr", "chloe@exemple.fr"
    messages = [bounce(1, alice, sent[alice]), bounce(2, bruno, sent[bruno]), AUTO_REPLY,
                NOT_A_BOUNCE]
    box = write_mbox(tmp_path / "rebonds.mbox", messages)
    first = import_json(cli, box)
    assert (first["messages"], first["known"], len(parsed)) == (4, 0, 4)
    before = statuses(database_url)

    parsed.clear()
    again = import_json(cli, box)
    # Only the message not understood is read again: a later mailer may understand it.
    assert parsed == [NOT_A_BOUNCE]
    assert (again["messages"], again["known"], again["already_imported"]) == (4, 3, 2)
    assert (again["bounces"], again["subscribers_bounced"], again["unrecognised"]) == (0, 0, 1)
    assert statuses(database_url) == before
    assert count_rows(database_url, MailboxMessage) == 3

    # The same messages from a Maildir (no "From " line, no quoting) are the same messages;
    # one more is new, and only it is parsed.
    parsed.clear()
    folder = write_maildir(tmp_path / "Maildir", [*messages, bounce(3, chloe, sent[chloe])])
    later = import_json(cli, folder)
    assert sorted(parsed) == sorted([NOT_A_BOUNCE, bounce(3, chloe, sent[chloe])])
    assert (later["known"], later["subscribers_bounced"]) == (3, 1)

    # Another version of mailer reads them all again, and records nothing twice.
    monkeypatch.setattr(intake, "READER", "9.9.9")
    parsed.clear()
    upgraded = import_json(cli, box)
    assert (len(parsed), upgraded["known"], upgraded["already_imported"]) == (4, 0, 2)
    assert count_rows(database_url, Bounce) == 3
    assert statuses(database_url)[chloe] == "bounced"


# -- IMAP: only what is new --------------------------------------------------------------


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every `UID …` command mailer sends: ("FETCH", "4:5", "(UID BODY.PEEK[])"), ..."""
    sent: list[tuple[str, ...]] = []
    original = imaplib.IMAP4.uid

    def uid(self: imaplib.IMAP4, command: str, *args: str) -> Any:
        sent.append((command, *args))
        return original(self, command, *args)

    monkeypatch.setattr(imaplib.IMAP4, "uid", uid)
    return sent


def fetched(commands: list[tuple[str, ...]]) -> list[str]:
    """The UID sets of the bodies fetched."""
    return [c[1] for c in commands if c[0] == "FETCH" and "BODY.PEEK[]" in c[-1]]


def change_uidvalidity(account: ImapAccount, value: int) -> None:
    """As a server restored from a backup, or a folder re-created, would (`doveadm`)."""
    server = account.server
    done = subprocess.run(
        [server.doveadm, "-c", str(server.config), "mailbox", "update", "-u", account.user,
         "--uid-validity", str(value), "INBOX"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stderr


def test_an_imap_import_fetches_only_what_is_new_until_the_uidvalidity_changes(
    imap_server: ImapAccount, database_url: str, commands: list[tuple[str, ...]],
    parsed: list[bytes],
) -> None:
    settings = imap_server.settings(database_url=database_url)
    url = imap_server.url("INBOX")
    first = imap_server.append(*(bounce(n, f"u{n}@ailleurs.fr") for n in range(1, 4)))
    summary = api.import_bounces(settings, url)
    assert (summary.messages, summary.bounces) == (3, 3)
    assert fetched(commands) == [f"{first[0]}:{first[-1]}"]

    commands.clear()
    newer = imap_server.append(bounce(4, "u4@ailleurs.fr"), bounce(5, "u5@ailleurs.fr"))
    summary = api.import_bounces(settings, url)
    assert (summary.messages, summary.bounces, summary.known) == (2, 2, 0)
    assert fetched(commands) == [f"{newer[0]}:{newer[1]}"]
    asked = [c for c in commands if c[0] == "FETCH"]
    assert all(c[1] == f"{newer[0]}:{newer[1]}" for c in asked)  # sizes too: only the new

    commands.clear()
    summary = api.import_bounces(settings, url)
    assert summary.messages == 0
    assert [c[0] for c in commands] == ["SEARCH"]  # nothing fetched, not even a size

    # A new UIDVALIDITY: the UIDs may name other messages now, so the folder is read again;
    # the messages already recorded are known by their bytes and not parsed.
    change_uidvalidity(imap_server, 4242)
    commands.clear()
    parsed.clear()
    summary = api.import_bounces(settings, url)
    assert (summary.messages, summary.known, summary.already_imported) == (5, 5, 5)
    assert fetched(commands) == [f"{first[0]}:{newer[-1]}"]
    assert parsed == []
    engine = create_engine(database_url)
    with engine.connect() as connection:
        row = connection.execute(select(MailboxFolder.uidvalidity, MailboxFolder.last_uid)).one()
    engine.dispose()
    assert tuple(row) == (4242, newer[-1])


def test_imap_messages_over_the_size_limit_are_not_fetched(
    imap_server: ImapAccount, commands: list[tuple[str, ...]]
) -> None:
    uids = imap_server.append(bounce(1, "a@b.fr"), bounce(2, "a@b.fr", text="z" * 20_000),
                              bounce(3, "a@b.fr"))
    with open_mailbox(imap_server.url(), imap_server.settings(), max_bytes=10_000) as box:
        items = list(box)
    assert [(item.uid, item.too_large) for item in items] == [
        (uids[0], False), (uids[1], True), (uids[2], False)
    ]
    assert items[1].size > 20_000
    named = {int(u) for s in fetched(commands) for u in s.replace(":", ",").split(",")}
    assert uids[1] not in named


def test_a_uid_search_from_above_the_last_uid_names_nothing_new() -> None:
    # "N:*" with N past the last UID still names the last message (RFC 3501 6.4.8).
    assert list(uids_above([b"17"], 17)) == []
    assert list(uids_above([b"5 3 9"], 3)) == [5, 9]


# -- readers that keep nothing -----------------------------------------------------------


def test_the_one_pass_mbox_reader_gives_the_stdlib_s_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On random mboxes (CRLF, empty messages, "From " in bodies, no final newline), with
    blocks so small that every boundary falls across two of them."""
    rng = random.Random(13)
    pieces = [b"From x\n", b"\n", b"From ", b"From a b\n", b"\r\n", b"line\n", b">From q\n",
              b"x", b"From", b"\n\n", b"abc\r\n\r\n"]
    path = tmp_path / "random.mbox"
    for size in (7, 64):
        monkeypatch.setattr(mailbox_files, "_CHUNK", size)
        for _ in range(300):
            path.write_bytes(b"From start\n" + b"".join(
                rng.choice(pieces) for _ in range(rng.randrange(30))
            ))
            stdlib = mailbox.mbox(str(path))
            wanted = [stdlib.get_bytes(key) for key in stdlib.iterkeys()]
            limit = rng.randrange(12)
            with open_mailbox(str(path), Settings(), max_bytes=limit) as box:
                assert box.total == len(wanted)
                got = [(item.raw, item.size) for item in box]
            assert got == [(raw if len(raw) <= limit else b"", len(raw)) for raw in wanted]


def test_a_maildir_file_over_the_limit_is_not_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_maildir(tmp_path / "Maildir", [b"Subject: small\n\nhi\n",
                                                  b"Subject: big\n\n" + b"x" * 50_000])
    reads: list[int] = []
    real_open: Callable[..., Any] = open

    class Spy:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def __enter__(self) -> Spy:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def read(self, size: int = -1) -> bytes:
            reads.append(size)
            data: bytes = self.handle.read(size)
            return data

        def fileno(self) -> int:
            return int(self.handle.fileno())

    monkeypatch.setattr(mailbox_files, "open", lambda path, mode: Spy(real_open(path, mode)),
                        raising=False)
    with open_mailbox(str(folder), Settings(), max_bytes=1_000) as box:
        items = sorted(box, key=lambda item: item.size)
    assert [item.too_large for item in items] == [False, True]
    assert items[1].size == len(b"Subject: big\n\n") + 50_000
    assert reads == [1_001, 1_001]  # never the whole file
