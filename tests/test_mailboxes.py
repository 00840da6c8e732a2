"""Reading mailboxes of bounces: mbox, Maildir, and IMAP over TLS against a real dovecot."""

from __future__ import annotations

import contextlib
import email
import imaplib
import mailbox
import os
import pathlib
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP, default
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailer.bounces.mailboxes import (
    ImapSource,
    MailItem,
    encode_folder_name,
    open_mailbox,
    parse_imap_url,
    uid_set,
)
from mailer.core.config import Settings
from mailer.core.errors import (
    ConfigError,
    InputError,
    MailboxUnavailableError,
    MailerError,
    NotFoundError,
)
from tests.imapserver import Dovecot, ImapAccount, free_port


def message(number: int, body: str = "", *, crlf: bool = False) -> bytes:
    msg = EmailMessage()
    msg["From"] = "MAILER-DAEMON@relay.asso.test"
    msg["To"] = "bounces@asso.test"
    msg["Subject"] = f"bounce {number}"
    msg["Message-ID"] = f"<bounce-{number}@relay.asso.test>"
    msg.set_content(body or f"message {number}\n")
    return msg.as_bytes(policy=SMTP if crlf else default)


def subject(raw: bytes) -> str:
    return str(email.message_from_bytes(raw)["Subject"])


def read_all(source: str | Path, settings: Settings | None = None, **options: Any) -> tuple[
    int | None, list[MailItem]
]:
    with open_mailbox(str(source), settings or Settings(), **options) as box:
        return box.total, list(box)


def fails(error: type[MailerError], source: str | Path, settings: Settings | None = None,
          **options: Any) -> MailerError:
    with pytest.raises(error) as caught:
        read_all(source, settings, **options)
    assert "\n" not in caught.value.message  # one line
    return caught.value


# -- mbox --------------------------------------------------------------------------------


def write_mbox(path: Path, *messages: bytes) -> Path:
    box = mailbox.mbox(str(path))
    for raw in messages:
        box.add(raw)
    box.close()
    return path


def test_mbox_yields_every_message_in_order_without_the_from_line(tmp_path: Path) -> None:
    path = write_mbox(tmp_path / "bounces.mbox", message(1), message(2), message(3))
    total, items = read_all(path)
    assert total == 3
    assert [item.key for item in items] == ["message 1", "message 2", "message 3"]
    assert [subject(item.raw) for item in items] == ["bounce 1", "bounce 2", "bounce 3"]
    assert all(item.raw.startswith(b"From: MAILER-DAEMON@") for item in items)
    assert items[0].raw == message(1)


def test_mbox_from_line_in_a_body_stays_quoted_as_the_stdlib_reads_it(tmp_path: Path) -> None:
    body = "The original message follows.\nFrom here on, nothing was delivered.\n"
    path = write_mbox(tmp_path / "bounces.mbox", message(1, body), message(2))
    total, items = read_all(path)
    assert total == 2  # the body's "From " line did not start a message
    assert b"\n>From here on, nothing was delivered.\n" in items[0].raw
    assert items[0].raw == mailbox.mbox(str(path)).get_bytes(0)


def test_mbox_message_with_crlf_line_ends_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "crlf.mbox"
    path.write_bytes(
        b"From MAILER-DAEMON Sat Nov 23 10:00:00 2024\r\n" + message(1, crlf=True)
        + b"\r\nFrom MAILER-DAEMON Sat Nov 23 10:01:00 2024\r\n" + message(2, crlf=True)
    )
    total, items = read_all(path)
    assert total == 2
    assert [subject(item.raw) for item in items] == ["bounce 1", "bounce 2"]
    assert items[0].raw.startswith(message(1, crlf=True))
    assert b"\r\n" in items[0].raw
    assert b"\n" not in items[0].raw.replace(b"\r\n", b"")


def test_empty_mbox_has_no_messages(tmp_path: Path) -> None:
    path = tmp_path / "empty.mbox"
    path.write_bytes(b"")
    assert read_all(path) == (0, [])


def test_reading_an_mbox_changes_nothing(tmp_path: Path) -> None:
    path = write_mbox(tmp_path / "bounces.mbox", message(1), message(2))
    before, stat_before = path.read_bytes(), path.stat()
    read_all(path)
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == stat_before.st_mtime_ns


