"""scheduled_for: the time a send asked to be handed off at, kept for the life of the record so reads
answer it (next_attempt_at is only the next attempt's time, and is cleared once the row leaves created)

Revision ID: 0010_scheduled_for
Revises: 0007_senders
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_scheduled_for"
down_revision = "0007_senders"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: PostgreSQL adds the column without rewriting the table.
    for table in ("notifications", "notification_history"):
        op.add_column(table, sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in ("notifications", "notification_history"):
        op.drop_column(table, "scheduled_for")
