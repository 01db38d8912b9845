"""`BuildConfig`: every knob of dataset generation, documented where it is declared."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from longblocks.errors import UserError

LANGUAGES = ("en", "pt", "de")
MIN_LENGTH, MAX_LENGTH = 256, 131072
MIN_HOPS, MAX_HOPS = 1, 6
# How one run executes, not what it makes: no output byte depends on them, so generation.json
# and the dataset card leave them out (a merged sharded run equals the one-machine run).
RUN_FIELDS = ("workers", "shard")


class BuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = Field(
        "multihop",
        description="Task family: multihop (k-hop relation chains), grounding (cited answers, "
        "abstention, conflicting records), longform (rubric-graded reports), or 'all' for a mix.",
    )
    mix: dict[str, float] = Field(
        {"multihop": 0.4, "grounding": 0.4, "longform": 0.2},
        description="Shares of each task when task='all' (normalised; exact counts by largest remainder).",
    )
    lengths: list[int] = Field(
        [4096],
        description="Target prompt lengths in tokens (256..128k); examples cycle through them. "
        "The prompt, chat template included, lands within ±0.5% (usually exactly).",
    )
    num_examples: int = Field(100, ge=1, description="Total examples over all splits.")
    seed: int = Field(0, description="Seed of every random choice; same seed, same bytes.")
    hops: list[int] = Field(
        [2, 3, 4],
        description="Allowed hop counts (1..6) of multihop questions; each example draws one. One hop "
        "is a lookup among peers (for small-model studies); the audit's one-hop baselines expect 2+.",
    )
    depth: Literal["uniform"] | list[float] = Field(
        "uniform",
        description="Evidence placement: 'uniform' draws each evidence fact's relative depth in "
        "[0, 1]; a list of values (e.g. [0.1, 0.5, 0.9]) gives each example one of them for all "
        "its evidence, for depth sweeps.",
    )
    languages: list[Literal["en", "pt", "de"]] = Field(
        ["en"], description="Languages of the worlds; worlds cycle through them."
    )
    tokenizer: str | None = Field(
        None, description="Local HF tokenizer directory; None uses the embedded Qwen3 tokenizer."
    )
    workers: int = Field(1, ge=1, le=64, description="Processes generating worlds in parallel.")
    shard: tuple[int, int] | None = Field(
        None,
        description="(K, N): build only shard K of N (1 <= K <= N), a fixed partition of the worlds; "
        "`longblocks merge` joins all N into the dataset one run would have written.",
    )
    examples_per_world: int = Field(
        8, ge=1, description="Examples drawn from one world; more is faster, fewer is more varied."
    )
    compositional_share: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Share of multihop questions that count, compare dates or compare birth years "
        "(a third each); the rest follow one chain.",
    )
    unanswerable_share: float = Field(
        0.2, ge=0, le=1, description="grounding: share of questions whose evidence is removed (abstain)."
    )
    conflict_share: float = Field(
        0.3, ge=0, le=1, description="grounding: share answered by the newer of two dated records."
    )
    rubric_items: tuple[int, int] = Field(
        (6, 16), description="longform: min and max atomic facts in a gold rubric."
    )
    split_fractions: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="Train/validation/test shares; worlds never cross splits."
    )

    @field_validator("lengths")
    @classmethod
    def _lengths_in_range(cls, lengths: list[int]) -> list[int]:
        for n in lengths:
            if not MIN_LENGTH <= n <= MAX_LENGTH:
                raise ValueError(f"length {n} is outside 256..128k ({MIN_LENGTH}..{MAX_LENGTH} tokens)")
        if not lengths:
            raise ValueError("give at least one length")
        return lengths

    @field_validator("hops")
    @classmethod
    def _hops_in_range(cls, hops: list[int]) -> list[int]:
        if not hops or any(not MIN_HOPS <= k <= MAX_HOPS for k in hops):
            raise ValueError(f"hops {hops} must be between {MIN_HOPS} and {MAX_HOPS}")
        return hops

    @field_validator("depth")
    @classmethod
    def _depths_in_unit_interval(cls, depth):
        if isinstance(depth, list) and (not depth or any(not 0 <= d <= 1 for d in depth)):
            raise ValueError(f"depth values {depth} must lie in [0, 1]")
        return depth

    @field_validator("shard")
    @classmethod
    def _shard_in_range(cls, shard: tuple[int, int] | None) -> tuple[int, int] | None:
        if shard is not None and not 1 <= shard[0] <= shard[1]:
            raise ValueError(f"shard {shard[0]}/{shard[1]} needs 1 <= K <= N")
        return shard

    def recorded(self) -> dict:
        """The config as generation.json and a shard manifest record it: without `RUN_FIELDS`."""
        return self.model_dump(mode="json", exclude=set(RUN_FIELDS))

    @model_validator(mode="after")
    def _tasks_exist(self) -> "BuildConfig":
        from longblocks.tasks import TASKS  # tasks import the renderer; keep config light

        names = set(self.mix) if self.task == "all" else {self.task}
        unknown = sorted(names - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task '{unknown[0]}' (choose from {', '.join(sorted(TASKS))} or all)")
        if self.task == "all" and (sum(self.mix.values()) <= 0 or min(self.mix.values()) < 0):
            raise ValueError("mix shares must be non-negative with a positive sum")
        return self

    def task_params(self):
        from longblocks.tasks import TaskParams

        return TaskParams(
            hops=tuple(self.hops),
            unanswerable_share=self.unanswerable_share,
            compositional_share=self.compositional_share,
            conflict_share=self.conflict_share,
            rubric_items=self.rubric_items,
        )

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> "BuildConfig":
        if abs(sum(self.split_fractions) - 1) > 1e-6 or min(self.split_fractions) < 0:
            raise ValueError("split_fractions must be three non-negative shares summing to 1")
        return self


def make_config(**values) -> BuildConfig:
    """BuildConfig from keyword values; a validation problem becomes one UserError line."""
    try:
        return BuildConfig(**values)
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        where = ".".join(str(p) for p in first["loc"])
        problem = f"invalid {where}: {message}" if where else message
        raise UserError(problem, "see `longblocks generate --help`") from None
