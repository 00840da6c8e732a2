"""Reading a mailbox of bounces, one raw message at a time: an mbox, a Maildir, or IMAP over TLS.

    with open_mailbox("imaps://bounces%40asso.fr@mail.asso.fr/Bounces", settings) as mailbox:
        mailbox.total                    # how many messages to expect (None: not known)
        for item in mailbox:             # MailItem(key="UID 17", raw=b"Return-Path: ...")
            ...                          # in mailbox order; one message in memory at a time

The SOURCE of `mailer bounces import`:

- an existing regular file is an mbox, read with the stdlib's mailbox.mbox: its table of
  contents holds offsets only, and each message is read when its turn comes. The "From " line
  is removed; a body line quoted as ">From " stays as it is (the stdlib does not unquote:
  in the common mboxo format the quoting cannot be undone without ambiguity). Keys:
  "message 1", "message 2", ... An empty file is an empty mbox; a file that does not begin
  with a "From " line is refused (a single .eml file is not an mbox).
- an existing folder with cur/ and new/ is a Maildir: the files of new/ and cur/, sorted by
  file name (delivery time first, for every common writer); tmp/ (deliveries in progress)
  and dot-files are skipped. Keys: "new/1732…" or "cur/1732…:2,S". Files are only read:
  never moved, renamed or re-flagged. Sub-folders (Maildir++ ".Bounces/") are not walked:
  name the sub-folder itself.
- `imaps://USER@HOST[:PORT]/FOLDER`: IMAP over implicit TLS (port 993 by default), the
  certificate and host name verified (the system's CAs, plus settings.imap_ca_file). USER
  and FOLDER may be percent-encoded (`bounces%40asso.fr`, `Rebonds/%C3%89t%C3%A9`); FOLDER
  defaults to INBOX, separates sub-folders with "/" whatever the server's own separator, and
  is sent in IMAP's modified UTF-7. The password comes from settings.imap_password (the
  environment), never from the URL. The folder is opened read-only (EXAMINE) and bodies
  are fetched with BODY.PEEK[], so no flag changes and nothing is deleted; messages come in
  UID order, by batches of at most `batch_size` messages and `batch_bytes` bytes (a batch
  is in memory at once). Keys: "UID 17".

Errors, each one line naming the path or the server, never the password:

    InputError               a missing path, a folder that is no Maildir, an unreadable file,
                             a URL that is not imaps:// or is malformed
    ConfigError              imap:// (clear text), a password in the URL, no password set,
                             an unverifiable certificate, refused credentials
    NotFoundError            the IMAP folder does not exist
    MailboxUnavailableError  the server is unreachable, refuses or times out (`timeout`
                             seconds), or the connection breaks midway: what the caller
                             recorded stays recorded; run again later
"""

from __future__ import annotations

import imaplib
import mailbox as stdlib_mailbox
import os
import re
import socket
import ssl
import stat
from base64 import b64encode
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

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
BATCH_SIZE = 100  # messages per UID FETCH
BATCH_BYTES = 16 * 1024 * 1024  # and at most this much of them (one bigger message goes alone)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CREDENTIALS_HINT = "set MAILER_IMAP_PASSWORD, or MAILER_IMAP_PASSWORD_FILE to a file holding it"
_SOURCE_HINT = (
    "give an mbox file, a Maildir folder (holding cur/ and new/) or imaps://USER@HOST/FOLDER"
)


@dataclass(frozen=True)
class MailItem:
    """One message of a mailbox, as RFC 5322 bytes, and where it came from."""

    key: str  # for the user's report: "message 3" (mbox), "cur/1732…:2,S" (Maildir), "UID 17"
    raw: bytes


class Mailbox:
    """What open_mailbox yields: iterate it for the MailItems, in order (once).

    `total` is the number of messages the mailbox held when opened (None if unknown), for a
    progress display; a message removed meanwhile is skipped, so fewer may come.
    """

    def __init__(
        self, name: str, total: int | None, items: Callable[[], Iterator[MailItem]]
    ) -> None:
        self.name = name  # "mbox PATH", "Maildir PATH", "imaps://user@host:993/INBOX"
        self.total = total
        self._items = items

    def __iter__(self) -> Iterator[MailItem]:
        return self._items()

    def __repr__(self) -> str:
        return f"<Mailbox {self.name} total={self.total}>"


