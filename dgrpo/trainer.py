"""`train(cfg)`, the loop, and `train_step`: rollout → score → forward → loss → backward → step → log.

No loss math here: formulas live in `dgrpo.losses`, and which terms apply comes from the
METHODS table (`dgrpo.config`) through `dgrpo.objective`. One code path serves all five
methods: sft and kd "roll out" the fixed response as a group of one, grpo/opd/dgrpo sample G
completions; every group then runs its shared prompt once (`group_forward`) and is scored on
completion positions only, in vocabulary chunks (`dgrpo.logprobs`).

Under torchrun each process trains on its slice of every step's batch (`dgrpo.distributed`),
holding a replica of the student or, with parallel.strategy fsdp, a shard of it
(`dgrpo.sharding`): the loss normalisers and the gradient are summed across processes, so the
step equals the single-process step on the whole batch. Each prompt's completions are drawn
from a generator seeded by (run.seed, step, draw, position in the global batch), so they do not
depend on the number of processes either. Rank 0 writes metrics; checkpoints are written by
rank 0 (replicas) or by every process, each its shard (`dgrpo.checkpoint`).
"""

import logging
import math
import random
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dgrpo import checkpoint, distributed, sharding
from dgrpo.config import TrainConfig, to_yaml
from dgrpo.data import Batches, Prepared, apply_chat_template_override, prepare
from dgrpo.errors import DivergedError, UserError
from dgrpo.logprobs import (
    completion_logprobs,
    gathered_logits,
    group_forward,
    lm_head_weight,
    logprobs_and_kl,
)
from dgrpo.losses import group_advantages, lambda_schedule
from dgrpo.metrics import MetricsLogger, group_metrics, is_loss_share, merge_ranks, peak_memory_gb
from dgrpo.models import (
    autocast_factory,
    check_compatible,
    load_model,
    load_tokenizer,
    pick_device,
    prepare_for_training,
)
from dgrpo.objective import (
    BatchTotals,
    Signals,
    Weights,
    active_terms,
    diagnostics,
    kl_kind,
    objective,
    teacher_signals,
    uses_reference,
)
from dgrpo.packing import batch_totals, micro_batches
from dgrpo.rollout import Group, fixed_group, frozen_logprobs, sample_group, score_group, widen
from dgrpo.teacher import Teacher, frozen_model, load_teacher

if TYPE_CHECKING:
    from dgrpo.remote.rollout import ServerRollout

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything a training step reads or updates."""

    cfg: TrainConfig
    run_dir: Path
    names: tuple[str, ...]  # active objective terms (dgrpo.objective.TERMS)
    temperature: float  # τ of every log-prob in the objective
    device: torch.device
    autocast: Callable[[], AbstractContextManager]
    tokenizer: object
    student: torch.nn.Module
    teacher: Teacher | None
    reference: torch.nn.Module | None
    data: Prepared
    batches: Batches
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    logger: MetricsLogger | None = None  # rank 0 only
    sampler: "ServerRollout | None" = None  # rollout.backend server (dgrpo.remote.rollout)
    step: int = 0  # completed training steps


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train until run.steps (or run.stop_after more steps); returns the run directory.
    Under torchrun, every process calls this and joins the process group for its duration."""
    with distributed.process_group(pick_device(cfg.run.device).type, cfg.parallel.timeout_minutes):
        run = setup(cfg, resume)
        end = min(cfg.run.steps, run.step + (cfg.run.stop_after or cfg.run.steps))
        try:
            while run.step < end:
                metrics = merge_ranks(distributed.gather_objects(train_step(run)))
                run.step += 1
                if run.logger is not None:
                    run.logger.log(run.step, metrics)
                if run.step == end or (cfg.run.save_every and run.step % cfg.run.save_every == 0):
                    save(run)
        finally:
            if run.logger is not None:
                run.logger.close()
            if run.sampler is not None:
                run.sampler.close()
    return run.run_dir


