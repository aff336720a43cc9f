"""`herald jobs create|status|list|cancel`: CSV jobs through ingest's herald.v1.Jobs, signed with an API key.

`create` checks the file here first with the rules ingest uses (herald.domain.jobfiles, the template read
through herald.v1.Reads), so a bad file is refused before a byte is uploaded; ingest checks it again. It
uploads in 1 MiB chunks with a progress bar, then follows the job until every row's notification is final.
Progress bars go to stderr; --json prints one JSON document on stdout, for scripts.

Exit codes: 0 done (every row delivered, or not followed), 1 refused, 2 finished with rows not delivered,
3 the job stopped before its rows were sent (cancelled, sending limits exceeded).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from tqdm import tqdm

from herald.admin_cli import pairs, table
from herald.clients import JobsClient, job_file_problems
from herald.domain import job_statuses, jobfiles
from herald.domain import statuses as st
from herald.queues.codec import TYPE_NAMES
from herald.settings import Settings
from herald.v1 import jobs_pb2

COMMANDS = ("jobs",)
# Statuses a job ends in without sending (the rest of its rows never will be).


def done_rows(job: jobs_pb2.Job) -> int:
    return sum(count for status, count in job.counts_by_status.items() if status in st.DONE)


def is_complete(job: jobs_pb2.Job) -> bool:
    """Every row's notification is done (rows refused while expanding never get one), or the job stopped
    without sending them."""
    if job.status in job_statuses.STOPPED:
        return True
    return job.status == job_statuses.FINISHED and done_rows(job) >= job.row_count - job.rows_rejected


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `herald jobs ...` to `herald`'s subcommands."""
    jobs = sub.add_parser("jobs", help="CSV jobs: one template sent to every row of a file")
    actions = jobs.add_subparsers(dest="action", required=True)
    create = _command(actions, "create", "check a CSV file, upload it and follow the job")
    create.add_argument("--template", required=True, help="template id")
    create.add_argument("--csv", required=True, type=Path, help="the file: a 'phone number' or 'email address' column")
    create.add_argument("--at", type=_when, help="start then (ISO 8601; without an offset, local time)")
    create.add_argument("--no-follow", action="store_true", help="stop once the job is created")
    create.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    _command(actions, "status", "a job: its status and its rows by notification status").add_argument("id")
    _command(actions, "cancel", "a scheduled job that has not started").add_argument("id")
    listing = _command(actions, "list", "the service's jobs, newest first")
    listing.add_argument("--page-size", type=int, default=0, help="at most 250 (default 50)")
    listing.add_argument("--older-than", default="", help="a job id: the page starts after it")


def run(args: argparse.Namespace, settings: Settings) -> int:
    client = JobsClient(args.target or settings.ingest_address, args.key)
    try:
        if args.action == "create":
            return _create(args, client)
        if args.action == "status":
            _print(args, client.get_job(args.id), _show_job)
        elif args.action == "cancel":
            _print(args, client.cancel_job(args.id), _show_job)
        else:
            _print(args, client.list_jobs(args.page_size, args.older_than), lambda page: _show_jobs(page.jobs))
        return 0
    except grpc.RpcError as exc:
        _refused(exc)
        return 1
    finally:
        client.close()


def _command(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help_text)
    parser.add_argument("--key", required=True, help="API key")
    parser.add_argument("--target", help="ingest address (default: HERALD_INGEST_ADDRESS)")
    parser.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    return parser


