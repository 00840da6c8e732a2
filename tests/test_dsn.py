"""The bounce parser: each fixture's report, the severity rules, and parse() never raising."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.bounces.dsn import MAX_DIAGNOSTIC, MAX_SUBJECT, Report, parse

BOUNCES = Path(__file__).parent / "fixtures" / "bounces"
ALL_FIXTURES = sorted(p.name for p in BOUNCES.iterdir() if p.suffix in (".eml", ".bin"))
FIXTURE_BYTES = {name: (BOUNCES / name).read_bytes() for name in ALL_FIXTURES}


def mid(n: int) -> str:
    return f"<3f9a1c2b7d4e.{n}@asso.fr>"


@dataclass(frozen=True)
class Expected:
    kind: str
    format: str
    recipients: tuple[tuple[str | None, str, str | None, str | None], ...] = ()
    message_id: str | None = None  # the first of message_ids
    verp: str | None = None
    original: tuple[str, ...] = ()
    structured: bool = False


EXPECTED: dict[str, Expected] = {
    "rfc3464-postfix.eml": Expected(
        "bounce", "rfc3464", (("bob.martin@exemple.fr", "permanent", "5.1.1", "failed"),),
        mid(1001), original=("bob.martin@exemple.fr",), structured=True),
    # Original-Recipient is the address the list sent to (issue 13: Final-Recipient may be
    # where an alias led, the wrong pick in flufl.bounce's dsn_04 and dsn_17)
    "multi-recipient.eml": Expected(
        "bounce", "rfc3464",
        (("bureau@exemple.fr", "permanent", "5.2.2", "failed"),
         ("bureau@exemple.fr", "temporary", "4.4.1", "delayed")),
        mid(1002), original=("bureau@exemple.fr",), structured=True),
    "gmail-dsn.eml": Expected(
        "bounce", "gmail", (("camille.durand@exemple.fr", "permanent", "5.1.1", "failed"),),
        mid(1003), original=("camille.durand@exemple.fr",), structured=True),
    "gmail-legacy.eml": Expected(
        "bounce", "gmail", (("david.lefebvre@exemple.fr", "permanent", "5.1.1", None),),
        mid(1004), original=("david.lefebvre@exemple.fr",)),
    "exchange-ndr.eml": Expected(
        "bounce", "exchange", (("emma.garnier@outlook.fr", "permanent", "5.1.10", "failed"),),
        mid(1005), original=("emma.garnier@outlook.fr",), structured=True),
    "exchange-2003.eml": Expected(
        "bounce", "exchange", (("gerard.bonnet@mairie-exemple.fr", "permanent", "5.1.1", None),),
        mid(1006), original=("gerard.bonnet@mairie-exemple.fr",)),
    "qmail.eml": Expected(
        "bounce", "qmail", (("helene.fournier@exemple.fr", "permanent", "5.1.1", None),),
        mid(1007), original=("helene.fournier@exemple.fr",)),
    "delayed.eml": Expected(
        "bounce", "gmail", (("isabelle.girard@exemple.fr", "temporary", "4.4.7", "delayed"),),
        mid(1008), original=("isabelle.girard@exemple.fr",), structured=True),
    "autoreply-fr.eml": Expected("ignored", "autoreply", message_id=mid(1009)),
    "autoreply-outlook.eml": Expected("ignored", "autoreply", message_id=mid(1010)),
    "read-receipt.eml": Expected("ignored", "mdn", message_id=mid(1011),
                                 original=("laurent.chevalier@exemple.fr",)),
    "success-dsn.eml": Expected("ignored", "rfc3464", message_id=mid(1012),
                                original=("martine.robin@exemple.fr",), structured=True),
    "human-reply.eml": Expected("unrecognised", "unknown", message_id=mid(1013)),
    "broken-mime.eml": Expected(
        "bounce", "rfc3464", (("jerome.mercier@exemple.fr", "permanent", "5.1.1", "failed"),),
        mid(1014), original=("jerome.mercier@exemple.fr",), structured=True),
    "latin1-fr.eml": Expected(
        "bounce", "text", (("lucie.gauthier@exemple.fr", "permanent", "5.1.1", None),),
        mid(1015), original=("lucie.gauthier@exemple.fr",)),
    "verp.eml": Expected(
        "bounce", "exim", (("karine.blanc@exemple.fr", "permanent", "5.1.1", None),),
        mid(1016), verp="3f.AbCdEf", original=("karine.blanc@exemple.fr",)),
    "cp1252-nocharset.eml": Expected("unrecognised", "unknown", message_id=mid(1017)),
    "latin1-fr-qp.eml": Expected(
        "bounce", "text", (("olivier.perrin@exemple.fr", "temporary", "4.3.0", None),),
        mid(1018), original=("olivier.perrin@exemple.fr",)),
    "garbage.bin": Expected("unrecognised", "unknown"),
    "empty.eml": Expected("unrecognised", "unknown"),
}


def fixture(name: str) -> Report:
    return parse(FIXTURE_BYTES[name])


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(EXPECTED) == ALL_FIXTURES


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_report(name: str) -> None:
    expected = EXPECTED[name]
    report = fixture(name)
    assert report.kind == expected.kind
    assert report.format == expected.format
    got = tuple((r.recipient, r.severity, r.status, r.action) for r in report.recipients)
    assert got == expected.recipients
    assert (report.message_ids[0] if report.message_ids else None) == expected.message_id
    assert report.verp == expected.verp
    assert report.original_recipients == expected.original
    assert report.structured == expected.structured
    assert (report.reason == "") == (report.kind == "bounce")
    assert len(report.fingerprint) == 64


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("autoreply-fr.eml", "out-of-office auto-reply"),
        ("autoreply-outlook.eml", "out-of-office auto-reply"),
        ("read-receipt.eml", "read receipt (disposition notification)"),
        ("success-dsn.eml", "delivery notification of success"),
        ("human-reply.eml", "not a bounce: no status or failure text found"),
        ("cp1252-nocharset.eml", "not a bounce: no status or failure text found"),
        ("garbage.bin", "not an e-mail message: no header found"),
        ("empty.eml", "empty message"),
    ],
)
def test_reasons(name: str, reason: str) -> None:
    assert fixture(name).reason == reason


def test_postfix_report_details() -> None:
    report = fixture("rfc3464-postfix.eml")
    (recipient,) = report.recipients
    assert recipient.diagnostic == (
        "smtp; 550 5.1.1 <bob.martin@exemple.fr>: Recipient address rejected: "
        "User unknown in virtual mailbox table")
    assert recipient.smtp_code == 550
    assert report.subject == "Undelivered Mail Returned to Sender"
    assert report.date == datetime(2024, 3, 12, 9, 15, 4, tzinfo=UTC)
    assert report.fingerprint == hashlib.sha256(
        b"<20240312091504.4TvQ2N0b7Zz9sRk@mail.asso.fr>").hexdigest()
    assert report.message_ids == (mid(1001),)


def test_gmail_reports_the_original_once_from_every_source() -> None:
    # message/rfc822, X-Original-Message-ID, In-Reply-To and References all name the same one
    assert fixture("gmail-dsn.eml").message_ids == (mid(1003),)


def test_gmail_legacy_diagnostic_joins_the_multiline_reply() -> None:
    (recipient,) = fixture("gmail-legacy.eml").recipients
    assert recipient.diagnostic.startswith(
        "550 5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address")
    assert "550-" not in recipient.diagnostic
    assert recipient.smtp_code == 550


def test_exchange_subject_is_decoded() -> None:
    assert fixture("exchange-ndr.eml").subject == "Undeliverable: Réunion du bureau du 20 mars"
    (recipient,) = fixture("exchange-ndr.eml").recipients
    assert "RESOLVER.ADR.RecipientNotFound" in recipient.diagnostic


def test_exchange_2003_diagnostic() -> None:
    (recipient,) = fixture("exchange-2003.eml").recipients
    assert "#550 5.1.1 RESOLVER.ADR.RecipNotFound" in recipient.diagnostic


def test_qmail_diagnostic() -> None:
    (recipient,) = fixture("qmail.eml").recipients
    assert recipient.diagnostic == "Sorry, no mailbox here by that name. (#5.1.1)"
    assert recipient.smtp_code is None


def test_latin1_text_is_decoded() -> None:
    report = fixture("latin1-fr.eml")
    assert report.subject == "Échec de la remise du message"
    assert report.recipients[0].diagnostic == (
        "550 5.1.1 <lucie.gauthier@exemple.fr>... Adresse de destinataire inconnue")
    qp = fixture("latin1-fr-qp.eml")
    assert qp.subject == "Remise différée : Chasse aux oeufs de Pâques"
    assert "Erreur temporaire du système de fichiers" in qp.recipients[0].diagnostic


def test_windows_1252_without_charset() -> None:
    assert fixture("cp1252-nocharset.eml").subject == "Désinscription – merci"


def test_zone_less_date_is_utc() -> None:
    assert fixture("qmail.eml").date == datetime(2024, 3, 19, 15, 45, 7, tzinfo=UTC)


# --- Built messages: severity rules, signals, Message-IDs ---------------------------------------


def dsn(*blocks: str, subject: str = "Undelivered Mail Returned to Sender",
        headers: str = "", original: str = "Message-ID: <3f9a1c2b7d4e.77@asso.fr>\n",
        ds_type: str = "message/delivery-status") -> bytes:
    recipient_blocks = "\n".join(blocks)
    return (
        "From: MAILER-DAEMON@mail.asso.fr (Mail Delivery System)\n"
        "To: contact@asso.fr\n"
        f"Subject: {subject}\n"
        f"{headers}"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n'
        "\n"
        "--B\n"
        "Content-Type: text/plain\n\n"
        "This is the mail system at host mail.asso.fr.\n\n"
        "--B\n"
        f"Content-Type: {ds_type}\n\n"
        "Reporting-MTA: dns; mail.asso.fr\n\n"
        f"{recipient_blocks}\n"
        "--B\n"
        "Content-Type: text/rfc822-headers\n\n"
        f"{original}\n"
        "--B--\n"
    ).encode()


def block(recipient: str = "rfc822; bob@exemple.fr", action: str | None = "failed",
          status: str | None = "5.1.1", diagnostic: str | None = None) -> str:
    lines = [f"Final-Recipient: {recipient}"]
    if action is not None:
        lines.append(f"Action: {action}")
    if status is not None:
        lines.append(f"Status: {status}")
    if diagnostic is not None:
        lines.append(f"Diagnostic-Code: {diagnostic}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("action", "status", "diagnostic", "severity"),
    [
        ("failed", "5.1.1", None, "permanent"),
        ("failed", "4.4.7", None, "permanent"),  # the MTA gave up: still a failure
        ("delayed", "4.4.7", None, "temporary"),
        ("delayed", "5.0.0", None, "temporary"),
        (None, "5.2.1", None, "permanent"),
        (None, "4.2.2", None, "temporary"),
        (None, None, "smtp; 452 mailbox full", "temporary"),
        (None, None, "smtp; 550 no such user", "permanent"),
        (None, None, None, "permanent"),
        ("Failed", "5.1.1 (user unknown)", None, "permanent"),
    ],
)
def test_dsn_severity(action: str | None, status: str | None, diagnostic: str | None,
                      severity: str) -> None:
    report = parse(dsn(block(action=action, status=status, diagnostic=diagnostic)))
    assert report.kind == "bounce"
    assert report.recipients[0].severity == severity


@pytest.mark.parametrize("action", ["delivered", "relayed", "expanded"])
def test_success_actions_are_ignored(action: str) -> None:
    report = parse(dsn(block(action=action, status="2.0.0")))
    assert (report.kind, report.reason) == ("ignored", "delivery notification of success")


def test_mixed_report_keeps_only_the_failures() -> None:
    report = parse(dsn(block("rfc822; ok@exemple.fr", "delivered", "2.0.0"),
                       block("rfc822; bob@exemple.fr", "failed", "5.1.1")))
    assert [r.recipient for r in report.recipients] == ["bob@exemple.fr"]


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("rfc822; bob@exemple.fr", "bob@exemple.fr"),
        ("RFC822;<bob@exemple.fr>", "bob@exemple.fr"),
        ("bob@exemple.fr", "bob@exemple.fr"),
        ("rfc822; Bob.Martin@Exemple.FR", "Bob.Martin@Exemple.FR"),
        ("x400; /C=FR/ADMD= /PRMD=exemple/", None),
    ],
)
def test_final_recipient_forms(value: str, address: str | None) -> None:
    assert parse(dsn(block(value))).recipients[0].recipient == address


def test_original_recipient_when_no_final_recipient() -> None:
    raw = dsn("Original-Recipient: rfc822;bob@exemple.fr\nAction: failed\nStatus: 5.1.1\n")
    assert parse(raw).recipients[0].recipient == "bob@exemple.fr"


def test_diagnostic_falls_back_to_the_human_text() -> None:
    raw = dsn(block(status="5.1.1")).replace(
        b"This is the mail system at host mail.asso.fr.\n",
        b"<bob@exemple.fr>: host mx.exemple.fr[203.0.113.25] said: 550 5.1.1 unknown\n"
        b"    user (in reply to RCPT TO command)\n")
    assert parse(raw).recipients[0].diagnostic == (
        "host mx.exemple.fr[203.0.113.25] said: 550 5.1.1 unknown user (in reply to RCPT TO "
        "command)")


def test_global_delivery_status() -> None:
    report = parse(dsn(block("utf-8; élodie@exemple.fr"), ds_type="message/global-delivery-status"))
    assert report.kind == "bounce"
    assert report.recipients[0].recipient == "élodie@exemple.fr"


def test_message_ids_order_and_own_id_excluded() -> None:
    raw = dsn(block(), headers=(
        "Message-ID: <own@mail.asso.fr>\n"
        "In-Reply-To: <3f9a1c2b7d4e.78@asso.fr>\n"
        "References: <3f9a1c2b7d4e.1@asso.fr> <3f9a1c2b7d4e.79@asso.fr> <own@mail.asso.fr>\n"))
    assert parse(raw).message_ids == (
        "<3f9a1c2b7d4e.77@asso.fr>", "<3f9a1c2b7d4e.78@asso.fr>", "<3f9a1c2b7d4e.79@asso.fr>",
        "<3f9a1c2b7d4e.1@asso.fr>")


def test_message_id_line_in_a_non_standard_bounce() -> None:
    raw = (b"From: postmaster@exemple.fr\nTo: contact@asso.fr\nSubject: Returned mail\n\n"
           b"Your message could not be delivered to anne@exemple.fr (550 5.1.1 unknown).\n"
           b"Your message had Message-ID: <3f9a1c2b7d4e.80@asso.fr>\n")
    report = parse(raw)
    assert report.kind == "bounce"
    assert report.message_ids == ("<3f9a1c2b7d4e.80@asso.fr>",)
    assert report.recipients[0].recipient == "anne@exemple.fr"
    assert report.recipients[0].status == "5.1.1"


def test_text_part_holding_headers_is_the_original() -> None:
    raw = (b"From: Mail Delivery System <MAILER-DAEMON@relais.exemple.fr>\nTo: contact@asso.fr\n"
           b"Subject: Mail delivery failed\nMIME-Version: 1.0\n"
           b'Content-Type: multipart/mixed; boundary="X"\n\n'
           b"--X\nContent-Type: text/plain\n\nThe following address failed:\n\n"
           b"  marc@exemple.fr\n    550 5.1.2 domain not found\n\n"
           b"--X\nContent-Type: text/plain\nContent-Description: Undelivered Message Headers\n\n"
           b"Received: from mail.asso.fr by relais.exemple.fr\n"
           b"From: contact@asso.fr\nTo: Marc <marc@exemple.fr>\nSubject: Hello\n"
           b"Message-ID: <3f9a1c2b7d4e.81@asso.fr>\n\n--X--\n")
    report = parse(raw)
    assert report.message_ids == ("<3f9a1c2b7d4e.81@asso.fr>",)
    assert report.original_recipients == ("marc@exemple.fr",)
    assert [(r.recipient, r.status) for r in report.recipients] == [("marc@exemple.fr", "5.1.2")]


def test_text_bounce_keeps_the_address_as_written() -> None:
    raw = (b"From: MAILER-DAEMON@yahoo.com\nTo: contact@asso.fr\nSubject: Failure Notice\n\n"
           b"Sorry, we were unable to deliver your message to the following address.\n\n"
           b"<Anne.Dupont@Exemple.fr>:\n554: delivery error: dd This user doesn't have an "
           b"account (Anne.Dupont@Exemple.fr) [0] - mta1042.mail.exemple.fr\n")
    report = parse(raw)
    assert [(r.recipient, r.severity, r.smtp_code) for r in report.recipients] == [
        ("Anne.Dupont@Exemple.fr", "permanent", 554)]


def test_gmail_modern_text_without_delivery_status() -> None:
    raw = (b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\n"
           b"To: contact@asso.fr\nSubject: Delivery Status Notification (Failure)\n\n"
           b"** Address not found **\n\nYour message wasn't delivered to paul@exemple.fr because "
           b"the address couldn't be found, or is unable to receive mail.\n")
    report = parse(raw)
    assert report.format == "gmail"
    assert [(r.recipient, r.severity, r.status) for r in report.recipients] == [
        ("paul@exemple.fr", "permanent", None)]


@pytest.mark.parametrize(
    ("subject", "body", "severity", "status"),
    [
        ("failure notice", "I wasn't able to deliver your message. 452 4.2.2 mailbox full",
         "temporary", "4.2.2"),
        ("failure notice", "This is a permanent error. 452 4.2.2 mailbox full", "permanent",
         "4.2.2"),
        ("Undelivered Mail Returned to Sender", "Your message could not be delivered.",
         "permanent", None),
        ("Mail delivery failed", "Delivery has failed. Will retry for 3 days.", "temporary",
         None),
        ("Returned mail", "Delivery delayed. You'll be notified if the delivery fails "
         "permanently.", "temporary", None),
        ("Delivery Status Notification (Delay)", "could not be delivered: 550 5.1.1 unknown",
         "temporary", "5.1.1"),
        ("Message non remis", "Votre message n'a pas pu être remis définitivement : 451 4.3.0",
         "permanent", "4.3.0"),
        ("Échec de la remise", "La remise a été retardée, nouvelle tentative dans 1 heure.",
         "temporary", None),
        ("Undeliverable", "Delivery has failed: 554 transaction failed", "permanent", None),
        ("Undeliverable", "Delivery has failed: 421 try later", "temporary", None),
    ],
)
def test_text_severity(subject: str, body: str, severity: str, status: str | None) -> None:
    raw = (f"From: postmaster@exemple.fr\nTo: contact@asso.fr\nSubject: {subject}\n"
           "Content-Type: text/plain; charset=utf-8\n\n"
           f"{body}\n").encode()
    report = parse(raw)
    assert report.kind == "bounce"
    assert (report.recipients[0].severity, report.recipients[0].status) == (severity, status)


@pytest.mark.parametrize(
    "headers",
    [
        "Auto-Submitted: auto-replied\nSubject: Hello\n",
        "X-Autoreply: yes\nSubject: Hello\n",
        "X-Autorespond: Hello\nSubject: Hello\n",
        "Precedence: auto_reply\nSubject: Hello\n",
        "Subject: Out of Office: Hello\n",
        "Subject: Abwesenheitsnotiz: Hello\n",
        "Subject: Auto: Hello\n",
        "Subject: Absence du 2 au 12 avril\n",
        "Subject: =?utf-8?q?R=C3=A9ponse_automatique_=3A_Hello?=\n",
        # Outlook's out-of-office: no "auto-replied", but its rules loop header
        "Auto-Submitted: auto-generated\nX-MS-Exchange-Inbox-Rules-Loop: a@outlook.fr\n"
        "Subject: Hello\n",
    ],
)
def test_autoreplies(headers: str) -> None:
    raw = (f"From: Anne <anne@exemple.fr>\nTo: contact@asso.fr\n{headers}"
           "In-Reply-To: <3f9a1c2b7d4e.90@asso.fr>\n\nJe suis absente.\n").encode()
    report = parse(raw)
    assert (report.kind, report.format) == ("ignored", "autoreply")
    assert report.message_ids == ("<3f9a1c2b7d4e.90@asso.fr>",)


@pytest.mark.parametrize(
    "headers",
    [
        "X-Auto-Response-Suppress: All\n",  # Exchange puts it on ordinary mail
        "Auto-Submitted: auto-generated\n",  # DSNs and notifications carry it too
        "Auto-Submitted: no\n",
        "X-Autoreply: no\n",
    ],
)
def test_not_autoreply_signals(headers: str) -> None:
    raw = (f"From: Anne <anne@exemple.fr>\nTo: contact@asso.fr\nSubject: Re: AG\n{headers}"
           "\nMerci pour toutes ces années !\n").encode()
    assert parse(raw).kind == "unrecognised"


def test_bounce_with_auto_replied_header_is_a_bounce() -> None:
    raw = (b"From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@asso.fr>\n"
           b"To: contact@asso.fr\nAuto-Submitted: auto-replied\nSubject: Undeliverable: AG\n\n"
           b"Delivery has failed to these recipients or groups:\n\nsophie@exemple.fr\n"
           b"Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'\n")
    report = parse(raw)
    assert (report.kind, report.format) == ("bounce", "exchange")
    assert report.recipients[0].recipient == "sophie@exemple.fr"


def test_bounce_candidate_without_failure_text() -> None:
    raw = (b"From: postmaster@exemple.fr\nTo: contact@asso.fr\nSubject: Your mailbox\n\n"
           b"Your mailbox is 90% full.\n")
    report = parse(raw)
    assert report.kind == "unrecognised"
    assert report.reason == "bounce-like message but no failure text or status code found"


def test_human_text_with_failure_words_is_not_a_bounce() -> None:
    raw = (b"From: Anne <anne@exemple.fr>\nTo: contact@asso.fr\nSubject: Re: AG\n\n"
           b"Your last letter could not be delivered to my old address 550 5.1.1\n")
    assert parse(raw).kind == "unrecognised"


def test_abuse_report_is_a_complaint() -> None:
    # issue 13: an ARF abuse report is a complaint (it was "left for a human" before)
    raw = (b"From: staff@hotmail.com\nTo: contact@asso.fr\nSubject: complaint\nMIME-Version: 1.0\n"
           b'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\n\n'
           b"--F\nContent-Type: text/plain\n\nThis is an email abuse report.\n"
           b"--F\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n"
           b"User-Agent: Hotmail FBL\nVersion: 1\n\n"
           b"--F\nContent-Type: message/rfc822\n\nMessage-ID: <3f9a1c2b7d4e.91@asso.fr>\n"
           b"To: anne@hotmail.com\n\nHello\n--F--\n")
    report = parse(raw)
    assert (report.kind, report.format) == ("complaint", "arf")
    assert report.message_ids == ("<3f9a1c2b7d4e.91@asso.fr>",)
    # no Original-Rcpt-To: the complaint is about the delivery the Message-ID names, never
    # about the returned original's To
    assert [(r.recipient, r.reason) for r in report.recipients] == [(None, "complaint")]


@pytest.mark.parametrize(
    ("headers", "verp"),
    [
        ("To: bounces+7.XyZ@asso.fr\n", "7.XyZ"),
        ("Delivered-To: Bounces+abc-DEF_1@asso.fr\nTo: contact@asso.fr\n", "abc-DEF_1"),
        ("X-Original-To: bounces+tok@asso.fr\n", "tok"),
        ("Envelope-To: <bounces+env@asso.fr>\n", "env"),
        ("To: newsbounces+no@asso.fr\n", None),
        ("To: contact@asso.fr\n", None),
    ],
)
def test_verp(headers: str, verp: str | None) -> None:
    assert parse(dsn(block()).replace(b"To: contact@asso.fr\n", headers.encode())).verp == verp


def test_verp_is_not_read_from_the_original() -> None:
    raw = dsn(block(), original="Return-Path: <bounces+orig@asso.fr>\nMessage-ID: <x@asso.fr>\n")
    assert parse(raw).verp is None


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Tue, 12 Mar 2024 10:15:04 +0100", datetime(2024, 3, 12, 9, 15, 4, tzinfo=UTC)),
        ("12 Mar 2024 10:15:04 -0000", datetime(2024, 3, 12, 10, 15, 4, tzinfo=UTC)),
        ("not a date", None),
        ("Tue, 12 Mar 99999 10:15:04 +0100", None),
    ],
)
def test_dates(date: str, expected: datetime | None) -> None:
    assert parse(dsn(block(), headers=f"Date: {date}\n")).date == expected


def test_long_subject_and_diagnostic_are_cut_to_one_line() -> None:
    long_text = "mot " * 400
    raw = dsn(block(diagnostic=f"smtp; 550 5.1.1\n  {long_text}"),
              subject=f"Undelivered Mail\n {long_text}")
    report = parse(raw)
    assert len(report.subject) == MAX_SUBJECT
    assert len(report.recipients[0].diagnostic) == MAX_DIAGNOSTIC
    assert "\n" not in report.subject + report.recipients[0].diagnostic


# --- Fingerprint ------------------------------------------------------------------------------


def without_message_id(raw: bytes) -> bytes:
    return b"\n".join(line for line in raw.split(b"\n")
                      if not line.lower().startswith(b"message-id:"))


def test_fingerprint_is_the_message_id_when_present() -> None:
    raw = dsn(block(), headers="Message-ID:\n  <own@mail.asso.fr> \n")
    assert parse(raw).fingerprint == hashlib.sha256(b"<own@mail.asso.fr>").hexdigest()


def test_fingerprint_without_message_id() -> None:
    raw = without_message_id(FIXTURE_BYTES["qmail.eml"])
    assert parse(raw).fingerprint == hashlib.sha256(raw.rstrip(b"\n")).hexdigest()
    assert parse(raw).fingerprint != parse(raw + b"x").fingerprint


def mailbox_variants(raw: bytes) -> list[bytes]:
    lf = raw.replace(b"\r\n", b"\n")
    crlf = lf.replace(b"\n", b"\r\n")
    mbox = b"From MAILER-DAEMON Tue Mar 12 10:15:04 2024\n" + lf.replace(b"\nFrom ", b"\n>From ")
    return [lf, crlf, mbox, mbox + b"\n", crlf + b"\r\n"]


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_fingerprint_is_the_same_from_any_mailbox(name: str) -> None:
    for raw in (FIXTURE_BYTES[name], without_message_id(FIXTURE_BYTES[name])):
        reports = [parse(variant) for variant in mailbox_variants(raw)]
        assert len({r.fingerprint for r in reports}) == 1
        assert len({(r.kind, r.recipients, r.message_ids) for r in reports}) == 1


def test_body_from_lines_do_not_change_the_fingerprint() -> None:
    raw = b"Subject: x\n\nFrom here on\n>From there\n"
    quoted = b"Subject: x\n\n>From here on\n>>From there\n"
    assert parse(raw).fingerprint == parse(quoted).fingerprint


# --- Never raises -------------------------------------------------------------------------------


def check_invariants(report: Report) -> None:
    assert report.kind in ("bounce", "ignored", "unrecognised")
    assert (report.kind == "bounce") == bool(report.recipients)
    assert (report.reason == "") == (report.kind == "bounce")
    assert len(report.fingerprint) == 64
    assert len(report.subject) <= MAX_SUBJECT
    assert "\n" not in report.subject
    assert "\r" not in report.subject
    assert len(set(report.message_ids)) == len(report.message_ids)
    for message_id in report.message_ids:
        assert message_id.startswith("<")
        assert message_id.endswith(">")
    assert report.date is None or report.date.tzinfo is not None
    for recipient in report.recipients:
        assert len(recipient.diagnostic) <= MAX_DIAGNOSTIC
        assert "\n" not in recipient.diagnostic
        assert "\r" not in recipient.diagnostic
        assert recipient.severity in ("permanent", "temporary")
        assert recipient.recipient is None or "@" in recipient.recipient


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    check_invariants(parse(raw))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL_FIXTURES), st.data())
def test_never_raises_on_truncated_fixtures(name: str, data: st.DataObject) -> None:
    raw = FIXTURE_BYTES[name]
    cut = data.draw(st.integers(0, len(raw)))
    check_invariants(parse(raw[:cut]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ALL_FIXTURES), st.data())
def test_never_raises_on_flipped_bytes(name: str, data: st.DataObject) -> None:
    raw = bytearray(FIXTURE_BYTES[name])
    if raw:
        for _ in range(data.draw(st.integers(1, 30))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    check_invariants(parse(bytes(raw)))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ALL_FIXTURES), st.data())
def test_never_raises_on_spliced_fixtures(name: str, data: st.DataObject) -> None:
    raw = FIXTURE_BYTES[name]
    other = FIXTURE_BYTES[data.draw(st.sampled_from(ALL_FIXTURES))]
    at = data.draw(st.integers(0, len(raw)))
    start = data.draw(st.integers(0, len(other)))
    check_invariants(parse(raw[:at] + other[start:] + raw[at:]))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ALL_FIXTURES), st.booleans(), st.booleans())
def test_fingerprint_ignores_line_endings_and_from_line(name: str, crlf: bool,
                                                        from_line: bool) -> None:
    raw = without_message_id(FIXTURE_BYTES[name]).replace(b"\r\n", b"\n")
    variant = raw.replace(b"\n", b"\r\n") if crlf else raw
    if from_line:
        variant = b"From MAILER-DAEMON  Tue Mar 12 10:15:04 2024" + (
            b"\r\n" if crlf else b"\n") + variant
    assert parse(variant).fingerprint == parse(raw).fingerprint


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300))
def test_never_raises_on_text_in_a_bounce_shape(subject: str, body: str) -> None:
    raw = (f"From: MAILER-DAEMON@exemple.fr\nSubject: {subject}\n\n{body}\n").encode(
        "utf-8", "surrogatepass")
    check_invariants(parse(raw))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    "Final-Recipient: rfc822; bob@exemple.fr", "Action: failed", "Action: delayed",
    "Action: delivered", "Status: 5.1.1", "Status: 4.4.7", "Status: 2.0.0", "Status: x",
    "Diagnostic-Code: smtp; 550 x", "Original-Recipient: rfc822;", "", " continued", "junk",
]), max_size=20))
def test_never_raises_on_delivery_status_fields(lines: list[str]) -> None:
    report = parse(dsn("\n".join(lines)))
    check_invariants(report)