def train_step(run: Run) -> dict[str, float]:
    """One rollout batch (grad_accum draws) and optim.update_epochs updates on it, each update
    accumulating the gradient over token-budget micro-batches (dgrpo.packing)."""
    cfg, start = run.cfg, time.perf_counter()
    groups = [group for draw in range(cfg.optim.grad_accum) for group in rollout(run, *own_slice(run), draw)]
    score(run, groups)
    weights, totals = step_weights(run), global_totals(groups)
    micro = micro_batches(groups, cfg.optim.micro_batch_tokens)
    own_micro_batches, padding = len(micro), None
    if isinstance(run.student, sharding.Sharded):  # equal collective calls on every process
        padding = sharding.empty_like_group(groups[0])
        micro = sharding.lockstep_micro_batches(micro, padding)
    stats: list[dict[str, Tensor]] = []
    for _ in range(cfg.optim.update_epochs):
        for pieces in micro:
            signals = forward(run, pieces)
            loss, loss_stats = objective(run.names, signals, weights, totals)
            if distributed.world_size() == 1:  # else the summed grad_norm stops every rank at once
                check_finite(run, {"loss": loss, **loss_stats})
            loss.backward()  # a share of the step's loss: the shares sum to it
            if any(piece is not padding for piece in pieces):  # lockstep padding alone: nothing to report
                # logged values only: keep no autograd graph alive past the backward
                stats.append({"loss": loss.detach(), **loss_stats, **diagnostics(signals, run.names)})
        grad_norm, lr = update(run)
    if run.sampler is not None:  # the server samples the next step from the new weights
        run.sampler.push(run.student)
    seconds = time.perf_counter() - start
    extra = {"lambda": weights.lam, "lr": lr, "grad_norm": grad_norm, "micro_batches": own_micro_batches}
    extra |= {"rollout/sync_s": run.sampler.sync_seconds} if run.sampler is not None else {}
    return step_metrics(run, groups, stats, extra, seconds)


def own_slice(run: Run) -> tuple[list, list[int]]:
    """This rank's examples of the next batch and their positions in it: every rank draws the
    same global batch (same seed and cursor) and takes positions rank, rank + world, ..."""
    batch = run.batches.next()
    positions = list(range(len(batch)))[distributed.rank() :: distributed.world_size()]
    return [run.data.examples[batch[i]] for i in positions], positions


def global_totals(groups: list[Group]) -> BatchTotals:
    """The step's loss normalisers over every rank's groups, so that each rank's loss is its
    share of the global loss and the ranks' gradients sum to its gradient."""
    local = batch_totals(groups)
    rows, tokens = distributed.sum_floats([local.rows, local.tokens])
    return BatchTotals(rows=int(rows), tokens=tokens)


def rollout(run: Run, examples: list, positions: list[int] | None = None, draw: int = 0) -> list[Group]:
    """G sampled completions per prompt, or the fixed response (METHODS' `samples`); `positions`
    in the global batch (default 0, 1, ...) and the accumulation `draw` seed the sampling. A
    sharded student needs two completion positions per group (dgrpo.sharding: lockstep)."""
    positions = range(len(examples)) if positions is None else positions
    if run.cfg.terms.samples:
        size = run.cfg.rollout.group_size
        if run.sampler is not None:
            groups = run.sampler.sample_groups(examples, size)
        else:
            with sharding.gathered(run.student) as student:  # one all-gather for the whole rollout
                groups = [
                    sample_group(
                        student, run.tokenizer, ex, run.cfg.rollout, size,
                        generator=sampling_generator(run, draw, position), autocast=run.autocast,
                    )
                    for ex, position in zip(examples, positions, strict=True)
                ]  # fmt: skip
    else:
        groups = [fixed_group(ex, run.tokenizer, run.device) for ex in examples]
    if isinstance(run.student, sharding.Sharded):
        groups = [widen(group, 2, run.tokenizer.pad_token_id) for group in groups]
    return groups


def sampling_generator(run: Run, draw: int, position: int) -> torch.Generator:
    """The RNG of one prompt's completions: a function of (run.seed, step, draw, position in the
    global batch), so a run draws the same completions on any number of processes."""
    seed = np.random.SeedSequence([run.cfg.run.seed, run.step, draw, position]).generate_state(1)[0]
    return torch.Generator(device=run.device).manual_seed(int(seed))


def score(run: Run, groups: list[Group]) -> None:
    """Rewards and advantages, then the frozen models' signals, once per rollout batch."""
    cfg, terms = run.cfg, run.cfg.terms
    if terms.samples:  # rewards are scored for every sampled method (opd reports them too)
        for group in groups:
            score_group(group, cfg.rollout.truncation)
        rewards = torch.cat([group.rewards for group in groups])
        size = cfg.rollout.group_size
        # every rank's rewards (equal counts per rank): loss.scale=batch reads the global batch
        everyone = torch.cat(distributed.gather_objects(rewards))
        adv = (
            group_advantages(everyone, size, cfg.loss.scale, cfg.loss.adv_eps)
            if terms.needs_rewards
            else torch.zeros_like(everyone)
        ).split(len(rewards))[distributed.rank()]
        for group, group_adv in zip(groups, adv.to(run.device).split(size), strict=True):
            group.adv = group_adv
    frozen = partial(
        frozen_logprobs, temperature=run.temperature, chunk_size=cfg.loss.chunk_size, autocast=run.autocast
    )
    for group in groups:
        if run.teacher is not None:
            need = teacher_signals(run.names) & run.teacher.signals
            group.teacher = run.teacher.score(
                group.prompt_ids, group.completion_ids, group.mask, need, run.temperature
            )
        if run.reference is not None:
            group.logp_ref = frozen(run.reference, group)
        if cfg.optim.update_epochs > 1:  # samples are reused: freeze π_old before the first update
            group.logp_old = frozen(run.student, group)


