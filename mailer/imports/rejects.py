"""The rejects file of an import: every refused row with its line and reason, streamed.

Cells are written so a spreadsheet shows them and never runs them (OWASP CSV injection):
a cell starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO

from mailer.core.errors import InputError
from mailer.core.people import Rejection

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def formula_safe(cell: str) -> str:
    """A cell a spreadsheet will show, never run."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


class RejectsWriter:
    """Writes rejections as they come, so memory does not grow with them.

    UTF-8 with a byte-order mark (Excel opens it right) and the input's delimiter.
    """

    def __init__(self, path: Path, header: list[str], delimiter: str) -> None:
        self.path = path
        try:
            self._handle: IO[str] = path.open("w", encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror}") from exc
        self._writer = csv.writer(self._handle, delimiter=delimiter)
        self._write(["line", "reason", *(formula_safe(cell) for cell in header)])

    def _write(self, row: list[str]) -> None:
        try:
            self._writer.writerow(row)
        except OSError as exc:
            raise InputError(f"cannot write {self.path}: {exc.strerror}") from exc

    def add(self, rejection: Rejection) -> None:
        self._write(
            [str(rejection.line), formula_safe(rejection.reason)]
            + [formula_safe(cell) for cell in rejection.cells]
        )

    def close(self) -> None:
        self._handle.close()
