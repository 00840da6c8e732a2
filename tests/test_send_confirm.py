"""Issue 14, item 9: `mailer send` through a real relay, on a terminal, shows the plan and asks
(default no) unless --yes; scripts, --outbox and --dry-run are never asked. And
`--test-to ADDRESS`: one real message, outside the ledger, its subject marked as a test."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mailer import api
from mailer.core.config import Settings, load_settings
from tests.conftest import REPO_TEMPLATES, write_csv

if TYPE_CHECKING:
    from tests.smtpserver import ScriptedSMTPServer

ROWS = "email,prenom\nok1@exemple.fr,Zoé\nok2@exemple.fr,Léa\nok3@exemple.fr,Ana\n"


@pytest.fixture
def place(tmp_path: Path, smtp_server: ScriptedSMTPServer) -> dict[str, str]:
    """A folder with the templates and three subscribers; the environment to reach the relay."""
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(MAILER_DATABASE_URL=f"sqlite:///{tmp_path / 'list.db'}",
               MAILER_SMTP_HOST=smtp_server.host, MAILER_SMTP_PORT=str(smtp_server.port),
               MAILER_SMTP_SECURITY="none", COLUMNS="120")
    settings = Settings(database_url=env["MAILER_DATABASE_URL"],
                        templates_dir=tmp_path / "templates")
    api.import_subscribers(settings, write_csv(tmp_path / "l.csv", ROWS))
    return env


def _on_a_terminal(args: list[str], env: dict[str, str], cwd: Path,
                   answer: bytes | None) -> tuple[int, str]:
    """Run `mailer ARGS` with stdin, stdout and stderr on a pseudo-terminal; type `answer`
    once the question shows."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "mailer", *args], cwd=cwd, env=env,
                               stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    seen, deadline, answered = b"", time.monotonic() + 30, False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        if answer is not None and not answered and b"[y/N]" in seen:
            os.write(leader, answer)
            answered = True
        if process.poll() is not None and not ready:
            break
    code = process.wait(timeout=30)
    os.close(leader)
    return code, seen.decode("utf-8", "replace")


def test_on_a_terminal_send_shows_the_plan_and_asks(
    place: dict[str, str], tmp_path: Path, smtp_server: ScriptedSMTPServer
) -> None:
    code, shown = _on_a_terminal(["send", "closure-notice"], place, tmp_path, b"\n")
    assert code == 1, shown
    for said in ("recipients  3", f"127.0.0.1:{smtp_server.port} (none)",
                 "contact@cime.example.org", "no limit", "duration", "[y/N]", "Nothing sent"):
        assert said in shown, shown
    assert smtp_server.messages == []  # default no: nothing was sent
    code, shown = _on_a_terminal(["send", "closure-notice"], place, tmp_path, b"y\n")
    assert code == 0, shown
    assert len(smtp_server.messages) == 3


def test_yes_outbox_and_dry_run_are_not_asked_on_a_terminal(
    place: dict[str, str], tmp_path: Path, smtp_server: ScriptedSMTPServer
) -> None:
    for args in (["--dry-run"], ["--outbox", "out"], ["--yes"]):
        code, shown = _on_a_terminal(["send", "closure-notice", *args], place, tmp_path, None)
        assert code == 0, shown
        assert "[y/N]" not in shown
    assert len(list((tmp_path / "out").glob("*.eml"))) == 3
    assert len(smtp_server.messages) == 0  # the outbox run sent them all


def test_without_a_terminal_send_does_not_ask(
    place: dict[str, str], tmp_path: Path, smtp_server: ScriptedSMTPServer
) -> None:
    done = subprocess.run([sys.executable, "-m", "mailer", "send", "closure-notice"],
                          cwd=tmp_path, env=place, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "[y/N]" not in done.stdout + done.stderr
    assert len(smtp_server.messages) == 3


def test_test_to_sends_one_marked_message_outside_the_ledger(
    place: dict[str, str], tmp_path: Path, smtp_server: ScriptedSMTPServer
) -> None:
    settings = smtp_server.settings(database_url=place["MAILER_DATABASE_URL"],
                                    templates_dir=tmp_path / "templates")
    sent = api.send_test(settings, "closure-notice", "me@exemple.org", "ok2@exemple.fr")
    assert sent.subscriber == "ok2@exemple.fr"
    [received] = smtp_server.messages
    assert received.recipients == ("me@exemple.org",)
    message = BytesParser(policy=policy.default).parsebytes(received.data)
    assert str(message["Subject"]).startswith("[TEST] Le Comité")
    assert message["To"] == "me@exemple.org"
    assert "Bonjour Léa," in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # outside the ledger: no campaign, no delivery, nothing counted
    assert api.status(settings)["campaigns"] == []
    # the first active subscriber by default, through the CLI too
    done = subprocess.run([sys.executable, "-m", "mailer", "send", "closure-notice",
                           "--test-to", "me@exemple.org"], cwd=tmp_path, env=place,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "rendered for ok1@exemple.fr" in done.stdout
    assert len(smtp_server.messages) == 2
    refused = subprocess.run([sys.executable, "-m", "mailer", "send", "closure-notice",
                              "--email", "ok1@exemple.fr"], cwd=tmp_path, env=place,
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 1
    assert "--test-to" in refused.stderr


def test_relay_tables_alone_give_the_plan_and_the_test_message(
    place: dict[str, str], tmp_path: Path, smtp_server: ScriptedSMTPServer
) -> None:
    """With [[relay]] tables and no MAILER_SMTP_HOST, the plan names the first relay (and
    how many follow), and --test-to goes through the first one."""
    (tmp_path / "mailer.toml").write_text(
        f'[[relay]]\nname = "first"\nhost = "127.0.0.1"\nport = {smtp_server.port}\n'
        'security = "none"\n\n[[relay]]\nname = "second"\nhost = "127.0.0.1"\nport = 9\n'
        'security = "none"\n', encoding="utf-8")
    settings = replace(load_settings(tmp_path / "mailer.toml", {}),
                       database_url=place["MAILER_DATABASE_URL"],
                       templates_dir=tmp_path / "templates")
    plan = api.send_plan(settings, "closure-notice")
    assert plan.relay == f"127.0.0.1:{smtp_server.port} (none), then 1 more relay"
    api.send_test(settings, "closure-notice", "me@exemple.org")
    assert [m.recipients for m in smtp_server.messages] == [("me@exemple.org",)]
