"""What every command prints with: the consoles, JSON, the progress bars, counted nouns.

Results go to standard output; progress and notes to standard error, bars only on a terminal.
Standard error's console is `mailer.cli.err`, looked up at each use (`stderr()`), so that a
test can put a terminal in its place and see the live bars.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from mailer import api

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

SHOWN = 20  # rejected lines, warnings, problems printed before "... and N more"


def stderr() -> Console:
    """Standard error's console: the package's `err`, which a test may swap for a terminal."""
    from mailer import cli

    return cli.err


def print_json(data: Any, *, compact: bool = False) -> None:
    # Compact output uses the json module's C encoder: an import report may list many
    # thousands of lines, and the indenting encoder is pure Python (slow, memory-hungry).
    indent = None if compact else 2
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=indent) + "\n")


@contextmanager
def progress_bar(
    label: str, enabled: bool, *, unit: str = "bytes"
) -> Iterator[api.Progress | None]:
    """A bar of bytes (or of messages) read, on a terminal; None (no callback) otherwise."""
    console = stderr()
    if not (enabled and console.is_terminal):
        yield None
        return
    with Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn() if unit == "bytes" else MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def count(number: int, singular: str, plural: str | None = None) -> str:
    """`1 message`, `2 messages`; `3 deliveries` with the plural given."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"
