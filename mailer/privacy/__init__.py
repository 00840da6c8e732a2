"""Retention: `mailer purge` (finished campaigns, all personal data) and the rules of
what may be removed when; the statements themselves live in `mailer.store.purge`.

Imports `mailer.core` and `mailer.store`.
"""