def forward(run: Run, groups: list[Group]) -> Signals:
    """Signals of a micro-batch: per-group signals padded to one completion length and stacked.
    One call of the student (through its sharded root when sharded: dgrpo.sharding)."""

    def signals(model) -> dict[str, Tensor | None]:
        parts = [forward_group(run, model, group) for group in groups]
        return {f.name: _stack([getattr(p, f.name) for p in parts]) for f in fields(Signals)}

    return Signals(**sharding.call(run.student, signals))


def forward_group(run: Run, model: torch.nn.Module, group: Group) -> Signals:
    """The student's log-probs (with gradient) on one group's completions, and what the terms
    read from the teacher; the prompt runs once and only completion positions reach the head."""
    cfg, teacher = run.cfg, group.teacher
    with run.autocast():
        hidden = group_forward(model, group.prompt_ids, group.completion_ids, group.mask, with_grad=True)
    weight, targets, chunk = lm_head_weight(model), group.completion_ids, cfg.loss.chunk_size
    kind = kl_kind(run.names)
    if kind is not None:
        logp, kl_teacher, entropy = logprobs_and_kl(
            hidden,
            weight,
            targets,
            teacher.hidden,
            teacher.weight,
            run.temperature,
            chunk,
            kl=kind,
            with_entropy=True,
        )
    else:
        kl_teacher = None
        logp, entropy = completion_logprobs(
            hidden, weight, targets, run.temperature, chunk, with_entropy=True
        )
    student_topk = None
    if teacher is not None and teacher.topk_ids is not None:
        # [G, C, K + 1] student logits h·W[ids] at the teacher's top-K ids and at the sampled token
        # (whose logit and log-prob give the student's normaliser): never [G, C, V] logits
        ids = torch.cat([teacher.topk_ids, targets.unsqueeze(-1)], dim=-1)
        student_topk = gathered_logits(hidden, weight, ids, chunk)
    return Signals(
        mask=group.loss_mask,
        logp=logp,
        entropy=entropy,
        adv=group.adv,
        logp_old=group.logp_old,
        logp_ref=group.logp_ref,
        logp_teacher=teacher.logp if teacher is not None else None,
        kl_teacher=kl_teacher,
        student_topk=student_topk,
        teacher_topk_logp=teacher.topk_logp if teacher is not None else None,
        logp_sampler=group.logp_sampler,
    )


def _stack(parts: list[Tensor | None]) -> Tensor | None:
    """Concatenate groups along rows, right-padding dim 1 (completion positions) with zeros."""
    if any(p is None for p in parts):
        return None
    if parts[0].dim() == 1:
        return torch.cat(parts)
    width = max(p.shape[1] for p in parts)
    return torch.cat([F.pad(p, (0, 0) * (p.dim() - 2) + (0, width - p.shape[1])) for p in parts])


def step_weights(run: Run) -> Weights:
    loss = run.cfg.loss
    return Weights(
        lam=lambda_schedule(run.step, run.cfg.run.steps, loss.lam, loss.lam_schedule, loss.lam_warmup_steps),
        beta=loss.beta,
        eps_low=loss.eps_low,
        eps_high=loss.eps_high,
        temperature=run.temperature,
        aggregation=loss.aggregation,
        constant_per_row=loss.aggregation_constant or run.cfg.rollout.max_new_tokens,
        tis_cap=run.cfg.rollout.tis_cap,
    )


