"""Fixtures for the trainer: a tiny saved longblocks dataset and small-run configs."""

import pytest
import torch

from dgrpo.config import make_config
from longblocks import io


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors on a busy 2-core machine: more OpenMP threads only fight over the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory, tiny_rows, tiny_config):
    """The shared 12-row multihop dataset (1k and 2k prompts) saved as `longblocks generate` does."""
    out = tmp_path_factory.mktemp("dgrpo-data") / "tiny"
    rows, worlds = tiny_rows
    io.save(rows, worlds, tiny_config, out, overwrite=False)
    return out


def run_values(dataset_dir, out_dir, method: str = "dgrpo", **sections) -> dict:
    """Nested config values for a 2-step run on the tiny dataset with tiny models."""
    values = {
        "model": {"student": "tiny-qwen3"},
        # 1k prompts only: the 2k rows are skipped (and counted), which halves the step time
        "data": {"path": str(dataset_dir), "batch_size": 1, "max_prompt_tokens": 1100},
        "rollout": {"group_size": 2, "max_new_tokens": 6},
        "teacher": {"model": "tiny-qwen3-teacher"},
        "loss": {"method": method},
        "optim": {"lr": 1e-3},
        "run": {"out_dir": str(out_dir), "steps": 2, "save_every": 0, "progress": False, "threads": 1},
    }
    for section, updates in sections.items():
        values.setdefault(section, {}).update(updates)
    return values


@pytest.fixture
def make_run_values(dataset_dir, tmp_path):
    def make(method: str = "dgrpo", out: str = "run", **sections) -> dict:
        return run_values(dataset_dir, tmp_path / out, method, **sections)

    return make


@pytest.fixture
def make_run_config(make_run_values):
    def make(method: str = "dgrpo", out: str = "run", **sections):
        return make_config(make_run_values(method, out, **sections))

    return make
