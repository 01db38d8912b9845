"""Facts → documents: one sentence per fact, wrapped in a genre (biography, report, ...).

Every world has a corpus: one document per entity (its own facts first, then some that name
it), with a genre, title, intro, footer and one paraphrase per fact drawn once from the
world's seed. Contexts sample documents from this corpus, so the rendering and token counting
of a document is paid once per world, not once per example.

A document's text is `[D1234]` + `body`, with `body` = ` Title\\nIntro.` + one ` Sentence.` per
fact + ` Footer.\\n\\n`. Every sentence ends with a period and every following piece starts
with a space and a letter, so the BPE pre-tokenizer never merges across these pieces: their
token counts add up (see `render.context`).
"""

import re
import unicodedata
import zlib
from dataclasses import dataclass, replace
from functools import cache, cached_property

from longblocks.audit import sentences
from longblocks.render.env import TEMPLATES_DIR, environment
from longblocks.world.entities import kind_word, lexicon
from longblocks.world.graph import LAST_YEAR, WorldGraph
from longblocks.world.schema import Entity, EntityType, Fact

GENRES: dict[EntityType, tuple[str, ...]] = {
    "person": ("biography", "letter"),
    "organisation": ("company_report",),
    "event": ("news_item",),
    "place": ("registry_entry",),
    "artifact": ("registry_entry",),
}
MAX_FACTS_PER_DOCUMENT = 8
_YEARS = ("year", "since", "until")  # fact attributes that are dates
_PLAIN_VARIABLE = re.compile(r"\{\{ *(\w+) *\}\}")


class Variant:
    """One template line. Lines that only substitute variables (`{{ name }}`, no tags,
    filters or whitespace control) render through an equivalent `str.format` pattern,
    ~40x faster than a jinja render; the result must equal `jinja_template.render(**values)`.
    """

    def __init__(self, source: str):
        self.source = source
        self.template = environment().from_string(source)
        literal = _PLAIN_VARIABLE.sub("", source)
        self.pattern: str | None = None
        if not any(tag in literal for tag in ("{", "}")):
            parts = _PLAIN_VARIABLE.split(source)  # literal, name, literal, name, ..., literal
            self.pattern = "".join(p if i % 2 == 0 else "{" + p + "}" for i, p in enumerate(parts))

    def render(self, **values) -> str:
        if self.pattern is None:
            return self.template.render(**values)
        return self.pattern.format(**values)  # KeyError on a missing variable, like StrictUndefined


@cache
def variants(name: str) -> tuple[Variant, ...]:
    """A variant file: one template per line; blank lines and `{#` comment lines skipped."""
    lines = (TEMPLATES_DIR / name).read_text(encoding="utf-8").splitlines()
    return tuple(Variant(line) for line in lines if line.strip() and not line.startswith("{#"))


def nfc(text: str) -> str:
    """Qwen's tokenizer normalises to NFC; emitting NFC keeps counts and text in agreement."""
    return unicodedata.normalize("NFC", text)


def fact_year(fact: Fact) -> int:
    """The latest year a fact's sentence states (0 if none): no document may predate it. A
    former fact's `until` is not stated: its record was written while the fact held."""
    return max((v for k, v in fact.attributes.items() if k in ("year", "since")), default=0)


def _pick(key: str, n: int) -> int:
    """A stable choice in range(n) for a key: the same world always says a fact the same way."""
    return zlib.crc32(key.encode()) % n


