"""Chunked vs naive completion log-probs + exact reverse KL: peak extra memory and time.

For each number of completion positions T, one forward+backward of `-logp.sum() +
reverse_kl.sum()` (chunked path: `logprobs_and_kl`) with the tiny Qwen3 head (V=151,936, H=64)
against a teacher head of the same shape, in a fresh subprocess per configuration. Peak extra
memory is the process's resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs
after the inputs are built) minus its RSS at that moment; it includes the gradients of the
student's hidden states and head weight. The naive path (full [T, V] logits, log_softmax,
gather, KL over full softmaxes) runs only where its live [T, V] float32 tensors fit the budget.

    .venv/bin/python bench/logprobs.py                      # T = 8k, 32k, 64k (+2k for naive)
    .venv/bin/python bench/logprobs.py --tokens 8192 --chunk-size 64
"""

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

VOCAB, HIDDEN = 151_936, 64
NAIVE_LIVE_TENSORS = 4  # log p_s, log p_t, p_s, log p_s − log p_t: all [T, V], all live at once


def _rss_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def _reset_peak() -> int:
    """Reset the RSS high-water mark to the current RSS; return the current RSS in kB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _rss_kb("VmRSS")
    except OSError:  # no clear_refs: fall back to the lifetime peak (over-reports setup peaks)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_kb() -> int:
    try:
        return _rss_kb("VmHWM")
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(path: str, tokens: int, chunk_size: int, temperature: float, threads: int) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dgrpo.logprobs import logprobs_and_kl

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    h_s = torch.randn(tokens, HIDDEN, generator=gen).requires_grad_()
    w_s = (0.02 * torch.randn(VOCAB, HIDDEN, generator=gen)).requires_grad_()
    h_t = torch.randn(tokens, HIDDEN, generator=gen)
    w_t = 0.02 * torch.randn(VOCAB, HIDDEN, generator=gen)
    targets = torch.randint(0, VOCAB, (tokens,), generator=gen)

    base_kb = _reset_peak()
    start = time.perf_counter()
    if path == "chunked":
        logp, kl = logprobs_and_kl(h_s, w_s, targets, h_t, w_t, temperature, chunk_size)
    else:
        logp_all = torch.log_softmax(h_s @ w_s.T / temperature, -1)
        logp = logp_all.gather(-1, targets[:, None]).squeeze(-1)
        with torch.no_grad():
            logp_t = torch.log_softmax(h_t @ w_t.T / temperature, -1)
        kl = (logp_all.exp() * (logp_all - logp_t)).sum(-1)
    loss = -logp.sum() + kl.sum()
    loss.backward()
    seconds = time.perf_counter() - start
    return {"extra_mb": (_peak_kb() - base_kb) / 1024, "seconds": seconds, "loss": loss.item()}


def run_one(args, path: str, tokens: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", path, "--tokens", str(tokens)]
    cmd += ["--chunk-size", str(args.chunk_size), "--threads", str(args.threads)]
    cmd += ["--temperature", str(args.temperature)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tokens",
        type=int,
        nargs="+",
        default=[2048, 8192, 32768, 65536],
        help="completion positions T to measure",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=128, help="positions per chunk for the chunked path"
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature τ")
    parser.add_argument(
        "--naive-budget-gb",
        type=float,
        default=16.0,
        help="run the naive path only if its live [T, V] tensors fit this",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--worker", choices=["chunked", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        tokens = args.tokens[0]
        result = worker(args.worker, tokens, args.chunk_size, args.temperature, args.threads)
        print(json.dumps(result))
        return

    print(
        f"V={VOCAB}, H={HIDDEN}, chunk={args.chunk_size}, τ={args.temperature}, "
        f"threads={args.threads}; forward+backward of -logp.sum() + reverse_kl.sum()"
    )
    header = f"{'T':>7} | {'chunked MB':>10} {'chunked s':>9} | {'naive MB':>9} {'naive s':>8}"
    print(header)
    print("-" * len(header))
    extra_32k = None
    for tokens in args.tokens:
        chunked = run_one(args, "chunked", tokens)
        if tokens == 32768:
            extra_32k = chunked["extra_mb"]
        needs_gb = NAIVE_LIVE_TENSORS * tokens * VOCAB * 4 / 1e9
        if needs_gb <= args.naive_budget_gb:
            naive = run_one(args, "naive", tokens)
            assert abs(naive["loss"] - chunked["loss"]) <= 1e-4 * abs(naive["loss"]) + 1e-2
            naive_cols = f"{naive['extra_mb']:>9.0f} {naive['seconds']:>8.2f}"
        else:
            naive_cols = f"skipped (needs ≥{needs_gb:.1f} GB)"
        print(
            f"{tokens:>7} | {chunked['extra_mb']:>10.0f} {chunked['seconds']:>9.2f} | {naive_cols}",
            flush=True,
        )
    print(f"extra_mb_32k={'n/a' if extra_32k is None else round(extra_32k)}")


if __name__ == "__main__":
    main()
