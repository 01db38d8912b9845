"""The study's stages, each cached under out_dir: data, teacher, student warm start, methods.

Every stage goes through the public entry points (`longblocks generate`, `dgrpo.trainer.train`,
`dgrpo.evaluate.evaluate`), so the study measures exactly what a user runs.

A cached stage is reused only if it was made from the same inputs. Generated folders are keyed by
their arguments and by the generator's code (`generator_version`): after a change to longblocks the
same config draws other rows. The trained stages name their data by path, so when the data or the
tokenizer is made again they are removed (`drop_stale_stages`) rather than trusted.
"""

import json
import logging
import multiprocessing
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import datasets
import torch

from dgrpo.config import make_config
from dgrpo.errors import UserError
from dgrpo.evaluate import evaluate
from dgrpo.models import native_bf16
from dgrpo.study.assets import save_model, train_bpe
from dgrpo.study.config import ModelSpec, StudyConfig
from dgrpo.study.reader import train_reader

log = logging.getLogger(__name__)
HELD_OUT = ("validation", "test")  # world-disjoint from train
STAMP = "study-args.json"  # what a generated folder (or the tokenizer) was made from
INPUTS = "inputs.json"  # the stamps of the data the trained stages below were made from
TRAINED = ("teacher-init", "teacher", "student-init", "student0", "runs")
TIMINGS = "timings.json"  # wall seconds of each stage the last time it did work (not when cached)
GENERATED = ("corpus", "tokenizer", "data", "retention")


@cache
def generator_version() -> str:
    """`longblocks --version`'s version: the package's plus a hash of its code and templates, on
    which the rows of a given config depend (asked of the CLI, like every other generator call)."""
    command = [sys.executable, "-m", "longblocks.cli", "--version"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1]


def stamp_of(folder: Path) -> dict | None:
    stamp = folder / STAMP
    return json.loads(stamp.read_text()) if stamp.is_file() else None


def generate(out: Path, *args: str) -> Path:
    """`longblocks generate ... --out out`, once: a folder made by the same arguments and the same
    generator code is reused, any other (the config or longblocks changed) is generated again."""
    stamp = {"args": list(args), "generator": generator_version()}
    if stamp_of(out) != stamp:
        command = [sys.executable, "-m", "longblocks.cli", "generate", *args, "--out", str(out)]
        done = subprocess.run([*command, "--overwrite"], capture_output=True, text=True)
        if done.returncode != 0:
            problem = f"longblocks generate failed: {done.stderr.strip()[-300:]}"
            raise UserError(problem, "check the data section of the study config")
        (out / STAMP).write_text(json.dumps(stamp))
    return out


def tokenizer_dir(cfg: StudyConfig, root: Path) -> Path:
    """The study tokenizer: the configured one, or a BPE trained on 1k-token longblocks text (2-hop
    questions of the study's task family, whatever hops the study asks: documents dominate it)."""
    if cfg.tokenizer.path:
        return Path(cfg.tokenizer.path)
    out, spec = root / "tokenizer", cfg.data
    corpus = generate(root / "corpus", "--task", spec.task, "--hops", "2", "--length", "1k",
                      "--num-examples", str(cfg.tokenizer.corpus_examples),
                      "--workers", str(spec.workers))  # fmt: skip
    stamp = {"corpus": stamp_of(corpus), "vocab_size": cfg.tokenizer.vocab_size}
    if stamp_of(out) != stamp or not (out / "tokenizer.json").is_file():
        rows = datasets.load_from_disk(str(corpus))["train"]
        fields = ("system", "document", "question", "instruction", "reference")
        train_bpe((row[f] for row in rows for f in fields if row.get(f)), cfg.tokenizer.vocab_size, out)
        (out / STAMP).write_text(json.dumps(stamp))
    return out


