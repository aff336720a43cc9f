"""`herald jobs` driven in-process against a real stack: ingest, the dispatchers, PostgreSQL and RabbitMQ."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, text

from herald import cli
from herald.clients import JobsClient, job_file_problems
from herald.domain import research
from herald.jobs_cli import is_complete
from herald.service_layer.admin import Admin, DemoSetup
from herald.settings import Settings
from tests.support import Stack, running_stack


@pytest.fixture
def stack(settings: Settings, clean_db: Engine, clean_broker: str) -> Iterator[Stack]:
    with running_stack(settings, clean_db) as running:
        yield running


@pytest.fixture
def demo(admin: Admin) -> DemoSetup:
    return admin.demo("jobs-cli")


def _herald(stack: Stack, key: str, *argv: str) -> int:
    return cli.main(["jobs", *argv, "--key", key, "--target", stack.settings.ingest_address])


def _csv(tmp_path: Path, text_: str) -> str:
    path = tmp_path / "recipients.csv"
    path.write_text(text_, encoding="utf-8")
    return str(path)


def _jobs(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM jobs")) or 0)


def test_create_uploads_and_follows_the_job_until_every_row_is_delivered(
    stack: Stack, demo: DemoSetup, clean_db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = "".join(f"07700 900{i:03d},Person {i},{i}\r\n" for i in range(120))
    path = _csv(tmp_path, f"\ufeffPhone Number,Name,code,notes\r\n{rows}")
    key, template = demo.research_key, demo.research_sms_template_id
    assert _herald(stack, key, "create", "--template", template, "--csv", path, "--json", "--interval", "0.2") == 0
    job: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert (job["status"], job["row_count"], job["rows_queued"]) == ("finished", "120", "120")
    assert job["counts_by_status"] == {"delivered": "120"}
    assert job["original_file_name"] == "recipients.csv"

    assert _herald(stack, key, "status", job["id"], "--json") == 0
    assert json.loads(capsys.readouterr().out)["counts_by_status"] == {"delivered": "120"}
    assert _herald(stack, key, "status", job["id"]) == 0
    shown = capsys.readouterr().out
    assert "finished" in shown and "recipients.csv" in shown and "delivered" in shown
    assert _herald(stack, key, "list") == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split() == ["id", "created", "status", "type", "rows", "done", "rejected", "file"]
    assert listed[2].startswith(job["id"]) and "120" in listed[2]


def test_rows_that_fail_are_counted_and_the_exit_code_says_so(
    stack: Stack, demo: DemoSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Research mode answers these numbers with a temporary and a permanent failure.
    numbers = ["07700 900001", research.TEMP_FAIL_NUMBER, research.PERM_FAIL_NUMBER, "07700 900002"]
    path = _csv(tmp_path, "phone number,name,code\n" + "".join(f"{n},P,1\n" for n in numbers))
    argv = ("create", "--template", demo.research_sms_template_id, "--csv", path, "--json", "--interval", "0.2")
    assert _herald(stack, demo.research_key, *argv) == 2
    job = json.loads(capsys.readouterr().out)
    assert job["counts_by_status"] == {"delivered": "2", "temporary-failure": "1", "permanent-failure": "1"}


def test_a_bad_file_is_refused_with_row_numbers_before_anything_is_uploaded(
    stack: Stack, demo: DemoSetup, clean_db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _csv(tmp_path, "phone number,name,code\n07700 900001,Ann,1\n12,Bob,2\n07700 900002,,3\n")
    assert _herald(stack, demo.research_key, "create", "--template", demo.research_sms_template_id, "--csv", path) == 1
    err = capsys.readouterr().err
    assert "nothing was uploaded" in err
    assert "row 3 [phone number]: Not enough digits" in err
    assert "row 4 [name]: Missing value for ((name))" in err
    assert _jobs(clean_db) == 0


def test_ingest_refuses_a_bad_file_with_its_problems_as_a_detail(
    stack: Stack, demo: DemoSetup, clean_db: Engine
) -> None:
    client = JobsClient(stack.settings.ingest_address, demo.research_key)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            client.create_job(demo.research_sms_template_id, b"phone number,name\n07700 900001,Ann\n", "x.csv")
    finally:
        client.close()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [problem] = job_file_problems(refused.value)
    assert (problem.row, problem.column, problem.message) == (1, "", "Missing a column called 'code' for ((code))")
    assert _jobs(clean_db) == 0


def test_a_scheduled_job_is_created_not_followed_and_can_be_cancelled(
    stack: Stack, demo: DemoSetup, clean_db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _csv(tmp_path, "email address,name,code\nann@example.com,Ann,1\n")
    at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    argv = ("create", "--template", demo.research_email_template_id, "--csv", path, "--at", at.isoformat(), "--json")
    assert _herald(stack, demo.research_key, *argv) == 0
    job = json.loads(capsys.readouterr().out)
    assert (job["status"], job["scheduled_for"], job["row_count"]) == ("scheduled", at.isoformat()[:-6] + "Z", "1")

    assert _herald(stack, demo.research_key, "cancel", job["id"], "--json") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    assert _herald(stack, demo.research_key, "cancel", job["id"]) == 1
    assert capsys.readouterr().err.startswith("refused: FAILED_PRECONDITION")


def test_an_unknown_job_and_an_unreadable_file(
    stack: Stack, demo: DemoSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _herald(stack, demo.research_key, "status", "4b5f7b4e-1111-4f1f-9d6f-000000000000") == 1
    assert capsys.readouterr().err.startswith("refused: NOT_FOUND")
    missing = str(tmp_path / "missing.csv")
    assert (
        _herald(stack, demo.research_key, "create", "--template", demo.research_sms_template_id, "--csv", missing) == 1
    )
    assert capsys.readouterr().err.startswith(f"cannot read {missing}")


def test_rows_refused_while_expanding_are_shown_and_not_waited_for(
    stack: Stack, demo: DemoSetup, clean_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    # A finished job of 3 rows whose row 2 a changed service refused: rows 1 and 3 delivered.
    job_id = str(uuid.uuid4())
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, service_id, template_id, template_version, notification_type,"
                " original_file_name, row_count, status, key_type, rows_queued, rows_rejected,"
                " processing_started, processing_finished)"
                " VALUES (:j, :s, :t, 1, 'sms', 'f.csv', 3, 'finished', 'normal', 3, 1, now(), now())"
            ),
            {"j": job_id, "s": demo.service_id, "t": demo.sms_template_id},
        )
        for row in (1, 3):
            conn.execute(
                text(
                    "INSERT INTO notifications (id, service_id, template_id, template_version, key_type,"
                    ' notification_type, "to", body, status, billable_units, created_at, job_id, job_row_number)'
                    " VALUES (:id, :s, :t, 1, 'normal', 'sms', '447700900123', 'Hi', 'delivered', 1, now(), :j, :r)"
                ),
                {"id": str(uuid.uuid4()), "s": demo.service_id, "t": demo.sms_template_id, "j": job_id, "r": row},
            )

    client = JobsClient(stack.settings.ingest_address, demo.live_key)
    try:
        job = client.get_job(job_id)
        assert (job.rows_queued, job.rows_rejected) == (3, 1)
        assert [listed.rows_rejected for listed in client.list_jobs(0, "").jobs] == [1]
        assert is_complete(job)
    finally:
        client.close()

    assert _herald(stack, demo.live_key, "status", job_id, "--json") == 0
    assert json.loads(capsys.readouterr().out)["rows_rejected"] == "1"
    assert _herald(stack, demo.live_key, "status", job_id) == 0
    assert ["rows", "rejected", "1"] in [line.split() for line in capsys.readouterr().out.splitlines()]
    assert _herald(stack, demo.live_key, "list") == 0
    header, _, listed = capsys.readouterr().out.splitlines()[:3]
    assert header.split() == ["id", "created", "status", "type", "rows", "done", "rejected", "file"]
    assert listed.split()[-3:] == ["2", "1", "f.csv"]
    assert _herald(stack, demo.live_key, "list", "--json") == 0
    assert json.loads(capsys.readouterr().out)["jobs"][0]["rows_rejected"] == "1"
