"""Distillation terms on student-sampled states (OPD) that work from teacher log-probs: the
``topk`` and ``sampled`` reverse-KL estimators.

The exact KLs (the ``full`` OPD estimator and kd's forward KL) never build [B, T, V] logits:
they come from hidden states, chunked over the vocabulary, in
``dgrpo.logprobs.logprobs_and_kl``.

All functions return a per-token loss ``[B, T]`` over completion positions only; reduce it with
``aggregate``. The teacher is always a fixed target: no gradient ever reaches teacher logits or
teacher log-probs. The temperature τ divides student and teacher logits alike, and must be the
τ used for sampling and old log-probs.
"""

from typing import Literal

import torch
from torch import Tensor

ReverseKLEstimator = Literal["full", "topk", "sampled"]


def _upcast(x: Tensor) -> Tensor:
    """Half-precision logits are upcast to float32: softmax and KL sums lose digits in bf16."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def reverse_kl_topk(
    logits_student: Tensor,
    teacher_topk_logp: Tensor,
    teacher_topk_ids: Tensor,
    temperature: float = 1.0,
) -> Tensor:
    """Reverse KL restricted to the teacher's top-k support (docs/objective.md, OPD term, ``topk``).

    For a teacher that returns only its top-k log-probs, both distributions are renormalised
    over the same k ids S_t (a choice: it keeps KL ≥ 0 and zero iff they agree on S_t):
    q_θ(v) = softmax_{v∈S_t}(z_θ(v)/τ), q_T(v) = softmax_{v∈S_t}(log π_T(v)/τ), and
    KL_t = Σ_{v∈S_t} q_θ(v)·(log q_θ(v) − log q_T(v)).

    ``teacher_topk_logp`` are the teacher's log-probs at temperature 1 (its raw distribution;
    raw logits at those ids give the same result, since a per-position offset cancels in the
    renormalisation), so dividing by τ and renormalising equals the teacher's softmax at τ
    restricted to S_t — the same τ as the student's.

    Shapes: ``logits_student`` ``[B, T, V]``; ``teacher_topk_logp`` ``[B, T, K]`` float;
    ``teacher_topk_ids`` ``[B, T, K]`` long (distinct ids per position); returns ``[B, T]``.
    Only ``[B, T, K]`` values are gathered, so no vocabulary softmax is formed. Stop-gradient:
    teacher log-probs are detached; gradient flows to the gathered student logits only.
    """
    _check_temperature(temperature)
    student_topk = _upcast(torch.gather(logits_student, -1, teacher_topk_ids))
    logq_student = torch.log_softmax(student_topk / temperature, dim=-1)
    # the teacher is a fixed target: block any gradient into the teacher's log-probs
    teacher_topk = _upcast(teacher_topk_logp.detach())
    logq_teacher = torch.log_softmax(teacher_topk / temperature, dim=-1)
    return (logq_student.exp() * (logq_student - logq_teacher)).sum(dim=-1)


def reverse_kl_sampled(
    logp: Tensor,
    logp_teacher: Tensor,
    logp_old: Tensor | None = None,
) -> Tensor:
    """Single-sample reverse-KL estimator as a stop-gradient per-token reward (``sampled``).

    With y_t the sampled token, k_t = sg(log π_θ(y_t) − log π_T(y_t)) (the k1 KL sample) and
    ρ_t = exp(log π_θ(y_t) − sg(log π_old(y_t))):

        loss_t = ρ_t · k_t,    ∇_θ loss_t = ρ_t · k_t · ∇_θ log π_θ(y_t).

    It is policy gradient with per-token advantage −k_t. For y_t ~ π_old, E[loss_t] = KL_t and
    E[∇ loss_t] = Σ_y π_θ(y)(log π_θ(y) − log π_T(y))∇log π_θ(y) = ∇_θ KL(π_θ ‖ π_T), since
    Σ_y π_θ ∇log π_θ = 0. ``logp_old=None`` means on-policy (π_old = π_θ): ρ_t = 1 in value and
    ∇ρ_t = ∇log π_θ(y_t). No clipping (compare advantage-level dGRPO, which folds −λ·k_t with
    π_old in place of π_θ into the clipped GRPO advantage; see ``combine_advantage_level``).

    This is the only estimator a logprob-only remote teacher supports. Shapes: all ``[B, T]``
    log-probs of the sampled completion tokens; returns ``[B, T]``. Stop-gradient: k_t and
    log π_old carry no gradient; only log π_θ inside ρ_t does.
    """
    # k_t is a reward: no gradient through the student or teacher log-probs inside it
    kl_sample = (logp - logp_teacher).detach()
    # the behaviour policy is fixed: no gradient into log π_old (or into the on-policy copy)
    logp_old = logp.detach() if logp_old is None else logp_old.detach()
    return torch.exp(logp - logp_old) * kl_sample