def study_data(cfg: StudyConfig, root: Path, tokenizer: Path) -> Path:
    spec = cfg.data
    return generate(root / "data", *task_args(spec), "--length", spec.length,
                    "--num-examples", str(spec.num_examples), "--workers", str(spec.workers),
                    "--tokenizer", str(tokenizer), "--seed", "0")  # fmt: skip


def task_args(spec) -> tuple[str, ...]:
    return ("--task", spec.task, "--hops", spec.hops, "--compositional-share", str(spec.compositional_share))


def retention_data(cfg: StudyConfig, root: Path, tokenizer: Path) -> Path | None:
    spec, length = cfg.data, cfg.retention.length
    if length is None:
        return None
    return generate(root / "retention", *task_args(spec), "--length", length,
                    "--num-examples", str(cfg.retention.num_examples), "--workers", str(spec.workers),
                    "--tokenizer", str(tokenizer), "--seed", "1")  # fmt: skip


def drop_stale_stages(root: Path, inputs: dict) -> None:
    """Remove the trained stages unless root/inputs.json says they were made from `inputs` (the
    stamps of the tokenizer and the data): a teacher keyed by its data's path alone would otherwise
    be reused, or resumed, on rows it was never trained on."""
    stamp = root / INPUTS
    if not stamp.is_file() or json.loads(stamp.read_text()) != inputs:
        stale = [name for name in TRAINED if (root / name).exists()]
        if stale:
            log.info("the data changed: training %s again", ", ".join(stale))
        for name in stale:
            shutil.rmtree(root / name)
    stamp.write_text(json.dumps(inputs))


def record_time(root: Path, stage: str, seconds: float) -> None:
    """Keep `seconds` as the stage's time in root/timings.json (the report's stage times: a
    rerun that reuses every stage takes seconds and must not pass for the study's cost)."""
    path = root / TIMINGS
    timings = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**timings, stage: round(seconds, 1)}))


def evaluated(run_dir: Path) -> bool:
    """Whether a run's evaluation is cached (its training is then finished too)."""
    return (run_dir / "eval" / "records.json").is_file()


def initial_model(spec: ModelSpec, out: Path, tokenizer: Path, seed: int) -> str:
    if spec.path:
        return spec.path
    if not (out / "config.json").is_file():
        from transformers import AutoTokenizer

        save_model(out, AutoTokenizer.from_pretrained(tokenizer, local_files_only=True), spec.arch, seed)
    return str(out)


