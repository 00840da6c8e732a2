"""The distant relay of distant_bench.py: a delay proxy in front of a counting SMTP server.

Each runs in its own child process (so that neither's CPU is the client's), on 127.0.0.1:

    python benchmarks/_delayproxy.py relay --folder DIR --user U --password P
    python benchmarks/_delayproxy.py proxy --target PORT --delay-ms 10

relay: aiosmtpd with STARTTLS (a trustme certificate for 127.0.0.1; the CA goes to
DIR/ca.pem), AUTH PLAIN and LOGIN for one user (required, and only over TLS), PIPELINING
offered in EHLO (aiosmtpd does not offer it by itself, but reads commands from a buffered
stream, so it serves pipelined commands in order), SMTPUTF8. It counts connections, every
command by name and the messages accepted (their data is dropped).

proxy: forwards TCP both ways and holds every chunk `delay` before writing it on, in order,
in each direction; it waits 3 × delay before connecting upstream (the TCP handshake a
distant relay costs: the greeting then comes 2 round trips after connect). It counts
connections, chunks, bytes, the delays it really added, and the turns: a chunk from the
server that follows a chunk from the client. A turn is one round trip the client waited for:
whatever it writes before the server answers (commands pipelined together, a message's body
and its final dot) is one turn, and so is whatever the server writes back before the client
speaks again (the lines of an EHLO reply, TLS session tickets). The greeting and the TLS
close_notify sent with no answer are not turns; a connection costs 2 round trips before its
greeting (the handshake above), which the counts do not see.

Each child prints one JSON line when ready ({"port": N}), then answers each `stats` line on
its standard input with one JSON line (its counters and its own CPU seconds); it exits at the
end of its input (the parent closed it, or died). `DistantRelay` starts and stops both.

Also here: the ceilings' client sessions, aiosmtplib's and a pipelining one over asyncio
streams (aiosmtplib's protocol keeps one reply per chunk: it cannot read pipelined replies).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import ssl
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import IO, Any

HOST = "127.0.0.1"


class RelayError(RuntimeError):
    """The relay or the proxy failed, or answered what it should not."""


# --- the proxy ------------------------------------------------------------------------------


class DelayProxy:
    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.counts: Counter[str] = Counter()
        self.delay_sum = 0.0

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.counts["connections"] += 1
        speaker = [""]  # who sent the last chunk on this connection: "client" or "server"
        try:
            await asyncio.sleep(3 * self.delay)  # SYN, SYN-ACK, ACK
            server_r, server_w = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(
                self._pump(client_r, server_w, "client", speaker),
                self._pump(server_r, client_w, "server", speaker),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_w, server_w):
                writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, side: str,
        speaker: list[str],
    ) -> None:
        """Read chunks as they come; write each on `delay` after it was read, in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                read_at, chunk = await queue.get()
                wait = read_at + self.delay - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:  # end of stream: close the other side too
                    writer.close()
                    return
                added = loop.time() - read_at
                self.delay_sum += added
                writer.write(chunk)
                await writer.drain()

        forwarder = asyncio.create_task(forward())
        try:
            while True:
                chunk = await reader.read(65536)
                queue.put_nowait((loop.time(), chunk))
                if not chunk:
                    break
                self.counts[f"chunks_{side}"] += 1
                self.counts[f"bytes_{side}"] += len(chunk)
                if side == "server" and speaker[0] == "client":
                    self.counts["turns"] += 1
                speaker[0] = side
            await forwarder
        finally:
            forwarder.cancel()

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "delay_sum_ms": 1000 * self.delay_sum}


# --- the relay ------------------------------------------------------------------------------


def _relay_factory(folder: Path, user: str, password: str, counts: Counter[str]) -> Any:
    """A factory of aiosmtpd sessions (STARTTLS, AUTH, counted); writes folder/ca.pem."""
    import trustme
    from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST, "localhost").configure_cert(context)

    class Handler:
        async def handle_EHLO(
            self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
            responses: list[str],
        ) -> list[str]:
            session.host_name = hostname
            return [*responses[:-1], "250-PIPELINING", responses[-1]]

        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            counts["messages"] += 1
            counts["message_bytes"] += len(envelope.original_content or b"")
            return "250 2.0.0 OK: queued"

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            user.encode(), password.encode())
        counts["auth_ok" if ok else "auth_failed"] += 1
        return AuthResult(success=ok, handled=False)

    class CountingSMTP(SMTP):
        def __init__(self) -> None:
            super().__init__(
                Handler(), hostname="relay.distant.test", tls_context=context,
                authenticator=authenticate, auth_required=True, auth_require_tls=True,
                enable_SMTPUTF8=True, loop=asyncio.get_running_loop(),
            )
            methods: dict[str, Any] = self._smtp_methods
            self._smtp_methods = {name: self._counted(name, m) for name, m in methods.items()}

        @staticmethod
        def _counted(name: str, method: Any) -> Any:
            async def call(arg: str | None) -> None:
                counts[f"cmd_{name}"] += 1
                await method(arg)

            return call

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            if not getattr(self, "_counted_once", False):  # again after STARTTLS
                self._counted_once = True
                counts["connections"] += 1
            super().connection_made(transport)

    return CountingSMTP


# --- the ceilings' client sessions (run by distant_bench.py's ceiling child) ------------------