def update(run: Run) -> tuple[float, float]:
    """Clip, optimizer step, LR schedule step; returns (grad norm before clipping, LR used)."""
    params = [p for p in run.student.parameters() if p.requires_grad]
    if not isinstance(run.student, sharding.Sharded):  # FSDP reduce-scattered them in backward
        distributed.sum_gradients(params)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, run.cfg.optim.max_grad_norm or math.inf)
    grad_norm = sharding.full_tensor(grad_norm)  # sharded: the global norm on every process
    check_finite(run, {"grad_norm": grad_norm})
    lr, norm = run.optimizer.param_groups[0]["lr"], grad_norm.item()
    if norm > 0 or not run.cfg.optim.skip_empty_steps:  # the same global norm on every process
        run.optimizer.step()
    with warnings.catch_warnings():  # a skipped first step is by design: the schedule counts steps
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler", UserWarning)
        run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return norm, lr


def check_finite(run: Run, values: dict[str, Tensor]) -> None:
    """Stop on NaN/inf before it reaches the weights; the last checkpoint stays the good one."""
    bad = {name: value.item() for name, value in values.items() if not torch.isfinite(value).all()}
    if bad:
        run.optimizer.zero_grad(set_to_none=True)
        last = checkpoint.latest(run.run_dir)
        shown = ", ".join(f"{name}={value}" for name, value in bad.items())
        raise DivergedError(
            f"non-finite {shown} at step {run.step + 1}; the run stopped",
            f"last good checkpoint: {last or 'none saved yet'} (lower optim.lr, then --resume)",
        )


def step_metrics(run: Run, groups: list[Group], stats, extra: dict, seconds: float) -> dict[str, float]:
    """Loss values are micro-batch shares: summed per update, averaged over updates; every other
    statistic is averaged over micro-batches."""
    names = dict.fromkeys(name for entry in stats for name in entry)
    updates = run.cfg.optim.update_epochs
    out = {}
    for name in names:
        values = torch.stack([entry[name] for entry in stats if name in entry]).float()
        out[name] = (values.sum() / updates if is_loss_share(name) else values.mean()).item()
    out |= group_metrics(groups) | extra
    tokens = sum(group.prompt_ids.shape[1] + int(group.mask.sum()) for group in groups)
    out |= {
        "tokens_per_s": tokens / seconds,
        "step_time_s": seconds,
        "peak_memory_gb": peak_memory_gb(run.device),
        "epoch": run.batches.epoch + run.batches.cursor / run.batches.n,
        "data/skipped_long": run.data.skipped_long,
        "data/skipped_response": run.data.skipped_response,
    }
    return out


def save(run: Run) -> None:
    """The checkpoint with every rank's RNG state; all ranks return once it is on disk. Rank 0
    writes it (replicas hold equal weights and optimizer state), or every rank writes its shard."""
    rngs = distributed.gather_objects(checkpoint.rng_state())
    state = {
        "scheduler": run.scheduler.state_dict(),
        "data": run.batches.state_dict(),
        **({"rng_ranks": rngs} if len(rngs) > 1 else {}),
    }
    where = (run.run_dir, run.step)
    if isinstance(run.student, sharding.Sharded):
        student, optimizer = run.student, run.optimizer
        checkpoint.save_sharded(
            *where, student, optimizer, run.tokenizer, state, to_yaml(run.cfg), run.cfg.run.keep_last
        )
        return
    if distributed.is_main():
        state["optimizer"] = run.optimizer.state_dict()
        checkpoint.save(*where, run.student, run.tokenizer, state, to_yaml(run.cfg), run.cfg.run.keep_last)
    distributed.barrier()


# ------------------------------------------------------------------------------------------
# Setup
# ------------------------------------------------------------------------------------------


