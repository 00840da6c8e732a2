"""`mailer send`, `retry`, `status` and `report` through the CLI, with the outbox transport.

The SMTP relay itself is exercised in test_send_smtp.py; here the messages go to a folder, so
every step of the pipeline and the ledger is checked without a server.
"""

from __future__ import annotations

import csv
import json
import shutil
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from mailer.store.models import Delivery
from tests.conftest import REPO_TEMPLATES

EXAMPLE = Path(__file__).parent.parent / "examples" / "abonnes-excel.csv"
ACTIVE = 7  # addresses of the example list that are valid and not duplicates
STATES = ["pending", "sending", "sent", "deferred", "uncertain", "failed", "skipped"]


@pytest.fixture
def listed(cli, tmp_path: Path):  # type: ignore[no-untyped-def]
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    assert cli("import", str(EXAMPLE)).code == 0
    return cli


def message_ids(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(select(Delivery.message_id, Delivery.state)).all()
    engine.dispose()
    return dict(rows)


def test_send_to_an_outbox_writes_one_message_per_subscriber(
    listed, tmp_path: Path, database_url: str  # type: ignore[no-untyped-def]
) -> None:
    result = listed("send", "closure-notice", "--outbox", "out")
    assert result.code == 0, result.stderr
    assert f"closure-notice: {ACTIVE} sent, 0 deferred, 0 failed" in result.stdout
    files = sorted((tmp_path / "out").glob("*.eml"))
    assert len(files) == ACTIVE
    ids = message_ids(database_url)
    assert set(ids.values()) == {"sent"}
    for file in files:
        message = BytesParser(policy=policy.default).parsebytes(file.read_bytes())
        assert message["Message-ID"] in ids
        assert file.name == message["Message-ID"].strip("<>") + ".eml"
    # Again: nothing is sent twice, nothing is rewritten.
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = listed("send", "closure-notice", "--outbox", "out", "--json")
    assert again.code == 0
    data = json.loads(again.stdout)
    assert data["counts"] == {**dict.fromkeys(STATES, 0), "sent": ACTIVE}
    assert data["run"]["sent"] == 0
    assert data["run"]["queued"] == 0
    assert {f: f.stat().st_mtime_ns for f in files} == stamps


def test_send_json_is_the_status_shape(listed) -> None:  # type: ignore[no-untyped-def]
    result = listed("send", "closure-notice", "--outbox", "out", "--json", "--limit", "2")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data)[:4] == ["campaign", "total", "counts", "next_attempt_at"]
    assert data["campaign"] == "closure-notice"
    assert data["total"] == ACTIVE
    assert list(data["counts"]) == STATES
    assert data["counts"]["sent"] == 2
    assert data["counts"]["pending"] == ACTIVE - 2
    status = json.loads(listed("status", "closure-notice", "--json").stdout)
    assert status == {k: data[k] for k in ("campaign", "total", "counts", "next_attempt_at")}


