"""The core every stage shares: errors (the one tree), states, the clock, settings,
tokens, address cleaning, RFC 3463 status codes, and the value types that pass between
stages (`delivery`: Submission, Reply, Stage, Transport; `people`: Candidate, Recipient).

Imports nothing of mailer outside `core`; no SQL, no SMTP, no templates.
"""
