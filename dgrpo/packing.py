"""Token-budget micro-batches: which groups, or row slices of a group, share a forward/backward.

A micro-batch's activations live until its backward, so its size is bounded in tokens, not
rows: the forward of a group runs its prompt once and its G completions (`group_forward`),
`P + G × C` tokens. Groups are packed first-fit decreasing into micro-batches of at most
`budget` tokens; a group over the budget is split into row slices that each fit (each slice
re-runs the prompt: one extra prompt forward per extra slice, never the G-fold prompt). The
loss is normalised over the whole optimizer batch (`BatchTotals`), so the gradient does not
depend on how the batch was cut.
"""

from __future__ import annotations

from dgrpo.objective import BatchTotals
from dgrpo.rollout import Group


def forward_tokens(group: Group) -> int:
    """Tokens one forward of the group runs: the prompt once + its padded completions."""
    return group.prompt_ids.shape[1] + group.completion_ids.numel()


def split_rows(group: Group, budget: int) -> list[Group]:
    """The group, or row slices of it that each fit the budget (at least one row per slice)."""
    if forward_tokens(group) <= budget:
        return [group]
    per_row = group.completion_ids.shape[1]
    rows = max(1, (budget - group.prompt_ids.shape[1]) // max(1, per_row))
    return [group.select(slice(i, i + rows)) for i in range(0, group.size, rows)]


def micro_batches(groups: list[Group], budget: int) -> list[list[Group]]:
    """Pack groups into micro-batches of at most `budget` forward tokens (first-fit decreasing).

    A piece larger than the budget on its own (one row of a very long prompt) gets a micro-batch
    of its own. Deterministic: ties keep the input order.
    """
    pieces = [piece for group in groups for piece in split_rows(group, budget)]
    bins: list[list[Group]] = []
    room: list[int] = []
    for piece in sorted(pieces, key=forward_tokens, reverse=True):
        cost = forward_tokens(piece)
        slot = next((i for i, free in enumerate(room) if cost <= free), None)
        if slot is None:
            bins.append([piece])
            room.append(budget - cost)
        else:
            bins[slot].append(piece)
            room[slot] -= cost
    return bins


def batch_totals(groups: list[Group]) -> BatchTotals:
    """Rows and loss tokens of the whole optimizer batch (the loss's normalisers)."""
    return BatchTotals(
        rows=sum(group.size for group in groups),
        tokens=float(sum(int(group.loss_mask.sum()) for group in groups)),
    )
