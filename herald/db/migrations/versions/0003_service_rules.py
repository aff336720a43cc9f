"""service rules: limits, team members and guest list (trial mode), and the platform's own service

Revision ID: 0003_service_rules
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from herald.settings import Settings

revision = "0003_service_rules"
down_revision = "0002"
branch_labels = None
depends_on = None

# The platform's own messages (Notify's wording, Herald's name). Ids come from settings, as the seed's
# config holds them, so that every environment's ingest finds them.
PLATFORM_SERVICE_NAME = "Herald"
_TEMPLATES = (
    ("sms_code_template_id", "Herald sign-in code", "sms", None, "((verify_code)) is your Herald authentication code"),
    (
        "email_verification_template_id",
        "Herald email verification",
        "email",
        "Confirm Herald registration",
        "Hi ((name)),\n\nTo complete your registration for Herald please click the link below\n\n((url))",
    ),
    (
        "invitation_template_id",
        "Herald invitation",
        "email",
        "((user_name)) has invited you to collaborate on ((service_name)) on Herald",
        "((user_name)) has invited you to collaborate on ((service_name)) on Herald.\n\n"
        "Click this link to create an account on Herald:\n((url))\n\n"
        "This invitation will stop working at midnight tomorrow. This is to keep ((service_name)) secure.",
    ),
    (
        "password_reset_template_id",
        "Herald password reset",
        "email",
        "Reset your Herald password",
        "Hi ((user_name)),\n\nWe received a request to reset your password on Herald.\n\n"
        "If you didn’t request this email, you can ignore it – your password has not been changed.\n\n"
        "To reset your password, click this link:\n\n((url))",
    ),
)


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
    _create_platform_service(Settings.from_env())


def _create_platform_service(settings: Settings) -> None:
    """Live (not restricted), so that it can send sign-in codes to anyone."""
    conn = op.get_bind()
    conn.execute(
        sa.text(
            "INSERT INTO services (id, name, active, research_mode, restricted, prefix_sms,"
            " can_send_international_sms, sms_sender, email_from)"
            " VALUES (:id, :name, true, false, false, false, true, 'Herald', 'herald') ON CONFLICT DO NOTHING"
        ),
        {"id": settings.notify_service_id, "name": PLATFORM_SERVICE_NAME},
    )
    for setting, name, template_type, subject, content in _TEMPLATES:
        values = {
            "id": getattr(settings, setting),
            "service_id": settings.notify_service_id,
            "name": name,
            "template_type": template_type,
            "subject": subject,
            "content": content,
        }
        conn.execute(
            sa.text(
                "INSERT INTO templates (id, service_id, name, template_type, subject, content, version, archived)"
                " VALUES (:id, :service_id, :name, :template_type, :subject, :content, 1, false)"
                " ON CONFLICT DO NOTHING"
            ),
            values,
        )
        conn.execute(
            sa.text(
                "INSERT INTO templates_history (id, service_id, name, template_type, subject, content, version)"
                " VALUES (:id, :service_id, :name, :template_type, :subject, :content, 1) ON CONFLICT DO NOTHING"
            ),
            values,
        )


def downgrade() -> None:
    settings = Settings.from_env()
    conn = op.get_bind()
    template_ids = [getattr(settings, setting) for setting, *_ in _TEMPLATES]
    for table in ("templates_history", "templates"):
        conn.execute(sa.text(f"DELETE FROM {table} WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": template_ids})
    conn.execute(sa.text("DELETE FROM services WHERE id = :id"), {"id": settings.notify_service_id})
    op.drop_table("service_guest_list")
    op.drop_table("service_team_members")
    for column in ("international_sms_message_limit", "email_message_limit", "sms_message_limit", "rate_limit"):
        op.drop_column("services", column)
