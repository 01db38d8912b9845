"""Two CPU processes (torchrun, gloo) against one: the same loss and gradient, replicated or
sharded (FSDP2), rank 0 alone reports, a resumed two-process run continues exactly (after
kill -9 too), and a failing process stops every process with its message."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers
import yaml

from dgrpo import checkpoint, distributed, sharding
from dgrpo.config import ParallelConfig, make_config
from dgrpo.errors import UserError
from dgrpo.metrics import merge_ranks
from dgrpo.rollout import Group, widen
from dgrpo.trainer import train

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
ROOT = Path(__file__).parents[2]


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_command(config: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "dgrpo.cli", "train", str(config), "--set", "run.device=cpu", *extra,
    ]  # fmt: skip


def torchrun(values: dict, config: Path, *extra: str) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 -m dgrpo.cli train CONFIG` on CPU; fails the test on error."""
    config.write_text(yaml.safe_dump(values))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        torchrun_command(config, *extra), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


SFT = {"run": {"steps": 2}, "data": {"batch_size": 2}, "optim": {"lr": 3e-3, "schedule": "constant"}}


def test_two_processes_take_the_single_process_step(make_run_values, tmp_path):
    """sft is deterministic: the global loss and the summed gradient's norm must match."""
    single = metrics(train(make_config(make_run_values("sft", "single", **SFT))))
    done = torchrun(make_run_values("sft", "double", **SFT), tmp_path / "double.yaml")
    double = metrics(tmp_path / "double")
    assert [row["step"] for row in double] == [1, 2]  # one writer: one line per step
    for name in ("loss", "loss/ce", "grad_norm"):
        assert [row[name] for row in double] == pytest.approx([row[name] for row in single], abs=1e-5)
    assert checkpoint.latest(tmp_path / "double").name == "step-000002"
    assert done.stdout.count("metrics in") == 1  # only rank 0 reports


SHARDED = {"parallel": {"strategy": "fsdp"}}
# top_k: float32 rounding differences between sharded and unsharded updates (~1e-7) would flip
# tokens sampled at τ = 1 from 151,936 nearly uniform ones, and the runs would part ways
DGRPO = {"loss": {"beta": 0.05}, "rollout": {"top_k": 16}}


