import random

import pytest

from longblocks.errors import UserError
from longblocks.render.context import SENTINEL, Evidence, split_frame
from longblocks.row import prompt_messages

FRAME = {
    "system": "You read documents.",
    "document": SENTINEL,
    "question": "Who is it?",
    "instruction": "Answer: <name>",
}


def _evidence(graph, n, depth):
    person = next(e.id for e in graph.world.entities if len(graph.outgoing(e.id)) >= n)
    return [Evidence(f, depth) for f in graph.outgoing(person)[:n]]


@pytest.mark.parametrize("target", [1024, 2048, 4096, 8192])
def test_context_lands_on_the_target_length(builder, graph, counter, target):
    for seed in range(3):
        rng = random.Random(seed)
        context = builder.build(
            prompt_messages(FRAME), _evidence(graph, 2, rng.random()), [], set(), target, target // 200, rng
        )
        assert context.n_tokens == counter.count(context.prompt)
        assert abs(context.n_tokens - target) <= target * 0.002


def test_unit_counts_add_up_to_the_exact_count(builder, graph, counter, rng):
    context = builder.build(prompt_messages(FRAME), _evidence(graph, 2, 0.5), [], set(), 4096, 20, rng)
    prefix, suffix = split_frame(counter, prompt_messages(FRAME))
    units = [u for d in context.documents for u in (d.id_unit, d.header, *d.sentences, d.footer)]
    assert prefix + "".join(units) + suffix == context.prompt
    assert (
        counter.count(prefix) + sum(counter.count(u) for u in units) + counter.count(suffix)
        == context.n_tokens
    )
    filled = {**FRAME, "document": context.document}
    assert counter.chat_prompt(prompt_messages(filled)) == context.prompt


def test_evidence_of_one_entity_shares_a_document(builder, graph, rng):
    evidence = _evidence(graph, 3, 0.5)
    context = builder.build(prompt_messages(FRAME), evidence, [], set(), 4096, 20, rng)
    assert len({context.depths[e.fact.id][0] for e in evidence}) == 1


def test_evidence_appears_once_at_its_depth(builder, graph, renderer, rng):
    first = graph.world.facts[0]
    second = next(f for f in graph.world.facts if f.head != first.head and "until" not in f.attributes)
    evidence = [Evidence(first, 0.0), Evidence(second, 0.9)]
    context = builder.build(prompt_messages(FRAME), evidence, [], set(), 8192, 40, rng)
    for item in evidence:
        sentences = [renderer.sentence(item.fact, v) for v in range(renderer.n_variants(item.fact.relation))]
        assert sum(context.document.count(s) for s in sentences) == 1
    (_, shallow), (_, deep) = context.depths[evidence[0].fact.id], context.depths[evidence[1].fact.id]
    assert shallow < 0.1 and deep > 0.8


def test_excluded_facts_are_absent(builder, graph, renderer, rng):
    evidence = _evidence(graph, 1, 0.5)
    excluded = {f.id for f in graph.world.facts[:300]} - {evidence[0].fact.id}
    context = builder.build(prompt_messages(FRAME), evidence, [], excluded, 4096, 20, rng)
    stated = {f for d in context.documents for f in d.facts}
    assert stated.isdisjoint(excluded)


def test_too_short_for_the_evidence_is_a_user_error(builder, graph, rng):
    with pytest.raises(UserError, match="below what the evidence needs"):
        builder.build(prompt_messages(FRAME), _evidence(graph, 3, 0.5), [], set(), 100, 1, rng)


def test_same_rng_same_context(builder, graph):
    a = builder.build(prompt_messages(FRAME), _evidence(graph, 2, 0.3), [], set(), 2048, 10, random.Random(9))
    b = builder.build(prompt_messages(FRAME), _evidence(graph, 2, 0.3), [], set(), 2048, 10, random.Random(9))
    assert a.prompt == b.prompt and a.depths == b.depths


def test_no_fact_is_stated_twice_and_no_document_predates_its_facts(graph, builder):
    from collections import Counter

    from longblocks.render.documents import fact_year
    from longblocks.tasks import TASKS, TaskParams

    for seed in range(6):
        rng = random.Random(seed)
        instance = TASKS["grounding"].sample(builder.renderer, rng, TaskParams(length=4096))
        evidence = [Evidence(f, rng.random()) for f in instance.evidence]
        context = builder.build(
            prompt_messages(FRAME),
            evidence,
            instance.near,
            instance.excluded,
            4096,
            20,
            rng,
            instance.pinned,
            instance.documents,
        )
        stated = Counter(f for doc in context.documents for f in doc.facts)
        assert max(stated.values()) == 1
        for doc in context.documents:
            assert all(fact_year(graph.facts[f]) <= doc.year for f in doc.facts), doc.doc_id


def test_decoy_pointers_are_placed_like_the_evidence(builder, graph):
    # A near entity's pointer fact is stated at every length, in a document that is whole or cut
    # to that sentence as the evidence document is; without near_facts the tight contexts have
    # no room left for it.
    evidence = _evidence(graph, 1, 0.5)
    entity = max(
        (e.id for e in graph.world.entities if e.id != evidence[0].fact.head),
        key=lambda e: len(graph.outgoing(e)),
    )
    whole = builder.renderer.document(entity)
    pointer = whole.facts[-1]
    missing = 0
    for target in range(300, 900, 20):
        for keep in (frozenset({pointer}), frozenset()):
            rng = random.Random(target)
            context = builder.build(
                prompt_messages(FRAME), evidence, [entity], set(), target, target // 5, rng, near_facts=keep
            )
            placed = [d for d in context.documents if d.entity == entity]
            if keep:
                assert len(placed) == 1 and tuple(placed[0].facts) in (tuple(whole.facts), (pointer,))
            else:
                missing += not placed or pointer not in placed[0].facts
    assert missing > 3


def _laid_depths(order, placed, count):
    """Relative depth of each placed document's middle in `order`."""
    total, start, middles = sum(count.document(d) for d in order), 0, {}
    for doc in order:
        middles[doc.doc_id] = (start + count.document(doc) / 2) / total
        start += count.document(doc)
    return [middles[doc.doc_id] for doc, _ in placed]


def test_placed_documents_keep_their_depth_order_and_a_shared_depth_is_centred(builder, graph):
    from longblocks.render.context import _place

    entities = graph.world.entities[:40]
    docs = [builder.renderer.document(e.id).with_id(f"D{i:04d}") for i, e in enumerate(entities)]
    docs = [d for d in docs if d.facts]

    def aimed(doc, depth):
        return doc, Evidence(graph.facts[doc.facts[0]], depth)

    for seed in range(20):
        rng = random.Random(seed)
        shuffled = rng.sample(docs, len(docs))
        # Four documents aimed at one depth (evidence under --depth 0.5) and six at random depths:
        # one insertion after another let a later, shallower one land in front of an earlier one
        # its peers had pushed deeper.
        block = [aimed(d, 0.5) for d in shuffled[:4]]
        spread = [aimed(d, rng.random()) for d in shuffled[4:10]]
        order = _place(block + spread, shuffled[10:], builder.count, rng)
        assert sorted(d.doc_id for d in order) == sorted(d.doc_id for d in shuffled)
        placed = sorted(block + spread, key=lambda p: p[1].target_depth)
        laid = _laid_depths(order, placed, builder.count)
        assert laid == sorted(laid)  # depth order holds
        middle = sum(_laid_depths(order, block, builder.count)) / len(block)
        assert abs(middle - 0.5) < 0.12, seed
