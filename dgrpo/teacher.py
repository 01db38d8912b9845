"""The teacher π_T: a local Hugging Face model, or a remote OpenAI-compatible server (vLLM).

A teacher scores one group's completions (no gradient anywhere) and says which signals it can
give: "hidden" (final-norm hidden states + lm_head, for exact chunked KL: estimator `full` and
kd), "logp" (log π_T of the sampled tokens: estimator `sampled`, advantage-level dGRPO, and the
KL metric) and "topk" (its K likeliest tokens per position: estimator `topk`). A remote server
(`dgrpo.remote.teacher`) returns log-probs only, so it cannot give "hidden".
"""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from dgrpo.config import TrainConfig
from dgrpo.logprobs import completion_logprobs, group_forward, lm_head_weight, topk_logprobs
from dgrpo.models import check_compatible, freeze, load_model, load_tokenizer


@dataclass
class TeacherSignals:
    """What the teacher says about one group's G completions; every tensor is detached."""

    hidden: torch.Tensor | None = None  # [G, C, H_t] final-norm hidden states at completion positions
    weight: torch.Tensor | None = None  # [V_t, H_t] the teacher's lm_head
    logp: torch.Tensor | None = None  # [G, C] log π_T(y_t) at the rollout temperature τ
    topk_logp: torch.Tensor | None = None  # [G, C, K] log-probs at τ = 1 of its K likeliest tokens
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
    """A local causal LM; the shared prompt runs once per group (`group_forward`)."""

    signals = frozenset({"hidden", "logp", "topk"})

    def __init__(
        self,
        model: torch.nn.Module,
        top_k: int,
        chunk_size: int,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ):
        self.model, self.top_k, self.chunk_size, self.autocast = freeze(model), top_k, chunk_size, autocast

    def score(self, prompt_ids, completion_ids, mask, need, temperature) -> TeacherSignals:
        with self.autocast():
            hidden = group_forward(self.model, prompt_ids, completion_ids, mask, with_grad=False)
        weight = lm_head_weight(self.model)
        out = TeacherSignals()
        if "hidden" in need:
            out.hidden, out.weight = hidden, weight
        if "logp" in need:
            with torch.no_grad():
                out.logp = completion_logprobs(hidden, weight, completion_ids, temperature, self.chunk_size)
        if "topk" in need:
            out.topk_logp, out.topk_ids = topk_logprobs(hidden, weight, self.top_k, 1.0, self.chunk_size)
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
    return LocalTeacher(model, cfg.teacher.top_k, cfg.loss.chunk_size, autocast)
