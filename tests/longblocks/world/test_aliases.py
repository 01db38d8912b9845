from collections import Counter

import pytest

from longblocks.rewards import normalize
from longblocks.world.aliases import organisation_aliases, person_aliases, with_aliases
from longblocks.world.graph import WorldSize, build_world
from longblocks.world.schema import Entity


def test_person_forms():
    assert person_aliases("Mara Quill", frozenset({"Mara"})) == ["M. Quill"]
    assert person_aliases("Ana Beatriz Souza", frozenset({"Ana", "Ana Beatriz"})) == [
        "A. Souza", "Ana Souza", "Ana B. Souza", "A. B. Souza",
    ]  # fmt: skip
    assert person_aliases("Stephany da Costa", frozenset({"Stephany"})) == ["S. da Costa"]


def test_organisation_short_form():
    assert organisation_aliases("Quill Trading House", ("{stem} Works", "{stem} Trading House")) == ["Quill"]
    assert organisation_aliases("Quill & Sons", ("{stem} & Sons",)) == ["Quill"]
    assert organisation_aliases("Brauerei Quill", ("{stem} Bräu", "Brauerei {stem}")) == ["Quill"]
    assert organisation_aliases("Quillford", ("{stem} Works",)) == []


def _entity(i, type_, name):
    return Entity.trusted(id=f"{type_}:{i}", type=type_, name=name, kind=0, year=1950, aliases=[])


def test_only_aliases_unique_in_the_world_are_kept():
    entities = [
        _entity(0, "person", "Mara Quill"),
        _entity(1, "person", "Mark Quill"),  # 'M. Quill' twice: neither keeps it
        _entity(2, "person", "Ben Ode"),
        _entity(3, "organisation", "Ode Works"),  # 'Ode' is a word of Ben Ode's name
        _entity(4, "organisation", "Lind Works"),
        _entity(5, "place", "Lindford"),
    ]
    aliases = {e.name: e.aliases for e in with_aliases(entities, "en")}
    assert aliases == {
        "Mara Quill": [], "Mark Quill": [], "Ben Ode": ["B. Ode"], "Ode Works": [], "Lind Works": ["Lind"],
        "Lindford": [],
    }  # fmt: skip


@pytest.mark.parametrize("language", ["en", "pt", "de"])
def test_generated_worlds_give_unique_aliases(language):
    world = build_world("w", 3, language, WorldSize(people=400))
    forms = Counter(normalize(n) for e in world.entities for n in (e.name, *e.aliases))
    assert max(forms.values()) == 1  # every name and alias names one entity
    people = [e for e in world.entities if e.type == "person"]
    assert sum(bool(e.aliases) for e in people) > len(people) / 3
    assert all(not e.aliases for e in world.entities if e.type in ("place", "artifact", "event"))
