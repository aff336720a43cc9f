"""CSV jobs: jobs and their files; notifications (and their history) name their job and row

Revision ID: 0006_jobs
Revises: 0005_service_callbacks
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_jobs"
down_revision = "0005_service_callbacks"
branch_labels = None
depends_on = None

_STATUSES = "'pending', 'scheduled', 'in progress', 'finished', 'cancelled', 'sending limits exceeded'"


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("service_id", sa.UUID(), nullable=False),
        sa.Column("template_id", sa.UUID(), nullable=False),
        sa.Column("template_version", sa.Integer(), nullable=False),
        sa.Column("notification_type", sa.String(length=16), nullable=False),
        sa.Column("original_file_name", sa.String(length=255), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("api_key_id", sa.UUID(), nullable=True),
        sa.Column("key_type", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processing_started", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processing_finished", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rows_queued", sa.Integer(), server_default="0", nullable=False),
        sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"status IN ({_STATUSES})", name=op.f("ck_jobs_status")),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"], name=op.f("fk_jobs_service_id_services")),
        sa.ForeignKeyConstraint(
            ["template_id", "template_version"],
            ["templates_history.id", "templates_history.version"],
            name=op.f("fk_jobs_template_id_templates_history"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_service_created", "jobs", ["service_id", "created_at"])
    op.create_index(
        "ix_jobs_scheduled_for", "jobs", ["scheduled_for"], postgresql_where=sa.text("status = 'scheduled'")
    )
    op.create_index("ix_jobs_in_progress", "jobs", ["progress_at"], postgresql_where=sa.text("status = 'in progress'"))
    op.create_table(
        "job_files",
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_files_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_files")),
    )
    for table in ("notifications", "notification_history"):
        op.add_column(table, sa.Column("job_id", sa.UUID(), nullable=True))
        op.add_column(table, sa.Column("job_row_number", sa.Integer(), nullable=True))
    op.create_index(
        "ix_notifications_job_id", "notifications", ["job_id"], postgresql_where=sa.text("job_id IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_job_id", table_name="notifications")
    for table in ("notifications", "notification_history"):
        op.drop_column(table, "job_row_number")
        op.drop_column(table, "job_id")
    op.drop_table("job_files")
    op.drop_table("jobs")
