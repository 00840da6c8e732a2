"""Mailboxes on disk: an mbox file or a Maildir folder, only read, one message at a time.

An mbox is read with the stdlib's mailbox.mbox (its table of contents holds offsets only); a
Maildir by hand (see below). Every OSError becomes an InputError naming the path.
"""

from __future__ import annotations

import mailbox as stdlib_mailbox
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from mailer.bounces.mailboxes.stream import SOURCE_HINT, Mailbox, MailItem
from mailer.core.errors import InputError


def open_path(path: Path) -> Iterator[Mailbox]:
    """The mbox or Maildir at `path`, open for the time of one iteration of the generator."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or folder", hint=SOURCE_HINT) from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {_reason(exc)}") from exc
    if stat.S_ISDIR(mode):
        yield _maildir(path)
    elif stat.S_ISREG(mode):
        yield from _mbox(path)
    else:
        raise InputError(f"{path} is neither an mbox file nor a Maildir folder", hint=SOURCE_HINT)


def _reason(exc: OSError) -> str:
    """`permission denied`, `is a directory`: the reason, in a few words."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if exc.strerror:
        return exc.strerror.lower()
    return str(exc).strip() or type(exc).__name__


# -- mbox ---------------------------------------------------------------------------------


def _mbox(path: Path) -> Iterator[Mailbox]:
    try:
        with path.open("rb") as handle:
            first = handle.readline()
        box = stdlib_mailbox.mbox(str(path), factory=None, create=False)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {_reason(exc)}") from exc
    try:
        if first and not first.startswith(b"From "):
            raise InputError(
                f'{path} is not an mbox: it does not begin with a "From " line',
                hint=SOURCE_HINT,
            )
        try:
            total = len(box)  # reads the file once for the offsets of its messages
        except OSError as exc:
            raise InputError(f"cannot read {path}: {_reason(exc)}") from exc
        yield Mailbox(f"mbox {path}", total, lambda: _mbox_items(box, path))
    finally:
        box.close()  # nothing was changed, so nothing is written


def _mbox_items(box: stdlib_mailbox.mbox, path: Path) -> Iterator[MailItem]:
    for number, key in enumerate(box.iterkeys(), start=1):
        try:
            raw = box.get_bytes(key)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {_reason(exc)}") from exc
        yield MailItem(f"message {number}", raw)


# -- Maildir ------------------------------------------------------------------------------
# Read by hand rather than with mailbox.Maildir, which does not tell a message's file name
# (the key the user's report shows) and would read the folders again after two seconds.


def _maildir(path: Path) -> Mailbox:
    if not ((path / "cur").is_dir() and (path / "new").is_dir()):
        raise InputError(
            f"{path} is a folder but not a Maildir: it has no cur/ and new/ sub-folders",
            hint=SOURCE_HINT,
        )
    names = sorted(
        (name, folder) for folder in ("new", "cur") for name in _maildir_files(path / folder)
    )
    return Mailbox(f"Maildir {path}", len(names), lambda: _maildir_items(path, names))


def _maildir_files(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if not e.name.startswith(".") and e.is_file()]
    except OSError as exc:
        raise InputError(f"cannot read {folder}: {_reason(exc)}") from exc


def _maildir_items(path: Path, names: Iterable[tuple[str, str]]) -> Iterator[MailItem]:
    for name, folder in names:
        key = f"{folder}/{name}"
        raw = _read_maildir_file(path, key)
        if raw is None:  # moved (a flag change renames it: new/ → cur/) since the listing
            key = next(_maildir_renamed(path, name), "")
            raw = _read_maildir_file(path, key) if key else None
        if raw is not None:  # else deleted since the listing
            yield MailItem(key, raw)


def _read_maildir_file(path: Path, key: str) -> bytes | None:
    try:
        return (path / key).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read {path / key}: {_reason(exc)}") from exc


def _maildir_renamed(path: Path, name: str) -> Iterator[str]:
    """Where the message first listed as `name` is now (the part before ":" stays)."""
    unique = name.split(":", 1)[0]
    for folder in ("cur", "new"):
        for other in _maildir_files(path / folder):
            if other.split(":", 1)[0] == unique:
                yield f"{folder}/{other}"
