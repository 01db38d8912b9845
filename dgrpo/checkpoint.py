"""Checkpoints: an HF-format model directory plus everything a resumed run needs.

Layout of `<run.out_dir>/checkpoints/step-000010/`:

    config.json, model.safetensors, generation_config.json   `AutoModelForCausalLM.from_pretrained`
    tokenizer.json, tokenizer_config.json, chat_template.jinja
    trainer_state.pt      step, optimizer, LR scheduler, data cursor, RNG (python, numpy, torch;
                          `rng_ranks`: every rank's, when several processes trained)
    config.yaml           the run's resolved config
    shards/               parallel.strategy fsdp only: the sharded model and optimizer state
                          (torch.distributed.checkpoint, one file per process), what a resumed
                          run loads, on any number of processes; trainer_state.pt then holds
                          no optimizer, and the HF files are an export of the full weights

Each checkpoint is written to a hidden temporary directory, every file fsynced, and renamed
into place; a checkpoint of the same step is moved aside before and deleted only after the
rename, and older ones are pruned after it. A run killed at any point (kill -9 included)
leaves its last complete checkpoint, never a half-written one. A resumed run that restores
this state takes exactly the steps the uninterrupted run would.
"""

import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from dgrpo.errors import UserError

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
SHARDS_DIR = "shards"
PREFIX = "step-"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = complete(checkpoint_dir(run_dir))
    return found[-1] if found else None


def save(run_dir: Path, step: int, model, tokenizer, state: dict, config_yaml: str, keep_last: int) -> Path:
    """Write checkpoint `step` of a whole model (one writer), then keep only the newest `keep_last`."""
    final, tmp = _begin(run_dir, step)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _write_state(tmp, state, step, config_yaml)
    return _publish(tmp, final, keep_last)


def save_sharded(
    run_dir: Path, step: int, model, optimizer, tokenizer, state: dict, config_yaml: str, keep_last: int
) -> Path:
    """Write checkpoint `step` of an FSDP-sharded model (`dgrpo.sharding.Sharded`): every
    process calls this and writes its own shard of the model and optimizer state; rank 0 adds
    the HF export of the full weights (gathered to its CPU), the trainer state and the rename."""
    main = dist.get_rank() == 0
    final, tmp = _begin(run_dir, step) if main else (None, None)
    final, tmp = _broadcast_paths(final, tmp)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp / SHARDS_DIR)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if main:
        model.model.save_pretrained(tmp, state_dict=_hf_state(model.model, full))
        tokenizer.save_pretrained(tmp)
        _write_state(tmp, state, step, config_yaml)
        _publish(tmp, final, keep_last)
    dist.barrier()  # every process returns once the checkpoint is in place
    return final


def _hf_state(hf_model, full: dict) -> dict:
    """The gathered state under the HF model's own names ("model." is the root unit's name for
    it), each tied parameter once (the FSDP state dict holds a copy under every name)."""
    own = {name for name, _ in hf_model.named_parameters()} | {name for name, _ in hf_model.named_buffers()}
    state = {name.removeprefix("model."): value for name, value in full.items()}
    return {name: value for name, value in state.items() if name in own}


def load_sharded(checkpoint: Path, model, optimizer) -> None:
    """Model and optimizer state of a sharded checkpoint into a sharded model, resharded to the
    current number of processes."""
    shards = Path(checkpoint) / SHARDS_DIR
    if not shards.is_dir():
        raise UserError(
            f"checkpoint {checkpoint} holds no sharded state (written with parallel.strategy replicate)",
            "resume with parallel.strategy=replicate, or start a new run.out_dir",
        )
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=shards)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def _begin(run_dir: Path, step: int) -> tuple[Path, Path]:
    """(final path, fresh temporary directory) of checkpoint `step`."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:06d}"
    tmp = root / f".{final.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return final, tmp


def _broadcast_paths(final: Path | None, tmp: Path | None) -> tuple[Path, Path]:
    """Rank 0's paths on every process, once rank 0 has created the temporary directory."""
    paths = [final, tmp]
    dist.broadcast_object_list(paths, src=0)
    return paths[0], paths[1]


def _write_state(tmp: Path, state: dict, step: int, config_yaml: str) -> None:
    torch.save({**state, "step": step, "rng": rng_state()}, tmp / STATE_FILE)
    (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")


def _publish(tmp: Path, final: Path, keep_last: int) -> Path:
    """Make a complete temporary checkpoint the checkpoint `final`, never deleting a complete
    one before its replacement is on disk, then prune all but the newest `keep_last`."""
    root = final.parent
    _fsync_tree(tmp)
    replaced = root / f".{final.name}.replaced"
    if final.exists():  # the same step saved again (e.g. a resumed run re-saving)
        shutil.rmtree(replaced, ignore_errors=True)
        os.rename(final, replaced)  # kept until the new copy is in place (clean_partial restores it)
    os.rename(tmp, final)
    _fsync_dir(root)
    shutil.rmtree(replaced, ignore_errors=True)
    for old in complete(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("saved checkpoint %s", final)
    return final


def complete(root: Path) -> list[Path]:
    """The complete checkpoints under a checkpoints directory, oldest first."""
    return sorted(p for p in root.glob(f"{PREFIX}*") if (p / STATE_FILE).is_file())


def load_state(checkpoint: Path) -> dict:
    """The trainer state of a checkpoint (our own file, so full unpickling is safe)."""
    return torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=False)


def clean_partial(run_dir: Path) -> None:
    """Remove temporary directories left by a run killed while saving; a checkpoint moved aside
    for its replacement goes back into place when the replacement never arrived."""
    root = checkpoint_dir(run_dir)
    for partial in root.glob(f".{PREFIX}*.partial"):
        shutil.rmtree(partial, ignore_errors=True)
    for replaced in root.glob(f".{PREFIX}*.replaced"):
        final = root / replaced.name.removeprefix(".").removesuffix(".replaced")
        if final.exists():
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            os.rename(replaced, final)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rank_rng_state(state: dict, rank: int) -> dict | None:
    """The RNG state rank `rank` saved (multi-process runs keep one per rank), or None when
    fewer processes saved the checkpoint."""
    rngs = state.get("rng_ranks", [state["rng"]])
    return rngs[rank] if rank < len(rngs) else None


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_tree(path: Path) -> None:
    """Flush every file's contents and every directory entry under `path` to disk."""
    for directory, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(directory, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(directory))


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