def _when(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return when.astimezone()  # a naive time is the machine's local time


def _create(args: argparse.Namespace, client: JobsClient) -> int:
    try:
        data = args.csv.read_bytes()
    except OSError as exc:
        print(f"cannot read {args.csv}: {exc.strerror}", file=sys.stderr)
        return 1
    template = client.job_template(args.template)
    if template.type not in jobfiles.RECIPIENT_COLUMNS:
        print(f"refused: a job sends texts or emails, not a {template.type}", file=sys.stderr)
        return 1
    checked = jobfiles.check_job_file(data, template)
    if checked.problems:
        _show_problems(checked.problems, checked.row_count, "checked here; nothing was uploaded")
        return 1
    bar = tqdm(total=len(data), desc="upload", unit="B", unit_scale=True, unit_divisor=1024, disable=None)
    try:
        job = client.create_job(args.template, data, args.csv.name, args.at, lambda sent: bar.update(sent - bar.n))
    except grpc.RpcError as exc:
        bar.close()
        if problems := job_file_problems(exc):
            _show_problems(problems, checked.row_count, "refused by ingest; nothing was stored")
        else:
            _refused(exc)
        return 1
    bar.close()
    if not args.json:
        when = f", starts {_time(job.scheduled_for)}" if job.HasField("scheduled_for") else ""
        print(f"job {job.id}: {job.row_count:,} rows, {job.status}{when}")
    if args.no_follow or job.status == "scheduled":
        _print(args, job, lambda _: None)
        return 0
    try:
        job = _follow(client, job, args.interval)
    except KeyboardInterrupt:
        print(f"\nstopped following; the job carries on: herald jobs status {job.id}", file=sys.stderr)
        return 130
    _print(args, job, _show_job)
    if job.status in job_statuses.STOPPED:
        return 3
    return 0 if job.counts_by_status.get(st.DELIVERED, 0) == job.row_count else 2


def _follow(client: JobsClient, job: jobs_pb2.Job, interval: float) -> jobs_pb2.Job:
    with tqdm(total=job.row_count, desc=job.status, unit="row", disable=None) as bar:
        while True:
            bar.set_description(job.status)
            bar.set_postfix_str(_counts(job), refresh=False)
            bar.update(done_rows(job) - bar.n)
            if is_complete(job):
                return job
            time.sleep(interval)
            job = client.get_job(job.id)


def _print(args: argparse.Namespace, answer: Message, show: Callable[[Any], None]) -> None:
    if args.json:
        document = MessageToDict(answer, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        show(answer)


def _refused(exc: grpc.RpcError) -> None:
    print(f"refused: {exc.code().name}: {exc.details()}", file=sys.stderr)


def _show_problems(
    problems: Sequence[jobfiles.RowProblem | jobs_pb2.JobFileProblem], row_count: int, where: str
) -> None:
    more = " (the first ones)" if len(problems) >= jobfiles.MAX_PROBLEMS else ""
    print(f"the file has problems{more}, {where}:", file=sys.stderr)
    for problem in problems:
        place = "file" if problem.row == 0 else f"row {problem.row}"
        column = f" [{problem.column}]" if problem.column else ""
        print(f"  {place}{column}: {problem.message}", file=sys.stderr)
    print(f"{row_count:,} rows seen", file=sys.stderr)


def _counts(job: jobs_pb2.Job) -> str:
    return ", ".join(f"{status} {count:,}" for status, count in sorted(job.counts_by_status.items()))


def _time(stamp: Any) -> str:
    return cast(str, stamp.ToDatetime().isoformat(timespec="seconds") + "Z")


def _show_job(job: jobs_pb2.Job) -> None:
    rows: list[tuple[str, object]] = [
        ("id", job.id),
        ("status", job.status),
        ("file", job.original_file_name),
        ("template", f"{job.template_id} version {job.template_version}"),
        ("type", TYPE_NAMES.get(job.notification_type, "")),
        ("rows", f"{job.row_count:,}"),
        ("rows queued", f"{job.rows_queued:,}"),
        ("rows rejected", f"{job.rows_rejected:,}"),
        ("rows done", f"{done_rows(job):,}"),
        ("created", _time(job.created_at)),
    ]
    if job.HasField("scheduled_for"):
        rows.append(("scheduled for", _time(job.scheduled_for)))
    if job.HasField("processing_started"):
        rows.append(("started", _time(job.processing_started)))
    if job.HasField("processing_finished"):
        rows.append(("finished", _time(job.processing_finished)))
    rows.extend((f"  {status}", f"{count:,}") for status, count in sorted(job.counts_by_status.items()))
    pairs(rows)


def _show_jobs(jobs: Sequence[jobs_pb2.Job]) -> None:
    table(
        ("id", "created", "status", "type", "rows", "done", "rejected", "file"),
        [
            (
                job.id,
                _time(job.created_at),
                job.status,
                TYPE_NAMES.get(job.notification_type, ""),
                f"{job.row_count:,}",
                f"{done_rows(job):,}",
                f"{job.rows_rejected:,}",
                job.original_file_name,
            )
            for job in jobs
        ],
    )
