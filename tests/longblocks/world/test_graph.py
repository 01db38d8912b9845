import json
import pickle
from collections import Counter

import jsonschema
import pytest

from longblocks.render.env import TEMPLATES_DIR
from longblocks.world.entities import NameMaker, is_club_kind, lexicon
from longblocks.world.graph import WorldGraph, WorldSize, build_world
from longblocks.world.schema import ENTITY_TYPES, RELATIONS, World


def test_world_is_deterministic_for_a_seed():
    a = build_world("w", seed=11, language="en", size=WorldSize(people=80))
    b = build_world("w", seed=11, language="en", size=WorldSize(people=80))
    c = build_world("w", seed=12, language="en", size=WorldSize(people=80))
    assert a.model_dump_json() == b.model_dump_json()
    assert a.model_dump_json() != c.model_dump_json()


def test_world_has_all_entity_types_and_relations(world):
    types = Counter(e.type for e in world.entities)
    assert set(types) == set(ENTITY_TYPES)
    relations = Counter(f.relation for f in world.facts)
    assert len(RELATIONS) >= 12
    assert set(relations) == set(RELATIONS)


def test_names_are_unique_and_ids_consistent(world):
    names = [e.name for e in world.entities]
    assert len(names) == len(set(names))
    ids = {e.id for e in world.entities}
    assert all(f.head in ids and f.tail in ids for f in world.facts)
    assert all("." not in name for name in names)


def test_facts_respect_relation_types_and_attributes(world, graph):
    for fact in world.facts:
        spec = RELATIONS[fact.relation]
        assert graph.entities[fact.head].type == spec.head
        assert graph.entities[fact.tail].type == spec.tail
        extra = {"until"} if spec.history and "until" in fact.attributes else set()
        assert set(fact.attributes) == set(spec.attributes) | extra
        assert all(v <= 2025 for k, v in fact.attributes.items() if k in ("year", "since"))


def test_every_relation_is_functional(world, graph):
    """Following any relation from any entity reaches at most one entity."""
    for entity in world.entities:
        for relation in RELATIONS:
            assert len(graph.step(entity.id, relation)) <= 1, (entity.id, relation)


def test_follow_and_linked(graph):
    fact = next(f for f in graph.world.facts if f.relation == "married_to")
    assert graph.follow(fact.head, ["married_to"]) == {fact.tail}
    assert graph.follow(fact.tail, ["married_to"]) == {fact.head}  # symmetric
    assert graph.linked(fact.head, fact.tail) and graph.linked(fact.tail, fact.head)
    works = next(f for f in graph.world.facts if f.relation == "works_for")
    assert graph.follow(works.tail, ["works_for"]) == set()  # not read backwards


def test_world_json_roundtrip_and_schema(world):
    text = world.model_dump_json()
    assert World.model_validate_json(text) == world
    schema = json.loads((TEMPLATES_DIR.parent / "schemas" / "world.schema.json").read_text())
    jsonschema.validate(json.loads(text), schema)


def test_names_are_locale_aware():
    import random

    from faker.providers.person.de_DE import Provider as German

    maker = NameMaker("de", random.Random(0))
    people = [maker.person() for _ in range(50)]
    assert all(p.split(" ")[0] in German.first_names for p in people)
    towns = [maker.town() for _ in range(20)]
    assert len(set(towns)) == 20


def test_lexicons_are_aligned_across_languages():
    en = lexicon("en")
    for language in ("pt", "de"):
        other = lexicon(language)
        for key, value in en.items():
            if isinstance(value, list):
                assert len(other[key]) == len(value), (language, key)
    assert (TEMPLATES_DIR / "en" / "lexicon.yaml").exists()


def test_world_size_scales_with_length():
    assert WorldSize.for_length(131072).people > WorldSize.for_length(4096).people
    graph = WorldGraph(build_world("w", 1, "en", WorldSize(people=60)))
    assert len(graph.world.entities) > 60


def test_former_facts_are_history_not_current_state(world, graph):
    former = [f for f in world.facts if "until" in f.attributes]
    assert former and all(RELATIONS[f.relation].history for f in former)
    for fact in former:
        assert fact.id in graph.facts and fact not in graph.facts_of(fact.head)
        assert fact.attributes["since"] < fact.attributes["until"]
        (current,) = [f for f in graph.outgoing(fact.head) if f.relation == fact.relation]
        assert current.attributes["since"] == fact.attributes["until"] and current.tail != fact.tail
        assert graph.step(fact.head, fact.relation) == {current.tail}


