"""`validate_dataset` passes a generated dataset and names the check a corruption breaks."""

import copy
import json
import shutil
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from longblocks import io
from longblocks.build import build
from longblocks.cli import main
from longblocks.config import BuildConfig
from longblocks.errors import UserError
from longblocks.validate import CHECKS, validate_dataset
from longblocks.world.schema import World

ROW_CHECKS = ("schema", "tokens", "evidence", "answers", "graph", "text", "unique")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    cfg = BuildConfig(lengths=[1024, 2048], num_examples=9, examples_per_world=3, seed=11)
    out = tmp_path_factory.mktemp("validate") / "clean"
    io.save(*build(cfg), cfg, out, overwrite=False)
    return out


@pytest.fixture(scope="module")
def clean_rows(saved) -> dict[str, list[dict]]:
    loaded = datasets.load_from_disk(str(saved))
    return {split: loaded[split].to_list() for split in loaded}


def _variant(saved: Path, clean_rows, out: Path, mutate) -> tuple[Path, str]:
    """A copy of the dataset, written by `io.save`, with `mutate(rows)` applied; returns the
    copy and what `mutate` returns (the id of the row it broke)."""
    rows = copy.deepcopy(clean_rows)
    target = mutate(rows)
    worlds = [World.model_validate_json(f.read_text()) for f in sorted((saved / "worlds").glob("*.json"))]
    cfg = BuildConfig(**json.loads((saved / "generation.json").read_text())["config"])
    io.save(rows, worlds, cfg, out, overwrite=False)
    return out, target


def _copy(saved: Path, out: Path) -> Path:
    shutil.copytree(saved, out)
    return out


def _reasons(report, check: str, where: str | None = None) -> list[str]:
    return [f.reason for f in report.failures if f.check == check and (where is None or f.where == where)]


def test_generated_dataset_passes_every_check(saved, clean_rows):
    report = validate_dataset(saved)
    n_rows = sum(len(rows) for rows in clean_rows.values())
    assert report.ok and report.failures == [] and report.rows == n_rows == 9
    assert set(report.counts) == set(CHECKS)
    assert all(report.counts[check].passed == n_rows for check in ROW_CHECKS)
    assert all(tally.failed == 0 and tally.passed > 0 for tally in report.counts.values())
    assert "OK: every check passed" in report.render()


def _first(rows, split="train") -> dict:
    return rows[split][0]


def _change_answer(rows):
    _first(rows)["answer"] = "Nobody Atall"
    return _first(rows)["id"]


def _change_n_tokens(rows):
    _first(rows)["n_tokens"] += 3
    return _first(rows)["id"]


def _drop_evidence_sentence(rows):
    row = _first(rows)
    row["document"] = row["document"].replace(row["verification"]["evidence"][0]["sentence"], "", 1)
    return row["id"]


def _move_evidence_doc_id(rows):
    row = _first(rows)
    refs = row["verification"]["evidence"]
    refs[0]["doc_id"] = next(r["doc_id"] for r in refs if r["doc_id"] != refs[0]["doc_id"])
    return row["id"]


def _shift_depth(rows):
    row = _first(rows)
    ref = row["verification"]["evidence"][0]
    ref["depth"] = round(ref["depth"] + (0.3 if ref["depth"] < 0.5 else -0.3), 4)
    return row["id"]


def _cite_missing_document(rows):
    _first(rows)["verification"]["citations"] = ["D0000"]
    return _first(rows)["id"]


def _break_reference(rows):
    _first(rows)["reference"] = "I guessed.\nAnswer: Somebody Else"
    return _first(rows)["id"]


def _negative_depth(rows):
    _first(rows)["depth"] = -0.25
    return _first(rows)["id"]


def _duplicate_id(rows):
    rows["train"][1]["id"] = rows["train"][0]["id"]
    return rows["train"][0]["id"]


def _wrong_split_column(rows):
    _first(rows)["split"] = "test"
    return _first(rows)["id"]


def _move_row_to_test(rows):
    row = rows["train"].pop(0)
    rows["test"].append({**row, "split": "test"})
    return f"world {row['world_id']}"


def _chain_row(rows) -> dict:
    return next(
        r for r in rows["train"] if len(r["verification"]["path"]) >= 2 and not r["verification"]["variant"]
    )


def _shortcut_sentence(rows):
    row = _chain_row(rows)
    first_hop = row["verification"]["evidence"][0]["sentence"]  # names the start entity
    row["document"] += f" {first_hop.removesuffix('.')}, and so did {row['answer']}."
    return row["id"]


def _anachronism(rows):
    row = _first(rows)
    row["document"] = row["document"].replace("\n\n", " It happened in 2099.\n\n", 1)
    return row["id"]


CORRUPTIONS = [
    pytest.param(_change_answer, "answers", "Nobody Atall", id="answer"),
    pytest.param(_change_n_tokens, "tokens", "n_tokens says", id="n_tokens"),
    pytest.param(_drop_evidence_sentence, "evidence", "occurs 0 times", id="evidence-dropped"),
    pytest.param(_move_evidence_doc_id, "evidence", "is in document", id="evidence-doc-id"),
    pytest.param(_shift_depth, "evidence", "sits at depth", id="evidence-depth"),
    pytest.param(_cite_missing_document, "evidence", "citation D0000", id="citation"),
    pytest.param(_break_reference, "answers", "reference scores 0.000", id="reference"),
    pytest.param(_negative_depth, "schema", "depth: -0.25 is less than the minimum", id="schema-depth"),
    pytest.param(_duplicate_id, "unique", "used again", id="duplicate-id"),
    pytest.param(_shortcut_sentence, "text", "names both the start entity and the answer", id="shortcut"),
    pytest.param(_anachronism, "text", "states a year after its own date", id="anachronism"),
    pytest.param(_wrong_split_column, "splits", "split column says test", id="split-column"),
    pytest.param(_move_row_to_test, "splits", "appears in test, train", id="world-in-two-splits"),
]


