"""gRPC entrypoint of the scheduler: list the task table, run a task now."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from herald.scheduling import Runner
from herald.v1 import scheduler_pb2, scheduler_pb2_grpc


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def ListTasks(
        self, request: scheduler_pb2.ListTasksRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.ListTasksResponse:
        tasks = []
        for task, next_run in self._runner.next_runs(datetime.now(UTC)):
            stamp = Timestamp()
            stamp.FromDatetime(next_run)
            tasks.append(
                scheduler_pb2.ScheduledTask(name=task.name, schedule=task.schedule.description, next_run=stamp)
            )
        return scheduler_pb2.ListTasksResponse(tasks=tasks)

    def RunTask(
        self, request: scheduler_pb2.RunTaskRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.RunTaskResponse:
        """Runs to the end under the task's lock even if the caller stops waiting: stopping halfway
        would only leave the work for the next scheduled run."""
        if request.name not in {t.name for t in self._runner.tasks}:
            context.abort(grpc.StatusCode.NOT_FOUND, f"No scheduled task named {request.name!r}: ListTasks names them")
        ran, summary = self._runner.run_now(request.name)
        return scheduler_pb2.RunTaskResponse(ran=ran, summary=summary)
