"""The Starlette application: requests to the unsubscribe routes, answered with the pages.

- GET (and HEAD) shows the page with one button, a `<form method="post">` to the same URL
  carrying `List-Unsubscribe=One-Click`. GET never changes anything: link scanners follow it.
- POST with `List-Unsubscribe=One-Click` (urlencoded or multipart) unsubscribes at once;
  again, it answers "déjà".
- An invalid, tampered or unknown token is a 404 that says nothing about any address; a
  database that is down, or locked past `Limits.database_wait`, is a 503 with Retry-After
  (`gate`); a body or a form over `Limits` is a 413 before it is parsed; any other error is
  a page, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import Message

from mailer.core.clock import Clock, system_clock
from mailer.core.config import Settings
from mailer.core.errors import DatabaseError
from mailer.core.states import SubscriberStatus
from mailer.web import pages
from mailer.web.gate import Gate, Unavailable
from mailer.web.limits import Limits, count_fields
from mailer.web.middleware import BodyLimit, HeadersAndAccessLog
from mailer.web.routes import UnsubscribeRoute, unsubscribe_routes
from mailer.web.service import Database, Outcome, Service

log = logging.getLogger("mailer.web")


def respond(page: pages.Page) -> HTMLResponse:
    return HTMLResponse(page.html, status_code=page.status, headers=page.headers)


class _UnsubscribeEndpoint:
    """GET/HEAD: the confirmation page; POST: unsubscribe. One per route."""

    def __init__(self, route: UnsubscribeRoute, service: Service, gate: Gate,
                 limits: Limits) -> None:
        self.route = route
        self.service = service
        self.gate = gate
        self.limits = limits

    def _token(self, request: Request) -> str | None:
        if not self.route.query_names:
            token = request.path_params.get("token")
            return token if isinstance(token, str) else None
        for name in self.route.query_names:
            value = request.query_params.get(name)
            if value:
                return value
        return None

    async def handle(self, request: Request) -> Response:
        return respond(await self._page(request))

    async def _page(self, request: Request) -> pages.Page:
        token = self._token(request)
        if request.method == "POST":
            form = await self._form(request)
            if form is None:
                return pages.too_large()
            if form.get(pages.ONE_CLICK_FIELD) != pages.ONE_CLICK_VALUE:
                return pages.error(400)
            if token is None:
                return pages.invalid_link()
            try:
                result = await self.gate.write(self.service.unsubscribe, token)
            except Unavailable:
                return pages.unavailable()
            if result is None:
                return pages.invalid_link()
            found, outcome = result
            return pages.done(self.route.list_name, found.email,
                              already=outcome is Outcome.ALREADY)
        # GET and HEAD: look only.
        if token is None:
            return pages.invalid_link()
        try:
            found_or_none = await self.gate.read(self.service.find, token)
        except Unavailable:
            return pages.unavailable()
        if found_or_none is None:
            return pages.invalid_link()
        if found_or_none.status != SubscriberStatus.ACTIVE.value:
            return pages.done(self.route.list_name, found_or_none.email, already=True)
        return pages.confirm(self.route.list_name, found_or_none.email)

    async def _form(self, request: Request) -> FormData | None:
        """The POST's form, or None when it holds too many fields (empty ones included).

        The body is read whole first, BodyLimit answering 413 past `max_body_bytes`: so the
        fields can be counted on the raw bytes before a parser walks through them.
        """
        body = await request.body()
        if count_fields(request.headers.get("content-type", ""), body) > self.limits.max_fields:
            return None

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        return await Request(request.scope, replay).form(
            max_files=0, max_fields=self.limits.max_fields,
            max_part_size=self.limits.max_body_bytes)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 413:  # from BodyLimit, mid-body
        return respond(pages.too_large())
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    return respond(pages.error(exc.status_code, headers))


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette logs nothing itself here and uvicorn re-raises into its own log: the
    # traceback stays on the server, the client gets a page. (This response is sent from
    # outside the middleware: it carries the security headers itself, as every page does.)
    return respond(pages.error(500))


def create_app(settings: Settings, *, clock: Clock = system_clock,
               limits: Limits | None = None) -> Starlette:
    """The unsubscribe application: its routes come from the unsubscribe URL template(s).

    ConfigError when there is no URL to answer at. The database is opened by the lifespan
    (startup), once; `app.state.database.open()` may be called earlier to fail fast.
    `limits` (the defaults when None) are kept in `app.state.limits` for `Server`.
    """
    limits = limits or Limits()
    routes_config = unsubscribe_routes(settings)
    database = Database(settings, lock_wait=limits.database_wait)
    service = Service(database, clock)
    gate = Gate(limits)
    routes = [
        Route(route.path, endpoint=_UnsubscribeEndpoint(route, service, gate, limits).handle,
              methods=["GET", "POST"], name=f"unsubscribe-{index}")
        for index, route in enumerate(routes_config)
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(database.open)
        except DatabaseError as exc:
            log.warning("database unavailable at startup (pages answer 503 until it is "
                        "back): %s", exc.message)
        try:
            yield
        finally:
            await run_in_threadpool(database.close)

    app = Starlette(
        routes=routes,
        middleware=[Middleware(HeadersAndAccessLog),
                    Middleware(BodyLimit, max_bytes=limits.max_body_bytes)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    # /desinscription/TOKEN/ is not a link mailer wrote: no redirect built from the Host
    # header (it would say http:// behind a TLS proxy), just the 404 page.
    app.router.redirect_slashes = False
    app.state.database = database
    app.state.routes = routes_config
    app.state.limits = limits
    return app