def setup(cfg: TrainConfig, resume: bool) -> Run:
    """Models, data, optimizer and logger; with `resume`, the newest checkpoint's full state."""
    seed_everything(cfg.run.seed + distributed.rank())  # ranks sample different completions
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    distributed.check_divisible(cfg.data.batch_size, "data.batch_size")
    run_dir = Path(cfg.run.out_dir)
    if distributed.is_main():
        checkpoint.clean_partial(run_dir)
    last = checkpoint.latest(run_dir)
    if last is not None and not resume:
        raise UserError(
            f"run.out_dir {run_dir} already holds checkpoints", "pass --resume or choose another run.out_dir"
        )
    device = distributed.local_device(pick_device(cfg.run.device))
    autocast = autocast_factory(device, cfg.run.autocast)
    tokenizer = load_tokenizer(cfg.model.student)
    apply_chat_template_override(tokenizer, cfg.data)
    student = load_model(str(last) if last else cfg.model.student, seed=cfg.run.seed, dtype=cfg.model.dtype)
    student = student.to(device)
    distributed.broadcast_parameters(student)
    prepare_for_training(student, cfg.model.gradient_checkpointing)
    names = active_terms(cfg.terms, cfg.loss.estimator, cfg.loss.combine, cfg.loss.beta)
    teacher = load_teacher(cfg, tokenizer, student, autocast, device)
    reference = _reference(cfg, names, tokenizer, student, device)
    if sharding.enabled(cfg.parallel):
        student = sharding.shard(student, cfg.parallel, device)
    data = prepare(
        cfg.data,
        tokenizer,
        cfg.data.train_split,
        with_response=not cfg.terms.samples,
        with_verification=cfg.terms.needs_rewards,
    )
    optimizer = torch.optim.AdamW(
        student.parameters(),
        lr=cfg.optim.lr,
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
    )
    total = cfg.run.steps * cfg.optim.update_epochs
    factor = partial(
        lr_factor,
        warmup=cfg.optim.warmup_steps,
        total=total,
        schedule=cfg.optim.schedule,
        floor=cfg.optim.min_lr_ratio,
    )
    run = Run(
        cfg=cfg,
        run_dir=run_dir,
        names=names,
        temperature=_temperature(cfg),
        device=device,
        autocast=autocast,
        tokenizer=tokenizer,
        student=student,
        teacher=teacher,
        reference=reference,
        data=data,
        batches=Batches(len(data.examples), cfg.data.batch_size, cfg.run.seed, cfg.data.shuffle),
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, factor),
    )
    _restore(run, last)
    if cfg.rollout.backend == "server" and cfg.terms.samples:
        from dgrpo.remote.rollout import ServerRollout  # the server client, only when used

        run.sampler = ServerRollout.connect(cfg, tokenizer, run_dir, device)
        run.sampler.push(student)  # a fresh or restarted server starts from the run's weights
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        run.logger = MetricsLogger(
            run_dir, cfg.run.steps, run.step, cfg.run.report_to, cfg.run.progress, cfg.model_dump(mode="json")
        )
    log.info(
        "%s: terms %s, %d training rows (%d skipped as too long), starting at step %d of %d",
        cfg.loss.method, "+".join(names), len(data.examples), data.skipped_long, run.step, cfg.run.steps,
    )  # fmt: skip
    return run


def _restore(run: Run, last: Path | None) -> None:
    """Optimizer, schedule, data cursor and RNG of a checkpoint (the model was loaded from it).
    RNG last: everything above consumed randomness that the uninterrupted run did not."""
    if last is None:
        return
    state = checkpoint.load_state(last)
    if isinstance(run.student, sharding.Sharded):
        checkpoint.load_sharded(last, run.student, run.optimizer)
    elif "optimizer" in state:
        run.optimizer.load_state_dict(state["optimizer"])
    else:
        raise UserError(
            f"checkpoint {last} holds sharded optimizer state (written with parallel.strategy fsdp)",
            "resume with parallel.strategy=fsdp on several processes, or start a new run.out_dir",
        )
    run.scheduler.load_state_dict(state["scheduler"])
    run.batches.load_state_dict(state["data"])
    run.step = int(state["step"])
    rng = checkpoint.rank_rng_state(state, distributed.rank())
    if rng is not None:
        checkpoint.set_rng_state(rng)
    else:  # more processes than saved the checkpoint: a fresh stream of this rank's own
        seed_everything(run.cfg.run.seed + distributed.rank() + run.step)
    log.info("resumed from %s", last)


def _temperature(cfg: TrainConfig) -> float:
    """τ of the objective's log-probs: the sampling τ for sampled methods, kd's τ, else 1."""
    if cfg.terms.samples:
        return cfg.rollout.temperature
    return cfg.loss.kd_temperature if cfg.terms.kd else 1.0


def _reference(cfg: TrainConfig, names, tokenizer, student, device) -> torch.nn.Module | None:
    """π_ref for the β term: model.reference, or the student's initial weights, frozen."""
    if not uses_reference(names):
        return None
    source = cfg.model.reference or cfg.model.student
    reference = load_model(source, seed=cfg.run.seed, dtype=cfg.model.dtype).to(device)
    check_compatible(tokenizer, load_tokenizer(source), student, reference, role="reference")
    return frozen_model(reference, cfg, device)


def lr_factor(step: int, *, warmup: int, total: int, schedule: str, floor: float) -> float:
    """LR multiplier at optimizer step `step` (0-based): linear warmup to 1 over `warmup` steps,
    then cosine/linear decay to `floor` at `total`, or constant."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    decay = {"cosine": 0.5 * (1 + math.cos(math.pi * progress)), "linear": 1 - progress, "constant": 1.0}
    return floor + (1 - floor) * decay[schedule]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
