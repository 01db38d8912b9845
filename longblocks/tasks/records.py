"""Two dated records of one entity whose fact changed: the older states the former value, the
newer the current one. Alike in form, so only their dates tell which one holds.
"""

import random

from longblocks.render.documents import Document, Renderer, fact_year
from longblocks.world.graph import LAST_YEAR, WorldGraph
from longblocks.world.schema import Fact

RECORD_EXTRA_FACTS = 3  # facts besides the changed one in each of a conflict's two records


def record_pair(
    renderer: Renderer,
    old: Fact,
    new: Fact,
    rng: random.Random,
    exclude: frozenset[str] = frozenset(),
    also_states: tuple[Fact, ...] = (),
) -> tuple[Document, Document]:
    """An older and a newer record about the same entity, alike in form: each states the
    changed fact (former / current value) and the same number of other facts, disjoint, each
    true at the record's date. Only the dates tell which one holds. Facts in `exclude` (stated
    elsewhere, e.g. other evidence) are in neither; `also_states` are facts the newer record
    will be given besides (evidence about the same entity): it is dated after them too."""
    graph, head = renderer.graph, old.head
    stale_year = rng.randint(old.attributes["since"], old.attributes["until"] - 1)
    facts = [graph.facts[f] for f in renderer.document(head).facts if f != new.id and f not in exclude]
    # Both records draw from the facts already true at the older date, split in two: the same
    # kinds of sentences in each, so neither length nor wording tells them apart.
    then = [f for f in facts if f.relation != new.relation and fact_year(f) <= stale_year]
    rng.shuffle(then)
    n = min(RECORD_EXTRA_FACTS, len(then) // 2)
    stale_extra, current_extra = then[:n], then[n : 2 * n]
    newest = max([new.attributes["since"], *(fact_year(f) for f in (*current_extra, *also_states))])
    current_year = min(LAST_YEAR, newest + rng.randint(0, 3))
    seed = graph.world.seed
    stale = renderer.dated_document(head, [old, *stale_extra], stale_year, key=f"{seed}:stale:{old.id}")
    current = renderer.dated_document(
        head, current_extra, current_year, key=f"{seed}:current:{new.id}", unlike=stale.frame_sentences
    )
    return stale, current


def draw_change(graph: WorldGraph, rng: random.Random) -> tuple[Fact, Fact] | None:
    """A former fact and the current fact that replaced it (same head and relation, another
    tail), or None when the draw finds none."""
    heads = sorted(graph.former)
    if not heads:
        return None
    head = rng.choice(heads)
    old = rng.choice(graph.former[head])
    current = [f for f in graph.outgoing(head) if f.relation == old.relation]
    if len(current) != 1 or current[0].tail == old.tail:
        return None
    return old, current[0]
