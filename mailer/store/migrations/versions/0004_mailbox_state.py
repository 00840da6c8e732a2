"""mailbox state: the last IMAP UID read per folder and UIDVALIDITY, known messages

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "mailbox_folders",
        sa.Column("id", _ID, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("account", sa.String(length=320), nullable=False),
        sa.Column("folder", sa.String(length=1000), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("host", "account", "folder", name="uq_mailbox_folder"),
    )
    op.create_table(
        "mailbox_messages",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("reader", sa.String(length=32), nullable=False),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("mailbox_messages")
    op.drop_table("mailbox_folders")
