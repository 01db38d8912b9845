"""Pushing the policy's weights to the rollout server after every optimizer step.

`rollout.weight_sync` picks the way (dgrpo.weight_transfer has the protocol):
- gloo / nccl: vLLM's weight-transfer API, tensors broadcast from this process (rank 0) to the
  server's workers; gloo over TCP on CPU, nccl between GPUs (vLLM's own trainer helpers, from
  the `vllm` extra);
- ipc: the same API for a colocated vLLM server on the trainer's GPU (CUDA IPC handles);
- disk: the same API, passing a saved safetensors directory (vLLM's disk backend);
- reload: save, then POST /update_weights_from_disk (servers without the weight-transfer API).
"""

import base64
import logging
import pickle
import socket
import threading
from pathlib import Path
from typing import Protocol

import torch

from dgrpo.errors import UserError
from dgrpo.remote.client import ServerClient, ServerUnavailableError
from dgrpo.weight_transfer import describe, gloo_group

log = logging.getLogger(__name__)


class WeightPush(Protocol):
    def push(self, model: torch.nn.Module) -> None:
        """Make the server's weights equal the model's; returns once the server uses them."""
        ...


def named_weights(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(HF name, tensor) of every parameter; tied weights once (named_parameters dedups).
    A sharded parameter (FSDP2 DTensor) is gathered whole first."""
    out = []
    for name, param in model.named_parameters():
        tensor = param.detach()
        if hasattr(tensor, "full_tensor"):
            tensor = tensor.full_tensor()
        out.append((name, tensor.contiguous()))
    return out


class BroadcastPush:
    """vLLM weight transfer by collective broadcast: gloo (CPU) or nccl (GPU, vllm installed)."""

    def __init__(self, client: ServerClient, backend: str, address: str):
        self.client, self.backend = client, backend
        port = _free_port(address)
        init_info = {"master_address": address, "master_port": port, "rank_offset": 1, "world_size": 2}
        timeout_s = client.cfg.timeout_s

        def join() -> object:
            return _nccl_group(init_info) if backend == "nccl" else gloo_group(address, port, 0, 2, timeout_s)

        # the server's HTTP call returns once it has joined our group; if it fails, we stop waiting
        self.group = _alongside(
            join, lambda: client.post("/init_weight_transfer_engine", {"init_info": init_info})
        )

    def push(self, model: torch.nn.Module) -> None:
        named = named_weights(model)

        def send() -> None:
            if self.backend == "nccl":
                from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferEngine

                NCCLWeightTransferEngine.trainer_send_weights(iter(named), self.group)
            else:
                for _, tensor in named:
                    self.group.broadcast(tensor.cpu(), 0).wait()

        self.client.post("/start_weight_update", {})
        try:
            # the server's /update_weights returns once it has received every announced tensor
            _alongside(send, lambda: self.client.post("/update_weights", {"update_info": describe(named)}))
        except RuntimeError as err:  # the collective broke: the server died or hung mid-transfer
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ServerUnavailableError(
                f"rollout server {self.client.url} was lost during the weight push ({reason})",
                f"{self.client.fix}; then rerun with --resume",
            ) from None
        self.client.post("/finish_weight_update", {})


class DiskPush:
    """Save the model's safetensors to `directory`, then have the server load them: through the
    weight-transfer API (`disk`) or SGLang's /update_weights_from_disk (`reload`)."""

    def __init__(self, client: ServerClient, directory: Path, route: str):
        self.client, self.directory, self.route = client, directory.resolve(), route
        if route == "disk":
            client.post("/init_weight_transfer_engine", {"init_info": {}})

    def push(self, model: torch.nn.Module) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(self.directory, safe_serialization=True)
        if self.route == "disk":
            self.client.post("/start_weight_update", {})
            self.client.post("/update_weights", {"update_info": {"path": str(self.directory)}})
            self.client.post("/finish_weight_update", {})
            return
        answer = self.client.post("/update_weights_from_disk", {"model_path": str(self.directory)})
        if not answer.get("success", False):
            raise UserError(
                f"rollout server could not reload {self.directory}: {answer.get('message')}",
                "check that the server can read rollout.sync_dir at the same path",
            )


class IPCPush:
    """A colocated vLLM server on the trainer's GPU (`--weight-transfer-config '{"backend":
    "ipc"}'`): CUDA IPC handles of the parameters travel in update_info (pickled, base64, vLLM's
    `ipc_handles_pickled` field, one {GPU UUID: handle} per tensor) and the server maps the
    trainer's memory instead of copying it over a wire."""

    def __init__(self, client: ServerClient):
        self.client = client
        client.post("/init_weight_transfer_engine", {"init_info": {}})

    def push(self, model: torch.nn.Module) -> None:
        from torch.multiprocessing.reductions import reduce_tensor

        named = named_weights(model)
        if any(not tensor.is_cuda for _, tensor in named):
            raise UserError(
                "rollout.weight_sync ipc shares CUDA memory, but the student is not on a GPU",
                "run the trainer on the server's GPU (run.device cuda), or use weight_sync gloo",
            )
        gpu = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
        handles = [{gpu: reduce_tensor(tensor)} for _, tensor in named]  # tensors stay alive: parameters
        info = describe(named) | {"ipc_handles_pickled": base64.b64encode(pickle.dumps(handles)).decode()}
        del info["packed"]
        self.client.post("/start_weight_update", {})
        self.client.post("/update_weights", {"update_info": info})
        self.client.post("/finish_weight_update", {})


def weight_push(client: ServerClient, mode: str, address: str, directory: Path) -> WeightPush:
    """The pusher for rollout.weight_sync; connects to the server (gloo/nccl: joins a group)."""
    if mode in ("gloo", "nccl"):
        return BroadcastPush(client, mode, address)
    if mode == "ipc":
        return IPCPush(client)
    return DiskPush(client, directory, mode)


def _alongside(collective, request):
    """Run `collective` (our side of a group operation) in a thread while `request` asks the
    server to take part; returns the collective's result. A failed request raises at once
    (the abandoned collective times out in its daemon thread) instead of waiting for it."""
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = collective()
        except BaseException as err:  # re-raised in the caller's thread
            result["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    request()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _nccl_group(init_info: dict):
    try:
        from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferEngine
    except ImportError:
        raise UserError(
            "rollout.weight_sync nccl needs vLLM in the trainer's environment",
            "pip install 'longblocks[vllm]' on a CUDA machine, or use weight_sync gloo / disk / reload",
        ) from None
    return NCCLWeightTransferEngine.trainer_init(init_info)
