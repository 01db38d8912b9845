"""Checkpoints: an HF-format model directory plus everything a resumed run needs.

Layout of `<run.out_dir>/checkpoints/step-000010/`:

    config.json, model.safetensors, generation_config.json   `AutoModelForCausalLM.from_pretrained`
    tokenizer.json, tokenizer_config.json, chat_template.jinja
    trainer_state.pt      step, optimizer, LR scheduler, data cursor, RNG (python, numpy, torch;
                          `rng_ranks`: every rank's, when several processes trained)
    config.yaml           the run's resolved config

Each checkpoint is written to a hidden temporary directory and renamed into place, so a run
killed mid-save leaves the previous checkpoints intact and never a half-written one. A
resumed run that restores this state takes exactly the steps the uninterrupted run would.
"""

import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
PREFIX = "step-"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = sorted(p for p in checkpoint_dir(run_dir).glob(f"{PREFIX}*") if (p / STATE_FILE).is_file())
    return found[-1] if found else None


def save(run_dir: Path, step: int, model, tokenizer, state: dict, config_yaml: str, keep_last: int) -> Path:
    """Write checkpoint `step` atomically, then delete all but the newest `keep_last`."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:06d}"
    tmp = root / f".{final.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save({**state, "step": step, "rng": rng_state()}, tmp / STATE_FILE)
    (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again (e.g. a resumed run re-saving): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    for old in sorted(root.glob(f"{PREFIX}*"))[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("saved checkpoint %s", final)
    return final


def load_state(checkpoint: Path) -> dict:
    """The trainer state of a checkpoint (our own file, so full unpickling is safe)."""
    return torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=False)


def clean_partial(run_dir: Path) -> None:
    """Remove temporary directories left by a run killed while saving."""
    for partial in checkpoint_dir(run_dir).glob(f".{PREFIX}*.partial"):
        shutil.rmtree(partial, ignore_errors=True)


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
