"""`mailer import`: a CSV file as people really export it, to subscribers.

`csvsource` reads records (encoding, delimiter, quoting) over `lines`, which bounds every
line and record, `columns` maps the header to fields, `records` turns one record into a
Candidate or a Rejection, `rejects` writes the `--rejects` file, and `run` is one import:
records -> batches -> the store -> a report.

Imports `mailer.core` and `mailer.store`.
"""
