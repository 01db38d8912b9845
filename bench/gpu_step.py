"""GPU training step at long context: dgrpo grpo and dgrpo against TRL's GRPOTrainer.

A Qwen3-0.6B-shaped student built from its config (random weights: 28 layers, hidden 1024,
16 query / 8 kv heads of 128, vocab 151,936, tied head), the same shape as the teacher for
dgrpo; one longblocks multihop prompt of P tokens (16k and 32k) × G = 8 completions of exactly
C = 256 tokens (EOS blocked until C); bf16 autocast, float32 weights and AdamW, gradient
checkpointing. Per configuration, in a fresh process: the median step time over the steps
after the first (warm-up) and the peak GPU memory (`torch.cuda.max_memory_allocated`). TRL's
GRPOTrainer runs the same model, prompt and G, C (the prompt repeated G times, as TRL does)
when `trl` is installed; an out-of-memory is reported as such, never estimated.

First, the fused attention kernels are checked against the plain-torch reference on the GPU
(dgrpo.attention: flash for bf16, memory-efficient for float32): max |Δ| of the output and of
every gradient.

Needs a CUDA device: without one it prints one error line and exits with status 2.

Run: .venv/bin/python bench/gpu_step.py [--lengths 16k,32k --steps 3 --skip-trl]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

GROUP, COMPLETION = 8, 256
QWEN3_06B = dict(
    hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
    num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True,
    rope_theta=1_000_000.0, rms_norm_eps=1e-6, max_position_embeddings=40960,
)  # fmt: skip


def save_model(folder: Path, seed: int) -> Path:
    """A random-weight Qwen3-0.6B-shaped model with the embedded Qwen3 tokenizer, saved."""
    import transformers

    from dgrpo.models import embedded_tokenizer

    tokenizer = embedded_tokenizer()
    config = transformers.Qwen3Config(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        **QWEN3_06B,
    )
    torch.manual_seed(seed)
    transformers.Qwen3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_dataset(folder: Path, prompt_len: int) -> Path:
    from longblocks import io
    from longblocks.build import build
    from longblocks.config import BuildConfig

    cfg = BuildConfig(lengths=[prompt_len], num_examples=2, seed=0)
    rows, worlds = build(cfg)
    io.save(rows, worlds, cfg, folder, overwrite=True)
    return folder


def dgrpo_step(method: str, work: Path, prompt_len: int, steps: int) -> dict:
    """dgrpo's own train_step on the GPU; step time and peak memory from its metrics."""
    from dgrpo.config import make_config
    from dgrpo.trainer import setup, train_step

    values = {
        "model": {"student": str(work / "student"), "gradient_checkpointing": True},
        "data": {"path": str(work / f"data-{prompt_len}"), "max_prompt_tokens": prompt_len, "batch_size": 1},
        "rollout": {"group_size": GROUP, "max_new_tokens": COMPLETION, "min_new_tokens": COMPLETION},
        "loss": {"method": method, "chunk_size": 256},
        "optim": {"micro_batch_tokens": prompt_len + GROUP * COMPLETION},
        "run": {"out_dir": str(work / f"run-{method}-{prompt_len}"), "steps": steps, "device": "cuda",
                "progress": False},
    }  # fmt: skip
    if method == "dgrpo":
        values["teacher"] = {"model": str(work / "teacher")}
    run = setup(make_config(values), resume=False)
    rows = []
    for _ in range(steps):
        rows.append(train_step(run))
        run.step += 1
    timed = rows[1:] if len(rows) > 1 else rows
    return {
        "seconds": statistics.median(r["step_time_s"] for r in timed),
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30,
        "completion_length": rows[-1]["completion_length/mean"],
    }


def trl_step(work: Path, prompt_len: int, steps: int) -> dict:
    """TRL's GRPOTrainer on the same model, one prompt of P tokens × G completions of C."""
    import time

    import transformers
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from dgrpo.config import make_config
    from dgrpo.data import prepare

    tokenizer = transformers.AutoTokenizer.from_pretrained(work / "student")
    tokenizer.padding_side = "left"
    data = make_config(
        {"data": {"path": str(work / f"data-{prompt_len}"), "max_prompt_tokens": prompt_len}}
    ).data
    example = prepare(data, tokenizer, "train", with_response=False, with_verification=False).examples[0]
    prompt = tokenizer.decode(example.prompt_ids)  # dgrpo's prompt (chat template applied), as text
    seconds: list[float] = []

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, *args, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            seconds.append(time.perf_counter() - self.start)

    config = GRPOConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=GROUP, num_generations=GROUP,
        max_completion_length=COMPLETION, generation_kwargs={"min_new_tokens": COMPLETION},
        max_steps=steps, bf16=True, gradient_checkpointing=True, report_to="none", logging_strategy="no",
        save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=str(work / "student"),
        reward_funcs=lambda completions, **kwargs: [float(len(c)) for c in completions],
        args=config,
        train_dataset=Dataset.from_dict({"prompt": [prompt]}),
        processing_class=tokenizer,
        callbacks=[Timer()],
    )
    trainer.train()
    timed = seconds[1:] if len(seconds) > 1 else seconds
    return {"seconds": statistics.median(timed), "peak_gb": torch.cuda.max_memory_allocated() / 2**30}


