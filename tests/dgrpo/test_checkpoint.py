"""Checkpoints: atomic HF-format directories, keep-last-N, exact trainer/RNG state round trip,
fsynced contents, and no save that can lose the last good checkpoint."""

import os
import random

import numpy as np
import pytest
import torch
import transformers

from dgrpo import checkpoint
from dgrpo.models import build_tiny, embedded_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def model():
    return build_tiny("tiny-qwen3", 0)


def test_save_writes_a_loadable_hf_directory_and_prunes(tmp_path, model):
    for step in (1, 2, 3):
        path = checkpoint.save(
            tmp_path, step, model, embedded_tokenizer(), {"data": {"epoch": step}}, "a: 1\n", 2
        )
    assert path.name == "step-000003"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
    assert checkpoint.latest(tmp_path) == path
    loaded = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert transformers.AutoTokenizer.from_pretrained(path).get_vocab() == embedded_tokenizer().get_vocab()
    state = checkpoint.load_state(path)
    assert state["step"] == 3 and state["data"] == {"epoch": 3}
    assert (path / "config.yaml").read_text() == "a: 1\n"


def test_partial_and_incomplete_checkpoints_are_never_the_latest(tmp_path, model):
    checkpoint.save(tmp_path, 1, model, embedded_tokenizer(), {}, "", 3)
    (tmp_path / "checkpoints" / ".step-000002.partial").mkdir()  # killed mid-save
    (tmp_path / "checkpoints" / "step-000003").mkdir()  # no trainer state: not complete
    assert checkpoint.latest(tmp_path).name == "step-000001"
    checkpoint.clean_partial(tmp_path)
    assert not (tmp_path / "checkpoints" / ".step-000002.partial").exists()
    assert checkpoint.latest(tmp_path / "elsewhere") is None


def test_rng_state_round_trip():
    state = checkpoint.rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    checkpoint.set_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


def test_every_file_is_fsynced_before_the_rename(tmp_path, model, monkeypatch):
    synced, renamed = [], []
    real_fsync, real_rename = checkpoint.os.fsync, checkpoint.os.rename

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def rename(src, dst):
        renamed.append((str(src), len(synced)))
        return real_rename(src, dst)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint.os, "rename", rename)
    final = checkpoint.save(tmp_path, 1, model, embedded_tokenizer(), {}, "", 2)
    (source, synced_before), *_ = renamed
    assert source.endswith(".step-000001.partial")
    names = {os.path.basename(path) for path in synced[:synced_before]}
    assert {p.name for p in final.iterdir()} <= names  # contents of every file, before the rename


def test_a_save_that_dies_never_costs_the_last_good_checkpoint(tmp_path, model, monkeypatch):
    """Re-saving the same step moves the old copy aside; if the process dies before the new
    copy is in place, the next start puts the old one back. Older checkpoints are pruned only
    after the new one is in place."""
    checkpoint.save(tmp_path, 1, model, embedded_tokenizer(), {"data": "old"}, "", 1)
    real_rename = checkpoint.os.rename

    def die_on_publish(src, dst):
        if str(src).endswith(".partial"):
            raise OSError("killed")
        return real_rename(src, dst)

    monkeypatch.setattr(checkpoint.os, "rename", die_on_publish)
    with pytest.raises(OSError, match="killed"):
        checkpoint.save(tmp_path, 1, model, embedded_tokenizer(), {"data": "new"}, "", 1)
    with pytest.raises(OSError, match="killed"):
        checkpoint.save(tmp_path, 2, model, embedded_tokenizer(), {"data": "newer"}, "", 1)
    monkeypatch.undo()
    checkpoint.clean_partial(tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000001"]
    assert checkpoint.load_state(checkpoint.latest(tmp_path))["data"] == "old"
