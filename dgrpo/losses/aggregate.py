"""Reducing per-token losses to one scalar, and weighting loss terms against each other.

Every loss in this package returns a per-token tensor ``[B, T]`` over completion positions only;
``aggregate`` is the single place where padding is dropped and the batch is reduced.
"""

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

AggregationMode = Literal["token", "seq", "constant"]
LambdaScheduleKind = Literal["constant", "linear_decay", "warmup"]


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over positions where ``mask`` is non-zero; 0 when the mask is empty.

    Shapes: ``values`` and ``mask`` both ``[B, T]`` (or any equal shapes). Values at masked-out
    positions are never read, so NaN/inf padding cannot leak in.
    """
    return _safe_divide(_masked_sum_per_row(values, mask).sum(), mask.to(values.dtype).sum())


def _masked_sum_per_row(per_token: Tensor, mask: Tensor) -> Tensor:
    """Σ_t loss[b, t]·mask[b, t] -> ``[B]``, reading only unmasked positions."""
    weights = mask.to(per_token.dtype)
    return torch.where(mask != 0, per_token, 0.0).mul(weights).sum(dim=-1)


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, and 0 where the denominator is 0 (empty masks)."""
    nonempty = denominator > 0
    return torch.where(nonempty, numerator / torch.where(nonempty, denominator, 1.0), 0.0)


def _aggregate_token(per_token: Tensor, mask: Tensor, constant: float | None, total: float | None):
    tokens = mask.to(per_token.dtype).sum() if total is None else per_token.new_tensor(float(total))
    return _safe_divide(_masked_sum_per_row(per_token, mask).sum(), tokens)


def _aggregate_seq(per_token: Tensor, mask: Tensor, constant: float | None, total: float | None):
    row_mean = _safe_divide(_masked_sum_per_row(per_token, mask), mask.to(per_token.dtype).sum(-1))
    rows = row_mean.numel() if total is None else total
    return row_mean.sum() / rows if rows else per_token.new_zeros(())


def _aggregate_constant(per_token: Tensor, mask: Tensor, constant: float | None, total: float | None):
    if constant is None or not constant > 0:
        raise ValueError(f"aggregate mode 'constant' needs a constant > 0, got {constant!r}")
    return _masked_sum_per_row(per_token, mask).sum() / constant


AGGREGATIONS: dict[str, Callable[[Tensor, Tensor, float | None, float | None], Tensor]] = {
    "token": _aggregate_token,
    "seq": _aggregate_seq,
    "constant": _aggregate_constant,
}


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    mode: AggregationMode = "token",
    constant: float | None = None,
    total: float | None = None,
) -> Tensor:
    """Reduce a per-token loss ``[B, T]`` (completion positions only) to a scalar.

    With m = mask and ℓ = per_token:

    - ``"token"`` (DAPO, default): Σ_{b,t} ℓ·m / Σ_{b,t} m — every real token of the
      batch weighs the same, so long completions are not down-weighted.
    - ``"seq"`` (original GRPO): (1/B) Σ_b [Σ_t ℓ·m / Σ_t m] — the mean over all B rows of
      each row's masked mean; a row with an empty mask contributes 0 and still counts in B
      (as TRL does).
    - ``"constant"`` (Dr. GRPO): Σ_{b,t} ℓ·m / ``constant``, e.g. max completion length × B,
      so the normaliser does not depend on the sampled lengths.

    ``total`` makes this a micro-batch's exact SHARE of a larger batch's aggregate: the
    denominator becomes the whole batch's Σ m ("token") or row count ("seq"; "constant" is
    given the whole batch's constant), so the shares of all micro-batches sum to the
    aggregate of the batch however it was split. None: this tensor is the whole batch.

    ``mask`` is ``[B, T]`` bool or float (float masks act as per-token weights). Padding
    positions are never read, so NaN/inf padding cannot leak into the loss; an all-zero mask
    gives 0, not NaN. No stop-gradient here.
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation mode {mode!r}; choose one of {sorted(AGGREGATIONS)}")
    return AGGREGATIONS[mode](per_token, mask, constant, total)


def _schedule_constant(step: int, total_steps: int, lam: float, warmup_steps: int) -> float:
    return lam


def _schedule_linear_decay(step: int, total_steps: int, lam: float, warmup_steps: int) -> float:
    if total_steps <= 0:
        raise ValueError(f"linear_decay needs total_steps > 0, got {total_steps}")
    return lam * min(1.0, max(0.0, 1.0 - step / total_steps))


def _schedule_warmup(step: int, total_steps: int, lam: float, warmup_steps: int) -> float:
    if warmup_steps <= 0:
        return lam
    return lam * min(1.0, max(0.0, step / warmup_steps))


LAMBDA_SCHEDULES: dict[str, Callable[[int, int, float, int], float]] = {
    "constant": _schedule_constant,
    "linear_decay": _schedule_linear_decay,
    "warmup": _schedule_warmup,
}


def lambda_schedule(
    step: int,
    total_steps: int,
    lam: float,
    kind: LambdaScheduleKind = "constant",
    warmup_steps: int = 0,
) -> float:
    """The distillation weight λ at optimizer step ``step`` (0-based).

    - ``"constant"``: λ.
    - ``"linear_decay"``: λ·(1 − step/total_steps), clipped to [0, λ]: distillation leads early
      and hands over to the reward signal by the end of training.
    - ``"warmup"``: λ·min(1, step/warmup_steps): a linear ramp from 0 to λ, then constant
      (``warmup_steps`` ≤ 0 means no ramp).
    """
    if kind not in LAMBDA_SCHEDULES:
        raise ValueError(f"unknown λ schedule {kind!r}; choose one of {sorted(LAMBDA_SCHEDULES)}")
    return LAMBDA_SCHEDULES[kind](step, total_steps, lam, warmup_steps)
