"""`mailer report`: deliveries as CSV, written as they stream from the database.

A file gets UTF-8 with a byte-order mark (Excel opens it right); standard output gets plain
UTF-8. Every cell is formula-safe (a spreadsheet shows it, never runs it: see `rejects`).
A file is readable by its owner only (it holds personal data). A reader that stops early
(`mailer report … | head -3`) is not an error: the rest is dropped quietly.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from mailer.core.errors import InputError
from mailer.imports.rejects import formula_safe, open_private


def write_report(rows: Iterable[list[str]], path: Path | None, delimiter: str = ",") -> int:
    """Write the header row and the rows; return how many rows after the header."""
    handle: IO[str]
    if path is None:
        handle = sys.stdout
    else:
        try:
            handle = open_private(path)
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror}") from exc
    written = -1
    try:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\r\n")
        for row in rows:
            writer.writerow([formula_safe(cell) for cell in row])
            written += 1
        if path is None:
            handle.flush()
    except BrokenPipeError:
        if path is not None:
            raise InputError(f"cannot write {path}: broken pipe") from None
        _quiet_stdout()
    except OSError as exc:
        raise InputError(f"cannot write {path or 'standard output'}: {exc.strerror}") from exc
    finally:
        if path is not None:
            handle.close()
    return max(written, 0)


def _quiet_stdout() -> None:
    """Standard output's reader has gone (`| head`): send what is left, including what is
    still buffered and flushed at exit, to /dev/null, so Python says nothing at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real descriptor (a test's captured output)
        pass
