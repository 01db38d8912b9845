import random
from pathlib import Path

import pytest

from longblocks.build import build
from longblocks.config import BuildConfig
from longblocks.render.documents import Renderer
from longblocks.rewards import score
from longblocks.tasks import TASKS, TaskParams
from longblocks.world.entities import lexicon
from longblocks.world.graph import WorldGraph

GOLDEN = Path(__file__).parents[2] / "golden" / "grounding_rows.json"


@pytest.fixture(scope="module")
def dataset():
    cfg = BuildConfig(task="grounding", lengths=[2048], num_examples=24, examples_per_world=8, seed=11)
    rows, worlds = build(cfg)
    return [r for split in rows.values() for r in split], {w.id: WorldGraph(w) for w in worlds}


def _params(variant: str) -> TaskParams:
    shares = {"cited": (0.0, 0.0), "abstain": (1.0, 0.0), "conflict": (0.0, 1.0)}[variant]
    return TaskParams(unanswerable_share=shares[0], conflict_share=shares[1])


@pytest.mark.parametrize("variant", ["cited", "abstain", "conflict"])
def test_each_variant_can_be_sampled(graph, variant):
    instance = TASKS["grounding"].sample(Renderer(graph), random.Random(0), _params(variant))
    assert instance.verification["variant"] == variant
    if variant == "abstain":
        assert instance.answer == lexicon("en")["abstain"] and len(instance.excluded) == 1
    if variant == "conflict":
        (stale, _), (current,) = instance.pinned[0], instance.evidence
        old = graph.facts[stale.facts[0]]
        assert old.relation == current.relation and old.tail != current.tail
        assert old.attributes["until"] <= current.attributes["since"]
        assert stale.year < Renderer(graph).document(current.head).year


def test_every_row_rederives_and_the_reference_scores_one(dataset):
    rows, graphs = dataset
    assert {r["verification"]["variant"] for r in rows} == {"cited", "abstain", "conflict"}
    for row in rows:
        assert TASKS["grounding"].check(row, graphs[row["world_id"]]) == [], row["id"]
        assert score(row["reference"], row["verification"]).value == 1.0


def test_citations_are_the_evidence_documents(dataset):
    rows, _ = dataset
    for row in rows:
        v = row["verification"]
        if v["kind"] == "cited":
            assert v["citations"] == sorted({e["doc_id"] for e in v["evidence"]})
            assert all(f"[{c}]" in row["document"] for c in v["citations"])


def test_abstain_rows_do_not_state_the_hidden_fact(dataset):
    rows, graphs = dataset
    abstain = [r for r in rows if r["verification"]["variant"] == "abstain"]
    assert abstain
    for row in abstain:
        graph = graphs[row["world_id"]]
        v = row["verification"]
        (answer,) = graph.follow(v["start_entity"], v["path"])
        assert v["answer_entity"] == answer
        assert row["answer"] == "unanswerable"


def test_check_catches_corruption(dataset):
    rows, graphs = dataset
    row = next(r for r in rows if r["verification"]["variant"] == "cited")
    graph = graphs[row["world_id"]]
    assert TASKS["grounding"].check({**row, "answer": "Somebody Else"}, graph)
    wrong = {**row["verification"], "citations": ["D0000"]}
    assert TASKS["grounding"].check({**row, "verification": wrong}, graph)
    abstain = next(r for r in rows if r["verification"]["variant"] == "abstain")
    hidden_graph = graphs[abstain["world_id"]]
    v = abstain["verification"]
    from longblocks.tasks.grounding import _last_fact

    fact = _last_fact(hidden_graph, v["start_entity"], v["path"])
    leaked = abstain["document"] + " " + Renderer(hidden_graph).sentence(fact, 0)
    assert TASKS["grounding"].check({**abstain, "document": leaked}, hidden_graph)


def test_rows_match_golden_file(dataset, golden):
    rows, _ = dataset
    picked = {
        r["verification"]["variant"]: {
            k: r[k] for k in ("id", "question", "answer", "reference", "verification")
        }
        for r in rows
    }
    golden(GOLDEN, picked, sort_keys=True)


@pytest.mark.parametrize("language", ["pt", "de"])
def test_other_languages(language):
    cfg = BuildConfig(
        task="grounding", lengths=[2048], num_examples=6, languages=[language], seed=4, conflict_share=0.5
    )
    rows, _ = build(cfg)
    for row in (r for split in rows.values() for r in split):
        assert score(row["reference"], row["verification"]).value == 1.0, row["reference"]


def test_abstain_rows_keep_the_asked_entitys_document(dataset):
    from longblocks.tasks.grounding import _last_fact

    rows, graphs = dataset
    abstain = [r for r in rows if r["verification"]["variant"] == "abstain"]
    for row in abstain:
        graph, v = graphs[row["world_id"]], row["verification"]
        removed = _last_fact(graph, v["start_entity"], v["path"])
        asked = removed.head if removed.tail == v["answer_entity"] else removed.tail
        titles = [doc.split("\n", 1)[0] for doc in row["document"].split("\n\n")]
        assert any(graph.entities[asked].name in title for title in titles), row["id"]


def test_conflict_records_are_alike_and_state_only_their_past(graph):
    from longblocks.render.documents import fact_year

    renderer = Renderer(graph)
    for seed in range(20):
        instance = TASKS["grounding"].sample(renderer, random.Random(seed), _params("conflict"))
        (stale, _), (current,) = instance.pinned[0], instance.documents.values()
        assert len(stale.facts) == len(current.facts) + 1  # the evidence sentence joins `current`
        assert set(stale.facts).isdisjoint(current.facts)
        for doc in (stale, current):
            assert all(fact_year(graph.facts[f]) <= doc.year for f in doc.facts)
        assert stale.year < current.year


def test_two_hop_cited_chains_have_no_shortcut_sentence(graph):
    renderer = Renderer(graph)
    for seed in range(40):
        instance = TASKS["grounding"].sample(renderer, random.Random(seed), _params("cited"))
        v = instance.verification
        if len(v["path"]) == 2:
            assert not graph.linked(v["start_entity"], v["answer_entity"])
