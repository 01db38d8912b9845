"""FSDP2 (`fully_shard`) for the student, the teacher and the reference, kept in lockstep.

`shard(model, ...)` applies `fully_shard` to every decoder layer and then to a root unit,
`Sharded`, that owns the rest (embeddings, final norm, lm_head). Each process then holds 1/N
of the parameters, gradients and AdamW state; a layer's parameters are all-gathered when the
layer runs and freed after it.

dgrpo never calls the HF model's own `forward`: it runs the decoder (`model.base_model`) once
for a prompt and once for its completions (`dgrpo.logprobs.group_forward`) and applies the
lm_head itself, chunk by chunk. So the root unit's forward is a trampoline: `call(model, fn,
...)` runs `fn(hf_model, ...)` inside `Sharded.forward`, where the root's parameters (the lm_head
included) are gathered, and FSDP's backward hooks attach to what `fn` returns (tensors, tuples
or dicts of them: FSDP must see the tensors to hook the backward).

Lockstep: an all-gather is a collective, so every process must run the same sharded layers the
same number of times. The trainer makes the counts equal:

- sampling runs with every unit gathered once per rollout (`gathered`), so decoding the data-dependent
  number of tokens per process makes no collective call at all;
- every frozen-model or training call runs the decoder exactly twice per group (prompt, then
  completions: `dgrpo.rollout.widen` gives every group at least two completion positions),
  and every process scores the same number of groups;
- micro-batches are padded to the same count and the same number of groups per micro-batch
  on every process (`lockstep_micro_batches`), the padding being copies of a real group with
  an empty loss mask: zero loss and zero gradient, but the same collectives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)

from dgrpo import distributed
from dgrpo.config import ParallelConfig
from dgrpo.models import DTYPES


class Sharded(nn.Module):
    """The root FSDP unit around a HF causal LM: `forward(fn, ...)` is `fn(model, ...)` with the
    root's parameters gathered."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn: Callable, *args, **kwargs):
        return fn(self.model, *args, **kwargs)


def enabled(cfg: ParallelConfig) -> bool:
    """FSDP applies: parallel.strategy fsdp and more than one process."""
    return cfg.strategy == "fsdp" and distributed.world_size() > 1


def param_dtype(cfg: ParallelConfig, device: torch.device) -> torch.dtype:
    """parallel.param_dtype; auto is bfloat16 on CUDA and float32 elsewhere."""
    if cfg.param_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[cfg.param_dtype]


def offloads(cfg: ParallelConfig, device: torch.device) -> bool:
    """parallel.cpu_offload, for CUDA runs (a CPU run's shards are in CPU memory already)."""
    return cfg.cpu_offload and device.type == "cuda"


def shard(model: nn.Module, cfg: ParallelConfig, device: torch.device) -> Sharded:
    """`fully_shard` per decoder layer and at the root; gradients are summed, not averaged."""
    policy = dict(
        mp_policy=MixedPrecisionPolicy(
            param_dtype=param_dtype(cfg, device), reduce_dtype=DTYPES[cfg.reduce_dtype]
        ),
        offload_policy=CPUOffloadPolicy() if offloads(cfg, device) else OffloadPolicy(),
    )
    if offloads(cfg, device):  # shards live in (pinned) CPU memory; FSDP copies each unit over
        model.to("cpu")
    for layer in model.base_model.layers:
        fully_shard(layer, **policy)
    root = Sharded(model)
    fully_shard(root, **policy)
    for unit in units(root):
        # each process's loss is its share of the global loss (dgrpo.trainer), so the gradient
        # of the global loss is the SUM over processes, not FSDP's default mean; a plain SUM
        # (gloo has no pre-multiplied sum)
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)
    # make the root the root before a layer runs on its own (sampling calls the decoder directly)
    root._get_fsdp_state()._lazy_init()
    return root


def inner(model: nn.Module) -> nn.Module:
    """The HF model inside a `Sharded` root (the model itself otherwise)."""
    return model.model if isinstance(model, Sharded) else model


def call(model: nn.Module, fn: Callable, *args, **kwargs):
    """`fn(hf_model, *args, **kwargs)`, through the root unit when `model` is sharded."""
    if isinstance(model, Sharded):
        return model(fn, *args, **kwargs)
    return fn(model, *args, **kwargs)


def units(model: nn.Module) -> list[FSDPModule]:
    return [module for module in model.modules() if isinstance(module, FSDPModule)]


@contextmanager
def gathered(model: nn.Module) -> Iterator[nn.Module]:
    """The HF model with every unit's parameters gathered for the duration (sampling): one
    all-gather per unit instead of one per layer call per decoded token, and no collective
    while processes decode different numbers of tokens. Costs the whole model's parameters in
    parameter dtype while it lasts."""
    if not isinstance(model, Sharded):
        yield model
        return
    layers = [unit for unit in units(model) if unit is not model]
    for unit in layers:
        unit.set_reshard_after_forward(False, recurse=False)
    for unit in units(model):
        unit.unshard()
    try:
        yield model.model
    finally:
        for unit in units(model):
            unit.reshard()
        for unit in layers:
            unit.set_reshard_after_forward(True, recurse=False)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor of a (possibly sharded) parameter or value, gathered on every process."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def lockstep_micro_batches(micro: list[list], padding) -> list[list]:
    """Pad this process's micro-batches so every process runs the same number of them, each
    with the same number of groups: a micro-batch's count is the max over processes, and the
    missing groups are `padding` (a real group with an empty loss mask)."""
    counts = [len(batch) for batch in micro]
    everyone = distributed.gather_objects(counts)
    n_batches = max(len(c) for c in everyone)
    sizes = [max(c[i] if i < len(c) else 0 for c in everyone) for i in range(n_batches)]
    padded = [list(micro[i]) if i < len(micro) else [] for i in range(n_batches)]
    for batch, size in zip(padded, sizes, strict=True):
        batch.extend(padding for _ in range(size - len(batch)))
    return padded


def empty_like_group(group):
    """One row of `group` that the loss ignores (empty loss mask): the lockstep padding."""
    row = group.select(slice(0, 1))
    return replace(row, loss_mask=torch.zeros_like(row.loss_mask))
