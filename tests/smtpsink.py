"""Postfix's smtp-sink on 127.0.0.1, for the tests and the benchmarks: start, count, stop.

    with start_sink("-f", "RCPT") as sink:          # any smtp-sink fault flags
        ...send to sink.host, sink.port...
        sink.count()                                 # transactions whose DATA it received
        sink.recipients()                            # Counter: address -> copies received

smtp-sink (`man smtp-sink`, Postfix's test server, written in C) takes messages and throws them
away, at a rate no Python client reaches. Started here with:

- `-c`: running counters (`sess=N quit=N mesg=N`), written to a file after every message and
  every session; `count()` reads the last one. It costs almost nothing.
- `-D FILE -S MARKER` (unless `dump=False`): every completed transaction appended to one
  file, each after a marker unique to this sink, with smtp-sink's envelope lines
  (`X-Mail-Args:`, one `X-Rcpt-Args:` per RCPT) before the message. `messages()` and
  `recipients()` parse it. smtp-sink writes each transaction to the file in one go, when the
  final "." arrives and before it replies to it, so a client that got its reply finds its
  message there; and concurrent sessions never interleave (smtp-sink is one process, one
  event loop).
- `-u nobody` when running as root (smtp-sink refuses to run as root without `-u`); the dump
  folder is then handed to that user.

What counts as received: a transaction is counted (and dumped) once smtp-sink has read its
final "." — whatever it replies to that ".". With `-f .` (5xx), `-r .` (4xx), `-q .`
(disconnect, no reply) or `-Q .` (421), the message is counted although the client was told
it failed or was told nothing: exactly the "uncertain" case of a real relay. A transaction
abandoned before its "." is never counted.

Nothing here imports pytest or mailer: tests/sink.py wraps this for pytest (skip or fail when
smtp-sink is missing), and benchmarks/send_bench.py imports it directly.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
# Where Debian's postfix package puts it; /usr/sbin is not on every user's PATH.
SEARCH = ("/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink", "/usr/local/sbin/smtp-sink")
RUN_AS = "nobody"  # the user smtp-sink switches to when started as root
BACKLOG = 256
STARTUP_TIMEOUT = 10.0
# Options this module sets itself: a caller passing them would break the counting.
MANAGED = frozenset({"-c", "-d", "-D", "-S", "-u", "-R"})
_COUNTERS = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")
_ANGLE = re.compile(r"<([^>]*)>")


class SinkMissing(RuntimeError):
    """smtp-sink is not installed (Debian: `apt-get install postfix`)."""


class SinkError(RuntimeError):
    """smtp-sink did not start, or its output cannot be read."""


def smtp_sink_path() -> str | None:
    """The smtp-sink executable: on PATH, else where Postfix installs it; None if missing."""
    found = shutil.which("smtp-sink")
    if found:
        return found
    return next((path for path in SEARCH if os.access(path, os.X_OK)), None)


@dataclass(frozen=True)
class Counters:
    """smtp-sink's `-c` counters. `sessions` counts ended sessions, `quits` QUIT commands,
    `messages` transactions whose final "." was received (whatever the reply to it)."""

    sessions: int = 0
    quits: int = 0
    messages: int = 0


@dataclass(frozen=True)
class Received:
    """One transaction as smtp-sink dumped it."""

    mail_args: str  # the MAIL command's arguments: `<sender> SIZE=… BODY=8BITMIME …`
    rcpt_args: tuple[str, ...]  # each RCPT command's arguments, in order
    helo: str | None  # the EHLO/HELO argument
    data: bytes  # the message as received: header and body, LF line ends, dots unstuffed

    @property
    def sender(self) -> str:
        """The envelope sender (MAIL FROM), without the angle brackets."""
        return _address(self.mail_args)

    @property
    def recipients(self) -> tuple[str, ...]:
        """The envelope recipients (RCPT TO), without the angle brackets."""
        return tuple(_address(args) for args in self.rcpt_args)

    @property
    def wire_data(self) -> bytes:
        """The message with CRLF line ends, as a client sends it (before dot-stuffing)."""
        return self.data.replace(b"\n", b"\r\n")


def _address(args: str) -> str:
    """`<a@b.fr> SIZE=12` -> `a@b.fr`."""
    match = _ANGLE.search(args)
    if match:
        return match.group(1)
    words = args.split()
    return words[0] if words else ""


class Sink:
    """A running smtp-sink: where it listens, what it received. Use start_sink()."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        folder: Path,
        dump_path: Path | None,
        marker: bytes,
        flags: Sequence[str],
    ) -> None:
        self.host = HOST
        self.port = port
        self.process = process
        self.folder = folder
        self.dump_path = dump_path
        self.flags = tuple(flags)
        self._marker = marker
        self._counters_path = folder / "counters"
        self._log_path = folder / "stderr.log"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __repr__(self) -> str:
        return f"<Sink {self.host}:{self.port} pid={self.pid} flags={list(self.flags)}>"

    # --- counting ---------------------------------------------------------------------------

    def counters(self) -> Counters:
        """The last `-c` counters smtp-sink wrote (zeros before its first event)."""
        try:
            tail = _tail(self._counters_path, 256)
        except FileNotFoundError:
            return Counters()
        found = _COUNTERS.findall(tail)
        if not found:
            return Counters()
        sessions, quits, messages = (int(value) for value in found[-1])
        return Counters(sessions, quits, messages)

    def count(self) -> int:
        """Transactions received, i.e. whose final "." smtp-sink read (see the module doc)."""
        return self.counters().messages

    def wait_for(self, messages: int, timeout: float = 5.0) -> int:
        """Wait until count() reaches `messages` (or the timeout); return count()."""
        deadline = time.monotonic() + timeout
        while (found := self.count()) < messages and time.monotonic() < deadline:
            time.sleep(0.01)
        return found

    # --- the dump ---------------------------------------------------------------------------

    def envelopes(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """(sender, recipients) of each dumped transaction, streamed: bodies are not kept."""
        for received in self._parse(keep_data=False):
            yield received.sender, received.recipients

    def messages(self) -> list[Received]:
        """Every dumped transaction, in the order smtp-sink completed them."""
        return list(self.iter_messages())

    def iter_messages(self) -> Iterator[Received]:
        """messages(), streamed: one message in memory at a time."""
        return self._parse(keep_data=True)

    def recipients(self) -> Counter[str]:
        """How many copies each envelope recipient received (one per RCPT in a dumped
        transaction): `sink.recipients()["a@b.fr"] == 2` is a duplicate."""
        copies: Counter[str] = Counter()
        for _sender, recipients in self.envelopes():
            copies.update(recipients)
        return copies

    def _parse(self, *, keep_data: bool) -> Iterator[Received]:
        if self.dump_path is None:
            raise SinkError("this sink was started with dump=False: it only counts")
        if not self.dump_path.exists():
            return
        for record in _records(self.dump_path, self._marker):
            yield _parse_record(record, keep_data=keep_data)

    # --- life -------------------------------------------------------------------------------

    def log(self) -> str:
        """What smtp-sink wrote on its standard error (warnings such as "lost connection")."""
        try:
            return self._log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds smtp-sink has used so far (None once it has exited)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Terminate smtp-sink (idempotent)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _tail(path: Path, size: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - size))
        return handle.read()


