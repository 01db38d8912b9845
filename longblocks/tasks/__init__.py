"""Task families; importing this package registers every task in `TASKS`."""

from longblocks.tasks import grounding, longform, multihop  # noqa: F401  (registers the tasks)
from longblocks.tasks.base import TASKS, TaskInstance, TaskParams

__all__ = ["TASKS", "TaskInstance", "TaskParams"]