@dataclass(frozen=True)
class Document:
    """One document. `sentences` carry a leading space; `footer` ends in '\\n\\n'.

    Instances are never changed in place: `with_facts` and `with_sentence` return new ones,
    so corpus documents can be shared by every context of a world.
    """

    doc_id: str
    entity: str
    genre: str
    header: str  # " Title\nIntro. Dateline." (the `[doc_id]` goes in front)
    footer: str
    year: int  # the date the document states (no fact in it is newer)
    facts: tuple[str, ...] = ()  # fact id per sentence
    sentences: tuple[str, ...] = ()

    @cached_property
    def body(self) -> str:
        return "".join((self.header, *self.sentences, self.footer))

    @property
    def id_unit(self) -> str:
        return f"[{self.doc_id}]"

    @property
    def text(self) -> str:
        """The document as it appears in the context (without the separating blank line)."""
        return (self.id_unit + self.body)[:-2]

    def with_id(self, doc_id: str) -> "Document":
        """The same document under another id. A plain copy, not `replace`: it shares whatever
        was cached about the body (text, token count), as the id is not part of it."""
        doc = object.__new__(Document)
        doc.__dict__.update(self.__dict__, doc_id=doc_id)
        return doc

    def with_facts(self, keep: list[int]) -> "Document":
        """Only the sentences at positions `keep`, in that order."""
        return replace(
            self, facts=tuple(self.facts[i] for i in keep), sentences=tuple(self.sentences[i] for i in keep)
        )

    @property
    def frame_sentences(self) -> frozenset[str]:
        """Its title, intro, dateline and footer sentences, split as the audit's repeat check splits."""
        return frozenset(sentences(self.header + self.footer))

    def with_frame(self, header: str, footer: str) -> "Document":
        return replace(self, header=header, footer=footer)

    def with_sentence(self, position: int, fact_id: str, sentence: str, insert: bool = False) -> "Document":
        """Replace (or insert before) the sentence at `position`."""
        end = position if insert else position + 1
        return replace(
            self,
            facts=(*self.facts[:position], fact_id, *self.facts[end:]),
            sentences=(*self.sentences[:position], sentence, *self.sentences[end:]),
        )


