"""`TrainConfig`: every knob of a dgrpo run, documented where it is declared.

A run is configured by a YAML file (`configs/*.yaml` set only what differs from the defaults
below) plus dotted `--set section.key=value` overrides. `METHODS` is the one place where a
method name decides which loss terms are on: the five methods are rows of that table.
"""

import difflib
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dgrpo.errors import UserError
from dgrpo.losses import AdvantageScale, AggregationMode, LambdaScheduleKind, ReverseKLEstimator
from dgrpo.overrides import apply_override

Method = Literal["sft", "kd", "grpo", "opd", "dgrpo"]


class Terms(NamedTuple):
    """Which parts of the one objective (docs/objective.md) a method switches on."""

    pg: bool  # clipped policy gradient on group-relative advantages, L_pg
    opd: bool  # reverse KL to the teacher on student-sampled completions, L_opd
    ce: bool  # cross-entropy on fixed responses
    kd: bool  # forward KL to the teacher on fixed responses
    ref_kl: bool  # the β·KL(π_θ ‖ π_ref) penalty is allowed (on when loss.beta > 0)
    needs_teacher: bool
    needs_rewards: bool
    samples: bool  # completions are sampled from the student; else the fixed response column


METHODS: dict[str, Terms] = {
    "sft": Terms(pg=False, opd=False, ce=True, kd=False, ref_kl=False, needs_teacher=False,
                 needs_rewards=False, samples=False),
    "kd": Terms(pg=False, opd=False, ce=False, kd=True, ref_kl=False, needs_teacher=True,
                needs_rewards=False, samples=False),
    "grpo": Terms(pg=True, opd=False, ce=False, kd=False, ref_kl=True, needs_teacher=False,
                  needs_rewards=True, samples=True),
    "opd": Terms(pg=False, opd=True, ce=False, kd=False, ref_kl=True, needs_teacher=True,
                 needs_rewards=False, samples=True),
    "dgrpo": Terms(pg=True, opd=True, ce=False, kd=False, ref_kl=True, needs_teacher=True,
                   needs_rewards=True, samples=True),
}  # fmt: skip


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(Section):
    student: str = Field(
        "tiny-qwen3",
        description="Student policy π_θ: a local Hugging Face causal-LM directory (weights, config and "
        "tokenizer; loaded with local_files_only), a dgrpo run directory (its latest checkpoint), or an "
        "embedded tiny model built offline from a config with the Qwen3 tokenizer: 'tiny-qwen3' "
        "(2 layers, hidden 64) or 'tiny-qwen3-teacher' (4 layers, hidden 64). Tiny models are for "
        "tests and demos only.",
    )
    reference: str | None = Field(
        None,
        description="Reference policy π_ref for the β KL term (loss.beta > 0), same forms as student. "
        "None: the student's initial weights (model.student loaded again, frozen).",
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="Parameter dtype of the student (AdamW updates these weights). Use bfloat16 only for "
        "memory-bound GPU runs; log-probs and KL are still accumulated in float32.",
    )
    gradient_checkpointing: bool = Field(
        True,
        description="Recompute each decoder layer's activations during backward: memory for long prompts "
        "drops from O(layers × tokens) activations to one layer's, for ~30% more compute.",
    )


