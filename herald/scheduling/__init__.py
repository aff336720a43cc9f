"""Periodic work: schedules, a runner that runs each due task once across replicas, and the task table."""

from herald.scheduling.runner import Runner, Task
from herald.scheduling.schedules import Schedule

__all__ = ["Runner", "Schedule", "Task"]
