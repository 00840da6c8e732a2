"""A relay's budget as the operator declares it: sliding windows (`2000/day`, `100/h,2000/day`)
and the relays a run sends through, in order (`RelaySpec`, from `[[relay]]` or MAILER_SMTP_*).

Pure values and their parsing; counting a window against the ledger is mailer.store.slots',
pausing a relay mailer.store.pauses'.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mailer.core.errors import ConfigError

_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}
_NAMES = {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "day"}
_WINDOW_RE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$", re.IGNORECASE)
# A rate (messages per second) is held across processes as a window at least this long, so
# that reserving its slots costs one transaction per block, not one per message.
RATE_WINDOW_SECONDS = 10.0


@dataclass(frozen=True, order=True)
class Window:
    """At most `limit` messages in any `seconds` long stretch of time."""

    seconds: float
    limit: int

    def __str__(self) -> str:
        unit = _NAMES.get(self.seconds, f"{self.seconds:g}s")
        return f"{self.limit}/{unit}"

    def as_json(self) -> dict[str, Any]:
        return {"limit": self.limit, "seconds": int(self.seconds)}


def parse_quota(text: str) -> tuple[Window, ...]:
    """`2000/day`, `100/h`, `30/min` or several, comma-separated; ConfigError otherwise."""
    windows: list[Window] = []
    for part in str(text).split(","):
        if not part.strip():
            continue
        match = _WINDOW_RE.match(part)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS or int(match.group(1)) < 1:
            raise ConfigError(
                f"invalid quota {part.strip()!r}",
                hint="write N/day, N/h, N/min (N at least 1), several separated by commas: "
                "100/h,2000/day",
            )
        windows.append(Window(_UNITS[unit], int(match.group(1))))
    if not windows:
        raise ConfigError("the quota is empty", hint="e.g. 2000/day")
    return tuple(sorted(set(windows)))


def rate_window(per_second: float) -> Window:
    """A rate as a window the ledger can hold across processes: `per_second` over at least
    RATE_WINDOW_SECONDS (and at least one message)."""
    seconds = max(RATE_WINDOW_SECONDS, 1.0 / per_second)
    return Window(seconds, max(1, math.floor(per_second * seconds)))


@dataclass(frozen=True)
class RelaySpec:
    """One relay a run may send through. `name` keys its pause and its window in the ledger."""

    name: str
    host: str
    port: int | None = None
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_env: str | None = None  # where the password came from, for messages
    quota: tuple[Window, ...] = ()
    rate: Any = None  # mailer.core.config.Rate | None (config imports this module)
    concurrency: int | None = None
    ca_file: Any = None  # Path | None
    pipelining: bool | None = None  # None: smtp_pipelining


_RELAY_KEYS = frozenset({
    "name", "host", "port", "security", "username", "password_env", "quota", "rate",
    "concurrency", "ca_file", "pipelining",
})


def relay_specs_from(
    raw: Any, *, source: str, environ: Mapping[str, str], convert: Callable[..., Any]
) -> tuple[RelaySpec, ...]:
    """mailer.toml's `[[relay]]` tables as RelaySpecs, in the order written. `convert` is
    mailer.core.config's own conversion of one setting (so a relay's port, security, quota
    and rate are checked as the top-level ones are). The password is read from the variable
    `password_env` names; a missing one is left None, and that relay alone refuses to start."""
    if not isinstance(raw, list) or not raw or not all(isinstance(t, dict) for t in raw):
        raise ConfigError(f"{source}: relay must be one or more tables: [[relay]]")
    specs: list[RelaySpec] = []
    for number, table in enumerate(raw, start=1):
        where = f"{source}: [[relay]] number {number}"
        if "password" in table:
            raise ConfigError(
                f"{where}: password is a secret and is not read from mailer.toml",
                hint="set password_env to the name of the environment variable holding it",
            )
        unknown = sorted(set(table) - _RELAY_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}",
                              hint=f"known keys: {', '.join(sorted(_RELAY_KEYS))}")
        host = convert("smtp_host", table.get("host", ""), source=where)
        if not host:
            raise ConfigError(f"{where}: host is missing")
        name = str(table.get("name") or host).strip()
        if any(spec.name == name for spec in specs):
            raise ConfigError(f"{where}: two relays are named {name!r}",
                              hint="give each [[relay]] its own name")
        variable = table.get("password_env")
        get = {key: convert(attr, table[key], source=where) for key, attr in (
            ("port", "smtp_port"), ("security", "smtp_security"), ("username", "smtp_username"),
            ("quota", "quota"), ("rate", "rate"), ("concurrency", "concurrency"),
            ("ca_file", "smtp_ca_file"), ("pipelining", "smtp_pipelining"),
        ) if key in table}
        specs.append(RelaySpec(
            name=name, host=host, port=get.get("port"),
            security=get.get("security", "starttls"), username=get.get("username"),
            password=environ.get(str(variable)) or None if variable else None,
            password_env=str(variable) if variable else None,
            quota=get.get("quota", ()), rate=get.get("rate"),
            concurrency=get.get("concurrency"), ca_file=get.get("ca_file"),
            pipelining=get.get("pipelining"),
        ))
    return tuple(specs)