def run_values(
    cfg: StudyConfig, data: Path, out: Path, student: str, method: str, seed: int,
    steps: int, lr: float, batch_size: int, teacher: str | None = None, schedule: str = "constant",
    train_rows: int | None = None, **loss,
) -> dict:  # fmt: skip
    """One `dgrpo train` config: every method of the study differs only in these arguments.
    `train_rows` caps the training rows the run tokenizes (data.max_examples)."""
    c = cfg.compare
    return {
        "model": {"student": student, "dtype": cfg.dtype,
                  "gradient_checkpointing": cfg.gradient_checkpointing},
        "data": {"path": str(data), "batch_size": batch_size, "max_prompt_tokens": 1 << 20,
                 "max_response_tokens": 512, "max_examples": train_rows},
        "rollout": {"group_size": c.group_size, "max_new_tokens": c.max_new_tokens},
        "teacher": {"model": teacher},
        "loss": {"method": method, **loss},
        "optim": {"lr": lr, "schedule": schedule,
                  "warmup_steps": max(1, steps // 20), "micro_batch_tokens": 1 << 16},
        "run": {"out_dir": str(out), "steps": steps, "seed": seed, "save_every": max(1, steps // 4),
                "progress": False,
                "threads": cfg.threads, "device": cfg.device},
    }  # fmt: skip


def train_and_eval(values: dict, retention: str | None = None, eval_examples: int | None = None) -> dict:
    """Train one run (unless finished), then greedy evaluation on the held-out splits (and on the
    retention probe set); a worker process's job, so it takes plain values."""
    from dgrpo.checkpoint import latest, load_state
    from dgrpo.trainer import train

    cfg = make_config(values)
    out = Path(cfg.run.out_dir)
    stamp = out / "study-values.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != values:
        shutil.rmtree(out)  # made by another config: train again
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(values))
    last = latest(out)
    if last is None or load_state(last)["step"] < cfg.run.steps:
        train(cfg, resume=True)  # an interrupted study continues from the run's last checkpoint
    return evaluations(values, str(out), retention, eval_examples)


def evaluations(
    values: dict, checkpoint: str, retention: str | None, eval_examples: int | None = None
) -> dict:
    """{"records": held-out records, "retention": probe records or None} of one checkpoint; the
    first `eval_examples` rows of each held-out split (all of the probe set's)."""
    out = Path(checkpoint)
    probe = None
    values = {**values, "data": {**values["data"], "max_examples": eval_examples}}
    if retention is not None:
        probe_values = {**values, "data": {**values["data"], "path": retention, "max_examples": None}}
        probe = held_out_eval(probe_values, checkpoint, out / "eval-retention", ("train", *HELD_OUT))
    return {"records": held_out_eval(values, checkpoint, out / "eval", HELD_OUT), "retention": probe}


def held_out_eval(values: dict, checkpoint: str, out: Path, splits: tuple[str, ...]) -> list[dict]:
    """Greedy evaluation records on `splits` (cached as records.json in `out`)."""
    cache = out / "records.json"
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    if cached.get("data") == values["data"]:  # made with the same data section (path, max_examples)
        return cached["records"]
    cfg = make_config(values)
    records = []
    for split in splits:
        evaluate(cfg, checkpoint, split, out)
        lines = (out / f"{split}-completions.jsonl").read_text(encoding="utf-8").splitlines()
        records += [json.loads(line) for line in lines]
    cache.write_text(json.dumps({"records": records, "data": values["data"]}))
    return records


def sft_stage(
    cfg: StudyConfig,
    spec: ModelSpec,
    data: Path,
    out: Path,
    init: str,
    seed: int,
    retention: str | None = None,
) -> dict:
    """sft on the references (the teacher, or the student's warm start) and its evaluations."""
    values = run_values(
        cfg, data, out, init, "sft", seed, spec.steps, spec.lr, spec.batch_size, schedule="cosine"
    )
    return train_and_eval(values, retention, cfg.compare.eval_examples)


def teacher_stage(cfg: StudyConfig, data: Path, root: Path, init: str) -> tuple[Path, Path | None]:
    """(teacher, its student snapshot or None): the reader loop when teacher.prompt_weight > 0,
    else the trainer's sft (a configured teacher.path is still sft-ed for teacher.steps)."""
    spec, out = cfg.teacher, root / "teacher"
    if spec.prompt_weight == 0:
        start, cached = time.perf_counter(), evaluated(out)
        sft_stage(cfg, spec, data, out, init, seed=1)
        if not cached:
            record_time(root, "teacher", time.perf_counter() - start)
        return out, None
    step = cfg.student.from_teacher_step
    snapshots = () if step is None else (step,)
    train_reader(init, data, out, steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr,
                 prompt_weight=spec.prompt_weight, seed=1, snapshots=snapshots,
                 autocast=reader_bf16(spec.autocast))  # fmt: skip
    return out, None if step is None else out / f"step-{step}"


def reader_bf16(mode: str) -> bool:
    """teacher.autocast -> whether the reader loop (on the CPU) runs under bf16 autocast."""
    native = native_bf16(torch.device("cpu"))
    if mode == "bf16" and not native:
        log.warning("teacher.autocast=bf16 on a CPU without native bf16 matmul: expect about 10x the "
                    "float32 step time (teacher.autocast=auto trains in float32 here)")  # fmt: skip
    return mode == "bf16" or (mode == "auto" and native)


def comparison_jobs(cfg: StudyConfig, data: Path, root: Path, student: str, teacher: str) -> dict:
    """(method, seed) -> run values: the same student, steps, lr and completion rows per step.
    Each run tokenizes only the rows it can draw (compare.train_rows): all 24,000 training rows
    of the full study would cost every run a minute or more for a few hundred it uses."""
    c = cfg.compare
    jobs = {}
    for method in c.methods:
        fixed = method in ("sft", "kd")
        batch = c.batch_size * c.group_size if fixed else c.batch_size
        loss = {"estimator": c.estimator, "lam": c.lam} if method in ("opd", "dgrpo") else {}
        for seed in c.seeds:
            jobs[method, seed] = run_values(
                cfg, data, root / "runs" / f"{method}-{seed}", student, method, seed, c.steps, c.lr, batch,
                teacher if method in ("kd", "opd", "dgrpo") else None, train_rows=c.train_rows, **loss,
            )  # fmt: skip
    return jobs


def parallel(function, jobs: dict[object, tuple], workers: int, *common) -> dict:
    """{key: function(*args, *common)}, `workers` at a time (spawned: no forked OpenMP state)."""
    if workers == 1:
        return {key: function(*args, *common) for key, args in jobs.items()}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {key: pool.submit(function, *args, *common) for key, args in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def run_study(cfg: StudyConfig) -> dict:
    """All stages; returns what the report needs (run folders and evaluation records)."""
    root = Path(cfg.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    start, stamps = time.perf_counter(), [stamp_of(root / name) for name in GENERATED]
    tokenizer = tokenizer_dir(cfg, root)
    data = study_data(cfg, root, tokenizer)
    probe = retention_data(cfg, root, tokenizer)
    probe = None if probe is None else str(probe)
    log.info("data ready: %s", data)
    if [stamp_of(root / name) for name in GENERATED] != stamps:
        record_time(root, "data", time.perf_counter() - start)
    drop_stale_stages(root, {"tokenizer": stamp_of(tokenizer), "data": stamp_of(data),
                             "retention": None if probe is None else stamp_of(Path(probe))})  # fmt: skip
    teacher_init = initial_model(cfg.teacher, root / "teacher-init", tokenizer, seed=1)
    student_init = None
    if cfg.student.from_teacher_step is None:
        student_init = initial_model(cfg.student, root / "student-init", tokenizer, seed=0)
    teacher_dir, student_dir = teacher_stage(cfg, data, root, teacher_init)
    log.info("teacher trained")
    if cfg.student.from_teacher_step is None:
        student_dir = root / "student0"
        start, cached = time.perf_counter(), evaluated(student_dir)
        sft_stage(cfg, cfg.student, data, student_dir, student_init, seed=0, retention=probe)
        if not cached:
            record_time(root, "student0", time.perf_counter() - start)
    c = cfg.compare
    models = (("teacher", teacher_dir, 1, None), ("student0", student_dir, 0, probe))
    evals = {  # cached when sft_stage evaluated them already
        name: (
            run_values(cfg, data, path, str(path), "sft", seed, 1, c.lr, c.batch_size),
            str(path),
            probe_of,
        )
        for name, path, seed, probe_of in models
    }
    jobs = comparison_jobs(cfg, data, root, str(student_dir), str(teacher_dir))
    runs = [values for values, *_ in evals.values()] + list(jobs.values())
    start, cached = time.perf_counter(), all(evaluated(Path(v["run"]["out_dir"])) for v in runs)
    teacher, student0 = parallel(evaluations, evals, cfg.workers, c.eval_examples).values()
    results = parallel(train_and_eval, {key: (values, probe) for key, values in jobs.items()}, cfg.workers,
                       c.eval_examples)  # fmt: skip
    if not cached:
        record_time(root, "runs", time.perf_counter() - start)
    return {
        "root": root,
        "tokenizer": tokenizer,
        "teacher_init": teacher_init,
        "student_init": student_init,
        "teacher": teacher,
        "student0": student0,
        "runs": {key: (Path(values["run"]["out_dir"]), results[key]) for key, values in jobs.items()},
    }
