"""From a campaign folder to the bytes of each subscriber's message.

`campaign` reads and checks the folder, `render` runs the Jinja2 templates, `reference` builds
the message the straightforward way with the email package, `compose` makes the same bytes
faster, `factory` turns one subscriber into one finished message, and `preflight` renders
them all before anything is sent. `skeleton` (with `inheritance`, `holes`, `expressions`)
renders once per campaign what is the same for everyone and leaves holes for the rest;
`bodies` and `quoting` encode the static lines of a body once.

Imports `mailer.core` and `mailer.store`; no SMTP.
"""