def test_trusted_models_equal_validated_ones(world):
    """`trusted` skips validation only: the models equal (and dump like) validated ones."""
    validated = World.model_validate_json(world.model_dump_json())
    assert validated == world
    assert validated.model_dump_json() == world.model_dump_json()
    assert validated.entities[0].model_fields_set == world.entities[0].model_fields_set
    assert repr(validated.facts[0]) == repr(world.facts[0])


def test_world_pickles_to_an_equal_world(world):
    clone = pickle.loads(pickle.dumps(world))
    assert clone == world
    assert clone.model_dump_json() == world.model_dump_json()


def test_indexes_agree_with_networkx(world, graph):
    """The dict indexes answer what a networkx traversal of the same multigraph answers."""
    nx_graph = graph.to_networkx()
    assert nx_graph.number_of_nodes() == len(world.entities)
    assert nx_graph.number_of_edges() == len(world.facts)
    current = [(h, t, d) for h, t, d in nx_graph.edges(data=True) if not d["former"]]

    def nx_step(entity, relation):
        reached = {
            t
            for _, t, d in nx_graph.out_edges(entity, data=True)
            if d["relation"] == relation and not d["former"]
        }
        if RELATIONS[relation].symmetric:
            reached |= {
                h
                for h, _, d in nx_graph.in_edges(entity, data=True)
                if d["relation"] == relation and not d["former"]
            }
        return reached

    for entity in list(graph.entities)[:: max(1, len(graph.entities) // 60)]:
        for relation in RELATIONS:
            assert graph.step(entity, relation) == nx_step(entity, relation), (entity, relation)
        neighbours = {t for h, t, _ in current if h == entity} | {h for h, t, _ in current if t == entity}
        assert graph.neighbours(entity) == neighbours
    fact = next(f for f in world.facts if f.relation == "works_for")
    assert nx_graph.edges[fact.head, fact.tail, fact.id]["relation"] == "works_for"
    assert nx_graph.nodes[fact.head]["name"] == graph.entities[fact.head].name


def _plausible_world(language: str):
    return build_world("w", 4, language, WorldSize.for_length(8192))


@pytest.mark.parametrize("language", ["en", "pt", "de"])
def test_dates_read_like_lives(language):
    world = _plausible_world(language)
    born = {e.id: e.year for e in world.entities}
    joined = [f for f in world.facts if f.relation in ("works_for", "member_of")]
    # Nobody joins an organisation in the year it was founded, or before.
    assert joined and all(f.attributes["since"] > born[f.tail] for f in joined)
    for f in world.facts:
        if f.relation == "married_to":
            assert f.attributes["year"] - min(born[f.head], born[f.tail]) <= 45  # nobody weds at 70
        if f.relation == "founded_by":
            assert 25 <= f.attributes["year"] - born[f.tail] <= 60
        if f.relation == "child_of":
            assert 18 <= born[f.head] - born[f.tail] <= 45


@pytest.mark.parametrize("language", ["en", "pt", "de"])
def test_organisations_are_named_like_their_kind(language):
    from longblocks.world.entities import kind_word

    world = _plausible_world(language)
    words = lexicon(language)
    clubs = [e for e in world.entities if e.type == "organisation" and is_club_kind(words, e.kind)]
    companies = [e for e in world.entities if e.type == "organisation" and not is_club_kind(words, e.kind)]
    assert len(clubs) >= 10 and len(companies) >= 12
    for club in clubs:
        patterns = words["club_names"][club.kind - len(words["organisation_kinds"])]
        assert any(_matches(p, club.name) for p in patterns), club.name
        assert kind_word(words, "organisation", club.kind) in words["club_kinds"]
    for company in companies:
        assert any(_matches(p, company.name) for p in words["organisation_names"][company.kind]), company.name


def _matches(pattern: str, name: str) -> bool:
    before, after = pattern.split("{stem}")
    return name.startswith(before) and name.endswith(after)


def test_every_fine_type_has_ten_or_more_entities(graph):
    counts = Counter(graph.fine_type(e.id) for e in graph.world.entities)
    assert set(counts) == {"person", "town", "region", "company", "club", "artifact", "event"}
    assert min(counts.values()) >= 10
