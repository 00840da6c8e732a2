"""flufl.bounce's corpus: 117 real bounces (tests/fixtures/flufl/data, Apache-2.0, see LICENSE
there) and the addresses flufl.bounce's own tests expect from each (expected.json, taken from
its tests/test_detectors.py).

The measurement that decided where the library's detectors go among mailer's recognisers
(`mailer.bounces.dsn.reading.RECOGNISERS`): mailer alone, the library before mailer's text
reading, the library after it. And the import itself: every address any message names is a
subscriber who was sent the campaign, so that a wrong pick would show as a bounce.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from mailer.bounces.dsn import Report, autoreply, library, plaintext, reading, receipts, rfc3464
from mailer.core.addresses import clean_address
from mailer.core.errors import AddressError
from mailer.store.models import Delivery, Subscriber
from tests.conftest import REPO_TEMPLATES
from tests.test_bounces import write_box

CORPUS = Path(__file__).parent / "fixtures" / "flufl"
EXPECTED: dict[str, dict[str, list[str]]] = json.loads(
    (CORPUS / "expected.json").read_text("utf-8"))["messages"]
RAW = {name: (CORPUS / "data" / name).read_bytes() for name in EXPECTED}
PERMANENT = {a.casefold() for e in EXPECTED.values() for a in e["permanent"]}
TOTAL = sum(len(e["permanent"]) for e in EXPECTED.values())  # per message: 122
NAMED = {a.casefold() for e in EXPECTED.values() for a in e["permanent"] + e["temporary"]}


def score(parse: Callable[[bytes], Report]) -> tuple[int, int, set[str]]:
    """(permanent addresses flufl.bounce finds that mailer reads as permanent failures, how
    many flufl.bounce finds, the valid addresses mailer reports that flufl.bounce names not)."""
    found, other = 0, set()
    for name, expected in EXPECTED.items():
        report = parse(RAW[name])
        permanent = {r.recipient.casefold() for r in report.recipients
                     if r.recipient and r.severity == "permanent"}
        named = {r.recipient.casefold() for r in report.recipients if r.recipient}
        found += len({a.casefold() for a in expected["permanent"]} & permanent)
        other |= {a for a in named - NAMED if valid(a)}
    return found, TOTAL, other


def valid(address: str) -> bool:
    try:
        clean_address(address)
    except AddressError:
        return False
    return True


def test_the_corpus_is_complete() -> None:
    assert len(RAW) == 117
    assert TOTAL == 122


def test_mailer_finds_what_flufl_bounce_finds_and_no_one_else() -> None:
    found, total, other = score(reading.parse)
    assert found / total >= 0.97, (found, total)
    assert (found, total) == (122, 122)  # the measured figure (it was 89 of 122 before)
    assert other == set()


ORDERS = {
    "mailer alone": (rfc3464.recognise, receipts.rejection, receipts.read_receipt,
                     receipts.abuse_report, plaintext.recognise, autoreply.recognise,
                     plaintext.bounce_like),
    "library after the text reading": (
        rfc3464.recognise, receipts.rejection, receipts.read_receipt, receipts.abuse_report,
        plaintext.recognise, library.recognise, autoreply.recognise, plaintext.bounce_like),
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_the_library_goes_where_it_reads_best(
    order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision, by measurement: the chosen order finds more than every other."""
    chosen, _, _ = score(reading.parse)
    monkeypatch.setattr(reading, "RECOGNISERS", ORDERS[order])
    found, total, _ = score(reading.parse)
    assert found < chosen, f"{order}: {found} of {total}, chosen: {chosen}"


@pytest.mark.parametrize(
    ("name", "kind", "recipients"),
    [
        # a Dovecot quota rejection (an MDN "deleted"), not a read receipt
        ("simple_38.txt", "bounce", [("userx@example.com", "permanent", "mailbox full")]),
        # Mail.Ru's "user not found", marked auto-replied: a bounce, not an auto-reply
        ("simple_39.txt", "bounce", [("userx@example.ru", "permanent", "mailbox unknown")]),
        # "Delivery attempts will continue to be made": never permanent
        ("simple_22.txt", "bounce", [("User@example.org", "temporary", "delayed")]),
        ("simple_35.txt", "bounce", [("calvin@example.com", "temporary", "mailbox full")]),
        # AOL's "not accepting mail from <the list>": the recipient, blocked; not the list
        ("aol_01.txt", "bounce", [("screenname@aol.com", "permanent", "blocked or spam")]),
        # Postfix gave up after 30 attempts on a 4.4.4: permanent, expired
        ("simple_44.txt", "bounce", [("user@example.com", "permanent", "expired")]),
        # Original-Recipient (the address the list sent to), not where a forward led
        ("dsn_04.txt", "bounce", [("userx@example.ch", "permanent", "other")]),
        ("qmail_08.txt", "ignored", []),
    ],
)
def test_classified_as_stated(
    name: str, kind: str, recipients: list[tuple[str, str, str]]
) -> None:
    report = reading.parse(RAW[name])
    assert report.kind == kind
    assert [(r.recipient, r.severity, r.reason) for r in report.recipients] == recipients


_ADDRESS = re.compile(rb"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def test_importing_the_corpus_bounces_no_one_flufl_bounce_does_not_name(
    cli, database_url: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    """Every address any message names (senders, lists, originals' To, Received lines) is a
    subscriber with a delivery: a report tied to the wrong one would fail or bounce them."""
    everyone = sorted({address.decode().casefold() for raw in RAW.values()
                       for address in _ADDRESS.findall(raw) if valid(address.decode())})
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    (tmp_path / "liste.csv").write_text("email\n" + "\n".join(everyone) + "\n", "utf-8")
    assert cli("import", "liste.csv").code == 0
    assert cli("send", "closure-notice", "--outbox", "out").code == 0
    box = write_box(tmp_path / "flufl.mbox", list(RAW.values()))
    result = cli("bounces", "import", str(box), "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(Subscriber.email_key, Subscriber.status, Delivery.state)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)).all()
    engine.dispose()
    bounced = {row.email_key for row in rows if row.status == "bounced"}
    failed = {row.email_key for row in rows if row.state == "failed"}
    assert bounced <= PERMANENT, bounced - PERMANENT
    assert failed <= PERMANENT, failed - PERMANENT
    assert summary["subscribers_bounced"] == len(bounced) > 0
    # Each found address was tied and failed, but those of reports naming more than 5
    # recipients (never tied by address alone)
    crowded = {a.casefold() for e in EXPECTED.values() if len(e["permanent"]) > 5
               for a in e["permanent"]}
    assert len(failed) >= 0.97 * len((PERMANENT & set(everyone)) - crowded), (
        sorted((PERMANENT & set(everyone)) - crowded - failed))
