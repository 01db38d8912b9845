"""Generation throughput vs tokenization-only throughput of the same prompts.

For each length, builds a multihop dataset with 1 and 2 worker processes (world building,
rendering, sizing and the final exact recount all included; process start-up included for 2
workers) and compares its prompt tokens/s with the embedded tokenizer merely counting the
same finished prompts in one process. Prints a table; the last line is machine-readable for
32k with 2 workers:

    tokens_per_s=<n> ratio_to_tokenizer=<r>

Run: .venv/bin/python bench/generate.py [--examples-8k 64 --examples-32k 32 --examples-128k 8]
On a shared machine timings are noisy: --repeat N keeps the fastest of N runs, of the
generation and of the counting alike.
"""

import argparse
import time

from longblocks.build import build
from longblocks.config import BuildConfig
from longblocks.render.sizing import load_counter
from longblocks.row import prompt_messages


def tokenize_only(rows: list[dict], repeat: int = 1) -> tuple[float, int]:
    """Seconds (fastest of `repeat`) and tokens to count the finished prompts once, single process."""
    counter = load_counter(None)
    prompts = [counter.chat_prompt(prompt_messages(r)) for r in rows]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        tokens = sum(counter.count(p) for p in prompts)
        best = min(best, time.perf_counter() - start)
    return best, tokens


def measure(length: int, examples: int, workers: int, repeat: int = 1) -> dict:
    cfg = BuildConfig(lengths=[length], num_examples=examples, workers=workers, seed=1)
    seconds = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        rows, _ = build(cfg)
        seconds = min(seconds, time.perf_counter() - start)
    flat = [r for split in rows.values() for r in split]
    tokens = sum(r["n_tokens"] for r in flat)
    tok_seconds, tok_tokens = tokenize_only(flat, repeat)
    assert tok_tokens == tokens, "recount disagrees with the recorded n_tokens"
    worst = max(abs(r["n_tokens"] - length) / length for r in flat)
    return {
        "examples_per_s": examples / seconds,
        "tokens_per_s": tokens / seconds,
        "tokenizer_tokens_per_s": tokens / tok_seconds,
        "worst_error": worst,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples-8k", type=int, default=64)
    parser.add_argument("--examples-32k", type=int, default=32)
    parser.add_argument("--examples-128k", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="keep the fastest of N runs")
    args = parser.parse_args()
    plan = [(8192, args.examples_8k), (32768, args.examples_32k), (131072, args.examples_128k)]
    columns = (
        "length",
        "workers",
        "examples",
        "ex/s",
        "prompt tok/s",
        "tokenize-only tok/s",
        "ratio",
        "max |err|",
    )
    widths = (7, 7, 8, 8, 13, 20, 6, 9)
    header = " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
    print(header)
    print("-" * len(header))
    final = None
    for length, examples in plan:
        for workers in (1, 2):
            m = measure(length, examples, workers, args.repeat)
            ratio = m["tokens_per_s"] / m["tokenizer_tokens_per_s"]
            print(
                f"{length // 1024:>6}k {workers:>7} {examples:>8} {m['examples_per_s']:>8.2f} "
                f"{m['tokens_per_s']:>13,.0f} {m['tokenizer_tokens_per_s']:>20,.0f} {ratio:>6.2f} "
                f"{m['worst_error']:>8.3%}"
            )
            if length == 32768 and workers == 2:
                final = (m["tokens_per_s"], ratio)
    print("ratio = generation prompt tokens/s (with N workers) / counting the same prompts in one process")
    print(f"tokens_per_s={final[0]:.0f} ratio_to_tokenizer={final[1]:.2f}")


if __name__ == "__main__":
    main()
