"""One TRL training configuration in this process; prints one JSON line (used by bench/train_step.py).

    .venv/bin/python bench/_trl_step.py --trainer grpo --prompt-len 1024 --group 8 --completion 64 --steps 2

Student: the tiny Qwen3 (vocab 151,936, hidden 64, 2 layers, tied head); teacher: the same with 4
layers. The prompt is P space-separated single-token words of the embedded Qwen3 tokenizer, checked
to re-tokenise to exactly P tokens (TRL tokenises text prompts itself). Both trainers sample exactly
`--completion` tokens: `min_new_tokens` equal to `max_new_tokens` masks the end-of-sequence logits.

- `grpo`: `GRPOTrainer`, one prompt × G generations per step, a deterministic length reward.
- `distill`: `DistillationTrainer`, which is always on-policy in trl 1.16 (the student generates,
  there is no `lmbda` knob), generalised JSD with `beta=1.0` = reverse KL to the teacher; it samples
  one completion per row, so the batch is the prompt repeated G times.

Time: each optimizer step from `on_step_begin` to `on_step_end` (generation, rewards, forward,
backward, optimizer); the median over the steps after the first, which is a warm-up when `--steps`
is 2 or more. Peak RSS: the process's `ru_maxrss` at the end (model building included).
TRL's own defaults are kept otherwise (gradient checkpointing on, fp32 on CPU, AdamW).
Torch threads: $OMP_NUM_THREADS (the driver's --threads), else 2.
"""

import argparse
import json
import os
import random
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402
from datasets import Dataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dgrpo.models import build_tiny  # noqa: E402  (the very models dgrpo trains)
from longblocks.tokenizer import build_qwen3_tokenizer  # noqa: E402

THREADS = int(os.environ.get("OMP_NUM_THREADS") or 2)  # the driver sets it for both trainers
_WORD = re.compile(r"Ġ[a-z]{3,8}")  # byte-level BPE: Ġ is the leading space


def build_prompt(tokenizer, length: int, seed: int) -> str:
    """Text of exactly `length` tokens: seeded space-prefixed lowercase words, one token each."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    pool = [i for i, piece in enumerate(vocab) if _WORD.fullmatch(piece)]
    rng = random.Random(seed)
    ids = [rng.choice(pool) for _ in range(length)]
    text = tokenizer.decode(ids)
    # TRL tokenises the text itself, with this call: it must give back exactly these P ids.
    retokenised = tokenizer(text=[text])["input_ids"][0]
    if retokenised != ids:
        raise RuntimeError(f"prompt re-tokenises to {len(retokenised)} tokens, not {length}")
    return text


def reward_length(completions, **kwargs) -> list[float]:
    """Deterministic stand-in reward: characters in the completion (varies, so advantages ≠ 0)."""
    return [float(len(c)) for c in completions]


class StepTimer(transformers.TrainerCallback):
    """Wall time of each optimizer step and the completion lengths TRL recorded for it."""

    def __init__(self):
        self.seconds: list[float] = []
        self.completion_lengths: list[tuple[float, float]] = []
        self.trainer = None
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)
        # logging is off, so TRL's per-step metrics are still buffered here (private, hence .get)
        metrics = getattr(self.trainer, "_metrics", {}).get("train", {})
        lo, hi = metrics.get("completions/min_length"), metrics.get("completions/max_length")
        if lo and hi:
            self.completion_lengths.append((lo[-1], hi[-1]))


def common_args(args, output_dir: str) -> dict:
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=args.group,
        gradient_accumulation_steps=1,
        max_steps=args.steps,
        max_completion_length=args.completion,
        # exactly C sampled tokens in both trainers: EOS is masked until C tokens exist
        generation_kwargs={"min_new_tokens": args.completion},
        bf16=False,
        use_cpu=True,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
    )


def build_trainer(args, tokenizer, output_dir: str, timer: StepTimer):
    """The TRL trainer for `args.trainer`, on one prompt of `args.prompt_len` tokens."""
    from trl import DistillationConfig, DistillationTrainer, GRPOConfig, GRPOTrainer

    prompt = build_prompt(tokenizer, args.prompt_len, args.seed)
    student = build_tiny("tiny-qwen3", args.seed)
    if args.trainer == "grpo":
        config = GRPOConfig(num_generations=args.group, **common_args(args, output_dir))
        return GRPOTrainer(
            model=student,
            reward_funcs=reward_length,
            args=config,
            train_dataset=Dataset.from_dict({"prompt": [prompt]}),  # sampler repeats it G times
            processing_class=tokenizer,
            callbacks=[timer],
        )
    teacher = build_tiny("tiny-qwen3-teacher", args.seed + 1)
    config = DistillationConfig(**common_args(args, output_dir))
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": [prompt] * args.group}),  # one completion per row
        processing_class=tokenizer,
        callbacks=[timer],
    )


def run(args) -> dict:
    torch.set_num_threads(THREADS)
    tokenizer = build_qwen3_tokenizer()
    tokenizer.padding_side = "left"
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="trl_step_") as output_dir:
        trainer = build_trainer(args, tokenizer, output_dir, timer)
        timer.trainer = trainer
        trainer.train()
    warmup = len(timer.seconds) >= 2
    timed = timer.seconds[1:] if warmup else timer.seconds
    lengths = timer.completion_lengths
    return {
        "trainer": f"trl_{args.trainer}",
        "prompt_len": args.prompt_len,
        "seconds": statistics.median(timed),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KB on Linux
        "steps": len(timed),
        "warmup": warmup,
        "step_seconds": timer.seconds,
        "completion_len_min": min(lo for lo, _ in lengths) if lengths else None,
        "completion_len_max": max(hi for _, hi in lengths) if lengths else None,
        "group": args.group,
        "threads": THREADS,
        "trl_version": __import__("trl").__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainer", choices=["grpo", "distill"], required=True)
    parser.add_argument("--prompt-len", type=int, required=True, help="prompt tokens P")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt G")
    parser.add_argument("--completion", type=int, default=64, help="sampled tokens per completion C")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps; the first is a warm-up if ≥ 2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
