"""Set-based batches: a Python list becomes one JSON parameter that the database expands.

`IN (2,000 placeholders)` and executemany cost SQLAlchemy and the driver work per value
and defeat the statement cache. Instead a batch travels as one JSON document, expanded
server-side — `json_each` on SQLite, `json_to_recordset` / `json_array_elements_text` on
PostgreSQL — so each statement is compiled once and the per-row work happens in C.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select, Text, bindparam, cast, column, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.type_api import TypeEngine


def _document(name: str, data: Any) -> Any:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return bindparam(name, text, type_=Text())


def values_of(connection: Connection, values: Sequence[str], name: str = "values") -> Select[Any]:
    """A one-column SELECT of these strings, for `column.in_(...)`."""
    doc = _document(name, list(values))
    if connection.dialect.name == "postgresql":
        table = func.json_array_elements_text(cast(doc, postgresql.JSON)).table_valued("value")
    else:
        table = func.json_each(doc).table_valued("value")
    return select(table.c.value)


def rows_of(
    connection: Connection,
    rows: Sequence[dict[str, Any]],
    columns: dict[str, TypeEngine[Any]],
    name: str = "rows",
) -> Select[Any]:
    """A SELECT yielding these dicts as rows, one column per key of `columns`, in order."""
    doc = _document(name, list(rows))
    if connection.dialect.name == "postgresql":
        table = (
            func.json_to_recordset(cast(doc, postgresql.JSON))
            .table_valued(*(column(key, type_) for key, type_ in columns.items()))
            .render_derived(with_types=True)
        )
        return select(*(table.c[key] for key in columns))
    each = func.json_each(doc).table_valued("value")
    return select(*(func.json_extract(each.c.value, f"$.{key}").label(key) for key in columns))
