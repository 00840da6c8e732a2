"""Who holds a lease: the name a sending process gives itself, read back for `mailer status`.

A lease owner is `host:pid:suffix` (mailer.sending.recorder.worker_name). Whether that process
still runs can be told only on the same host: elsewhere, `stopped` is None (unknown).
"""

from __future__ import annotations

import os
import socket
from typing import Any


def this_host() -> str:
    """The host part of this machine's lease owners."""
    return socket.gethostname()[:60]


def lease_owner(pid: int | None = None) -> str:
    """`host:pid` for this process (the caller adds a random suffix: pids are reused)."""
    return f"{this_host()}:{os.getpid() if pid is None else pid}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    except OSError:
        return True
    return True


def describe_owner(owner: str | None) -> dict[str, Any]:
    """{"host", "pid", "stopped"} of a lease owner; `stopped` is True or False on this host,
    None elsewhere or when the name cannot be read."""
    host, _, rest = (owner or "").partition(":")
    pid_text = rest.partition(":")[0]
    pid = int(pid_text) if pid_text.isdigit() else None
    stopped: bool | None = None
    if pid is not None and host == this_host():
        stopped = not _running(pid)
    return {"host": host or None, "pid": pid, "stopped": stopped}