def _records(path: Path, marker: bytes, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The dump file split on the marker, streamed in chunks (a dump can be gigabytes)."""
    pending = b""
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            pending += block
            parts = pending.split(marker)
            pending = parts.pop()
            for part in parts:
                if part:
                    yield part
    if pending:
        yield pending


def _parse_record(record: bytes, *, keep_data: bool) -> Received:
    """smtp-sink's envelope lines, its three-line Received header, then the message."""
    mail_args = ""
    helo: str | None = None
    rcpts: list[str] = []
    position = 0
    while True:
        end = record.find(b"\n", position)
        if end < 0:
            raise SinkError(f"truncated dump record: {record[:200]!r}")
        line = record[position:end].decode("utf-8", errors="surrogateescape")
        position = end + 1
        name, _, value = line.partition(": ")
        if name == "X-Mail-Args":
            mail_args = value
        elif name == "X-Rcpt-Args":
            rcpts.append(value)
        elif name == "X-Helo-Args":
            helo = value
        elif name == "Received":
            break  # followed by two continuation lines ("\tby …", "\t<date>")
    for _ in range(2):
        position = record.index(b"\n", position) + 1
    data = b""
    if keep_data:
        data = record[position:]
        # The final CRLF "." CRLF is dumped as one empty line after the message's last one.
        data = data.removesuffix(b"\n")
    return Received(mail_args, tuple(rcpts), helo, data)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    with suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _listening(pid: int, port: int) -> bool | None:
    """Whether process `pid` listens on 127.0.0.1:port (None: /proc cannot tell).

    Read from /proc rather than by connecting: a probe connection would be a session in
    smtp-sink's counters (tests count sessions to check connection reuse).
    """
    try:
        table = Path("/proc/net/tcp").read_text(encoding="ascii")
    except OSError:
        return None
    wanted = f"0100007F:{port:04X}"  # 127.0.0.1 in /proc's little-endian hex
    inodes = {
        fields[9]
        for fields in (line.split() for line in table.splitlines()[1:])
        if len(fields) > 9 and fields[1] == wanted and fields[3] == "0A"  # 0A: LISTEN
    }
    return bool(inodes & _socket_inodes(pid))


def _wait_listening(process: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
    """True once smtp-sink listens; False if it exited first (e.g. the port was taken)."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        state = _listening(process.pid, port)
        if state is None:  # no /proc: try a connection (it shows as one session)
            with suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
                state = True
        if state:
            return True
        time.sleep(0.005)
    raise SinkError(f"smtp-sink did not listen on {HOST}:{port} within the timeout")


def _check_flags(flags: Sequence[str]) -> None:
    for flag in flags:
        if flag[:2] in MANAGED:
            raise ValueError(
                f"smtp-sink option {flag[:2]} is set by start_sink itself (counting, dump, user)"
            )


@contextmanager
def start_sink(
    *flags: str,
    dump: bool = True,
    folder: Path | None = None,
    timeout: float = STARTUP_TIMEOUT,
) -> Iterator[Sink]:
    """Start smtp-sink on 127.0.0.1 and a free port; stop it (and delete its files) on exit.

    `flags` are smtp-sink options as separate arguments, e.g. `start_sink("-f", "RCPT")`
    (hard 5xx reply to RCPT), `("-r", "MAIL")` (soft 4xx), `("-q", "DATA")` (disconnect
    without a reply), `("-Q", ".")` (421 and disconnect), `("-W", "rcpt:2")` (wait 2 s
    before replying), `("-W", "rcpt:1:50")` (a random multiple of 1 s: the number of d100
    rolls until one is >= 50). `dump=False` only counts (no file per message: for
    benchmarks). `folder`: where its files go (default: a new temporary folder, removed
    afterwards). Raises SinkMissing if smtp-sink is not installed.
    """
    executable = smtp_sink_path()
    if executable is None:
        raise SinkMissing(
            "Postfix's smtp-sink is not installed "
            "(Debian/Ubuntu: apt-get install postfix, then make sure no postfix daemon runs)"
        )
    _check_flags(flags)
    own_folder = folder is None
    work = Path(tempfile.mkdtemp(prefix="smtp-sink-")) if folder is None else folder
    work.mkdir(parents=True, exist_ok=True)
    user: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam(RUN_AS)
        os.chown(work, account.pw_uid, account.pw_gid)  # it writes its dump files there
        user = ["-u", RUN_AS]
    token = secrets.token_hex(8)
    marker = f"X-Smtp-Sink-Record: {token}\n".encode()
    dump_path = work / "dump" if dump else None
    dump_args = ["-D", str(dump_path), "-S", f"X-Smtp-Sink-Record: {token}\\n"] if dump else []
    process: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(5):
            port = _free_port()
            argv = [executable, "-c", *user, *dump_args, *flags, f"{HOST}:{port}", str(BACKLOG)]
            with (
                (work / "counters").open("wb") as out,
                (work / "stderr.log").open("wb") as err,
            ):
                process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, close_fds=True
                )
            if _wait_listening(process, port, time.monotonic() + timeout):
                break
            log = (work / "stderr.log").read_text(encoding="utf-8", errors="replace")
            if "in use" not in log:  # not a port race: a bad flag, say
                raise SinkError(f"smtp-sink exited: {' '.join(argv)}\n{log.strip()}")
        else:
            raise SinkError("smtp-sink found no free port in 5 attempts")
        sink = Sink(process, port, work, dump_path, marker, flags)
        try:
            yield sink
        finally:
            sink.stop()
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        if own_folder:
            shutil.rmtree(work, ignore_errors=True)
