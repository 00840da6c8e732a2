"""Settings: built-in defaults < mailer.toml < MAILER_* environment < command-line options.

Environment reading happens here and nowhere else. Secrets (the SMTP and IMAP passwords, the
token secret) come only from the environment or a file named there: never from mailer.toml,
never from a command-line option, and never printed.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mailer.core.budget import RelaySpec, Window, parse_quota, relay_specs_from
from mailer.core.errors import ConfigError

Security = Literal["starttls", "tls", "none"]
SECURITIES: tuple[Security, ...] = ("starttls", "tls", "none")
# What `retry` does with a delivery whose outcome is unknown (the relay may have it).
Uncertain = Literal["resend", "hold"]
UNCERTAIN_CHOICES: tuple[Uncertain, ...] = ("resend", "hold")

DEFAULT_DATABASE_URL = "sqlite:///subscribers.db"
DEFAULT_CONFIG_FILE = "mailer.toml"
# Keys refused in mailer.toml: a file is copied, committed and shared; a secret is not.
SECRET_KEYS = frozenset({
    "smtp_password", "password", "secret", "smtp_password_file",
    "imap_password", "imap_password_file",
})


@dataclass(frozen=True)
class Rate:
    """A sending rate: `count` messages per `seconds`."""

    count: float
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(self.seconds, f"{self.seconds:g}s")
        return f"{self.count:g}/{unit}"


_RATE_UNITS = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([a-z]*)\s*)?$", re.IGNORECASE)


def parse_rate(text: str) -> Rate:
    """Parse `20`, `20/s`, `300/min` or `5000/h` into a Rate; raise ConfigError otherwise."""
    match = _RATE_RE.match(text)
    unit = (match.group(2) or "").lower() if match else None
    if match is None or unit not in _RATE_UNITS:
        raise ConfigError(
            f"invalid rate {text!r}", hint="write N (per second), N/min or N/h, e.g. 300/min"
        )
    count = float(match.group(1))
    if count <= 0:
        raise ConfigError(f"invalid rate {text!r}: it must be more than zero")
    return Rate(count, _RATE_UNITS[unit])


@dataclass(frozen=True)
class Settings:
    """Every setting mailer reads, already validated."""

    database_url: str = DEFAULT_DATABASE_URL
    templates_dir: Path = Path("templates")
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: Security = "starttls"
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_ca_file: Path | None = None
    smtp_timeout: float = 60.0  # connecting, and each SMTP command's reply
    smtp_data_timeout: float = 600.0  # the reply after the final "." of DATA
    smtp_max_messages: int = 100  # messages per connection before reconnecting
    smtp_pipelining: bool = True  # RFC 2920, where the relay offers it
    imap_password: str | None = field(default=None, repr=False)  # `bounces import imaps://…`
    imap_ca_file: Path | None = None
    sender: str | None = None
    bounce_address: str | None = None  # VERP: the envelope sender becomes LOCAL+TOKEN@domain
    # `bounces import`: a report tied by address alone needs a delivery sent to it this recently;
    # a full mailbox (or a temporary "gone") bounces the subscriber once it repeats this often
    bounce_recent_days: float = 30.0
    bounce_repeat_count: int = 3
    bounce_repeat_days: float = 14.0
    secret: str | None = field(default=None, repr=False)
    unsubscribe_url: str | None = None
    unsubscribe_mailto: str | None = None
    retry_base_delay: float = 300.0
    retry_max_delay: float = 14400.0
    retry_max_age: float = 345600.0
    lease_seconds: float = 600.0
    concurrency: int = 4
    workers: int | None = None  # sending processes on this machine; None: one per usable core
    # (at most AUTO_WORKERS), and one alone for a list too short to be worth forking
    rate: Rate | None = None
    quota: tuple[Window, ...] = ()  # the relay's budget: sliding windows held in the ledger
    quota_cooldown: float = 3600.0  # a relay refusing for its budget pauses this long, doubling
    relays: tuple[RelaySpec, ...] = ()  # mailer.toml's [[relay]] tables; they replace smtp_*
    uncertain: Uncertain = "resend"
    config_file: Path | None = None

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply command-line options (None means: not given)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        converted = {k: _convert(k, v, source="option") for k, v in given.items()}
        return replace(self, **converted)


# name in mailer.toml and MAILER_<NAME> -> Settings attribute
_KEYS: dict[str, str] = {
    "database_url": "database_url",
    "templates_dir": "templates_dir",
    "smtp_host": "smtp_host",
    "smtp_port": "smtp_port",
    "smtp_security": "smtp_security",
    "smtp_username": "smtp_username",
    "smtp_ca_file": "smtp_ca_file",
    "smtp_timeout": "smtp_timeout",
    "smtp_data_timeout": "smtp_data_timeout",
    "smtp_max_messages": "smtp_max_messages",
    "smtp_pipelining": "smtp_pipelining",
    "imap_ca_file": "imap_ca_file",
    "from": "sender",
    "bounce_address": "bounce_address",
    "bounce_recent_days": "bounce_recent_days",
    "bounce_repeat_count": "bounce_repeat_count",
    "bounce_repeat_days": "bounce_repeat_days",
    "unsubscribe_url": "unsubscribe_url",
    "unsubscribe_mailto": "unsubscribe_mailto",
    "retry_base_delay": "retry_base_delay",
    "retry_max_delay": "retry_max_delay",
    "retry_max_age": "retry_max_age",
    "lease_seconds": "lease_seconds",
    "concurrency": "concurrency",
    "workers": "workers",
    "rate": "rate",
    "quota": "quota",
    "quota_cooldown": "quota_cooldown",
    "uncertain": "uncertain",
}


_INT_RANGES = {
    "smtp_port": (1, 65535),
    "concurrency": (1, 1000),
    "workers": (1, 64),
    "smtp_max_messages": (1, 10**6),
    "bounce_repeat_count": (1, 1000),
}
_SECONDS = frozenset({
    "retry_base_delay", "retry_max_delay", "retry_max_age", "lease_seconds",
    "smtp_timeout", "smtp_data_timeout", "quota_cooldown",
    "bounce_recent_days", "bounce_repeat_days",  # days, but the same rule: more than zero
})


_BOOLEANS = frozenset({"smtp_pipelining"})
_TRUTH = {"true": True, "yes": True, "on": True, "1": True,
          "false": False, "no": False, "off": False, "0": False}


def _convert(attr: str, value: Any, *, source: str) -> Any:
    """Turn a raw value (TOML, environment text, option) into the attribute's type."""
    try:
        if attr in {"templates_dir", "smtp_ca_file", "imap_ca_file"}:
            return Path(str(value)).expanduser()
        if attr in _INT_RANGES:
            number = int(value)
            low, high = _INT_RANGES[attr]
            if not low <= number <= high:
                raise ValueError(f"must be between {low} and {high}")
            return number
        if attr in _SECONDS:
            seconds = float(value)
            if seconds <= 0:
                unit = "days" if attr.endswith("_days") else "seconds"
                raise ValueError(f"must be more than zero {unit}")
            return seconds
        if attr == "smtp_security":
            text = str(value).strip().lower()
            if text not in SECURITIES:
                raise ValueError(f"must be one of {', '.join(SECURITIES)}")
            return text
        if attr == "uncertain":
            text = str(value).strip().lower()
            if text not in UNCERTAIN_CHOICES:
                raise ValueError(f"must be one of {', '.join(UNCERTAIN_CHOICES)}")
            return text
        if attr in _BOOLEANS:
            if not isinstance(value, bool) and str(value).strip().lower() not in _TRUTH:
                raise ValueError("must be true or false")
            return value if isinstance(value, bool) else _TRUTH[str(value).strip().lower()]
        if attr == "rate":
            return value if isinstance(value, Rate) else parse_rate(str(value))
        if attr == "quota":
            return value if isinstance(value, tuple) else parse_quota(str(value))
        if isinstance(value, str):
            return value.strip() or None
        return str(value)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}", hint=exc.hint) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: invalid value for {attr}: {exc}") from exc


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file (mailer.toml, a campaign.toml); ConfigError naming it if unreadable."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def _read_toml(path: Path) -> dict[str, Any]:
    data = read_toml(path)
    # Allow both flat keys and an [smtp] table (host, port, ...), an [imap] table (ca_file).
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in {"smtp", "retry", "imap"}:
            for sub, subvalue in value.items():
                flat[f"{key}_{sub}"] = subvalue
        else:
            flat[key] = value
    return flat


