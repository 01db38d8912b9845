"""Every training objective of dgrpo, as pure functions on tensors (docs/objective.md).

One design throughout: each loss returns a per-token tensor ``[B, T]`` over completion
positions only (``clipped_pg`` also returns detached statistics), and ``aggregate(per_token,
mask, mode)`` is the single place where padding is dropped and the batch is reduced. Names map
to functions through the registries below (``AGGREGATIONS``, ``ADVANTAGE_SCALES``,
``LAMBDA_SCHEDULES``) and the OPD estimators through ``dgrpo.objective.TERMS``, never through
if/elif ladders elsewhere.

- ``policy``: ``group_advantages``, ``clipped_pg``, ``combine_advantage_level``, ``kl_to_ref``,
  ``cross_entropy``.
- ``distill``: ``reverse_kl_topk``, ``reverse_kl_sampled`` (the exact ``full`` reverse KL and kd's
  forward KL are ``dgrpo.logprobs.logprobs_and_kl``, computed from hidden states).
- ``aggregate``: ``aggregate``, ``masked_mean``, ``lambda_schedule``.
"""

from dgrpo.losses.aggregate import (
    AGGREGATIONS,
    LAMBDA_SCHEDULES,
    AggregationMode,
    LambdaScheduleKind,
    aggregate,
    lambda_schedule,
    masked_mean,
)
from dgrpo.losses.distill import ReverseKLEstimator, reverse_kl_sampled, reverse_kl_topk
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
    "AdvantageScale",
    "AggregationMode",
    "LambdaScheduleKind",
    "ReverseKLEstimator",
    "aggregate",
    "clipped_pg",
    "combine_advantage_level",
    "cross_entropy",
    "group_advantages",
    "kl_to_ref",
    "lambda_schedule",
    "masked_mean",
    "reverse_kl_sampled",
    "reverse_kl_topk",
]
