"""The dataset card: README.md with Hub metadata, rendered from `data_cards/`, and its plots.

`io.save` writes a card into every saved dataset; `publish` renders it again so the uploaded
card names its repository. The card reads only the columns in `CARD_COLUMNS`, so it can be
rebuilt from the parquet shards without loading the documents.

The PNGs are byte-identical for the same rows, like every other output file: matplotlib's
default style (a user's matplotlibrc is ignored), a fixed size and dpi, numpy-computed bins,
and no "Software" tag, the only metadata matplotlib writes into a PNG.
"""

import hashlib
import json
import typing
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path

import yaml
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel

from longblocks.audit import AUDIT_FILE, MIN_ROWS, AuditResult, render_table
from longblocks.config import BuildConfig
from longblocks.render.env import find_folder
from longblocks.row import Row, Verification

CARD_COLUMNS = ("task", "length", "language", "n_tokens", "tokenizer", "verification")
SPLIT_ORDER = ("train", "validation", "test")
LENGTH_PLOT, DEPTH_PLOT = "assets/length_hist.png", "assets/depth_hist.png"
AUDIT_PLOT = "assets/audit.png"
LICENSE = "cc-by-4.0"  # the worlds and prose are synthetic; attribution is the only condition
PRETTY_NAME = "LongBlocks: verifiable long-context tasks"
TAGS = ["long-context", "synthetic", "verifiable", "multi-hop"]
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
# Flags `longblocks generate` has no option for; a card says when they differ from the default.
NOT_ON_CLI = ("unanswerable_share", "conflict_share", "rubric_items", "split_fractions")
COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")
DATA_CARDS_DIR = find_folder("data_cards")


def write_card(
    folder: Path, rows: dict[str, list[dict]], cfg: BuildConfig, summary: dict, repo_id: str | None = None
) -> list[Path]:
    """Write README.md and the two plots into `folder`; returns the paths written.

    `rows` maps split -> rows (only `CARD_COLUMNS` are read); `summary` is `io.summarize(rows)`.
    The shortcut audit comes from `folder/audit.json` (written by `io.save`) when it exists, and
    adds a table and `AUDIT_PLOT`.
    """
    (folder / "assets").mkdir(exist_ok=True)
    plot_lengths(rows, folder / LENGTH_PLOT)
    plot_depths(rows, folder / DEPTH_PLOT)
    written = [folder / "README.md", folder / LENGTH_PLOT, folder / DEPTH_PLOT]
    results = read_audit(folder)
    if results:
        plot_audit(results, folder / AUDIT_PLOT)
        written.append(folder / AUDIT_PLOT)
    readme = folder / "README.md"
    readme.write_text(
        render_card(rows, cfg, summary, repo_id, results, fingerprint=data_fingerprint(folder)),
        encoding="utf-8",
    )
    return written


def read_audit(folder: Path) -> list[AuditResult]:
    """The audit records saved beside the dataset, or [] for a dataset saved without them."""
    file = folder / AUDIT_FILE
    if not file.is_file():
        return []
    fields = ("name", "task", "value", "chance", "margin", "n")
    return [AuditResult(**{k: r[k] for k in fields}) for r in json.loads(file.read_text(encoding="utf-8"))]


def render_card(
    rows: dict[str, list[dict]],
    cfg: BuildConfig,
    summary: dict,
    repo_id: str | None = None,
    audit: list[AuditResult] = (),
    fingerprint: str = "",
) -> str:
    """The README.md text: YAML front matter for the Hub, then the card body."""
    all_rows = [r for split_rows in rows.values() for r in split_rows]
    return (
        _environment()
        .get_template("README.md.jinja")
        .render(
            metadata=card_metadata(rows),
            repo_id=repo_id,
            splits=list(rows),
            examples={split: len(split_rows) for split, split_rows in rows.items()},
            summary=summary,
            tasks=sorted({r["task"] for r in all_rows}),
            lengths=[length_label(n) for n in sorted({r["length"] for r in all_rows})],
            kinds=sorted({r["verification"]["kind"] for r in all_rows}),
            tokenizers=sorted({r["tokenizer"] for r in all_rows}),
            counts=count_table(rows),
            columns=row_columns(),
            config=config_table(cfg),
            command=generate_command(cfg),
            not_on_cli=[name for name in NOT_ON_CLI if _differs_from_default(cfg, name)],
            length_plot=LENGTH_PLOT,
            depth_plot=DEPTH_PLOT,
            audit_table=render_table(audit) if audit else "",
            audit_failed=[f"{r.task}: {r.name}" for r in audit if not r.passed],
            audit_min_rows=MIN_ROWS,
            audit_plot=AUDIT_PLOT,
            fingerprint=fingerprint,
        )
    )


