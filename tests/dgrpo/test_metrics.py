"""Metrics: rollout statistics, the JSONL log (truncated on resume) and tracker errors."""

import json

import pytest
import torch

import dgrpo.metrics
from dgrpo.data import Example
from dgrpo.errors import UserError
from dgrpo.metrics import METRICS, MetricsLogger, group_metrics
from dgrpo.rollout import Group


def group(task, rewards, lengths, truncated):
    n = len(rewards)
    mask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    ex = Example(0, "x", [1], None, {"kind": "exact", "answer": "a"}, task, 1024, 0.5)
    statuses = [
        "truncated" if t else ("ok" if r else "unparsable") for r, t in zip(rewards, truncated, strict=True)
    ]
    return Group(ex, torch.ones(1, 1), torch.zeros(n, max(lengths)), mask, torch.tensor(truncated), [""] * n,
                 rewards=torch.tensor(rewards), statuses=statuses)  # fmt: skip


def test_group_metrics():
    groups = [
        group("multihop", [1.0, 0.0], [4, 2], [False, True]),
        group("grounding", [0.0, 0.0], [3, 3], [False, False]),
    ]
    out = group_metrics(groups)
    assert out["reward/mean"] == 0.25 and out["accuracy"] == 0.25
    assert out["reward/multihop/mean"] == 0.5 and out["accuracy/grounding"] == 0.0
    assert out["frac_reward_zero_std"] == 0.5 and out["truncated_rate"] == 0.25
    assert out["unparsable_rate"] == 0.5
    assert (out["completion_length/mean"], out["completion_length/max"]) == (3.0, 4.0)


def test_log_writes_jsonl_and_resume_drops_steps_after_the_checkpoint(tmp_path):
    logger = MetricsLogger(tmp_path, 5, 0, [], progress=False, config={})
    for step in (1, 2, 3):
        logger.log(step, {"loss": float(step), "bad": float("nan")})
    logger.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0] == {"step": 1, "loss": 1.0, "bad": "nan"}
    with (tmp_path / "metrics.jsonl").open("a") as file:
        file.write('{"step": 4, "lo')  # killed mid-write
    MetricsLogger(tmp_path, 5, 2, [], progress=False, config={}).close()  # resumed from step 2
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
    ]


def test_missing_tracker_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # as if not installed
    with pytest.raises(UserError, match="run.report_to includes 'wandb', which is not installed"):
        MetricsLogger(tmp_path, 5, 0, ["wandb"], progress=False, config={})


def test_metric_table_is_documented():
    assert "| `reward/<task>/mean` |" in dgrpo.metrics.__doc__
    assert {"loss", "reward/mean", "accuracy", "kl_teacher", "entropy", "clip_fraction", "truncated_rate",
            "tokens_per_s", "peak_memory_gb", "completion_length/mean"} <= set(METRICS)  # fmt: skip
