"""data retention per service and notification type (3 to 90 days; 7 without a row)

Revision ID: 0004_data_retention
Revises: 0003_service_rules
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_data_retention"
down_revision = "0003_service_rules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_data_retention",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("service_id", sa.UUID(), nullable=False),
        sa.Column("notification_type", sa.String(length=16), nullable=False),
        sa.Column("days_of_retention", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "days_of_retention BETWEEN 3 AND 90", name=op.f("ck_service_data_retention_days_of_retention")
        ),
        sa.CheckConstraint(
            "notification_type IN ('sms', 'email')", name=op.f("ck_service_data_retention_notification_type")
        ),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["services.id"],
            name=op.f("fk_service_data_retention_service_id_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_data_retention")),
        sa.UniqueConstraint("service_id", "notification_type", name="uq_service_data_retention_service_type"),
    )


def downgrade() -> None:
    op.drop_table("service_data_retention")
