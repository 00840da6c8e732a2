"""`mailer report`: deliveries as CSV, written as they stream from the database.

A file gets UTF-8 with a byte-order mark (Excel opens it right); standard output gets plain
UTF-8. Every cell is formula-safe (a spreadsheet shows it, never runs it: see `rejects`).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from mailer.core.errors import InputError
from mailer.imports.rejects import formula_safe


def write_report(rows: Iterable[list[str]], path: Path | None, delimiter: str = ",") -> int:
    """Write the header row and the rows; return how many rows after the header."""
    handle: IO[str]
    if path is None:
        handle = sys.stdout
    else:
        try:
            handle = path.open("w", encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror}") from exc
    written = -1
    try:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\r\n")
        for row in rows:
            writer.writerow([formula_safe(cell) for cell in row])
            written += 1
    except OSError as exc:
        raise InputError(f"cannot write {path or 'standard output'}: {exc.strerror}") from exc
    finally:
        if path is not None:
            handle.close()
    return max(written, 0)