def attention_check() -> list[str]:
    """Fused CUDA kernels against the plain-torch reference: max |Δ| of output and gradients."""
    import dgrpo.attention as attention

    lines = []
    for dtype in (torch.bfloat16, torch.float32):
        gen = torch.Generator(device="cuda").manual_seed(0)
        shapes = [(8, 16, 256, 128), (1, 8, 4096, 128), (1, 8, 4096, 128), (8, 8, 256, 128), (8, 8, 256, 128)]
        tensors = [torch.randn(s, device="cuda", dtype=dtype, generator=gen) for s in shapes]
        weight = torch.randn(shapes[0], device="cuda", dtype=dtype, generator=gen)
        results = {}
        for name, kernel in (("fused", attention._kernel), ("reference", lambda q: "reference")):
            original, attention._kernel = attention._kernel, kernel
            try:
                inputs = [t.clone().requires_grad_() for t in tensors]
                out = attention.prefix_attention(*inputs, 128**-0.5)
                grads = torch.autograd.grad((out.float() * weight.float()).sum(), inputs)
                results[name] = (out, *grads)
            finally:
                attention._kernel = original
        diffs = [(a.float() - b.float()).abs().max().item() for a, b in zip(*results.values(), strict=True)]
        names = ("out", "dq", "dk_prompt", "dv_prompt", "dk_own", "dv_own")
        kernel = attention._kernel(tensors[0])
        shown = " ".join(f"{n}={d:.1e}" for n, d in zip(names, diffs, strict=True))
        lines.append(
            f"attention {str(dtype).removeprefix('torch.')} ({kernel} vs reference): max |Δ| {shown}"
        )
    return lines


def one(args) -> None:
    """One configuration in this process: one JSON line."""
    work = Path(args.work)
    try:
        if args.one == "trl":
            result = trl_step(work, args.prompt_len, args.steps)
        else:
            result = dgrpo_step(args.one, work, args.prompt_len, args.steps)
    except torch.OutOfMemoryError:
        result = {"error": "out of memory"}
    except ImportError as err:
        result = {"error": f"skipped ({err.name} not installed)"}
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="16k,32k", help="prompt lengths P, comma-separated (k = 1024)")
    parser.add_argument(
        "--steps", type=int, default=3, help="steps per configuration; the first is a warm-up"
    )
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--one", choices=["grpo", "dgrpo", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--prompt-len", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu_step.py: error: no CUDA device; run it on a machine with a GPU", file=sys.stderr)
        sys.exit(2)
    if args.one:
        one(args)
        return
    lengths = [int(x.strip().lower().removesuffix("k")) * (1024 if x.strip().lower().endswith("k") else 1)
               for x in args.lengths.split(",")]  # fmt: skip
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for line in attention_check():
        print(line)
    sides = ["grpo", "dgrpo"] + ([] if args.skip_trl else ["trl"])
    with tempfile.TemporaryDirectory(prefix="gpu-step-") as tmp:
        work = Path(tmp)
        save_model(work / "student", seed=0)
        save_model(work / "teacher", seed=1)
        print(f"\n{'P':>5} {'trainer':>14} {'step s':>8} {'peak GiB':>9}")
        for length in lengths:
            make_dataset(work / f"data-{length}", length)
            for side in sides:
                command = [
                    sys.executable,
                    __file__,
                    "--one",
                    side,
                    "--work",
                    str(work),
                    "--prompt-len",
                    str(length),
                ]
                command += ["--steps", str(args.steps)]
                done = subprocess.run(command, capture_output=True, text=True)
                try:
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                except (IndexError, json.JSONDecodeError):
                    result = {"error": f"failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:120]}"}
                name = {"grpo": "dgrpo grpo", "dgrpo": "dgrpo dgrpo", "trl": "TRL GRPO"}[side]
                if "error" in result:
                    print(f"{length // 1024:>4}k {name:>14} {result['error']}")
                else:
                    print(
                        f"{length // 1024:>4}k {name:>14} {result['seconds']:>8.2f} {result['peak_gb']:>9.1f}"
                    )


if __name__ == "__main__":
    main()
