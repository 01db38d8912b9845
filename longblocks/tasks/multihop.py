"""Multi-hop questions: follow a chain of k functional relations from a named entity.

The question names only the start entity and the relation chain ("Who founded the employer
of Mara Quill?"). A question is kept only if, on the graph, the chain reaches exactly one
entity, and no single fact (hence no sentence of any context) mentions both the start
entity and the answer, so the answer cannot be read off without following every hop.
"""

import random

from longblocks.render.documents import Renderer, nfc, variants
from longblocks.render.env import render
from longblocks.rewards import normalize
from longblocks.tasks.base import TaskInstance, TaskParams, register
from longblocks.world.graph import WorldGraph
from longblocks.world.schema import RELATIONS, Fact

MAX_ATTEMPTS = 500
MAX_NEAR = 300


def hop_options(graph: WorldGraph, entity: str, visited: set[str]) -> list[tuple[str, str, Fact]]:
    """(relation, next entity, fact) for every hop out of `entity` that leads somewhere new."""
    options = []
    for fact in graph.facts_of(entity):
        if fact.head == entity:
            nxt = fact.tail
        elif RELATIONS[fact.relation].symmetric:
            nxt = fact.head
        else:
            continue
        if nxt not in visited and graph.step(entity, fact.relation) == {nxt}:
            options.append((fact.relation, nxt, fact))
    return options


def sample_path(graph: WorldGraph, rng: random.Random, hops: int) -> tuple[list[str], list[Fact]] | None:
    """A random walk of `hops` steps that never revisits an entity; None on a dead end."""
    start = rng.choice(graph.world.entities).id
    entities, facts = [start], []
    for _ in range(hops):
        options = hop_options(graph, entities[-1], set(entities))
        if not options:
            return None
        _, nxt, fact = rng.choice(options)
        entities.append(nxt)
        facts.append(fact)
    return entities, facts


def phrase_chain(language: str, start_name: str, relations: list[str], rng: random.Random) -> str:
    """Nest one noun phrase per relation: 'the founder of the employer of Mara Quill'."""
    chain = start_name
    for relation in relations:
        chain = rng.choice(variants(f"{language}/phrases/{relation}.jinja")).render(x=chain)
    return chain


class Multihop:
    name = "multihop"

    def sample(self, renderer: Renderer, rng: random.Random, params: TaskParams) -> TaskInstance:
        graph, language = renderer.graph, renderer.language
        for _ in range(MAX_ATTEMPTS):
            walk = sample_path(graph, rng, rng.choice(params.hops))
            if walk is None:
                continue
            entities, facts = walk
            start, answer = graph.entities[entities[0]], graph.entities[entities[-1]]
            relations = [f.relation for f in facts]
            if graph.follow(start.id, relations) != {answer.id} or graph.linked(start.id, answer.id):
                continue
            chain = phrase_chain(language, start.name, relations, rng)
            frame = rng.choice(variants(f"{language}/questions/multihop.jinja"))
            question = nfc(frame.render(chain=chain, answer_type=answer.type))
            if normalize(answer.name) in normalize(question):
                continue
            return TaskInstance(
                question=question,
                answer=answer.name,
                aliases=list(answer.aliases),
                evidence=facts,
                near=near_entities(graph, entities, relations, rng),
                verification={
                    "kind": "exact",
                    "path": relations,
                    "start_entity": start.id,
                    "answer_entity": answer.id,
                },
            )
        raise RuntimeError(f"no well-posed {params.hops}-hop question in world {graph.world.id}")

    def reference(self, instance: TaskInstance, refs: list[dict], language: str) -> str:
        steps = [ref["sentence"] for ref in refs]
        return render(f"{language}/reference/multihop.jinja", steps=steps, answer=instance.answer)

    def check(self, row: dict, graph: WorldGraph) -> list[str]:
        v = row["verification"]
        problems = []
        reached = graph.follow(v["start_entity"], v["path"])
        if reached != {v["answer_entity"]}:
            problems.append(
                f"path {v['path']} from {v['start_entity']} reaches {sorted(reached)}, not one answer"
            )
        elif graph.entities[v["answer_entity"]].name != row["answer"]:
            problems.append(f"answer '{row['answer']}' is not the name of {v['answer_entity']}")
        if graph.linked(v["start_entity"], v["answer_entity"]):
            problems.append("one fact links the start entity and the answer (a shortcut)")
        chain = [graph.facts.get(ref["fact_id"]) for ref in v["evidence"]]
        if None in chain or [f.relation for f in chain] != v["path"]:
            problems.append("evidence facts do not follow the relation path")
        return problems


def near_entities(graph: WorldGraph, path: list[str], relations: list[str], rng: random.Random) -> list[str]:
    """Near-miss distractors: the path's neighbours, then other heads of the same relations."""
    neighbours = sorted({n for e in path for n in graph.neighbours(e)} - set(path))
    rng.shuffle(neighbours)
    heads = set().union(*(graph.heads(relation) for relation in relations))
    same_relation = sorted(heads - set(path) - set(neighbours))
    rng.shuffle(same_relation)
    return (neighbours + same_relation)[:MAX_NEAR]


register(Multihop())
