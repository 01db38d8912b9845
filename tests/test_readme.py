"""The README's "Using longblocks with TRL" section runs as written, and TRL's reward call works."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from longblocks.rewards import longblocks_reward

ROOT = Path(__file__).parents[1]


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, f"README has no section '{title}'"
    return match.group(1)


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", section, re.M | re.S)


def test_reward_takes_the_keywords_trl_passes():
    """GRPOTrainer calls reward(prompts=, completions=, completion_ids=, **every column,
    trainer_state=, log_extra=, log_metric=); conversational completions are message lists."""
    verification = {"kind": "exact", "answer": "Mara Quill", "aliases": []}
    completions = [
        [{"role": "assistant", "content": "The chain ends at her.\nAnswer: Mara Quill"}],
        [{"role": "assistant", "content": "Answer: Ostwick"}],
        [{"role": "assistant", "content": "I think it is Mara Quill"}],  # no answer line
    ]
    rewards = longblocks_reward(
        prompts=[[{"role": "user", "content": "..."}]] * 3,
        completions=completions,
        completion_ids=[[1, 2]] * 3,
        verification=[verification] * 3,
        answer=["Mara Quill"] * 3,
        n_tokens=[1024] * 3,
        trainer_state=None,
        log_extra=lambda *a, **k: None,
        log_metric=lambda *a, **k: None,
    )
    assert rewards == [1.0, 0.0, 0.0]


@pytest.mark.slow  # one TRL GRPO step on a 1k prompt takes minutes on a 2-core CPU
@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="trl is in the `bench` extra")
def test_trl_section_runs_as_written(tmp_path):
    section = readme_section("Using longblocks with TRL")
    (shell,), (python,) = code_blocks(section, "bash"), code_blocks(section, "python")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["HF_HUB_OFFLINE"] = "1"
    subprocess.run(["bash", "-euc", shell], cwd=tmp_path, env=env, check=True, capture_output=True)
    (tmp_path / "trl_grpo.py").write_text(python)
    done = subprocess.run(
        [sys.executable, "trl_grpo.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rewards/longblocks_reward/mean" in done.stdout + done.stderr  # TRL called our reward
    assert any((tmp_path / "out" / "trl-grpo").rglob("model.safetensors"))


def test_a_cut_completion_scores_as_finished_unless_the_reward_is_told():
    """Why the README sets mask_truncated_completions: TRL passes no `truncated` column, and a
    completion cut mid-ramble after an early answer line would earn the full reward."""
    verification = [{"kind": "exact", "answer": "Mara Quill", "aliases": []}]
    cut = ["Answer: Mara Quill\nBut first, let me reconsider the second document, which says that"]
    assert longblocks_reward(completions=cut, verification=verification) == [1.0]
    assert longblocks_reward(completions=cut, verification=verification, truncated=[True]) == [0.0]
