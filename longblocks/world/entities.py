"""Seeded, locale-aware fictional names for every entity type.

Person names come from faker's per-locale name lists, drawn with our own seeded RNG (fast,
and stable for a given faker release). Places, organisations, artifacts and events are built
from a surname plus words from the language's lexicon (`templates/<lang>/lexicon.yaml`), so
none of them is a real place or company the model could know from pre-training.
"""

import importlib
import random
from functools import cache

import yaml

from longblocks.render.env import TEMPLATES_DIR
from longblocks.world.schema import EntityType

LOCALES = {"en": "en_US", "pt": "pt_BR", "de": "de_DE"}

# Which lexicon list names the `kind` of each entity type. Clubs are organisations too: their
# kind indexes `club_kinds` after an offset of len(organisation_kinds) (see `kind_word`).
KIND_LISTS: dict[EntityType, str] = {
    "person": "occupations",
    "organisation": "organisation_kinds",
    "place": "place_kinds",
    "artifact": "artifact_kinds",
    "event": "event_kinds",
}


@cache
def lexicon(language: str) -> dict:
    """The word lists of one language, aligned by index across languages."""
    path = TEMPLATES_DIR / language / "lexicon.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@cache
def _person_names(language: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """faker's first and last names for the locale, minus abbreviations like 'Hans-J.'
    (a dot inside a name would break one-sentence-per-fact)."""
    provider = importlib.import_module(f"faker.providers.person.{LOCALES[language]}").Provider
    first = sorted(n for n in provider.first_names if "." not in n and "'" not in n)
    last = sorted(n for n in provider.last_names if "." not in n and "'" not in n)
    return tuple(first), tuple(last)


def kind_word(words: dict, type_: EntityType, kind: int) -> str:
    """The lexicon word for an entity's kind; organisation kinds past the company kinds are
    club kinds."""
    if type_ == "organisation" and kind >= len(words["organisation_kinds"]):
        return words["club_kinds"][kind - len(words["organisation_kinds"])]
    return words[KIND_LISTS[type_]][kind]


def is_club_kind(words: dict, kind: int) -> bool:
    return kind >= len(words["organisation_kinds"])


def _attach(stem: str, suffix: str) -> str:
    """'Quill' + '-ford' -> 'Quillford'; 'Quill' + ' Vale' -> 'Quill Vale'."""
    return stem + suffix[1:] if suffix.startswith("-") else stem + suffix


class NameMaker:
    """Draws world-unique names; every call consumes the given RNG deterministically."""

    def __init__(self, language: str, rng: random.Random):
        self.rng = rng
        self.words = lexicon(language)
        self.first_names, self.last_names = _person_names(language)
        # Place, organisation and event names start with a surname: it must be capitalised
        # ('da Costa' is fine inside a person's name, not at the start of a sentence).
        self.stems = tuple(n for n in self.last_names if n[0].isupper())
        self.taken: set[str] = set()

    def _unique(self, draw) -> str:
        for _ in range(1000):
            name = draw()
            if name not in self.taken:
                self.taken.add(name)
                return name
        raise RuntimeError("name space exhausted; the world is too large for this locale")

    def _surname(self) -> str:
        return self.rng.choice(self.stems)

    def person(self) -> str:
        return self._unique(lambda: f"{self.rng.choice(self.first_names)} {self.rng.choice(self.last_names)}")

    def organisation(self, kind: int) -> str:
        """A name that says what the organisation is: a brewery is "Quill Brewery", a club
        "Quill Rowing Club"; `kind` as in `kind_word`."""
        companies = len(self.words["organisation_kinds"])
        patterns = (
            self.words["club_names"][kind - companies]
            if kind >= companies
            else self.words["organisation_names"][kind]
        )
        return self._unique(lambda: self.rng.choice(patterns).format(stem=self._surname()))

    def town(self) -> str:
        suffixes = self.words["name_parts"]["place_suffixes"]
        return self._unique(lambda: _attach(self._surname(), self.rng.choice(suffixes)))

    def region(self) -> str:
        suffixes = self.words["name_parts"]["region_suffixes"]
        return self._unique(lambda: _attach(self._surname(), self.rng.choice(suffixes)))

    def artifact(self) -> str:
        parts = self.words["name_parts"]

        def draw() -> str:
            base = (
                f"{self.rng.choice(parts['artifact_adjectives'])} {self.rng.choice(parts['artifact_nouns'])}"
            )
            # Roman numerals keep names unique in large worlds without inventing words.
            return base if self.rng.random() < 0.5 else f"{base} {self.rng.choice(_ROMAN)}"

        return self._unique(draw)

    def event(self, kind_word: str, year: int) -> str:
        return self._unique(lambda: f"{self._surname()} {kind_word.title()} {year}")


_ROMAN = ("II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII")
