"""Counting and temporal multi-hop variants: well-posed on the graph, verified by `check`."""

import random
from collections import Counter

import pytest

from longblocks.build import WorldJob, generate_example
from longblocks.config import BuildConfig
from longblocks.render.documents import Renderer
from longblocks.rewards import score
from longblocks.tasks import TASKS, TaskParams
from longblocks.tasks.compositional import (
    COUNTS,
    counted_facts,
    former_value,
    sample_counting,
    sample_temporal,
)
from longblocks.validate import network_answer, world_network


def _sample(sampler, graph, seed):
    rng = random.Random(seed)
    for _ in range(500):
        instance = sampler(Renderer(graph), rng, TaskParams(length=4096))
        if instance is not None:
            return instance
    raise AssertionError("no instance")


def test_counting_counts_every_member_as_evidence(graph):
    answers = Counter()
    for seed in range(30):
        instance = _sample(sample_counting, graph, seed)
        v = instance.verification
        assert graph.follow(v["start_entity"], v["path"]) == {v["answer_entity"]}
        counted = counted_facts(graph, v["answer_entity"])
        assert instance.answer == str(len(counted)) and int(instance.answer) in COUNTS
        assert {f.id for f in counted} <= {f.id for f in instance.evidence}
        answers[instance.answer] += 1
    assert len(answers) >= 4  # counts are drawn uniformly, not the world's most common size


def test_temporal_asks_for_the_value_before_the_current_one(graph):
    for seed in range(20):
        instance = _sample(sample_temporal, graph, seed)
        v = instance.verification
        (entity,) = graph.follow(v["start_entity"], v["path"][:-1])
        assert former_value(graph, entity, v["path"][-1]) == v["answer_entity"]
        assert graph.entities[v["answer_entity"]].name == instance.answer
        assert not graph.linked(v["start_entity"], v["answer_entity"])
        (stale, _), (newer,) = instance.pinned[0], instance.documents.values()
        assert stale.year < newer.year and graph.facts[stale.facts[0]].tail == v["answer_entity"]


@pytest.mark.parametrize("variant", ["counting", "temporal"])
def test_rows_verify_on_the_graph_and_with_networkx(graph, builder, variant):
    cfg = BuildConfig(lengths=[4096])
    job = WorldJob(0, graph.world.id, graph.world.seed, "train", "en", (4096,) * 40, ("multihop",) * 40)
    rows = []
    for j in range(40):
        row = generate_example(builder, job, j, 4096, cfg.model_copy()).model_dump()
        if row["verification"]["variant"] == variant:
            rows.append(row)
        if len(rows) == 2:
            break
    assert rows, f"no {variant} row among 40 (compositional_share 0.2)"
    network = world_network(graph.world)
    for row in rows:
        assert TASKS["multihop"].check(row, graph) == []
        assert network_answer(network, row["verification"])[1] == row["answer"]
        assert score(row["reference"], row["verification"]).value == 1.0
        wrong = {**row, "answer": "99" if variant == "counting" else "Nobody"}
        assert TASKS["multihop"].check(wrong, graph)
