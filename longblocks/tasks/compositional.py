"""Compositional multi-hop variants: a chain, then one more step that is not a plain hop.

- `counting`: "How many members does the society that Mara Quill belongs to have?" The chain
  ends at a club (members: `member_of`) or a company (staff: `works_for`); every counted fact
  is evidence, so the context states each member exactly once. The count is drawn first,
  uniformly from `COUNTS`, so no count is a better guess than another.
- `temporal`: "The founder of Quill Press moved to Eastwick. Where did this person live
  before?" The chain ends at an entity whose residence, employer or headquarters changed; an
  older dated record states the former value, a newer one the current value (named in the
  question), and the answer is the former one.

Both are verified on the graph (`check_counting`, `check_temporal`) and scored by the exact
reward: a count is a number, a former value a name.
"""

import random

from longblocks.render.documents import Renderer, nfc, variants
from longblocks.rewards import normalize
from longblocks.tasks.base import TaskInstance, TaskParams
from longblocks.tasks.chains import chain_to, near_entities, phrase_chain
from longblocks.tasks.records import draw_change, record_pair
from longblocks.world.graph import WorldGraph
from longblocks.world.schema import Fact

COUNTS = (1, 2, 3, 4, 5)
# What is counted at an organisation, by its fine type.
COUNTED = {"club": "member_of", "company": "works_for"}


def counted_facts(graph: WorldGraph, organisation: str) -> list[Fact]:
    """The current facts a count at `organisation` counts (its members or its staff)."""
    relation = COUNTED[graph.fine_type(organisation)]
    return [f for f in graph.facts_of(organisation) if f.relation == relation and f.tail == organisation]


def _chain_hops(rng: random.Random, params: TaskParams) -> int:
    # The extra step (the count, the earlier value) is a hop of its own.
    return max(1, rng.choice(params.hops) - 1)


def sample_counting(renderer: Renderer, rng: random.Random, params: TaskParams) -> TaskInstance | None:
    graph = renderer.graph
    count = rng.choice(COUNTS)
    relation = rng.choice(sorted(COUNTED.values()))
    organisations = [o for o in graph.tails(relation) if len(counted_facts(graph, o)) == count]
    if not organisations:
        return None
    organisation = rng.choice(organisations)
    found = chain_to(graph, rng, organisation, _chain_hops(rng, params))
    if found is None:
        return None
    entities, facts = found
    relations = [f.relation for f in facts]
    if graph.follow(entities[0], relations) != {organisation}:
        return None
    chain = phrase_chain(renderer.language, graph.entities[entities[0]].name, relations, rng)
    frame = rng.choice(variants(f"{renderer.language}/questions/multihop_counting.jinja"))
    question = nfc(frame.render(chain=chain, counted=relation))
    counted = [f for f in counted_facts(graph, organisation) if f not in facts]
    return TaskInstance(
        question=question,
        answer=str(count),
        evidence=facts + counted,
        near=near_entities(graph, entities, relations, rng, params.length),
        verification={
            "kind": "exact",
            "variant": "counting",
            "path": relations,
            "start_entity": entities[0],
            "answer_entity": organisation,
        },
    )


def sample_temporal(renderer: Renderer, rng: random.Random, params: TaskParams) -> TaskInstance | None:
    graph = renderer.graph
    change = draw_change(graph, rng)
    if change is None:
        return None
    old, new = change
    head = old.head
    found = chain_to(graph, rng, head, _chain_hops(rng, params))
    if found is None:
        return None
    entities, facts = found
    relations = [f.relation for f in facts]
    start = entities[0]
    if old.tail in entities or graph.follow(start, relations) != {head} or graph.linked(start, old.tail):
        return None
    answer, moved_to = graph.entities[old.tail], graph.entities[new.tail].name
    chain = phrase_chain(renderer.language, graph.entities[start].name, relations, rng)
    frame = rng.choice(variants(f"{renderer.language}/questions/multihop_temporal.jinja"))
    question = nfc(frame.render(chain=chain, current=moved_to, relation=old.relation))
    if normalize(answer.name) in normalize(question):
        return None
    own = tuple(f for f in facts if f.head == head)  # evidence the newer record will state too
    stale, newer = record_pair(renderer, old, new, rng, frozenset(f.id for f in facts), own)
    return TaskInstance(
        question=question,
        answer=answer.name,
        aliases=list(answer.aliases),
        evidence=[*facts, new],
        pinned=[(stale, rng.random())],
        documents={head: newer},
        near=near_entities(graph, [*entities, old.tail], [*relations, old.relation], rng, params.length),
        verification={
            "kind": "exact",
            "variant": "temporal",
            "path": [*relations, old.relation],
            "start_entity": start,
            "answer_entity": old.tail,
        },
    )


def former_value(graph: WorldGraph, entity: str, relation: str) -> str | None:
    """The tail of the fact of `relation` that `entity` held just before its current one."""
    current = [f for f in graph.outgoing(entity) if f.relation == relation]
    if len(current) != 1:
        return None
    since = current[0].attributes.get("since")
    before = [
        f for f in graph.former.get(entity, []) if f.relation == relation and f.attributes["until"] == since
    ]
    return before[0].tail if len(before) == 1 else None


def check_counting(row: dict, graph: WorldGraph) -> list[str]:
    v = row["verification"]
    reached = graph.follow(v["start_entity"], v["path"])
    if reached != {v["answer_entity"]}:
        return [f"path {v['path']} from {v['start_entity']} reaches {sorted(reached)}, not one organisation"]
    facts = counted_facts(graph, v["answer_entity"])
    problems = [] if row["answer"] == str(len(facts)) else [f"count '{row['answer']}' is not {len(facts)}"]
    missing = {f.id for f in facts} - {ref["fact_id"] for ref in v["evidence"]}
    if missing:
        problems.append(f"counted facts {sorted(missing)} are not evidence")
    return problems


def check_temporal(row: dict, graph: WorldGraph) -> list[str]:
    v = row["verification"]
    reached = graph.follow(v["start_entity"], v["path"][:-1])
    if len(reached) != 1:
        return [f"path {v['path'][:-1]} from {v['start_entity']} reaches {sorted(reached)}"]
    (entity,) = reached
    before = former_value(graph, entity, v["path"][-1])
    if before != v["answer_entity"]:
        return [f"the former {v['path'][-1]} of {entity} is {before}, not {v['answer_entity']}"]
    if graph.entities[before].name != row["answer"]:
        return [f"answer '{row['answer']}' is not the name of {before}"]
    return []