@pytest.mark.parametrize("method", ["sft", "dgrpo"])
def test_sharded_processes_take_the_single_process_step(make_run_values, tmp_path, method):
    """FSDP2 on 2 gloo processes against one process on the same global batch: dgrpo's
    completions (seeded per prompt) and lengths differ across the ranks, so the ranks' micro-batches
    are padded into lockstep."""
    sections = {**SFT, **DGRPO} if method == "dgrpo" else SFT
    single = metrics(train(make_config(make_run_values(method, "single", **sections))))
    torchrun(make_run_values(method, "sharded", **sections, **SHARDED), tmp_path / "sharded.yaml")
    sharded = metrics(tmp_path / "sharded")
    assert [row["step"] for row in sharded] == [1, 2]
    for name in ("loss", "grad_norm", *(("reward/mean", "kl_teacher") if method == "dgrpo" else ())):
        assert [row[name] for row in sharded] == pytest.approx(
            [row[name] for row in single], rel=1e-3, abs=1e-5
        )
    exported = checkpoint.latest(tmp_path / "sharded")
    assert (exported / checkpoint.SHARDS_DIR / ".metadata").is_file()
    whole = checkpoint.latest(tmp_path / "single")
    loaded, reference = (transformers.AutoModelForCausalLM.from_pretrained(d) for d in (exported, whole))
    # AdamW moves a weight whose gradient is near its eps (1e-8) by up to lr × (rounding error) / eps:
    # one embedding row of a rare token then differs by ~2e-5 after the two steps (one weight of
    # 9.7M, on some data). A hundredth of lr (3e-5) still fails any misplaced shard (weights ~0.02).
    atol = SFT["optim"]["lr"] / 100
    for (name, mine), (_, theirs) in zip(
        loaded.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.allclose(mine, theirs, atol=atol), name


@pytest.mark.slow
def test_two_process_dgrpo_resumes_like_the_uninterrupted_run(make_run_values, tmp_path):
    sections = {"run": {"steps": 3, "save_every": 1}, "data": {"batch_size": 2}, "loss": {"beta": 0.05}}
    torchrun(make_run_values("dgrpo", "whole", **sections), tmp_path / "whole.yaml")
    parts = make_run_values("dgrpo", "parts", **sections)
    torchrun(parts, tmp_path / "parts.yaml", "run.stop_after=2")
    assert [row["step"] for row in metrics(tmp_path / "parts")] == [1, 2]
    state = checkpoint.load_state(checkpoint.latest(tmp_path / "parts"))
    assert len(state["rng_ranks"]) == 2  # each rank's sampling RNG
    torchrun(parts, tmp_path / "parts.yaml", "--resume")
    whole, resumed = metrics(tmp_path / "whole"), metrics(tmp_path / "parts")
    assert [row["step"] for row in resumed] == [1, 2, 3]
    for name in ("loss", "reward/mean", "kl_teacher"):
        assert [row[name] for row in resumed] == [row[name] for row in whole]
    assert sorted(p.name for p in (tmp_path / "parts" / "checkpoints").iterdir()) == [
        "step-000002",
        "step-000003",
    ]


def test_single_process_helpers_are_no_ops():
    assert not distributed.launched() and distributed.is_main() and distributed.world_size() == 1
    assert distributed.sum_floats([1, 2.5]) == [1, 2.5]
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    param = torch.nn.Parameter(torch.ones(2))
    param.grad = torch.full((2,), 3.0)
    distributed.sum_gradients([param])
    assert param.grad.tolist() == [3.0, 3.0]


def test_batch_size_must_divide_among_processes(make_run_config, monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(UserError, match="data.batch_size 1 is not divisible by the 2 processes"):
        train(make_run_config("sft", data={"batch_size": 1}))


def test_merge_ranks():
    merged = merge_ranks(
        [
            {"loss": 1.0, "nll": 2.0, "completion_length/max": 5, "ratio_min": 0.9, "reward/x/mean": 1.0},
            {"loss": 0.5, "nll": 4.0, "completion_length/max": 7, "ratio_min": 0.8},
        ]
    )
    assert merged == {
        "loss": 1.5,
        "nll": 3.0,
        "completion_length/max": 7,
        "ratio_min": 0.8,
        "reward/x/mean": 1.0,
    }


def launch_ranks(script: Path, *args: str, n: int = 2) -> list[subprocess.Popen]:
    """`n` processes of `python script args` joined by environment variables alone, as a
    scheduler such as srun starts them (no torchrun agent to kill the others on a failure)."""
    port = _free_port()
    procs = []
    for rank in range(n):
        env = {
            **os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(n),
        }  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    return procs


FAIL_ON_RANK_1 = """
import os, sys
from dgrpo import cli, trainer

if os.environ["RANK"] == "1":
    score = trainer.score

    def failing(run, groups):
        if run.step == 1:
            raise RuntimeError("injected failure in score on rank 1")
        return score(run, groups)

    trainer.score = failing
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("strategy", [pytest.param("replicate", marks=pytest.mark.slow), "fsdp"])
def test_a_failing_rank_stops_every_rank_with_its_message(make_run_values, tmp_path, strategy):
    """Rank 1 raises in its second step while rank 0 goes on into the next collective: rank 0
    stops too (well inside the 120 s the test waits, against a 30-minute collective timeout)
    and says why, naming rank 1 and its error."""
    script = tmp_path / "fail.py"
    script.write_text(FAIL_ON_RANK_1)
    config = tmp_path / "run.yaml"
    values = make_run_values(
        "grpo", run={"steps": 3}, data={"batch_size": 2}, parallel={"strategy": strategy}
    )
    config.write_text(yaml.safe_dump(values))
    procs = launch_ranks(script, "train", str(config), "--set", "run.device=cpu")
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [1, 1]
    assert "RuntimeError: injected failure in score on rank 1" in outputs[1][1]
    assert (
        "dgrpo: error: stopped rank 0: rank 1 failed: RuntimeError: injected failure in score on rank 1"
        in (outputs[0][1])
    )
    assert [row["step"] for row in metrics(tmp_path / "run")] == [1]


def test_sharded_run_killed_with_sigkill_resumes_like_the_uninterrupted_run(make_run_values, tmp_path):
    """kill -9 of every process of a sharded dgrpo run once its first checkpoint exists (it may
    be mid-step or mid-save): the resumed run, on the sharded checkpoint, ends where the
    uninterrupted (single-process) run does."""
    sections = {"run": {"steps": 3, "save_every": 1}, "data": {"batch_size": 2}, **DGRPO}
    whole = metrics(train(make_config(make_run_values("dgrpo", "whole", **sections))))
    values = make_run_values("dgrpo", "killed", **sections, **SHARDED)
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(values))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        torchrun_command(config),
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = tmp_path / "killed" / "checkpoints" / "step-000001"
    try:
        deadline = time.monotonic() + 300
        while not first.is_dir() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    survivor = checkpoint.latest(tmp_path / "killed")
    assert survivor is not None and (survivor / checkpoint.SHARDS_DIR / ".metadata").is_file()
    torchrun(values, config, "--resume")
    resumed = metrics(tmp_path / "killed")
    assert [row["step"] for row in resumed] == [1, 2, 3]
    for name in ("loss", "grad_norm", "reward/mean", "kl_teacher"):  # float32 sums in another order
        assert [row[name] for row in resumed] == pytest.approx(
            [row[name] for row in whole], rel=1e-3, abs=1e-5
        )


def test_lockstep_pads_micro_batches_to_every_rank_s_counts(monkeypatch):
    """Rank 0 packed 3 micro-batches of 2, 1, 1 groups, rank 1 packed 1 of 3: both run 3
    micro-batches of 3, 1, 1 groups, the missing ones being the padding group."""
    monkeypatch.setattr(distributed, "gather_objects", lambda counts: [[2, 1, 1], [3]])
    padded = sharding.lockstep_micro_batches([["a", "b"], ["c"], ["d"]], "pad")
    assert padded == [["a", "b", "pad"], ["c"], ["d"]]
    padded = sharding.lockstep_micro_batches([["a", "b", "c"]], "pad")
    assert padded == [["a", "b", "c"], ["pad"], ["pad"]]


def test_lockstep_padding_is_one_row_the_loss_ignores():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    prompt, completions = torch.zeros(1, 4, dtype=torch.long), torch.ones(2, 3, dtype=torch.long)
    group = Group(None, prompt, completions, mask, torch.tensor([False, False]), ["x", "y"], loss_mask=mask)
    padding = sharding.empty_like_group(group)
    assert (
        padding.size == 1 and not padding.loss_mask.any() and padding.mask.tolist() == [[True, True, False]]
    )
    wide = widen(padding, 5, pad_id=7)
    assert wide.completion_ids.tolist() == [[1, 1, 1, 7, 7]] and wide.mask.shape == (1, 5)
    assert not wide.mask[:, 3:].any() and widen(padding, 2, pad_id=7) is padding


def test_sharding_choices_and_single_process_passthrough(monkeypatch):
    fsdp = ParallelConfig(strategy="fsdp")
    assert not sharding.enabled(fsdp)  # one process: nothing to shard across
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert sharding.enabled(fsdp) and not sharding.enabled(ParallelConfig())
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert (
        sharding.param_dtype(fsdp, cpu) == torch.float32
        and sharding.param_dtype(fsdp, cuda) == torch.bfloat16
    )
    assert sharding.param_dtype(ParallelConfig(param_dtype="bfloat16"), cpu) == torch.bfloat16
    offload = ParallelConfig(strategy="fsdp", cpu_offload=True)
    assert sharding.offloads(offload, cuda) and not sharding.offloads(offload, cpu)
    model = torch.nn.Linear(2, 2)
    assert sharding.call(model, lambda m, x: m is model and x, 5) == 5
    with sharding.gathered(model) as whole:
        assert whole is model and sharding.inner(model) is model
