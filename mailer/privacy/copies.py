"""Copies of a person's data outside the database, for `mailer subscribers forget`.

The database forgets for real; files written from it do not know: messages written with
`--outbox DIR` (one .eml per delivery, the address in its To header), CSV reports written with
`mailer report --csv`, rejects files of `mailer import --rejects`, and backups. Only the outbox
can be cleaned here (the files are mailer's own and say whom they are for); the others are
named so the operator can remove them.
"""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

from mailer.core.addresses import clean_address
from mailer.core.errors import AddressError, ConfigError, InputError
from mailer.core.strictaddr import getaddresses

_HEAD_BYTES = 64 * 1024  # the headers are at the start of the file


def check_outbox(folder: Path | None) -> None:
    """Before anything is erased: an outbox given must be a folder."""
    if folder is not None and not folder.is_dir():
        raise InputError(f"the outbox {folder} is not a folder",
                         hint="give the folder `mailer send --outbox DIR` wrote into")


def remove_outbox_copies(folder: Path | None, key: str) -> tuple[Path, ...]:
    """Delete the .eml files of `folder` (if given) addressed to the address of key `key`."""
    if folder is None:
        return ()
    check_outbox(folder)
    removed = []
    for path in sorted(folder.glob("*.eml")):
        try:
            with path.open("rb") as handle:
                head = BytesParser(policy=compat32).parsebytes(handle.read(_HEAD_BYTES),
                                                               headersonly=True)
            if key in _keys([str(value) for value in head.get_all("To") or []]):
                path.unlink()
                removed.append(path)
        except OSError as exc:
            raise ConfigError(f"cannot remove {path}: {exc.strerror or exc}") from exc
    return tuple(removed)


def _keys(values: list[str]) -> set[str]:
    keys = set()
    for _, address in getaddresses(values):
        try:
            keys.add(clean_address(address)[0].key)
        except AddressError:
            continue
    return keys