class DataConfig(Section):
    path: str = Field(
        "data/demo",
        description="A longblocks dataset directory (`longblocks generate --out DIR`, read with "
        "datasets.load_from_disk), or any name/path datasets.load_dataset accepts, such as the "
        "published LongBlocks or a folder of parquet files.",
    )
    name: str | None = Field(None, description="Dataset configuration name for load_dataset (Hub datasets).")
    train_split: str = Field("train", description="Split trained on.")
    columns: dict[str, str] = Field(
        {},
        description="Field the trainer reads -> dataset column holding it, for datasets laid out "
        "differently: fields are id, document, question, answer, system, instruction, task, length, "
        "depth, verification, reference. Example for the published LongBlocks: "
        "{reference: response_<model>}. Unmapped fields are read from the column of the same name.",
    )
    defaults: dict[str, str] = Field(
        {},
        description="Constant values for fields the dataset lacks, e.g. {instruction: '...', "
        "system: '...', task: multihop} for a dataset without those columns. A row without a "
        "`verification` column is scored by exact match against its `answer`.",
    )
    response_field: str = Field(
        "reference",
        description="Field used as the fixed response by sft and kd: 'reference' (longblocks' gold "
        "reasoning and answer line) or a teacher-response field (map it in data.columns).",
    )
    append_answer_line: bool = Field(
        False,
        description="sft/kd: end each fixed response with the answer line of the row's language, "
        "built from its `answer` field ('Answer: <answer>'; 'Resposta:' / 'Antwort:' for language "
        "pt / de), unless its last answer line already gives that answer; a response whose answer "
        "is another one is skipped (counted in data/skipped_response). For teacher responses "
        "that end with an inline 'Answer: X', a plain sentence or a bare name (the published "
        "LongBlocks response_<model> columns): trained on as they are, they teach a format "
        "longblocks.rewards scores as unparsable (docs/rows.md).",
    )
    prompt_template: str | None = Field(
        None,
        description="Path to a jinja2 template that renders the user message from the row's fields. "
        "None: '{{ document }}\\n\\n{{ question }}\\n\\n{{ instruction }}', which reproduces "
        "longblocks.row.prompt_messages exactly. The system message is the `system` field when present.",
    )
    chat_template: str | None = Field(
        None, description="Path to a jinja2 chat template replacing the tokenizer's own (or lack of one)."
    )
    chat_template_kwargs: dict[str, Any] = Field(
        {}, description="Extra variables for the chat template, e.g. {enable_thinking: false} for Qwen3."
    )
    max_prompt_tokens: int = Field(
        4096,
        ge=1,
        description="Rows whose prompt (chat template applied) is longer are skipped and counted "
        "(metric data/skipped_long), never truncated. Raise it with the dataset's --length.",
    )
    max_response_tokens: int = Field(
        512, ge=1, description="sft/kd: rows whose fixed response is longer are skipped and counted."
    )
    max_examples: int | None = Field(
        None, ge=1, description="Use at most this many rows of a split (the first ones); None: all."
    )
    batch_size: int = Field(
        1, ge=1, description="Prompts per rollout draw; each brings rollout.group_size completions."
    )
    shuffle: bool = Field(True, description="Reshuffle the training rows every epoch (seeded by run.seed).")


class ServerClientConfig(Section):
    """How requests reach an OpenAI-compatible server (dgrpo.remote.client)."""

    api_key_env: str | None = Field(
        None,
        description="Name of the environment variable holding the server's API key (sent as a Bearer "
        "token). The key itself is never written to the config, metrics or logs. None: no key.",
    )
    timeout_s: float = Field(120.0, gt=0, description="Seconds to wait for one request.")
    retries: int = Field(
        3, ge=0, le=10, description="Retries of a failed request (connection error, timeout, 5xx, 429)."
    )
    backoff_s: float = Field(
        0.5, ge=0, description="First retry delay in seconds; it doubles with every further retry."
    )
    max_concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once.")
    batch_size: int = Field(
        8, ge=1, description="Prompts per request (the teacher's sequences; rollouts send n = G per prompt)."
    )


