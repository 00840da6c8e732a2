"""`mailer send` and `mailer retry`: deliveries claimed from the store, rendered,
handed to a transport (an SMTP relay or the outbox folder), and recorded, never twice.

The run (`run.SendRun`) owns one whole send or retry: its transport, its message factory, its
worker processes (`workers`) and its stopping (`stopping`). The dispatcher runs one process's
loop, its recorder the database side of it; the pure policy decides what each reply means.
aiosmtplib is imported only when a run opens its SMTP transport (`smtp`, `smtperrors`, `wire`).

Imports `mailer.core`, `mailer.store`, `mailer.imports` and `mailer.messages`.
"""