def test_a_file_that_is_not_an_mbox_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bounce.eml"
    path.write_bytes(message(1))
    error = fails(InputError, path)
    assert str(path) in error.message
    assert "not an mbox" in error.message


def test_unreadable_mbox_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_mbox(tmp_path / "bounces.mbox", message(1))
    opened = pathlib.Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:  # chmod 000 does not stop root, who runs CI
            raise PermissionError(13, "Permission denied", str(self))
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", refuse)
    error = fails(InputError, path)
    assert error.message == f"cannot read {path}: permission denied"
    assert error.exit_code == 1


def test_missing_path_is_an_input_error(tmp_path: Path) -> None:
    error = fails(InputError, tmp_path / "nowhere.mbox")
    assert str(tmp_path / "nowhere.mbox") in error.message
    assert error.exit_code == 1


# -- Maildir -----------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    """A Maildir: two unread messages in new/, one read in cur/, one being delivered in tmp/."""
    folder = tmp_path / "Maildir"
    box = mailbox.Maildir(str(folder))
    box.add(message(1))
    box.add(message(2))
    seen = mailbox.MaildirMessage(message(3))
    seen.set_subdir("cur")
    seen.set_flags("S")
    box.add(seen)
    (folder / "tmp" / "1732000000.P1.relay").write_bytes(message(4))
    return folder


def test_maildir_reads_new_and_cur_and_ignores_tmp(maildir: Path) -> None:
    total, items = read_all(maildir)
    assert total == 3
    assert sorted(subject(item.raw) for item in items) == ["bounce 1", "bounce 2", "bounce 3"]
    keys = {subject(item.raw): item.key for item in items}
    assert keys["bounce 1"].startswith("new/")
    assert keys["bounce 3"].startswith("cur/")
    assert keys["bounce 3"].endswith(":2,S")
    for item in items:
        assert (maildir / item.key).read_bytes() == item.raw


def test_reading_a_maildir_moves_renames_and_flags_nothing(maildir: Path) -> None:
    before = snapshot(maildir)
    read_all(maildir)
    assert snapshot(maildir) == before


def test_maildir_message_moved_while_reading_is_still_read(maildir: Path) -> None:
    with open_mailbox(str(maildir), Settings()) as box:
        first = next(iter(sorted((maildir / "new").iterdir())))
        first.rename(maildir / "cur" / f"{first.name}:2,S")  # another client reads it
        items = list(box)
    assert f"cur/{first.name}:2,S" in [item.key for item in items]
    assert len(items) == 3


def test_a_folder_without_cur_and_new_is_refused(tmp_path: Path) -> None:
    (tmp_path / "folder" / "cur").mkdir(parents=True)
    error = fails(InputError, tmp_path / "folder")
    assert str(tmp_path / "folder") in error.message
    assert "not a Maildir" in error.message


# -- IMAP URLs, without a server ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("imaps://bounces%40asso.fr@mail.asso.fr/Bounces/2024",
         ImapSource("bounces@asso.fr", "mail.asso.fr", 993, "Bounces/2024")),
        ("imaps://bounces@asso.fr@mail.asso.fr:1993",
         ImapSource("bounces@asso.fr", "mail.asso.fr", 1993)),
        ("IMAPS://u@Mail.Asso.FR/", ImapSource("u", "mail.asso.fr", 993, "INBOX")),
        ("imaps://u@h/Rebonds/%C3%89t%C3%A9%20100%25",
         ImapSource("u", "h", 993, "Rebonds/Été 100%")),
        ("imaps://u@[::1]:993/INBOX", ImapSource("u", "::1", 993, "INBOX")),
    ],
)
def test_imap_urls(url: str, expected: ImapSource) -> None:
    assert parse_imap_url(url) == expected


def test_plain_imap_is_refused() -> None:
    error = fails(ConfigError, "imap://bounces@127.0.0.1/INBOX")
    assert "only imaps:// is supported" in error.message
    assert error.exit_code == 78


def test_a_password_in_the_url_is_refused_without_showing_it() -> None:
    error = fails(ConfigError, "imaps://bounces:hunter2@127.0.0.1/INBOX")
    assert "password" in error.message
    assert "hunter2" not in error.message
    assert "hunter2" not in (error.hint or "")
    assert error.exit_code == 78


