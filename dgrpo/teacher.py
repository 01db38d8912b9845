"""The teacher π_T: a local Hugging Face model, or a remote OpenAI-compatible server (vLLM).

A teacher scores one group's completions (no gradient anywhere) and says which signals it can
give: "hidden" (final-norm hidden states + lm_head, for exact chunked KL: estimator `full` and
kd), "logp" (log π_T of the sampled tokens: estimator `sampled`, advantage-level dGRPO, and the
KL metric) and "topk" (its K likeliest tokens per position: estimator `topk`). A remote server
(`dgrpo.remote.teacher`) returns log-probs only, so it cannot give "hidden".

Under parallel.strategy fsdp a local teacher is sharded like the student (`dgrpo.sharding`;
parallel.shard_frozen): its layers are gathered one at a time while it scores, and only its
lm_head is kept whole (the "hidden" signal's KL needs it during the student's forward).
"""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from dgrpo import sharding
from dgrpo.config import TrainConfig
from dgrpo.logprobs import completion_logprobs, group_forward, lm_head_weight, topk_logprobs
from dgrpo.models import check_compatible, freeze, load_model, load_tokenizer


@dataclass
class TeacherSignals:
    """What the teacher says about one group's G completions; every tensor is detached."""

    hidden: torch.Tensor | None = None  # [G, C, H_t] final-norm hidden states at completion positions
    weight: torch.Tensor | None = None  # [V_t, H_t] the teacher's lm_head
    logp: torch.Tensor | None = None  # [G, C] log π_T(y_t) at the rollout temperature τ
    topk_logp: torch.Tensor | None = None  # [G, C, K] log-probs at τ of its K likeliest tokens
    topk_ids: torch.Tensor | None = None  # [G, C, K]

    def select(self, rows: slice) -> "TeacherSignals":
        """The signals of completion rows `rows` (the lm_head weight is shared)."""
        return replace(
            self, hidden=select_rows(self.hidden, rows), logp=select_rows(self.logp, rows),
            topk_logp=select_rows(self.topk_logp, rows), topk_ids=select_rows(self.topk_ids, rows),
        )  # fmt: skip


def select_rows(items, rows: slice):
    """items[rows] along the completion-row dimension (tensors or per-row lists); None stays None."""
    return None if items is None else items[rows]


class Teacher(Protocol):
    signals: frozenset[str]  # which of "hidden", "logp", "topk" this teacher can give

    def score(
        self,
        prompt_ids: torch.Tensor,
        completion_ids: torch.Tensor,
        mask: torch.Tensor,
        need: frozenset[str],
        temperature: float,
    ) -> TeacherSignals:
        """Signals for prompt [1, P] and right-padded completions [G, C] with mask [G, C]."""
        ...


class LocalTeacher:
    """A local causal LM (or its sharded root, `dgrpo.sharding`); the shared prompt runs once
    per group (`group_forward`)."""

    signals = frozenset({"hidden", "logp", "topk"})

    def __init__(
        self,
        model: torch.nn.Module,
        top_k: int,
        chunk_size: int,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ):
        freeze(sharding.inner(model))
        self.model, self.top_k, self.chunk_size, self.autocast = model, top_k, chunk_size, autocast
        self._head: torch.Tensor | None = None

    def score(self, prompt_ids, completion_ids, mask, need, temperature) -> TeacherSignals:
        with torch.no_grad():
            out = sharding.call(
                self.model, self._signals, prompt_ids, completion_ids, mask, need, temperature
            )
        if "hidden" in need:
            out["weight"] = self.head()
        return TeacherSignals(**out)

    def head(self) -> torch.Tensor:
        """The lm_head the "hidden" signal hands to the student's KL, whole on every process
        (gathered once when sharded: every process asks at the same call, so in lockstep)."""
        if self._head is None:
            self._head = sharding.full_tensor(lm_head_weight(sharding.inner(self.model)).detach())
        return self._head

    def _signals(self, model, prompt_ids, completion_ids, mask, need, temperature) -> dict:
        """The signals as a dict of tensors (what a sharded root's forward may return)."""
        with self.autocast():
            hidden = group_forward(model, prompt_ids, completion_ids, mask, with_grad=False)
        weight, out = lm_head_weight(model), {}
        if "hidden" in need:
            out["hidden"] = hidden
        if "logp" in need:
            out["logp"] = completion_logprobs(hidden, weight, completion_ids, temperature, self.chunk_size)
        if "topk" in need:
            out["topk_logp"], out["topk_ids"] = topk_logprobs(
                hidden, weight, self.top_k, temperature, self.chunk_size
            )
        return out


def load_teacher(
    cfg: TrainConfig,
    tokenizer,
    student: torch.nn.Module,
    autocast: Callable[[], AbstractContextManager],
    device,
) -> Teacher | None:
    """The configured teacher when the method needs one (checked against the student's tokenizer)."""
    if not cfg.terms.needs_teacher:
        return None
    if cfg.teacher.url:
        from dgrpo.remote.teacher import RemoteTeacher  # the server client, only when used

        return RemoteTeacher.connect(cfg.teacher, tokenizer, student.get_output_embeddings().weight.shape[0])
    model = load_model(cfg.teacher.model, seed=cfg.run.seed + 1, dtype=cfg.model.dtype).to(device)
    check_compatible(tokenizer, load_tokenizer(cfg.teacher.model), student, model, role="teacher")
    return LocalTeacher(frozen_model(model, cfg, device), cfg.teacher.top_k, cfg.loss.chunk_size, autocast)


def frozen_model(model: torch.nn.Module, cfg: TrainConfig, device) -> torch.nn.Module:
    """A frozen teacher or reference: sharded under fsdp with parallel.shard_frozen, else whole."""
    model = freeze(model)
    if sharding.enabled(cfg.parallel) and cfg.parallel.shard_frozen:
        return sharding.shard(model, cfg.parallel, device)
    return model
