"""End to end on tiny models: every method trains, a loss curve is pinned, kill-and-resume
reproduces the uninterrupted run exactly, and a NaN stops the run keeping the last checkpoint."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import dgrpo.trainer
from dgrpo import checkpoint
from dgrpo.config import make_config
from dgrpo.errors import DivergedError, UserError
from dgrpo.trainer import lr_factor, train

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
ROOT = Path(__file__).parents[2]


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


EXPECTED_KEYS = {
    "sft": {"loss/ce", "nll"},
    "kd": {"loss/kd", "kl_teacher_forward"},
    "grpo": {"loss/pg", "reward/mean", "reward/multihop/mean", "clip_fraction", "truncated_rate"},
    "opd": {"loss/opd_full", "kl_teacher", "reward/mean"},
    "dgrpo": {"loss/pg", "loss/opd_full", "kl_teacher", "accuracy", "entropy", "lambda"},
}


@pytest.mark.parametrize("method", sorted(EXPECTED_KEYS))
def test_each_method_trains_and_checkpoints(make_run_config, method):
    cfg = make_run_config(method)
    run_dir = train(cfg)
    rows = metrics(run_dir)
    assert [row["step"] for row in rows] == [1, 2]
    assert EXPECTED_KEYS[method] <= set(rows[0])
    assert all(isinstance(row["loss"], float) for row in rows)
    assert {"tokens_per_s", "peak_memory_gb", "lr", "grad_norm", "completion_length/mean"} <= set(rows[0])
    assert rows[0]["data/skipped_long"] > 0  # the 2k rows, over data.max_prompt_tokens
    assert checkpoint.latest(run_dir).name == "step-000002"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["loss"]["method"] == method


@pytest.mark.parametrize(
    "changes",
    [
        {"loss": {"estimator": "topk"}, "teacher": {"top_k": 4}},
        {"loss": {"estimator": "sampled", "aggregation": "seq"}},
        {"loss": {"combine": "advantage", "lam_schedule": "linear_decay"}},
        {"loss": {"beta": 0.05, "aggregation": "constant"}, "optim": {"update_epochs": 2}},
        {"optim": {"grad_accum": 2}, "data": {"batch_size": 2}, "rollout": {"truncation": "mask"}},
        {"model": {"gradient_checkpointing": True}, "loss": {"scale": "batch"}},
    ],
    ids=["topk", "sampled-seq", "advantage-level", "beta-ppo-epochs", "accumulation-mask", "checkpointing"],
)
def test_dgrpo_variants_run(make_run_config, changes):
    run_dir = train(make_run_config("dgrpo", run={"steps": 1}, **changes))
    (row,) = metrics(run_dir)
    assert isinstance(row["loss"], float)


def test_sft_loss_curve_is_pinned(make_run_config):
    cfg = make_run_config(
        "sft", run={"steps": 3}, data={"batch_size": 2}, optim={"lr": 3e-3, "schedule": "constant"}
    )
    losses = [row["loss"] for row in metrics(train(cfg))]
    assert losses == pytest.approx([11.932803, 11.746468, 11.447083], abs=1e-4)  # on the generated data


RESUME = {"run": {"steps": 3, "save_every": 1}, "optim": {"update_epochs": 2, "warmup_steps": 1},
          "loss": {"beta": 0.05}}  # fmt: skip


def test_stop_and_resume_reproduces_the_uninterrupted_run(make_run_config):
    whole = train(make_run_config("dgrpo", out="whole", **RESUME))
    first = make_run_config("dgrpo", out="parts", **{**RESUME, "run": {**RESUME["run"], "stop_after": 1}})
    train(first)
    assert [row["step"] for row in metrics(first.run.out_dir)] == [1]
    parts = make_run_config("dgrpo", out="parts", **RESUME)
    with pytest.raises(UserError, match="already holds checkpoints"):
        train(parts)
    train(parts, resume=True)
    assert [row["loss"] for row in metrics(parts.run.out_dir)] == [row["loss"] for row in metrics(whole)]
    assert [row["reward/mean"] for row in metrics(parts.run.out_dir)] == [
        row["reward/mean"] for row in metrics(whole)
    ]


def test_kill_9_and_resume_matches_an_uninterrupted_run(make_run_values, tmp_path):
    """A real `dgrpo train` process killed with SIGKILL after a checkpoint; --resume finishes."""
    sections = {"run": {"steps": 4, "save_every": 1}}
    whole = train(make_config(make_run_values("grpo", "whole", **sections)))
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(make_run_values("grpo", "killed", **sections)))
    command = [sys.executable, "-m", "dgrpo.cli", "train", str(config), "--quiet"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while (
        checkpoint.latest(tmp_path / "killed") is None
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    killed_at = checkpoint.load_state(checkpoint.latest(tmp_path / "killed"))["step"]
    assert killed_at < 4
    resumed = train(make_config(yaml.safe_load(config.read_text())), resume=True)
    assert [row["loss"] for row in metrics(resumed)] == [row["loss"] for row in metrics(whole)]


def test_nan_loss_stops_with_the_last_good_checkpoint(make_run_config, monkeypatch):
    real = dgrpo.trainer.objective
    calls = []

    def poisoned(names, signals, weights, totals):
        loss, stats = real(names, signals, weights, totals)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), stats

    monkeypatch.setattr(dgrpo.trainer, "objective", poisoned)
    cfg = make_run_config("sft", run={"steps": 5, "save_every": 1})
    with pytest.raises(
        DivergedError,
        match=r"non-finite loss=nan at step 3; the run stopped; last good checkpoint: .*step-000002",
    ):
        train(cfg)
    assert checkpoint.latest(cfg.run.out_dir).name == "step-000002"
    assert [row["step"] for row in metrics(cfg.run.out_dir)] == [1, 2]


def test_resume_without_a_checkpoint_starts_fresh(make_run_config):
    run_dir = train(make_run_config("sft", run={"steps": 1}), resume=True)
    assert [row["step"] for row in metrics(run_dir)] == [1]


def test_lr_schedule():
    factors = [lr_factor(s, warmup=2, total=6, schedule="cosine", floor=0.1) for s in range(6)]
    assert factors[:3] == [0.5, 1.0, 1.0]  # warmup, then the cosine starts at 1
    assert factors[5] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 4)))
    assert lr_factor(5, warmup=0, total=5, schedule="linear", floor=0.0) == 0.0
    assert lr_factor(3, warmup=0, total=5, schedule="constant", floor=0.0) == 1.0


@pytest.mark.parametrize("skip", [True, False])
def test_a_step_without_gradient_leaves_the_weights_alone(skip):
    """AdamW moves weights along its momentum even when this step's gradient is zero (a grpo step
    where every group's rewards tie); optim.skip_empty_steps keeps them."""
    from types import SimpleNamespace

    from dgrpo.config import OptimConfig

    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    run = SimpleNamespace(student=model, optimizer=optimizer, scheduler=scheduler,
                          cfg=SimpleNamespace(optim=OptimConfig(lr=0.1, skip_empty_steps=skip)))  # fmt: skip
    model(torch.ones(1, 4)).sum().backward()
    assert dgrpo.trainer.update(run)[0] > 0  # a real step: AdamW now holds momentum
    before = [p.detach().clone() for p in model.parameters()]
    (0.0 * model(torch.ones(1, 4))).sum().backward()  # every advantage 0: an exactly zero gradient
    assert dgrpo.trainer.update(run)[0] == 0.0
    unchanged = all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert unchanged == skip
