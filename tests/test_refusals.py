"""Refusals about the sender's budget (quota, slow down) against the providers' own wordings."""

from __future__ import annotations

import pytest

from mailer.core.delivery import Stage
from mailer.sending.refusals import RULES, Refusal, _deciding_rule, classify, describe

B, S = Refusal.BUDGET, Refusal.SLOW_DOWN
C, M, R, D, E = Stage.CONNECT, Stage.MAIL, Stage.RCPT, Stage.DATA, Stage.DATA_END

CASES: list[tuple[int | None, str, Stage, Refusal | None]] = [
    # --- budget spent ---
    # Gmail (gen_smtp#140, PHPMailer#2113), and its three-line form (onepub#543).
    (550, "5.4.5 Daily user sending quota exceeded. o65sm25351206pga.71 - gsmtp", E, B),
    (550, "5.4.5 Daily user sending limit exceeded. For more information on Gmail\n"
          "5.4.5 sending limits go to\n5.4.5 https://support.google.com/a/answer/166852 "
          "d75a77b69052e-4535f85b3d9sm7257481cf.29 - gsmtp", E, B),
    (550, "5.4.5 Daily sending quota exceeded - gsmtp", M, B),
    # Google Workspace SMTP relay.
    (550, "5.4.5 Daily SMTP relay limit exceeded for user.", R, B),
    # Exchange Online: 10,000 recipients a day (the NDR docs), and its 5.1.90.
    (554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to "
          "process message due to a permanent exception with message Cannot submit message.",
     E, B),
    (550, "5.1.90 Your message can't be sent because you've reached your daily limit for "
          "message recipients", R, B),
    # Outlook.com / Hotmail accounts (nodejs-nodemailer-outlook#11).
    (554, "5.2.0 STOREDRV.Submission.Exception:OutboundSpamException; Failed to process message "
          "due to a permanent exception with message WASCL UserAction verdict is not None. "
          "Actual verdict is RefuseQuota, ShowTierUpgrade. OutboundSpamException: WASCL "
          "UserAction verdict is not None. Actual verdict is RefuseQuota, ShowTierUpgrade. "
          "[Hostname=VI1PR05MB5405.eurprd05.prod.outlook.com]", E, B),
    # Amazon SES, daily quota (action-center-platform#874; the 554 form too).
    (454, "Throttling failure: Daily message quota exceeded.", E, B),
    (554, "Throttling failure: Daily message quota exceeded.", E, B),
    # cPanel / Exim hourly limits (cPanel forums, hosts' knowledge bases).
    (550, "Domain example.org has exceeded the max emails per hour (100/100 (100%)) allowed.  "
          "Message discarded.", R, B),
    (550, "Domain example.org has exceeded the max defers and failures per hour (5/5 (100%)) "
          "allowed. Message discarded.", R, B),
    # SendGrid: at AUTH (mautic#8721), and after MAIL FROM (WA-WF-Bot-Public#282).
    (451, "Authentication failed: Maximum credits exceeded", C, B),
    (451, "You've exceeded your messaging limits", M, B),
    # Mailgun (timeoverflow#820): a 421 worded as a budget.
    (421, "Domain example.org is not allowed to send: recipient limit exceeded, try again after "
          "Sun, 05 Oct 2025 19:22:44 UTC", D, B),
    # Postfix policy services: policyd, cluebringer's Quotas module.
    (450, "4.7.1 <alice@example.org>: Recipient address rejected: Policy Rejection- Quota "
          "Exceeded", R, B),
    (450, "4.7.1 <alice@example.org>: Recipient address rejected: Policy rejection; Message "
          "count quota exceeded", R, B),
    # French hosts: OVH, and the wordings of French relays.
    (550, "5.7.1 Quota d'envoi dépassé", M, B),
    (451, "4.7.1 Vous avez atteint la limite d'envoi", R, B),
    (451, "4.7.1 Vous avez atteint votre limite d'envoi quotidienne", R, B),
    (550, "5.7.0 Trop de messages envoyés aujourd'hui", E, B),
    # A relay's quota at the end of DATA (AVideo#7527): "over your relay quota" is ours.
    (552, "C13ypH3DXQO9CC140p6S9y Message would take you over your relay quota of 500 Current "
          "quota used: 487", E, B),
    # The rule's own examples: a 421 and a 4.5.3 worded as a budget.
    (421, "4.7.0 Daily quota exceeded", M, B),
    (452, "4.5.3 Too many recipients: daily quota exceeded", R, B),
    # --- slow down ---
    # Gmail: greeting, reputation rate limit, login attempts, TempFail.
    (421, "4.7.0 Try again later, closing connection. (EHLO)\n4.7.0 For more information, go "
          "to\n4.7.0 https://support.google.com/a/answer/3221692 3f1490d57ef6 - gsmtp", C, S),
    (421, "4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail "
          "originating from your IP address. To protect our users from spam, mail sent from "
          "your IP address has been temporarily rate limited. Please visit "
          "https://support.google.com/mail/?p=UnsolicitedRateLimitError to review our Bulk "
          "Email Senders Guidelines. - gsmtp", R, S),
    (421, "4.7.0 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail", E, S),
    (421, "4.7.0 Temporary System Problem.  Try again later (10). - gsmtp", D, S),
    (454, "4.7.0 Too many login attempts, please try again later. 3f1490d57ef6 - gsmtp", C, S),
    (451, "4.7.1 Try again later, closing connection. Learn more at\n"
          "4.7.1 https://support.google.com/mail/?p=TempFail", E, S),
    # Microsoft: connections, Exchange Online's forest and thread limits, Exchange's message
    # rate limit, EOP's "Server busy".
    (421, "too many concurrent SMTP connections", C, S),
    (421, "4.3.2 The maximum number of concurrent connections per resource forest has exceeded "
          "a limit, closing transmission channel. example.com. PRX8 [example.com]", C, S),
    (432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", M, S),
    (421, "4.4.2 Message submission rate for this client has exceeded the configured limit",
     M, S),
    (451, "4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77714) "
          "[DB1PEPF000509EF.eurprd03.prod.outlook.com]", R, S),
    # Amazon SES, per-second rate.
    (454, "Throttling failure: Maximum sending rate exceeded.", E, S),
    # Orange / Wanadoo and La Poste (sisimai#240, #243, #353).
    (421, "mwinf5c10 ME Service refusé, veuillez réessayer plus tard. OFR004_104 [104]", C, S),
    (421, "mwinf5c27 ME\nTrop de connexions, veuillez verifier votre configuration. Too many\n"
          "connections, slow down. OFR004_104 [104]", C, S),
    (421, "4.2.0 Service refuse. Veuillez essayer plus tard. Service refused, please try "
          "later. OFR005_505 [505]", E, S),
    (421, "4.2.1 Service refuse. Veuillez essayer plus tard. Service refused, please try "
          "later. LPN007_505", E, S),
    # Yahoo / Verizon Media (SMTP Field Manual).
    (421, "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to user complaints "
          "- 4.16.55.1; see https://help.yahoo.com/kb/postmaster/SLN3434.html", R, S),
    (421, "Max message per connection reached, closing transmission channel", E, S),
    # Mailgun: any 421 is a slow-down (the dispatcher stops the run if it keeps coming).
    (421, "Domain sandbox123.mailgun.org is not allowed to send: Please activate your Mailgun "
          "account. Check your inbox or log in to your control panel to resend the activation "
          "email.", M, S),
    (421, "4.3.2 Service shutting down", D, S),
    # Postfix anvil limits, policyd-rate-limit's default, rate-limited relays.
    (421, "4.7.0 mail.example.org Error: too many connections from 192.0.2.1", C, S),
    (450, "4.7.1 Error: too much mail from 192.0.2.1", M, S),
    (450, "4.7.1 Error: too many recipients from 192.0.2.1", R, S),
    (450, "4.7.1 <bob@example.org>: Recipient address rejected: Rate limit reach, retry later",
     R, S),
    (451, "4.7.1 Sender rate limit exceeded", M, S),
    (451, "4.7.1 rate limited", R, S),
    (452, "4.5.3 Too many recipients", R, S),
    # --- never the sender's budget ---
    (None, "connection lost", E, None),
    (None, "timed out", C, None),
    (250, "2.0.0 Ok: queued as 4XyZ", E, None),
    # The recipient's mailbox, even worded "quota" or "exceeded".
    (552, "5.2.2 mailbox full", R, None),
    (452, "4.2.2 The email account that you tried to reach is over quota. Please direct the "
          "recipient to https://support.google.com/mail/?p=OverQuotaTemp - gsmtp", R, None),
    (550, "5.2.2 user is over quota", R, None),
    (552, "5.1.1 Boite du destinataire pleine. Recipient overquota. OFR_417 [417]", R, None),
    (552, "boîte pleine", R, None),
    # Dovecot's quota_exceeded_message, with and without its status.
    (552, "5.2.2 <alice@example.org> Quota exceeded (mailbox for user is full)", E, None),
    (452, "Quota exceeded (mailbox for user is full)", E, None),
    (554, "5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException."
          "MapiExceptionShutoffQuotaExceeded; Failed to process message due to a permanent "
          "exception with message Cannot open mailbox.", E, None),
    (450, "4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
          "additional messages from being delivered. Please resend your message at a later "
          "time. - gsmtp", R, None),
    (450, "4.2.1 The recipient has exceeded message rate limit. Try again later.", R, None),
    (450, "4.7.3 Organization queue quota exceeded. [outlook.com]", R, None),
    (552, "<alice@example.se> Domain size limit exceeded", R, None),
    (552, "5.2.3 Your message exceeded Google's message size limits. Please visit "
          "https://support.google.com/mail/?p=MaxSizeError to view our size guidelines. - gsmtp",
     E, None),
    # No such user or domain.
    (550, "5.1.1 The email account that you tried to reach does not exist. Please try\n"
          "5.1.1 double-checking the recipient's email address for typos or\n"
          "5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser - gsmtp",
     R, None),
    (550, "5.1.2 <alice@example.invalid>: Recipient address rejected: Domain not found", R, None),
    (550, "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     R, None),
    # Greylisting: per recipient, although "try again later" with a 4.7.1.
    (450, "4.7.1 greylisted, try again later", R, None),
    (450, "4.2.0 <alice@example.org>: Recipient address rejected: Greylisted, see "
          "http://postgrey.schweikert.ch/help/example.org.html", R, None),
    (451, "4.7.1 Please try again later (greylisting)", R, None),
    (451, "4.7.1 <alice@example.org>: Recipient address rejected: Greylisted for 5 minutes",
     R, None),
    # Relaying, the sender's address, spam, login: other refusals, not a budget.
    (554, "5.7.1 <alice@example.org>: Relay access denied", R, None),
    (550, "5.7.1 sender address rejected: not allowed to send from this address", M, None),
    (550, "5.7.1 Message rejected as spam", E, None),
    (553, "5.7.1 <news@asso.fr>: Sender address rejected: not owned by user alice@asso.fr",
     M, None),
    (530, "5.7.0 Authentication required", M, None),
    (535, "5.7.8 Username and Password not accepted. Learn more at\n"
          "5.7.8 https://support.google.com/mail/?p=BadCredentials - gsmtp", C, None),
    (554, "5.7.9 Message not accepted for policy reasons. See "
          "https://senders.yahooinc.com/error-codes", E, None),
    # Ordinary deferrals: no 4.7.x, not a 421.
    (451, "4.3.0 temporary failure, try again later", R, None),
    (451, "4.3.0 message deferred, try again later", E, None),
    (451, "4.3.0 Mail server temporarily rejected message. - gsmtp", E, None),
]


@pytest.mark.parametrize(("code", "text", "stage", "expected"), CASES)
def test_providers_wordings(code: int | None, text: str, stage: Stage,
                            expected: Refusal | None) -> None:
    assert classify(code, text, stage) is expected


def test_every_row_decides_some_case() -> None:
    deciding = {_deciding_rule(code, text) for code, text, _, _ in CASES}
    dead = [rule.name for rule in RULES if rule not in deciding]
    assert not dead, f"no case is decided by {dead}"


def test_row_names_are_unique() -> None:
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))