class RolloutConfig(Section):
    backend: Literal["local", "server"] = Field(
        "local",
        description="Who samples: 'local' the trainer's own loop (dgrpo.sampling); 'server' an "
        "OpenAI-compatible server (vLLM, or `dgrpo serve`) at rollout.url, prompted by token ids, "
        "whose weights are updated after every optimizer step (rollout.weight_sync) and whose "
        "per-token log-probs correct the sampler/trainer mismatch (rollout.tis_cap).",
    )
    url: str | None = Field(
        None, description="Base URL of the rollout server, e.g. http://127.0.0.1:8000/v1 (backend server)."
    )
    served_model: str = Field("policy", description="Model name sent to the rollout server.")
    server: ServerClientConfig = Field(
        default_factory=ServerClientConfig,
        description="Timeouts, retries and concurrency of rollout requests.",
    )
    weight_sync: Literal["gloo", "nccl", "ipc", "disk", "reload"] = Field(
        "gloo",
        description="How the policy's weights reach the server after each optimizer step. gloo/nccl/ipc/"
        "disk: vLLM's weight-transfer API (server started with --weight-transfer-config "
        "'{\"backend\": ...}'; init_weight_transfer_engine once, then start_weight_update, "
        "update_weights, finish_weight_update); gloo broadcasts over TCP (CPU, `dgrpo serve`), nccl over "
        "GPUs (needs the vllm extra in the trainer), ipc hands CUDA IPC handles to a vLLM server colocated "
        "on the trainer's GPU (single-GPU runs), disk passes a saved safetensors directory. reload: the "
        "fallback for servers without that API: save to rollout.sync_dir, then POST "
        "/update_weights_from_disk {model_path}.",
    )
    sync_address: str = Field(
        "127.0.0.1",
        description="Address of this trainer that the server joins for gloo/nccl weight transfer.",
    )
    sync_dir: str | None = Field(
        None,
        description="Directory for disk/reload weight sync, visible to the server at the same path; "
        "None: <run.out_dir>/server-weights.",
    )
    tis_cap: float | None = Field(
        2.0,
        gt=0,
        description="C of truncated importance sampling for backend server: every loss token is weighted "
        "by min(π_old(y_t) / π_sampler(y_t), C), π_sampler's log-prob as the server reported it, "
        "correcting the sampler/trainer mismatch (logged as rollout/is_weight_mean). None: no correction.",
    )
    group_size: int = Field(
        4,
        ge=1,
        description="G: completions sampled per prompt. grpo and dgrpo need G >= 2 (advantages are "
        "relative to the group); 8-16 is typical for real runs. sft and kd use one fixed response.",
    )
    temperature: float = Field(
        1.0,
        gt=0,
        description="τ for sampling. π_θ, π_old and teacher log-probs are all taken at this τ, so the "
        "ratio and the KL refer to the distribution that sampled (docs/objective.md).",
    )
    top_p: float = Field(
        1.0, gt=0, le=1, description="Nucleus sampling; 1 keeps the full distribution (matches π at τ)."
    )
    top_k: int = Field(
        0, ge=0, description="Top-k sampling; 0 is off (transformers' default of 50 is overridden)."
    )
    max_new_tokens: int = Field(
        64, ge=1, description="Completion budget; a completion without EOS by then is flagged truncated."
    )
    min_new_tokens: int = Field(
        0,
        ge=0,
        description="EOS is blocked until this many tokens exist (0: off). Benchmarks set it to "
        "max_new_tokens so every trainer does the same work; leave 0 for training.",
    )
    truncation: Literal["zero", "score", "mask"] = Field(
        "zero",
        description="Truncated completions: 'zero' scores them 0 (longblocks.rewards' rule); 'score' "
        "parses them as if complete; 'mask' scores 0 and removes them from the loss (DAPO overlong "
        "filtering). Always counted in metric truncated_rate.",
    )


class TeacherConfig(Section):
    model: str | None = Field(
        None,
        description="Teacher π_T, same forms as model.student (a dgrpo run directory of an sft run "
        "works). Required by kd, opd and dgrpo unless teacher.url is set. Its tokenizer must match the "
        "student's (same vocabulary and special tokens; the embedding may be padded larger).",
    )
    url: str | None = Field(
        None,
        description="Base URL of an OpenAI-compatible server (vLLM) serving the teacher, e.g. "
        "http://127.0.0.1:8000/v1. Completion-token log-probs come from /completions with token-id "
        "prompts and prompt_logprobs, so only opd estimators 'sampled' and 'topk' work with it. "
        "The server must use the student's tokenizer.",
    )
    served_model: str = Field("teacher", description="Model name sent to the remote server.")
    top_k: int = Field(
        20, ge=1, le=1000, description="K of the topk estimator: teacher log-probs of its K likeliest tokens."
    )
    server: ServerClientConfig = Field(
        default_factory=ServerClientConfig,
        description="API key, timeouts, retries, batching and concurrency of teacher.url requests.",
    )


