"""Dataset artifacts on disk: a `load_from_disk` DatasetDict, parquet shards, the worlds.

Layout of an output directory:

    dataset_dict.json, train/, validation/, test/   `datasets.load_from_disk(DIR)`
    data/<split>-0000i-of-0000n.parquet             the same rows as parquet shards
    worlds/<world_id>.json                          every world, to re-derive answers
    generation.json                                 the build config (`BuildConfig.recorded`),
                                                    the generator version and a summary
    audit.json                                      shortcut baselines and text checks (`audit`)
    README.md, assets/*.png                         the dataset card and its plots (`card.py`)

Everything is written to a temporary sibling directory and renamed into place at the end,
so a failed or interrupted run never leaves a partial dataset behind.
"""

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median

import datasets
import pyarrow.parquet as pq

from longblocks.audit import AUDIT_FILE, AuditWorld, audit_rows
from longblocks.card import write_card
from longblocks.config import BuildConfig
from longblocks.errors import UserError
from longblocks.version import generator_version
from longblocks.world.schema import World

ROWS_PER_SHARD = 256
_STRINGS = datasets.Sequence(datasets.Value("string"))
FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "document": datasets.Value("string"),
        "source": datasets.Value("string"),
        "language": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "task": datasets.Value("string"),
        "split": datasets.Value("string"),
        "world_id": datasets.Value("string"),
        "length": datasets.Value("int32"),
        "depth": datasets.Value("float64"),
        "n_tokens": datasets.Value("int32"),
        "tokenizer": datasets.Value("string"),
        "system": datasets.Value("string"),
        "instruction": datasets.Value("string"),
        "reference": datasets.Value("string"),
        "verification": {
            "kind": datasets.Value("string"),
            "variant": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "aliases": _STRINGS,
            "evidence": [
                {
                    "fact_id": datasets.Value("string"),
                    "doc_id": datasets.Value("string"),
                    "depth": datasets.Value("float64"),
                    "sentence": datasets.Value("string"),
                }
            ],
            "path": _STRINGS,
            "start_entity": datasets.Value("string"),
            "answer_entity": datasets.Value("string"),
            "citations": _STRINGS,
            "rubric": _STRINGS,
            "ordered": datasets.Value("bool"),
        },
    }
)


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty output directory unless asked to overwrite it."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory", "choose another --out path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {out} exists and is not empty", "pass --overwrite or choose another --out")


def to_dataset_dict(rows: dict[str, list[dict]]) -> datasets.DatasetDict:
    splits = {}
    for split, split_rows in rows.items():
        columns = {name: [row[name] for row in split_rows] for name in FEATURES}  # works when empty
        dataset = datasets.Dataset.from_dict(columns, features=FEATURES)
        # A content hash instead of a random fingerprint keeps state.json byte-identical.
        dataset._fingerprint = hashlib.sha256(json.dumps(split_rows, sort_keys=True).encode()).hexdigest()[
            :16
        ]
        splits[split] = dataset
    return datasets.DatasetDict(splits)


def summarize(rows: dict[str, list[dict]]) -> dict:
    """Counts and prompt-length statistics, for the CLI summary and generation.json."""
    n_tokens = sorted(r["n_tokens"] for split_rows in rows.values() for r in split_rows)
    return {
        "examples": {split: len(split_rows) for split, split_rows in rows.items()},
        "tokens": sum(n_tokens),
        "n_tokens_min": n_tokens[0] if n_tokens else 0,
        "n_tokens_median": median(n_tokens) if n_tokens else 0,
        "n_tokens_max": n_tokens[-1] if n_tokens else 0,
    }


def save(
    rows: dict[str, list[dict]], worlds: list[World], cfg: BuildConfig, out: Path, overwrite: bool
) -> dict:
    """Write the dataset atomically to `out`; returns the summary."""
    datasets.disable_progress_bars()
    with staged(out, overwrite) as tmp:
        dataset = to_dataset_dict(rows)
        # One shard per split, also for an empty split (datasets writes none by default and
        # load_from_disk then fails).
        dataset.save_to_disk(str(tmp), num_shards={split: 1 for split in dataset})
        _write_parquet(dataset, tmp / "data")
        write_worlds(worlds, tmp / "worlds")
        summary = summarize(rows)
        meta = {"config": cfg.recorded(), "generator": generator_version(), "summary": summary}
        write_json(meta, tmp / "generation.json")
        write_audit(tmp, rows, worlds)
        write_card(tmp, rows, cfg, summary)
    return summary


@contextmanager
def staged(out: Path, overwrite: bool) -> Iterator[Path]:
    """A fresh temporary sibling of `out` to write into, renamed to `out` if the block succeeds
    and removed in any case: a failed or interrupted write leaves nothing behind."""
    check_output(out, overwrite)
    out = out.resolve()
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        _replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_worlds(worlds: list[World], folder: Path) -> None:
    folder.mkdir()
    for world in worlds:
        (folder / f"{world.id}.json").write_text(world.model_dump_json(), encoding="utf-8")


def write_json(value, path: Path) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_audit(folder: Path, rows: dict[str, list[dict]], worlds: list[World]) -> None:
    """`audit.json`: the shortcut baselines and text checks of `longblocks.audit` (the card shows
    them; `longblocks audit DIR` measures them again from the saved files)."""
    flat = [row for split_rows in rows.values() for row in split_rows]
    results = audit_rows(flat, {w.id: AuditWorld.from_data(w.model_dump()) for w in worlds})
    text = json.dumps([r.as_dict() for r in results], indent=1) + "\n"
    (folder / AUDIT_FILE).write_text(text, encoding="utf-8")


def _write_parquet(dataset: datasets.DatasetDict, folder: Path) -> None:
    folder.mkdir()
    for split, split_data in dataset.items():
        table = split_data.data.table
        n_shards = max(1, -(-table.num_rows // ROWS_PER_SHARD))
        for i in range(n_shards):
            shard = table.slice(i * ROWS_PER_SHARD, ROWS_PER_SHARD)
            pq.write_table(shard, folder / f"{split}-{i:05d}-of-{n_shards:05d}.parquet")


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished directory into place; an old one is removed only after success."""
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
