"""The Message-ID a delivery is given when it is queued, computed in SQL with its MAC.

`<nonce.subscriber-id.MAC@domain>`, where MAC is `mailer.core.tokens.message_mac`: an
HMAC-SHA256 under a key generated once and kept in the database (`meta.MESSAGE_ID_KEY`).
Queueing is one INSERT ... SELECT (no subscriber passes through Python), so the MAC is built
in the statement: on PostgreSQL from its built-in sha256() as the two nested hashes of HMAC
(RFC 2104, the padded keys computed here and bound as parameters); on SQLite, which has no
hash function, by a Python function registered on the connection that runs the statement.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Connection, LargeBinary, String, cast, func, literal
from sqlalchemy.sql.elements import ColumnElement

from mailer.core.tokens import MESSAGE_MAC_LENGTH, message_mac_prefix
from mailer.store.meta import MESSAGE_ID_KEY, secret

_SQLITE_FUNCTION = "mailer_message_mac"
_BLOCK = 64  # SHA-256's block size, in bytes


def message_id_column(
    connection: Connection, nonce: str, subscriber_id: Any, domain: str
) -> ColumnElement[str]:
    """The SQL expression of the Message-ID of the delivery to `subscriber_id` (a column)."""
    key = secret(connection, MESSAGE_ID_KEY)
    text = literal(message_mac_prefix(nonce)) + cast(subscriber_id, String)
    if connection.dialect.name == "postgresql":
        mac = _postgresql_mac(key, text)
    else:
        _register_sqlite_mac(connection)
        mac = getattr(func, _SQLITE_FUNCTION)(literal(key.hex()), text, type_=String)
    return (literal(f"<{nonce}.") + cast(subscriber_id, String) + literal(".")
            + func.substr(mac, 1, MESSAGE_MAC_LENGTH) + literal(f"@{domain}>"))


def _postgresql_mac(key: bytes, text: ColumnElement[str]) -> ColumnElement[str]:
    padded = (hashlib.sha256(key).digest() if len(key) > _BLOCK else key).ljust(_BLOCK, b"\0")
    inner_key = bytes(byte ^ 0x36 for byte in padded)
    outer_key = bytes(byte ^ 0x5C for byte in padded)
    message = func.convert_to(text, literal("UTF8"), type_=LargeBinary)
    inner = func.sha256(literal(inner_key, LargeBinary).op("||")(message), type_=LargeBinary)
    outer = func.sha256(literal(outer_key, LargeBinary).op("||")(inner), type_=LargeBinary)
    return func.encode(outer, literal("hex"), type_=String)


def _sqlite_mac(key_hex: str, text: str) -> str:
    import hmac

    return hmac.digest(bytes.fromhex(key_hex), text.encode("utf-8"), "sha256").hex()


def _register_sqlite_mac(connection: Connection) -> None:
    driver = connection.connection.driver_connection
    if driver is not None:
        driver.create_function(_SQLITE_FUNCTION, 2, _sqlite_mac, deterministic=True)
