"""The one exception tree of mailer; each class carries the exit code the CLI returns.

    MailerError                   exit 1   anything the user must fix
    ├── InputError                exit 1   unreadable CSV, missing email column, bad option
    │   ├── AddressError          exit 1   an address that does not validate (email-validator)
    │   ├── TemplateError         exit 1   a template that does not compile or render (Jinja2)
    │   ├── RecipientError        exit 1   a subscriber whose data cannot make a valid message
    │   └── PreflightFailed       exit 1   some messages cannot be made: nothing was sent
    │                                      (mailer.sending.run: it carries the report)
    ├── NotFoundError             exit 1   unknown subscriber, campaign or token
    ├── ConfigError               exit 78  bad configuration (settings, secrets, credentials, TLS)
    ├── SchemaError               exit 78  database of another schema than this code knows
    ├── DatabaseError             exit 75  the database could not be reached or is locked; try again
    ├── RelayTemporaryError       exit 75  the relay is unreachable or throttling the whole run
    │   └── RelayRefusedError     exit 75  the relay refuses for its own budget (quota spent, or
    │                                      it keeps saying slow down): nothing was marked
    │                                      failed; the relay is paused until the next try
    ├── MailboxUnavailableError   exit 75  the IMAP server is unreachable or the connection broke
    ├── WorkerError               exit 75  a sending worker process died; retry resends its share
    └── WorkerReportedError       exit of the worker's error: a MailerError raised in a worker
                                  process, raised again in the parent

Foreign exceptions are translated at one point each, with `raise ... from exc`, the message
naming the file and line, the setting or the host: csv and file errors in
mailer.imports.csvsource, email-validator in mailer.core.addresses, Jinja2 in
mailer.messages.render, SQLAlchemy in mailer.store.engine (an engine `handle_error` hook, so
no call site wraps its statements), aiosmtplib in mailer.sending.smtperrors, imaplib in the IMAP
reader of mailer.bounces. Bugs are not wrapped: they crash loudly. A test checks that every
MailerError subclass in the package is drawn here.
"""

from __future__ import annotations

EX_USAGE_OR_INPUT = 1
EX_TEMPFAIL = 75
EX_CONFIG = 78


class MailerError(Exception):
    """Something the user can act on; printed as one line `Error: ...` (plus an optional hint)."""

    exit_code: int = EX_USAGE_OR_INPUT

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InputError(MailerError):
    """Bad input or usage: an unreadable file, a missing column, an invalid option value."""


class AddressError(InputError):
    """The reason an address was refused, worded for the rejects report; callers that know
    where the address came from (a setting, a file) say so in their own error."""


class TemplateError(InputError):
    """A template that does not compile or does not render: file, line and reason."""


class RecipientError(InputError):
    """A subscriber whose data cannot make a valid message (an address that breaks a header)."""


class NotFoundError(MailerError):
    """A subscriber, campaign or token that does not exist."""


class ConfigError(MailerError):
    """A bad setting, a secret where secrets must not be, refused credentials or missing TLS."""

    exit_code = EX_CONFIG


class SchemaError(MailerError):
    """The database was written by a newer mailer, or is not a mailer database at all."""

    exit_code = EX_CONFIG


class DatabaseError(MailerError):
    """The database is unreachable or stays locked: temporary, run again later."""

    exit_code = EX_TEMPFAIL


class RelayTemporaryError(MailerError):
    """The relay is unreachable, timing out or throttling the whole run: run again later."""

    exit_code = EX_TEMPFAIL


class RelayRefusedError(RelayTemporaryError):
    """The relay refuses for the sender's budget (`kind`: "quota" or "throttling"), in its own
    words (`reply`): the run stops, nobody is marked failed, and the relay is paused."""

    def __init__(self, message: str, *, kind: str, reply: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind
        self.reply = reply


class MailboxUnavailableError(MailerError):
    """The IMAP server of `bounces import` is unreachable, times out or drops the connection."""

    exit_code = EX_TEMPFAIL


class WorkerError(MailerError):
    """A sending worker process died: what it held is retried once its lease expires."""

    exit_code = EX_TEMPFAIL


class WorkerReportedError(MailerError):
    """A MailerError raised in a worker process, carried back and raised again in the parent
    with the worker's exit code, message and hint."""

    def __init__(self, exit_code: int, message: str, hint: str | None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code