def data_fingerprint(folder: Path) -> str:
    """sha256 over the non-empty `data/*.parquet` shards (name, then bytes, in name order): the
    same for a saved dataset and its published tree, different whenever a row differs."""
    import pyarrow.parquet as pq

    digest = hashlib.sha256()
    for shard in sorted((Path(folder) / "data").glob("*.parquet")):
        if pq.read_metadata(shard).num_rows:
            digest.update(shard.name.encode() + b"\0" + shard.read_bytes())
    return digest.hexdigest()


def card_metadata(rows: dict[str, list[dict]]) -> dict:
    """The card's YAML front matter; `configs` points the viewer and `load_dataset` at the shards."""
    languages = sorted({r["language"] for split_rows in rows.values() for r in split_rows})
    total = sum(len(split_rows) for split_rows in rows.values())
    return {
        "license": LICENSE,
        "language": languages,
        "multilinguality": "multilingual" if len(languages) > 1 else "monolingual",
        "task_categories": ["question-answering", "text-generation"],
        "size_categories": [size_category(total)],
        "annotations_creators": ["machine-generated"],
        "language_creators": ["machine-generated"],
        "source_datasets": ["original"],
        "pretty_name": PRETTY_NAME,
        "tags": TAGS,
        "configs": [
            {
                "config_name": "default",
                # An empty split is left out: `load_dataset` fails on a parquet file without rows.
                "data_files": [
                    {"split": split, "path": f"data/{split}-*.parquet"}
                    for split, split_rows in rows.items()
                    if split_rows
                ],
            }
        ],
    }


def size_category(n: int) -> str:
    """The Hub's `size_categories` bucket for `n` examples."""
    for limit, label in SIZE_CATEGORIES:
        if n < limit:
            return label
    return "n>1M"


def length_label(n: int) -> str:
    """1024 -> "1k" (the `--length` spelling); other counts stay plain."""
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def count_table(rows: dict[str, list[dict]]) -> list[dict]:
    """One entry per (task, length bucket, language): its count in each split and in total."""
    counts: dict[tuple, Counter] = defaultdict(Counter)
    for split, split_rows in rows.items():
        for r in split_rows:
            counts[(r["task"], r["length"], r["language"])][split] += 1
    return [
        {
            "task": task,
            "length": length_label(length),
            "language": language,
            "counts": [counts[(task, length, language)][split] for split in rows],
            "total": sum(counts[(task, length, language)].values()),
        }
        for task, length, language in sorted(counts)
    ]


def row_columns() -> list[tuple[str, str, str]]:
    """(column, type, description) for every row column, `verification.*` fields included."""
    columns = []
    for prefix, model in (("", Row), ("verification.", Verification)):
        for name, field in model.model_fields.items():
            columns.append((prefix + name, _type_name(field.annotation), _cell(field.description or "")))
    return columns


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "string"
    if origin is list:
        return f"list[{_type_name(typing.get_args(annotation)[0])}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "struct"
    return {str: "string", int: "int", float: "float", bool: "bool"}.get(annotation, str(annotation))


def config_table(cfg: BuildConfig) -> list[tuple[str, str, str]]:
    """(knob, value, description) of the build config; `RUN_FIELDS` are left out: they change no byte."""
    values = cfg.recorded()
    return [
        (name, _cell(json.dumps(values[name], sort_keys=True)), _cell(field.description or ""))
        for name, field in BuildConfig.model_fields.items()
        if name in values
    ]


def generate_command(cfg: BuildConfig, out: str = "OUT") -> str:
    """The `longblocks generate` command line that rebuilds this dataset (see `NOT_ON_CLI`)."""
    depth = cfg.depth if cfg.depth == "uniform" else ",".join(f"{d:g}" for d in cfg.depth)
    flags = [("--task", cfg.task)]
    if cfg.task == "all":
        flags.append(("--mix", ",".join(f"{name}={share:g}" for name, share in sorted(cfg.mix.items()))))
    flags += [
        ("--length", ",".join(length_label(n) for n in cfg.lengths)),
        ("--num-examples", str(cfg.num_examples)),
        ("--hops", ",".join(str(k) for k in cfg.hops)),
        ("--depth", depth),
        ("--language", ",".join(cfg.languages)),
        ("--seed", str(cfg.seed)),
        ("--examples-per-world", str(cfg.examples_per_world)),
    ]
    if cfg.tokenizer is not None:
        flags.append(("--tokenizer", cfg.tokenizer))
    return " ".join(["longblocks generate", *(f"{flag} {value}" for flag, value in flags), "--out", out])


def _differs_from_default(cfg: BuildConfig, name: str) -> bool:
    return getattr(cfg, name) != BuildConfig.model_fields[name].default


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


@cache
def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(DATA_CARDS_DIR)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["to_yaml"] = lambda data: yaml.safe_dump(
        data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000
    )
    return env


