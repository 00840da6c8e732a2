"""IMAP over TLS: the imaps:// URL, the password, the read-only session, and its errors.

The folder is opened with EXAMINE and bodies are fetched with BODY.PEEK[], so no flag changes
and nothing is deleted. This is the one place where imaplib's, ssl's and socket's exceptions
become mailer.core.errors classes (`_imap_errors`, `_login`), each one line naming the server,
never the password.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote, unquote, urlsplit

from mailer.bounces.mailboxes._imapwire import (
    batches,
    encode_folder_name,
    fetched_bodies,
    hierarchy_separator,
    number,
    quoted,
    uid_set,
    uid_sizes,
    uids_above,
)
from mailer.bounces.mailboxes.stream import (
    SOURCE_HINT,
    ImapFolder,
    Mailbox,
    MailItem,
    Reading,
    Resume,
)
from mailer.core.config import Settings
from mailer.core.errors import (
    ConfigError,
    InputError,
    MailboxUnavailableError,
    MailerError,
    NotFoundError,
)
from mailer.core.tls import verified_context

IMAP_PORT = 993
IMAP_TIMEOUT = 60.0  # seconds: connecting, and each reply of the server

_CREDENTIALS_HINT = "set MAILER_IMAP_PASSWORD, or MAILER_IMAP_PASSWORD_FILE to a file holding it"
_TIMING = re.compile(r"\s*\(\d+\.\d+ \+ [^()]*secs?\)")  # dovecot's "(0.001 + 0.000 secs)"
_IMAPLIB_PREFIX = re.compile(r"^command: \w+ => ")
_Answer = TypeVar("_Answer")


@dataclass(frozen=True)
class ImapSource:
    """An imaps:// URL, decoded: who, where, which folder ("/" between levels)."""

    user: str
    host: str
    port: int = IMAP_PORT
    folder: str = "INBOX"

    @property
    def server(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"imaps://{quote(self.user, safe='')}@{self.server}/{quote(self.folder)}"


def parse_imap_url(source: str) -> ImapSource:
    """`imaps://USER@HOST[:PORT]/FOLDER` (percent-encoded parts decoded); see the package doc."""
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    shown = _without_password(source)
    if scheme == "imap":
        raise ConfigError(
            f"{shown}: only imaps:// is supported: "
            "the password would cross the network in clear",
            hint="use imaps://USER@HOST/FOLDER (IMAP over TLS, port 993)",
        )
    if scheme != "imaps":
        raise InputError(f"{shown}: unknown kind of mailbox URL", hint=SOURCE_HINT)
    if parts.password is not None:
        raise ConfigError(
            f"{shown}: the password must not be in the URL (it would show in the shell history "
            "and the process list)",
            hint=f"remove it from the URL and {_CREDENTIALS_HINT}",
        )
    if parts.query or parts.fragment or ";" in parts.path:
        raise InputError(
            f"{shown}: IMAP URL options (?…, #…, ;…) are not supported",
            hint="percent-encode these characters in a folder name (%3F, %23, %3B)",
        )
    try:
        port = parts.port or IMAP_PORT
    except ValueError as exc:
        raise InputError(f"{shown}: invalid port ({exc})") from exc
    if not parts.username or not parts.hostname:
        raise InputError(f"{shown}: the URL needs a user and a host: imaps://USER@HOST/FOLDER")
    folder = unquote(parts.path.strip("/")) or "INBOX"
    return ImapSource(unquote(parts.username), parts.hostname, port, folder)


def _without_password(source: str) -> str:
    """The URL as it may be printed: a password in it replaced by ***."""
    parts = urlsplit(source)
    if parts.password is None:
        return source
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def open_imap(
    source: ImapSource,
    settings: Settings,
    reading: Reading,
    timeout: float,
    resume: Resume | None = None,
) -> Iterator[Mailbox]:
    """The folder of `source`, logged in and examined, for one iteration of the generator:
    its messages above the UID `resume` gives for it (all of them without `resume`)."""
    password = settings.imap_password
    if not password:
        raise ConfigError(f"no password for the IMAP account {source}", hint=_CREDENTIALS_HINT)
    context = verified_context(settings.imap_ca_file, "imap_ca_file")
    server = f"the IMAP server {source.server}"
    with _imap_errors(source, f"cannot connect to {server}", secret=password, connecting=True):
        client = imaplib.IMAP4_SSL(source.host, source.port, ssl_context=context, timeout=timeout)
    healthy = True
    try:
        with _imap_errors(source, f"lost the connection to {server}", secret=password):
            _login(client, source, password)
            folder, count = _examine(client, source)
        after = resume(folder) if resume is not None and folder is not None and count else 0
        with _imap_errors(source, f"lost the connection to {server}"):
            uids = _uids_above(client, after) if count else array("Q")
        yield Mailbox(
            str(source), len(uids), lambda: _imap_items(client, source, uids, reading), folder
        )
    except MailboxUnavailableError:
        healthy = False
        raise
    finally:
        if healthy:
            with suppress(imaplib.IMAP4.error, OSError):
                client.logout()  # read-only: no CLOSE, which would expunge
        else:  # no LOGOUT: it would only wait for a dead connection's timeout again
            with suppress(OSError):
                client.shutdown()


@contextmanager
def _imap_errors(
    source: ImapSource, failure: str, *, secret: str | None = None, connecting: bool = False
) -> Iterator[None]:
    """Translate imaplib's, ssl's and socket's exceptions into one-line MailerErrors.

    `failure` begins the message of a MailboxUnavailableError: "cannot connect to …".
    """
    server = f"the IMAP server {source.server}"
    try:
        yield
    except MailerError:
        raise
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or exc.reason or str(exc)
        hint = (
            "write the host name the server's certificate is for in the URL"
            if "mismatch" in reason.lower()
            else "set MAILER_IMAP_CA_FILE to the CA that signed the server's certificate"
        )
        raise ConfigError(
            f"cannot verify the TLS certificate of {server}: {reason}", hint=hint
        ) from exc
    except ssl.SSLError as exc:
        dropped = isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError)
        if connecting and not dropped:
            raise ConfigError(
                f"TLS with {server} failed: {exc.reason or exc}",
                hint=f"is {source.port} a port of IMAP over TLS (imaps, usually 993)?",
            ) from exc
        raise MailboxUnavailableError(f"{failure}: {_reason(exc)}") from exc
    except (imaplib.IMAP4.abort, OSError) as exc:  # abort: the connection broke
        raise MailboxUnavailableError(f"{failure}: {_reason(exc)}") from exc
    except imaplib.IMAP4.error as exc:  # a NO or BAD reply where imaplib wants OK
        text = _reason(exc).replace(secret, "***") if secret else _reason(exc)
        raise MailboxUnavailableError(f"{server} refuses to go on: {text}") from exc


