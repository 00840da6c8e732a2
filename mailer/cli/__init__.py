"""The `mailer` command line: parse, call one api function, print, exit with the contract's code.

No SQL or SMTP here, and nothing past `mailer.api` and `mailer.core`. Errors are MailerError
only: one line `Error: ...` (and a `Hint: ...`) on standard error, never a traceback. Results
go to standard output; progress to standard error, and only on a terminal.

- `root`: the app, its global options, `main` (errors to `Error:` lines and exit codes);
- `output`: the consoles, JSON, progress bars;
- `subscribers`: import, subscribers list / unsubscribe / forget;
- `inspection`: preview (and its pre-flight check), status;
- `sending`: send, retry, report;
- `bounces`: bounces import;  `endpoint`: serve;  `retention`: purge;
- `scaffolding`: campaign new.
"""

from __future__ import annotations

from mailer.cli import bounces, endpoint, inspection, retention, scaffolding, sending, subscribers
from mailer.cli.output import err, out
from mailer.cli.root import app, main

__all__ = ["app", "err", "main", "out"]

# The commands, in the order `mailer --help` lists them (the groups come after the commands).
app.command("import")(subscribers.import_command)
app.command("preview")(inspection.preview_command)
app.command("status")(inspection.status_command)
app.command("send")(sending.send_command)
app.command("retry")(sending.retry_command)
app.command("report")(sending.report_command)
app.command("serve")(endpoint.serve_command)
app.command("purge")(retention.purge_command)
app.add_typer(subscribers.subscribers_app, name="subscribers")
app.add_typer(bounces.bounces_app, name="bounces")
app.add_typer(scaffolding.campaign_app, name="campaign")
