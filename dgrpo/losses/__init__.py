"""Every training objective of dgrpo, as pure functions on tensors (DESIGN.md "Objective").

One design throughout: each loss returns a per-token tensor ``[B, T]`` over completion
positions only (``clipped_pg`` also returns detached statistics), and ``aggregate(per_token,
mask, mode)`` is the single place where padding is dropped and the batch is reduced. Names map
to functions through the registries below (``REVERSE_KL_ESTIMATORS``, ``AGGREGATIONS``,
``ADVANTAGE_SCALES``, ``LAMBDA_SCHEDULES``), never through if/elif ladders elsewhere.

- ``policy``: ``group_advantages``, ``clipped_pg``, ``combine_advantage_level``, ``kl_to_ref``,
  ``cross_entropy``.
- ``distill``: ``reverse_kl_full`` / ``reverse_kl_topk`` / ``reverse_kl_sampled``, ``forward_kl``.
- ``aggregate``: ``aggregate``, ``masked_mean``, ``combine_loss_level``, ``lambda_schedule``.
"""

from dgrpo.losses.aggregate import (
    AGGREGATIONS,
    LAMBDA_SCHEDULES,
    AggregationMode,
    LambdaScheduleKind,
    aggregate,
    combine_loss_level,
    lambda_schedule,
    masked_mean,
)
from dgrpo.losses.distill import (
    REVERSE_KL_ESTIMATORS,
    ReverseKLEstimator,
    forward_kl,
    reverse_kl_full,
    reverse_kl_sampled,
    reverse_kl_topk,
)
from dgrpo.losses.policy import (
    ADVANTAGE_SCALES,
    AdvantageScale,
    clipped_pg,
    combine_advantage_level,
    cross_entropy,
    group_advantages,
    kl_to_ref,
)

__all__ = [
    "ADVANTAGE_SCALES",
    "AGGREGATIONS",
    "LAMBDA_SCHEDULES",
    "REVERSE_KL_ESTIMATORS",
    "AdvantageScale",
    "AggregationMode",
    "LambdaScheduleKind",
    "ReverseKLEstimator",
    "aggregate",
    "clipped_pg",
    "combine_advantage_level",
    "combine_loss_level",
    "cross_entropy",
    "forward_kl",
    "group_advantages",
    "kl_to_ref",
    "lambda_schedule",
    "masked_mean",
    "reverse_kl_full",
    "reverse_kl_sampled",
    "reverse_kl_topk",
]
