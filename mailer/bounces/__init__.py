"""`mailer bounces import`: a mailbox (mbox, Maildir, IMAPS) read as a stream of
messages, each read as a bounce report, matched to the delivery it concerns and recorded.

Imports `mailer.core` and `mailer.store`.
"""
