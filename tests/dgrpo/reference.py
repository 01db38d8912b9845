"""Naive dense references that only tests use: [B, T, V] logits in, per-position KL [B, T] out.

The package never builds these logits: `dgrpo.logprobs.logprobs_and_kl` computes the same KLs
from hidden states in vocabulary-wide chunks, and the tests hold it to these.
"""

import torch
from torch import Tensor


def dense_reverse_kl(logits_student: Tensor, logits_teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """D_KL(π_θ ‖ π_T) per position: Σ_v p_θ(v)·(log p_θ(v) − log p_T(v)), p = softmax(z / τ).

    The teacher is a fixed target: its logits are detached, so the gradient is ∇_θ KL through p_θ.
    """
    logp_student = torch.log_softmax(logits_student.double() / temperature, dim=-1)
    logp_teacher = torch.log_softmax(logits_teacher.detach().double() / temperature, dim=-1)
    return (logp_student.exp() * (logp_student - logp_teacher)).sum(dim=-1)


def dense_forward_kl(logits_student: Tensor, logits_teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """D_KL(π_T ‖ π_θ) per position: Σ_v p_T(v)·(log p_T(v) − log p_θ(v)); teacher detached."""
    logp_student = torch.log_softmax(logits_student.double() / temperature, dim=-1)
    logp_teacher = torch.log_softmax(logits_teacher.detach().double() / temperature, dim=-1)
    return (logp_teacher.exp() * (logp_teacher - logp_student)).sum(dim=-1)
