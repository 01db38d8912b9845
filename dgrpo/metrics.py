"""Per-step metrics: `metrics.jsonl`, a rich progress display, optional trackio/wandb/tensorboard.

One JSON object per training step goes to `<run.out_dir>/metrics.jsonl`. `METRICS` below is the
table of names and meanings (TRL's "Logged metrics"); a name appears only when the method
produces it, and `<task>` is the row's task, e.g. multihop. A multi-process run logs, from
rank 0 only, every rank's values merged by `merge_ranks`.
"""

import json
import logging
import math
import resource
from pathlib import Path

import torch

from dgrpo.errors import UserError

METRICS: dict[str, str] = {
    "step": "training step (one rollout batch), 1-based",
    "epoch": "passes over the training split so far (fractional)",
    "loss": "the objective that was backpropagated, over the whole step batch (mean over update epochs)",
    "loss/<term>": "each active term's aggregated contribution: pg (clipped surrogate), pg_opd "
    "(advantage-level dGRPO surrogate), opd_full/opd_topk/opd_sampled (λ·reverse KL), ce, kd "
    "(forward KL), ref_kl (β·KL to π_ref)",
    "reward/mean": "mean reward of the step's completions (longblocks.rewards)",
    "reward/std": "std of those rewards",
    "reward/<task>/mean": "mean reward per task",
    "reward/<task>/std": "std of rewards per task",
    "accuracy": "share of completions with full reward (1.0)",
    "accuracy/<task>": "accuracy per task",
    "frac_reward_zero_std": "share of groups whose rewards are all equal (zero advantage)",
    "kl_teacher": "mean per-token reverse KL to the teacher: exact with estimator full, else the "
    "sampled-token log-ratio (k1)",
    "kl_teacher_forward": "kd: mean per-token forward KL from the teacher",
    "entropy": "mean per-token entropy of π_θ at τ on the completion tokens",
    "nll": "mean per-token −log π_θ(y_t) of the completion tokens",
    "clip_fraction": "share of tokens where the clip binds (ratio outside [1−ε_low, 1+ε_high] on "
    "the side the advantage pushes); clip_fraction_low / clip_fraction_high split it",
    "ratio_mean": "mean π_θ/π_old over tokens (ratio_min / ratio_max: extremes)",
    "approx_kl": "k3 estimate of KL(π_old ‖ π_θ)",
    "completion_length/mean": "completion tokens per completion, EOS included (also /min, /max)",
    "truncated_rate": "share of completions cut at rollout.max_new_tokens",
    "unparsable_rate": "share of completions without an answer line",
    "rollout/is_weight_mean": "server rollouts: mean truncated importance weight min(π_old/π_sampler, "
    "rollout.tis_cap) over loss tokens (dgrpo.mismatch)",
    "rollout/is_truncated_frac": "share of loss tokens whose weight was cut at rollout.tis_cap",
    "rollout/logp_diff_max": "largest |log π_old(y_t) − log π_sampler(y_t)|: the sampler/trainer mismatch",
    "rollout/mismatch_kl": "k3 estimate of KL(π_sampler ‖ π_old) on the sampled tokens",
    "rollout/sync_s": "seconds of the step's weight push to the rollout server",
    "lambda": "λ after its schedule",
    "lr": "learning rate of the step's last update",
    "grad_norm": "global gradient norm before clipping (last update of the step)",
    "micro_batches": "forward/backward micro-batches per update (optim.micro_batch_tokens packing)",
    "tokens_per_s": "prompt + completion tokens of the step / wall-clock seconds",
    "step_time_s": "wall-clock seconds of the step",
    "peak_memory_gb": "peak accelerator memory (CUDA) or peak resident memory of the process (CPU)",
    "data/skipped_long": "training rows skipped for exceeding data.max_prompt_tokens (the same every step)",
    "data/skipped_response": "sft/kd rows skipped for a response over data.max_response_tokens or, with "
    "data.append_answer_line, stating another answer than the row's",
}
__doc__ += "\n| name | meaning |\n|---|---|\n" + "\n".join(f"| `{k}` | {v} |" for k, v in METRICS.items())

log = logging.getLogger(__name__)
SHOWN = ("loss", "reward/mean", "accuracy", "kl_teacher", "entropy", "tokens_per_s")


def group_metrics(groups) -> dict[str, float]:
    """Reward, accuracy, length and truncation statistics of one step's rollout groups."""
    lengths = torch.cat([g.mask.sum(1) for g in groups]).float()
    out = {
        "completion_length/mean": lengths.mean().item(),
        "completion_length/min": lengths.min().item(),
        "completion_length/max": lengths.max().item(),
        "truncated_rate": torch.cat([g.truncated for g in groups]).float().mean().item(),
    }
    scored = [g for g in groups if g.rewards is not None]
    if not scored:
        return out
    statuses = [s for g in scored for s in g.statuses]
    out["unparsable_rate"] = statuses.count("unparsable") / len(statuses)
    out["frac_reward_zero_std"] = sum(bool((g.rewards == g.rewards[0]).all()) for g in scored) / len(scored)
    out |= _reward_stats(torch.cat([g.rewards for g in scored]), "")
    for task in sorted({g.example.task for g in scored}):
        rewards = torch.cat([g.rewards for g in scored if g.example.task == task])
        out |= _reward_stats(rewards, f"/{task}")
    return out


