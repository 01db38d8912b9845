"""`python -m dgrpo.study.demo OUT`: a dgrpo run that visibly learns, in about a minute on a CPU.

On the toy task of `dgrpo.study.toy`: a teacher is trained by sft, then dgrpo (GRPO reward +
λ·reverse KL to that teacher) trains a randomly initialised student. Writes OUT/teacher and
OUT/dgrpo (metrics.jsonl, checkpoints, reward.png: the training reward per step) and prints
the reward at the start and at the end.
"""

import argparse
import logging
import shutil
import sys
import warnings
from pathlib import Path

from dgrpo.config import make_config
from dgrpo.study.assets import save_model
from dgrpo.study.report import metric_rows, plot_curves
from dgrpo.study.toy import ARCH, make_dataset, make_tokenizer
from dgrpo.trainer import train


def toy_run(data_dir: Path, student: Path, out: Path, method: str, steps: int, **sections) -> Path:
    values = {
        "model": {"student": str(student), "gradient_checkpointing": False},
        "data": {"path": str(data_dir), "batch_size": 4},
        "rollout": {"group_size": 8, "max_new_tokens": 1, "truncation": "score"},
        "loss": {"method": method},
        "optim": {"lr": 1e-2, "schedule": "constant"},
        "run": {"out_dir": str(out), "steps": steps, "save_every": 0, "progress": False, "threads": 1},
    }
    for section, updates in sections.items():
        values.setdefault(section, {}).update(updates)
    return train(make_config(values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dgrpo.study.demo", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder (replaced)")
    parser.add_argument("--steps", type=int, default=40, help="dgrpo steps (default 40)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning)
    shutil.rmtree(args.out, ignore_errors=True)
    tokenizer = make_tokenizer(args.out / "tokenizer")
    data = make_dataset(args.out / "data")
    for name, seed in (("student-init", 0), ("teacher-init", 1)):
        save_model(args.out / name, tokenizer, ARCH, seed)
    teacher = toy_run(
        data, args.out / "teacher-init", args.out / "teacher", "sft", 100, data={"batch_size": 8}
    )
    run = toy_run(
        data,
        args.out / "student-init",
        args.out / "dgrpo",
        "dgrpo",
        args.steps,
        teacher={"model": str(teacher)},
    )
    rewards = [row["reward/mean"] for row in metric_rows(run)]
    plot_curves({"dgrpo": rewards}, "training reward", run / "reward.png")
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    print(f"dgrpo on the toy task: reward {first:.2f} over the first 5 steps -> {last:.2f} over the last 5")
    print(f"metrics: {run / 'metrics.jsonl'}; reward curve: {run / 'reward.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
