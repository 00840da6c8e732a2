"""`mailer serve`'s connections: how long a request may take to arrive, how many may be open.

uvicorn's h11 protocol closes a connection left idle after an answer (`timeout_keep_alive`),
but not one that never sends a request, nor one that trickles its headers a byte at a time,
nor one that stalls in the middle of its body: each would hold a descriptor (and, for a
body, a waiting request) for as long as the client likes. This subclass adds two guards:

- a request, headers and body, must arrive whole within `Limits.read_timeout` of the
  connection's start or of the previous answer, however slowly it trickles in; past that the
  connection is closed (a request waiting for its body sees the client gone: one log line);
- past `Limits.max_connections` open at once, a new connection gets a bare 503 and is closed.

Still plain HTTP for one small server: a reverse proxy in front (docs/unsubscribe.md)
buffers requests and terminates TLS.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, cast

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from mailer.web.limits import READ_TIMED_OUT, Limits, OncePer

log = logging.getLogger("mailer.web")

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n"
    b"retry-after: 10\r\ncache-control: no-store\r\n\r\n"
)
_WAITING = (h11.IDLE, h11.SEND_BODY)  # the client's side of a request not yet whole


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request and a cap on connections."""

    limits: ClassVar[Limits] = Limits()
    refusals: ClassVar[OncePer] = OncePer(10.0)

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse()
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        self._unwatch()
        super().on_response_complete()  # may start a pipelined request, even a whole one
        self._watch()  # the next request's deadline runs from this answer

    def connection_lost(self, exc: Exception | None) -> None:
        self._unwatch()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Start the deadline when a request is awaited; it runs until the request is whole
        (bytes trickling in do not move it); stop it once the request is whole."""
        if self.conn.their_state not in _WAITING or self.transport.is_closing():
            self._unwatch()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.limits.read_timeout, self._expired)

    def _unwatch(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            cast(dict[str, Any], self.scope)[READ_TIMED_OUT] = True  # for the access log
        self.transport.close()

    def _refuse(self) -> None:
        self.transport.write(_REFUSED)
        self.transport.close()
        if (quiet := self.refusals.due()) is not None:
            log.warning("%d connections open, the limit: refusing new ones with 503%s",
                        self.limits.max_connections, OncePer.more(quiet))


def protocol_for(limits: Limits) -> type[GuardedH11Protocol]:
    """The protocol class for one server, with its limits (uvicorn instantiates it)."""

    class Guarded(GuardedH11Protocol):
        pass

    Guarded.limits = limits
    Guarded.refusals = OncePer(10.0)
    return Guarded
