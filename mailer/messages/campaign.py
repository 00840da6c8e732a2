"""A campaign folder: `templates/<name>/` with its metadata file and its Jinja2 templates.

    templates/
    ├── _layout/              shared by every campaign (folders starting with `_` are not
    │   ├── layout.txt        campaigns): the plain-text and HTML frames, the greeting macro
    │   ├── layout.html
    │   └── macros.txt
    └── closure-notice/
        ├── campaign.toml     sender, reply-to, List-Id, unsubscribe, extra template variables
        ├── subject.txt       one line
        ├── body.txt          the plain-text part (required: complete on its own)
        └── body.html         the HTML part (optional)

Loading checks everything that does not depend on a subscriber: the TOML, the addresses, the
unsubscribe URL, and that every template compiles. Settings (`MAILER_FROM`,
`MAILER_UNSUBSCRIBE_URL`, `MAILER_UNSUBSCRIBE_MAILTO`) override the folder's values.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.headerregistry import Address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mailer.core.addresses import clean_address
from mailer.core.config import Settings, read_toml
from mailer.core.errors import AddressError, ConfigError, InputError, NotFoundError

METADATA = "campaign.toml"
SUBJECT, TEXT, HTML = "subject.txt", "body.txt", "body.html"
TOKEN_FIELD = "{token}"  # noqa: S105 - a placeholder in the unsubscribe URL
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_KEYS = {"from", "reply_to", "list_id", "unsubscribe", "context"}
_UNSUBSCRIBE_KEYS = {"url", "mailto"}
# A List-Id is `description <id>` or `<id>`; the id is a dot-atom (RFC 2919).
_LIST_ID = re.compile(r"^(?:(?P<phrase>[^<>]*?)\s*)?<(?P<id>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
                      r"(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+)>$")


@dataclass(frozen=True)
class Campaign:
    """Everything about a campaign that is the same for every subscriber."""

    name: str
    folder: Path
    templates_dir: Path
    sender: Address
    reply_to: Address | None
    list_id: str | None
    unsubscribe_url: str | None  # with `{token}`
    unsubscribe_mailto: str | None  # a bare address
    context: dict[str, Any] = field(default_factory=dict)
    has_html: bool = True
    digest: str = ""  # SHA-256 of the metadata and every template source it uses

    @property
    def sender_domain(self) -> str:
        return self.sender.domain

    def template_name(self, file: str) -> str:
        """The loader name of one of this campaign's templates (`closure-notice/body.txt`)."""
        return f"{self.name}/{file}"


def campaign_names(templates_dir: Path) -> list[str]:
    """The campaigns a templates folder holds (sub-folders with a campaign.toml)."""
    if not templates_dir.is_dir():
        return []
    return sorted(
        p.name for p in templates_dir.iterdir()
        if p.is_dir() and not p.name.startswith(("_", ".")) and (p / METADATA).is_file()
    )


def load_campaign(settings: Settings, name: str) -> Campaign:
    """Read and check `templates/<name>/`; ConfigError or InputError with the file otherwise."""
    if not _NAME.match(name):
        raise InputError(
            f"invalid campaign name {name!r}",
            hint="a campaign is a folder name of letters, digits, '.', '_' or '-'",
        )
    templates_dir = settings.templates_dir
    folder = templates_dir / name
    if not folder.is_dir():
        known = campaign_names(templates_dir)
        searched = templates_dir.absolute()  # relative to the current directory: say which
        raise NotFoundError(
            f"unknown campaign {name!r}: no folder {name} in {searched}",
            hint=(f"campaigns in {templates_dir}: {', '.join(known)}" if known
                  else f"`mailer campaign new {name}` creates one")
            + f"; the folder searched is MAILER_TEMPLATES_DIR (now {searched})",
        )
    for required in (METADATA, SUBJECT, TEXT):
        if not (folder / required).is_file():
            raise InputError(f"{folder / required}: missing", hint=_layout_hint(folder))
    meta_path = folder / METADATA
    meta = _read_metadata(meta_path)

    sender_text = settings.sender or meta.get("from")
    if not sender_text:
        raise ConfigError(
            f"{meta_path}: no sender",
            hint="set from = \"Name <address>\" there, or MAILER_FROM",
        )
    source = "MAILER_FROM" if settings.sender else f"{meta_path}: from"
    sender = parse_mailbox(str(sender_text), source)
    reply_to = (
        parse_mailbox(str(meta["reply_to"]), f"{meta_path}: reply_to")
        if meta.get("reply_to") else None
    )
    list_id = _check_list_id(meta.get("list_id"), meta_path)

    unsubscribe = meta.get("unsubscribe", {})
    url = settings.unsubscribe_url or unsubscribe.get("url")
    url_source = "MAILER_UNSUBSCRIBE_URL" if settings.unsubscribe_url else f"{meta_path}: url"
    mailto = settings.unsubscribe_mailto or unsubscribe.get("mailto")
    mailto_source = (
        "MAILER_UNSUBSCRIBE_MAILTO" if settings.unsubscribe_mailto else f"{meta_path}: mailto"
    )
    return Campaign(
        name=name,
        folder=folder,
        templates_dir=templates_dir,
        sender=sender,
        reply_to=reply_to,
        list_id=list_id,
        unsubscribe_url=check_unsubscribe_url(str(url), url_source) if url else None,
        unsubscribe_mailto=_check_mailto(str(mailto), mailto_source) if mailto else None,
        context=dict(meta.get("context", {})),
        has_html=(folder / HTML).is_file(),
        digest=_digest(templates_dir, folder),
    )


