"""senders: a service's SMS senders and email reply-to addresses (one default each), its inbound number,
and what a notification was sent with (reply_to_text, unsubscribe_url)

Revision ID: 0007_senders
Revises: 0005_service_callbacks
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_senders"
down_revision = "0005_service_callbacks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_sms_senders",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("service_id", sa.UUID(), nullable=False),
        sa.Column("sms_sender", sa.String(length=255), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_service_sms_senders_service_id_services"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_sms_senders")),
    )
    op.create_index(
        "uq_service_sms_senders_default",
        "service_sms_senders",
        ["service_id"],
        unique=True,
        postgresql_where=sa.text("is_default"),
    )
    op.create_index(op.f("ix_service_sms_senders_service_id"), "service_sms_senders", ["service_id"])
    op.create_table(
        "service_email_reply_to",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("service_id", sa.UUID(), nullable=False),
        sa.Column("email_address", sa.String(length=320), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["services.id"],
            name=op.f("fk_service_email_reply_to_service_id_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_email_reply_to")),
    )
    op.create_index(
        "uq_service_email_reply_to_default",
        "service_email_reply_to",
        ["service_id"],
        unique=True,
        postgresql_where=sa.text("is_default"),
    )
    op.create_index(op.f("ix_service_email_reply_to_service_id"), "service_email_reply_to", ["service_id"])
    op.create_table(
        "inbound_numbers",
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("service_id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_inbound_numbers_service_id_services"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_inbound_numbers")),
        sa.UniqueConstraint("service_id", name=op.f("uq_inbound_numbers_service_id")),
    )
    # Nullable columns: PostgreSQL adds them without rewriting the table.
    op.add_column("notifications", sa.Column("reply_to_text", sa.String(length=320), nullable=True))
    op.add_column("notifications", sa.Column("unsubscribe_url", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("notifications", "unsubscribe_url")
    op.drop_column("notifications", "reply_to_text")
    op.drop_table("inbound_numbers")
    op.drop_table("service_email_reply_to")
    op.drop_table("service_sms_senders")
