"""`mailer serve`: the one-click unsubscribe endpoint (RFC 8058), a Starlette app under uvicorn.

It answers at the path of the unsubscribe URL template (MAILER_UNSUBSCRIBE_URL, else every
campaign's `[unsubscribe] url`), with `{token}` as a path segment (`/desinscription/{token}`)
or as a query value (`/u?t={token}`):

- GET (and HEAD) shows a short French page naming the list and the address (partly masked)
  with one button, a `<form method="post">` to the same URL carrying
  `List-Unsubscribe=One-Click`. GET never changes anything: link scanners follow it.
- POST with `List-Unsubscribe=One-Click` (urlencoded or multipart) unsubscribes at once,
  skipping the person's pending and deferred deliveries; again, it answers "déjà".
- An invalid, tampered or unknown token is a 404 that says nothing about any address.

Every page carries no-store, no-referrer, noindex, nosniff and a strict Content-Security-Policy
(no script, one hashed inline style, forms to 'self' only). One engine is opened at startup;
a database that is down gives a 503 page, logged, and is tried again on later requests. Tokens
identify people: they are never logged (uvicorn's access log is off; ours masks them).

The server speaks plain HTTP on the loopback by default: a reverse proxy with TLS goes in
front of it for the public https URL.
"""

from __future__ import annotations

import base64
import copy
import errno
import hashlib
import html
import logging
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import uvicorn
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import LOGGING_CONFIG

from mailer.campaign import (
    METADATA,
    TOKEN_FIELD,
    campaign_names,
    check_unsubscribe_url,
    parse_mailbox,
)
from mailer.clock import Clock, system_clock
from mailer.config import Settings, read_toml
from mailer.errors import ConfigError, DatabaseError, MailerError
from mailer.states import SubscriberStatus
from mailer.store import meta
from mailer.store import subscribers as store
from mailer.store.engine import (
    database_errors,
    describe,
    ensure_schema,
    open_engine,
    read_transaction,
    write_transaction,
)
from mailer.tokens import token_subscriber_id, verify_token

log = logging.getLogger("mailer.web")
access_log = logging.getLogger("mailer.web.access")

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
RETRY_AFTER_SECONDS = 60  # the 503 page's Retry-After header
_DATABASE_RETRY_SECONDS = 2.0  # while the database is down, at most one attempt this often
_PLACEHOLDER = "MAILERTOKENPLACEHOLDER"
_LIST_ID_PHRASE = re.compile(r"^\s*(?P<phrase>[^<>]*?)\s*<[^<>]+>\s*$")
# Anything shaped like a token (hex id, dot, MAC or a piece of one): masked in the access log.
_TOKEN_LIKE = re.compile(r"[0-9a-fA-F]{1,16}\.[A-Za-z0-9_-]+")


# --- where to answer -----------------------------------------------------------------------


@dataclass(frozen=True)
class UnsubscribeRoute:
    """One path the server answers at, and where the token is in its requests."""

    path: str  # decoded, as Starlette matches it: `/desinscription/{token}` or `/u`
    query_names: tuple[str, ...]  # empty: the token is in the path; else the query parameter(s)
    list_name: str | None  # the list the page names, when every campaign here agrees on one
    urls: tuple[str, ...]  # the configured URL templates that lead here

    @property
    def display(self) -> str:
        """The local path with its token placeholder, as printed at startup."""
        if not self.query_names:
            return self.path
        return f"{self.path}?{self.query_names[0]}={TOKEN_FIELD}"


@dataclass(frozen=True)
class _Source:
    url: str
    list_name: str | None
    origin: str  # where the URL was configured, for error messages


def _list_name(data: dict[str, Any], settings: Settings, source: str) -> str | None:
    """The campaign's List-Id description, else the sender's name, else None."""
    list_id = data.get("list_id")
    if isinstance(list_id, str):
        match = _LIST_ID_PHRASE.match(" ".join(list_id.split()))
        phrase = match.group("phrase").strip().strip('"').strip() if match else ""
        if phrase:
            return phrase
    sender = settings.sender or data.get("from")
    if isinstance(sender, str) and sender.strip():
        try:
            return parse_mailbox(sender, source).display_name.strip() or None
        except ConfigError:
            return None
    return None


