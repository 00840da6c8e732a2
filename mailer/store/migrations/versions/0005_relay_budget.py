"""relay budget: each relay's pause, the slots reserved in its windows, the waits, and the
relay each attempt went through

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "relays",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("strikes", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "relay_slots",
        sa.Column("id", _ID, nullable=False),
        sa.Column("relay", sa.String(length=255), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_relay_slots_relay_until", "relay_slots", ["relay", "until"])
    op.create_table(
        "relay_waits",
        sa.Column("id", _ID, nullable=False),
        sa.Column("relay", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_relay_waits_ends_at", "relay_waits", ["ends_at"])
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("relay", sa.String(length=255), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("relay")
    op.drop_index("ix_relay_waits_ends_at", table_name="relay_waits")
    op.drop_table("relay_waits")
    op.drop_index("ix_relay_slots_relay_until", table_name="relay_slots")
    op.drop_table("relay_slots")
    op.drop_table("relays")
