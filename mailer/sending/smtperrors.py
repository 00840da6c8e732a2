"""aiosmtplib's exceptions translated, in this one place: each becomes either this message's
`Reply` (a refusal, a timeout, a lost connection) or a MailerError that stops the whole run
(unreachable relay: RelayTemporaryError; TLS, credentials or a refused sender: ConfigError).
"""

from __future__ import annotations

import base64
import socket
import ssl
from dataclasses import replace

from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from mailer.core.delivery import Reply, Stage
from mailer.core.errors import ConfigError, MailerError, RelayRefusedError, RelayTemporaryError
from mailer.sending.refusals import classify

# What translate_smtp_error is caught around: aiosmtplib's root, plus the ssl and socket
# errors that aiosmtplib lets through (ssl.SSLError and TimeoutError are OSErrors).
SMTP_ERRORS: tuple[type[Exception], ...] = (SMTPException, OSError)
# Every exception class aiosmtplib exports, each reviewed in translate_smtp_error; a test
# fails when a new aiosmtplib version adds one that is not listed here.
KNOWN_SMTP_ERRORS: frozenset[type[Exception]] = frozenset({
    SMTPAuthenticationError, SMTPConnectError, SMTPConnectResponseError,
    SMTPConnectTimeoutError, SMTPDataError, SMTPException, SMTPHeloError, SMTPNotSupported,
    SMTPReadTimeoutError, SMTPRecipientRefused, SMTPRecipientsRefused, SMTPResponseException,
    SMTPSenderRefused, SMTPServerDisconnected, SMTPTimeoutError,
})
_COMMANDS = {
    Stage.CONNECT: "the greeting, EHLO, STARTTLS or AUTH",
    Stage.MAIL: "MAIL FROM",
    Stage.RCPT: "RCPT TO",
    Stage.DATA: "DATA",
    Stage.DATA_END: "the message (after the final dot)",
}
TLS_HINT = "check smtp_security (tls for port 465, starttls for 587) and smtp_ca_file"
LOGIN_HINT = (
    "set MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD (or MAILER_SMTP_PASSWORD_FILE), or "
    "username and password_env in a [[relay]] of mailer.toml"
)
_CORE_MIN = 8  # base64 fragments shorter than this are not scrubbed (they match too much)


