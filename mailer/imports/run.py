"""One `mailer import` run: read the CSV, parse each record, merge in batches, report.

The pure work is in csvsource / headers / importer, the SQL in store.subscribers; this
module drives them. Batches of BATCH_SIZE rows are merged one transaction each, so memory
stays flat and an interrupted import keeps what it merged (running it again is idempotent).
A dry run is the same run inside one transaction that is rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from mailer.core.clock import Clock
from mailer.core.people import Candidate, Notice, Rejection
from mailer.imports.columns import ColumnMap
from mailer.imports.csvsource import CsvSource, Record
from mailer.imports.records import parse_record
from mailer.imports.rejects import RejectsWriter
from mailer.store import meta
from mailer.store import subscribers as store

BATCH_SIZE = 2000
Progress = Callable[[int, int], None]


@dataclass
class ImportReport:
    file: str
    rows: int = 0
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[Notice] = field(default_factory=list)
    encoding: str = ""
    delimiter: str = ""
    columns: dict[str, str] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)
    dry_run: bool = False

    def add(self, result: store.BatchResult) -> None:
        self.imported += result.imported
        self.updated += result.updated
        self.unchanged += result.unchanged
        self.duplicates += result.duplicates
        self.warnings.extend(result.notices)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "rows": self.rows,
            "imported": self.imported,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "duplicates": self.duplicates,
            "rejected": [{"line": r.line, "reason": r.reason} for r in self.rejected],
            "warnings": [{"line": w.line, "message": w.message} for w in self.warnings],
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "columns": self.columns,
            "ignored_columns": self.ignored_columns,
            "dry_run": self.dry_run,
        }

    def counts(self) -> dict[str, int]:
        """What the `imports` table keeps of this run (no personal data)."""
        return {
            "rows": self.rows,
            "imported": self.imported,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "duplicates": self.duplicates,
            "rejected": len(self.rejected),
        }


class ImportRun:
    """Import one opened CSV source into the database, once."""

    def __init__(
        self,
        source: CsvSource,
        columns: ColumnMap,
        *,
        dry_run: bool,
        rejects: RejectsWriter | None,
        progress: Progress | None,
        clock: Clock,
    ) -> None:
        self.source = source
        self.columns = columns
        self.dry_run = dry_run
        self.rejects = rejects
        self.progress = progress
        self.clock = clock
        self.name = source.path.name
        self.report = ImportReport(
            file=self.name,
            delimiter=source.delimiter,
            dry_run=dry_run,
            columns={name: columns.header[i] for name, i in columns.fields.items()},
            ignored_columns=columns.ignored,
        )

    def run(self, engine: Engine) -> ImportReport:
        started = self.clock()
        with engine.connect() as connection:
            connection = connection.execution_options(write=True)
            suppression_key = meta.secret(connection, meta.SUPPRESSION_KEY)
            store.start_import(connection)
            self._commit(connection)
            self._tick()
            batch: list[Candidate] = []
            for record in self._records():
                self.report.rows += 1
                for outcome in parse_record(record, self.columns):
                    if isinstance(outcome, Candidate):
                        batch.append(outcome)
                    elif isinstance(outcome, Rejection):
                        self._reject(outcome)
                    else:
                        self.report.warnings.append(outcome)
                if len(batch) >= BATCH_SIZE:
                    self._merge(connection, batch, suppression_key)
            self._merge(connection, batch, suppression_key)
            store.finish_import(connection)
            self._finish(connection, started)
        return self._final_report()

    def _records(self) -> Iterable[Record]:
        records: Iterable[Record] = self.source.records()
        first = self.source.header_record
        if self.columns.headerless and first is not None:
            column = self.columns.header[self.columns.fields["email"]]
            self.report.warnings.append(
                Notice(
                    first.line,
                    f"no header row: {column} holds the addresses and the "
                    "first line is read as data",
                )
            )
            records = chain([first], records)
        return records

    def _reject(self, rejection: Rejection) -> None:
        # Only line and reason stay in memory; the cells go straight to the rejects file.
        if self.rejects is not None:
            self.rejects.add(rejection)
        self.report.rejected.append(Rejection(rejection.line, rejection.reason))

    def _merge(self, connection: Connection, batch: list[Candidate], key: bytes) -> None:
        result = store.merge_batch(
            connection, batch, suppression_key=key, source=self.name, now=self.clock()
        )
        self._commit(connection)
        self.report.add(result)
        for rejection in result.rejections:
            self._reject(rejection)
        batch.clear()
        self._tick()

    def _commit(self, connection: Connection) -> None:
        if not self.dry_run:
            connection.commit()

    def _tick(self) -> None:
        if self.progress:
            self.progress(*self.source.progress())

    def _finish(self, connection: Connection, started: datetime) -> None:
        if self.dry_run:
            connection.rollback()
            return
        store.record_import(
            connection,
            {
                "source": self.name[:255],
                "started_at": started,
                "finished_at": self.clock(),
                **self.report.counts(),
            },
        )
        connection.commit()

    def _final_report(self) -> ImportReport:
        report, stats = self.report, self.source.stats
        report.encoding = self.source.encoding
        if stats.cp1252_lines and stats.utf8_lines:
            report.warnings.append(
                Notice(
                    stats.first_cp1252_line or 0,
                    "the file mixes UTF-8 and Windows-1252 lines; each line was read in its own",
                )
            )
        for line in stats.replaced_lines:
            report.warnings.append(
                Notice(line, f"bytes not valid in {report.encoding}; replaced by �")
            )
        report.rejected.sort(key=lambda r: r.line)
        report.warnings.sort(key=lambda w: w.line)
        return report


def open_rejects(
    stack: ExitStack, path: Path | None, columns: ColumnMap, delimiter: str
) -> RejectsWriter | None:
    if path is None:
        return None
    writer = RejectsWriter(path, columns.header, delimiter)
    stack.callback(writer.close)
    return writer
