"""Evaluation: greedy rollouts scored per task, length and depth; JSON and PNG heatmap written."""

import json

import pytest

from dgrpo.evaluate import depth_bucket, evaluate, summarize

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_evaluate_writes_json_completions_and_heatmap(make_run_config, tmp_path):
    cfg = make_run_config("grpo", data={"max_prompt_tokens": 4096}, rollout={"max_new_tokens": 3})
    report = evaluate(cfg, "tiny-qwen3", split="train", out_dir=tmp_path / "eval")
    assert report["overall"]["n"] == 10 and report["split"] == "train"
    assert set(report["by_task"]) == {"multihop"}
    assert set(report["by_length"]) == {"1k", "2k"}  # the tiny dataset mixes 1k and 2k prompts
    assert all(key in report for key in ("by_depth", "by_length_depth"))
    assert report["overall"]["truncated_rate"] == 1.0  # 3 tokens never reach an answer line
    saved = json.loads((tmp_path / "eval" / "train.json").read_text())
    assert saved["overall"] == report["overall"]
    lines = (tmp_path / "eval" / "train-completions.jsonl").read_text().splitlines()
    assert len(lines) == 10 and {"id", "reward", "status", "completion"} <= set(json.loads(lines[0]))
    assert (tmp_path / "eval" / "train-heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summarize_buckets():
    records = [
        {"task": "multihop", "length": "1k", "depth": "0.0-0.2", "reward": 1.0, "truncated": False},
        {"task": "multihop", "length": "1k", "depth": "0.8-1.0", "reward": 0.0, "truncated": True},
        {"task": "grounding", "length": "4k", "depth": "0.0-0.2", "reward": 0.5, "truncated": False},
    ]
    report = summarize(records)
    assert report["overall"] == {"n": 3, "reward": 0.5, "accuracy": 1 / 3, "truncated_rate": 1 / 3}
    assert report["by_task"]["multihop"]["accuracy"] == 0.5
    assert report["by_length_depth"]["1k"]["0.8-1.0"]["n"] == 1
    assert report["by_depth"]["0.0-0.2"]["reward"] == 0.75
    assert [depth_bucket(d) for d in (0.0, 0.19, 0.2, 0.99, 1.0, None)] == [
        "0.0-0.2", "0.0-0.2", "0.2-0.4", "0.8-1.0", "0.8-1.0", "n/a"
    ]  # fmt: skip