def test_limit_then_resume(listed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = listed("send", "closure-notice", "--outbox", "out", "--limit", "3")
    assert first.code == 0
    assert "3 sent" in first.stdout
    assert "Still to send: 4" in first.stdout
    second = listed("send", "closure-notice", "--outbox", "out")
    assert second.code == 0
    assert "4 sent" in second.stdout
    assert len(list((tmp_path / "out").glob("*.eml"))) == ACTIVE


def test_dry_run_checks_everything_and_writes_nothing(listed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = listed("send", "closure-notice", "--dry-run")
    assert result.code == 0, result.stderr
    assert f"{ACTIVE} of {ACTIVE} messages ready" in result.stdout
    assert f"dry run, nothing sent: {ACTIVE} deliveries would be queued" in result.stdout
    assert not (tmp_path / "out").exists()
    assert listed("status", "closure-notice").code == 1  # no campaign was created


def test_no_relay_is_a_configuration_error_with_a_hint(listed) -> None:  # type: ignore[no-untyped-def]
    result = listed("send", "closure-notice")
    assert result.code == 78
    assert result.stderr.startswith("Error: no relay configured")
    assert "--outbox DIR" in result.stderr
    assert "Traceback" not in result.stderr
    assert listed("status", "closure-notice").code == 1


def test_a_template_problem_stops_the_send_before_anything_is_queued(
    listed, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    body = tmp_path / "templates" / "closure-notice" / "body.txt"
    body.write_text(body.read_text(encoding="utf-8").replace(
        "{% endblock %}", "{{ subscriber.attributes.ville }}{% endblock %}"), encoding="utf-8")
    result = listed("send", "closure-notice", "--outbox", "out")
    assert result.code == 1
    assert "Problem: " in result.stdout
    assert "ville" in result.stdout
    assert "cannot be made; nothing was sent" in result.stderr
    assert not (tmp_path / "out").exists()
    assert listed("status", "closure-notice").code == 1


def test_changed_templates_are_refused_unless_accepted(
    listed, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    assert listed("send", "closure-notice", "--outbox", "out", "--limit", "2").code == 0
    subject = tmp_path / "templates" / "closure-notice" / "subject.txt"
    subject.write_text("Nouveau sujet\n", encoding="utf-8")
    refused = listed("send", "closure-notice", "--outbox", "out")
    assert refused.code == 1
    assert "has changed since it was first sent" in refused.stderr
    assert "--accept-changes" in refused.stderr
    retried = listed("retry", "--outbox", "out")
    assert retried.code == 1
    assert "has changed" in retried.stderr
    accepted = listed("send", "closure-notice", "--outbox", "out", "--accept-changes")
    assert accepted.code == 0
    assert f"{ACTIVE - 2} sent" in accepted.stdout


def test_unsubscribed_after_queueing_is_skipped(listed) -> None:  # type: ignore[no-untyped-def]
    assert listed("send", "closure-notice", "--outbox", "out", "--limit", "1").code == 0
    assert listed("subscribers", "unsubscribe", "zoe.oeuvray@exemple.fr").code == 0
    result = listed("send", "closure-notice", "--outbox", "out", "--json")
    counts = json.loads(result.stdout)["counts"]
    assert counts["skipped"] == 1
    assert counts["sent"] == ACTIVE - 1


def test_retry_with_nothing_due_exits_quickly(listed) -> None:  # type: ignore[no-untyped-def]
    result = listed("retry")
    assert result.code == 0
    assert result.stdout == "Nothing is due.\n"
    assert json.loads(listed("retry", "--json").stdout) == {
        "subscribers": {"active": ACTIVE, "unsubscribed": 0, "bounced": 0}, "campaigns": []}
    unknown = listed("retry", "no-such-campaign")
    assert unknown.code == 1
    assert "unknown campaign" in unknown.stderr


def test_retry_sends_what_an_interrupted_send_left(listed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert listed("send", "closure-notice", "--outbox", "out", "--limit", "4").code == 0
    result = listed("retry", "--outbox", "out", "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [c["counts"]["sent"] for c in data["campaigns"]] == [ACTIVE]
    assert data["campaigns"][0]["run"]["sent"] == ACTIVE - 4
    assert len(list((tmp_path / "out").glob("*.eml"))) == ACTIVE


def test_report_lists_who_did_not_get_it_formula_safe(
    listed, tmp_path: Path, database_url: str  # type: ignore[no-untyped-def]
) -> None:
    assert listed("send", "closure-notice", "--outbox", "out", "--limit", "5").code == 0
    engine = create_engine(database_url)
    with engine.begin() as connection:
        first = connection.scalar(select(Delivery.id).where(Delivery.state == "sent").limit(1))
        connection.execute(
            Delivery.__table__.update().where(Delivery.id == first).values(
                state="failed", last_code=550, last_reply="=HYPERLINK(\"http://x\")")
        )
    engine.dispose()
    result = listed("report", "closure-notice", "--state", "failed", "--csv", "failed.csv")
    assert result.code == 0, result.stderr
    assert "1 deliveries written to failed.csv" in result.stdout
    raw = (tmp_path / "failed.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
    assert len(rows) == 1
    assert rows[0]["state"] == "failed"
    assert rows[0]["last_code"] == "550"
    assert rows[0]["last_reply"] == "'=HYPERLINK(\"http://x\")"
    # Default: everyone not sent, on standard output.
    everyone = listed("report", "closure-notice")
    lines = everyone.stdout.strip().splitlines()
    assert lines[0].startswith("email,first_name,last_name,subscriber_status,state")
    assert len(lines) == 1 + 1 + (ACTIVE - 5)
    french = listed("report", "closure-notice", "--delimiter", ";")
    assert french.stdout.startswith("email;first_name")
    assert listed("report", "nope").code == 1
    bad = listed("report", "closure-notice", "--state", "lost")
    assert bad.code == 1


@pytest.mark.parametrize("command", ["send", "retry", "report"])
def test_help_has_an_example(cli, command: str) -> None:  # type: ignore[no-untyped-def]
    result = cli(command, "--help")
    assert result.code == 0
    assert "Example: mailer" in result.stdout


def test_two_workers_check_the_list_in_two_halves(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    body = tmp_path / "templates" / "closure-notice" / "body.txt"
    body.write_text(body.read_text(encoding="utf-8").replace(
        "{% endblock %}", "{{ 100 // (subscriber.attributes.n | int) }}{% endblock %}"), "utf-8")
    rows = [f"p{i}@asso.fr,{0 if i in (10, 11) else 1}" for i in range(4100)]
    (tmp_path / "big.csv").write_text("email,n\n" + "\n".join(rows) + "\n", encoding="utf-8")
    assert cli("import", "big.csv", "--attribute", "n").code == 0
    single = cli("send", "closure-notice", "--dry-run", "--json", "--outbox", "out")
    double = cli("send", "closure-notice", "--dry-run", "--workers", "2", "--outbox", "out")
    assert single.code == double.code == 1
    for result in (single, double):
        assert "2 of 4100 messages of 'closure-notice' cannot be made" in result.stderr
    problems = sorted(line for line in double.stdout.splitlines() if line.startswith("Problem"))
    assert problems == [f"Problem: p{i}@asso.fr: {problems[0].split(': ', 2)[2]}"
                        for i in (10, 11)]
    assert "4098 of 4100 messages ready" in double.stdout


def test_the_progress_bar_on_a_terminal(listed, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The live bar is drawn only on a terminal: pretend standard error is one."""
    import io

    from rich.console import Console

    from mailer import cli as cli_module

    screen = io.StringIO()
    monkeypatch.setattr(cli_module, "err", Console(file=screen, force_terminal=True,
                                                   width=120, highlight=False))
    result = listed("send", "closure-notice", "--outbox", "out")
    assert result.code == 0, result.stderr
    drawn = screen.getvalue()
    assert "Checking" in drawn
    assert f"{ACTIVE}/{ACTIVE}" in drawn
    assert "bytes" not in drawn
    assert "Sending closure-notice" in drawn
    assert f"sent {ACTIVE} · deferred 0 · failed 0" in drawn
    assert listed("retry", "--outbox", "out").code == 0


def test_retry_goes_on_past_a_broken_campaign(listed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two campaigns with work due; the first one's templates changed since: retry sends the
    other one, then reports the first (exit 1), so cron is not stuck on it forever."""
    shutil.copytree(tmp_path / "templates" / "closure-notice", tmp_path / "templates" / "second")
    assert listed("send", "closure-notice", "--outbox", "out", "--limit", "1").code == 0
    assert listed("send", "second", "--outbox", "out", "--limit", "1").code == 0
    subject = tmp_path / "templates" / "closure-notice" / "subject.txt"
    subject.write_text("Autre sujet\n", encoding="utf-8")
    result = listed("retry", "--outbox", "out", "--json")
    assert result.code == 1
    assert "has changed since it was first sent" in result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"subscribers", "campaigns"}
    counts = {c["campaign"]: c["counts"]["sent"] for c in data["campaigns"]}
    assert counts == {"closure-notice": 1, "second": ACTIVE}
    assert "run" in next(c for c in data["campaigns"] if c["campaign"] == "second")


def test_report_of_an_unknown_campaign_leaves_the_file_alone(listed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "keep.csv").write_text("précieux\n", encoding="utf-8")
    assert listed("report", "nope", "--csv", "keep.csv").code == 1
    assert (tmp_path / "keep.csv").read_text(encoding="utf-8") == "précieux\n"