def _layout_hint(folder: Path) -> str:
    return f"a campaign folder holds {METADATA}, {SUBJECT}, {TEXT} and optionally {HTML}"


def _read_metadata(path: Path) -> dict[str, Any]:
    data = read_toml(path)
    unknown = set(data) - _KEYS
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {sorted(unknown)[0]!r}",
            hint=f"known keys: {', '.join(sorted(_KEYS))}",
        )
    for table, keys in (("unsubscribe", _UNSUBSCRIBE_KEYS), ("context", None)):
        value = data.get(table, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{table}] must be a table")
        if keys is not None and set(value) - keys:
            raise ConfigError(
                f"{path}: unknown key {sorted(set(value) - keys)[0]!r} in [{table}]",
                hint=f"known keys: {', '.join(sorted(keys))}",
            )
    for key in ("from", "reply_to", "list_id"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{path}: {key} must be a string")
    return data


def parse_mailbox(text: str, source: str) -> Address:
    """`Name <address>` or `address` as a header Address; ConfigError naming `source`."""
    if "\r" in text or "\n" in text:
        raise ConfigError(f"{source}: line breaks are not allowed in an address")
    match = re.match(r"^\s*(?:(?P<name>.*?)\s*<(?P<addr>[^<>]*)>|(?P<bare>[^<>]*))\s*$", text)
    if match is None:
        raise ConfigError(f"{source}: {text!r} is not `Name <address>` or an address")
    raw_name = (match.group("name") or "").strip()
    if len(raw_name) >= 2 and raw_name[0] == raw_name[-1] == '"':
        raw_name = raw_name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if "=?" in raw_name:
        raise ConfigError(f"{source}: write the name as plain text, not as an encoded word")
    try:
        address, _ = clean_address(match.group("addr") or match.group("bare") or "")
    except AddressError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    try:
        return Address(display_name=raw_name, addr_spec=address.address)
    except (ValueError, HeaderParseError) as exc:
        raise ConfigError(f"{source}: {text!r}: {exc}") from exc


def _check_list_id(value: Any, path: Path) -> str | None:
    if value is None or value == "":
        return None
    text = " ".join(str(value).split())
    if _LIST_ID.match(text) is None or "=?" in text:
        raise ConfigError(
            f"{path}: list_id {value!r} is not `Description <list.id.example.org>`",
            hint="the part in <> is a dotted name, usually the list's name on your domain",
        )
    return text


def check_unsubscribe_url(url: str, source: str) -> str:
    """An https URL holding `{token}` once (http only on the loopback, for testing)."""
    url = url.strip()
    parts = urlsplit(url.replace(TOKEN_FIELD, "TOKEN"))
    local = parts.hostname in {"localhost", "127.0.0.1", "::1"}
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise ConfigError(
            f"{source}: unsubscribe URL {url!r} must start with https://",
            hint="one-click unsubscribe (RFC 8058) requires https",
        )
    if url.count(TOKEN_FIELD) != 1:
        raise ConfigError(
            f"{source}: unsubscribe URL {url!r} must contain {TOKEN_FIELD} exactly once",
            hint="e.g. https://example.org/unsubscribe/{token}",
        )
    if not parts.hostname or any(c.isspace() or c in "<>\"" for c in url) or not url.isascii():
        raise ConfigError(f"{source}: {url!r} is not a valid URL for a mail header")
    return url


def _check_mailto(text: str, source: str) -> str:
    text = text.strip().removeprefix("mailto:")
    try:
        address, _ = clean_address(text)
    except AddressError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    if address.smtputf8:
        raise ConfigError(f"{source}: the unsubscribe address must be plain ASCII")
    return address.address


def _digest(templates_dir: Path, folder: Path) -> str:
    """A hash of what the campaign's messages are made of: its folder and the shared ones."""
    sha = hashlib.sha256()
    shared = [p for p in sorted(templates_dir.iterdir()) if p.is_dir() and p.name[:1] == "_"]
    for directory in [folder, *shared]:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                sha.update(str(path.relative_to(templates_dir)).encode() + b"\0")
                sha.update(path.read_bytes() + b"\0")
    return sha.hexdigest()