def _login(client: imaplib.IMAP4_SSL, source: ImapSource, password: str) -> None:
    try:
        if "AUTH=PLAIN" in client.capabilities:  # UTF-8 safe, unlike imaplib's LOGIN
            credentials = f"\0{source.user}\0{password}".encode()
            client.authenticate("PLAIN", lambda _challenge: credentials)
        else:
            client.login(quoted(source.user), password)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as exc:
        text = _reason(exc).replace(password, "***")
        if "UNAVAILABLE" in text.upper():  # RFC 5530: the authentication backend is down
            raise MailboxUnavailableError(
                f"the IMAP server {source.server} cannot check credentials now: {text}"
            ) from exc
        raise ConfigError(
            f"the IMAP server {source.server} refuses the login of {source.user}: {text}",
            hint=f"check the user in the URL; {_CREDENTIALS_HINT}",
        ) from exc
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"the IMAP server {source.server} offers no AUTH=PLAIN: a user or password that is "
            "not ASCII cannot be sent"
        ) from exc


def _server_folder(client: imaplib.IMAP4_SSL, source: ImapSource) -> str:
    """The folder name as this server spells it: its own separator, modified UTF-7."""
    name = source.folder
    if "/" in name:
        typ, data = client.list('""', '""')  # the hierarchy separator only
        separator = hierarchy_separator(data[0] if typ == "OK" and data else None)
        if separator is not None:
            name = name.replace("/", separator)
    return encode_folder_name(name)


