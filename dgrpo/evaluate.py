"""`evaluate(cfg, checkpoint, split)`: greedy completions, rewards, and where the model fails.

Accuracy and reward are reported overall, per task, per length bucket, per evidence-depth
bucket and per (length, depth) cell — written as JSON, as a PNG heatmap of accuracy over
length × depth, and as one JSON line per example with its completion.
"""

import json
import logging
import math
from collections import defaultdict
from pathlib import Path

import torch

from dgrpo.config import TrainConfig
from dgrpo.data import Example, apply_chat_template_override, prepare
from dgrpo.models import freeze, load_model, load_tokenizer, pick_device, resolve_source
from dgrpo.rollout import sample_group, score_group

log = logging.getLogger(__name__)

DEPTH_BINS = 5  # evidence depth buckets of width 0.2 over [0, 1]


def evaluate(cfg: TrainConfig, checkpoint: str, split: str = "test", out_dir: Path | None = None) -> dict:
    """Score greedy completions of `checkpoint` on `split`; returns the report written to out_dir
    (default: <checkpoint>/eval, or <run.out_dir>/eval for a tiny model name)."""
    source = resolve_source(checkpoint)
    out_dir = (
        Path(out_dir)
        if out_dir
        else (Path(source) if Path(source).is_dir() else Path(cfg.run.out_dir)) / "eval"
    )
    tokenizer = load_tokenizer(source)
    apply_chat_template_override(tokenizer, cfg.data)
    model = freeze(
        load_model(source, seed=cfg.run.seed, dtype=cfg.model.dtype).to(pick_device(cfg.run.device))
    )
    data = prepare(cfg.data, tokenizer, split, with_response=False, with_verification=True)
    records = []
    for example in data.examples:
        group = sample_group(model, tokenizer, example, cfg.rollout, 1, greedy=True)
        score_group(group, cfg.rollout.truncation)
        records.append(_record(example, group))
    report = {
        "checkpoint": str(source),
        "split": split,
        "skipped_long": data.skipped_long,
        **summarize(records),
    }
    write_report(report, records, out_dir, split)
    return report


def _record(example: Example, group) -> dict:
    return {
        "id": example.id,
        "task": example.task,
        "length": length_bucket(example),
        "depth": depth_bucket(example.depth),
        "reward": float(group.rewards[0]),
        "status": group.statuses[0],
        "truncated": bool(group.truncated[0]),
        "completion_tokens": int(group.mask[0].sum()),
        "completion": group.texts[0],
    }


def length_bucket(example: Example) -> str:
    """The row's length bucket ('4k'), or its measured prompt length rounded to k tokens."""
    n = example.length or len(example.prompt_ids)
    return f"{round(n / 1024)}k" if n >= 1024 else str(n)


def depth_bucket(depth: float | None) -> str:
    if depth is None:
        return "n/a"
    low = min(int(depth * DEPTH_BINS), DEPTH_BINS - 1) / DEPTH_BINS
    return f"{low:.1f}-{low + 1 / DEPTH_BINS:.1f}"


def summarize(records: list[dict]) -> dict:
    """Cells {n, reward, accuracy, truncated_rate} overall and per task / length / depth / both."""
    by: dict[str, dict] = {
        "by_task": defaultdict(list),
        "by_length": defaultdict(list),
        "by_depth": defaultdict(list),
    }
    grid: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by["by_task"][r["task"]].append(r)
        by["by_length"][r["length"]].append(r)
        by["by_depth"][r["depth"]].append(r)
        grid[r["length"]][r["depth"]].append(r)
    return {
        "overall": _cell(records),
        **{key: {name: _cell(rs) for name, rs in sorted(groups.items())} for key, groups in by.items()},
        "by_length_depth": {
            length: {depth: _cell(rs) for depth, rs in sorted(row.items())}
            for length, row in sorted(grid.items())
        },
    }


def _cell(records: list[dict]) -> dict:
    n = len(records)
    return {
        "n": n,
        "reward": sum(r["reward"] for r in records) / n if n else math.nan,
        "accuracy": sum(r["reward"] >= 1.0 for r in records) / n if n else math.nan,
        "truncated_rate": sum(r["truncated"] for r in records) / n if n else math.nan,
    }


def write_report(report: dict, records: list[dict], out_dir: Path, split: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{split}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    with (out_dir / f"{split}-completions.jsonl").open("w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
    plot_heatmap(report["by_length_depth"], out_dir / f"{split}-heatmap.png", title=f"accuracy on {split}")
    log.info("wrote %s", out_dir / f"{split}.json")


def plot_heatmap(grid: dict[str, dict[str, dict]], path: Path, title: str) -> None:
    """Accuracy per (length bucket, depth bucket); empty cells grey, each cell labelled with n."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    lengths = sorted(grid, key=_length_key)
    depths = [depth_bucket((i + 0.5) / DEPTH_BINS) for i in range(DEPTH_BINS)]
    depths += sorted({d for row in grid.values() for d in row} - set(depths))
    values = torch.full((len(lengths), len(depths)), math.nan)
    fig, ax = plt.subplots(figsize=(1.2 * len(depths) + 2, 0.6 * len(lengths) + 1.8))
    for i, length in enumerate(lengths):
        for j, depth in enumerate(depths):
            cell = grid[length].get(depth)
            if cell:
                values[i, j] = cell["accuracy"]
                ax.text(j, i, f"{cell['accuracy']:.2f}\nn={cell['n']}", ha="center", va="center", fontsize=8)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(values.numpy(), vmin=0, vmax=1, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(depths)), depths)
    ax.set_yticks(range(len(lengths)), lengths)
    ax.set_xlabel("evidence depth")
    ax.set_ylabel("prompt length")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _length_key(label: str) -> float:
    try:
        return float(label[:-1]) * 1024 if label.endswith("k") else float(label)
    except ValueError:
        return math.inf