def _campaign_sources(settings: Settings) -> list[_Source]:
    """Each campaign folder's unsubscribe URL (MAILER_UNSUBSCRIBE_URL wins) and list name.

    A campaign.toml that cannot be read is skipped with a warning: a draft with a typo must
    not take down the links of the campaigns already sent.
    """
    sources: list[_Source] = []
    for name in campaign_names(settings.templates_dir):
        path = settings.templates_dir / name / METADATA
        try:
            data = read_toml(path)
        except ConfigError as exc:
            log.warning("skipping campaign %s: %s", name, exc.message)
            continue
        unsubscribe = data.get("unsubscribe")
        url = unsubscribe.get("url") if isinstance(unsubscribe, dict) else None
        if settings.unsubscribe_url:
            url = settings.unsubscribe_url
        if not isinstance(url, str) or not url.strip():
            continue
        sources.append(_Source(url.strip(), _list_name(data, settings, str(path)),
                               f"{path}: url"))
    return sources


def _route_key(url: str, source: str) -> tuple[str, str | None]:
    """(decoded path, query parameter holding the token or None) of one URL template."""
    url = check_unsubscribe_url(url, source)
    parts = urlsplit(url.replace(TOKEN_FIELD, _PLACEHOLDER))
    path = unquote(parts.path) or "/"
    if not path.startswith("/") or "{" in path or "}" in path:  # Starlette's parameter syntax
        raise ConfigError(f"{source}: unsubscribe URL {url!r} has a path mailer cannot serve")
    if _PLACEHOLDER in path:
        return path.replace(_PLACEHOLDER, TOKEN_FIELD), None
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if value == _PLACEHOLDER and name:
            return path, name
    raise ConfigError(
        f"{source}: {TOKEN_FIELD} must be a path segment or a whole query value in {url!r}",
        hint="e.g. https://example.org/unsubscribe/{token} or https://example.org/u?t={token}",
    )


def unsubscribe_routes(settings: Settings) -> list[UnsubscribeRoute]:
    """The paths to answer at: MAILER_UNSUBSCRIBE_URL, else every campaign's URL.

    ConfigError (exit 78) when there is none, or one the server cannot answer at.
    """
    sources = _campaign_sources(settings)
    if settings.unsubscribe_url:
        names = {s.list_name for s in sources}
        sources = [_Source(settings.unsubscribe_url, names.pop() if len(names) == 1 else None,
                           "MAILER_UNSUBSCRIBE_URL")]
    if not sources:
        raise ConfigError(
            f"no unsubscribe URL to answer at: MAILER_UNSUBSCRIBE_URL is not set and no "
            f"campaign in {settings.templates_dir} has an [unsubscribe] url",
            hint="set MAILER_UNSUBSCRIBE_URL, e.g. https://example.org/unsubscribe/{token}",
        )
    grouped: dict[tuple[str, str | None], list[_Source]] = {}
    for item in sources:
        grouped.setdefault(_route_key(item.url, item.origin), []).append(item)
    by_path: dict[str, list[tuple[str | None, list[_Source]]]] = {}
    for (path, query), items in grouped.items():
        by_path.setdefault(path, []).append((query, items))
    routes: list[UnsubscribeRoute] = []
    for path, entries in sorted(by_path.items()):
        items = [item for _, group in entries for item in group]
        names = {item.list_name for item in items}
        # A path holds `{token}` or not, so all of one path's entries agree on where it is.
        queries = tuple(sorted(q for q, _ in entries if q is not None))
        routes.append(UnsubscribeRoute(
            path=path,
            query_names=queries,
            list_name=names.pop() if len(names) == 1 else None,
            urls=tuple(sorted({item.url for item in items})),
        ))
    return routes


# --- pages ---------------------------------------------------------------------------------

