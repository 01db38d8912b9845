"""One reader step (dgrpo/study/reader.py) in float32 and under bf16 autocast, on this CPU.

The study's teacher (`make study`) is the reader loop: a 128-wide 4-layer Qwen3 with a 2,048-token
vocabulary, batch 16 of ~800-token rows, forward + backward + AdamW. Whether bf16 autocast
pays depends on the CPU: with AVX512-BF16 or AMX the matmuls run in hardware, without them
PyTorch falls back to a reference GEMM. `teacher.autocast: auto` picks bf16 only where
`dgrpo.models.native_bf16` says it is native. Random token rows (the step's cost does not
depend on the text); the median of the steps after a warm-up one.

    .venv/bin/python bench/reader_step.py                  # 4 timed steps per precision
    .venv/bin/python bench/reader_step.py --steps 8 --threads 1
"""

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import transformers  # noqa: E402

from dgrpo.models import native_bf16  # noqa: E402
from dgrpo.study.config import qwen3_arch  # noqa: E402
from dgrpo.study.reader import batch_loss  # noqa: E402

VOCAB, PAD = 2048, 0


def step_seconds(autocast: bool, rows: list[tuple[list[int], int]], steps: int) -> float:
    torch.manual_seed(0)
    config = transformers.Qwen3Config(vocab_size=VOCAB, tie_word_embeddings=True, **qwen3_arch(128, 4))
    model = transformers.Qwen3ForCausalLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for _ in range(steps + 1):  # the first is a warm-up
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, _ = batch_loss(model, rows, PAD, prompt_weight=0.3)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per precision")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=800, help="tokens per row (prompt + response)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = random.Random(0)
    rows = [
        ([rng.randrange(1, VOCAB) for _ in range(args.tokens)], args.tokens - 80) for _ in range(args.batch)
    ]
    seconds = {
        name: step_seconds(name == "bf16 autocast", rows, args.steps) for name in ("float32", "bf16 autocast")
    }
    cpu = torch.device("cpu")
    print(f"batch {args.batch} x {args.tokens} tokens, {torch.get_num_threads()} threads, "
          f"native bf16 matmul: {'yes' if native_bf16(cpu) else 'no'}")  # fmt: skip
    print("| precision | s per step | time vs float32 |")
    print("|---|---:|---:|")
    for name, s in seconds.items():
        print(f"| {name} | {s:.2f} | {s / seconds['float32']:.2f}x |")


if __name__ == "__main__":
    main()
