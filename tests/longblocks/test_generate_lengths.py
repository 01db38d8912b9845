"""End-to-end generation at several lengths, languages and tokenizers."""

import pytest

from longblocks.build import build
from longblocks.config import BuildConfig
from longblocks.render.sizing import HFCounter, load_counter
from longblocks.rewards import score
from longblocks.row import prompt_messages
from longblocks.tokenizer import save_qwen3_tokenizer
from longblocks.validate import check_answers, check_graph, world_network
from longblocks.world.graph import WorldGraph


def _rows(cfg: BuildConfig) -> list[dict]:
    rows, _ = build(cfg)
    return [r for split in rows.values() for r in split]


def _check(rows: list[dict], counter) -> None:
    for row in rows:
        assert abs(row["n_tokens"] - row["length"]) <= row["length"] * 0.005
        assert counter.count(counter.chat_prompt(prompt_messages(row))) == row["n_tokens"]
        assert score(row["reference"], row["verification"]).value == 1.0


@pytest.mark.parametrize("language", ["pt", "de"])
def test_other_languages(language):
    rows = _rows(BuildConfig(lengths=[2048], num_examples=3, languages=[language], seed=2))
    assert {r["language"] for r in rows} == {language}
    _check(rows, load_counter(None))
    label = {"pt": "Resposta:", "de": "Antwort:"}[language]
    assert all(r["reference"].splitlines()[-1].startswith(label) for r in rows)


def test_a_local_hf_tokenizer_sizes_with_its_own_counts(tmp_path):
    path = save_qwen3_tokenizer(tmp_path / "tok")
    rows = _rows(BuildConfig(lengths=[2048], num_examples=3, tokenizer=str(path), seed=5))
    assert {r["tokenizer"] for r in rows} == {str(path)}
    _check(rows, HFCounter(str(path)))


@pytest.mark.slow
@pytest.mark.parametrize(("length", "n"), [(32768, 6), (131072, 2)])
def test_long_contexts_are_exact_and_verifiable(length, n):
    cfg = BuildConfig(lengths=[length], num_examples=n, hops=[2, 4, 6], seed=9, examples_per_world=n)
    rows, worlds = build(cfg)
    flat = [r for split in rows.values() for r in split]
    _check(flat, load_counter(None))
    graphs = {w.id: WorldGraph(w) for w in worlds}
    networks = {w.id: world_network(w) for w in worlds}
    for row in flat:
        v = row["verification"]
        # the generator's own check and an independent networkx re-derivation (every variant)
        assert check_answers(row, graphs[row["world_id"]]) == [], row["id"]
        assert check_graph(row, networks[row["world_id"]]) == [], row["id"]
        for ref in v["evidence"]:
            assert row["document"].count(ref["sentence"]) == 1
