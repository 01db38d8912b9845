"""Multi-process training on torch.distributed: torchrun init, rank-0 helpers, the gradient sum.

Launched by torchrun (`torchrun --nproc_per_node N -m dgrpo.cli train CONFIG`), every process
holds a full replica of the student and takes its slice of each step's batch; after the
micro-batches of an update, the gradients are summed across processes once (one flat
all-reduce), so every replica takes the same optimizer step. Without torchrun (no WORLD_SIZE
in the environment) every helper is a no-op and training is single-process.

Why replicas and not FSDP sharding: FSDP2 (`fully_shard`) runs on gloo/CPU here, but it
all-gathers a layer's parameters at every call of that layer, in lockstep on all ranks, and
dgrpo calls the decoder layers a data-dependent number of times per rank (sampling stops when
a rank's completions all stopped; a group runs its prompt and its completions as two calls;
micro-batch counts depend on each rank's lengths). A rank that calls a layer fewer times
leaves the others blocked in the all-gather. Replicas keep all collectives at fixed points of
the step: the loss normalisers, the gradient sum and the metrics.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

from dgrpo.errors import UserError


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def process_group(device_type: str) -> Iterator[None]:
    """Member of torchrun's process group for the duration (gloo on CPU, nccl on CUDA); a no-op
    when not launched by torchrun, or when the group already exists (the caller owns it)."""
    if not launched() or dist.is_initialized():
        yield
        return
    if device_type == "cuda":
        torch.cuda.set_device(local_device(torch.device("cuda")))
    # generous: rank 0 writes checkpoints while the other ranks wait at the next collective
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=timedelta(minutes=30))
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This process's GPU (torchrun's LOCAL_RANK) for a CUDA run; `device` otherwise."""
    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def rank() -> int:
    """This process's rank; torchrun's RANK before init (so the CLI can quiet other ranks)."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes config, metrics and checkpoints."""
    return rank() == 0


def check_divisible(batch_size: int, field: str) -> None:
    """Every rank takes an equal slice of each batch."""
    if batch_size % world_size():
        raise UserError(
            f"{field} {batch_size} is not divisible by the {world_size()} processes",
            f"set {field} to a multiple of {world_size()}",
        )


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def sum_floats(values: list[float]) -> list[float]:
    """Element-wise sum over ranks (float64, so token counts stay exact)."""
    if not dist.is_initialized():
        return list(values)
    # nccl reduces only GPU tensors
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.tolist()


def gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order (pickled; for small things such as metrics and RNG)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank, so the replicas start identical."""
    if not dist.is_initialized():
        return
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """grad ← Σ_ranks grad, in place, with no division by the world size: each rank's loss is
    already its share of the global loss (normalised by the global totals), so the gradient of
    the global loss is the sum. A parameter without a gradient on this rank contributes zeros."""
    if not dist.is_initialized():
        return
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    grads = [param.grad for param in params]
    for bucket in _buckets(grads):
        flat = torch.cat([grad.reshape(-1) for grad in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        for grad, part in zip(bucket, flat.split([grad.numel() for grad in bucket]), strict=True):
            grad.copy_(part.view_as(grad))


def _buckets(grads: list[torch.Tensor], size: int = 2**25) -> list[list[torch.Tensor]]:
    """Same-dtype runs of gradients of about `size` elements: few all-reduce calls, and the
    flat copy never holds more than one bucket."""
    buckets: list[list[torch.Tensor]] = []
    filled = size
    for grad in grads:
        if filled + grad.numel() > size or grad.dtype != buckets[-1][0].dtype:
            buckets.append([])
            filled = 0
        buckets[-1].append(grad)
        filled += grad.numel()
    return buckets
