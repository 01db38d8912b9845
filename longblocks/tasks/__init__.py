"""Task families; importing this package registers every task in `TASKS`."""

from longblocks.tasks import multihop  # noqa: F401  (registers the task)
from longblocks.tasks.base import TASKS, TaskInstance, TaskParams

__all__ = ["TASKS", "TaskInstance", "TaskParams"]