class LossConfig(Section):
    method: Method = Field(
        "grpo",
        description="sft: cross-entropy on data.response_field; kd: forward KL to the teacher on those "
        "responses; grpo: clipped policy gradient on rewards; opd: reverse KL to the teacher on sampled "
        "completions; dgrpo: grpo + λ·opd (docs/objective.md). See METHODS.",
    )
    estimator: ReverseKLEstimator = Field(
        "full",
        description="OPD reverse-KL estimator (loss-level): 'full' exact over the vocabulary (chunked), "
        "'topk' over the teacher's top-K tokens plus one tail bucket (a lower bound of the exact KL), "
        "'sampled' the sampled-token log-ratio as a stop-gradient "
        "reward (the only one for a logprob-only teacher).",
    )
    combine: Literal["loss", "advantage"] = Field(
        "loss",
        description="How OPD enters: 'loss' adds λ·L_opd to the loss; 'advantage' folds it into the "
        "token advantage Â_t = A_i − λ·(log π_old − log π_T)(y_t) inside the clipped surrogate "
        "(the estimator is then always the sampled-token one).",
    )
    lam: float = Field(1.0, ge=0, description="λ: weight of the OPD term (start value of the λ schedule).")
    lam_schedule: LambdaScheduleKind = Field(
        "constant", description="λ over steps: constant, linear_decay (λ→0 at run.steps), warmup (0→λ)."
    )
    lam_warmup_steps: int = Field(0, ge=0, description="Steps of the λ ramp for lam_schedule=warmup.")
    eps_low: float = Field(0.2, ge=0, lt=1, description="ε_low: the ratio is clipped below at 1 − ε_low.")
    eps_high: float = Field(
        0.28, ge=0, description="ε_high: the ratio is clipped above at 1 + ε_high (DAPO's clip-higher: 0.28)."
    )
    scale: AdvantageScale = Field(
        "group",
        description="Advantage scaling: divide by the group's reward std (GRPO), the batch's, or none "
        "(Dr. GRPO).",
    )
    adv_eps: float = Field(1e-6, gt=0, description="ε added to the std when scaling advantages.")
    aggregation: AggregationMode = Field(
        "token",
        description="Reduce per-token losses: token (DAPO, every token weighs the same), seq (mean of "
        "per-completion means, original GRPO), constant (sum / (aggregation_constant × rows), Dr. GRPO).",
    )
    aggregation_constant: float | None = Field(
        None, gt=0, description="Per-row normaliser for aggregation=constant; None: rollout.max_new_tokens."
    )
    beta: float = Field(
        0.0,
        ge=0,
        description="β of the KL(π_θ ‖ π_ref) penalty (k3 estimator) for grpo/opd/dgrpo; 0 skips the "
        "reference model entirely (DAPO and most recent recipes use 0).",
    )
    kd_temperature: float = Field(
        1.0, gt=0, description="τ of the kd forward KL (student and teacher softmax alike)."
    )
    chunk_size: int = Field(
        128,
        ge=1,
        description="Completion positions per lm_head chunk: peak extra memory ≈ 3 × chunk_size × V floats.",
    )


class OptimConfig(Section):
    lr: float = Field(1e-5, gt=0, description="Peak AdamW learning rate (tiny demo models want ~1e-3).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW (β1, β2).")
    eps: float = Field(1e-8, gt=0, description="AdamW ε.")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay.")
    schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="LR after warmup: cosine or linear decay to min_lr_ratio × lr at run.steps."
    )
    warmup_steps: int = Field(0, ge=0, description="Optimizer steps of linear LR warmup from 0.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final LR as a fraction of optim.lr.")
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Clip the global gradient norm to this; None disables clipping."
    )
    grad_accum: int = Field(
        1,
        ge=1,
        description="Rollout draws per optimizer step; a step sees grad_accum × data.batch_size prompts.",
    )
    skip_empty_steps: bool = Field(
        True,
        description="A step whose gradient is exactly zero (every group's advantage 0 and no other term) "
        "leaves the weights and the AdamW state alone: AdamW would still move the weights along its "
        "momentum from earlier steps: sparse-reward grpo at lr 1e-3 collapsed that way on every seed.",
    )
    micro_batch_tokens: int = Field(
        32768,
        ge=1,
        description="Forward/backward token budget: the step's groups (prompt once + G × C completion "
        "tokens each) are packed into micro-batches of at most this many tokens, and a larger group "
        "is split by rows (its prompt re-run per slice). The loss is normalised over the whole step, "
        "so only memory and speed depend on it.",
    )
    update_epochs: int = Field(
        1,
        ge=1,
        description="μ: optimizer updates on each rollout batch (PPO epochs). With 1 the ratio is 1 in "
        "value (π_old = π_θ); more reuses samples and needs π_old log-probs, computed once per batch.",
    )


class RunConfig(Section):
    out_dir: str = Field("out/dgrpo", description="Run directory: config.yaml, metrics.jsonl, checkpoints/.")
    steps: int = Field(20, ge=1, description="Training steps (rollout batches); schedules span them.")
    stop_after: int | None = Field(
        None,
        ge=1,
        description="Stop this invocation after this many steps (time-boxed jobs); --resume continues.",
    )
    seed: int = Field(0, description="Seeds data order, sampling and tiny-model initialisation.")
    save_every: int = Field(
        10, ge=0, description="Checkpoint every N steps (and at the end); 0: only at the end."
    )
    keep_last: int = Field(2, ge=1, description="Checkpoints kept; older ones are deleted after a save.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu.")
    autocast: Literal["auto", "bf16", "off"] = Field(
        "auto", description="bf16 autocast of forward passes; auto: on for CUDA devices with bf16 support."
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads; None keeps torch's default (on a busy small box, 1 is often faster).",
    )
    report_to: list[Literal["trackio", "wandb", "tensorboard"]] = Field(
        [], description="Extra trackers to log metrics to (each must be installed)."
    )
    progress: bool = Field(True, description="Show the rich progress display (only on a terminal).")


