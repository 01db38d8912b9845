"""Policy-optimisation terms: group-relative advantages, the clipped GRPO surrogate, the
advantage-level dGRPO combination, KL to a reference policy, and cross-entropy (sft).

Per-token functions return ``[B, T]`` over completion positions only; reduce with ``aggregate``.
"""

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from dgrpo.losses.aggregate import masked_mean

AdvantageScale = Literal["group", "batch", "none"]


def _group_std(grouped: Tensor, eps: float) -> Tensor:
    return grouped.std(dim=-1, keepdim=True, correction=0) + eps


def _batch_std(grouped: Tensor, eps: float) -> Tensor:
    return grouped.std(correction=0) + eps


def _no_scale(grouped: Tensor, eps: float) -> Tensor:
    return grouped.new_ones(())


ADVANTAGE_SCALES: dict[str, Callable[[Tensor, float], Tensor]] = {
    "group": _group_std,
    "batch": _batch_std,
    "none": _no_scale,
}


def group_advantages(
    rewards: Tensor,
    group_size: int,
    scale: AdvantageScale = "group",
    eps: float = 1e-6,
) -> Tensor:
    """Group-relative advantages A_i = (r_i − mean_group(r)) / (std + ε) (docs/objective.md).

    ``std`` is the population std (divide by n, ``correction=0``; not ``torch.std``'s default
    Bessel correction) of the group for ``"group"``, of the whole batch for ``"batch"``; for
    ``"none"`` there is no division (and no ε), as in Dr. GRPO.

    Shapes: ``rewards`` ``[num_groups * G]`` (completions of one prompt contiguous) or
    ``[num_groups, G]``; returns ``[num_groups * G]``. A group whose rewards are all equal —
    including G = 1 — gets exact zeros (no NaN, no rounding noise). No gradient is involved:
    rewards are plain numbers, and ``clipped_pg`` detaches its advantages anyway.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.dim() == 2 and rewards.shape[1] != group_size:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} do not have G={group_size}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(ADVANTAGE_SCALES)}")
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    grouped = rewards.reshape(-1, group_size)
    centered = grouped - grouped.mean(dim=-1, keepdim=True)
    # a tied group carries no signal; zero it exactly rather than divide rounding noise by ε
    tied = grouped.amax(dim=-1, keepdim=True) == grouped.amin(dim=-1, keepdim=True)
    centered = torch.where(tied, 0.0, centered)
    return (centered / ADVANTAGE_SCALES[scale](grouped, eps)).reshape(-1)


def _per_token_adv(adv: Tensor, like: Tensor) -> Tensor:
    """Sequence-level ``[B]`` advantages broadcast over tokens; ``[B, T]`` passed through."""
    if adv.shape == like.shape:
        return adv
    if adv.dim() == 1 and adv.shape[0] == like.shape[0]:
        return adv[:, None].expand_as(like)
    raise ValueError(f"adv of shape {tuple(adv.shape)} fits neither [B] nor {tuple(like.shape)}")


def clipped_pg(
    logp: Tensor,
    logp_old: Tensor,
    adv: Tensor,
    eps_low: float,
    eps_high: float,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped GRPO surrogate (docs/objective.md, GRPO term; PPO-clip with DAPO's ε_low/ε_high).

    ρ_t = exp(log π_θ(y_t) − log π_old(y_t)),
    L_t = −min(ρ_t·A_t, clip(ρ_t, 1 − ε_low, 1 + ε_high)·A_t).

    Shapes: ``logp``, ``logp_old`` ``[B, T]`` log-probs of the sampled completion tokens;
    ``adv`` ``[B]`` (A_i broadcast over the sequence) or ``[B, T]`` (token-level Â_t from
    ``combine_advantage_level``); ``mask`` ``[B, T]`` (only used for the statistics). Returns
    the per-token loss ``[B, T]`` and detached scalar statistics: ``clip_fraction`` (share of
    real tokens where the clip binds, i.e. ρ > 1+ε_high with A > 0 or ρ < 1−ε_low with A < 0,
    so the token's gradient is zero), ``clip_fraction_low``/``_high``, ``ratio_mean``/``_min``/
    ``_max`` and ``approx_kl`` (k3 estimate of KL(π_old ‖ π_θ): ρ − 1 − log ρ).

    Stop-gradient: ``logp_old`` and ``adv`` are detached; the gradient flows through ρ_t only.
    """
    # π_old is the fixed behaviour policy: no gradient into the old log-probs
    log_ratio = logp - logp_old.detach()
    # advantages are constants of the surrogate: no gradient into rewards or teacher terms
    adv = _per_token_adv(adv.detach(), logp)
    ratio = torch.exp(log_ratio)
    clipped_ratio = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    per_token = -torch.minimum(ratio * adv, clipped_ratio * adv)

    with torch.no_grad():
        real = torch.ones_like(logp, dtype=torch.bool) if mask is None else mask != 0
        clipped_low = ((ratio < 1.0 - eps_low) & (adv < 0)).to(logp.dtype)
        clipped_high = ((ratio > 1.0 + eps_high) & (adv > 0)).to(logp.dtype)
        any_real = real.any()
        stats = {
            "clip_fraction": masked_mean(clipped_low + clipped_high, real),
            "clip_fraction_low": masked_mean(clipped_low, real),
            "clip_fraction_high": masked_mean(clipped_high, real),
            "ratio_mean": masked_mean(ratio, real),
            "ratio_min": torch.where(any_real, ratio.masked_fill(~real, torch.inf).amin(), 1.0),
            "ratio_max": torch.where(any_real, ratio.masked_fill(~real, -torch.inf).amax(), 1.0),
            "approx_kl": masked_mean(ratio - 1.0 - log_ratio, real),
        }
    return per_token, stats


