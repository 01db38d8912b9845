import random
from pathlib import Path

import pytest

from longblocks.build import WorldJob, generate_example
from longblocks.config import BuildConfig
from longblocks.render.documents import Renderer
from longblocks.rewards import normalize
from longblocks.tasks import TASKS, TaskParams
from longblocks.world.schema import RELATIONS

GOLDEN = Path(__file__).parents[2] / "golden" / "multihop_row.json"


@pytest.mark.parametrize("hops", [2, 3, 4, 5, 6])
def test_answer_is_unique_and_has_no_shortcut(graph, hops):
    renderer = Renderer(graph)
    for seed in range(10):
        instance = TASKS["multihop"].sample(
            renderer, random.Random(seed), TaskParams(hops=(hops,), compositional_share=0.0)
        )
        v = instance.verification
        assert len(v["path"]) == hops == len(instance.evidence)
        assert graph.follow(v["start_entity"], v["path"]) == {v["answer_entity"]}
        assert not graph.linked(v["start_entity"], v["answer_entity"])
        assert graph.entities[v["answer_entity"]].name == instance.answer
        assert normalize(instance.answer) not in normalize(instance.question)
        assert graph.entities[v["start_entity"]].name in instance.question


def test_one_hop_is_a_lookup_the_check_accepts(graph, builder):
    renderer = Renderer(graph)
    for seed in range(10):
        instance = TASKS["multihop"].sample(
            renderer, random.Random(seed), TaskParams(hops=(1,), compositional_share=0.0)
        )
        v = instance.verification
        (fact,) = instance.evidence
        assert v["path"] == [fact.relation]
        assert graph.follow(v["start_entity"], v["path"]) == {v["answer_entity"]}
        assert {fact.head, fact.tail} == {v["start_entity"], v["answer_entity"]}
    job = WorldJob(0, graph.world.id, graph.world.seed, "train", "en", (2048,) * 4, ("multihop",) * 4)
    cfg = BuildConfig(lengths=[2048], hops=[1], compositional_share=0.0)
    row = generate_example(builder, job, 0, 2048, cfg).model_dump()
    assert len(row["verification"]["path"]) == 1 and TASKS["multihop"].check(row, graph) == []


def test_evidence_is_the_chain(graph):
    instance = TASKS["multihop"].sample(
        Renderer(graph), random.Random(3), TaskParams(hops=(4,), compositional_share=0.0)
    )
    current = instance.verification["start_entity"]
    for fact, relation in zip(instance.evidence, instance.verification["path"], strict=True):
        assert fact.relation == relation
        assert current in (fact.head, fact.tail)
        (current,) = graph.step(current, relation)
    assert current == instance.verification["answer_entity"]


def test_question_names_no_other_entity(graph):
    renderer = Renderer(graph)
    names = {e.id: e.name for e in graph.world.entities}
    for seed in range(20):
        instance = TASKS["multihop"].sample(
            renderer, random.Random(seed), TaskParams(hops=(3,), compositional_share=0.0)
        )
        mentioned = {i for i, n in names.items() if n in instance.question}
        assert mentioned == {instance.verification["start_entity"]}


def _row(graph, builder, seed=0, length=2048):
    job = WorldJob(0, graph.world.id, graph.world.seed, "train", "en", (length,) * 10, ("multihop",) * 10)
    return generate_example(builder, job, seed, length, BuildConfig(lengths=[length])).model_dump()


def test_no_sentence_holds_both_start_and_answer(graph, builder):
    for seed in range(4):
        row = _row(graph, builder, seed)
        v = row["verification"]
        if v["variant"] == "counting":
            continue  # the answer is a number; its organisation may be one hop away
        start, answer = graph.entities[v["start_entity"]].name, graph.entities[v["answer_entity"]].name
        sentences = row["document"].replace("\n", " ").split(". ")
        assert not [s for s in sentences if start in s and answer in s]


def test_row_verification_rederives_from_the_graph(graph, builder):
    row = next(
        r for r in (_row(graph, builder, s) for s in range(1, 20)) if r["verification"]["variant"] == ""
    )
    v = row["verification"]
    assert graph.follow(v["start_entity"], v["path"]) == {v["answer_entity"]}
    for ref, relation in zip(v["evidence"], v["path"], strict=True):
        assert graph.facts[ref["fact_id"]].relation == relation
        assert row["document"].count(ref["sentence"]) == 1
        assert f"[{ref['doc_id']}]" in row["document"]
    assert row["reference"].splitlines()[-1] == f"Answer: {row['answer']}"
    assert all(ref["sentence"] in row["reference"] for ref in v["evidence"])


def test_row_matches_golden_file(graph, builder, golden):
    golden(GOLDEN, _row(graph, builder, 5, length=1024))


def test_relation_phrases_cover_every_relation():
    assert set(RELATIONS) == {p.stem for p in (Path(__file__).parents[3] / "templates/en/phrases").iterdir()}


def test_final_relations_are_spread_and_answers_hide_among_peers(graph):
    from collections import Counter

    from longblocks.tasks.chains import min_candidates

    renderer, finals = Renderer(graph), Counter()
    params = TaskParams(length=8192, compositional_share=0.0)
    for seed in range(120):
        instance = TASKS["multihop"].sample(renderer, random.Random(seed), params)
        v = instance.verification
        finals[v["path"][-1]] += 1
        fine = graph.fine_type(v["answer_entity"])
        peers = [e for e in instance.near if graph.fine_type(e) == fine]
        assert len(peers) >= min_candidates(8192)  # the answer's own document and its decoys'
    assert max(finals.values()) / finals.total() <= 0.25 and len(finals) >= 8
