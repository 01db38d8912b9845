"""Relation chains over a world graph, the question phrase that names one, and the distractors
that keep its answer from standing out. Shared by every task whose answer ends a chain.
"""

import random
from typing import NamedTuple

from longblocks.render.documents import variants
from longblocks.world.graph import WorldGraph
from longblocks.world.schema import RELATIONS, Fact

MAX_NEAR = 300


def min_candidates(length: int) -> int:
    """Entities of the answer's fine type (the answer included) a context names at least: 3
    below 4k, 5 up to 8k, 8 from 8k, one per 4k tokens beyond 32k, so guessing among them
    stays a poor bet."""
    if length < 4096:
        return 3
    if length < 8192:
        return 5
    return max(8, length // 4096)


def decoy_count(length: int) -> int:
    """Peers of the answer given the same treatment as the answer (a document naming each
    through the final relation, and its own document): three more than one per 512 tokens,
    and at least one more than `min_candidates` asks for. Any rule that reads only the final
    relation's sentences picks among the answer and its decoys, so fewer leave the answer
    among a small, well-documented few: with one per 512 tokens, `--task all` at 2k scored
    0.24 on last-hop most-mentioned against chance 0.12 (limit 0.22), 0.14 with this count;
    one-hop rows at 768 and 1k tokens scored 0.33 and 0.32 against chance 0.22 and 0.20 with
    one decoy fewer than 768 tokens get now."""
    return max(min_candidates(length) + 1, length // 512 + 3) - 1


def backward_options(graph: WorldGraph, entity: str, visited: set[str]) -> list[tuple[str, Fact]]:
    """(previous entity, fact) for every fact whose relation, followed from the previous entity,
    reaches exactly `entity`: the hops a chain ending at `entity` can end with."""
    options = []
    for fact in graph.facts_of(entity):
        if fact.tail == entity:
            previous = fact.head
        elif RELATIONS[fact.relation].symmetric:
            previous = fact.tail
        else:
            continue
        if previous not in visited and graph.step(previous, fact.relation) == {entity}:
            options.append((previous, fact))
    return options


def final_relations(graph: WorldGraph, length: int) -> list[str]:
    """Relations a chain may end with: those leading to enough distinct entities that the
    answer hides among peers (a relation with three possible answers is a guess)."""
    return [r for r in RELATIONS if len(graph.tails(r)) >= min_candidates(length)]


def sample_chain(
    graph: WorldGraph, rng: random.Random, hops: int, length: int = 0
) -> tuple[list[str], list[Fact]] | None:
    """A chain of `hops` facts built backwards from its answer; None on a dead end.

    The final relation is drawn uniformly, then the answer uniformly among the entities it
    leads to: a forward random walk would end on well-connected entities (and on "the region
    of ...", the one way out of a town), which a model learns to guess without reading.
    """
    relations = final_relations(graph, length)
    if not relations:
        return None
    relation = rng.choice(relations)
    answer = rng.choice(graph.tails(relation))
    fine = graph.fine_type(answer)
    if sum(graph.fine_type(t) == fine for t in graph.tails(relation)) < min_candidates(length):
        return None  # e.g. the only club among the organisers of events
    return chain_to(graph, rng, answer, hops, relation)


def chain_to(
    graph: WorldGraph, rng: random.Random, end: str, hops: int, relation: str | None = None
) -> tuple[list[str], list[Fact]] | None:
    """A chain of `hops` facts that ends at `end` (with a fact of `relation`, if given), built
    backwards one uniformly drawn hop at a time; None on a dead end."""
    entities, facts = [end], []
    for hop in range(hops):
        options = backward_options(graph, entities[0], set(entities))
        if hop == 0 and relation is not None:
            options = [(p, f) for p, f in options if f.relation == relation]
        if not options:
            return None
        previous, fact = rng.choice(options)
        entities.insert(0, previous)
        facts.insert(0, fact)
    return entities, facts


def phrase_chain(language: str, start_name: str, relations: list[str], rng: random.Random) -> str:
    """Nest one noun phrase per relation: 'the founder of the employer of Mara Quill'."""
    chain = start_name
    for relation in relations:
        chain = rng.choice(variants(f"{language}/phrases/{relation}.jinja")).render(x=chain)
    return chain


class Distractors(NamedTuple):
    """What a context adds around the evidence: `entities` whose documents make the best
    distractors, best first, and `facts` those documents must keep when a tight budget trims
    them (each decoy's pointer: the sentence naming it through the final relation)."""

    entities: list[str]
    facts: frozenset[str]


def near_entities(
    graph: WorldGraph, path: list[str], relations: list[str], rng: random.Random, length: int = 0
) -> Distractors:
    """Distractors, best first: decoy answers, then the path's neighbours, then other heads of
    the same relations.

    The answer must not stand out among entities of its fine type, so peers take its place:
    entities the final relation also leads to, each with one document that names it through
    that relation (as the evidence names the answer), and every candidate's own document, the
    answer's included. None of it depends on which candidate is the answer.
    """
    answer, relation = path[-1], relations[-1]
    fine = graph.fine_type(answer)
    peers = [t for t in graph.tails(relation) if t != answer and t not in path and graph.fine_type(t) == fine]
    decoys = rng.sample(peers, min(len(peers), decoy_count(length)))
    pointers, pointer_facts = [], set()
    for decoy in decoys:
        options = sorted(
            (p, f.id) for p, f in backward_options(graph, decoy, set(path)) if f.relation == relation
        )
        if options:
            head, fact = rng.choice(options)
            pointers.append(head)
            pointer_facts.add(fact)
    candidates = [answer, *decoys]
    rng.shuffle(candidates)
    front = list(dict.fromkeys([*pointers, *candidates]))
    taken = set(path) | set(front)
    neighbours = sorted({n for e in path[:-1] for n in graph.neighbours(e)} - taken)
    rng.shuffle(neighbours)
    heads = set().union(*(graph.heads(r) for r in relations))
    same_relation = sorted(heads - taken - set(neighbours))
    rng.shuffle(same_relation)
    return Distractors((front + neighbours + same_relation)[:MAX_NEAR], frozenset(pointer_facts))
