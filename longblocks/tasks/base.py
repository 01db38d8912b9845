"""What a task is: a sampler of verifiable questions over a world graph, and the registry.

Adding a task touches one module (`tasks/<name>.py`, registered with `register`) and its
templates (`templates/<lang>/questions/<name>.jinja`, `prompt/instruction_<name>.jinja`,
`reference/<name>.jinja`); `build.py` and `cli.py` never change.
"""

import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from longblocks.render.documents import Document, Renderer
from longblocks.world.graph import WorldGraph
from longblocks.world.schema import Fact


@dataclass
class TaskInstance:
    """A question with its gold answer, computed from the graph before any text exists."""

    question: str
    answer: str
    evidence: list[Fact]  # facts the answer depends on, in reasoning order (may be empty)
    near: list[str]  # entity ids whose documents make the best distractors
    verification: dict[str, Any]  # Verification fields known before the context is built
    aliases: list[str] = field(default_factory=list)
    excluded: set[str] = field(default_factory=set)  # facts that must appear nowhere
    # Task-made documents the context must hold (e.g. an older, dated record), each placed at
    # the given relative depth; their facts need not be evidence.
    pinned: list[tuple[Document, float]] = field(default_factory=list)
    # Task-made documents that replace an entity's corpus document as the one stating its
    # evidence (e.g. a newer record sized like an older pinned one).
    documents: dict[str, Document] = field(default_factory=dict)
    # Facts of the `near` documents a tight budget must not trim away (decoy pointers).
    near_facts: frozenset[str] = frozenset()
    notes: dict[str, Any] = field(default_factory=dict)  # task-private data for reference()


@dataclass(frozen=True)
class TaskParams:
    """Knobs tasks read; the build config fills them."""

    hops: tuple[int, ...] = (2, 3, 4)
    unanswerable_share: float = 0.2  # grounding: questions whose evidence is removed
    conflict_share: float = 0.3  # grounding: questions answered by the newer of two records
    compositional_share: float = 0.3  # multihop: counting, temporal, comparison (a third each)
    rubric_items: tuple[int, int] = (6, 16)  # longform: min and max atomic facts in the gold
    length: int = 0  # the example's target prompt tokens (0: unknown); tasks size evidence to it


class Task(Protocol):
    name: str

    def sample(self, renderer: Renderer, rng: random.Random, params: TaskParams) -> TaskInstance:
        """A well-posed instance, or raise RuntimeError if the world has none."""
        ...

    def reference(self, instance: TaskInstance, refs: list[dict], language: str) -> str:
        """The gold response. `refs` hold one dict per evidence fact, in order, then one per
        pinned document (its first fact): fact_id, doc_id, depth, sentence (verbatim as in
        the context) and year (the document's date)."""
        ...

    def check(self, row: dict, graph: WorldGraph) -> list[str]:
        """Re-derive the row's answer and verification from the graph; problems found, or []."""
        ...


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task
