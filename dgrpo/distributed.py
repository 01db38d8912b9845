"""Multi-process training on torch.distributed: torchrun init, fail-fast, rank-0 helpers, the
gradient sum of replicas.

Launched by torchrun (`torchrun --nproc_per_node N -m dgrpo.cli train CONFIG`), every process
takes its slice of each step's batch. parallel.strategy decides what a process holds:

- replicate: a full replica of the student and its optimizer state; after the micro-batches of
  an update the gradients are summed across processes once (`sum_gradients`, one flat
  all-reduce), so every replica takes the same optimizer step.
- fsdp: FSDP2 shards of it (`dgrpo.sharding`): parameters are all-gathered per decoder layer
  at every call of that layer, so every process must call the layers the same number of times
  (`dgrpo.sharding` explains how the trainer keeps the processes in lockstep).

Fail fast: an exception on one process is published in the process group's store before it
leaves; a watchdog thread on every other process polls that key and stops its process within
a second with the failed process's message (a collective on NCCL would otherwise wait for
parallel.timeout_minutes). Without torchrun (no WORLD_SIZE in the environment) every helper is
a no-op and training is single-process.
"""

import os
import sys
import threading
import time
import traceback
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
def process_group(device_type: str, timeout_minutes: float = 30.0) -> Iterator[None]:
    """Member of torchrun's process group for the duration (gloo on CPU, nccl on CUDA); a no-op
    when not launched by torchrun, or when the group already exists (the caller owns it).

    An exception leaving the block is published to the other processes (they stop at once
    with its message) instead of leaving them blocked in their next collective."""
    if not launched() or dist.is_initialized():
        yield
        return
    if device_type == "cuda":
        torch.cuda.set_device(local_device(torch.device("cuda")))
    # generous: a hang, not a failure (failures stop every process through the watchdog)
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    watchdog = Watchdog(_store(), dist.get_rank())
    watchdog.start()
    try:
        yield
    except BaseException as error:
        watchdog.stop()
        if not isinstance(error, UserError):  # a UserError is every process's own clean message
            _stop_on_peer_failure(watchdog.store)  # a collective failed because another process did
        publish_failure(watchdog.store, dist.get_rank(), error)
        raise  # no destroy_process_group: it may wait for processes that are stopping
    watchdog.stop()
    dist.destroy_process_group()


FAILURE_KEY = "dgrpo/failure"
_POLL_S = 0.2  # watchdog poll interval
_GRACE_S = 1.0  # a failed process stays this long after publishing, so peers read its message


def _store() -> dist.Store:
    """The default process group's key-value store (torchrun's agent store, or rank 0's)."""
    return dist.distributed_c10d._get_default_store()


def failure_message(rank_id: int, error: BaseException) -> str:
    """One line naming the process and the error, plus where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"rank {rank_id} failed: {type(error).__name__}: {text}{where}"


def publish_failure(store: dist.Store, rank_id: int, error: BaseException) -> None:
    """Tell every other process that this one failed (the first failure wins), then wait a
    moment so they read it before this process's exit tears down a store it hosts."""
    try:
        store.compare_set(FAILURE_KEY, "", failure_message(rank_id, error))
    except Exception:  # the store is gone: the others are stopping already
        return
    time.sleep(_GRACE_S)


def _stop_on_peer_failure(store: dist.Store) -> None:
    """If another process published a failure, stop this one with that message."""
    try:
        if store.check([FAILURE_KEY]):
            _stop(store.get(FAILURE_KEY).decode())
    except Exception:
        return


def _stop(message: str) -> None:
    """Exit now, from any thread (the main thread may be blocked inside a collective)."""
    sys.stderr.write(f"dgrpo: error: stopped rank {rank()}: {message}\n")
    sys.stderr.flush()
    os._exit(1)


class Watchdog(threading.Thread):
    """Polls the store for a published failure and stops this process when one appears."""

    def __init__(self, store: dist.Store, rank_id: int, interval_s: float = _POLL_S):
        super().__init__(name=f"dgrpo-watchdog-{rank_id}", daemon=True)
        self.store, self.interval_s = store, interval_s
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:
                failed = self.store.check([FAILURE_KEY])
            except Exception:  # store gone (its host exited); nothing more to learn here
                return
            if failed and not self._stopped.is_set():
                _stop(self.store.get(FAILURE_KEY).decode())

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()


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
