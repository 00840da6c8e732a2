"""Facts kept in the database itself: the generated secrets."""

from __future__ import annotations

import secrets

from sqlalchemy import Connection, select

from mailer.store.engine import dialect_insert
from mailer.store.models import Meta

# Names of the secrets (not secrets): unsubscribe tokens, unless MAILER_SECRET is set;
# the key of the hashes of erased addresses, never rotated; the key of the MACs in Message-IDs
# (generated, never configured: an id is checked by being found, so the key may never change
# what was already sent, and MAILER_SECRET may be rotated without touching it).
TOKEN_SECRET = "token_secret"  # noqa: S105
SUPPRESSION_KEY = "suppression_key"
MESSAGE_ID_KEY = "message_id_key"


def secret(connection: Connection, name: str) -> bytes:
    """The secret called `name`, generated on first use and kept."""
    found = connection.scalar(select(Meta.value).where(Meta.key == name))
    if found is None:
        insert = dialect_insert(connection)
        connection.execute(
            insert(Meta).values(key=name, value=secrets.token_hex(32)).on_conflict_do_nothing()
        )
        found = connection.scalar(select(Meta.value).where(Meta.key == name))
    assert found is not None
    return bytes.fromhex(found)


def token_secret(connection: Connection, configured: str | None) -> bytes:
    """The key of unsubscribe tokens: MAILER_SECRET when set, else the generated one."""
    return configured.encode("utf-8") if configured else secret(connection, TOKEN_SECRET)
