"""One training step, dgrpo against TRL: GRPO time and peak RSS; dGRPO against on-policy distillation.

Same tiny Qwen3 student (vocab 151,936, hidden 64, 2 layers; teacher: 4 layers), same prompt
length P, G completions of exactly C sampled tokens. Each configuration runs in a fresh
subprocess, so its peak RSS is its own: bench/_dgrpo_step.py (dgrpo `grpo` and `dgrpo`) and
bench/_trl_step.py (TRL `GRPOTrainer` and `DistillationTrainer`, on-policy, the prompt repeated
G times). TRL above --trl-max is reported as skipped, never estimated. Needs the `bench` extra
(trl). The last line is machine-readable:

    speedup_vs_trl_4k=<x> mem_ratio_vs_trl_4k=<y> dgrpo_vs_trl_distill_4k=<z>

x = TRL GRPO s / dgrpo GRPO s, y = dgrpo GRPO RSS / TRL GRPO RSS, z = dgrpo dGRPO s / TRL distill s.

Run: .venv/bin/python bench/train_step.py [--lengths 1k,4k,16k --trl-max 4k --steps 2 --only all]
"""

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from longblocks.errors import UserError  # noqa: E402
from longblocks.render.sizing import parse_length, parse_lengths  # noqa: E402

SCRIPTS = {"dgrpo": HERE / "_dgrpo_step.py", "trl": HERE / "_trl_step.py"}
RUNS = (("dgrpo", "grpo"), ("trl", "grpo"), ("dgrpo", "dgrpo"), ("trl", "distill"))  # (side, method)
BREAKDOWN = ("rollout", "scoring", "forward", "backward", "optimizer")
Result = dict | str  # a worker's JSON, or why there is none