@contextmanager
def open_mailbox(
    source: str,
    settings: Settings,
    *,
    batch_size: int = BATCH_SIZE,
    batch_bytes: int = BATCH_BYTES,
    timeout: float = IMAP_TIMEOUT,
) -> Iterator[Mailbox]:
    """Open SOURCE (an mbox, a Maildir, or imaps://…; see the module doc) for reading.

    Connecting, logging in and opening the folder happen here, so those errors come before
    the first message; the connection or file is closed when the block ends.
    """
    if batch_size < 1 or batch_bytes < 1:
        raise ValueError("batch_size and batch_bytes must be at least 1")
    opened: Iterator[Mailbox]
    if _URL.match(source):
        opened = _open_imap(parse_imap_url(source), settings, batch_size, batch_bytes, timeout)
    else:
        opened = _open_path(Path(source).expanduser())
    yield from opened


def _open_path(path: Path) -> Iterator[Mailbox]:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or folder", hint=_SOURCE_HINT) from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {_reason(exc)}") from exc
    if stat.S_ISDIR(mode):
        yield _maildir(path)
    elif stat.S_ISREG(mode):
        yield from _mbox(path)
    else:
        raise InputError(f"{path} is neither an mbox file nor a Maildir folder", hint=_SOURCE_HINT)


# -- mbox ---------------------------------------------------------------------------------


def _mbox(path: Path) -> Iterator[Mailbox]:
    try:
        with path.open("rb") as handle:
            first = handle.readline()
        box = stdlib_mailbox.mbox(str(path), factory=None, create=False)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {_reason(exc)}") from exc
    try:
        if first and not first.startswith(b"From "):
            raise InputError(
                f'{path} is not an mbox: it does not begin with a "From " line',
                hint=_SOURCE_HINT,
            )
        try:
            total = len(box)  # reads the file once for the offsets of its messages
        except OSError as exc:
            raise InputError(f"cannot read {path}: {_reason(exc)}") from exc
        yield Mailbox(f"mbox {path}", total, lambda: _mbox_items(box, path))
    finally:
        box.close()  # nothing was changed, so nothing is written


def _mbox_items(box: stdlib_mailbox.mbox, path: Path) -> Iterator[MailItem]:
    for number, key in enumerate(box.iterkeys(), start=1):
        try:
            raw = box.get_bytes(key)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {_reason(exc)}") from exc
        yield MailItem(f"message {number}", raw)


# -- Maildir ------------------------------------------------------------------------------
# Read by hand rather than with mailbox.Maildir, which does not tell a message's file name
# (the key the user's report shows) and would read the folders again after two seconds.


def _maildir(path: Path) -> Mailbox:
    if not ((path / "cur").is_dir() and (path / "new").is_dir()):
        raise InputError(
            f"{path} is a folder but not a Maildir: it has no cur/ and new/ sub-folders",
            hint=_SOURCE_HINT,
        )
    names = sorted(
        (name, folder) for folder in ("new", "cur") for name in _maildir_files(path / folder)
    )
    return Mailbox(f"Maildir {path}", len(names), lambda: _maildir_items(path, names))


def _maildir_files(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if not e.name.startswith(".") and e.is_file()]
    except OSError as exc:
        raise InputError(f"cannot read {folder}: {_reason(exc)}") from exc


def _maildir_items(path: Path, names: Iterable[tuple[str, str]]) -> Iterator[MailItem]:
    for name, folder in names:
        key = f"{folder}/{name}"
        raw = _read_maildir_file(path, key)
        if raw is None:  # moved (a flag change renames it: new/ → cur/) since the listing
            key = next(_maildir_renamed(path, name), "")
            raw = _read_maildir_file(path, key) if key else None
        if raw is not None:  # else deleted since the listing
            yield MailItem(key, raw)


def _read_maildir_file(path: Path, key: str) -> bytes | None:
    try:
        return (path / key).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read {path / key}: {_reason(exc)}") from exc


def _maildir_renamed(path: Path, name: str) -> Iterator[str]:
    """Where the message first listed as `name` is now (the part before ":" stays)."""
    unique = name.split(":", 1)[0]
    for folder in ("cur", "new"):
        for other in _maildir_files(path / folder):
            if other.split(":", 1)[0] == unique:
                yield f"{folder}/{other}"


# -- IMAP ---------------------------------------------------------------------------------


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
    """`imaps://USER@HOST[:PORT]/FOLDER` (percent-encoded parts decoded); see the module doc."""
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
        raise InputError(f"{shown}: unknown kind of mailbox URL", hint=_SOURCE_HINT)
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


