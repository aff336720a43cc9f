"""herald/jobs_cli.py's rule for when a followed job is complete."""

from __future__ import annotations

from herald.jobs_cli import is_complete
from herald.v1 import jobs_pb2


def _job(status: str, delivered: int, rows_rejected: int = 0) -> jobs_pb2.Job:
    return jobs_pb2.Job(
        status=status, row_count=3, rows_rejected=rows_rejected, counts_by_status={"delivered": delivered}
    )


def test_a_finished_job_is_complete_once_every_row_is_done() -> None:
    assert not is_complete(_job("finished", 2))
    assert is_complete(_job("finished", 3))
    assert not is_complete(_job("in progress", 3))


def test_rows_refused_while_expanding_are_not_waited_for() -> None:
    # Such a row never gets a notification: waiting for it would follow the job for ever.
    assert is_complete(_job("finished", 2, rows_rejected=1))
    assert not is_complete(_job("finished", 1, rows_rejected=1))


def test_a_stopped_job_is_complete_whatever_its_rows() -> None:
    assert is_complete(_job("cancelled", 0))