def fmt_len(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def run_one(side: str, method: str, length: int, args) -> Result:
    """One configuration in a fresh process: its JSON line, or the reason it has none."""
    flag = "--method" if side == "dgrpo" else "--trainer"
    cmd = [sys.executable, str(SCRIPTS[side]), flag, method, "--prompt-len", str(length)]
    cmd += ["--group", str(args.group), "--completion", str(args.completion)]
    cmd += ["--steps", str(args.steps), "--seed", str(args.seed)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(f"running {side} {method} P={fmt_len(length)} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return f"timeout (>{args.timeout:.0f} s)"
    wall = time.perf_counter() - start
    for line in reversed(proc.stdout.splitlines()):
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(result, dict) and "seconds" in result:
            result["wall_s"] = wall
            print(f"  {json.dumps(result)}", file=sys.stderr, flush=True)
            return result
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    print(f"  failed (exit {proc.returncode}): {proc.stderr[-2000:]}", file=sys.stderr, flush=True)
    return f"failed: {last[:60]}"


def collect(args) -> dict[tuple[str, str, int], Result]:
    """Every (side, method, length) result, one subprocess at a time."""
    sides = ("dgrpo", "trl") if args.only == "all" else (args.only,)
    results: dict[tuple[str, str, int], Result] = {}
    if "dgrpo" in sides and not SCRIPTS["dgrpo"].exists():
        print("dgrpo: bench/_dgrpo_step.py not found", flush=True)
    trl_installed = importlib.util.find_spec("trl") is not None
    if "trl" in sides and not trl_installed:
        print("trl: not installed; install the bench extra: pip install -e '.[bench]'", flush=True)
    for length in args.lengths:
        for side, method in RUNS:
            key = (side, method, length)
            if side not in sides:
                results[key] = "not run"
            elif not SCRIPTS[side].exists():
                results[key] = "not found"
            elif side == "trl" and not trl_installed:
                results[key] = "trl not installed"
            elif side == "trl" and length > args.trl_max:
                results[key] = f"skipped (run with --trl-max {fmt_len(length)})"
            else:
                results[key] = run_one(side, method, length, args)
    return results


def cell(result: Result, field: str, spec: str, short: bool = False) -> str:
    """A formatted value, or why there is none (its first words only when `short`)."""
    if isinstance(result, dict):
        return format(result[field], spec)
    return result.split(" (")[0].split(":")[0] if short else result


def ratio(num: Result, den: Result, field: str) -> float:
    """num[field] / den[field], or NaN when either side has no result."""
    if isinstance(num, dict) and isinstance(den, dict) and den[field]:
        return num[field] / den[field]
    return math.nan


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = " | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def print_main_table(results, lengths: list[int]) -> None:
    header = ["prompt", "dgrpo grpo s", "trl grpo s", "speedup", "dgrpo RSS MB", "trl RSS MB"]
    header += ["mem ratio", "dgrpo dgrpo-step s", "trl distill s", "ratio"]
    rows = []
    for n in lengths:
        dg, tg = results["dgrpo", "grpo", n], results["trl", "grpo", n]
        dd, td = results["dgrpo", "dgrpo", n], results["trl", "distill", n]
        ratios = [ratio(tg, dg, "seconds"), ratio(dg, tg, "peak_rss_mb"), ratio(dd, td, "seconds")]
        speedup, mem, distill = ("—" if math.isnan(r) else f"{r:.2f}x" for r in ratios)
        rows.append(
            [fmt_len(n), cell(dg, "seconds", ".1f"), cell(tg, "seconds", ".1f"), speedup]
            + [cell(dg, "peak_rss_mb", ".0f", True), cell(tg, "peak_rss_mb", ".0f", True), mem]
            + [cell(dd, "seconds", ".1f"), cell(td, "seconds", ".1f"), distill]
        )
    print_table(header, rows)


def print_runs_table(results) -> None:
    """Every measured run, distillation RSS and the warm-up flag included."""
    header = ["run", "prompt", "step s", "timed steps", "warm-up", "peak RSS MB", "wall s"]
    rows = [
        [f"{side} {method}", fmt_len(n), f"{r['seconds']:.1f}", str(r.get("steps", "?"))]
        + [{True: "yes", False: "no"}.get(r.get("warmup"), "?")]
        + [f"{r['peak_rss_mb']:.0f}", f"{r['wall_s']:.0f}"]
        for (side, method, n), r in results.items()
        if isinstance(r, dict)
    ]
    if rows:
        print_table(header, rows)


def print_breakdown(results) -> None:
    """dgrpo's own split of its step time (seconds)."""
    rows = [
        [f"{method}", fmt_len(n)]
        + [f"{r['breakdown'][k]:.2f}" if k in r["breakdown"] else "—" for k in BREAKDOWN]
        + [f"{r['seconds']:.2f}"]
        for (side, method, n), r in results.items()
        if side == "dgrpo" and isinstance(r, dict) and isinstance(r.get("breakdown"), dict)
    ]
    if rows:
        print("dgrpo step breakdown (s)")
        print_table(["method", "prompt", *BREAKDOWN, "step"], rows)


def summary_line(results, length: int = 4096) -> str:
    def get(side, method):
        return results.get((side, method, length), "not run")

    values = {
        "speedup_vs_trl_4k": ratio(get("trl", "grpo"), get("dgrpo", "grpo"), "seconds"),
        "mem_ratio_vs_trl_4k": ratio(get("dgrpo", "grpo"), get("trl", "grpo"), "peak_rss_mb"),
        "dgrpo_vs_trl_distill_4k": ratio(get("dgrpo", "dgrpo"), get("trl", "distill"), "seconds"),
    }
    return " ".join(f"{k}={'nan' if math.isnan(v) else f'{v:.3g}'}" for k, v in values.items())


def describe_setup(args) -> str:
    def ver(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "missing"

    load = os.getloadavg()[0]
    return (
        f"G={args.group} C={args.completion} steps={args.steps} (first is a warm-up if ≥ 2; median of rest) "
        f"threads={args.threads} cores={os.cpu_count()} load={load:.1f}; "
        f"torch {ver('torch')}, transformers {ver('transformers')}, trl {ver('trl')}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1k,4k,16k", help="prompt lengths P, comma-separated (k = 1024)")
    parser.add_argument("--trl-max", default="4k", help="longest P to run TRL at; longer ones are skipped")
    parser.add_argument(
        "--steps", type=int, default=2, help="optimizer steps per run; first is a warm-up if ≥ 2"
    )
    parser.add_argument("--only", choices=["trl", "dgrpo", "all"], default="all", help="which trainer to run")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt G")
    parser.add_argument("--completion", type=int, default=64, help="sampled tokens per completion C")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run (OMP_NUM_THREADS)")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per run, then it reads 'timeout'"
    )
    args = parser.parse_args()
    try:
        args.lengths = parse_lengths(args.lengths)
        args.trl_max = parse_length(args.trl_max)
    except UserError as err:
        parser.error(str(err))
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    print(describe_setup(args), flush=True)
    results = collect(args)
    print()
    print_main_table(results, args.lengths)
    print()
    print_runs_table(results)
    print()
    print_breakdown(results)
    print(f"load at end={os.getloadavg()[0]:.1f}")
    print(summary_line(results))


if __name__ == "__main__":
    main()