def combine_advantage_level(
    adv: Tensor,
    logp_old: Tensor,
    logp_teacher: Tensor,
    lam: float,
) -> Tensor:
    """Advantage-level dGRPO (docs/objective.md): Â_t = A_i − λ·(log π_old(y_t) − log π_T(y_t)).

    The sampled reverse-KL term, evaluated under the behaviour policy π_old, becomes a per-token
    penalty on the GRPO advantage; feed Â to ``clipped_pg`` so distillation is clipped alike.
    Shapes: ``adv`` ``[B]`` (or ``[B, T]``), ``logp_old`` and ``logp_teacher`` ``[B, T]``
    log-probs of the sampled tokens; returns ``[B, T]``. Stop-gradient: every input is detached,
    so Â_t is a constant of the surrogate.
    """
    # Â is a constant advantage: no gradient into rewards, the old policy or the teacher
    kl_sample = (logp_old - logp_teacher).detach()
    return _per_token_adv(adv.detach(), kl_sample) - lam * kl_sample


def kl_to_ref(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """Per-token β-term penalty toward π_ref: Schulman's k3 estimator (docs/objective.md).

    With δ_t = log π_ref(y_t) − log π_θ(y_t): k3_t = exp(δ_t) − δ_t − 1 ≥ 0. Its VALUE is an
    unbiased estimate of the reverse KL(π_θ ‖ π_ref) when y_t ~ π_θ. Its GRADIENT, taken through
    log π_θ(y_t) with the sample fixed (as the loss does), is (1 − π_ref/π_θ)(y_t)·∇log π_θ(y_t),
    whose expectation under y_t ~ π_θ is −Σ_y π_ref(y)∇log π_θ(y) = ∇_θ KL(π_ref ‖ π_θ): the
    penalty pulls along the FORWARD KL, not the reverse KL its value reports (tested exactly).
    Shapes: ``[B, T]`` log-probs of the sampled tokens; returns ``[B, T]``. Stop-gradient:
    ``logp_ref`` is detached; ∂k3_t/∂log π_θ(y_t) = 1 − exp(δ_t).
    """
    # the reference policy is frozen: no gradient into its log-probs
    delta = logp_ref.detach() - logp
    return torch.exp(delta) - delta - 1.0


def cross_entropy(logp_targets: Tensor) -> Tensor:
    """Per-token negative log-likelihood −log π_θ(y_t) of fixed target tokens (method ``sft``).

    Shapes: ``logp_targets`` ``[B, T]`` log-probs of the reference/teacher response tokens;
    returns ``[B, T]``. No stop-gradient.
    """
    return -logp_targets
