"""The outbox: a Transport that writes each message to a folder as an .eml file, sends nothing.

Owns the file naming (`<message-id without <>>.eml`, unsafe characters replaced, so a resend of
the same delivery overwrites its own file) and the atomic write (a temporary file in the same
folder, fsync, os.replace). A file holds exactly the message bytes, so it opens in a mail
client; the envelope recipient is not written (the To header says who it is for).
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path

from mailer.core.delivery import Reply, Stage, Submission
from mailer.core.errors import ConfigError

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")
_MAX_NAME = 200  # characters before ".eml": well under every file system's limit


def outbox_file_name(message_id: str) -> str:
    """`<a.b@example.org>` → `a.b@example.org.eml`; anything unsafe becomes `_`."""
    name = _UNSAFE.sub("_", message_id.strip().strip("<>"))[:_MAX_NAME].lstrip(".")
    return f"{name or 'message'}.eml"


class OutboxTransport:
    """A Transport writing `<folder>/<message-id>.eml` for each submission."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.description = f"outbox {folder}"

    async def start(self) -> None:
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the outbox folder {self.folder}: {exc.strerror}"
            ) from exc
        if not self.folder.is_dir():
            raise ConfigError(f"the outbox {self.folder} is not a folder")

    async def send(self, submission: Submission) -> Reply:
        if not self.folder.is_dir():
            await self.start()
        path = self.folder / outbox_file_name(submission.message_id)
        try:
            await asyncio.to_thread(_write_atomically, path, submission.data)
        except OSError as exc:
            raise ConfigError(
                f"cannot write to the outbox folder {self.folder}: {exc.strerror or exc}"
            ) from exc
        return Reply(250, f"written to {path}", Stage.DATA_END)

    async def close(self) -> None:
        """Nothing to close: every file is complete when send() returns."""


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync it, then rename it over `path`."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