def test_every_stage_is_covered() -> None:
    assert {stage for _, _, stage, _ in CASES} == set(Stage)


@pytest.mark.parametrize("stage", list(Stage))
def test_stage_does_not_change_the_verdict(stage: Stage) -> None:
    assert classify(421, "4.3.2 Service shutting down", stage) is S
    assert classify(421, "4.7.0 Daily sending quota exceeded", stage) is B
    assert classify(None, "connection lost", stage) is None
    assert classify(250, "2.1.5 Ok", stage) is None


@pytest.mark.parametrize("status", ["5.1.1", "5.1.2", "5.1.10", "4.2.1", "4.2.2", "5.2.1",
                                    "5.2.2"])
@pytest.mark.parametrize("words", ["Daily sending quota exceeded", "Sender rate limit exceeded",
                                   "Too many connections, try again later",
                                   "Limite d'envoi atteinte", "Too many messages"])
def test_a_mailbox_status_is_the_recipients_whatever_the_words(status: str, words: str) -> None:
    code = 550 if status.startswith("5") else 450
    assert classify(code, f"{status} {words}", Stage.RCPT) is None


@pytest.mark.parametrize(("code", "plain", "accented", "expected"), [
    (550, "5.7.1 QUOTA D'ENVOI DEPASSE", "5.7.1 Quota d’envoi dépassé", B),
    (451, "4.7.1 service refuse, veuillez reessayer plus tard",
     "4.7.1 Service refusé, veuillez réessayer plus tard", S),
    (550, "5.7.0 trop de messages envoyes aujourd'hui",
     "5.7.0 Trop de messages envoyés aujourd’hui", B),
])
def test_case_and_accents_do_not_matter(code: int, plain: str, accented: str,
                                        expected: Refusal) -> None:
    assert classify(code, plain, Stage.RCPT) is expected
    assert classify(code, accented, Stage.RCPT) is expected


def test_undecodable_bytes_still_match() -> None:
    # aiosmtplib decodes with surrogateescape: a Latin-1 "é" stays a lone surrogate.
    text = b"4.7.1 Service refus\xe9, veuillez r\xe9essayer plus tard".decode(
        "utf-8", "surrogateescape")
    assert classify(451, text, Stage.RCPT) is S


def test_describe() -> None:
    assert describe(B) == "quota"
    assert describe(S) == "throttling"
