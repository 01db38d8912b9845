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


def test_a_trimmed_near_document_keeps_its_near_facts(builder, graph):
    # A decoy's pointer document trimmed to a tight budget keeps the pointer sentence; without
    # near_facts the subset-sum drops it in some contexts (and the answer would stand alone).
    evidence = _evidence(graph, 1, 0.5)
    entity = max(
        (e.id for e in graph.world.entities if e.id != evidence[0].fact.head),
        key=lambda e: len(graph.outgoing(e)),
    )
    pointer = builder.renderer.document(entity).facts[-1]
    kept = dropped = 0
    for target in range(300, 900, 20):
        for keep in (frozenset({pointer}), frozenset()):
            rng = random.Random(target)
            context = builder.build(
                prompt_messages(FRAME), evidence, [entity], set(), target, target // 5, rng, near_facts=keep
            )
            placed = [d for d in context.documents if d.entity == entity]
            if placed and len(placed[0].facts) < len(builder.renderer.document(entity).facts):  # trimmed
                if keep:
                    assert pointer in placed[0].facts
                    kept += 1
                else:
                    dropped += pointer not in placed[0].facts
    assert kept > 3 and dropped > 3
