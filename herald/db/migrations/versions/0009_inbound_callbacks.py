"""service callbacks of two kinds: delivery statuses and received texts (Notify's inbound API), one of each
per service

Revision ID: 0009_inbound_callbacks
Revises: 0008_inbound_sms
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_inbound_callbacks"
down_revision = "0008_inbound_sms"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every existing row is a delivery-status callback; new rows always name their kind.
    op.add_column(
        "service_callbacks",
        sa.Column("callback_type", sa.String(length=16), server_default="delivery_status", nullable=False),
    )
    op.alter_column("service_callbacks", "callback_type", server_default=None)
    op.create_check_constraint(
        op.f("ck_service_callbacks_callback_type"),
        "service_callbacks",
        "callback_type IN ('delivery_status', 'inbound_sms')",
    )
    op.drop_constraint("pk_service_callbacks", "service_callbacks", type_="primary")
    op.create_primary_key("pk_service_callbacks", "service_callbacks", ["service_id", "callback_type"])


def downgrade() -> None:
    op.execute("DELETE FROM service_callbacks WHERE callback_type <> 'delivery_status'")
    op.drop_constraint("pk_service_callbacks", "service_callbacks", type_="primary")
    op.create_primary_key("pk_service_callbacks", "service_callbacks", ["service_id"])
    op.drop_constraint("ck_service_callbacks_callback_type", "service_callbacks", type_="check")
    op.drop_column("service_callbacks", "callback_type")
