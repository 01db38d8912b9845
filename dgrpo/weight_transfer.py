"""The wire side of vLLM's weight-transfer API, as `dgrpo serve` receives it.

vLLM (`--weight-transfer-config '{"backend": ...}'`) takes new weights in four calls:
POST /init_weight_transfer_engine {"init_info": ...} once, then per update POST
/start_weight_update, POST /update_weights {"update_info": ...} (one or more) and POST
/finish_weight_update. Backends:

- gloo (this module, CPU): the trainer (rank 0) opens a TCP store at init_info's
  master_address:master_port and a gloo group of init_info.world_size ranks that the server
  joins at rank rank_offset; update_info {names, dtype_names, shapes} announces the tensors the
  trainer then broadcasts one by one, in that order. The same fields as vLLM's nccl backend,
  whose transport is NCCL between GPUs.
- disk: update_info {"path"} is an absolute directory of *.safetensors, as vLLM's disk backend.

POST /update_weights_from_disk {"model_path"} (SGLang's route) is the fallback for servers
without the weight-transfer API: the trainer saves, the server reloads.
"""

from datetime import timedelta

import torch
import torch.distributed as dist

from dgrpo.server.engine import Engine, RequestError


def gloo_group(address: str, port: int, rank: int, world_size: int, timeout_s: float = 300.0):
    """A gloo group of its own (not torch.distributed's default one, which torchrun may own)."""
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(address, port, world_size, rank == 0, timeout=timeout, wait_for_workers=False)
    return dist.ProcessGroupGloo(store, rank, world_size, timeout)


def describe(named: list[tuple[str, torch.Tensor]]) -> dict:
    """update_info announcing tensors (vLLM nccl/gloo field names)."""
    return {
        "names": [name for name, _ in named],
        "dtype_names": [str(tensor.dtype).removeprefix("torch.") for _, tensor in named],
        "shapes": [list(tensor.shape) for _, tensor in named],
        "packed": False,
    }


class Receiver:
    """Server side of the weight-transfer routes for one engine; `backend` as the server's
    --weight-transfer-config (None: the routes answer that weight transfer is off)."""

    def __init__(self, engine: Engine, backend: str | None):
        if backend not in (None, "gloo", "disk"):
            raise ValueError(f"weight-transfer backend {backend!r}: dgrpo serve supports gloo and disk")
        self.engine, self.backend, self.group, self.active = engine, backend, None, False

    def init(self, body: dict) -> dict:
        info = self._required(body, "init_info")
        if self.backend == "disk" and "master_port" in info:
            raise RequestError("this server's weight-transfer backend is disk, not a broadcast one")
        if self.backend == "gloo":
            if "master_port" not in info:
                raise RequestError(
                    "init_info lacks master_address/master_port: this server's backend is gloo"
                )
            self.group = gloo_group(
                str(info["master_address"]),
                int(info["master_port"]),
                int(info["rank_offset"]),
                int(info["world_size"]),
            )
        return {"message": "Weight transfer initialized"}

    def start(self, body: dict) -> dict:
        self._required(body, None)
        self.active = True
        return {"message": "Weight update started"}

    def update(self, body: dict) -> dict:
        info = self._required(body, "update_info")
        if not self.active:
            raise RequestError("call /start_weight_update before /update_weights")
        if self.backend == "disk":
            self.engine.load_directory(str(info["path"]))
            return {"message": "Weights updated"}
        if self.group is None:
            raise RequestError("call /init_weight_transfer_engine before /update_weights")
        if info.get("packed"):
            raise RequestError("packed transfers are not supported by dgrpo serve; send packed=false")
        names, dtypes, shapes = info["names"], info["dtype_names"], info["shapes"]
        if not len(names) == len(dtypes) == len(shapes):
            raise RequestError("names, dtype_names and shapes must have the same length")
        problem = None
        with self.engine.lock, torch.no_grad():
            for name, dtype, shape in zip(names, dtypes, shapes, strict=True):
                tensor = torch.empty(shape, dtype=getattr(torch, dtype))
                # receive every announced tensor, even after a bad one: the trainer is broadcasting
                self.group.broadcast(tensor, 0).wait()
                try:
                    self.engine.load_named([(name, tensor)])
                except RequestError as err:
                    problem = problem or err
        if problem is not None:
            raise problem
        return {"message": "Weights updated"}

    def finish(self, body: dict) -> dict:
        self._required(body, None)
        if not self.active:
            raise RequestError("no weight update is active")
        self.active = False
        self.engine.version += 1
        return {"message": "Weight update finished"}

    def from_disk(self, body: dict) -> dict:
        """SGLang's /update_weights_from_disk: reload the model from a saved directory."""
        count = self.engine.load_directory(str(body.get("model_path", "")))
        return {"success": True, "message": f"loaded {count} tensors"}

    def _required(self, body: dict, key: str | None) -> dict:
        if self.backend is None:
            raise RequestError("weight transfer is off: start the server with --weight-transfer-config")
        if key is None:
            return {}
        if not isinstance(body.get(key), dict):
            raise RequestError(f"missing {key!r} in request body")
        return body[key]
