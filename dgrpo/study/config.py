"""`StudyConfig`: the comparison's scale, documented where it is declared (configs/study/*.yaml)."""

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dgrpo.errors import UserError

Method = Literal["sft", "kd", "grpo", "opd", "dgrpo"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenizerSpec(Section):
    path: str | None = Field(
        None, description="A local HF tokenizer directory (the models' own); None trains a BPE one."
    )
    vocab_size: int = Field(
        2048, ge=300, description="BPE vocabulary trained on longblocks text (when path is None)."
    )
    corpus_examples: int = Field(
        32, ge=4, description="1k-token examples (embedded tokenizer) whose text trains the BPE."
    )


class DataSpec(Section):
    task: str = Field("multihop", description="longblocks task family (`longblocks generate --task`).")
    hops: str = Field("2", description="Hop counts, as `--hops` takes them.")
    compositional_share: float = Field(
        0.3, ge=0, le=1, description="`--compositional-share`: counting and comparison questions."
    )
    length: str = Field("1k", description="Prompt length in tokens of the study tokenizer (`--length`).")
    num_examples: int = Field(
        200, ge=20, description="Examples generated; worlds split 80/10/10, held-out = validation + test."
    )
    workers: int = Field(2, ge=1, description="`longblocks generate --workers`.")


class RetentionSpec(Section):
    length: str | None = Field(
        None,
        description="Prompt length of a short-context probe set (same task, its own worlds), scored "
        "for student0 and every run: ability kept or lost. None skips it (the study trains at the "
        "shortest length the generator sizes); e.g. 1k when data.length is 32k.",
    )
    num_examples: int = Field(100, ge=10, description="Examples generated for the probe (all splits used).")


def qwen3_arch(hidden: int, layers: int) -> dict[str, int]:
    """Qwen3 sizes for a width and depth: MLP 3× wide, 4 query heads sharing 2 K/V heads."""
    return dict(hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4)  # fmt: skip


class ModelSpec(Section):
    path: str | None = Field(None, description="A local HF model directory; None builds one from `arch`.")
    arch: dict[str, int] = Field(
        qwen3_arch(128, 4),
        description="Qwen3 sizes of a model built from scratch with the study tokenizer.",
    )
    steps: int = Field(200, ge=1, description="sft steps on the reference responses (teacher or warm start).")
    lr: float = Field(3e-3, gt=0, description="Peak learning rate of that sft (cosine, 5% warmup).")
    batch_size: int = Field(8, ge=1, description="Prompts per sft step.")
    prompt_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="0: the trainer's sft (loss on the response). > 0: teach a from-scratch model to "
        "read (dgrpo/study/reader.py): every prompt token also carries a next-token loss at this weight.",
    )
    autocast: Literal["off", "bf16", "auto"] = Field(
        "off",
        description="Reader loop only: bf16 autocast of its forward passes (weights and AdamW stay "
        "float32); about 1.4x faster per step on a CPU with AVX512-BF16, 10x slower on one without. "
        "auto: bf16 where the device multiplies bf16 natively, else float32.",
    )
    from_teacher_step: int | None = Field(
        None,
        ge=1,
        description="Student only: take the teacher run's snapshot at this step as student0 (a less "
        "trained model of the same family) instead of training one; needs teacher.prompt_weight > 0.",
    )


class MethodsSpec(Section):
    methods: list[Method] = Field(["sft", "kd", "grpo", "opd", "dgrpo"], description="Methods compared.")
    seeds: list[int] = Field([0, 1, 2], description="One run per method and seed.")
    steps: int = Field(60, ge=1, description="Training steps of every method (the same budget).")
    lr: float = Field(1e-3, gt=0, description="Learning rate of every method (constant).")
    batch_size: int = Field(
        2,
        ge=1,
        description="Prompts per step for sampled methods; sft/kd take batch_size × group_size "
        "fixed responses, so every method sees the same completion rows per step.",
    )
    group_size: int = Field(4, ge=2, description="G completions per prompt (grpo, opd, dgrpo).")
    max_new_tokens: int = Field(96, ge=1, description="Completion budget of rollouts and evaluation.")
    lam: float = Field(1.0, ge=0, description="λ of dgrpo.")
    estimator: Literal["full", "topk", "sampled"] = Field("full", description="OPD estimator (opd, dgrpo).")
    eval_examples: int | None = Field(
        None, ge=1, description="Held-out rows scored per split (the first N of validation and of test)."
    )

    @property
    def train_rows(self) -> int:
        """Training rows every run draws from (the first of the split): as many as sft/kd use in
        the budget; grpo/opd/dgrpo draw 1/G of them."""
        return self.steps * self.batch_size * self.group_size


class StudyConfig(Section):
    out_dir: str = Field("out/study", description="Cache of every stage; a rerun skips finished stages.")
    report_dir: str = Field("docs", description="results.md and results/*.png are written here.")
    workers: int = Field(2, ge=1, description="Training runs in parallel (one CPU thread each).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="run.device of every run.")
    threads: int = Field(1, ge=1, description="run.threads of every run.")
    gradient_checkpointing: bool = Field(
        False,
        description="model.gradient_checkpointing of every run: off at toy scale (faster), on for long "
        "prompts on a GPU (one layer's activations in memory, not every layer's).",
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="model.dtype of every run's student: bfloat16 for billion-parameter models."
    )
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec, description="The study tokenizer.")
    data: DataSpec = Field(default_factory=DataSpec, description="Study datasets.")
    teacher: ModelSpec = Field(default_factory=ModelSpec, description="Teacher: sft on the references.")
    student: ModelSpec = Field(
        default_factory=lambda: ModelSpec(
            arch=qwen3_arch(64, 2),
            steps=40,
        ),
        description="Student: a short sft warm start so that grpo sees non-zero rewards.",
    )
    compare: MethodsSpec = Field(default_factory=MethodsSpec, description="The method comparison.")
    retention: RetentionSpec = Field(default_factory=RetentionSpec, description="Short-context probe.")

    @model_validator(mode="after")
    def _student_snapshot(self) -> "StudyConfig":
        step = self.student.from_teacher_step
        if step is None:
            return self
        if self.teacher.path or self.teacher.prompt_weight == 0:
            raise ValueError("student.from_teacher_step needs a teacher trained here with prompt_weight > 0")
        if step >= self.teacher.steps:
            limit = self.teacher.steps
            raise ValueError(f"student.from_teacher_step ({step}) must be below teacher.steps ({limit})")
        return self


def load_study_config(path: str | Path) -> StudyConfig:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"study config '{path}' not found", "pass a YAML file, e.g. configs/study/full.yaml")
    try:
        return StudyConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as error:
        raise UserError(f"cannot parse {path}: {type(error).__name__}", "fix the YAML syntax") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UserError(f"invalid {where} in {path}: {first['msg']}", "see dgrpo/study/config.py") from None
