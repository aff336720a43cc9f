"""delivery-status callbacks: one per service (URL, encrypted bearer token and signing secret)

Revision ID: 0005_service_callbacks
Revises: 0004_data_retention
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_service_callbacks"
down_revision = "0004_data_retention"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_callbacks",
        sa.Column("service_id", sa.UUID(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("bearer_token_encrypted", sa.Text(), nullable=False),
        sa.Column("signing_secret_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_service_callbacks_service_id_services"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("service_id", name=op.f("pk_service_callbacks")),
    )


def downgrade() -> None:
    op.drop_table("service_callbacks")
