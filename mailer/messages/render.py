"""Jinja2 templates + one subscriber -> the subject, plain text and HTML of their message.

Pure: no SQL, no SMTP. The environment is sandboxed (a template cannot reach Python
internals), undefined variables are errors (`StrictUndefined`), None renders as nothing, and
autoescaping is on for `.html` templates only, so the text part says `Hélène & Co` and the
HTML part `Hélène &amp; Co`. Subscriber data only ever enters as context values: a name
`{{ 7*7 }}` is printed as written, never evaluated.

Every Jinja2 failure becomes a TemplateError naming the file, the line and the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailer.core.errors import TemplateError
from mailer.core.people import Recipient, header_text
from mailer.messages.campaign import HTML, SUBJECT, TEXT, TOKEN_FIELD, Campaign


@dataclass(frozen=True)
class Links:
    """The per-subscriber unsubscribe links, already holding the subscriber's token."""

    token: str
    url: str | None  # https://…/TOKEN
    mailto: str | None  # mailto:address?subject=unsubscribe (the sender's address says who)

    @classmethod
    def build(cls, campaign: Campaign, token: str) -> Links:
        url = campaign.unsubscribe_url.replace(TOKEN_FIELD, token) if campaign.unsubscribe_url \
            else None
        mailto = (
            f"mailto:{campaign.unsubscribe_mailto}?subject=unsubscribe"
            if campaign.unsubscribe_mailto else None
        )
        return cls(token, url, mailto)

    @staticmethod
    def truths(campaign: Campaign) -> dict[str, bool]:
        """`unsubscribe_url` and `unsubscribe_mailto` are set, or not, for every subscriber
        alike (`{% if unsubscribe_url %}` is the campaign's choice): the URL keeps its text
        around the token, the mailto is never empty."""
        truths = {"unsubscribe_mailto": bool(campaign.unsubscribe_mailto)}
        url = campaign.unsubscribe_url
        if not url or url.replace(TOKEN_FIELD, ""):
            truths["unsubscribe_url"] = bool(url)
        return truths

    def header_value(self) -> str | None:
        """The List-Unsubscribe value: https first (RFC 8058), then mailto."""
        items = [f"<{link}>" for link in (self.url, self.mailto) if link]
        return ", ".join(items) if items else None


@dataclass(frozen=True)
class Parts:
    subject: str
    text: str
    html: str | None


def _finalize(value: Any) -> Any:
    return "" if value is None else value


class SourcesOnce(jinja2.FileSystemLoader):
    """Each template's source read once: what is compiled and what `messages.skeleton` parses
    are the same text, even if the file is edited meanwhile."""

    def __init__(self, searchpath: str) -> None:
        super().__init__(searchpath, encoding="utf-8")
        self._sources: dict[str, tuple[str, str, Callable[[], bool]]] = {}

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        if template not in self._sources:
            self._sources[template] = super().get_source(environment, template)
        return self._sources[template]


def make_environment(templates_dir: Path) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=SourcesOnce(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "htm"), default_for_string=False, default=False
        ),
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
        cache_size=-1,
    )