_CSS = (
    "body{margin:0;padding:1.5rem 1rem;background:#f4f4f1;color:#1c1c1a;"
    "font:1.05rem/1.55 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}"
    "main{max-width:34rem;margin:0 auto;background:#fff;padding:1.5rem 1.25rem;"
    "border-radius:.6rem;box-shadow:0 1px 4px rgba(0,0,0,.12)}"
    "h1{font-size:1.35rem;line-height:1.3;margin:0 0 1rem}"
    "p{margin:0 0 1rem}"
    "strong{overflow-wrap:anywhere}"
    "button{display:block;width:100%;margin:1.25rem 0 1rem;padding:.9rem 1rem;border:0;"
    "border-radius:.45rem;background:#a61b1b;color:#fff;font:inherit;font-weight:600;"
    "cursor:pointer}"
    "button:hover{background:#861414}"
    "button:focus-visible{outline:3px solid #1c1c1a;outline-offset:3px}"
    ".note{color:#55554f;font-size:.92rem}"
)
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode("utf-8")).digest()).decode("ascii")
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _page(title: str, body: str, status: int = 200, headers: dict[str, str] | None = None
          ) -> HTMLResponse:
    """A whole page: `title` is text, `body` is markup already escaped."""
    document = (
        "<!DOCTYPE html>\n"
        '<html lang="fr">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n<h1>{html.escape(title)}</h1>\n{body}</main>\n</body>\n</html>\n"
    )
    return HTMLResponse(document, status_code=status, headers={**SECURITY_HEADERS,
                                                                **(headers or {})})


def mask_address(email: str) -> str:
    """`helene.dupont@exemple.fr` → `h••••@exemple.fr`: enough to recognise, not to harvest."""
    local, at, domain = email.rpartition("@")
    if not at:
        return email[:1] + "••••"
    return f"{local[:1]}••••@{domain}"


def _title_letter(list_name: str | None) -> str:
    """`la lettre « X »` (non-breaking spaces inside the guillemets), or a neutral wording."""
    if list_name:
        return f"la lettre «\u00a0{list_name}\u00a0»"
    return "la lettre d’information"


def _letter(list_name: str | None) -> str:
    """The same, as HTML."""
    return html.escape(_title_letter(list_name), quote=False)


def _confirm_page(list_name: str | None, email: str) -> HTMLResponse:
    address = html.escape(mask_address(email))
    return _page(
        f"Se désinscrire de {_title_letter(list_name)}",
        f"<p>Vous recevez {_letter(list_name)} à l’adresse <strong>{address}</strong>.</p>\n"
        "<p>Pour ne plus la recevoir, confirmez avec le bouton ci-dessous. Les envois prévus "
        "pour cette adresse seront annulés.</p>\n"
        '<form method="post">\n'
        f'<input type="hidden" name="{ONE_CLICK_FIELD}" value="{ONE_CLICK_VALUE}">\n'
        "<button type=\"submit\">Me désinscrire</button>\n</form>\n"
        '<p class="note">Vous ne souhaitez pas vous désinscrire ? Fermez simplement cette '
        "page : rien n’a été changé.</p>\n",
    )


def _done_page(list_name: str | None, email: str, *, already: bool) -> HTMLResponse:
    address = html.escape(mask_address(email))
    if already:
        return _page(
            "Vous êtes déjà désinscrit·e",
            f"<p>L’adresse <strong>{address}</strong> est déjà désinscrite : elle ne reçoit "
            f"plus {_letter(list_name)}.</p>\n"
            '<p class="note">Vous pouvez fermer cette page.</p>\n',
        )
    return _page(
        "Vous êtes désinscrit·e",
        f"<p>L’adresse <strong>{address}</strong> ne recevra plus {_letter(list_name)}. "
        "Les envois qui lui étaient encore destinés sont annulés.</p>\n"
        '<p class="note">Vous pouvez fermer cette page.</p>\n',
    )