def encode_folder_name(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501 5.1.3): "Été" → "&AMk-t&AOk-"."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def _quoted(text: str) -> str:
    """An IMAP quoted string (imaplib sends most arguments as they are)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _open_imap(
    source: ImapSource, settings: Settings, batch_size: int, batch_bytes: int, timeout: float
) -> Iterator[Mailbox]:
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
            messages = _examine(client, source)
        yield Mailbox(
            str(source),
            len(messages),
            lambda: _imap_items(client, source, messages, batch_size, batch_bytes),
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
            client.login(_quoted(source.user), password)
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
        first = data[0] if typ == "OK" and data else None
        found = _LIST_SEPARATOR.search(first) if isinstance(first, bytes) else None
        if found and found.group(1) not in (b"NIL", b'"/"'):
            separator = found.group(1)[1:-1].replace(b"\\\\", b"\\").decode("ascii")
            name = name.replace("/", separator)
    return encode_folder_name(name)


_LIST_SEPARATOR = re.compile(rb'^\([^)]*\) ("(?:\\.|[^"\\])*"|NIL)')
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


def _examine(client: imaplib.IMAP4_SSL, source: ImapSource) -> list[tuple[int, int]]:
    """Open the folder read-only; its messages as (UID, size), in UID order."""
    typ, data = client.select(_quoted(_server_folder(client, source)), readonly=True)
    if typ != "OK":
        text = _server_text(data)
        raise NotFoundError(
            f"no folder {source.folder!r} for {source.user} on the IMAP server {source.server}"
            f": {text}",
            hint="folder names are case-sensitive (except INBOX); separate sub-folders with /",
        )
    if not data or data[-1] in (None, b"0"):  # EXISTS
        return []
    typ, lines = client.uid("FETCH", "1:*", "(UID RFC822.SIZE)")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID FETCH (RFC822.SIZE): {typ} {lines}")
    messages: list[tuple[int, int]] = []
    for line in lines:
        head = line[0] if isinstance(line, tuple) else line
        if not isinstance(head, bytes):
            continue
        uid, size = _UID.search(head), _SIZE.search(head)
        if uid and size:
            messages.append((int(uid.group(1)), int(size.group(1))))
    return sorted(messages)


def _batches(
    messages: Iterable[tuple[int, int]], count: int, size_limit: int
) -> Iterator[list[int]]:
    batch: list[int] = []
    size = 0
    for uid, message_size in messages:
        if batch and (len(batch) >= count or size + message_size > size_limit):
            yield batch
            batch, size = [], 0
        batch.append(uid)
        size += message_size
    if batch:
        yield batch


def uid_set(uids: Iterable[int]) -> str:
    """An IMAP sequence set for ascending UIDs: [1, 2, 3, 7, 9, 10] → "1:3,7,9:10"."""
    runs: list[list[int]] = []
    for uid in uids:
        if runs and uid == runs[-1][1] + 1:
            runs[-1][1] = uid
        else:
            runs.append([uid, uid])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in runs)


def _imap_items(
    client: imaplib.IMAP4_SSL,
    source: ImapSource,
    messages: list[tuple[int, int]],
    batch_size: int,
    batch_bytes: int,
) -> Iterator[MailItem]:
    done = 0
    for batch in _batches(messages, batch_size, batch_bytes):
        lost = f"lost the connection to the IMAP server {source.server} after {done} messages"
        with _imap_errors(source, lost):
            typ, data = client.uid("FETCH", uid_set(batch), "(UID BODY.PEEK[])")
        if typ != "OK":
            text = _server_text(data)
            raise MailboxUnavailableError(
                f"the IMAP server {source.server} refuses to send messages after {done}: {text}"
            )
        bodies = _fetched_bodies(data)
        for uid in batch:
            raw = bodies.pop(uid, None)
            if raw is not None:  # else expunged since the folder was opened
                done += 1
                yield MailItem(f"UID {uid}", raw)


def _fetched_bodies(data: list[object]) -> dict[int, bytes]:
    """UID → message, from imaplib's UID FETCH answer (the UID before or after the body)."""
    bodies: dict[int, bytes] = {}
    waiting: bytes | None = None  # a body whose UID comes after it
    for part in data:
        if isinstance(part, tuple) and len(part) == 2:
            head, literal = part
            found = _UID.search(head) if isinstance(head, bytes) else None
            if found and isinstance(literal, bytes):
                bodies[int(found.group(1))] = literal
                waiting = None
            else:
                waiting = literal if isinstance(literal, bytes) else None
        elif isinstance(part, bytes) and waiting is not None:
            found = _UID.search(part)
            if found:
                bodies[int(found.group(1))] = waiting
            waiting = None
    return bodies


_TIMING = re.compile(r"\s*\(\d+\.\d+ \+ [^()]*secs?\)")  # dovecot's "(0.001 + 0.000 secs)"
_IMAPLIB_PREFIX = re.compile(r"^command: \w+ => ")


def _server_text(data: Iterable[object]) -> str:
    """The text of a NO reply, as imaplib hands it over."""
    text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
    return _TIMING.sub("", text).strip()


def _reason(exc: BaseException) -> str:
    """`connection refused`, `timed out`, `permission denied`: the reason, in a few words."""
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