class ParallelConfig(Section):
    """How several processes (torchrun) split the work; see docs/architecture.md and the README."""

    strategy: Literal["replicate", "fsdp"] = Field(
        "replicate",
        description="replicate: every process holds the whole student and optimizer state (gradients "
        "summed once per update). fsdp: FSDP2 fully_shard per decoder layer and at the root, so "
        "parameters, gradients and optimizer state are split over the processes (models that do not "
        "fit one device). Ignored in a single process.",
    )
    param_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="fsdp: dtype parameters are all-gathered and computed in (sampling, the frozen "
        "models and the training forward alike); auto: bfloat16 on CUDA, float32 on CPU.",
    )
    reduce_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="fsdp: dtype gradients are reduce-scattered in (float32 recommended)."
    )
    cpu_offload: bool = Field(
        False,
        description="fsdp on CUDA: keep the sharded parameters, gradients and optimizer state in CPU "
        "memory (copied to the GPU per layer; the optimizer steps on the CPU): fits larger models "
        "for slower steps. No effect on CPU runs.",
    )
    shard_frozen: bool = Field(
        True,
        description="fsdp: shard the local teacher and the reference model the same way (else each "
        "process holds them whole).",
    )
    timeout_minutes: float = Field(
        30.0,
        gt=0,
        description="Longest wait in one collective before a process gives up (a hang, not a failure: "
        "an exception on any process stops every process within seconds).",
    )


