"""What every request of `mailer serve` goes through: the security headers on the response, a
bounded body, and one access log line that names no one and cannot forge another line.

The log line masks token-shaped strings and escapes what the client chose (the path is
decoded: `%0D%0A` there would otherwise start a line of its own); no query string, no client
address. A request cut short (the client went away, or `connections` closed it at its read
deadline) is that one line, with status 499 and why, not a traceback.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailer.web import pages
from mailer.web.limits import READ_TIMED_OUT

access_log = logging.getLogger("mailer.web.access")

# Anything shaped like a token (hex id, dot, MAC or a piece of one): masked in the access log.
_TOKEN_LIKE = re.compile(r"[0-9a-fA-F]{1,16}\.[A-Za-z0-9_-]+")
# Logged as %XX besides what is not printable: the quotes around the path, and % itself so
# that a logged `%0A` always means a literal "%0A" in the request.
_ESCAPED = frozenset('"\\%')
CLIENT_GONE = 499  # nginx's "client closed request": logged, never sent


def escaped(text: str) -> str:
    """`text` with control, invisible and layout characters (CR, LF, ESC, U+2028, bidi
    overrides, …) written as %XX of their UTF-8: one log line stays one line, as it reads."""
    return "".join(
        quote(char, safe="") if not char.isprintable() or char in _ESCAPED else char
        for char in text
    )


def masked_path(path: str) -> str:
    """The request path for a log: token-shaped parts replaced, escaped, length capped."""
    return escaped(_TOKEN_LIKE.sub("<token>", path))[:200]


class HeadersAndAccessLog:
    """Pure ASGI middleware: the security headers on every response, and an access log
    line with anything shaped like a token masked (and no query string, no client address)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                for name, value in pages.SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except ClientDisconnect:
            # Nobody to answer and nothing broken: the log line below says it, no traceback.
            status = CLIENT_GONE
        finally:
            why = ""
            if status == CLIENT_GONE:
                why = (" (not received whole within the read timeout)" if scope.get(READ_TIMED_OUT)
                       else " (the client went away mid-request)")
            access_log.info('"%s %s" %d%s', escaped(str(scope.get("method", "?"))),
                            masked_path(str(scope.get("path", ""))), status or 500, why)


class BodyLimit:
    """Pure ASGI middleware: a request body over `max_bytes` is refused (413, and the
    connection closed) as soon as that is known: at once from its Content-Length, or when a
    chunked body goes past it. Nothing behind it ever reads more than `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")  # h11 has checked its syntax
        if declared is not None and (len(declared) > 12 or int(declared) > self.max_bytes):
            page = pages.too_large()
            await HTMLResponse(page.html, page.status, page.headers)(scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the endpoint's read: its HTTPException handler answers.
                    raise HTTPException(413)
            return message

        await self.app(scope, bounded_receive, send)
