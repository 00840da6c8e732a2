"""The unsubscribe pages, in French: each one a status, an HTML document and its headers.

The markup is in `templates/` (Jinja2, autoescaped: names and addresses are escaped there),
the one stylesheet in `templates/style.css`, inlined in every page and allowed by its hash
in the Content-Security-Policy: no script, no external resource, forms to 'self' only.
Pure: no request, no database, no HTTP framework.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from importlib import resources

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

ONE_CLICK_FIELD = "List-Unsubscribe"  # RFC 8058: the POST body that unsubscribes
ONE_CLICK_VALUE = "One-Click"
RETRY_AFTER_SECONDS = 60  # the 503 page's Retry-After header

_CSS = resources.files("mailer.web").joinpath("templates/style.css").read_text("utf-8")
_STYLE = Markup(_CSS)  # noqa: S704 - the package's own stylesheet: not escaped inside <style>
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

_TEMPLATES = Environment(
    loader=PackageLoader("mailer.web", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,  # a line holding only a block tag leaves no blank line behind
    keep_trailing_newline=True,
)

_ERRORS: dict[int, tuple[str, str]] = {
    400: ("Demande incomplète",
          "Cette demande de désinscription n’a pas pu être comprise. Ouvrez le lien reçu "
          "dans le message et utilisez le bouton de la page."),
    404: ("Page introuvable", "Il n’y a rien à cette adresse."),
    405: ("Méthode non autorisée",
          "Cette page s’ouvre dans un navigateur ; la désinscription se confirme avec son "
          "bouton."),
    413: ("Demande trop volumineuse",
          "Cette demande est trop longue pour une demande de désinscription ; rien n’a été "
          "changé. Ouvrez le lien reçu dans le message et utilisez le bouton de la page."),
    500: ("Erreur inattendue",
          "Une erreur inattendue est survenue ; rien n’a été changé. Réessayez dans quelques "
          "minutes."),
    503: ("Service momentanément indisponible",
          "Votre demande n’a pas pu être traitée pour le moment ; rien n’a été changé. "
          "Réessayez dans quelques minutes."),
}


@dataclass(frozen=True)
class Page:
    """A whole response: the security headers are always among `headers`."""

    status: int
    html: str
    headers: dict[str, str]


def _page(template: str, status: int = 200, headers: dict[str, str] | None = None,
          **values: object) -> Page:
    document = _TEMPLATES.get_template(template).render(css=_STYLE, **values)
    return Page(status, document, {**SECURITY_HEADERS, **(headers or {})})


def mask_address(email: str) -> str:
    """`helene.dupont@exemple.fr` → `h••••@exemple.fr`: enough to recognise, not to harvest."""
    local, at, domain = email.rpartition("@")
    if not at:
        return email[:1] + "••••"
    return f"{local[:1]}••••@{domain}"


def _letter(list_name: str | None) -> str:
    """`la lettre « X »` (non-breaking spaces inside the guillemets), or a neutral wording."""
    if list_name:
        return f"la lettre «\u00a0{list_name}\u00a0»"
    return "la lettre d’information"


def confirm(list_name: str | None, email: str) -> Page:
    """GET on a genuine token of someone subscribed: the page with the one button."""
    return _page("confirm.html", letter=_letter(list_name), address=mask_address(email),
                 field=ONE_CLICK_FIELD, value=ONE_CLICK_VALUE)


def done(list_name: str | None, email: str, *, already: bool) -> Page:
    """After the POST, or GET once unsubscribed (`already`): no button."""
    return _page("done.html", letter=_letter(list_name), address=mask_address(email),
                 already=already)


def invalid_link() -> Page:
    """Whatever is wrong with a token: one 404 page that says nothing about anyone."""
    return _page("invalid.html", status=404)


def error(status: int, headers: dict[str, str] | None = None) -> Page:
    """The page of an HTTP error (400, 404, 405, 500, 503, …)."""
    title, text = _ERRORS.get(status, (f"Erreur {status}", "La demande n’a pas abouti."))
    return _page("error.html", status, headers, title=title, text=text)


def too_large() -> Page:
    """A body or a form over the limits: 413, and the connection closed (the rest of the
    body, if any is still coming, is not read)."""
    return error(413, {"Connection": "close"})


def unavailable() -> Page:
    """The database is down: 503, try again in a minute."""
    return error(503, {"Retry-After": str(RETRY_AFTER_SECONDS)})
