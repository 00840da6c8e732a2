"""A private dovecot for tests: IMAP over TLS on 127.0.0.1, certificates made by trustme.

Register the fixtures once, in tests/conftest.py:

    pytest_plugins = ["tests.smtpserver", "tests.imapserver"]

(or import them into one test module: `from tests.imapserver import fixture_imap_server`,
with `# noqa: F401`). Then:

    def test_reads_the_inbox(imap_server: ImapAccount) -> None:
        imap_server.append(b"Subject: hi\\r\\n\\r\\nhello\\r\\n", flags=r"\\Seen")
        with open_mailbox(imap_server.url(), imap_server.settings()) as mailbox:
            ...

Fixtures
    dovecot       (session) one dovecot, `dovecot -F -c CONF` as a child process, with its
                  own configuration in a private folder (tempfile.mkdtemp: unix sockets need
                  short paths, and the mail user must be able to reach the folder): imaps
                  only, on 127.0.0.1 and a free port, `ssl = required`, a passwd-file per
                  user (plain passwords), Maildirs under the folder, no failed-login delay.
                  Stopped, and the folder removed, at the end of the session.
    imap_server   a fresh account on it for this test (see ImapAccount): its own user
                  (`bounces-N@asso.test`, so the URL needs %40), password and empty Maildir.

The server's certificate names 127.0.0.1 only (`dovecot.ca_file` holds its CA): reaching
it as `localhost` is a host-name mismatch. Its folder separator is "." (Maildir++, dovecot's
default), and the mail processes run as `nobody` when the tests run as root, or as the
current user otherwise (dovecot then runs without root: no chroot, every service as that
user).

dovecot 2.3 is needed (Debian 12's `dovecot-imapd`; dovecot 2.4 has another configuration
syntax). When it is missing the tests that use it are skipped, except in CI (CI=true), where
they fail: .ci/run installs it. The system's dovecot daemon is neither needed nor touched.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trustme

from mailer.core.config import Settings

HOST = "127.0.0.1"
SEARCH = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
MISSING = "dovecot is not installed (Debian/Ubuntu: apt-get install dovecot-imapd); CI installs it"
STARTUP_TIMEOUT = 15.0
RUN_AS_ROOT = "nobody"  # the mail user (and login and internal user) when the tests run as root
_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")
_FETCH_FLAGS = re.compile(rb"UID (\d+) FLAGS \(([^)]*)\)|FLAGS \(([^)]*)\) UID (\d+)")

CONFIG = """\
# A private dovecot for mailer's tests (tests/imapserver.py); dovecot 2.3 syntax.
base_dir = {root}/run
state_dir = {root}/state
instance_name = mailer-tests-{port}
log_path = {root}/dovecot.log
protocols = imap
listen = {host}
ssl = required
ssl_cert = <{root}/server-cert.pem
ssl_key = <{root}/server-key.pem
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = {uid}
first_valid_gid = {first_gid}
mail_location = maildir:~/Maildir
mail_fsync = never
# One passwd-file per user: dovecot reads a changed passwd-file again at most once a second,
# too late for a user added by the test that runs next.
passdb {{
  driver = passwd-file
  args = {root}/users/%u
}}
userdb {{
  driver = passwd-file
  args = {root}/users/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = {host}
    port = {port}
    ssl = yes
  }}
}}
# No chroot anywhere, so that the same configuration also runs without root. No auth
# penalty: it would slow every login from 127.0.0.1 for seconds after a wrong-password test.
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service ipc {{
  chroot =
}}
service old-stats {{
  chroot =
}}
"""


class DovecotError(RuntimeError):
    """dovecot did not start; the message holds the end of its log."""


def dovecot_path() -> str | None:
    found = shutil.which("dovecot")
    return found or next((path for path in SEARCH if os.access(path, os.X_OK)), None)


def require_dovecot() -> str:
    """dovecot's path; skip the test when it is missing, but fail it in CI (CI=true)."""
    path = dovecot_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{MISSING}: in CI it must be there (see .ci/run)", pytrace=False)
        pytest.skip(MISSING)
    version = subprocess.run(
        [path, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not version.startswith("2.3."):
        reason = f"tests/imapserver.py writes a dovecot 2.3 configuration; {path} is {version!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return path


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass(frozen=True)
class _MailUser:
    name: str
    uid: int
    gid: int
    group: str


def _mail_user() -> _MailUser:
    """Who dovecot's processes run as: nobody under root, else the current user."""
    try:
        entry = pwd.getpwnam(RUN_AS_ROOT) if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError as exc:
        pytest.skip(f"dovecot needs a user and a group with a name to run as: {exc}")
    return _MailUser(entry.pw_name, entry.pw_uid, entry.pw_gid, group)


class Dovecot:
    """One private dovecot process; see the module doc. start() / stop(), or the fixture."""

    host = HOST

    def __init__(self, binary: str) -> None:
        self.user = _mail_user()
        self.binary = binary
        self.doveadm = str(Path(binary).resolve().parent.parent / "bin" / "doveadm")
        if not os.access(self.doveadm, os.X_OK):
            self.doveadm = shutil.which("doveadm") or "doveadm"
        self.root = Path(tempfile.mkdtemp(prefix="mailer-dovecot-"))
        self.root.chmod(0o711)  # the mail user walks through to its Maildir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._users = 0
        self.ca = trustme.CA()
        self.ca_file = self.root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        certificate = self.ca.issue_cert(HOST)
        certificate.private_key_pem.write_to_path(str(self.root / "server-key.pem"))
        chain = self.root / "server-cert.pem"
        chain.write_bytes(b"".join(blob.bytes() for blob in certificate.cert_chain_pems))
        self.users = self.root / "users"  # one passwd-file per user
        self.users.mkdir()
        self.homes = self.root / "mail"
        self.homes.mkdir()
        os.chown(self.homes, self.user.uid, self.user.gid)
        self.config = self.root / "dovecot.conf"
        self.log = self.root / "dovecot.log"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Dovecot:
        for _ in range(5):  # another process may take the free port before dovecot binds it
            self.port = free_port()
            self._write_config()
            if self._start_once():
                return self
            if "Address already in use" not in self._log_tail():
                break
        raise DovecotError(f"dovecot did not start:\n{self._log_tail()}")

    def _write_config(self) -> None:
        user = self.user
        self.config.write_text(CONFIG.format(
            root=self.root, host=HOST, port=self.port, user=user.name, group=user.group,
            uid=user.uid, first_gid=min(user.gid, 1),
        ))

    def _start_once(self) -> bool:
        output = (self.root / "dovecot.out").open("ab")
        with output:
            self.process = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends every child
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.5):
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        """Stop dovecot and every process it started (again is fine)."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the master and its children
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if _group_members(process.pid):  # a child that outlived the master
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _log_tail(self, lines: int = 20) -> str:
        text = ""
        for path in (self.root / "dovecot.out", self.log):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # -- accounts ----------------------------------------------------------------------

    def add_user(self, name: str | None = None, password: str | None = None) -> ImapAccount:
        """A new account with an empty Maildir."""
        self._users += 1
        name = name or f"bounces-{self._users}@asso.test"
        password = password or secrets.token_urlsafe(12)
        if any(char in name + password for char in ":\n") or "/" in name:
            raise ValueError("no ':' or newline in a user or password, no '/' in a user")
        home = self.homes / f"u{self._users}"
        home.mkdir()
        os.chown(home, self.user.uid, self.user.gid)
        entry = self.users / name
        entry.write_text(
            f"{name}:{{PLAIN}}{password}:{self.user.uid}:{self.user.gid}::{home}::\n",
            encoding="utf-8",
        )
        entry.chmod(0o644)  # dovecot's auth process reads it as the mail user
        return ImapAccount(self, name, password, home / "Maildir")

    def kick(self, user: str) -> None:
        """Close every IMAP connection of this user (`doveadm kick`)."""
        subprocess.run(
            [self.doveadm, "-c", str(self.config), "kick", user],
            capture_output=True, check=False, timeout=10,
        )


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                if int(fields[2]) == pgid:
                    members.append(int(entry.name))
    return members


@dataclass(frozen=True)
class ImapAccount:
    """One user on the test dovecot: URLs, Settings, and APPEND/flags helpers."""

    server: Dovecot
    user: str
    password: str
    maildir: Path  # dovecot's files: look, do not write (they belong to the mail user)

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def ca_file(self) -> Path:
        return self.server.ca_file

    def url(self, folder: str = "", *, host: str | None = None, port: int | None = None) -> str:
        """`imaps://bounces-1%40asso.test@127.0.0.1:PORT/FOLDER` (FOLDER as given)."""
        where = f"{host or self.host}:{port or self.port}"
        return f"imaps://{quote(self.user, safe='')}@{where}/{folder}"

    def settings(self, **overrides: Any) -> Settings:
        """Settings with this account's password and the server's CA."""
        values: dict[str, Any] = {"imap_password": self.password, "imap_ca_file": self.ca_file}
        values.update(overrides)
        return replace(Settings(), **values)

    @contextlib.contextmanager
    def client(self) -> Iterator[imaplib.IMAP4_SSL]:
        """A logged-in imaplib connection (the test's own, not mailer's)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        client = imaplib.IMAP4_SSL(self.host, self.port, ssl_context=context, timeout=10)
        try:
            credentials = f"\0{self.user}\0{self.password}".encode()  # UTF-8, unlike LOGIN
            client.authenticate("PLAIN", lambda _challenge: credentials)
            yield client
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                client.logout()

    def create_folder(self, name: str) -> None:
        """Create a folder; `name` as the server spells it ("." between levels, UTF-7)."""
        with self.client() as client:
            typ, data = client.create(f'"{name}"')
            assert typ == "OK", data

    def append(self, *messages: bytes, folder: str = "INBOX", flags: str = "") -> list[int]:
        """APPEND each message to `folder` (server spelling); their UIDs, in order."""
        uids = []
        with self.client() as client:
            for message in messages:
                typ, data = client.append(f'"{folder}"', f"({flags})" if flags else None,
                                          None, message)
                assert typ == "OK", data
                found = _APPENDUID.search(data[-1] or b"")
                assert found, data
                uids.append(int(found.group(1)))
        return uids

    def flags(self, folder: str = "INBOX") -> dict[int, frozenset[str]]:
        """Every message's flags, by UID, read without changing them (EXAMINE)."""
        with self.client() as client:
            typ, data = client.select(f'"{folder}"', readonly=True)
            assert typ == "OK", data
            if data[-1] == b"0":
                return {}
            typ, lines = client.uid("FETCH", "1:*", "(UID FLAGS)")
            assert typ == "OK", lines
        found: dict[int, frozenset[str]] = {}
        for line in lines:
            match = _FETCH_FLAGS.search(line) if isinstance(line, bytes) else None
            if match:
                uid = match.group(1) or match.group(4)
                flags = match.group(2) if match.group(1) else match.group(3)
                found[int(uid)] = frozenset(flags.decode().split())
        return found

    def kick(self) -> None:
        """Close this user's IMAP connections, as a server restart would."""
        self.server.kick(self.user)


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(name="dovecot", scope="session")
def fixture_dovecot() -> Iterator[Dovecot]:
    """The session's private dovecot (skipped without dovecot; failed in CI)."""
    server = Dovecot(require_dovecot())
    try:
        try:
            server.start()
        except DovecotError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield server
    finally:
        server.remove()


@pytest.fixture(name="imap_server")
def fixture_imap_server(dovecot: Dovecot) -> ImapAccount:
    """A fresh account (user, password, empty INBOX) on the session's dovecot."""
    return dovecot.add_user()


__all__ = [
    "Dovecot",
    "DovecotError",
    "ImapAccount",
    "fixture_dovecot",
    "fixture_imap_server",
    "free_port",
    "require_dovecot",
]