@pytest.mark.parametrize(("mutate", "check", "fragment"), CORRUPTIONS)
def test_corrupted_rows_fail_the_right_check(saved, clean_rows, tmp_path, mutate, check, fragment):
    folder, where = _variant(saved, clean_rows, tmp_path / "bad", mutate)
    report = validate_dataset(folder)
    assert not report.ok
    reasons = _reasons(report, check, where)
    assert any(fragment in reason for reason in reasons), (reasons, report.render())
    assert report.counts[check].failed >= 1


def _evidence_world_fact(saved: Path, row: dict) -> tuple[Path, dict, dict]:
    file = saved / "worlds" / f"{row['world_id']}.json"
    world = json.loads(file.read_text())
    fact = next(f for f in world["facts"] if f["id"] == row["verification"]["evidence"][-1]["fact_id"])
    return file, world, fact


def test_changed_world_fact_breaks_the_path(saved, clean_rows, tmp_path):
    folder = _copy(saved, tmp_path / "bad")
    row = _first(clean_rows)
    file, world, fact = _evidence_world_fact(folder, row)
    types = {e["id"]: e["type"] for e in world["entities"]}
    answer = row["verification"]["answer_entity"]
    other = next(e for e in types if types[e] == types[fact["tail"]] and e not in (fact["tail"], answer))
    fact["tail"] = other
    file.write_text(json.dumps(world))
    report = validate_dataset(folder)
    assert any("reaches" in reason for reason in _reasons(report, "answers", row["id"]))
    assert any("networkx" in reason for reason in _reasons(report, "graph", row["id"]))


def test_swapped_world_file_fails_layout_and_answers(saved, clean_rows, tmp_path):
    folder = _copy(saved, tmp_path / "bad")
    a, b = sorted((folder / "worlds").glob("*.json"))[:2]
    shutil.copy(b, a)
    report = validate_dataset(folder)
    assert any(f"holds world '{b.stem}'" in r for r in _reasons(report, "layout", f"worlds/{a.name}"))
    broken = [r["id"] for rows in clean_rows.values() for r in rows if r["world_id"] == a.stem]
    assert broken and all(_reasons(report, "answers", row_id) for row_id in broken)


def test_deleted_world_file_fails_layout_and_answers(saved, clean_rows, tmp_path):
    folder = _copy(saved, tmp_path / "bad")
    row = _first(clean_rows)
    (folder / "worlds" / f"{row['world_id']}.json").unlink()
    report = validate_dataset(folder)
    assert any("missing" in r for r in _reasons(report, "layout", f"worlds/{row['world_id']}.json"))
    assert any("cannot be re-derived" in r for r in _reasons(report, "answers", row["id"]))


def test_parquet_shard_missing_a_row_fails_layout(saved, tmp_path):
    folder = _copy(saved, tmp_path / "bad")
    shard = sorted((folder / "data").glob("train-*.parquet"))[0]
    table = pq.read_table(shard)
    pq.write_table(table.slice(0, table.num_rows - 1), shard)
    report = validate_dataset(folder)
    assert any("parquet shards hold" in r for r in _reasons(report, "layout", "data/train"))


def test_render_caps_examples_per_check(saved, clean_rows, tmp_path):
    def every_n_tokens(rows):
        for split_rows in rows.values():
            for row in split_rows:
                row["n_tokens"] += 1

    folder, _ = _variant(saved, clean_rows, tmp_path / "bad", every_n_tokens)
    text = validate_dataset(folder).render(examples=2)
    assert text.count("[tokens] s11-") == 2 and "[tokens] ... and 7 more" in text


def test_missing_or_unknown_folders_and_tokenizers_are_user_errors(saved, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        validate_dataset(tmp_path / "nowhere")
    with pytest.raises(UserError, match="not a dataset"):
        validate_dataset(tmp_path)
    with pytest.raises(UserError, match="cannot load tokenizer"):
        validate_dataset(saved, tokenizer=str(tmp_path / "no-tokenizer"))


def test_cli_exit_codes(saved, clean_rows, tmp_path, capsys):
    assert main(["validate", str(saved)]) == 0
    assert "OK: every check passed" in capsys.readouterr().out

    folder, row_id = _variant(saved, clean_rows, tmp_path / "bad", _change_n_tokens)
    assert main(["validate", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and f"[tokens] {row_id}: prompt measures" in out

    assert main(["validate", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("longblocks: error:") and "does not exist" in err and err.count("\n") == 1


@pytest.mark.slow  # converts the vocabulary and loads a transformers tokenizer (~5 s)
def test_tokenizer_override_counts_with_a_local_hf_tokenizer(saved, tmp_path):
    from longblocks.tokenizer import save_qwen3_tokenizer

    # The same vocabulary as a transformers tokenizer must measure the same n_tokens.
    report = validate_dataset(saved, tokenizer=str(save_qwen3_tokenizer(tmp_path / "qwen3")))
    assert report.ok, report.render()
    assert report.counts["tokens"].passed == report.rows
