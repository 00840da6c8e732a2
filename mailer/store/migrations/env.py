"""Alembic environment: always run by mailer itself, on the connection it passes in."""

from __future__ import annotations

from alembic import context

from mailer.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things: later migrations copy tables
)
with context.begin_transaction():
    context.run_migrations()
