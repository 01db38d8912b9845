"""Checkpoints: atomic HF-format directories, keep-last-N, exact trainer/RNG state round trip."""

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
