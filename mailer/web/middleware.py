"""What every response of `mailer serve` gets: the security headers, and an access log line
that names no one (token-shaped strings masked, no query string, no client address)."""

from __future__ import annotations

import logging
import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailer.web.pages import SECURITY_HEADERS

access_log = logging.getLogger("mailer.web.access")

# Anything shaped like a token (hex id, dot, MAC or a piece of one): masked in the access log.
_TOKEN_LIKE = re.compile(r"[0-9a-fA-F]{1,16}\.[A-Za-z0-9_-]+")


def masked_path(path: str) -> str:
    """The request path for a log: token-shaped parts replaced, length capped."""
    return _TOKEN_LIKE.sub("<token>", path)[:200]


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
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            access_log.info('"%s %s" %d', scope.get("method", "?"),
                            masked_path(str(scope.get("path", ""))), status or 500)
