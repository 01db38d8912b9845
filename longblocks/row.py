"""The row schema shared by the generator, the validator, the rewards and the trainer.

The core columns (`id`, `document`, `source`, `language`, `question`, `answer`) match the
published LongBlocks dataset, so the trainer reads both. The rest makes every row
self-verifying: `verification` carries everything a reward needs, so a reward is a pure
function of (response, row).
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Task = Literal["multihop", "grounding", "longform"]
Split = Literal["train", "validation", "test"]


class EvidenceRef(BaseModel):
    """Where one supporting fact sits in the context."""

    model_config = ConfigDict(extra="forbid")

    fact_id: str = Field(description="Fact id in the row's world.")
    doc_id: str = Field(description="Id of the document that states the fact, e.g. 'D4821'.")
    depth: float = Field(ge=0, le=1, description="Token position of the sentence / documents length.")
    sentence: str = Field(description="The sentence of the context that states the fact, verbatim.")


class Verification(BaseModel):
    """What a reward and the validator need; every field is derived from the world graph."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["exact", "cited", "abstain", "rubric"] = Field(
        description="Which reward applies: exact answer, answer with citations, abstention, rubric."
    )
    variant: str = Field(
        default="", description="Task sub-type, e.g. 'conflict' for grounding or 'timeline' for longform."
    )
    answer: str = Field(description="The gold answer (an entity name), or the abstention word.")
    aliases: list[str] = Field(default_factory=list, description="Other accepted answer strings.")
    evidence: list[EvidenceRef] = Field(default_factory=list, description="Supporting facts in chain order.")
    path: list[str] = Field(
        default_factory=list,
        description="Relation chain followed (multihop); a comparison's two chains joined by a '|' item.",
    )
    start_entity: str = Field(
        default="", description="Entity id the question starts from; a comparison's two joined by '|'."
    )
    answer_entity: str = Field(default="", description="Entity id of the answer.")
    citations: list[str] = Field(default_factory=list, description="Doc ids a correct answer cites.")
    rubric: list[str] = Field(default_factory=list, description="Atomic facts a long-form answer states.")
    ordered: bool = Field(default=False, description="Whether rubric items must appear in order.")


class Row(BaseModel):
    """One example. `system`, `document`, `question` and `instruction` make the prompt."""

    model_config = ConfigDict(extra="forbid")

    id: str
    document: str = Field(description="The context: documents separated by blank lines.")
    source: str = Field(description="Where the example comes from, e.g. 'longblocks/synthetic'.")
    language: str = Field(description="ISO 639-1 code of the text, e.g. 'en'.")
    question: str
    answer: str
    task: Task
    split: Split
    world_id: str
    length: int = Field(description="Target prompt length in tokens (the length bucket).")
    depth: float = Field(ge=0, le=1, description="Mean relative depth of the evidence.")
    n_tokens: int = Field(description="Measured prompt tokens (chat template applied).")
    tokenizer: str = Field(description="Tokenizer that measured n_tokens.")
    system: str = Field(description="System message of the prompt.")
    instruction: str = Field(description="Answer-format instruction after the question.")
    reference: str = Field(description="Gold response: reasoning from the graph and the final answer line.")
    verification: Verification


def prompt_messages(row: dict) -> list[dict[str, str]]:
    """The chat messages whose templated text `n_tokens` measures."""
    user = f"{row['document']}\n\n{row['question']}\n\n{row['instruction']}"
    return [{"role": "system", "content": row["system"]}, {"role": "user", "content": user}]
