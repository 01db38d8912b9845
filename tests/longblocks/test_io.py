import datasets
import pyarrow.parquet as pq
import pytest

from longblocks import io
from longblocks.build import build
from longblocks.config import BuildConfig
from longblocks.errors import UserError
from longblocks.version import generator_version
from longblocks.world.schema import World
from tests.file_digests import file_digests


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_rows, tiny_config):
    out = tmp_path_factory.mktemp("ds") / "out"
    rows, worlds = tiny_rows
    io.save(rows, worlds, tiny_config, out, overwrite=False)
    return out


def test_load_from_disk_and_parquet_hold_the_same_rows(saved, tiny_rows):
    rows, _ = tiny_rows
    loaded = datasets.load_from_disk(str(saved))
    assert set(loaded) == {"train", "validation", "test"}
    for split, split_rows in rows.items():
        assert loaded[split].to_list() == split_rows
        shards = sorted((saved / "data").glob(f"{split}-*.parquet"))
        assert shards and sum(pq.read_table(s).num_rows for s in shards) == len(split_rows)
        assert pq.read_table(shards[0]).column("id").to_pylist() == [r["id"] for r in split_rows]


def test_worlds_are_saved_and_valid(saved, tiny_rows):
    _, worlds = tiny_rows
    files = sorted((saved / "worlds").glob("*.json"))
    assert [f.stem for f in files] == sorted(w.id for w in worlds)
    assert World.model_validate_json(files[0].read_text()).id == files[0].stem


def test_same_seed_gives_identical_bytes_for_any_worker_count(tmp_path, tiny_config):
    one = tmp_path / "one"
    io.save(*build(tiny_config), tiny_config, one, overwrite=False)
    two_cfg = tiny_config.model_copy(update={"workers": 2})
    two = tmp_path / "two"
    io.save(*build(two_cfg), two_cfg, two, overwrite=False)
    a, b = file_digests(one), file_digests(two)
    assert a == b and len(a) > 10 and "generation.json" in a  # the worker count is not recorded


def test_existing_output_needs_overwrite(tmp_path, tiny_rows, tiny_config):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        io.save(*tiny_rows, tiny_config, out, overwrite=False)
    io.save(*tiny_rows, tiny_config, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "dataset_dict.json").exists()


def test_failed_save_leaves_nothing_behind(tmp_path, tiny_rows, tiny_config, monkeypatch):
    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io, "_write_parquet", explode)
    out = tmp_path / "out"
    with pytest.raises(OSError):
        io.save(*tiny_rows, tiny_config, out, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_summary_counts(tiny_rows):
    rows, _ = tiny_rows
    summary = io.summarize(rows)
    assert sum(summary["examples"].values()) == 12
    assert summary["n_tokens_min"] <= summary["n_tokens_median"] <= summary["n_tokens_max"]


def test_features_match_the_row_schema():
    from longblocks.row import Row, Verification

    assert set(io.FEATURES) == set(Row.model_fields)
    assert set(io.FEATURES["verification"]) == set(Verification.model_fields)


def test_config_is_recorded(saved, tiny_config):
    import json

    meta = json.loads((saved / "generation.json").read_text())
    assert BuildConfig(**meta["config"]) == tiny_config
    assert meta["generator"] == generator_version()  # which code drew these rows


def test_an_empty_split_still_loads(tmp_path):
    cfg = BuildConfig(lengths=[1024], num_examples=2)
    io.save(*build(cfg), cfg, tmp_path / "out", overwrite=False)
    loaded = datasets.load_from_disk(str(tmp_path / "out"))
    assert len(loaded["train"]) == 2 and len(loaded["validation"]) == 0 and len(loaded["test"]) == 0
