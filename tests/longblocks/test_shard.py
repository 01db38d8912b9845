"""`generate --shard K/N` + `merge`: the merged dataset is the unsharded one, byte for byte."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from longblocks.build import plan_worlds, shard_jobs
from longblocks.cli import main
from longblocks.config import BuildConfig
from tests.file_digests import file_digests

# 12 examples, 3 a world: 6 worlds over the three splits, two task families, two languages.
FLAGS = ["--task", "all", "--mix", "multihop=0.5,grounding=0.5", "--language", "en,de"]
FLAGS += ["--length", "1k", "--num-examples", "12", "--examples-per-world", "3", "--seed", "7"]
N = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The unsharded dataset and the N shard folders of the same command (shard 2 with 2 workers)."""
    root = tmp_path_factory.mktemp("shards")
    assert main(["generate", *FLAGS, "--out", str(root / "whole")]) == 0
    shards = []
    for k in range(1, N + 1):
        workers = ["--workers", "2"] if k == 2 else []
        assert main(["generate", *FLAGS, *workers, "--shard", f"{k}/{N}", "--out", str(root / f"s{k}")]) == 0
        shards.append(root / f"s{k}")
    return root / "whole", shards


def _merge(capsys, out: Path, *shards: Path) -> tuple[int, str]:
    code = main(["merge", *map(str, shards), "--out", str(out)])
    return code, capsys.readouterr().err


def test_shards_partition_the_plan():
    cfg = BuildConfig(lengths=[1024], num_examples=50, examples_per_world=4)
    jobs = plan_worlds(cfg)
    for n in (1, 2, 3, len(jobs), len(jobs) + 2):
        parts = [shard_jobs(jobs, (k, n)) for k in range(1, n + 1)]
        indices = sorted(job.index for part in parts for job in part)
        assert indices == list(range(len(jobs)))  # every world in exactly one shard
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
        assert shard_jobs(jobs, (1, n)) == parts[0]  # the same shard every time


def test_merged_shards_equal_the_unsharded_dataset_byte_for_byte(capsys, tmp_path, runs):
    whole, shards = runs
    merged = tmp_path / "merged"
    code, err = _merge(capsys, merged, *reversed(shards))  # any order
    assert code == 0, err
    expected, got = file_digests(whole), file_digests(merged)
    # Every kind of output file takes part: parquet, load_from_disk, worlds, config, audit, card, plots.
    assert {
        "generation.json",
        "audit.json",
        "README.md",
        "assets/length_hist.png",
        "assets/depth_hist.png",
    } <= set(got)
    assert sum(name.startswith("worlds/") for name in got) == len(plan_worlds(_config()))
    assert any(name.startswith("data/train-") for name in got) and "train/state.json" in got
    assert got == expected


def test_an_empty_shard_merges(capsys, tmp_path):
    # 2 examples make one world: shard 2/2 holds none and still merges to the same dataset.
    flags = ["--length", "1k", "--num-examples", "2", "--seed", "1"]
    assert main(["generate", *flags, "--out", str(tmp_path / "whole")]) == 0
    for k in (1, 2):
        assert main(["generate", *flags, "--shard", f"{k}/2", "--out", str(tmp_path / f"s{k}")]) == 0
    shard2 = json.loads((tmp_path / "s2" / "shard.json").read_text())
    assert shard2["worlds"] == [] and (tmp_path / "s2" / "rows.jsonl").read_text() == ""
    code, err = _merge(capsys, tmp_path / "merged", tmp_path / "s1", tmp_path / "s2")
    assert code == 0, err
    assert file_digests(tmp_path / "merged") == file_digests(tmp_path / "whole")


def _config() -> BuildConfig:
    return BuildConfig(
        task="all",
        mix={"multihop": 0.5, "grounding": 0.5},
        languages=["en", "de"],
        lengths=[1024],
        num_examples=12,
        examples_per_world=3,
        seed=7,
    )


def test_shard_manifest_records_the_config_without_run_fields(runs):
    _, shards = runs
    meta = json.loads((shards[1] / "shard.json").read_text())
    assert meta["shard"] == [2, N]
    assert BuildConfig(**meta["config"]) == _config()  # --workers 2 and --shard are not recorded
    jobs = shard_jobs(plan_worlds(_config()), (2, N))
    assert meta["worlds"] == [job.world_id for job in jobs]
    assert sorted(p.stem for p in (shards[1] / "worlds").glob("*.json")) == sorted(meta["worlds"])


def _assert_one_line_exit_2(code: int, err: str, message: str, out: Path) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("longblocks: error: ") and message in err
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))  # nothing half-written


