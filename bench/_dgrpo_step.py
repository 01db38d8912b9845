"""One dgrpo training configuration in this process; prints one JSON line (used by bench/train_step.py).

    .venv/bin/python bench/_dgrpo_step.py --method grpo --prompt-len 4096 --group 8 --completion 64 --steps 3

The same work as bench/_trl_step.py: the embedded tiny Qwen3 student (vocab 151,936, hidden 64,
2 layers, tied head), for `dgrpo` the same architecture with 4 layers as the teacher (exact
reverse KL over the full vocabulary, in chunks), one prompt of exactly P tokens × G sampled
completions of exactly C tokens (EOS blocked until C), one optimizer step per training step.
The prompt is a longblocks multihop row sized to P tokens with the chat template.

The step is timed phase by phase with the trainer's own functions (dgrpo.trainer): rollout
(generation), scoring (rewards, teacher and frozen log-probs), forward (student forward on the
shared prompt + completion log-probs + objective), backward, optimizer. `seconds` is the median
over the steps after the first (a warm-up when --steps >= 2). Peak RSS: `ru_maxrss` at the end.
Torch threads: $OMP_NUM_THREADS (the driver's --threads), else 2.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from dgrpo import trainer  # noqa: E402
from dgrpo.config import TrainConfig  # noqa: E402
from dgrpo.objective import objective  # noqa: E402
from longblocks import io  # noqa: E402
from longblocks.build import build  # noqa: E402
from longblocks.config import BuildConfig  # noqa: E402

THREADS = int(os.environ.get("OMP_NUM_THREADS") or 2)
PHASES = ("rollout", "scoring", "forward", "backward", "optimizer")


def make_dataset(folder: Path, prompt_len: int, seed: int) -> Path:
    """A few multihop rows whose chat-formatted prompt is exactly `prompt_len` tokens."""
    cfg = BuildConfig(lengths=[prompt_len], num_examples=3, seed=seed)
    rows, worlds = build(cfg)
    io.save(rows, worlds, cfg, folder, overwrite=True)
    return folder


def make_config(args, data: Path, out: Path) -> TrainConfig:
    values = {
        "model": {"student": "tiny-qwen3"},
        "data": {"path": str(data), "max_prompt_tokens": args.prompt_len, "batch_size": 1},
        "rollout": {
            "group_size": args.group,
            "max_new_tokens": args.completion,
            "min_new_tokens": args.completion,
        },
        "loss": {"method": args.method},
        "run": {
            "out_dir": str(out),
            "steps": args.steps,
            "seed": args.seed,
            "threads": THREADS,
            "progress": False,
        },
    }
    if args.method == "dgrpo":
        values["teacher"] = {"model": "tiny-qwen3-teacher"}
        values["loss"] |= {"estimator": "full", "lam": 1.0}
    return TrainConfig.model_validate(values)


def timed_step(run) -> dict[str, float]:
    """trainer.train_step, phase by phase (one micro-batch, one update epoch)."""
    times, clock = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[name], clock = now - clock, now

    examples = [run.data.examples[i] for i in run.batches.next()]
    groups = trainer.rollout(run, examples)
    lap("rollout")
    trainer.score(run, groups)
    lap("scoring")
    signals = trainer.forward(run, groups)
    loss, _ = objective(run.names, signals, trainer.step_weights(run))
    lap("forward")
    loss.backward()
    lap("backward")
    trainer.update(run)
    run.step += 1
    lap("optimizer")
    assert all(int(g.mask.sum(1).min()) == run.cfg.rollout.max_new_tokens for g in groups)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["grpo", "dgrpo"], required=True)
    parser.add_argument("--prompt-len", type=int, required=True)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--completion", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data", args.prompt_len, args.seed)
        run = trainer.setup(make_config(args, data, Path(tmp) / "run"), resume=False)
        steps = [timed_step(run) for _ in range(args.steps)]
    timed = steps[1:] if len(steps) >= 2 else steps
    breakdown = {phase: statistics.median(s[phase] for s in timed) for phase in PHASES}
    print(
        json.dumps(
            {
                "trainer": f"dgrpo_{args.method}",
                "prompt_len": args.prompt_len,
                "seconds": statistics.median(sum(s.values()) for s in timed),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "steps": len(timed),
                "warmup": len(steps) >= 2,
                "breakdown": breakdown,
                "unique_tokens": args.prompt_len + args.group * args.completion,
                "threads": THREADS,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