def plot_lengths(rows: dict[str, list[dict]], path: Path) -> None:
    """Examples per length bucket (stacked by split) and the measured-vs-target length error."""
    import numpy as np

    buckets = sorted({r["length"] for split_rows in rows.values() for r in split_rows})
    errors = [
        100 * (r["n_tokens"] - r["length"]) / r["length"] for split_rows in rows.values() for r in split_rows
    ]

    def draw(fig) -> None:
        per_bucket, error_hist = fig.subplots(1, 2)
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.9, wspace=0.25)
        bottom = np.zeros(len(buckets))
        for color, (split, split_rows) in zip(COLORS, rows.items(), strict=False):
            counts = Counter(r["length"] for r in split_rows)
            heights = np.array([counts[b] for b in buckets], dtype=float)
            per_bucket.bar(range(len(buckets)), heights, bottom=bottom, color=color, label=split)
            bottom += heights
        per_bucket.set_xticks(range(len(buckets)), [length_label(b) for b in buckets])
        per_bucket.set(xlabel="target prompt length (tokens)", ylabel="examples", title="Examples per length")
        per_bucket.legend(loc="upper center", ncols=max(1, len(rows)), fontsize="small")
        _headroom(per_bucket, bottom)
        # The ±0.5% sizing tolerance in 0.05% bins centred on multiples of 0.05 (0 = exact).
        edges = np.linspace(-0.525, 0.525, 22)
        heights, _ = np.histogram(np.clip(errors, -0.5, 0.5), edges)
        error_hist.bar(edges[:-1], heights, width=np.diff(edges), align="edge", color=COLORS[0])
        error_hist.set(
            xlabel="measured − target (% of target)", ylabel="examples", title="Prompt length error"
        )
        _headroom(error_hist, heights)

    _save_figure(draw, path, size=(9, 3.4))


def plot_depths(rows: dict[str, list[dict]], path: Path) -> None:
    """Relative depth of every evidence fact in its context, stacked by task."""
    import numpy as np

    depths: dict[str, list[float]] = defaultdict(list)
    for split_rows in rows.values():
        for r in split_rows:
            depths[r["task"]].extend(e["depth"] for e in r["verification"]["evidence"])

    def draw(fig) -> None:
        ax = fig.subplots()
        fig.subplots_adjust(left=0.11, right=0.97, bottom=0.15, top=0.9)
        edges = np.linspace(0, 1, 21)
        bottom = np.zeros(len(edges) - 1)
        for color, task in zip(COLORS, sorted(depths), strict=False):
            heights, _ = np.histogram(depths[task], edges)
            ax.bar(
                edges[:-1],
                heights,
                width=np.diff(edges),
                bottom=bottom,
                align="edge",
                color=color,
                label=task,
            )
            bottom += heights
        ax.set(xlabel="evidence depth (0 = start of the context, 1 = end)", ylabel="evidence facts")
        ax.set(title="Evidence depth", xlim=(0, 1))
        if depths:
            ax.legend(loc="upper center", ncols=len(depths), fontsize="small")
        _headroom(ax, bottom)

    _save_figure(draw, path, size=(6, 3.4))


def plot_audit(results: list[AuditResult], path: Path) -> None:
    """Each shortcut baseline's accuracy beside chance and the limit it must stay under."""
    import numpy as np

    baselines = [r for r in results if r.chance > 0 and r.margin > 0 and r.judged]

    def draw(fig) -> None:
        ax = fig.subplots()
        fig.subplots_adjust(left=0.42, right=0.97, bottom=0.12, top=0.92)
        y = np.arange(len(baselines))
        ax.barh(y, [r.value for r in baselines], color=COLORS[0], label="baseline")
        ax.scatter(
            [r.chance for r in baselines], y, color=COLORS[2], marker="|", s=200, label="chance", zorder=3
        )
        ax.scatter(
            [r.limit for r in baselines],
            y,
            color=COLORS[3],
            marker="|",
            s=200,
            label="limit",
            zorder=3,
        )
        ax.set_yticks(y, [f"{r.name} ({r.task})" for r in baselines], fontsize="small")
        ax.invert_yaxis()
        ax.set(xlabel="accuracy (F1 for the abstain rule)", title="Shortcut baselines", xlim=(0, 1))
        ax.legend(loc="lower right", fontsize="small")

    _save_figure(draw, path, size=(8, 0.9 + 0.32 * max(1, len(baselines))))


def _headroom(ax, heights) -> None:
    """Integer counts on the y axis, with room above the bars for the legend."""
    from matplotlib.ticker import MaxNLocator

    ax.set_ylim(0, 1.3 * max(1, max(heights, default=0)))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _save_figure(draw, path: Path, size: tuple[float, float]) -> None:
    # A bare Figure (no pyplot) picks the Agg canvas for PNG and touches no global backend state.
    import matplotlib.style
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"):
        fig = Figure(figsize=size, dpi=100)
        draw(fig)
        fig.savefig(path, format="png", metadata={"Software": None})
