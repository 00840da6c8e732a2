"""`mailer` run as a real child process (`python -m mailer`), for the tests that start several
at once, kill them, or race them (test_crash, test_relay_windows)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

EXIT_TIMEOUT = 60.0  # seconds a child may take to finish a run (a noisy 2-core machine)


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str
    seconds: float  # from start to exit, as seen from here


class Child:
    """One `mailer ...` process; its output goes to files (no pipe can fill up and block it)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], tag: str) -> None:
        self.args = args
        self.out = cwd / f"{tag}.stdout"
        self.err = cwd / f"{tag}.stderr"
        self.started = time.monotonic()
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailer", *args], cwd=cwd, env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,  # a Ctrl-C on the test run is not delivered to it
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        stdout = self.out.read_text("utf-8", "replace")
        stderr = self.err.read_text("utf-8", "replace")
        return f"`mailer {' '.join(self.args)}` stdout:\n{stdout}\nstderr:\n{stderr}"

    def finish(self, timeout: float = EXIT_TIMEOUT) -> Done:
        """Wait for the exit; kill it and fail the test if it takes longer than `timeout`."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"still running after {timeout:.0f} s (killed): {self.output()}")
        return Done(code, self.out.read_text("utf-8", "replace"),
                    self.err.read_text("utf-8", "replace"), time.monotonic() - self.started)

    def kill(self) -> None:
        if self.running():
            self.process.kill()
        self.process.wait()
