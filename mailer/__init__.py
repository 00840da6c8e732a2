"""mailer: a mailing-list dispatcher you can trust with your whole list."""

from __future__ import annotations

__version__ = "0.1.0"