def _reward_stats(rewards: torch.Tensor, suffix: str) -> dict[str, float]:
    return {
        f"reward{suffix}/mean": rewards.mean().item(),
        f"reward{suffix}/std": rewards.std(correction=0).item(),
        f"accuracy{suffix}": (rewards >= 1.0).float().mean().item(),
    }


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def is_loss_share(name: str) -> bool:
    """`loss` and `loss/<term>` are logged as shares of the step's loss: they add up across
    micro-batches and ranks instead of being averaged."""
    return name == "loss" or name.startswith("loss/")


def merge_ranks(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """One step's metrics from every rank's own (multi-process runs; one rank: unchanged).

    Loss values are shares of the global loss and add up; throughput adds up; extremes and
    times take the extreme; every other value is the mean over the ranks that report it (an
    unweighted mean of per-rank means: exact for equal slices, close otherwise).
    """
    if len(per_rank) == 1:
        return per_rank[0]
    out = {}
    for name in dict.fromkeys(name for values in per_rank for name in values):
        values = [entry[name] for entry in per_rank if name in entry]
        if is_loss_share(name) or name == "tokens_per_s":
            out[name] = sum(values)
        elif name.endswith(("/max", "_max")) or name in ("step_time_s", "peak_memory_gb"):
            out[name] = max(values)
        elif name.endswith(("/min", "_min")):
            out[name] = min(values)
        else:
            out[name] = sum(values) / len(values)
    return out


class MetricsLogger:
    """Appends one JSON line per step and mirrors it to the display and trackers."""

    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        start_step: int,
        report_to: list[str],
        progress: bool,
        config: dict,
    ):
        self.path = Path(run_dir) / "metrics.jsonl"
        _truncate_after(self.path, start_step)  # a killed run may have logged past its checkpoint
        self.file = self.path.open("a", encoding="utf-8")
        self.trackers = [_TRACKERS[name](Path(run_dir), config) for name in report_to]
        self.progress = self.bar = None
        if progress:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            console = Console(stderr=True)
            if console.is_terminal:
                columns = (
                    TextColumn("[bold]train"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                )
                self.progress = Progress(*columns, TextColumn("{task.fields[info]}"), console=console)
                self.bar = self.progress.add_task("train", total=total_steps, completed=start_step, info="")
                self.progress.start()

    def log(self, step: int, values: dict[str, float]) -> None:
        record = {"step": step, **{k: _finite_or_str(v) for k, v in values.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        summary = "  ".join(f"{k} {values[k]:.4g}" for k in SHOWN if k in values)
        if self.progress is not None:
            self.progress.update(self.bar, completed=step, info=summary)
        else:
            log.info("step %d  %s", step, summary)
        for tracker in self.trackers:
            tracker(step, values)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.file.close()
        for tracker in self.trackers:
            getattr(tracker, "close", lambda: None)()


def _finite_or_str(value: float):
    return value if math.isfinite(value) else str(value)  # JSON has no NaN/inf


def _truncate_after(path: Path, step: int) -> None:
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line + "\n")
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    path.write_text("".join(kept), encoding="utf-8")


def _require(module: str, name: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise UserError(
            f"run.report_to includes '{name}', which is not installed", f"pip install {name}"
        ) from None


class _Tensorboard:
    def __init__(self, run_dir: Path, config: dict):
        self.writer = _require("torch.utils.tensorboard", "tensorboard").SummaryWriter(
            str(run_dir / "tensorboard")
        )

    def __call__(self, step, values):
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self):
        self.writer.close()


class _Wandb:
    def __init__(self, run_dir: Path, config: dict):
        self.wandb = _require("wandb", "wandb")
        self.wandb.init(project="dgrpo", name=run_dir.name, dir=str(run_dir), config=config)

    def __call__(self, step, values):
        self.wandb.log(values, step=step)

    def close(self):
        self.wandb.finish()


class _Trackio:
    def __init__(self, run_dir: Path, config: dict):
        self.trackio = _require("trackio", "trackio")
        self.trackio.init(project="dgrpo", name=run_dir.name, config=config)

    def __call__(self, step, values):
        self.trackio.log(values, step=step)

    def close(self):
        self.trackio.finish()


_TRACKERS = {"tensorboard": _Tensorboard, "wandb": _Wandb, "trackio": _Trackio}