def secret_forms(secret: str) -> list[str]:
    """The forms a relay may echo a password in, longest first: as is; in base64 (AUTH LOGIN
    sends it so); and, for each of the three alignments, the base64 characters made of its
    bytes alone, which appear wherever it sits inside a longer base64 string (AUTH PLAIN's
    `\0user\0password`)."""
    raw = secret.encode("utf-8")
    whole = base64.b64encode(raw).decode("ascii")
    forms = {secret, whole, whole.rstrip("=")}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        core = encoded[-(-8 * shift // 6): 8 * (shift + len(raw)) // 6]
        if len(core) >= _CORE_MIN:
            forms.add(core)
    return sorted((form for form in forms if form), key=len, reverse=True)


def _scrub(text: str, secret: str | None) -> str:
    if not secret:
        return text
    for form in secret_forms(secret):
        text = text.replace(form, "***")
    return text


def _wants_login(code: int, message: str) -> bool:
    """530 5.7.0 (RFC 4954): the relay accepts mail only after AUTH."""
    lowered = message.lower()
    return code == 530 or (code >= 500 and "authentication required" in lowered)


def _login_error(relay: str, code: int, message: str) -> ConfigError:
    return ConfigError(
        f"the relay {relay} wants a login (SMTP AUTH) before it accepts mail: {code} {message}",
        hint=LOGIN_HINT,
    )


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind `exc` (aiosmtplib wraps it when TLS fails while connecting)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _os_reason(exc: BaseException) -> str:
    """`connection refused`, `timed out`, ...: the socket reason behind a connect failure."""
    cause = exc.__cause__ if isinstance(exc, SMTPException) else exc
    if isinstance(cause, SMTPServerDisconnected):
        return "it closed the connection before its greeting"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, TimeoutError):
        return "timed out"
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host name ({cause.strerror})"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return str(exc) or type(exc).__name__


def translate_smtp_error(
    exc: Exception,
    stage: Stage,
    *,
    relay: str,
    secret: str | None = None,
    timeout: float | None = None,
) -> Reply | MailerError:
    """The one translation of aiosmtplib (and ssl/socket) exceptions.

    At Stage.CONNECT everything is whole-run trouble: a MailerError to raise. Inside a
    transaction, what concerns this message is a Reply; a refused sender, refused
    credentials and TLS failures are still whole-run errors. `secret` (the password) is
    replaced by *** wherever it would appear.
    """
    outcome = _translate(exc, stage, relay=relay, timeout=timeout)
    if stage is Stage.CONNECT and isinstance(outcome, MailerError):
        outcome = _refused(exc, outcome) or outcome
    if isinstance(outcome, Reply):
        return replace(outcome, text=_scrub(outcome.text, secret))
    hint = _scrub(outcome.hint, secret) if outcome.hint else None
    if isinstance(outcome, RelayRefusedError):
        return RelayRefusedError(_scrub(outcome.message, secret), kind=outcome.kind,
                                 reply=_scrub(outcome.reply, secret), hint=hint)
    return type(outcome)(_scrub(outcome.message, secret), hint=hint)


def _refused(exc: Exception, error: MailerError) -> RelayRefusedError | None:
    """A refusal at connect time (greeting, EHLO, AUTH) worded as the relay's budget: not a
    configuration problem, and not a mere outage (the relay is paused)."""
    if not isinstance(exc, SMTPResponseException) or exc.code < 0:
        return None
    message = str(exc.message or "")
    kind = classify(exc.code, message, Stage.CONNECT)
    if kind is None:
        return None
    return RelayRefusedError(error.message, kind=kind.value,
                             reply=f"{exc.code} {message}".strip(), hint=error.hint)


def _translate(
    exc: Exception, stage: Stage, *, relay: str, timeout: float | None
) -> Reply | MailerError:
    """translate_smtp_error without the scrubbing; most specific classes first."""
    message = str(getattr(exc, "message", "") or exc)
    waited = f" within {timeout:g} s" if timeout is not None else ""
    command = "EHLO" if isinstance(exc, SMTPHeloError) else _COMMANDS[stage]

    tls_error = _ssl_error(exc)
    if isinstance(tls_error, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
        tls_error = None  # the connection dropped during TLS: not a configuration problem
    if tls_error is not None and (stage is Stage.CONNECT or not isinstance(exc, SMTPException)):
        if isinstance(tls_error, ssl.SSLCertVerificationError):
            reason = tls_error.verify_message or tls_error.reason or str(tls_error)
            return ConfigError(
                f"cannot verify the TLS certificate of the relay {relay}: {reason}",
                hint="set smtp_ca_file to the CA that signed the relay's certificate",
            )
        reason = tls_error.reason or str(tls_error)
        return ConfigError(f"TLS with the relay {relay} failed: {reason}", hint=TLS_HINT)

    if isinstance(exc, SMTPAuthenticationError):
        text = f"{exc.code} {message}"
        if 400 <= exc.code < 500:
            return RelayTemporaryError(f"the relay {relay} cannot check credentials now: {text}")
        return ConfigError(
            f"the relay {relay} refuses the SMTP credentials: {text}",
            hint="check MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD",
        )
    if (isinstance(exc, SMTPResponseException) and stage is not Stage.DATA_END
            and not isinstance(exc, SMTPAuthenticationError) and _wants_login(exc.code, message)):
        return _login_error(relay, exc.code, message)
    if isinstance(exc, SMTPRecipientsRefused) and any(
        _wants_login(r.code, r.message) for r in exc.recipients
    ):
        refusal = next(r for r in exc.recipients if _wants_login(r.code, r.message))
        return _login_error(relay, refusal.code, refusal.message)
    if isinstance(exc, SMTPSenderRefused) and stage is not Stage.CONNECT:
        # 552 at MAIL is the SIZE check (the message, not the sender); a quota refusal at
        # MAIL is the relay's budget (a Reply the dispatcher classifies), not a wrong sender.
        if 500 <= exc.code < 600 and exc.code != 552 and classify(
            exc.code, message, Stage.MAIL
        ) is None:
            return ConfigError(
                f"the relay {relay} refuses the sender {exc.sender}: {exc.code} {message}",
                hint="set a sender the relay accepts (the campaign's From, or MAILER_FROM)",
            )
        return Reply(exc.code, message, Stage.MAIL)
    if isinstance(exc, SMTPRecipientRefused) and stage is not Stage.CONNECT:
        return Reply(exc.code, message, Stage.RCPT)
    if isinstance(exc, SMTPRecipientsRefused) and stage is not Stage.CONNECT:
        first = exc.recipients[0] if exc.recipients else None
        if first is None:
            return Reply(None, "the relay refused every recipient", Stage.RCPT)
        return Reply(first.code, first.message, Stage.RCPT)
    if isinstance(exc, SMTPConnectTimeoutError):
        if isinstance(exc.__cause__, SMTPTimeoutError):  # connected, but no greeting
            return RelayTemporaryError(f"the relay {relay} does not answer: no greeting{waited}")
        return RelayTemporaryError(f"cannot connect to the relay {relay}: timed out{waited}")
    if isinstance(exc, SMTPConnectResponseError):
        return RelayTemporaryError(
            f"the relay {relay} is not ready: it greets with {exc.code} {message}"
        )
    if isinstance(exc, SMTPConnectError):
        return RelayTemporaryError(f"cannot connect to the relay {relay}: {_os_reason(exc)}")
    if isinstance(exc, SMTPResponseException):  # SMTPDataError, SMTPHeloError, RSET, STARTTLS
        if exc.code < 0:  # aiosmtplib's "invalid response": the session is out of step
            if stage is Stage.CONNECT:
                return RelayTemporaryError(f"the relay {relay} sent an invalid reply: {message}")
            return Reply(None, f"connection lost: invalid reply from the relay: {message}", stage)
        if stage is not Stage.CONNECT:
            return Reply(exc.code, message, stage)
        text = f"the relay {relay} refuses {command}: {exc.code} {message}"
        if exc.code < 500:
            return RelayTemporaryError(text)
        return ConfigError(text)
    if isinstance(exc, (SMTPTimeoutError, TimeoutError)):  # incl. SMTPReadTimeoutError
        if stage is Stage.CONNECT:
            return RelayTemporaryError(f"the relay {relay} does not answer {command}{waited}")
        return Reply(None, f"timed out: no reply to {command}{waited}", stage)
    if isinstance(exc, (SMTPServerDisconnected, OSError)):
        reason = message if isinstance(exc, SMTPException) else _os_reason(exc)
        if stage is Stage.CONNECT:
            return RelayTemporaryError(
                f"the relay {relay} closed the connection during {command}: {reason}"
            )
        return Reply(None, f"connection lost during {command}: {reason}", stage)
    if isinstance(exc, SMTPNotSupported):
        if stage is Stage.CONNECT:
            return ConfigError(f"the relay {relay} does not support it: {message}")
        return Reply(553, f"the relay does not support it: {message}", stage)
    if isinstance(exc, SMTPException):  # the root: STARTTLS or AUTH not offered, ...
        if stage is Stage.CONNECT:
            return ConfigError(f"the relay {relay}: {message}")
        return Reply(None, f"connection lost: {message}", stage)
    raise TypeError(f"not an SMTP error: {exc!r}") from exc


def whole_run_error(
    exc: Exception, *, relay: str, secret: str | None, timeout: float
) -> MailerError:
    """A failure while connecting: there, every error stops the whole run."""
    outcome = translate_smtp_error(exc, Stage.CONNECT, relay=relay, secret=secret, timeout=timeout)
    assert isinstance(outcome, MailerError)
    return outcome