class TrainConfig(Section):
    model: ModelConfig = Field(default_factory=ModelConfig, description="Student and reference models.")
    data: DataConfig = Field(default_factory=DataConfig, description="Dataset, prompts and batching.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="Sampling completions.")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="Teacher for kd/opd/dgrpo.")
    loss: LossConfig = Field(default_factory=LossConfig, description="Method and objective knobs.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer and LR schedule.")
    run: RunConfig = Field(default_factory=RunConfig, description="Steps, checkpoints, device, logging.")
    parallel: ParallelConfig = Field(
        default_factory=ParallelConfig, description="Multi-process training: replicas or FSDP2 sharding."
    )

    @property
    def terms(self) -> Terms:
        return METHODS[self.loss.method]

    @model_validator(mode="after")
    def _teacher_for_distillation(self) -> "TrainConfig":
        if self.terms.needs_teacher and not (self.teacher.model or self.teacher.url):
            raise Rule(
                f"teacher.model is required for method '{self.loss.method}'",
                "set teacher.model to a model directory or tiny name (or teacher.url)",
            )
        return self

    @model_validator(mode="after")
    def _one_teacher_source(self) -> "TrainConfig":
        if self.teacher.model and self.teacher.url:
            raise Rule("teacher.model and teacher.url are both set", "keep only one of them")
        return self

    @model_validator(mode="after")
    def _rollout_server_url(self) -> "TrainConfig":
        if self.rollout.backend == "server" and not self.rollout.url:
            raise Rule(
                "rollout.backend is server but rollout.url is not set",
                "set rollout.url to the server's base URL, e.g. http://127.0.0.1:8000/v1",
            )
        if self.rollout.backend == "server" and self.parallel.strategy == "fsdp":
            # the weight push reads whole tensors on rank 0; sharded ones need a gather on every rank
            raise Rule(
                "rollout.backend server does not push weights from a sharded student yet",
                "set parallel.strategy to replicate, or rollout.backend to local",
            )
        return self

    @model_validator(mode="after")
    def _groups_for_rewards(self) -> "TrainConfig":
        if self.terms.needs_rewards and self.rollout.group_size < 2:
            raise Rule(
                f"rollout.group_size is {self.rollout.group_size} but method '{self.loss.method}' needs >= 2",
                "set rollout.group_size to 2 or more (advantages are relative to the group)",
            )
        return self

    @model_validator(mode="after")
    def _remote_teacher_estimators(self) -> "TrainConfig":
        full_distribution = self.terms.kd or (self.terms.opd and self._loss_level_full)
        if self.teacher.url and full_distribution:
            raise Rule(
                f"teacher.url gives log-probs only, but method '{self.loss.method}' with estimator "
                f"'{self.loss.estimator}' needs the teacher's full distribution",
                "set loss.estimator to sampled or topk (opd/dgrpo), or use a local teacher.model",
            )
        return self

    @model_validator(mode="after")
    def _remote_teacher_temperature(self) -> "TrainConfig":
        if self.teacher.url and self.rollout.temperature != 1.0 and self._uses_sampled_logp:
            raise Rule(
                f"teacher.url returns log-probs at temperature 1, not rollout.temperature "
                f"{self.rollout.temperature}",
                "set rollout.temperature to 1.0, or use a local teacher.model",
            )
        return self

    @property
    def _loss_level_full(self) -> bool:
        return self.loss.combine == "loss" and self.loss.estimator == "full"

    @property
    def _uses_sampled_logp(self) -> bool:
        # topk too: the tail bucket needs the teacher's full normaliser at τ, which log-probs at 1 lack
        return self.terms.opd and (self.loss.combine == "advantage" or self.loss.estimator != "full")


class Rule(ValueError):
    """A cross-field rule failed; carries the problem and the fix through pydantic's wrapper."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.problem, self.fix = problem, fix


# ------------------------------------------------------------------------------------------
# Loading: YAML file + dotted overrides -> TrainConfig, every problem as one UserError line
# ------------------------------------------------------------------------------------------


def bundled_configs() -> dict[str, Path]:
    """Method name -> its example config: `configs/` of a checkout, `dgrpo/_configs` in a wheel."""
    package = Path(__file__).resolve().parent
    for folder in (package / "_configs", package.parent / "configs"):
        if folder.is_dir():
            return {path.stem: path for path in sorted(folder.glob("*.yaml"))}
    return {}


def config_path(name: str | Path) -> Path:
    """A YAML file, or the name of a bundled config (`grpo` -> its configs/grpo.yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    bundled = bundled_configs()
    if str(name) in bundled:
        return bundled[str(name)]
    if path.suffix in (".yaml", ".yml") and path.stem in bundled:  # configs/grpo.yaml outside a checkout
        fix = f"for the bundled one pass its name: `{path.stem}` (`dgrpo init {path.stem}` prints it)"
    else:
        fix = (
            f"pass a YAML file or one of {', '.join(bundled) or 'sft, kd, grpo, opd, dgrpo'}; "
            "`dgrpo init grpo > my.yaml` writes one to edit"
        )
    raise UserError(f"config '{name}' is neither a file nor a bundled config", fix)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Read `path` (a YAML file or a bundled config name; None: all defaults), apply `a.b=value`
    overrides, validate."""
    values = _read_yaml(config_path(path)) if path is not None else {}
    for item in overrides:
        apply_override(values, item, TrainConfig)
    return make_config(values)


def make_config(values: dict) -> TrainConfig:
    """TrainConfig from nested values; the first validation problem becomes a UserError."""
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as error:
        raise _user_error(error.errors()[0]) from None


def to_yaml(cfg: TrainConfig) -> str:
    """The resolved config (every field, defaults included) as YAML, loadable by load_config."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _read_yaml(path: Path) -> dict:
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise UserError(f"cannot parse {path}{where}: {problem}", "fix the YAML syntax") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(
            f"{path} holds a {type(values).__name__}, not a mapping", "write `section: {key: value}`"
        )
    return values


def _user_error(error: dict) -> UserError:
    loc = [str(part) for part in error["loc"]]
    where = ".".join(loc)
    if error["type"] == "extra_forbidden":
        near = difflib.get_close_matches(loc[-1], _field_names(loc[:-1]), n=1)
        fix = f"did you mean '{'.'.join([*loc[:-1], near[0]])}'?" if near else "remove it"
        return UserError(f"unknown key '{where}'", fix)
    original = (error.get("ctx") or {}).get("error")
    if isinstance(original, Rule):
        return UserError(original.problem, original.fix)
    message = error["msg"].removeprefix("Value error, ")
    shown = f" ({_shorten(repr(error['input']))})" if "input" in error else ""
    return UserError(f"invalid {where}{shown}: {message}", "see the field's description in dgrpo/config.py")


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_names(path: list[str]) -> list[str]:
    """Valid keys at a dotted path, for 'did you mean' suggestions."""
    model: type[BaseModel] = TrainConfig
    for name in path:
        field = model.model_fields.get(name)
        if (
            field is None
            or not isinstance(field.annotation, type)
            or not issubclass(field.annotation, BaseModel)
        ):
            return []
        model = field.annotation
    return list(model.model_fields)