async def aiosmtplib_session(
    port: int, context: ssl.SSLContext, login: tuple[str, str], sender: str,
    share: list[tuple[str, bytes]], *, grouped: bool = False,
) -> None:
    """aiosmtplib, one connection: EHLO, STARTTLS, EHLO, AUTH, then `sendmail()` each."""
    import aiosmtplib

    smtp = aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False, tls_context=context,
                           timeout=60)
    await smtp.connect()
    await smtp.ehlo()
    await smtp.starttls()
    await smtp.ehlo()
    await smtp.login(*login)
    for recipient, data in share:
        await smtp.sendmail(sender, [recipient], data)
    await smtp.quit()


async def pipelined_session(
    port: int, context: ssl.SSLContext, login: tuple[str, str], sender: str,
    share: list[tuple[str, bytes]], *, grouped: bool = False,
) -> None:
    """One connection over asyncio streams, messages in wire form (dots doubled, final dot).

    Each message's MAIL, RCPT and DATA go in one write, then their 3 replies are read (RFC
    2920); `grouped`: the message and its dot go with the next MAIL, RCPT and DATA (RFC 2920
    3.1: message content may open a group)."""
    reader, writer = await asyncio.open_connection(HOST, port)

    async def expect(*codes: int) -> list[bytes]:
        lines: list[bytes] = []
        for code in codes:
            while (line := await reader.readline())[3:4] == b"-":
                lines.append(line)
            lines.append(line)
            if not line.startswith(b"%d " % code):
                raise RelayError(f"expected {code}, got {line!r}")
        return lines

    await expect(220)
    writer.write(b"EHLO distant-bench\r\n")
    await expect(250)
    writer.write(b"STARTTLS\r\n")
    await expect(220)
    await writer.start_tls(context, server_hostname=HOST)
    writer.write(b"EHLO distant-bench\r\n")
    if not any(line[4:].upper().startswith(b"PIPELINING") for line in await expect(250)):
        raise RelayError("the relay does not offer PIPELINING")
    writer.write(b"AUTH PLAIN " + base64.b64encode("\0{}\0{}".format(*login).encode()) + b"\r\n")
    await expect(235)
    heads = [f"MAIL FROM:<{sender}>{'' if (sender + r).isascii() else ' SMTPUTF8'}\r\n"
             f"RCPT TO:<{r}>\r\nDATA\r\n".encode() for r, _ in share]
    if grouped:
        writer.write(heads[0])
        await expect(250, 250, 354)
    for n, (head, (_, body)) in enumerate(zip(heads, share, strict=True)):
        if grouped:
            following = heads[n + 1] if n + 1 < len(heads) else b""
            writer.write(body + following)
            await expect(250, *((250, 250, 354) if following else ()))
        else:
            writer.write(head)
            await expect(250, 250, 354)
            writer.write(body)
            await expect(250)
    writer.write(b"QUIT\r\n")
    await expect(221)
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()


# --- the children ---------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    proxy: DelayProxy | None = None
    counts: Counter[str] = Counter()
    if args.role == "proxy":
        proxy = DelayProxy(args.target, args.delay_ms / 1000)
        server = await asyncio.start_server(proxy.handle, HOST, 0)
    else:
        factory = _relay_factory(Path(args.folder), args.user, args.password, counts)
        server = await loop.create_server(factory, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        if line.strip() == b"stats":
            stats = proxy.stats() if proxy else dict(counts)
            print(json.dumps({**stats, "cpu_s": time.process_time()}), flush=True)
    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("relay", "proxy"))
    parser.add_argument("--target", type=int, help="proxy: the relay's port on 127.0.0.1")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="proxy: one-way delay")
    parser.add_argument("--folder", help="relay: where to write ca.pem")
    parser.add_argument("--user", default="bench")
    parser.add_argument("--password", default="bench-password")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the whole process group
        asyncio.run(_serve(args))
    return 0


class _Child:
    def __init__(self, argv: list[str], stderr: IO[bytes]) -> None:
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        self.port = int(self._line()["port"])

    def _line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RelayError(f"{self.process.args!r} exited {self.process.wait()}")
        return dict(json.loads(line))

    def stats(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return self._line()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class DistantRelay:
    """Both children, started in `folder` (ca.pem, their stderr); stopped on exit."""

    def __init__(self, folder: Path, delay_ms: float, user: str, password: str) -> None:
        self.folder, self.delay_ms, self.user, self.password = folder, delay_ms, user, password
        self.ca_file = folder / "ca.pem"
        self.children: list[_Child] = []

    def __enter__(self) -> DistantRelay:
        script = [sys.executable, str(Path(__file__).resolve())]
        self._stderr = (self.folder / "relay.err").open("wb")
        try:
            self.relay = self._start([*script, "relay", "--folder", str(self.folder),
                                      "--user", self.user, "--password", self.password])
            self.proxy = self._start([*script, "proxy", "--target", str(self.relay.port),
                                      "--delay-ms", str(self.delay_ms)])
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.port = self.proxy.port
        return self

    def _start(self, argv: list[str]) -> _Child:
        child = _Child(argv, self._stderr)
        self.children.append(child)
        return child

    def stats(self) -> dict[str, dict[str, Any]]:
        return {"relay": self.relay.stats(), "proxy": self.proxy.stats()}

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for child in reversed(self.children):
            child.stop()
        self._stderr.close()


if __name__ == "__main__":
    sys.exit(main())
