"""service rules: limits, team members and guest list (trial mode), and the platform's own service

Revision ID: 0003_service_rules
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from herald.db import services as services_db
from herald.settings import Settings

revision = "0003_service_rules"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("services", sa.Column("rate_limit", sa.Integer(), server_default="3000", nullable=False))
    for column, default in (
        ("sms_message_limit", "999999999"),
        ("email_message_limit", "999999999"),
        ("international_sms_message_limit", "250000"),
    ):
        op.add_column("services", sa.Column(column, sa.BigInteger(), server_default=default, nullable=False))
    op.create_table(
        "service_team_members",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("service_id", sa.UUID(), nullable=False),
        sa.Column("mobile_number", sa.String(length=32), nullable=True),
        sa.Column("email_address", sa.String(length=320), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "mobile_number IS NOT NULL OR email_address IS NOT NULL", name=op.f("ck_service_team_members_reachable")
        ),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["services.id"],
            name=op.f("fk_service_team_members_service_id_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_team_members")),
    )
    op.create_index(op.f("ix_service_team_members_service_id"), "service_team_members", ["service_id"])
    op.create_table(
        "service_guest_list",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("service_id", sa.UUID(), nullable=False),
        sa.Column("recipient_type", sa.String(length=16), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.CheckConstraint("recipient_type IN ('mobile', 'email')", name=op.f("ck_service_guest_list_recipient_type")),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["services.id"],
            name=op.f("fk_service_guest_list_service_id_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_guest_list")),
    )
    op.create_index(op.f("ix_service_guest_list_service_id"), "service_guest_list", ["service_id"])
    services_db.create_platform_service(op.get_bind(), Settings.from_env())


def downgrade() -> None:
    settings = Settings.from_env()
    conn = op.get_bind()
    template_ids = [getattr(settings, setting) for setting, *_ in services_db.PLATFORM_TEMPLATES]
    for table in ("templates_history", "templates"):
        conn.execute(sa.text(f"DELETE FROM {table} WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": template_ids})
    conn.execute(sa.text("DELETE FROM services WHERE id = :id"), {"id": settings.notify_service_id})
    op.drop_table("service_guest_list")
    op.drop_table("service_team_members")
    for column in ("international_sms_message_limit", "email_message_limit", "sms_message_limit", "rate_limit"):
        op.drop_column("services", column)
