"""FSDP2 on 2 gloo CPU processes against 1 process on the same global batch, sft and dgrpo.

Both sides train the tiny Qwen3 student (and its 4-layer teacher for dgrpo) from the same
weights for --steps steps on the same batches; dgrpo's completions are seeded per prompt, so
both sides sample the same ones. The student's EOS embedding row is scaled up so that it
stops after a few tokens at random (a random tiny model otherwise never emits EOS), which gives
completions of different lengths on the two ranks. Sampling keeps the top 16 tokens: at τ = 1
over 151,936 nearly uniform tokens, the float32 rounding differences of the two sides' updates
(about 1e-7) flip sampled tokens from the second step on, and the two sides would then train on
different batches. Prompts are 1,024 tokens, and optim.micro_batch_tokens = 1,064 splits a
group into row slices by its completion length, so the ranks pack different numbers of
micro-batches (the lockstep padding of `dgrpo.sharding` at work; column "own mb"). Reported per
step: the loss and the gradient norm of each side and their differences; per rank: the bytes of
parameters + AdamW state the process holds (its shards under FSDP). The last line is machine-readable:

    max_loss_diff=<x> state_mem_ratio=<y>

x = max over methods and steps of |loss(1 process) − loss(2 sharded)|, y = max over ranks of
a sharded rank's parameter + optimizer-state bytes / the single process's.

Run: .venv/bin/python bench/fsdp.py [--steps 3]   (the 2-process side runs under torchrun)
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from dgrpo import distributed  # noqa: E402
from dgrpo.config import make_config  # noqa: E402
from dgrpo.metrics import merge_ranks  # noqa: E402
from dgrpo.trainer import setup, train_step  # noqa: E402

METHODS = ("sft", "dgrpo")


def run_values(method: str, work: Path, out: Path, steps: int, world: int) -> dict:
    return {
        "model": {"student": str(work / "student"), "gradient_checkpointing": True},
        "data": {"path": str(work / "data"), "batch_size": 4, "max_prompt_tokens": 1100},
        # top_k: see the module docstring
        "rollout": {"group_size": 4, "max_new_tokens": 16, "top_k": 16},
        "teacher": {"model": "tiny-qwen3-teacher"},
        "loss": {"method": method, **({"beta": 0.05} if method == "dgrpo" else {})},
        "optim": {"lr": 1e-4, "schedule": "constant", "micro_batch_tokens": 1064},
        "run": {"out_dir": str(out), "steps": steps, "save_every": 0, "progress": False, "threads": 1},
        "parallel": {"strategy": "fsdp" if world > 1 else "replicate"},
    }


def local_bytes(tensor: torch.Tensor) -> int:
    """Bytes this process holds for a tensor (its shard of a sharded one)."""
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def state_bytes(run) -> int:
    """Parameters + optimizer state held by this process."""
    params = sum(local_bytes(p) for p in run.student.parameters())
    optim = sum(
        local_bytes(value)
        for state in run.optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value) and value.dim() > 0
    )
    return params + optim


def train_and_measure(values: dict) -> dict:
    """Steps of one run in this process (a member of the process group when launched):
    per-step merged loss and grad norm, this rank's own completion lengths and micro-batches."""
    cfg = make_config(values)
    with distributed.process_group("cpu"):
        run = setup(cfg, resume=False)
        steps = []
        while run.step < cfg.run.steps:
            mine = train_step(run)
            merged = merge_ranks(distributed.gather_objects(mine))
            run.step += 1
            steps.append(
                {
                    "loss": merged["loss"],
                    "grad_norm": merged["grad_norm"],
                    "completion_length": mine["completion_length/mean"],
                    "micro_batches": mine["micro_batches"],
                }
            )
        return {"rank": distributed.rank(), "steps": steps, "state_bytes": state_bytes(run)}


