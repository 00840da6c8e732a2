"""`mailer send` and `mailer retry`: deliveries claimed from the store, rendered,
handed to a transport (an SMTP relay or the outbox folder), and recorded, never twice.

The pure policy decides what each reply means; the dispatcher runs one process's loop; the
workers fork it; the run owns one whole send. aiosmtplib is imported only when a run opens
its SMTP transport.

Imports `mailer.core`, `mailer.store`, `mailer.imports` and `mailer.messages`.
"""