def _invalid_link_page() -> HTMLResponse:
    return _page(
        "Lien de désinscription invalide",
        "<p>Ce lien de désinscription n’est pas valide, ou ne l’est plus.</p>\n"
        "<p>Vérifiez qu’il a été copié en entier depuis le message reçu. Vous pouvez aussi "
        "répondre à ce message pour demander votre désinscription.</p>\n",
        status=404,
    )


_ERROR_PAGES: dict[int, tuple[str, str]] = {
    400: ("Demande incomplète",
          "Cette demande de désinscription n’a pas pu être comprise. Ouvrez le lien reçu "
          "dans le message et utilisez le bouton de la page."),
    404: ("Page introuvable", "Il n’y a rien à cette adresse."),
    405: ("Méthode non autorisée",
          "Cette page s’ouvre dans un navigateur ; la désinscription se confirme avec son "
          "bouton."),
    500: ("Erreur inattendue",
          "Une erreur inattendue est survenue ; rien n’a été changé. Réessayez dans quelques "
          "minutes."),
    503: ("Service momentanément indisponible",
          "Votre demande n’a pas pu être traitée pour le moment ; rien n’a été changé. "
          "Réessayez dans quelques minutes."),
}


def _error_page(status: int, headers: dict[str, str] | None = None) -> HTMLResponse:
    title, text = _ERROR_PAGES.get(status, (f"Erreur {status}", "La demande n’a pas abouti."))
    return _page(title, f"<p>{html.escape(text)}</p>\n", status=status, headers=headers)


def _unavailable() -> HTMLResponse:
    return _error_page(503, {"Retry-After": str(RETRY_AFTER_SECONDS)})


# --- the database --------------------------------------------------------------------------


class _Database:
    """One engine for the server's life, the schema ensured once, the token key read once.

    `open()` is cheap once it has succeeded. While the database is down it raises
    DatabaseError, trying again at most every couple of seconds, so an outage is a 503 per
    request and the server recovers by itself when the database comes back.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._secret: bytes | None = None
        self._failed_at = 0.0
        self._failure: MailerError | None = None

    def open(self) -> tuple[Engine, bytes]:
        engine, secret = self._engine, self._secret
        if engine is not None and secret is not None:
            return engine, secret
        with self._lock:
            if self._engine is None:
                self._engine = open_engine(self._settings.database_url)  # ConfigError: fatal
            if self._secret is None:
                recent = time.monotonic() - self._failed_at < _DATABASE_RETRY_SECONDS
                if self._failure is not None and recent:
                    raise DatabaseError(self._failure.message, hint=self._failure.hint)
                try:
                    with database_errors(self._engine):
                        ensure_schema(self._engine)
                        # Generated on first use (a send would have made it already); the
                        # key never changes while the server runs.
                        with write_transaction(self._engine) as connection:
                            self._secret = meta.token_secret(connection, self._settings.secret)
                except DatabaseError as exc:
                    self._failed_at, self._failure = time.monotonic(), exc
                    raise
                self._failure = None
            return self._engine, self._secret

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
            self._engine, self._secret = None, None

    @property
    def where(self) -> str:
        return describe(self._settings.database_url)


@dataclass(frozen=True)
class _Found:
    subscriber_id: int
    email: str
    status: str


class Outcome(Enum):
    UNSUBSCRIBED = "unsubscribed"
    ALREADY = "already"


class _Service:
    """The two things the pages do with the database: look a token up, unsubscribe."""

    def __init__(self, database: _Database, clock: Clock) -> None:
        self.database = database
        self.clock = clock

    def find(self, token: str) -> _Found | None:
        """The subscriber a genuine token names, or None (malformed, forged, unknown, erased)."""
        subscriber_id = token_subscriber_id(token)
        if subscriber_id is None:
            return None
        engine, secret = self.database.open()
        with database_errors(engine), read_transaction(engine) as connection:
            row = store.get(connection, subscriber_id)
        if row is None or not verify_token(secret, token, row.id, row.email_key):
            return None
        return _Found(int(row.id), str(row.email), str(row.status))

    def unsubscribe(self, token: str) -> tuple[_Found, Outcome] | None:
        """Unsubscribe the token's subscriber (skipping what they had pending); idempotent."""
        found = self.find(token)  # a read first: a forged token never takes the write lock
        if found is None:
            return None
        if found.status != SubscriberStatus.ACTIVE.value:
            return found, Outcome.ALREADY
        engine, secret = self.database.open()
        with database_errors(engine), write_transaction(engine) as connection:
            row = store.get(connection, found.subscriber_id)
            if row is None or not verify_token(secret, token, row.id, row.email_key):
                return None  # erased in between
            changed = store.set_status(
                connection, row.email_key, SubscriberStatus.UNSUBSCRIBED, self.clock()
            )
        if changed is None:
            return found, Outcome.ALREADY
        log.info("subscriber #%d unsubscribed (one-click)", found.subscriber_id)
        return found, Outcome.UNSUBSCRIBED


