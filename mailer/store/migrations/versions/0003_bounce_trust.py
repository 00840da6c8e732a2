"""bounce trust: each report's reason, complaints

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

"""

from __future__ import annotations

from collections.abc import Sequence

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # Nothing yet: this revision is where the bounce-trust work adds its columns and tables.


def downgrade() -> None:
    """Downgrade schema."""
