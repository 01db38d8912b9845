import shlex
from collections import Counter
from pathlib import Path

import pytest
import yaml
from PIL import Image

from longblocks import card, io
from longblocks.build import build
from longblocks.cli import main
from longblocks.config import RUN_FIELDS, BuildConfig
from longblocks.row import Row, Verification

CONFIG = BuildConfig(lengths=[1024], num_examples=6, examples_per_world=2)
# Two lengths and two languages, so the counts table has several cells to get right.
MIXED = BuildConfig(
    lengths=[1024, 2048], num_examples=8, examples_per_world=2, languages=["en", "pt"], seed=1
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny():
    return build(CONFIG)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny) -> Path:
    out = tmp_path_factory.mktemp("card") / "ds"
    io.save(*tiny, CONFIG, out, overwrite=False)
    return out


@pytest.fixture(scope="module")
def mixed_rows():
    rows, _ = build(MIXED)
    return rows


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    head, _ = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head)


def counts_table(text: str) -> dict[tuple[str, str, str, str], int]:
    """{(split, task, length, language): count} parsed from the card's counts table."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| task | length | language |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    splits = header[3:-1]
    counts = {}
    for line in lines[start + 2 :]:
        if line.startswith("| **all**"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        task, length, language, numbers = cells[0], cells[1], cells[2], [int(c) for c in cells[3:]]
        assert sum(numbers[:-1]) == numbers[-1]  # the total column
        for split, n in zip(splits, numbers[:-1], strict=True):
            counts[(split, task, length, language)] = n
    return counts


def expected_counts(rows: dict[str, list[dict]]) -> dict[tuple[str, str, str, str], int]:
    found = Counter(
        (split, r["task"], card.length_label(r["length"]), r["language"])
        for split, split_rows in rows.items()
        for r in split_rows
    )
    cells = {key[1:] for key in found}
    return {(split, *cell): found[(split, *cell)] for split in rows for cell in cells}


def test_saved_dataset_has_a_card_with_hub_metadata(saved):
    meta = front_matter((saved / "README.md").read_text(encoding="utf-8"))
    assert meta["license"] == "cc-by-4.0"
    assert meta["task_categories"] == ["question-answering", "text-generation"]
    assert meta["language"] == ["en"]
    assert meta["size_categories"] == ["n<1K"]
    assert {"long-context", "synthetic", "verifiable", "multi-hop"} <= set(meta["tags"])
    assert meta["pretty_name"]
    [config] = meta["configs"]
    assert config["config_name"] == "default"
    assert [f["split"] for f in config["data_files"]] == ["train", "validation", "test"]
    for data_file in config["data_files"]:
        assert data_file["path"] == f"data/{data_file['split']}-*.parquet"
        assert list(saved.glob(data_file["path"]))


def test_card_counts_equal_the_rows(saved, tiny):
    rows, _ = tiny
    assert counts_table((saved / "README.md").read_text(encoding="utf-8")) == expected_counts(rows)


def test_card_counts_per_task_length_and_language(mixed_rows):
    text = card.render_card(mixed_rows, MIXED, io.summarize(mixed_rows))
    table = counts_table(text)
    assert table == expected_counts(mixed_rows)
    assert {key[2] for key in table} == {"1k", "2k"} and {key[3] for key in table} == {"en", "pt"}
    meta = front_matter(text)
    assert meta["language"] == ["en", "pt"] and meta["multilinguality"] == "multilingual"


def test_card_documents_every_column_and_the_config(saved):
    text = (saved / "README.md").read_text(encoding="utf-8")
    for name in Row.model_fields:
        assert f"| `{name}` |" in text
    for name in Verification.model_fields:
        assert f"| `verification.{name}` |" in text
    for name in BuildConfig.model_fields:
        assert (f"| `{name}` |" in text) == (name not in RUN_FIELDS)  # change no output byte
    assert "![" in text and "(assets/length_hist.png)" in text and "(assets/depth_hist.png)" in text
    assert "longblocks.rewards" in text and "Answer: <answer>" in text


def test_plots_are_pngs_of_a_fixed_size(saved):
    for name, size in (("assets/length_hist.png", (900, 340)), ("assets/depth_hist.png", (600, 340))):
        data = (saved / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert b"Software" not in data  # no matplotlib version stamped into the bytes
        with Image.open(saved / name) as image:
            image.verify()
        with Image.open(saved / name) as image:
            assert image.size == size


def test_card_and_plots_are_byte_identical_across_saves(saved, tiny, tmp_path):
    again = tmp_path / "again"
    io.save(*tiny, CONFIG, again, overwrite=False)
    for name in ("README.md", "assets/length_hist.png", "assets/depth_hist.png"):
        assert (again / name).read_bytes() == (saved / name).read_bytes(), name


def test_plots_handle_an_empty_split(tmp_path):
    rows = {"train": [], "test": []}
    card.plot_lengths(rows, tmp_path / "lengths.png")
    card.plot_depths(rows, tmp_path / "depths.png")
    assert (tmp_path / "lengths.png").read_bytes().startswith(PNG_SIGNATURE)
    assert (tmp_path / "depths.png").read_bytes().startswith(PNG_SIGNATURE)


def test_card_command_regenerates_the_same_data(saved, tmp_path, capsys):
    assert card.generate_command(CONFIG) in (saved / "README.md").read_text(encoding="utf-8")
    argv = shlex.split(card.generate_command(CONFIG, out=str(tmp_path / "again")))
    assert argv[:2] == ["longblocks", "generate"]
    assert main(argv[1:]) == 0
    capsys.readouterr()
    for shard in sorted((saved / "data").iterdir()):
        again = tmp_path / "again" / "data" / shard.name
        assert again.read_bytes() == shard.read_bytes(), shard.name


def test_settings_the_cli_cannot_give_are_named(tiny):
    rows, _ = tiny
    custom = CONFIG.model_copy(update={"split_fractions": (0.5, 0.25, 0.25)})
    text = card.render_card(rows, custom, io.summarize(rows))
    assert "no flags for `split_fractions`" in text
    assert "no flags for" not in card.render_card(rows, CONFIG, io.summarize(rows))


def test_generate_command_spells_every_flag():
    cfg = BuildConfig(
        task="all",
        mix={"multihop": 0.5, "grounding": 0.5},
        lengths=[4096, 32768, 1500],
        hops=[2, 5],
        depth=[0.1, 0.9],
        languages=["en", "de"],
        seed=7,
        tokenizer="/models/tok",
    )
    assert card.generate_command(cfg) == (
        "longblocks generate --task all --mix grounding=0.5,multihop=0.5 --length 4k,32k,1500 "
        "--num-examples 100 --hops 2,5 --depth 0.1,0.9 --language en,de --seed 7 "
        "--examples-per-world 8 --tokenizer /models/tok --out OUT"
    )


@pytest.mark.parametrize(
    ("n", "label"), [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (250_000, "100K<n<1M")]
)
def test_size_category(n, label):
    assert card.size_category(n) == label


def test_card_carries_the_content_fingerprint_of_its_rows(tmp_path):
    from longblocks.publish import publish

    fingerprints = []
    for seed in (1, 2):
        cfg = BuildConfig(lengths=[1024], num_examples=4, examples_per_world=2, seed=seed)
        io.save(*build(cfg), cfg, tmp_path / f"ds{seed}", overwrite=False)
        publish(tmp_path / f"ds{seed}", "me/lb", dry_run=tmp_path / f"hub{seed}")
        saved = card.data_fingerprint(tmp_path / f"ds{seed}")
        assert len(saved) == 64 and saved == card.data_fingerprint(tmp_path / f"hub{seed}")
        for folder in (f"ds{seed}", f"hub{seed}"):  # the card says it, in the copy and in the tree
            assert f"`sha256:{saved}`" in (tmp_path / folder / "README.md").read_text()
        fingerprints.append(saved)
    assert fingerprints[0] != fingerprints[1]