# --- the application -----------------------------------------------------------------------


class _UnsubscribeEndpoint:
    """GET/HEAD: the confirmation page; POST: unsubscribe. One per route."""

    def __init__(self, route: UnsubscribeRoute, service: _Service) -> None:
        self.route = route
        self.service = service

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
        token = self._token(request)
        if request.method == "POST":
            form = await request.form(max_files=0, max_fields=20, max_part_size=4096)
            if form.get(ONE_CLICK_FIELD) != ONE_CLICK_VALUE:
                return _error_page(400)
            if token is None:
                return _invalid_link_page()
            try:
                result = await run_in_threadpool(self.service.unsubscribe, token)
            except MailerError as exc:
                return _database_down(exc)
            if result is None:
                return _invalid_link_page()
            found, outcome = result
            return _done_page(self.route.list_name, found.email,
                              already=outcome is Outcome.ALREADY)
        # GET and HEAD: look only.
        if token is None:
            return _invalid_link_page()
        try:
            found_or_none = await run_in_threadpool(self.service.find, token)
        except MailerError as exc:
            return _database_down(exc)
        if found_or_none is None:
            return _invalid_link_page()
        if found_or_none.status != SubscriberStatus.ACTIVE.value:
            return _done_page(self.route.list_name, found_or_none.email, already=True)
        return _confirm_page(self.route.list_name, found_or_none.email)


def _database_down(exc: MailerError) -> HTMLResponse:
    log.error("database unavailable: %s", exc.message)
    return _unavailable()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    return _error_page(exc.status_code, headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette logs nothing itself here and uvicorn re-raises into its own log: the
    # traceback stays on the server, the client gets a page.
    return _error_page(500)


class _HeadersAndAccessLog:
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


def masked_path(path: str) -> str:
    """The request path for a log: token-shaped parts replaced, length capped."""
    return _TOKEN_LIKE.sub("<token>", path)[:200]


def create_app(settings: Settings, *, clock: Clock = system_clock) -> Starlette:
    """The unsubscribe application: its routes come from the unsubscribe URL template(s).

    ConfigError when there is no URL to answer at. The database is opened by the lifespan
    (startup), once; `app.state.database.open()` may be called earlier to fail fast.
    """
    routes_config = unsubscribe_routes(settings)
    database = _Database(settings)
    service = _Service(database, clock)
    routes = [
        Route(route.path, endpoint=_UnsubscribeEndpoint(route, service).handle,
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
        middleware=[Middleware(_HeadersAndAccessLog)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    # /desinscription/TOKEN/ is not a link mailer wrote: no redirect built from the Host
    # header (it would say http:// behind a TLS proxy), just the 404 page.
    app.router.redirect_slashes = False
    app.state.database = database
    app.state.routes = routes_config
    return app


# --- the server ----------------------------------------------------------------------------


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
        config = uvicorn.Config(
            app,
            log_level=log_level,
            log_config=log_config,
            access_log=False,  # it would log tokens; _HeadersAndAccessLog logs masked paths
            lifespan="on",
            server_header=False,
            timeout_graceful_shutdown=10,  # a stuck client does not hold up a stop
            proxy_headers=False,  # nothing here depends on the client's address or scheme
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