def _read_secret_file(variable: str, path_text: str) -> str:
    path = Path(path_text).expanduser()
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from exc


MIN_SECRET_BYTES = 16


def _checked_secret(value: str) -> str:
    """MAILER_SECRET keys every unsubscribe link: a guessable one lets anyone unsubscribe
    anyone, so it must hold at least MIN_SECRET_BYTES bytes."""
    if len(value.encode("utf-8")) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"MAILER_SECRET is too short: at least {MIN_SECRET_BYTES} bytes are needed",
            hint="generate one: python -c 'import secrets; print(secrets.token_hex(32))' "
            "(or unset it: a random key is then kept in the database)",
        )
    return value


_URL_PASSWORD = re.compile(r"^[^:/?#]+://[^/?#@]*:[^/?#@]*@")


def _refuse_url_password(path: Path, url: str | None) -> None:
    """A password inside database_url is a secret in a file that is copied and shared."""
    if url and _URL_PASSWORD.match(url):
        raise ConfigError(
            f"{path}: database_url holds a password, and secrets are not read from mailer.toml",
            hint="keep the URL without its password in the file and set MAILER_DATABASE_URL "
            "(with the password) in the environment, or use the server's own password file "
            "(~/.pgpass for PostgreSQL)",
        )


def load_settings(
    config_path: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults < mailer.toml (given path, MAILER_CONFIG, or ./mailer.toml) < environment."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}

    explicit = config_path or (Path(env["MAILER_CONFIG"]) if env.get("MAILER_CONFIG") else None)
    path = explicit or Path(DEFAULT_CONFIG_FILE)
    if explicit is not None and not explicit.is_file():
        raise ConfigError(f"configuration file {explicit} not found")
    if path.is_file():
        for key, raw in _read_toml(path).items():
            if key == "relay":
                values["relays"] = relay_specs_from(raw, source=str(path), environ=env,
                                                    convert=_convert)
                continue
            if key in SECRET_KEYS:
                where = (
                    "MAILER_IMAP_PASSWORD (or MAILER_IMAP_PASSWORD_FILE)"
                    if key.startswith("imap_")
                    else "MAILER_SMTP_PASSWORD (or MAILER_SMTP_PASSWORD_FILE) / MAILER_SECRET"
                )
                raise ConfigError(
                    f"{path}: {key} is a secret and is not read from mailer.toml",
                    hint=f"remove it from the file and set {where} in the environment",
                )
            if key not in _KEYS:
                raise ConfigError(
                    f"{path}: unknown setting {key!r}",
                    hint=f"known settings: {', '.join(sorted(_KEYS))}",
                )
            values[_KEYS[key]] = _convert(_KEYS[key], raw, source=str(path))
            if key == "database_url":
                _refuse_url_password(path, values["database_url"])
        values["config_file"] = path

    for key, attr in _KEYS.items():
        variable = f"MAILER_{key.upper()}"
        if env.get(variable, "").strip():
            values[attr] = _convert(attr, env[variable], source=variable)

    if env.get("MAILER_SMTP_PASSWORD"):
        values["smtp_password"] = env["MAILER_SMTP_PASSWORD"]
    elif env.get("MAILER_SMTP_PASSWORD_FILE"):
        values["smtp_password"] = _read_secret_file(
            "MAILER_SMTP_PASSWORD_FILE", env["MAILER_SMTP_PASSWORD_FILE"]
        )
    if env.get("MAILER_IMAP_PASSWORD"):
        values["imap_password"] = env["MAILER_IMAP_PASSWORD"]
    elif env.get("MAILER_IMAP_PASSWORD_FILE"):
        values["imap_password"] = _read_secret_file(
            "MAILER_IMAP_PASSWORD_FILE", env["MAILER_IMAP_PASSWORD_FILE"]
        )
    if env.get("MAILER_SECRET"):
        values["secret"] = _checked_secret(env["MAILER_SECRET"])

    settings = Settings(**values)
    if settings.relays:  # what a relay does not say, the settings say (rate and
        # concurrency when used: --rate and --concurrency may still change them)
        settings = replace(settings, relays=tuple(
            replace(relay, quota=relay.quota or settings.quota) for relay in settings.relays
        ))
    if settings.retry_max_delay < settings.retry_base_delay:
        raise ConfigError("retry_max_delay must not be smaller than retry_base_delay")
    return settings


AUTO_WORKERS = 4  # the most processes `workers` unset chooses


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def worker_count(settings: Settings) -> int:
    """How many sending processes a run may use: MAILER_WORKERS, or the usable cores."""
    return settings.workers or min(AUTO_WORKERS, usable_cores())


def relay_specs(settings: Settings) -> tuple[RelaySpec, ...]:
    """The relays a run sends through, in order: mailer.toml's [[relay]] tables, or the one
    relay of MAILER_SMTP_* (named by its host); () when none is set."""
    if settings.relays:
        return settings.relays
    if not settings.smtp_host:
        return ()
    return (RelaySpec(
        name=settings.smtp_host, host=settings.smtp_host, port=settings.smtp_port,
        security=settings.smtp_security, username=settings.smtp_username,
        password=settings.smtp_password, quota=settings.quota, rate=settings.rate,
        concurrency=settings.concurrency, ca_file=settings.smtp_ca_file,
    ),)


def relay_settings(settings: Settings, relay: RelaySpec) -> Settings:
    """The settings as seen by one relay's connections: its address, credentials, TLS,
    connections and rate in the smtp_* places the transport reads."""
    return replace(
        settings, smtp_host=relay.host, smtp_port=relay.port,
        smtp_security=relay.security,  # type: ignore[arg-type]
        smtp_username=relay.username, smtp_password=relay.password,
        smtp_ca_file=relay.ca_file or settings.smtp_ca_file,
        concurrency=relay.concurrency or settings.concurrency,
        rate=relay.rate or settings.rate, quota=relay.quota,
        smtp_pipelining=settings.smtp_pipelining if relay.pipelining is None else relay.pipelining,
    )
