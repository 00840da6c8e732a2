"""The relay as the settings name it: its address and default port, and the checks made before
any connection (a relay is configured; no password would cross the network in clear).

Light on purpose (no aiosmtplib): only the pool in `smtp` needs the SMTP client.
"""

from __future__ import annotations

import ipaddress

from mailer.core.config import Security, Settings
from mailer.core.errors import ConfigError

DEFAULT_PORTS: dict[Security, int] = {"starttls": 587, "tls": 465, "none": 25}


def relay_address(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": a relay on this machine."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def require_relay(settings: Settings) -> str:
    """The relay's host name; the one "no relay" error (with a hint) when none is set."""
    if not settings.smtp_host:
        raise ConfigError(
            "no relay configured: no SMTP relay host is set (MAILER_SMTP_HOST)",
            hint="set MAILER_SMTP_HOST (and MAILER_SMTP_PORT, MAILER_SMTP_SECURITY), or write "
            "the messages to a folder instead: --outbox DIR",
        )
    return settings.smtp_host


def check_auth_allowed(settings: Settings) -> None:
    """Refuse credentials that would cross the network unencrypted (checked before connecting)."""
    if settings.smtp_username is None:
        return
    host = settings.smtp_host or ""
    if settings.smtp_security == "none" and not is_loopback(host):
        port = settings.smtp_port or DEFAULT_PORTS["none"]
        raise ConfigError(
            f"refusing to send the SMTP password to {relay_address(host, port)} over an "
            "unencrypted connection (smtp_security = none)",
            hint="set smtp_security to starttls or tls, or use a relay on localhost",
        )
    if settings.smtp_password is None:
        raise ConfigError(
            "smtp_username is set but no SMTP password was given",
            hint="set MAILER_SMTP_PASSWORD or MAILER_SMTP_PASSWORD_FILE",
        )
