import json
import random
from pathlib import Path

import pytest

from longblocks.build import WorldJob, build, generate_example
from longblocks.config import BuildConfig
from longblocks.render.documents import Renderer
from longblocks.rewards import score
from longblocks.tasks import TASKS, TaskParams
from longblocks.tasks.longform import fact_year
from longblocks.world.graph import WorldGraph

GOLDEN = Path(__file__).parents[2] / "golden" / "longform_row.json"
TASK = TASKS["longform"]


def _instances(graph, n=20, params=None):
    params = params or TaskParams()
    renderer = Renderer(graph)
    return [TASK.sample(renderer, random.Random(seed), params) for seed in range(n)]


def _row(graph, builder, seed=0, length=4096):
    job = WorldJob(0, graph.world.id, graph.world.seed, "train", "en", (length,) * 10, ("longform",) * 10)
    return generate_example(builder, job, seed, length, BuildConfig(lengths=[length])).model_dump()


def _items(row):
    return [json.loads(item) for item in row["verification"]["rubric"]]


def _with_items(row, items):
    corrupted = json.loads(json.dumps(row))
    corrupted["verification"]["rubric"] = [json.dumps(item, ensure_ascii=False) for item in items]
    return corrupted


@pytest.mark.parametrize("bounds", [(6, 16), (3, 5), (8, 8)])
def test_rubric_is_within_bounds_and_about_the_focus(graph, bounds):
    for instance in _instances(graph, params=TaskParams(rubric_items=bounds)):
        v, focus = instance.verification, instance.verification["start_entity"]
        items = [json.loads(item) for item in v["rubric"]]
        assert bounds[0] <= len(items) <= bounds[1]
        assert [i["fact"] for i in items] == [f.id for f in instance.evidence]
        assert all(focus in (f.head, f.tail) for f in instance.evidence)
        assert graph.entities[focus].name == instance.answer and instance.answer in instance.question
        assert v["kind"] == "rubric" and graph.entities[focus].type in ("person", "organisation")
        assert set(instance.near) <= set(graph.entities) and focus not in instance.near


def test_timelines_are_dated_and_chronological(graph):
    instances = _instances(graph)
    timelines = [i for i in instances if i.verification["ordered"]]
    assert timelines and len(timelines) < len(instances)  # both variants occur
    for instance in timelines:
        years = [fact_year(f) for f in instance.evidence]
        assert None not in years and years == sorted(years)


def test_profile_leaves_nothing_about_the_focus_out_of_the_rubric(graph):
    for instance in _instances(graph):
        rubric = {f.id for f in instance.evidence}
        about = {f.id for f in graph.facts_of(instance.verification["start_entity"])}
        assert rubric <= about and about - rubric <= instance.excluded


def _keys(item: dict) -> set[str]:
    return {item["other"], *([str(item["year"])] if item["year"] is not None else [])}


def test_items_can_be_told_apart(graph):
    """No item's other entity and year lie within another's: a sentence stating one never states another."""
    for instance in _instances(graph):
        keys = [_keys(json.loads(item)) for item in instance.verification["rubric"]]
        assert not [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :] if a <= b or b <= a]


def test_row_rederives_from_the_graph(graph, builder):
    for seed in range(4):
        row = _row(graph, builder, seed)
        assert TASK.check(row, graph) == []
        for item, ref in zip(_items(row), row["verification"]["evidence"], strict=True):
            assert row["document"].count(ref["sentence"]) == 1
            assert all(key in ref["sentence"] for key in _keys(item))
            assert item["names"][0] == item["other"] and item["language"] == "en" and item["cues"]
        assert row["reference"].splitlines()[-1] == f"Answer: {row['answer']}"


def test_check_catches_corrupted_rows(graph, builder):
    row = next(r for r in (_row(graph, builder, s) for s in range(10)) if r["verification"]["ordered"])
    items = _items(row)
    wrong_year = [dict(items[0], year=1234), *items[1:]]
    assert any("year" in p for p in TASK.check(_with_items(row, wrong_year), graph))
    other = next(e for e in graph.world.entities if e.name != items[0]["other"])
    wrong_entity = [dict(items[0], other=other.name), *items[1:]]
    assert any("other" in p for p in TASK.check(_with_items(row, wrong_entity), graph))
    no_cues = [dict(items[0], cues=[]), *items[1:]]
    assert any("cues" in p for p in TASK.check(_with_items(row, no_cues), graph))
    first, last = items[0], items[-1]
    assert first["year"] < last["year"]
    swapped = _with_items(row, [last, *items[1:-1], first])
    evidence = swapped["verification"]["evidence"]
    evidence[0], evidence[-1] = evidence[-1], evidence[0]
    assert any("chronological" in p for p in TASK.check(swapped, graph))
    stranger = next(
        f for f in graph.world.facts if row["verification"]["start_entity"] not in (f.head, f.tail)
    )
    foreign = [dict(items[0], fact=stranger.id), *items[1:]]
    assert any("does not involve" in p for p in TASK.check(_with_items(row, foreign), graph))


def test_check_catches_an_unlisted_fact_in_the_context(graph, builder):
    row = next(r for r in (_row(graph, builder, s) for s in range(10)) if not r["verification"]["ordered"])
    dropped = _items(row)[1:]
    row["verification"]["evidence"] = row["verification"]["evidence"][1:]
    assert any("rubric lacks" in p for p in TASK.check(_with_items(row, dropped), graph))


@pytest.mark.parametrize("language", ["en", "pt", "de"])
def test_reference_earns_the_full_reward_in_every_language(language):
    rows, worlds = build(BuildConfig(task="longform", lengths=[4096], num_examples=3, languages=[language]))
    graphs = {w.id: WorldGraph(w) for w in worlds}
    all_rows = [r for split in rows.values() for r in split]
    assert len(all_rows) == 3
    for row in all_rows:
        assert row["language"] == language and row["task"] == "longform"
        assert score(row["reference"], row["verification"]).value >= 0.99, row["id"]
        assert TASK.check(row, graphs[row["world_id"]]) == [], row["id"]


def test_row_matches_golden_file(graph, builder, golden):
    golden(GOLDEN, _row(graph, builder, 5, length=2048))


@pytest.mark.parametrize("language", ["en", "pt", "de"])
def test_every_paraphrase_of_every_fact_states_its_item(language):
    """Each fact template, in every paraphrase, names a relation word of its rubric item and
    states it alone: a report in other words than the context's still earns full credit."""
    from longblocks.rewards.rubric import assess, load_items
    from longblocks.tasks.longform import rubric_facts, rubric_item
    from longblocks.world.graph import WorldSize, build_world

    graph = WorldGraph(build_world("w", 11, language, WorldSize(people=200)))
    renderer = Renderer(graph)
    foci = [e.id for e in graph.world.entities if e.type in ("person", "organisation")]
    checked = set()
    for focus in random.Random(0).sample(foci, 60):
        facts = rubric_facts(graph, focus, "profile")[0]
        items = load_items([json.dumps(rubric_item(graph, f, focus)) for f in facts])
        names = [graph.entities[focus].name, *graph.entities[focus].aliases]
        for k, fact in enumerate(facts):
            for variant in range(renderer.n_variants(fact.relation)):
                sentence = renderer.sentence(fact, variant)
                found = assess(sentence, items, names)
                assert found.first[k] is not None and not found.wrong and found.precision == 1, sentence
                assert [i for i, p in enumerate(found.first) if p is not None] == [k], sentence
                checked.add((fact.relation, variant))
    assert len({relation for relation, _ in checked}) >= 10