def _examine(client: imaplib.IMAP4_SSL, source: ImapSource) -> tuple[ImapFolder | None, int]:
    """Open the folder read-only: its identity (None without a UIDVALIDITY), how many messages."""
    typ, data = client.select(quoted(_server_folder(client, source)), readonly=True)
    if typ != "OK":
        text = _server_text(data)
        raise NotFoundError(
            f"no folder {source.folder!r} for {source.user} on the IMAP server {source.server}"
            f": {text}",
            hint="folder names are case-sensitive (except INBOX); separate sub-folders with /",
        )
    _, validity = client.response("UIDVALIDITY")
    uidvalidity = number(validity[-1] if validity else None)
    folder = (
        ImapFolder(source.host, source.user, source.folder, uidvalidity)
        if uidvalidity is not None else None
    )
    return folder, number(data[-1] if data else None) or 0  # EXISTS


def _uids_above(client: imaplib.IMAP4_SSL, after: int) -> array[int]:
    """The UIDs of the folder above `after`, ascending (8 bytes a message, nothing else)."""
    typ, lines = client.uid("SEARCH", "UID", f"{after + 1}:*")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID SEARCH: {typ} {lines}")
    return uids_above(lines, after)


def _imap_items(
    client: imaplib.IMAP4_SSL, source: ImapSource, uids: array[int], reading: Reading
) -> Iterator[MailItem]:
    """The messages of `uids`, in UID order (the order the caller may remember them in): for
    each window of `reading.count` UIDs their sizes, then their bodies by batches of at most
    `reading.count` messages and `reading.batch_bytes` bytes; one over `reading.limit` bytes is
    not fetched."""
    done = 0
    for start in range(0, len(uids), reading.count):
        window = uids[start : start + reading.count]
        lost = f"lost the connection to the IMAP server {source.server} after {done} messages"
        sizes = dict(_fetch(client, source, window, "(UID RFC822.SIZE)", lost, done, uid_sizes))
        wanted = [(uid, sizes[uid]) for uid in window
                  if uid in sizes and sizes[uid] <= reading.limit]
        pending = batches(wanted, reading.count, reading.batch_bytes)
        fetched: list[int] = []
        bodies: dict[int, bytes] = {}
        for uid in window:
            size = sizes.get(uid)
            if size is None:  # expunged since the folder was opened
                continue
            if size > reading.limit:
                done += 1
                yield MailItem(f"UID {uid}", b"", size, uid)
                continue
            if not fetched or uid > fetched[-1]:  # the next batch begins with this UID
                fetched = next(pending)
                bodies = _fetch(client, source, fetched, "(UID BODY.PEEK[])", lost, done,
                                fetched_bodies)
            raw = bodies.pop(uid, None)
            if raw is not None:  # else expunged meanwhile
                done += 1
                yield MailItem(f"UID {uid}", raw, uid=uid)


def _fetch(
    client: imaplib.IMAP4_SSL,
    source: ImapSource,
    uids: Iterable[int],
    items: str,
    lost: str,
    done: int,
    read: Callable[[list[object]], _Answer],
) -> _Answer:
    """`UID FETCH uids items`, its answer read by `read`."""
    with _imap_errors(source, lost):
        typ, data = client.uid("FETCH", uid_set(uids), items)
    if typ != "OK":
        text = _server_text(data)
        raise MailboxUnavailableError(
            f"the IMAP server {source.server} refuses to send messages after {done}: {text}"
        )
    return read(data)


def _server_text(data: Iterable[object]) -> str:
    """The text of a NO reply, as imaplib hands it over."""
    text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
    return _TIMING.sub("", text).strip()


def _reason(exc: BaseException) -> str:
    """`connection refused`, `timed out`, `cannot resolve`: the reason, in a few words."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, imaplib.IMAP4.error) and exc.args and isinstance(exc.args[0], bytes):
        text = exc.args[0].decode("utf-8", "replace")  # imaplib's LOGIN puts bytes there
    else:
        text = str(exc)
    return _TIMING.sub("", _IMAPLIB_PREFIX.sub("", text)).strip() or type(exc).__name__
