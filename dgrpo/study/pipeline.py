"""The study's stages, each cached under out_dir: data, teacher, student warm start, methods.

Every stage goes through the public entry points (`longblocks generate`, `dgrpo.trainer.train`,
`dgrpo.evaluate.evaluate`), so the study measures exactly what a user runs.
"""

import json
import logging
import multiprocessing
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import datasets

from dgrpo.config import make_config
from dgrpo.errors import UserError
from dgrpo.evaluate import evaluate
from dgrpo.study.assets import save_model, train_bpe
from dgrpo.study.config import ModelSpec, StudyConfig

log = logging.getLogger(__name__)
HELD_OUT = ("validation", "test")  # world-disjoint from train


def generate(out: Path, *args: str) -> Path:
    """`longblocks generate ... --out out`, once (a finished folder is reused)."""
    if not (out / "dataset_dict.json").is_file():
        command = [sys.executable, "-m", "longblocks.cli", "generate", *args, "--out", str(out)]
        done = subprocess.run([*command, "--overwrite"], capture_output=True, text=True)
        if done.returncode != 0:
            problem = f"longblocks generate failed: {done.stderr.strip()[-300:]}"
            raise UserError(problem, "check the data section of the study config")
    return out


def tokenizer_dir(cfg: StudyConfig, root: Path) -> Path:
    """The study tokenizer: the configured one, or a BPE trained on 1k-token longblocks text."""
    if cfg.tokenizer.path:
        return Path(cfg.tokenizer.path)
    out = root / "tokenizer"
    if not (out / "tokenizer.json").is_file():
        spec = cfg.data
        corpus = generate(root / "corpus", "--task", spec.task, "--hops", spec.hops, "--length", "1k",
                          "--num-examples", str(cfg.tokenizer.corpus_examples),
                          "--workers", str(spec.workers))  # fmt: skip
        rows = datasets.load_from_disk(str(corpus))["train"]
        fields = ("system", "document", "question", "instruction", "reference")
        train_bpe((row[f] for row in rows for f in fields if row.get(f)), cfg.tokenizer.vocab_size, out)
    return out


def study_data(cfg: StudyConfig, root: Path, tokenizer: Path) -> Path:
    spec = cfg.data
    return generate(root / "data", "--task", spec.task, "--hops", spec.hops, "--length", spec.length,
                    "--num-examples", str(spec.num_examples), "--workers", str(spec.workers),
                    "--tokenizer", str(tokenizer), "--seed", "0")  # fmt: skip


def initial_model(spec: ModelSpec, out: Path, tokenizer: Path, seed: int) -> str:
    if spec.path:
        return spec.path
    if not (out / "config.json").is_file():
        from transformers import AutoTokenizer

        save_model(out, AutoTokenizer.from_pretrained(tokenizer, local_files_only=True), spec.arch, seed)
    return str(out)


def run_values(
    cfg: StudyConfig, data: Path, out: Path, student: str, method: str, seed: int,
    steps: int, lr: float, batch_size: int, teacher: str | None = None, **loss,
) -> dict:  # fmt: skip
    """One `dgrpo train` config: every method of the study differs only in these arguments."""
    c = cfg.compare
    return {
        "model": {"student": student, "gradient_checkpointing": False},
        "data": {"path": str(data), "batch_size": batch_size, "max_prompt_tokens": 1 << 20,
                 "max_response_tokens": c.max_new_tokens},
        "rollout": {"group_size": c.group_size, "max_new_tokens": c.max_new_tokens},
        "teacher": {"model": teacher},
        "loss": {"method": method, **loss},
        "optim": {"lr": lr, "schedule": "cosine" if method == "sft" else "constant",
                  "warmup_steps": max(1, steps // 20), "micro_batch_tokens": 1 << 16},
        "run": {"out_dir": str(out), "steps": steps, "seed": seed, "save_every": 0, "progress": False,
                "threads": cfg.threads, "device": cfg.device},
    }  # fmt: skip


def train_and_eval(values: dict, data_path: str) -> dict:
    """Train one run (unless finished), then greedy evaluation on the held-out splits; a worker
    process's job, so it takes plain values."""
    from dgrpo.checkpoint import latest
    from dgrpo.trainer import train

    cfg = make_config(values)
    out = Path(cfg.run.out_dir)
    if latest(out) is None:
        train(cfg)
    return held_out_eval(values, str(out), out / "eval")


def held_out_eval(values: dict, checkpoint: str, out: Path) -> dict:
    """Greedy evaluation records on validation + test (cached as eval/records.json)."""
    cache = out / "records.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    cfg = make_config(values)
    records = []
    for split in HELD_OUT:
        evaluate(cfg, checkpoint, split, out)
        lines = (out / f"{split}-completions.jsonl").read_text(encoding="utf-8").splitlines()
        records += [json.loads(line) for line in lines]
    result = {"records": records}
    cache.write_text(json.dumps(result))
    return result


def sft_stage(cfg: StudyConfig, spec: ModelSpec, data: Path, out: Path, init: str, seed: int) -> str:
    values = run_values(cfg, data, out, init, "sft", seed, spec.steps, spec.lr, spec.batch_size)
    train_and_eval(values, str(data))
    return str(out)


def comparison_jobs(cfg: StudyConfig, data: Path, root: Path, student: str, teacher: str) -> dict:
    """(method, seed) -> run values: the same student, steps, lr and completion rows per step."""
    c = cfg.compare
    jobs = {}
    for method in c.methods:
        fixed = method in ("sft", "kd")
        batch = c.batch_size * c.group_size if fixed else c.batch_size
        loss = {"estimator": c.estimator, "lam": c.lam} if method in ("opd", "dgrpo") else {}
        for seed in c.seeds:
            jobs[method, seed] = run_values(
                cfg, data, root / "runs" / f"{method}-{seed}", student, method, seed, c.steps, c.lr, batch,
                teacher if method in ("kd", "opd", "dgrpo") else None, **loss,
            )  # fmt: skip
    return jobs


def run_all(jobs: dict, data: Path, workers: int) -> dict:
    """Every job's evaluation, `workers` runs at a time (spawned: no forked OpenMP state)."""
    if workers == 1:
        return {key: train_and_eval(values, str(data)) for key, values in jobs.items()}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {key: pool.submit(train_and_eval, values, str(data)) for key, values in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def run_study(cfg: StudyConfig) -> dict:
    """All stages; returns what the report needs (run folders and evaluation records)."""
    root = Path(cfg.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer_dir(cfg, root)
    data = study_data(cfg, root, tokenizer)
    log.info("data ready: %s", data)
    teacher_init = initial_model(cfg.teacher, root / "teacher-init", tokenizer, seed=1)
    student_init = initial_model(cfg.student, root / "student-init", tokenizer, seed=0)
    teacher = sft_stage(cfg, cfg.teacher, data, root / "teacher", teacher_init, seed=1)
    log.info("teacher trained")
    student0 = sft_stage(cfg, cfg.student, data, root / "student0", student_init, seed=0)
    jobs = comparison_jobs(cfg, data, root, student0, teacher)
    results = run_all(jobs, data, cfg.workers)
    baseline = jobs[next(iter(jobs))]
    return {
        "root": root,
        "tokenizer": tokenizer,
        "teacher_init": teacher_init,
        "student_init": student_init,
        "teacher": held_out_eval(baseline, teacher, Path(teacher) / "eval"),
        "student0": held_out_eval(baseline, student0, Path(student0) / "eval"),
        "runs": {key: (Path(values["run"]["out_dir"]), results[key]) for key, values in jobs.items()},
    }
