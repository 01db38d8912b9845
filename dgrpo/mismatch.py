"""Sampler/trainer mismatch: a rollout server's log-probs differ from the trainer's own for the
same weights (other kernels, precision, batching), so its samples are slightly off-policy.

Truncated importance sampling (TIS; Yao et al. 2025, "Your efficient RL framework secretly
brings you off-policy RL training") weights every loss token by

    w_t = min(π_old(y_t) / π_sampler(y_t), C)

with π_old the trainer's log-probs of the policy that sampled (stop-gradient) and π_sampler the
server's; C bounds the variance. Pure functions of tensors.
"""

import torch
from torch import Tensor


def truncated_is_weights(
    logp_old: Tensor, logp_sampler: Tensor, mask: Tensor, cap: float | None
) -> tuple[Tensor, dict[str, Tensor]]:
    """(w [N, C], statistics) for completion tokens; w is detached and 0 outside the mask.

    logp_old, logp_sampler: [N, C] log-probs of the sampled tokens (trainer, server); a NaN in
    logp_sampler (a token the server gave no log-prob for) counts as no mismatch. cap None: no
    correction (w = 1), the statistics are still measured.
    """
    with torch.no_grad():  # weights and statistics: no gradient reaches either log-prob
        sampler = torch.where(torch.isnan(logp_sampler), logp_old, logp_sampler)
        log_ratio = (logp_old - sampler).masked_fill(~mask, 0.0)
        ratio = log_ratio.exp()
        weights = ratio if cap is None else ratio.clamp(max=cap)
        weights = weights.masked_fill(~mask, 0.0) if cap is not None else mask.to(ratio.dtype)
        tokens = mask.sum().clamp(min=1)
        stats = {
            "rollout/is_weight_mean": weights.sum() / tokens,
            "rollout/is_truncated_frac": ((ratio > cap) & mask).sum() / tokens
            if cap is not None
            else torch.zeros(()),
            "rollout/logp_diff_max": log_ratio.abs().max(),
            # k3 estimate of KL(π_sampler ‖ π_old) from the sampler's own tokens
            "rollout/mismatch_kl": ((ratio - 1 - log_ratio) * mask).sum() / tokens,
        }
    return weights, stats
