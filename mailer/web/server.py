"""`mailer serve`'s server: uvicorn on a socket it binds itself, and what `serve` prints.

Plain HTTP on the loopback by default: a reverse proxy with TLS goes in front of it for the
public https URL. uvicorn's access log is off (it would log tokens); the app's middleware
writes one with tokens masked. The connections are bounded by the app's `Limits`: headers'
size, a deadline for each request, the keep-alive, how many are open (`connections`).
"""

from __future__ import annotations

import copy
import errno
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import LOGGING_CONFIG

from mailer.core.clock import Clock, system_clock
from mailer.core.config import Settings
from mailer.core.errors import ConfigError, MailerError
from mailer.web.application import create_app
from mailer.web.connections import protocol_for
from mailer.web.limits import Limits
from mailer.web.routes import UnsubscribeRoute


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket for uvicorn; ConfigError naming host:port otherwise."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"cannot listen on {where}: unknown host ({exc})",
                          hint="use an address of this machine, e.g. --host 127.0.0.1") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"cannot listen on {where}: the address is already in use",
                              hint="another program (or mailer serve) uses this port; choose "
                              "another with --port") from exc
        raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def _log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, with mailer's loggers on its default handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["mailer"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


class Server:
    """uvicorn serving the app on an already-bound socket: in this thread or in another."""

    def __init__(
        self, app: Starlette, sock: socket.socket, *, log_level: str = "warning",
        log_config: dict[str, Any] | None = None,
    ) -> None:
        """`log_config`: a logging dictConfig to apply (serve: uvicorn's, with mailer's
        loggers); None leaves logging as it is (tests, an embedding program)."""
        self.app = app
        self.socket = sock
        limits: Limits = app.state.limits
        config = uvicorn.Config(
            app,
            log_level=log_level,
            log_config=log_config,
            access_log=False,  # it would log tokens; HeadersAndAccessLog logs masked paths
            lifespan="on",
            server_header=False,
            timeout_graceful_shutdown=10,  # a stuck client does not hold up a stop
            proxy_headers=False,  # nothing here depends on the client's address or scheme
            # h11 always (httptools, if installed, would not have the guards), no WebSocket.
            http=protocol_for(limits),
            ws="none",
            timeout_keep_alive=limits.keep_alive,
            h11_max_incomplete_event_size=limits.max_header_bytes,
        )
        self.uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def urls(self) -> list[str]:
        routes: Sequence[UnsubscribeRoute] = self.app.state.routes
        return [self.base_url + route.display for route in routes]

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (or `stop()`), then close the socket."""
        try:
            self.uvicorn.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def start(self, timeout: float = 10.0) -> None:
        """Serve in a background thread; return once it answers."""
        self._thread = threading.Thread(target=self.run, name="mailer-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the web server did not start")
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)


def prepare(settings: Settings, host: str, port: int, *, clock: Clock = system_clock) -> Server:
    """Everything `serve` does before serving: routes, socket, database; errors as MailerError."""
    app = create_app(settings, clock=clock)
    sock = listen(host, port)
    try:
        app.state.database.open()
    except BaseException:
        sock.close()
        app.state.database.close()
        raise
    return Server(app, sock, log_level="info", log_config=_log_config())


_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080) -> None:
    """`mailer serve`: answer unsubscribe links until Ctrl-C or SIGTERM.

    Plain HTTP: on the loopback by default, behind a reverse proxy with TLS that forwards the
    public https URL's path here unchanged.
    """
    server = prepare(settings, host, port)
    routes: Sequence[UnsubscribeRoute] = server.app.state.routes
    for url, route in zip(server.urls(), routes, strict=True):
        print(f"Answering unsubscribe links at {url}", flush=True)
        for public in route.urls:
            print(f"  for {public}", flush=True)
    print(f"Database: {server.app.state.database.where}", flush=True)
    if host not in _LOOPBACK:
        print(f"Warning: listening on {host}, not the loopback: this is plain HTTP; only a "
              "reverse proxy with TLS should reach it.", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass  # uvicorn has shut down cleanly and passes the Ctrl-C on: that is our exit
    except SystemExit as exc:  # uvicorn's own exit when its startup fails (logged above)
        raise MailerError(f"the web server could not start (uvicorn exit {exc.code})") from exc
    print("Stopped.", flush=True)
