"""Teach a from-scratch study model to read: sft on the references with a loss on the prompt too.

A randomly initialised model must learn the documents' language before it can learn to answer
from them. The trainer's sft puts the loss on the response alone (what a pretrained model
wants); here every prompt token also carries a next-token loss at `prompt_weight`, so each
768-token context teaches the model the fact sentences, the names and where they repeat, and the
~80 reference tokens teach the answers. Measured on 2-hop multihop at 768 tokens (a 128-wide
4-layer Qwen3, batch 16, lr 3e-3, held-out accuracy on 96 rows): after ~25M training tokens a
prompt weight of 0.3 reached 0.21, a weight of 1 0.15 and the response alone 0.03–0.09; on
one hop, several passes over the same rows taught it the training worlds rather than reading
(docs/results.md, "Why this scale").

With `autocast` the forward passes run under bf16 autocast (weights, AdamW and the loss stay
float32): about 1.4x faster per step on a CPU with AVX512-BF16, which buys the study's teacher
more steps in the same hour, but 9.9x slower on an AVX2 CPU (bench/reader_step.py), where the
study's `teacher.autocast: auto` trains in float32.

The run saves a Hugging Face model directory at the end and at each `snapshots` step (a less
trained model of the same family: the study's student), and its loss per step in metrics.jsonl.
Every `checkpoint_every` steps it also saves what it needs to go on (weights, AdamW moments,
the batch sampler's state) to resume.pt: the study's teacher takes over two hours in float32
on a 2-core AVX2 CPU, and a run stopped at step 2,900 continues there, on the loss curve it
would have drawn uninterrupted.
"""

import json
import logging
import math
import random
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dgrpo.config import make_config
from dgrpo.data import prepare
from dgrpo.models import load_model, load_tokenizer

log = logging.getLogger(__name__)
WARMUP_STEPS = 50
DONE = "done.json"  # written last: a run stopped before it is continued from resume.pt
ARGUMENTS = "reader-args.json"  # what the run was made with
RESUME = "resume.pt"  # weights, optimizer and sampler state at the last checkpoint
CHECKPOINT_EVERY = 250  # steps between resume points (~1 s to write at the study's scale)


def sequences(data: Path, tokenizer, max_examples: int | None = None) -> list[tuple[list[int], int]]:
    """(prompt + reference + EOS token ids, prompt length) of each training row, tokenized as the
    trainer's sft tokenizes them."""
    cfg = make_config(
        {
            "model": {"student": "tiny-qwen3"},
            "loss": {"method": "sft"},
            "data": {
                "path": str(data),
                "max_prompt_tokens": 1 << 20,
                "max_response_tokens": 1 << 12,
                "max_examples": max_examples,
            },
        }  # fmt: skip
    ).data
    examples = prepare(cfg, tokenizer, "train", with_response=True, with_verification=False).examples
    return [(e.prompt_ids + e.response_ids, len(e.prompt_ids)) for e in examples]


def batch_loss(model, rows: list[tuple[list[int], int]], pad: int, prompt_weight: float):
    """(weighted loss, mean response-token NLL) of right-padded rows: padding only follows a row's
    own tokens, so causal attention needs no mask; padded positions weigh 0."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    weight, response = torch.zeros(len(rows), width), torch.zeros(len(rows), width)
    for i, (row, prompt) in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        weight[i, 1:prompt] = prompt_weight
        response[i, prompt : len(row)] = 1.0
    weight, response = (weight + response)[:, 1:], response[:, 1:]  # position t predicts token t+1
    logits = model(input_ids=ids).logits[:, :-1].float()
    nll = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none").view_as(ids[:, 1:])
    return (nll * weight).sum() / weight.sum(), ((nll * response).sum() / response.sum()).detach()


def learning_rate(step: int, steps: int, peak: float) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < WARMUP_STEPS:
        return peak * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def train_reader(
    init: str,
    data: Path,
    out: Path,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    prompt_weight: float,
    seed: int,
    snapshots: tuple[int, ...] = (),
    autocast: bool = False,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> Path:
    """Train `init` on the train split of `data`; saves out/ (final) and out/step-N (snapshots).
    A finished run (out/done.json) made with the same arguments is reused, an unfinished one
    continues from its last checkpoint, and one made with other arguments is trained again."""
    arguments = {"init": init, "data": str(data), "steps": steps, "batch_size": batch_size, "lr": lr,
                 "prompt_weight": prompt_weight, "seed": seed, "snapshots": list(snapshots)}  # fmt: skip
    if autocast:  # keyed only when on, so runs made before the option stay valid
        arguments["autocast"] = "bf16"
    stamp = out / ARGUMENTS
    same = stamp.is_file() and json.loads(stamp.read_text()) == arguments
    if same and (out / DONE).is_file():
        return out
    tokenizer = load_tokenizer(init)
    model = load_model(init)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = random.Random(seed)
    first, elapsed = 0, 0.0
    if same and (out / RESUME).is_file():
        first, elapsed = resume(out, model, optimizer, rng)
        log.info("reader resumes at step %d/%d", first, steps)
    else:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        stamp.write_text(json.dumps(arguments))
    rows = sequences(data, tokenizer)
    started = time.perf_counter() - elapsed
    with open(out / "metrics.jsonl", "a" if first else "w", encoding="utf-8") as metrics:
        for step in range(first, steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, steps, lr)
            batch = rng.choices(rows, k=batch_size)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss, response_nll = batch_loss(model, batch, tokenizer.pad_token_id, prompt_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            record = {"step": step + 1, "loss": loss.item(), "response_nll": response_nll.item(),
                      "lr": optimizer.param_groups[0]["lr"],
                      "seconds": time.perf_counter() - started}  # fmt: skip
            metrics.write(json.dumps(record) + "\n")
            if (step + 1) % 50 == 0:
                metrics.flush()
                log.info("reader step %d/%d: response nll %.3f", step + 1, steps, record["response_nll"])
            if step + 1 in snapshots:
                save(model, tokenizer, out / f"step-{step + 1}")
            if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                metrics.flush()
                checkpoint(out, step + 1, model, optimizer, rng, record["seconds"])
    save(model, tokenizer, out)
    (out / DONE).write_text(json.dumps({"steps": steps, "seconds": time.perf_counter() - started}))
    (out / RESUME).unlink(missing_ok=True)
    return out


def checkpoint(out: Path, step: int, model, optimizer, rng: random.Random, seconds: float) -> None:
    """resume.pt for step `step`, written whole or not at all (a kill mid-write keeps the last)."""
    state = {"step": step, "seconds": seconds, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "rng": rng.getstate()}  # fmt: skip
    partial = out / f"{RESUME}.partial"
    torch.save(state, partial)
    partial.replace(out / RESUME)


def resume(out: Path, model, optimizer, rng: random.Random) -> tuple[int, float]:
    """Load resume.pt into model, optimizer and sampler; drop the metrics lines logged after it
    (those steps are trained again). Returns (steps done, seconds spent)."""
    state = torch.load(out / RESUME, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng.setstate(state["rng"])
    file = out / "metrics.jsonl"
    kept = file.read_text(encoding="utf-8").splitlines()[: state["step"]]
    file.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return state["step"], state["seconds"]


def save(model, tokenizer, out: Path) -> None:
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
