"""`mailer serve`: the one-click unsubscribe endpoint (the web stack loads only when it runs)."""

from __future__ import annotations

from typing import Annotated

import typer

from mailer import api
from mailer.cli.root import settings_of


def serve_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(
        help="Address to listen on (plain HTTP; put a reverse proxy with TLS in front)."
    )] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        min=0, max=65535, help="Port to listen on (0: any free port, printed)."
    )] = 8080,
) -> None:
    """Answer one-click unsubscribe links (RFC 8058) at the path of MAILER_UNSUBSCRIBE_URL.

    GET shows a page in French with a button; only the POST unsubscribes.

    Example: mailer serve --port 8080
    """
    api.serve(settings_of(ctx), host, port)
