"""request_hash: the hash of a send's request when it carried an idempotency key, kept for the life of the
record, so a repeat of the key with a different request is refused rather than answered as accepted

Revision ID: 0012_request_hash
Revises: 0011_job_outcomes
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_request_hash"
down_revision = "0011_job_outcomes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: PostgreSQL adds the column without rewriting the table; rows stored before it (and sends
    # without a key) have none, and a repeat of their key is answered as before.
    for table in ("notifications", "notification_history"):
        op.add_column(table, sa.Column("request_hash", sa.String(32), nullable=True))


def downgrade() -> None:
    for table in ("notifications", "notification_history"):
        op.drop_column(table, "request_hash")
