"""jobs: rows_rejected (rows a changed service refused while the job was expanded) and the `error` status
(a stored file that no longer passes its checks), so that every job reaches an end

Revision ID: 0011_job_outcomes
Revises: 0006_jobs
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_job_outcomes"
down_revision = "0006_jobs"
branch_labels = None
depends_on = None

_BEFORE = ("pending", "scheduled", "in progress", "finished", "cancelled", "sending limits exceeded")
_AFTER = (*_BEFORE, "error")


def _status_check(statuses: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_jobs_status"), "jobs", type_="check")
    op.create_check_constraint(
        op.f("ck_jobs_status"), "jobs", f"status IN ({', '.join(repr(status) for status in statuses)})"
    )


def upgrade() -> None:
    op.add_column("jobs", sa.Column("rows_rejected", sa.Integer(), nullable=False, server_default="0"))
    _status_check(_AFTER)


def downgrade() -> None:
    op.execute("UPDATE jobs SET status = 'finished' WHERE status = 'error'")
    _status_check(_BEFORE)
    op.drop_column("jobs", "rows_rejected")
