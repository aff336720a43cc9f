"""delivery attempts, retries, leases and receipts that arrive early

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("notifications", "notification_history"):
        op.add_column(table, sa.Column("rate_multiplier", sa.Float(), server_default="1", nullable=False))
        op.add_column(table, sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        op.add_column(table, sa.Column("last_error", sa.String(length=100), nullable=True))
    op.add_column("notifications", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("notifications", sa.Column("republished_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("notifications", sa.Column("last_provider", sa.String(length=32), nullable=True))
    op.add_column("notifications", sa.Column("sticky_provider", sa.Boolean(), server_default="false", nullable=False))
    op.create_index(
        "ix_notifications_created_due",
        "notifications",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'created'"),
    )
    op.create_table(
        "receipts_pending",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("notification_id", sa.UUID(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_receipts_pending")),
    )
    op.create_index(op.f("ix_receipts_pending_notification_id"), "receipts_pending", ["notification_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_receipts_pending_notification_id"), table_name="receipts_pending")
    op.drop_table("receipts_pending")
    op.drop_index("ix_notifications_created_due", table_name="notifications")
    op.drop_column("notifications", "sticky_provider")
    op.drop_column("notifications", "last_provider")
    op.drop_column("notifications", "republished_at")
    op.drop_column("notifications", "next_attempt_at")
    for table in ("notifications", "notification_history"):
        op.drop_column(table, "last_error")
        op.drop_column(table, "attempts")
        op.drop_column(table, "rate_multiplier")
