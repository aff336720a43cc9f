"""request_hash: the hash of a send's request when it carried an idempotency key, kept while the
notification is retained, so a repeat of the key with a different request is refused rather than answered
as accepted

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
    # without a key) have none, and a repeat of their key is answered as before. Not in notification_history:
    # the hash is derived from the recipient and personalisation, and retention forgets it with them.
    op.add_column("notifications", sa.Column("request_hash", sa.String(32), nullable=True))


def downgrade() -> None:
    op.drop_column("notifications", "request_hash")
