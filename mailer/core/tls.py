"""Verified TLS for the client connections mailer makes (the SMTP relay, the IMAP server)."""

from __future__ import annotations

import ssl
from pathlib import Path

from mailer.core.errors import ConfigError


def verified_context(ca_file: Path | None, setting: str) -> ssl.SSLContext:
    """The system's CAs, plus `ca_file` when set; certificates and host names always checked.

    `setting` names where `ca_file` came from (`smtp_ca_file`), for the error message.
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:  # missing, unreadable, or not PEM
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise ConfigError(f"cannot load {setting} {ca_file}: {reason}") from exc
    return context
