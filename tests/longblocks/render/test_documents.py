import random

import pytest

from longblocks.render.documents import GENRES, variants
from longblocks.render.env import TEMPLATES_DIR
from longblocks.world.schema import RELATIONS

LANGUAGES = ("en", "pt", "de")


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_relation_has_three_or_more_paraphrases(language):
    for relation in RELATIONS:
        assert len(variants(f"{language}/facts/{relation}.jinja")) >= 3, relation
        assert len(variants(f"{language}/phrases/{relation}.jinja")) >= 1, relation


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_genre_has_title_intro_and_footer(language):
    genres = {g for gs in GENRES.values() for g in gs}
    assert len(genres) >= 5
    for genre in genres:
        for part in ("title", "intro", "footer"):
            assert variants(f"{language}/documents/{genre}/{part}.jinja"), (genre, part)


def test_sentences_name_head_and_tail_once_and_end_with_a_period(renderer, graph):
    for fact in graph.world.facts[:400]:
        head, tail = graph.entities[fact.head].name, graph.entities[fact.tail].name
        for variant in range(renderer.n_variants(fact.relation)):
            sentence = renderer.sentence(fact, variant)
            assert sentence.endswith(".") and "\n" not in sentence
            assert sentence[0].isupper()
            assert sentence.count(head) == 1 and sentence.count(tail) == 1, sentence


def test_documents_are_deterministic_and_well_formed(renderer, graph):
    entity = next(e.id for e in graph.world.entities if e.type == "person" and graph.outgoing(e.id))

    def make(seed):
        rng = random.Random(seed)
        return renderer.document(entity, "D1234", renderer.document_facts(entity, rng, set()), rng)

    a, b = make(5), make(5)
    assert a.text == b.text and a.units() == b.units()
    assert a.header.startswith("[D1234] ")
    assert a.footer.endswith(".\n\n") and a.footer.startswith(" ")
    assert all(s.startswith(" ") and s.endswith(".") for s in a.sentences)
    assert len(a.facts) == len(a.sentences) >= 1
    assert a.text == "".join(a.units())[:-2]


def test_excluded_facts_never_appear(renderer, graph, rng):
    entity = next(e.id for e in graph.world.entities if len(graph.outgoing(e.id)) >= 3)
    banned = {f.id for f in graph.outgoing(entity)[:2]}
    facts = renderer.document_facts(entity, rng, banned)
    assert banned.isdisjoint(f.id for f in facts)


def test_templates_folder_has_one_folder_per_language():
    for language in LANGUAGES:
        assert (TEMPLATES_DIR / language / "prompt" / "system.jinja").exists()
