"""Inference servers against the trainer's own forward: the teacher and rollouts over the
OpenAI-compatible API (`dgrpo serve`, two server processes on 127.0.0.1) compared with the local
teacher and sampler, on the embedded tiny models and longblocks prompts of --length tokens.

1. teacher: log π_T and the top-K log-probs of student-sampled completions, remote vs local
   (max |difference|; the top-K ids must be equal);
2. rollouts: after --updates AdamW steps, each pushed to the server over gloo (vLLM's
   weight-transfer protocol), greedy server completions vs local ones, token for token;
3. training: --steps steps of `opd` (estimator topk) with local rollouts and teacher vs both on
   servers; steps/s from the median step time after the first step.

The last line is machine-readable:

    teacher_max_abs_diff=<x> rollout_tokens_equal=<0|1> steps_per_s_ratio=<server/local>

On a CPU box the servers share the cores with the trainer, so the ratio measures the protocol's
overhead (HTTP, JSON log-probs, weight pushes), not a speed-up: that comes from a GPU server.

Run: .venv/bin/python bench/remote.py [--length 1k --group 4 --completion 16 --steps 4 --updates 3]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from _dgrpo_step import make_dataset  # noqa: E402

from dgrpo.config import TeacherConfig, make_config  # noqa: E402
from dgrpo.data import prepare  # noqa: E402
from dgrpo.logprobs import completion_logprobs, group_forward, lm_head_weight  # noqa: E402
from dgrpo.models import build_tiny, load_tokenizer  # noqa: E402
from dgrpo.remote.rollout import ServerRollout  # noqa: E402
from dgrpo.remote.teacher import RemoteTeacher  # noqa: E402
from dgrpo.rollout import sample_group  # noqa: E402
from dgrpo.teacher import LocalTeacher  # noqa: E402
from dgrpo.trainer import train  # noqa: E402
from longblocks.render.sizing import parse_length  # noqa: E402


def start_server(model: str, name: str, seed: int, threads: int) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "dgrpo.cli", "serve", model, "--port", "0", "--served-model-name", name,
           "--seed", str(seed), "--threads", str(threads)]  # fmt: skip
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = process.stdout.readline()
    if not line.startswith("serving"):
        process.kill()
        raise SystemExit(f"dgrpo serve {model} did not start")
    return process, line.split()[3]


def run_values(args, data: Path, out: Path, policy_url: str | None, teacher_url: str | None) -> dict:
    values = {
        "data": {"path": str(data), "max_prompt_tokens": args.prompt_len + 64, "batch_size": 1},
        "rollout": {"group_size": args.group, "max_new_tokens": args.completion,
                    "min_new_tokens": args.completion},
        "teacher": {"model": "tiny-qwen3-teacher", "top_k": args.top_k},
        "loss": {"method": "opd", "estimator": "topk"},
        "optim": {"lr": 1e-3},
        "run": {"out_dir": str(out), "steps": args.steps, "save_every": 0, "threads": args.threads,
                "progress": False},
    }  # fmt: skip
    if policy_url:
        values["rollout"] |= {"backend": "server", "url": policy_url, "served_model": "policy"}
    if teacher_url:
        values["teacher"] |= {"model": None, "url": teacher_url, "served_model": "teacher"}
    return values


def teacher_diff(args, data: Path, tmp: Path, teacher_url: str) -> tuple[float, bool]:
    """max |remote − local| over log π_T(y_t) and the top-K log-probs; whether top-K ids agree."""
    cfg = make_config(run_values(args, data, tmp / "t", None, None))
    tokenizer = load_tokenizer("tiny-qwen3")
    examples = prepare(cfg.data, tokenizer, "train", with_response=False, with_verification=False).examples
    student = build_tiny("tiny-qwen3", 0)
    local = LocalTeacher(build_tiny("tiny-qwen3-teacher", 1), args.top_k, 128)
    remote = RemoteTeacher.connect(TeacherConfig(url=teacher_url, served_model="teacher", top_k=args.top_k),
                                   tokenizer, 151936)  # fmt: skip
    worst, same_ids = 0.0, True
    need = frozenset({"logp", "topk"})
    for example in examples[:2]:
        group = sample_group(student, tokenizer, example, cfg.rollout, args.group)
        a = local.score(group.prompt_ids, group.completion_ids, group.mask, need, 1.0)
        b = remote.score(group.prompt_ids, group.completion_ids, group.mask, need, 1.0)
        worst = max(worst, (a.logp - b.logp)[group.mask].abs().max().item(),
                    (a.topk_logp - b.topk_logp)[group.mask].abs().max().item())  # fmt: skip
        same_ids &= torch.equal(a.topk_ids[group.mask], b.topk_ids[group.mask])
    remote.client.close()
    return worst, same_ids


def rollouts_equal(args, data: Path, tmp: Path, policy_url: str) -> bool:
    """Greedy server rollouts == local ones after each of --updates pushed optimizer steps."""
    cfg = make_config(run_values(args, data, tmp / "r", policy_url, None))
    tokenizer = load_tokenizer("tiny-qwen3")
    examples = prepare(cfg.data, tokenizer, "train", with_response=False, with_verification=False).examples[
        :2
    ]
    student = build_tiny("tiny-qwen3", 0)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    sampler = ServerRollout.connect(cfg, tokenizer, tmp / "r")
    equal = True
    try:
        for update in range(args.updates):
            group = sample_group(
                student, tokenizer, examples[update % len(examples)], cfg.rollout, args.group
            )
            hidden = group_forward(
                student, group.prompt_ids, group.completion_ids, group.mask, with_grad=True
            )
            logp = completion_logprobs(hidden, lm_head_weight(student), group.completion_ids)
            (-logp[group.mask].mean()).backward()  # any loss: the point is that the weights move
            optimizer.step()
            optimizer.zero_grad()
            sampler.push(student)
            for example in examples:
                (server,) = sampler.sample_groups([example], 2, greedy=True)
                here = sample_group(student, tokenizer, example, cfg.rollout, 2, greedy=True)
                equal &= torch.equal(server.completion_ids, here.completion_ids)
    finally:
        sampler.close()
    return equal


def steps_per_s(args, data: Path, out: Path, policy_url=None, teacher_url=None) -> tuple[float, list[dict]]:
    import json

    run_dir = train(make_config(run_values(args, data, out, policy_url, teacher_url)))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return 1.0 / statistics.median(row["step_time_s"] for row in rows[1:] or rows), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", default="1k", help="prompt tokens (longblocks sizing)")
    parser.add_argument("--group", type=int, default=4, help="G completions per prompt")
    parser.add_argument("--completion", type=int, default=16, help="C tokens per completion")
    parser.add_argument("--steps", type=int, default=4, help="training steps per side")
    parser.add_argument("--updates", type=int, default=3, help="pushed optimizer steps before comparing")
    parser.add_argument("--top-k", type=int, default=20, help="K of the topk estimator")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the trainer and each server")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.prompt_len = parse_length(args.length)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        data = make_dataset(tmp / "data", args.prompt_len, args.seed)
        servers = [start_server("tiny-qwen3", "policy", 0, args.threads),
                   start_server("tiny-qwen3-teacher", "teacher", 1, args.threads)]  # fmt: skip
        (_, policy_url), (_, teacher_url) = servers
        try:
            diff, same_ids = teacher_diff(args, data, tmp, teacher_url)
            equal = rollouts_equal(args, data, tmp, policy_url)
            local, local_rows = steps_per_s(args, data, tmp / "local")
            remote, remote_rows = steps_per_s(args, data, tmp / "remote", policy_url, teacher_url)
        finally:
            for process, _ in servers:
                process.terminate()
                process.wait(timeout=30)
    report(args, (local, local_rows), (remote, remote_rows), diff, same_ids, equal)


def report(args, local_run, remote_run, diff: float, same_ids: bool, equal: bool) -> None:
    """The side-by-side table, then the machine-readable last line."""
    (local, local_rows), (remote, remote_rows) = local_run, remote_run
    sync = statistics.median(row["rollout/sync_s"] for row in remote_rows)
    mismatch = max(row["rollout/logp_diff_max"] for row in remote_rows)
    tokens = [statistics.median(row["tokens_per_s"] for row in rows) for rows in (local_rows, remote_rows)]
    print(
        f"\nopd (topk K={args.top_k}), P={args.length}, G={args.group}, C={args.completion}, "
        f"{args.steps} steps, {args.threads} thread(s) per process"
    )
    print("| rollouts + teacher | steps/s | tokens/s | weight push s | max abs Δ log π (sampler, trainer) |")
    print("|---|---|---|---|---|")
    print(f"| local (trainer's forward) | {local:.3f} | {tokens[0]:.0f} | - | - |")
    print(f"| `dgrpo serve` (2 servers) | {remote:.3f} | {tokens[1]:.0f} | {sync:.3f} | {mismatch:.1e} |")
    print(
        f"teacher top-{args.top_k} ids equal: {same_ids}; "
        f"greedy rollouts equal after {args.updates} pushed updates: {equal}"
    )
    print(
        f"teacher_max_abs_diff={diff:.3g} rollout_tokens_equal={int(equal)} "
        f"steps_per_s_ratio={remote / local:.3f}"
    )


if __name__ == "__main__":
    main()
