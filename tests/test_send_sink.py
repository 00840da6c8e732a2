"""`mailer send` in volume against Postfix's smtp-sink, and under its fault flags.

smtp-sink (tests/sink.py) answers every transaction at once, or fails commands as told:
`-r` 4xx, `-f` 5xx, `-q` hang up without a reply, `-Q` 421 and hang up, `-W` reply late.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_TEMPLATES
from tests.sink import Sink, fixture_smtp_sink_factory  # noqa: F401

STATES = ["pending", "sending", "sent", "deferred", "uncertain", "failed", "skipped"]


@pytest.fixture
def listed(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")

    def setup(count: int, sink: Sink, **env: str) -> Any:
        rows = "\n".join(f"abonne{i}@asso.fr,Zoë,Œuvray" for i in range(count))
        (tmp_path / "list.csv").write_text("email,first_name,last_name\n" + rows + "\n",
                                           encoding="utf-8")
        assert cli("import", "list.csv").code == 0
        for name, value in {"MAILER_SMTP_HOST": sink.host, "MAILER_SMTP_PORT": str(sink.port),
                            "MAILER_SMTP_SECURITY": "none", **env}.items():
            monkeypatch.setenv(name, value)
        return cli

    return setup


def send(cli: Any, *args: str) -> tuple[int, dict[str, Any]]:
    result = cli("send", "closure-notice", "--json", *args)
    status = json.loads(cli("status", "closure-notice", "--json").stdout)
    return result.code, status["counts"]


def test_two_thousand_messages_one_each_over_reused_connections(listed, smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    cli = listed(2000, sink)
    code, counts = send(cli, "--concurrency", "4")
    assert code == 0
    assert counts == {**dict.fromkeys(STATES, 0), "sent": 2000}
    assert sink.wait_for(2000) == 2000
    copies = sink.recipients()
    assert len(copies) == 2000
    assert set(copies.values()) == {1}
    # 100 messages per connection, then a new one: about 2000 / 100 sessions, not 2000.
    assert 20 <= sink.counters().sessions <= 30


def test_soft_refusals_defer_everyone(listed, smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    cli = listed(50, smtp_sink_factory("-r", "RCPT"))
    code, counts = send(cli)
    assert code == 0
    assert counts == {**dict.fromkeys(STATES, 0), "deferred": 50}


def test_hard_refusals_fail_without_marking_bounces(listed, smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    cli = listed(12, smtp_sink_factory("-f", "RCPT"))
    code, counts = send(cli)
    assert code == 0
    assert counts == {**dict.fromkeys(STATES, 0), "failed": 12}
    subscribers = json.loads(cli("status", "--json").stdout)["subscribers"]
    assert subscribers["bounced"] == 0  # 5.3.0 is not about the mailbox


def test_a_relay_refusing_everyone_alike_stops_the_run_and_marks_nobody(  # type: ignore[no-untyped-def]
    listed, smtp_sink_factory
) -> None:
    """Twenty identical refusals before any acceptance: the relay refuses the sender or the
    client (Postfix gives "Relay access denied" or "Sender address rejected" at RCPT), not
    the recipients. Exit 78; every delivery is released, none failed, none bounced."""
    cli = listed(60, smtp_sink_factory("-f", "RCPT", "-B", "550 5.1.0 Sender address rejected"))
    result = cli("send", "closure-notice")
    assert result.code == 78
    assert "refused the first 20 recipients with the same reply" in result.stderr
    counts = json.loads(cli("status", "closure-notice", "--json").stdout)["counts"]
    assert counts == {**dict.fromkeys(STATES, 0), "pending": 60}
    assert json.loads(cli("status", "--json").stdout)["subscribers"]["bounced"] == 0


def test_bad_mailbox_replies_mark_bounces(listed, smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    cli = listed(10, smtp_sink_factory("-f", "RCPT", "-B", "550 5.1.1 Unknown user"))
    code, counts = send(cli)
    assert code == 0
    assert counts["failed"] == 10
    assert json.loads(cli("status", "--json").stdout)["subscribers"]["bounced"] == 10


def test_a_hang_up_after_the_message_is_uncertain(listed, smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory("-q", ".")
    cli = listed(20, sink)
    code, counts = send(cli, "--concurrency", "2")
    assert code == 0
    assert counts == {**dict.fromkeys(STATES, 0), "uncertain": 20}
    assert sink.wait_for(20) == 20  # the sink has them all: resending would duplicate


def test_a_hang_up_before_the_message_is_deferred(listed, smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory("-q", "DATA")
    cli = listed(12, sink)
    code, counts = send(cli, "--concurrency", "2")
    assert code == 0
    assert counts == {**dict.fromkeys(STATES, 0), "deferred": 12}
    assert sink.count() == 0


def test_421_throttling_stops_the_run_and_charges_nobody(listed, smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    cli = listed(40, smtp_sink_factory("-Q", "RCPT"))
    result = cli("send", "closure-notice")
    assert result.code == 75
    assert "keeps throttling" in result.stderr
    counts = json.loads(cli("status", "closure-notice", "--json").stdout)["counts"]
    assert counts == {**dict.fromkeys(STATES, 0), "pending": 40}
    report = cli("report", "closure-notice")
    assert all(row.split(",")[5] == "0" for row in report.stdout.splitlines()[1:])  # attempts


def test_a_slow_reply_to_the_message_is_waited_for(listed, smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    # The reply after the final dot comes 1 s late: past the command timeout, within the
    # (longer) data timeout. It is a delivery, not a timeout that would cause a resend.
    cli = listed(3, smtp_sink_factory("-W", ".:1"), MAILER_SMTP_TIMEOUT="0.5",
                 MAILER_SMTP_DATA_TIMEOUT="5")
    code, counts = send(cli, "--concurrency", "3")
    assert code == 0
    assert counts["sent"] == 3


def test_a_reply_later_than_the_data_timeout_is_uncertain(listed, smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    cli = listed(2, smtp_sink_factory("-W", ".:2"), MAILER_SMTP_DATA_TIMEOUT="0.5")
    code, counts = send(cli, "--concurrency", "2")
    assert code == 0
    assert counts["uncertain"] == 2


def test_a_slow_rcpt_times_out_into_deferred(listed, smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    # -p: smtp-sink delays a reply (-W) but not the ones after it, out of order once pipelined
    cli = listed(2, smtp_sink_factory("-p", "-W", "RCPT:2"), MAILER_SMTP_TIMEOUT="0.5")
    code, counts = send(cli, "--concurrency", "2")
    assert code == 0
    assert counts["deferred"] == 2
