"""The fact world's data model: entities, typed relations and facts.

A world is plain data (pydantic models) so it serialises to JSON, validates against
`schemas/world.schema.json` and can be rebuilt into a graph by `world.graph`. The relation
table below is the single source of which relations exist, which entity types they connect
and which attributes each fact carries.
"""

from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from longblocks.gcpause import cyclic_gc_paused

EntityType = Literal["person", "organisation", "place", "artifact", "event"]
ENTITY_TYPES: tuple[EntityType, ...] = ("person", "organisation", "place", "artifact", "event")


@dataclass(frozen=True)
class RelationSpec:
    """A typed relation head → tail; functional: every head has at most one tail."""

    name: str
    head: EntityType
    tail: EntityType
    attributes: tuple[str, ...]
    family: str  # family, employment, location, ownership, membership, creation, event
    symmetric: bool = False  # read both ways ("A is married to B" names B's spouse too)
    # The tail can change over time: a world may also hold *former* facts of this relation,
    # with an extra `until` year. Former facts are history, never part of the current graph.
    history: bool = False


RELATIONS: dict[str, RelationSpec] = {
    spec.name: spec
    for spec in (
        RelationSpec("born_in", "person", "place", ("year",), "location"),
        RelationSpec("lives_in", "person", "place", ("since",), "location", history=True),
        RelationSpec("works_for", "person", "organisation", ("role", "since"), "employment", history=True),
        RelationSpec("married_to", "person", "person", ("year",), "family", symmetric=True),
        RelationSpec("child_of", "person", "person", (), "family"),
        RelationSpec("mentored_by", "person", "person", ("since",), "employment"),
        RelationSpec("member_of", "person", "organisation", ("since",), "membership"),
        RelationSpec("headquartered_in", "organisation", "place", ("since",), "location", history=True),
        RelationSpec("founded_by", "organisation", "person", ("year",), "creation"),
        RelationSpec("subsidiary_of", "organisation", "organisation", ("year", "stake"), "ownership"),
        RelationSpec("located_in", "place", "place", (), "location"),
        RelationSpec("created_by", "artifact", "person", ("year",), "creation"),
        RelationSpec("owned_by", "artifact", "person", ("since", "price"), "ownership"),
        RelationSpec("held_in", "event", "place", ("year", "attendees"), "event"),
        RelationSpec("organised_by", "event", "organisation", ("year",), "event"),
    )
}


class _Trusted(BaseModel):
    """A model that can also be made from values this package produced itself."""

    @classmethod
    def trusted(cls, **values: Any) -> Self:
        """`model_construct` with every field given: no alias or default handling, ~5x
        faster. A world makes ~10^4 entities and facts, so this is its largest cost after
        the RNG draws."""
        model = cls.__new__(cls)
        object.__setattr__(model, "__dict__", values)
        object.__setattr__(model, "__pydantic_fields_set__", set(values))
        object.__setattr__(model, "__pydantic_extra__", None)
        object.__setattr__(model, "__pydantic_private__", None)
        return model


class Entity(_Trusted):
    """A fictional entity. `kind` is a lexicon key index (language-neutral), `year` the
    year that anchors it (birth, founding, creation, event; for places a record year)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="World-unique id, e.g. 'person:17'.")
    type: EntityType
    name: str = Field(description="World-unique display name.")
    kind: int = Field(ge=0, description="Index into the lexicon list for this entity type.")
    year: int
    aliases: list[str] = Field(default_factory=list, description="Other accepted answer forms.")


class Fact(_Trusted):
    """One relation instance head → tail with its attributes (years, quantities, role index)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="World-unique id, e.g. 'f42'.")
    relation: str
    head: str
    tail: str
    attributes: dict[str, int] = Field(default_factory=dict)


class World(_Trusted):
    """A seeded world: entities and facts, plus what is needed to rebuild it exactly."""

    model_config = ConfigDict(extra="forbid")

    id: str
    seed: int
    language: str
    entities: list[Entity]
    facts: list[Fact]

    def __reduce__(self):
        # Worlds travel from worker processes to the parent as JSON: pydantic's Rust parser
        # rebuilds them several times faster than unpickling ~10^4 models one by one.
        return _world_from_json, (self.model_dump_json(),)


def _world_from_json(text: str) -> World:
    with cyclic_gc_paused():  # the parent holds every world: full collections would re-scan them
        return World.model_validate_json(text)
