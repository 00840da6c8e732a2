"""Set-based batches: one statement per batch, with the per-row work out of Python's way.

`IN (2,000 placeholders)` and SQLAlchemy's executemany cost Python work per value and defeat
the statement cache. Instead:

- lookups take the batch as one JSON parameter that the database expands (`json_each` on
  SQLite, `json_array_elements_text` on PostgreSQL): one compiled statement, C-speed rows;
- inserts on PostgreSQL are one `INSERT ... SELECT FROM json_to_recordset(:rows)`; on SQLite
  (whose json_extract re-parses every object) they are one executemany of plain tuples,
  each value converted by the column type's own bind processor — the exact bytes
  SQLAlchemy itself would store — without its per-row bookkeeping.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, Table, Text, bindparam, cast, column, func, select, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.type_api import TypeEngine

from mailer.store.engine import dialect_insert


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _document(name: str, data: Any) -> Any:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    return bindparam(name, text, type_=Text())


def values_of(connection: Connection, values: Sequence[str], name: str = "values") -> Select[Any]:
    """A one-column SELECT of these strings, for `column.in_(...)`."""
    doc = _document(name, list(values))
    if connection.dialect.name == "postgresql":
        table = func.json_array_elements_text(cast(doc, postgresql.JSON)).table_valued("value")
    else:
        table = func.json_each(doc).table_valued("value")
    return select(table.c.value)


def _recordset(rows: Sequence[dict[str, Any]], columns: dict[str, TypeEngine[Any]]) -> Select[Any]:
    """PostgreSQL: a SELECT yielding these dicts as typed rows."""
    doc = _document("rows", list(rows))
    table = (
        func.json_to_recordset(cast(doc, postgresql.JSON))
        .table_valued(*(column(key, type_) for key, type_ in columns.items()))
        .render_derived(with_types=True)
    )
    return select(*(table.c[key] for key in columns))


def insert_rows(
    connection: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    constants: dict[str, Any] | None = None,
    skip_conflicts_on: str | None = None,
) -> None:
    """INSERT these rows (dicts with the same keys) in one statement or one executemany.

    `constants` are columns with the same value in every row (converted once). With
    `skip_conflicts_on`, a row whose value in that unique column exists is skipped.
    """
    if not rows:
        return
    constants = constants or {}
    names = list(rows[0])
    insert = dialect_insert(connection)(table)
    dialect = connection.dialect
    if dialect.name == "postgresql":
        recordset = _recordset(rows, {name: table.c[name].type for name in names})
        fixed = [
            bindparam(name, value, type_=table.c[name].type) for name, value in constants.items()
        ]
        source = select(*recordset.selected_columns, *fixed).where(true())
        statement = insert.from_select([*names, *constants], source)
    else:
        statement = insert.values({name: bindparam(name) for name in [*names, *constants]})
    if skip_conflicts_on is not None:
        statement = statement.on_conflict_do_nothing(index_elements=[skip_conflicts_on])
    if dialect.name == "postgresql":
        connection.execute(statement)
        return
    compiled = statement.compile(dialect=dialect)

    def converter(name: str) -> Any:
        return table.c[name].type.dialect_impl(dialect).bind_processor(dialect)

    fixed_values = {
        name: value if (convert := converter(name)) is None else convert(value)
        for name, value in constants.items()
    }
    plan = [(name, name in fixed_values, converter(name)) for name in compiled.positiontup or ()]
    connection.exec_driver_sql(
        compiled.string,
        [
            tuple(
                fixed_values[name]
                if fixed
                else row[name]
                if convert is None
                else convert(row[name])
                for name, fixed, convert in plan
            )
            for row in rows
        ],
    )
