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


def test_corpus_documents_are_deterministic_and_well_formed(graph):
    from longblocks.render.documents import Renderer

    entity = next(e.id for e in graph.world.entities if e.type == "person" and graph.outgoing(e.id))
    a, b = (
        Renderer(graph).document(entity).with_id("D1234"),
        Renderer(graph).document(entity).with_id("D1234"),
    )
    assert a == b and a.text == b.text
    assert a.text.startswith("[D1234] ") and a.header.startswith(" ") and "\n" in a.header
    assert a.footer.endswith(".\n\n") and a.footer.startswith(" ")
    assert all(s.startswith(" ") and s.endswith(".") for s in a.sentences)
    assert len(a.facts) == len(a.sentences) >= 1
    assert set(a.facts) >= {f.id for f in graph.outgoing(entity)}
    assert a.text == (a.id_unit + a.body)[:-2]


def test_document_edits_return_new_documents(renderer, graph):
    entity = next(e.id for e in graph.world.entities if len(graph.outgoing(e.id)) >= 3)
    doc = renderer.document(entity)
    fewer = doc.with_facts([0, 2])
    assert fewer.facts == (doc.facts[0], doc.facts[2]) and len(doc.facts) >= 3
    swapped = doc.with_sentence(1, doc.facts[1], " Other.")
    assert swapped.sentences[1] == " Other." and doc.sentences[1] != " Other."
    inserted = doc.with_sentence(0, "f-new", " New.", insert=True)
    assert inserted.facts[0] == "f-new" and inserted.facts[1:] == doc.facts


def test_fast_variants_render_exactly_like_jinja():
    from pathlib import Path

    values = {
        "head": "Mara Quill",
        "tail": "Ostwick {Holdings}",
        "year": 1987,
        "since": 1990,
        "role": "archivist",
        "stake": 60,
        "price": 1200,
        "attendees": 3000,
        "name": "Quillford",
        "kind": "town",
        "x": "Mara Quill",
        "chain": "the founder of X",
        "answer_type": "person",
        "first": "the founder of X",
        "second": "the spouse of Y",
    }
    checked = 0
    for path in sorted(Path(TEMPLATES_DIR).glob("*/*/**/*.jinja")):
        name = str(path.relative_to(TEMPLATES_DIR))
        if name.startswith("chat/") or "/prompt/" in name or "/reference/" in name:
            continue
        for variant in variants(name):
            if variant.pattern is not None:
                assert variant.render(**values) == variant.template.render(**values), variant.source
                checked += 1
    assert checked > 500


def test_templates_folder_has_one_folder_per_language():
    for language in LANGUAGES:
        assert (TEMPLATES_DIR / language / "prompt" / "system.jinja").exists()