class Renderer:
    """A campaign's compiled templates; `render(recipient, links)` gives their Parts."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self.environment = make_environment(campaign.templates_dir)
        self._subject = self._compile(SUBJECT)
        self._text = self._compile(TEXT)
        self._html = self._compile(HTML) if campaign.has_html else None
        # The shared layout too, now: a syntax error there is one error before any message,
        # not one problem per subscriber.
        for name in self.environment.list_templates(extensions=("txt", "html", "htm")):
            if name.split("/", 1)[0] == campaign.name or name.startswith("_"):
                with template_errors(campaign.templates_dir, name):
                    self.environment.get_template(name)
        self._globals: dict[str, Any] = {
            **campaign.context,
            "campaign": {"name": campaign.name},
            "sender": {
                "name": campaign.sender.display_name,
                "address": campaign.sender.addr_spec,
            },
        }

    @property
    def campaign_context(self) -> dict[str, Any]:
        """The values every subscriber's rendering gets: `[context]`, campaign, sender."""
        return self._globals

    def template(self, file: str) -> jinja2.Template | None:
        """The compiled subject, text or HTML template (None: the campaign has no HTML)."""
        return {SUBJECT: self._subject, TEXT: self._text, HTML: self._html}[file]

    def _compile(self, file: str) -> jinja2.Template:
        name = self.campaign.template_name(file)
        with template_errors(self.campaign.templates_dir, name):
            return self.environment.get_template(name)

    def context(self, recipient: Recipient, links: Links) -> dict[str, Any]:
        return {
            **self._globals,
            "subscriber": {
                "email": recipient.email,
                "address": recipient.address,
                "first_name": recipient.first_name,
                "last_name": recipient.last_name,
                "civility": recipient.civility,
                "name": display_name(recipient) or None,
                "attributes": dict(recipient.attributes),
            },
            "unsubscribe_url": links.url,
            "unsubscribe_mailto": links.mailto,
        }

    def render(self, recipient: Recipient, links: Links) -> Parts:
        context = self.context(recipient, links)
        subject = self._run(self._subject, context)
        # A subject is one line: any line break or run of spaces a value brought is one space.
        subject = header_text(subject)
        if not subject:
            raise TemplateError(
                f"{self.campaign.folder / SUBJECT}: the subject renders empty"
                + (f" for {recipient.email}" if recipient.email else "")
            )
        context["subject"] = subject
        text = self._run(self._text, context)
        html = self._run(self._html, context) if self._html is not None else None
        return Parts(subject, ending(text), ending(html) if html is not None else None)

    def _run(self, template: jinja2.Template, context: dict[str, Any]) -> str:
        with template_errors(self.campaign.templates_dir, template.name or "?"):
            return template.render(context)


class _Last:
    """The display name of the recipient whose message is being made: the context and the
    To header both want it (one tuple, replaced whole: no thread sees half of it)."""

    made: tuple[Recipient | None, str] = (None, "")


def display_name(recipient: Recipient) -> str:
    """`recipient.display_name`, worked out once for the message being made."""
    last, name = _Last.made
    if last is not recipient:
        name = recipient.display_name
        _Last.made = (recipient, name)
    return name


def ending(body: str) -> str:
    """Exactly one final newline: the part ends cleanly before the next boundary."""
    return body.rstrip("\n") + "\n"


@contextmanager
def template_errors(templates_dir: Path, name: str) -> Iterator[None]:
    """Turn any Jinja2 failure inside the block into a TemplateError with file and line."""
    try:
        yield
    except TemplateError:
        raise
    except _TEMPLATE_FAILURES as exc:
        raise TemplateError(f"{_where(templates_dir, name, exc)}: {_reason(exc)}") from exc


# What a template can raise: Jinja2's own errors, the sandbox's, and what an expression in it
# raises (`{{ 1 / 0 }}`, `{{ "a" + 1 }}`, `{{ x[5] }}`).
_TEMPLATE_FAILURES = (
    jinja2.TemplateError, SecurityError, TypeError, ValueError, ArithmeticError, LookupError
)


def _where(templates_dir: Path, name: str, exc: BaseException) -> str:
    if isinstance(exc, jinja2.TemplateNotFound):
        return str(templates_dir / name)
    if isinstance(exc, jinja2.TemplateSyntaxError):
        filename = exc.filename or str(templates_dir / (exc.name or name))
        return f"{filename}, line {exc.lineno}"
    # Jinja2 rewrites the traceback so that template frames carry the template's file and
    # line: report the innermost one (an extended layout or a macro, if it failed there).
    found: tuple[str, int] | None = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__jinja_template__") is not None or (
            tb.tb_frame.f_code.co_filename.startswith(str(templates_dir))
        ):
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    if found is None:
        return str(templates_dir / name)
    return f"{found[0]}, line {found[1]}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, jinja2.TemplateNotFound):
        return f"template {exc.name!r} not found"
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined variable: {exc.message}"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    if isinstance(exc, SecurityError):
        return f"not allowed in a template: {exc}"
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}" if not isinstance(exc, jinja2.TemplateError) \
        else message
