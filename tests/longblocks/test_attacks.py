"""Reward attacks and natural answer forms on generated rows of every task and language."""

import pytest

from longblocks.attacks import ATTACKS, FORMS, candidate_names, format_table, reward_attack_table
from longblocks.build import build
from longblocks.config import BuildConfig
from longblocks.rewards import score
from longblocks.world.graph import WorldGraph

LANGUAGES = ("en", "pt", "de")


@pytest.fixture(scope="module")
def dataset():
    """Rows of every task (grounding with abstentions and conflicts) in every language, and their graphs."""
    rows, graphs = [], {}
    for task in ("multihop", "grounding", "longform"):
        cfg = BuildConfig(
            task=task, lengths=[2048], languages=list(LANGUAGES), num_examples=18, examples_per_world=2,
            seed=5, unanswerable_share=0.4, conflict_share=0.3,
        )  # fmt: skip
        by_split, worlds = build(cfg)
        rows += [r for split in by_split.values() for r in split]
        graphs |= {w.id: WorldGraph(w) for w in worlds}
    kinds = {(r["verification"]["kind"], r["language"]) for r in rows}
    assert {(k, lang) for k in ("exact", "cited", "rubric") for lang in LANGUAGES} <= kinds
    assert {("abstain", lang) for lang in LANGUAGES} <= kinds
    return rows, graphs


@pytest.fixture(scope="module")
def attacks(dataset):
    rows, graphs = dataset
    return {(r["attack"], r["kind"], r["language"]): r for r in reward_attack_table(rows, graphs)}


@pytest.fixture(scope="module")
def forms(dataset):
    rows, graphs = dataset
    return {(r["attack"], r["kind"], r["language"]): r for r in format_table(rows, graphs)}


def _means(table, name, kinds=("exact", "cited", "abstain", "rubric")):
    found = {key: r["mean"] for key, r in table.items() if key[0] == name and key[1] in kinds}
    assert found, name
    return found


def test_every_attack_and_form_covers_every_language(attacks, forms):
    for table, names in ((attacks, ATTACKS), (forms, FORMS)):
        for name in names:
            if name == "alias":  # only rows whose answer has an alias
                continue
            assert {key[2] for key in table if key[0] == name} == set(LANGUAGES), name


def test_references_score_one(attacks):
    assert set(_means(attacks, "reference").values()) == {1.0}


def test_attacks_on_long_form_earn_almost_nothing(attacks):
    assert max(_means(attacks, "pasted_context", ["rubric"]).values()) <= 0.2
    assert max(_means(attacks, "keyword_soup", ["rubric"]).values()) <= 0.1
    for name in ("empty", "negated_report", "names_with_years"):
        assert set(_means(attacks, name, ["rubric"]).values()) == {0.0}, name
    # Hedged years, shifted years and swapped entities keep only the undated (child_of) items.
    for name in ("hedged_list", "shifted_years", "swapped_entities"):
        assert max(_means(attacks, name, ["rubric"]).values()) <= 0.1, name


def test_attacks_on_short_answers_earn_nothing(attacks):
    for name in ("empty", "pasted_context", "keyword_soup", "answer_spam", "hedged_list"):
        assert set(_means(attacks, name, ["exact", "cited", "abstain"]).values()) == {0.0}, name
    assert set(_means(attacks, "always_abstain", ["exact", "cited", "rubric"]).values()) == {0.0}


def test_every_natural_correct_form_scores_one(forms):
    for name in FORMS:
        if name.startswith("report"):
            assert min(_means(forms, name, ["rubric"]).values()) >= 0.95, name
        else:
            assert set(_means(forms, name).values()) == {1.0}, name


def test_attacks_are_pure_functions_of_the_row(dataset):
    rows, graphs = dataset
    row = rows[0]
    for make in (*ATTACKS.values(), *FORMS.values()):
        assert make(row, graphs[row["world_id"]]) == make(row, graphs[row["world_id"]])
    names = candidate_names("Mara Quill met Ben da Costa in Quillford.")
    assert names == ["Mara Quill", "Ben da Costa", "Quillford"]


def test_pasted_context_at_the_shortest_length_earns_at_most_a_fifth():
    """At 1k the context is only ~3x a long report: precision, not length, must stop it."""
    by_split, _ = build(
        BuildConfig(task="longform", lengths=[1024], languages=list(LANGUAGES), num_examples=12, seed=9)
    )
    rows = [r for split in by_split.values() for r in split]
    values = [score(ATTACKS["pasted_context"](r, None), r["verification"]).value for r in rows]
    assert {r["language"] for r in rows} == set(LANGUAGES)
    assert max(values) <= 0.2 and sum(values) / len(values) <= 0.1