@pytest.mark.parametrize(
    "source", ["pop3s://bounces@127.0.0.1/", "imaps://127.0.0.1/INBOX", "imaps://u@h:99999/"]
)
def test_unknown_or_malformed_urls_are_input_errors(source: str) -> None:
    assert fails(InputError, source).exit_code == 1


def test_no_imap_password_is_a_config_error() -> None:
    error = fails(ConfigError, "imaps://bounces@127.0.0.1/INBOX", Settings())
    assert "MAILER_IMAP_PASSWORD" in (error.hint or "")


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("Rebonds.Été", "Rebonds.&AMk-t&AOk-"),
        ("R&D", "R&-D"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501's example
        ("😀", "&2D3eAA-"),
    ],
)
def test_folder_names_are_sent_in_modified_utf7(name: str, encoded: str) -> None:
    assert encode_folder_name(name) == encoded


def test_uid_sets_compress_runs() -> None:
    assert uid_set([1, 2, 3, 7, 9, 10]) == "1:3,7,9:10"
    assert uid_set([5]) == "5"


# -- IMAP, against dovecot ----------------------------------------------------------------


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The UID sets of every `UID FETCH … BODY.PEEK[]` mailer sends."""
    sent: list[str] = []
    original = imaplib.IMAP4.uid

    def uid(self: imaplib.IMAP4, command: str, *args: str) -> Any:
        if command == "FETCH" and "BODY.PEEK[]" in args[-1]:
            sent.append(args[0])
        return original(self, command, *args)

    monkeypatch.setattr(imaplib.IMAP4, "uid", uid)
    return sent


def test_imap_reads_every_message_in_uid_order_across_batches(
    imap_server: ImapAccount, fetches: list[str]
) -> None:
    uids = imap_server.append(*(message(n) for n in range(1, 251)))
    total, items = read_all(imap_server.url(), imap_server.settings(), batch_size=100)
    assert total == 250
    assert [item.key for item in items] == [f"UID {uid}" for uid in uids]
    assert [subject(item.raw) for item in items] == [f"bounce {n}" for n in range(1, 251)]
    assert items[0].raw == message(1, crlf=True)  # IMAP speaks CRLF
    assert len(fetches) == 3


def test_imap_batches_are_bounded_in_bytes_too(
    imap_server: ImapAccount, fetches: list[str]
) -> None:
    imap_server.append(*(message(n, "x" * 5000 + "\n") for n in range(1, 11)))
    total, items = read_all(imap_server.url(), imap_server.settings(), batch_bytes=12_000)
    assert (total, len(items)) == (10, 10)
    assert len(fetches) == 5  # two messages of ~5.3 kB per batch


def test_imap_reading_changes_no_flag(imap_server: ImapAccount) -> None:
    imap_server.append(message(1), message(2))
    imap_server.append(message(3), flags=r"\Seen \Flagged")
    before = imap_server.flags()
    assert before[1] == {r"\Recent"}
    read_all(imap_server.url(), imap_server.settings())
    # Still unseen, and still \Recent: only a read-write SELECT takes \Recent away, so the
    # folder was opened read-only (EXAMINE).
    assert imap_server.flags() == before


def test_imap_sub_folder_with_slashes_whatever_the_server_separator(
    imap_server: ImapAccount,
) -> None:
    imap_server.create_folder("Bounces.2024")  # dovecot's Maildir++ separator is "."
    imap_server.append(message(1), message(2), folder="Bounces.2024")
    imap_server.append(message(3))
    for folder in ("Bounces/2024", "Bounces.2024"):
        _total, items = read_all(imap_server.url(folder), imap_server.settings())
        assert [subject(item.raw) for item in items] == ["bounce 1", "bounce 2"], folder


def test_imap_folder_with_a_non_ascii_name(imap_server: ImapAccount) -> None:
    imap_server.create_folder("Rebonds.&AMk-t&AOk-")  # "Rebonds/Été" in modified UTF-7
    imap_server.append(message(1), folder="Rebonds.&AMk-t&AOk-")
    _total, items = read_all(imap_server.url("Rebonds/%C3%89t%C3%A9"), imap_server.settings())
    assert [subject(item.raw) for item in items] == ["bounce 1"]


def test_imap_user_percent_encoded_or_not(imap_server: ImapAccount) -> None:
    imap_server.append(message(1))
    assert "%40" in imap_server.url()
    plain = f"imaps://{imap_server.user}@{imap_server.host}:{imap_server.port}/INBOX"
    for url in (imap_server.url(), plain):
        assert read_all(url, imap_server.settings())[0] == 1


def test_imap_password_that_is_not_ascii(dovecot: Dovecot) -> None:
    account = dovecot.add_user(password="pässwörd-日本")
    account.append(message(1))
    assert read_all(account.url(), account.settings())[0] == 1


def test_imap_empty_folder(imap_server: ImapAccount) -> None:
    assert read_all(imap_server.url(), imap_server.settings()) == (0, [])


def test_imap_wrong_password_is_a_config_error(imap_server: ImapAccount) -> None:
    error = fails(ConfigError, imap_server.url(), imap_server.settings(imap_password="wrong-pw"))
    assert f"{imap_server.host}:{imap_server.port}" in error.message
    assert imap_server.user in error.message
    assert "wrong-pw" not in error.message
    assert error.exit_code == 78


def test_imap_untrusted_certificate_is_a_config_error(
    imap_server: ImapAccount, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    error = fails(ConfigError, imap_server.url(), imap_server.settings(imap_ca_file=other_ca))
    assert "cannot verify the TLS certificate" in error.message
    assert f"{imap_server.host}:{imap_server.port}" in error.message
    assert error.exit_code == 78


def test_imap_host_name_mismatch_is_a_config_error(imap_server: ImapAccount) -> None:
    addresses = {info[4][0] for info in socket.getaddrinfo("localhost", None)}
    if "127.0.0.1" not in addresses:
        pytest.skip("localhost does not resolve to 127.0.0.1 here")
    error = fails(ConfigError, imap_server.url(host="localhost"), imap_server.settings())
    assert "localhost" in error.message
    assert "mismatch" in error.message
    assert error.exit_code == 78


def test_imap_closed_port_is_temporary(imap_server: ImapAccount) -> None:
    closed_port = free_port()  # nothing listens there any more
    error = fails(MailboxUnavailableError, imap_server.url(port=closed_port),
                  imap_server.settings())
    assert error.message == (
        f"cannot connect to the IMAP server 127.0.0.1:{closed_port}: connection refused"
    )
    assert error.exit_code == 75


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_imap_server_that_does_not_answer_times_out(
    imap_server: ImapAccount, silent_port: int
) -> None:
    error = fails(MailboxUnavailableError, imap_server.url(port=silent_port),
                  imap_server.settings(), timeout=0.3)
    assert "timed out" in error.message
    assert error.exit_code == 75


def test_imap_unknown_folder_is_not_found(imap_server: ImapAccount) -> None:
    error = fails(NotFoundError, imap_server.url("Nope/Never"), imap_server.settings())
    assert "'Nope/Never'" in error.message
    assert error.exit_code == 1


def test_imap_connection_lost_midway_keeps_what_was_read(imap_server: ImapAccount) -> None:
    imap_server.append(*(message(n) for n in range(1, 31)))
    read: list[MailItem] = []

    def read_until_kicked() -> None:
        with open_mailbox(imap_server.url(), imap_server.settings(), batch_size=10) as box:
            for item in box:
                read.append(item)
                if len(read) == 10:
                    imap_server.kick()  # the server goes away between two batches

    with pytest.raises(MailboxUnavailableError) as caught:
        read_until_kicked()
    assert len(read) == 10
    assert "after 10 messages" in caught.value.message
    assert caught.value.exit_code == 75


def test_the_caller_s_own_error_passes_through(imap_server: ImapAccount) -> None:
    imap_server.append(message(1))

    def record_with_a_bug() -> None:
        with open_mailbox(imap_server.url(), imap_server.settings()) as box:
            for _item in box:
                raise KeyError("the caller's bug")

    with pytest.raises(KeyError):
        record_with_a_bug()


def test_no_file_descriptor_leaks_on_errors(imap_server: ImapAccount) -> None:
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(3):  # dovecot answers a wrong password after 0.5 s
        fails(ConfigError, imap_server.url(), imap_server.settings(imap_password="wrong"))
        fails(NotFoundError, imap_server.url("Nope"), imap_server.settings())
    assert len(os.listdir("/proc/self/fd")) <= fds + 1
