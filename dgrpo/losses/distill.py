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


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 − exp(x)) for x < 0, stable at both ends (Mächler 2012): expm1 near 0, log1p far."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _with_tail(logp_topk: Tensor) -> Tensor:
    """``[..., K]`` log-probs → ``[..., K + 1]``: the K tokens and one bucket holding the rest.

    The tail's log-mass is log(1 − Σ_k p_k); Σ_k p_k is capped just below 1 (one float epsilon)
    so a top-K holding all the mass in floating point gives a tiny tail, not log 0 = −∞.
    """
    covered = torch.logsumexp(logp_topk, dim=-1).clamp(max=-torch.finfo(logp_topk.dtype).eps)
    return torch.cat([logp_topk, _log1mexp(covered).unsqueeze(-1)], dim=-1)


def reverse_kl_topk(logp_student_topk: Tensor, logp_teacher_topk: Tensor) -> Tensor:
    """Reverse KL over the teacher's top-K tokens plus one tail bucket (docs/objective.md, ``topk``).

    S_t is the teacher's K likeliest tokens at position t. Both distributions are coarsened to
    K + 1 outcomes, the tokens of S_t and one bucket for everything else, each holding the
    model's own remaining mass p(tail) = 1 − Σ_{v∈S_t} p(v):

        KL_t = Σ_{v∈S_t} p_θ(v)·(log p_θ(v) − log p_T(v)) + p_θ(tail)·(log p_θ(tail) − log p_T(tail)).

    By the log-sum inequality KL_t ≤ D_KL(π_θ(·|s_t) ‖ π_T(·|s_t)) (merging outcomes never raises
    a KL), with equality when the student's tail is proportional to the teacher's (always for
    K ≥ V − 1); KL_t ≥ 0. Student mass that leaked outside S_t sits in p_θ(tail), so the
    gradient pushes it back down towards the teacher's tail — unlike renormalising both models
    over S_t, which gives tokens outside S_t no gradient at all.

    Inputs are log-probs at the sampling τ, normalised over the whole vocabulary (not over
    S_t): ``logp_student_topk`` ``[B, T, K]`` log π_θ(v|s_t) at the teacher's ids, with
    gradient (its normaliser carries the gradient to every vocabulary logit);
    ``logp_teacher_topk`` ``[B, T, K]`` log π_T(v|s_t) at τ. Returns ``[B, T]``. Stop-gradient:
    the teacher's log-probs are detached. Naive reference: gather both full log-softmaxes at S_t,
    append log(1 − Σ exp) to each, and take Σ p_s (log p_s − log p_t) over the K + 1 entries.
    """
    logp_student = _with_tail(_upcast(logp_student_topk))
    # the teacher is a fixed target: block any gradient into the teacher's log-probs
    logp_teacher = _with_tail(_upcast(logp_teacher_topk.detach()))
    return (logp_student.exp() * (logp_student - logp_teacher)).sum(dim=-1)


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
