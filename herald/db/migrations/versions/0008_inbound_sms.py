"""received text messages (Notify's inbound_sms), kept for the service's SMS retention

Revision ID: 0008_inbound_sms
Revises: 0005_service_callbacks
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_inbound_sms"
down_revision = "0005_service_callbacks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbound_sms",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("service_id", sa.UUID(), nullable=False),
        sa.Column("notify_number", sa.String(length=32), nullable=False),
        sa.Column("user_number", sa.String(length=32), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("provider_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("provider_reference", sa.String(length=255), nullable=True),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_inbound_sms_service_id_services"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_sms")),
    )
    # The page query's filter and order (newest first, keyset on created_at and id).
    op.create_index(
        "ix_inbound_sms_service_created",
        "inbound_sms",
        ["service_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    # The retention task's scan, bounded by the shortest retention's cutoff.
    op.create_index("ix_inbound_sms_created_at", "inbound_sms", ["created_at"])


def downgrade() -> None:
    op.drop_table("inbound_sms")
