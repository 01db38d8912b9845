"""What a task is: a sampler of verifiable questions over a world graph, and the registry."""

import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from longblocks.render.documents import Renderer
from longblocks.world.schema import Fact


@dataclass
class TaskInstance:
    """A question with its gold answer, computed from the graph before any text exists."""

    question: str
    answer: str
    evidence: list[Fact]  # facts the answer depends on, in reasoning order
    near: list[str]  # entity ids whose documents make the best distractors
    verification: dict[str, Any]  # Verification fields known before the context is built
    aliases: list[str] = field(default_factory=list)
    excluded: set[str] = field(default_factory=set)  # facts that must appear nowhere


@dataclass(frozen=True)
class TaskParams:
    """Knobs a task reads; the build config fills them."""

    hops: tuple[int, ...] = (2, 3, 4)


class Task(Protocol):
    name: str

    def sample(self, renderer: Renderer, rng: random.Random, params: TaskParams) -> TaskInstance: ...

    def reference(self, instance: TaskInstance, steps: list[str], language: str) -> str:
        """The gold response, given the evidence sentences as they appear in the context."""
        ...


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task
