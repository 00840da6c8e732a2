"""mailbox state: the last IMAP UID read per folder and UIDVALIDITY, known messages

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

"""

from __future__ import annotations

from collections.abc import Sequence

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # Nothing yet: this revision is where the bounce-trust work adds its columns and tables.


def downgrade() -> None:
    """Downgrade schema."""