def make_student(out: Path, eos_scale: float = 12.0) -> None:
    """The tiny student with a long EOS embedding row (tied: also its lm_head row), saved."""
    from dgrpo.models import build_tiny, embedded_tokenizer

    model, tokenizer = build_tiny("tiny-qwen3", seed=0), embedded_tokenizer()
    with torch.no_grad():
        row = model.get_output_embeddings().weight[tokenizer.eos_token_id]
        row.copy_(row / row.norm() * eos_scale)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def make_dataset(out: Path) -> None:
    from longblocks import io
    from longblocks.build import build
    from longblocks.config import BuildConfig

    config = BuildConfig(lengths=[1024], num_examples=12, examples_per_world=3, seed=3)
    rows, worlds = build(config)
    io.save(rows, worlds, config, out, overwrite=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sharded(method: str, work: Path, steps: int) -> list[dict]:
    """The 2-process FSDP run under torchrun; every rank's result."""
    results = work / f"{method}-ranks"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(Path(__file__).resolve()), "--worker", method,
        "--work", str(work), "--steps", str(steps),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"the 2-process {method} run failed:\n{done.stderr[-3000:]}")
    return [json.loads((results / f"{rank}.json").read_text()) for rank in range(2)]


def worker(method: str, work: Path, steps: int) -> None:
    result = train_and_measure(run_values(method, work, work / f"{method}-sharded", steps, world=2))
    out = work / f"{method}-ranks"
    out.mkdir(exist_ok=True)
    (out / f"{result['rank']}.json").write_text(json.dumps(result))


def report(method: str, single: dict, ranks: list[dict]) -> tuple[float, float, float]:
    print(f"\n{method}: 1 process vs 2 FSDP processes (gloo, CPU), same global batch")
    print(f"{'step':>4} {'loss 1p':>12} {'loss 2p':>12} {'|Δloss|':>9} {'gnorm 1p':>10} {'gnorm 2p':>10} "
          f"{'|Δgnorm|':>9} {'len r0/r1':>11} {'own mb r0/r1':>12}")  # fmt: skip
    loss_diff = grad_diff = 0.0
    for i, one in enumerate(single["steps"]):
        two = ranks[0]["steps"][i]
        dl, dg = abs(one["loss"] - two["loss"]), abs(one["grad_norm"] - two["grad_norm"])
        loss_diff, grad_diff = max(loss_diff, dl), max(grad_diff, dg / one["grad_norm"])
        lengths = "/".join(f"{r['steps'][i]['completion_length']:.1f}" for r in ranks)
        micro = "/".join(str(r["steps"][i]["micro_batches"]) for r in ranks)
        print(f"{i + 1:>4} {one['loss']:>12.6f} {two['loss']:>12.6f} {dl:>9.2e} {one['grad_norm']:>10.5f} "
              f"{two['grad_norm']:>10.5f} {dg:>9.2e} {lengths:>11} {micro:>12}")  # fmt: skip
    mb = 2**20
    per_rank = [r["state_bytes"] for r in ranks]
    ratio = max(per_rank) / single["state_bytes"]
    shown = ", ".join(f"rank {r['rank']} {r['state_bytes'] / mb:.1f} MiB" for r in ranks)
    print(f"parameters + AdamW state per process: 1 process {single['state_bytes'] / mb:.1f} MiB; "
          f"sharded {shown} (ratio {ratio:.3f})")  # fmt: skip
    return loss_diff, grad_diff, ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.worker:
        worker(args.worker, args.work, args.steps)
        return
    with tempfile.TemporaryDirectory(prefix="bench-fsdp-") as tmp:
        work = Path(tmp)
        make_dataset(work / "data")
        make_student(work / "student")
        worst = [0.0, 0.0, 0.0]
        for method in METHODS:
            single = train_and_measure(run_values(method, work, work / f"{method}-single", args.steps, 1))
            diffs = report(method, single, sharded(method, work, args.steps))
            worst = [max(a, b) for a, b in zip(worst, diffs, strict=True)]
    print(f"\nmax_grad_norm_rel_diff={worst[1]:.2e}")
    print(f"max_loss_diff={worst[0]:.2e} state_mem_ratio={worst[2]:.3f}")


if __name__ == "__main__":
    main()
