"""Facts → documents: one sentence per fact, wrapped in a genre (biography, report, ...).

A document is built around one focus entity and holds facts about it. Its text is made of
units whose token counts add up exactly (see `render.context`): a header
`[D1234] Title\\nIntro sentence.`, then one ` Sentence.` per fact, then ` Footer.\\n\\n`.
Every sentence ends with a period and every following unit starts with a space and a
letter, so the BPE pre-tokenizer never merges across unit boundaries.
"""

import random
import unicodedata
from dataclasses import dataclass, field
from functools import cache

from jinja2 import Template

from longblocks.render.env import TEMPLATES_DIR, environment
from longblocks.world.entities import KIND_LISTS, lexicon
from longblocks.world.graph import WorldGraph
from longblocks.world.schema import Entity, EntityType, Fact

GENRES: dict[EntityType, tuple[str, ...]] = {
    "person": ("biography", "letter"),
    "organisation": ("company_report",),
    "event": ("news_item",),
    "place": ("registry_entry",),
    "artifact": ("registry_entry",),
}
MAX_FACTS_PER_DOCUMENT = 8


@cache
def variants(name: str) -> tuple[Template, ...]:
    """A variant file: one template per line; blank lines and `{#` comment lines skipped."""
    path = TEMPLATES_DIR / name
    lines = path.read_text(encoding="utf-8").splitlines()
    env = environment()
    return tuple(env.from_string(line) for line in lines if line.strip() and not line.startswith("{#"))


def nfc(text: str) -> str:
    """Qwen's tokenizer normalises to NFC; emitting NFC keeps counts and text in agreement."""
    return unicodedata.normalize("NFC", text)


@dataclass
class Document:
    """One document of a context. Sentences carry a leading space; `footer` ends in '\\n\\n'."""

    doc_id: str
    entity: str
    genre: str
    header: str
    footer: str
    facts: list[str] = field(default_factory=list)  # fact id per sentence
    sentences: list[str] = field(default_factory=list)

    def units(self) -> list[str]:
        return [self.header, *self.sentences, self.footer]

    @property
    def text(self) -> str:
        """The document as it appears in the context (without the separating blank line)."""
        return "".join(self.units())[:-2]


class Renderer:
    """Renders one world's facts and document frames in its language; caches sentences."""

    def __init__(self, graph: WorldGraph):
        self.graph = graph
        self.language = graph.world.language
        self.words = lexicon(self.language)
        self._sentences: dict[tuple[str, int], str] = {}

    def n_variants(self, relation: str) -> int:
        return len(variants(f"{self.language}/facts/{relation}.jinja"))

    def sentence(self, fact: Fact, variant: int) -> str:
        """The fact as one sentence (no leading space), paraphrase number `variant`."""
        key = (fact.id, variant)
        if key not in self._sentences:
            template = variants(f"{self.language}/facts/{fact.relation}.jinja")[variant]
            values = dict(fact.attributes)
            if "role" in values:
                values["role"] = self.words["roles"][values["role"]]
            head, tail = self.graph.entities[fact.head], self.graph.entities[fact.tail]
            self._sentences[key] = nfc(template.render(head=head.name, tail=tail.name, **values))
        return self._sentences[key]

    def kind_word(self, entity: Entity) -> str:
        if entity.type == "place" and self.graph.outgoing(entity.id) == []:
            return self.words["region_kinds"][entity.kind % len(self.words["region_kinds"])]
        return self.words[KIND_LISTS[entity.type]][entity.kind]

    def frame(self, entity: Entity, genre: str, doc_id: str, rng: random.Random) -> tuple[str, str]:
        """Header `[doc_id] Title\\nIntro.` and footer ` Footer.\\n\\n` for a document."""
        values = {"name": entity.name, "kind": self.kind_word(entity), "year": entity.year}
        folder = f"{self.language}/documents/{genre}"
        title = rng.choice(variants(f"{folder}/title.jinja")).render(**values)
        intro = rng.choice(variants(f"{folder}/intro.jinja")).render(**values)
        footer = rng.choice(variants(f"{folder}/footer.jinja")).render(**values)
        return nfc(f"[{doc_id}] {title}\n{intro}"), nfc(f" {footer}\n\n")

    def document_facts(self, entity: str, rng: random.Random, excluded: set[str]) -> list[Fact]:
        """The facts a document about `entity` states: its own first, then some that name it."""
        own = [f for f in self.graph.outgoing(entity) if f.id not in excluded]
        others = [f for f in self.graph.facts_of(entity) if f.head != entity and f.id not in excluded]
        room = max(0, MAX_FACTS_PER_DOCUMENT - len(own))
        picked = own + (rng.sample(others, room) if len(others) > room else others)
        rng.shuffle(picked)
        return picked

    def document(self, entity: str, doc_id: str, facts: list[Fact], rng: random.Random) -> Document:
        """A document about `entity` stating `facts` in order, paraphrases drawn from `rng`."""
        focus = self.graph.entities[entity]
        genre = rng.choice(GENRES[focus.type])
        header, footer = self.frame(focus, genre, doc_id, rng)
        doc = Document(doc_id=doc_id, entity=entity, genre=genre, header=header, footer=footer)
        for fact in facts:
            doc.facts.append(fact.id)
            doc.sentences.append(" " + self.sentence(fact, rng.randrange(self.n_variants(fact.relation))))
        return doc
