"""Where `mailer serve` answers: the paths of the unsubscribe URL template(s), and list names.

The templates are MAILER_UNSUBSCRIBE_URL, else every campaign's `[unsubscribe] url`; the
token is a path segment (`/desinscription/{token}`) or a whole query value (`/u?t={token}`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from mailer.core.config import Settings, read_toml
from mailer.core.errors import ConfigError
from mailer.messages.campaign import (
    METADATA,
    TOKEN_FIELD,
    campaign_names,
    check_unsubscribe_url,
    parse_mailbox,
)

log = logging.getLogger("mailer.web")

_PLACEHOLDER = "MAILERTOKENPLACEHOLDER"
_LIST_ID_PHRASE = re.compile(r"^\s*(?P<phrase>[^<>]*?)\s*<[^<>]+>\s*$")


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
