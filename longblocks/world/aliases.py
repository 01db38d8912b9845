"""Entity aliases: the other forms of a name a reader would accept, where they stay unique.

- a person: the first name's initial with the surname ('Mara Quill' -> 'M. Quill'); with a
  middle name, also the name without it and with its initial ('Ana Beatriz Souza' ->
  'Ana Souza', 'Ana B. Souza', 'A. B. Souza');
- an organisation: its short form, the name without its suffix ('Estes Works' -> 'Estes').

An alias is kept only if it stays unique in the world: no other entity has it as a name or a
candidate alias (normalised as the rewards compare answers), and a short form is no word of
any other entity's name ('Estes' is dropped when a person is called 'John Estes').
"""

from collections import Counter

from longblocks.rewards import normalize
from longblocks.world.entities import _person_names, lexicon
from longblocks.world.schema import Entity


def _initial(word: str) -> str:
    return word[0] + "."


def person_aliases(name: str, first_names: frozenset[str]) -> list[str]:
    """Forms with and without the middle name, and with initials (see the module docstring)."""
    words = name.split()
    # The first name is the longest known prefix: 'Ana Beatriz' is one of pt's first names.
    cut = next((k for k in range(len(words) - 1, 0, -1) if " ".join(words[:k]) in first_names), 1)
    given, surname = words[:cut], " ".join(words[cut:])
    forms = [f"{_initial(given[0])} {surname}"]
    if len(given) > 1:
        forms += [
            f"{given[0]} {surname}",
            f"{given[0]} {' '.join(_initial(w) for w in given[1:])} {surname}",
            f"{' '.join(_initial(w) for w in given)} {surname}",
        ]
    return list(dict.fromkeys(forms))


def organisation_aliases(name: str, patterns: tuple[str, ...]) -> list[str]:
    """The name without what its kind adds ('Quill Holdings' -> 'Quill', 'Brauerei Quill' ->
    'Quill'); `patterns` are the lexicon's name patterns, '{stem}' marking the surname."""
    for pattern in sorted(patterns, key=len, reverse=True):
        before, after = pattern.split("{stem}")
        stem = name[len(before) : len(name) - len(after)]
        if name.startswith(before) and name.endswith(after) and stem and stem != name:
            return [stem]
    return []


def with_aliases(entities: list[Entity], language: str) -> list[Entity]:
    """The entities with every alias that is unique in this world (see the module docstring)."""
    first_names = frozenset(_person_names(language)[0])
    words = lexicon(language)
    patterns = tuple(
        p for kinds in ("organisation_names", "club_names") for forms in words[kinds] for p in forms
    )
    candidates = {
        e.id: person_aliases(e.name, first_names)
        if e.type == "person"
        else organisation_aliases(e.name, patterns)
        if e.type == "organisation"
        else []
        for e in entities
    }
    uses = Counter(normalize(e.name) for e in entities)
    uses.update(normalize(a) for forms in candidates.values() for a in set(forms))
    name_words = Counter(w for e in entities for w in set(normalize(e.name).split()))

    def unique(entity: Entity, alias: str) -> bool:
        key = normalize(alias)
        if uses[key] > 1 or key == normalize(entity.name):
            return False
        # a one-word short form must be no word of another entity's name (its own has it once)
        return len(key.split()) > 1 or name_words[key] <= 1

    return [
        Entity.trusted(**{**e.__dict__, "aliases": [a for a in candidates[e.id] if unique(e, a)]})
        if candidates[e.id]
        else e
        for e in entities
    ]
