"""`mailer serve`: the one-click unsubscribe endpoint (RFC 8058), a Starlette app under uvicorn.

It answers at the path of the unsubscribe URL template(s): GET shows a short French page
with one button, only a POST with `List-Unsubscribe=One-Click` unsubscribes, and a bad token
gets one 404 page that says nothing about anyone. Every page carries strict security
headers; tokens are never logged. Plain HTTP, on the loopback by default: a reverse proxy
with TLS goes in front of it for the public https URL. What one client can cost is bounded
(`Limits`): body and fields, time at the database, time to send a request, connections.

One job per module, each importing only those above it:

- `limits`: the bounds and their production defaults; a rate limit for repeated log lines;
- `routes`: which paths to answer at, and the list name each one's pages show;
- `pages`: the French pages (templates in `templates/`), their stylesheet, security headers;
- `service`: the database side: one engine, the token check, the status change;
- `gate`: bounded turns at the database, in threads of its own; failures as one 503;
- `middleware`: security headers, the body limit, the access log (tokens masked, escaped);
- `application`: the Starlette application, requests to pages;
- `connections`: uvicorn's h11 protocol with a deadline per request and a connection cap;
- `server`: uvicorn on a socket bound here, and `serve` itself.

This package re-exports what `mailer serve`, the tests and an embedding program use.
"""

from __future__ import annotations

from mailer.web.application import create_app
from mailer.web.limits import Limits
from mailer.web.routes import UnsubscribeRoute, unsubscribe_routes
from mailer.web.server import Server, listen, prepare, serve

__all__ = ["Limits", "Server", "UnsubscribeRoute", "create_app", "listen", "prepare", "serve",
           "unsubscribe_routes"]