@pytest.mark.parametrize(
    ("shard", "message"),
    [
        ("0/3", "needs 1 <= K <= N"),
        ("4/3", "needs 1 <= K <= N"),
        ("1/0", "needs 1 <= K <= N"),
        ("x/3", "not K/N"),
        ("2", "not K/N"),
    ],
)
def test_shard_out_of_range_is_exit_2(capsys, tmp_path, shard, message):
    out = tmp_path / "out"
    code = main(["generate", *FLAGS, "--shard", shard, "--out", str(out)])
    _assert_one_line_exit_2(code, capsys.readouterr().err, message, out)


def test_a_missing_shard_is_exit_2(capsys, tmp_path, runs):
    _, shards = runs
    out = tmp_path / "merged"
    code, err = _merge(capsys, out, shards[0], shards[2])
    _assert_one_line_exit_2(code, err, f"missing shard 2/{N}", out)


def test_a_duplicate_shard_is_exit_2(capsys, tmp_path, runs):
    _, shards = runs
    copy = tmp_path / "copy"
    shutil.copytree(shards[0], copy)
    out = tmp_path / "merged"
    code, err = _merge(capsys, out, *shards, copy)
    _assert_one_line_exit_2(code, err, f"shard 1/{N} is given twice", out)


def test_shards_of_another_seed_are_exit_2(capsys, tmp_path, runs):
    _, shards = runs
    other = tmp_path / "other"
    # Shard 7/7 of the 6-world plan of another seed: a real shard that holds no world (no work).
    assert main(["generate", *FLAGS, "--seed", "8", "--shard", "7/7", "--out", str(other)]) == 0
    out = tmp_path / "merged"
    code, err = _merge(capsys, out, shards[0], other)
    _assert_one_line_exit_2(code, err, "different configs (seed: 8 vs 7)", out)


def test_shards_of_different_n_or_version_are_exit_2(capsys, tmp_path, runs):
    _, shards = runs
    edited = tmp_path / "edited"
    shutil.copytree(shards[2], edited)
    manifest = edited / "shard.json"
    meta = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**meta, "shard": [3, 4]}))
    out = tmp_path / "merged"
    code, err = _merge(capsys, out, shards[0], shards[1], edited)
    _assert_one_line_exit_2(code, err, "is shard 3/4 but", out)
    manifest.write_text(json.dumps({**meta, "version": "0.0.1"}))
    code, err = _merge(capsys, out, *shards[:2], edited)
    _assert_one_line_exit_2(code, err, "made by longblocks 0.0.1", out)
    other_code = meta["version"].split("+")[0] + "+0000000000000000"  # same release, edited generator
    manifest.write_text(json.dumps({**meta, "version": other_code}))
    code, err = _merge(capsys, out, *shards[:2], edited)
    _assert_one_line_exit_2(code, err, f"made by longblocks {other_code}", out)


def test_a_damaged_shard_is_exit_2(capsys, tmp_path, runs):
    _, shards = runs
    cut = tmp_path / "cut"
    shutil.copytree(shards[0], cut)
    rows = (cut / "rows.jsonl").read_text()
    out = tmp_path / "merged"
    (cut / "rows.jsonl").write_text("".join(rows.splitlines(keepends=True)[:-1]))  # a truncated copy
    code, err = _merge(capsys, out, cut, *shards[1:])
    _assert_one_line_exit_2(code, err, "is damaged: rows.jsonl differs from its manifest", out)
    (cut / "rows.jsonl").write_text(rows)
    world = sorted((cut / "worlds").glob("*.json"))[0]
    world.unlink()
    code, err = _merge(capsys, out, cut, *shards[1:])
    _assert_one_line_exit_2(code, err, f"is damaged: worlds/{world.name} is missing", out)
    (cut / "shard.json").unlink()
    code, err = _merge(capsys, out, cut, *shards[1:])
    _assert_one_line_exit_2(code, err, "is not a longblocks shard", out)


def test_merge_into_a_non_empty_out_is_exit_2(capsys, tmp_path, runs):
    _, shards = runs
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code, err = _merge(capsys, out, *shards)
    assert code == 2 and err.count("\n") == 1 and "exists and is not empty" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_the_readme_shell_loop_runs_as_written(tmp_path):
    """The README's shell loop, with small FLAGS, through the installed `longblocks` script."""
    text = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    (loop,) = [
        block for block in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S) if "for k in" in block
    ]
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FLAGS": " ".join(FLAGS)}
    subprocess.run(["bash", "-euc", loop], cwd=tmp_path, env=env, check=True, capture_output=True)
    meta = json.loads((tmp_path / "data" / "lb32k" / "generation.json").read_text())
    assert BuildConfig(**meta["config"]) == _config() and sum(meta["summary"]["examples"].values()) == 12