class Renderer:
    """Renders one world's facts and corpus documents in its language; caches both."""

    def __init__(self, graph: WorldGraph):
        self.graph = graph
        self.language = graph.world.language
        self.words = lexicon(self.language)
        self._seed = graph.world.seed
        self._sentences: dict[tuple[str, int], str] = {}
        self._own_sentences: dict[str, str] = {}
        self._corpus: dict[str, Document] = {}
        self._frames: dict[tuple[str, int, int], list[tuple[str, str]]] = {}

    def fact_templates(self, relation: str) -> tuple[Variant, ...]:
        return variants(f"{self.language}/facts/{relation}.jinja")

    def n_variants(self, relation: str) -> int:
        return len(self.fact_templates(relation))

    def own_variant(self, fact: Fact) -> int:
        """The paraphrase this world uses for `fact` in its corpus."""
        return _pick(f"{self._seed}:{fact.id}", self.n_variants(fact.relation))

    def own_sentence(self, fact: Fact) -> str:
        """The fact as its corpus states it, with the leading space. Cached: every document
        and context stating the fact asks again (and shares one string, hashed once)."""
        text = self._own_sentences.get(fact.id)
        if text is None:
            text = self._own_sentences[fact.id] = " " + self.sentence(fact, self.own_variant(fact))
        return text

    def sentence(self, fact: Fact, variant: int) -> str:
        """The fact as one sentence (no leading space), paraphrase number `variant`."""
        key = (fact.id, variant)
        text = self._sentences.get(key)
        if text is None:
            text = self._sentences[key] = self._render_sentence(fact, variant)
        return text

    def _render_sentence(self, fact: Fact, variant: int) -> str:
        values = dict(fact.attributes)
        if "role" in values:
            values["role"] = self.words["roles"][values["role"]]
        head, tail = self.graph.entities[fact.head], self.graph.entities[fact.tail]
        template = self.fact_templates(fact.relation)[variant]
        return nfc(template.render(head=head.name, tail=tail.name, **values))

    def kind_word(self, entity: Entity) -> str:
        # Regions are the places that lie in no other place; their kinds have their own list.
        if entity.type == "place" and not self.graph.outgoing(entity.id):
            return self.words["region_kinds"][entity.kind % len(self.words["region_kinds"])]
        return kind_word(self.words, entity.type, entity.kind)

    def document(self, entity: str) -> Document:
        """The corpus document about `entity` (no doc id yet); built once per world."""
        doc = self._corpus.get(entity)
        if doc is None:
            doc = self._corpus[entity] = self._build_document(entity)
        return doc

    def _build_document(self, entity: str) -> Document:
        focus = self.graph.entities[entity]
        key = f"{self._seed}:{entity}"  # every choice below is a stable hash of (world, entity)
        own = self.graph.outgoing(entity)
        others = sorted(
            (f for f in self.graph.facts_of(entity) if f.head != entity),
            key=lambda f: _pick(f"{key}:{f.id}", 1 << 30),
        )
        facts = own + others[: max(0, MAX_FACTS_PER_DOCUMENT - len(own))]
        facts.sort(key=lambda f: _pick(f"{key}:order:{f.id}", 1 << 30))
        newest = max([focus.year, *(v for f in facts for k, v in f.attributes.items() if k in _YEARS)])
        year = min(LAST_YEAR, newest + _pick(f"{key}:year", 4))
        return self.dated_document(entity, facts, year, key)

    def frames(self, doc: Document, n: int = 4) -> list[tuple[str, str]]:
        """Other (header, footer) pairs for `doc`: different title, intro, dateline and footer
        sentences, same entity and date. The sizer swaps them to land on exact lengths; cached,
        as every context of the world may ask for them."""
        key = (doc.entity, doc.year, n)
        if key not in self._frames:
            self._frames[key] = [self._frame(doc.entity, doc.year, k) for k in range(n)]
        return self._frames[key]

    def _frame(self, entity: str, year: int, k: int) -> tuple[str, str]:
        other = self.dated_document(entity, [], year, f"{self._seed}:{entity}:frame{k}")
        return other.header, other.footer

    def dated_document(
        self, entity: str, facts: list[Fact], year: int, key: str, unlike: frozenset[str] = frozenset()
    ) -> Document:
        """A document about `entity` stating `facts` (in order), dated `year`; `key` seeds
        the choice of genre and frame sentences, none of which is one of `unlike` while a
        variant allows (two records of one person in one context must not share a title)."""
        focus = self.graph.entities[entity]
        genres = GENRES[focus.type]
        genre = genres[_pick(key, len(genres))]
        values = {"name": focus.name, "kind": self.kind_word(focus), "year": focus.year}
        titles, intros, footers, datelines = _document_templates(self.language, genre)
        title = _choose_new(titles, f"{key}:title", values, unlike)
        intro = _choose_new(intros, f"{key}:intro", values, unlike)
        footer = _choose_new(footers, f"{key}:footer", values, unlike)
        dateline = _choose(datelines, f"{key}:date").render(name=focus.name, year=year)
        return Document(
            doc_id="",
            entity=entity,
            genre=genre,
            header=nfc(f" {title}\n{intro} {dateline}"),
            footer=nfc(f" {footer}\n\n"),
            year=year,
            facts=tuple(f.id for f in facts),
            sentences=tuple(self.own_sentence(f) for f in facts),
        )


@cache
def _document_templates(language: str, genre: str) -> tuple[tuple[Variant, ...], ...]:
    """Title, intro, footer and dateline variants of a genre."""
    folder = f"{language}/documents"
    return tuple(variants(f"{folder}/{genre}/{part}.jinja") for part in ("title", "intro", "footer")) + (
        variants(f"{folder}/dateline.jinja"),
    )


def _choose(options, key: str):
    return options[_pick(key, len(options))]


def _choose_new(options: tuple[Variant, ...], key: str, values: dict, unlike: frozenset[str]) -> str:
    """The variant `key` picks, rendered, or the next one whose sentences are none of `unlike`."""
    start = _pick(key, len(options))
    for k in range(len(options)):
        text = options[(start + k) % len(options)].render(**values)
        if not unlike or unlike.isdisjoint(sentences(text)):  # most documents have no twin
            return text
    return options[start].render(**values)  # every variant is taken: the picked one
