"""What `mailer serve` bounds and how long it waits: the numbers in one place, with production
defaults, and a rate limit for the log lines that trouble repeats.

Each number caps what one client can make the server spend (memory, CPU, a descriptor, a
database connection, a thread) or how long it holds it. The tests build a `Limits` with small
values; `mailer serve` uses the defaults. A reverse proxy in front adds its own limits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

# A key `connections` sets in the ASGI scope of a request it cut at its read deadline, so the
# access log says why the request ended (the app only sees the connection close).
READ_TIMED_OUT = "mailer.read_timed_out"


@dataclass(frozen=True)
class Limits:
    """The bounds of one server (`create_app(..., limits=)`; `Server` reads them from the app)."""

    # A one-click POST is 26 bytes (`List-Unsubscribe=One-Click`), a multipart one a few
    # hundred: anything past this is refused (413) before it is read, let alone parsed.
    max_body_bytes: int = 4096
    # Fields of a form body, empty ones (`&&&`) included: each costs the parser work.
    max_fields: int = 20
    # The request line and headers (h11's own default, said here): a proxy's headers and the
    # cookies of the site in front can take a few KB; past this h11 answers 400.
    max_header_bytes: int = 16_384
    # A request, headers and body, must arrive whole within this many seconds of the
    # connection's start or of the previous answer, however slowly it trickles in.
    read_timeout: float = 15.0
    # An idle connection between two requests is closed after this many seconds (uvicorn's).
    keep_alive: int = 5
    # Connections open at once; a new one past this is answered 503 and closed.
    max_connections: int = 100
    # Seconds a request waits for its turn at the database, then (a write) for the write
    # lock another process holds: past either, 503 with Retry-After.
    database_wait: float = 5.0
    # Requests at the database at once, each holding one pooled connection and one thread:
    # together fewer than the engine's pool (5 + 10 overflow), so the pool is never exhausted.
    database_readers: int = 6
    database_writers: int = 2


def count_fields(content_type: str, body: bytes) -> int:
    """How many fields a form parser would walk through in `body`, empty ones included.

    An upper bound, cheap to compute on the raw bytes: for multipart, the part delimiters
    (lines starting with `--`) less the closing one; otherwise the `&`-separated pieces.
    """
    if content_type.split(";")[0].strip().lower() == "multipart/form-data":
        delimiters = body.count(b"\n--") + (1 if body.startswith(b"--") else 0)
        return max(delimiters - 1, 0)
    return body.count(b"&") + 1 if body else 0


class OncePer:
    """At most one log line every `seconds` for one kind of trouble: a thousand refused
    requests are one line (and a count in the next one), not a thousand. Event loop only."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last = -seconds - 1.0
        self._quiet = 0

    def due(self) -> int | None:
        """None: stay quiet (this one is counted). Else: log now; how many were kept quiet."""
        now = time.monotonic()
        if now - self._last < self.seconds:
            self._quiet += 1
            return None
        quiet, self._quiet, self._last = self._quiet, 0, now
        return quiet

    @staticmethod
    def more(quiet: int) -> str:
        """The suffix a line carries for those kept quiet since the previous one."""
        return f" ({quiet} more since the previous line)" if quiet else ""
