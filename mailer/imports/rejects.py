"""The rejects file of an import: every refused row with its line and reason, streamed.

Cells are written so a spreadsheet shows them and never runs them (OWASP CSV injection):
a cell starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`. The rows are
personal data: the file is created 0600, like the database and the outbox.
"""

from __future__ import annotations

import contextlib
import csv
import os
import stat
from pathlib import Path
from typing import IO

from mailer.core.errors import InputError
from mailer.core.people import Rejection

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def formula_safe(cell: str) -> str:
    """A cell a spreadsheet will show, never run."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def open_private(path: Path) -> IO[str]:
    """`path` opened for writing, readable by its owner only, whatever the umask.

    A file left by an earlier run may be wider open: it is narrowed before anything is
    written. Only a regular file is: `--rejects /dev/stdout` must not chmod a terminal,
    and a file someone else owns keeps the modes its owner chose (chmod is refused).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            with contextlib.suppress(PermissionError):
                os.fchmod(fd, 0o600)
        return open(fd, "w", encoding="utf-8-sig", newline="")
    except BaseException:
        os.close(fd)
        raise


class RejectsWriter:
    """Writes rejections as they come, so memory does not grow with them.

    UTF-8 with a byte-order mark (Excel opens it right) and the input's delimiter.
    """

    def __init__(self, path: Path, header: list[str], delimiter: str) -> None:
        self.path = path
        try:
            self._handle = open_private(path)
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
