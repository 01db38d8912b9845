"""Building a seeded world and querying it as a typed multigraph.

`build_world` draws entities and functional relations (every head has at most one tail per
relation; symmetric relations at most one partner) so that following a relation chain from an
entity reaches exactly one entity. `WorldGraph` indexes the world as a typed multigraph (one
edge per current fact) and answers the questions the tasks ask: where does a chain lead, are
two entities linked by a single fact, which facts surround an entity.
"""

import bisect
import random
from collections import defaultdict
from dataclasses import dataclass

from longblocks.world.aliases import with_aliases
from longblocks.world.entities import KIND_LISTS, NameMaker, lexicon
from longblocks.world.schema import RELATIONS, Entity, EntityType, Fact, World

LAST_YEAR = 2025  # no fact of a world happens after this


@dataclass(frozen=True)
class WorldSize:
    """How many entities of each type a world holds; scaled from the number of people."""

    people: int

    @classmethod
    def for_length(cls, max_tokens: int) -> "WorldSize":
        # A person's document holds ~6 facts of ~15 tokens: 1 person per 48 tokens leaves about
        # twice one context's worth of distinct documents to draw distractors from.
        return cls(people=max(60, max_tokens // 48))

    def count(self, kind: str) -> int:
        # The floors keep every fine type (town, region, company, club, ...) at 10 or more, so a
        # question's answer is one of many candidates of its type even in a small world.
        per_person, floor = _PER_PERSON[kind]
        return max(floor, self.people // per_person)


# kind -> (people per entity of that kind, minimum count); towns outnumber regions 2:1 or more
_PER_PERSON = {
    "region": (60, 10),
    "town": (12, 24),
    "company": (8, 12),
    "club": (20, 10),
    "artifact": (5, 12),
    "event": (8, 12),
}


def build_world(world_id: str, seed: int, language: str, size: WorldSize) -> World:
    """A deterministic world for (seed, language, size); `world_id` only labels it."""
    rng = random.Random(f"world:{seed}")
    names = NameMaker(language, rng)
    words = lexicon(language)
    entities: list[Entity] = []
    facts: list[Fact] = []

    def add_entity(type_: EntityType, name: str, kind: int, year: int) -> Entity:
        # trusted: these values are made here, not read from outside; skip validation.
        entity = Entity.trusted(
            id=f"{type_}:{len(entities)}", type=type_, name=name, kind=kind, year=year, aliases=[]
        )
        entities.append(entity)
        return entity

    def add_fact(relation: str, head: Entity, tail: Entity, **attributes: int) -> None:
        facts.append(
            Fact.trusted(
                id=f"f{len(facts)}", relation=relation, head=head.id, tail=tail.id, attributes=attributes
            )
        )

    def kind_index(type_: EntityType) -> int:
        return rng.randrange(len(words[KIND_LISTS[type_]]))

    def organisation(year: int, club: bool) -> Entity:
        kind = kind_index("organisation")
        if club:  # club kinds follow the company kinds (entities.kind_word)
            kind = len(words["organisation_kinds"]) + rng.randrange(len(words["club_kinds"]))
        return add_entity("organisation", names.organisation(kind), kind, year)

    n_regions = size.count("region")
    regions = [
        add_entity(
            "place", names.region(), rng.randrange(len(words["region_kinds"])), rng.randint(1700, 1900)
        )
        for _ in range(n_regions)
    ]
    towns = [
        add_entity("place", names.town(), kind_index("place"), rng.randint(1700, 1950))
        for _ in range(size.count("town"))
    ]
    people = [
        add_entity("person", names.person(), kind_index("person"), rng.randint(1900, 2000))
        for _ in range(size.people)
    ]
    companies = [organisation(rng.randint(1880, 2005), club=False) for _ in range(size.count("company"))]
    clubs = [organisation(rng.randint(1850, 1995), club=True) for _ in range(size.count("club"))]
    artifacts = [
        add_entity("artifact", names.artifact(), kind_index("artifact"), rng.randint(1930, 2020))
        for _ in range(size.count("artifact"))
    ]
    events = []
    for _ in range(size.count("event")):
        kind = kind_index("event")
        year = rng.randint(1950, 2024)
        events.append(add_entity("event", names.event(words["event_kinds"][kind], year), kind, year))

    for town in towns:
        add_fact("located_in", town, rng.choice(regions))
    _person_facts(rng, people, towns, companies, clubs, len(words["roles"]), add_fact)
    born_by = _ByYear(people)
    for i, org in enumerate(companies + clubs):
        add_fact("headquartered_in", org, rng.choice(towns), since=_year(org.year + rng.randint(0, 10)))
        founders = born_by.between(org.year - 60, org.year - 25)  # founders aged 25 to 60
        if founders and rng.random() < 0.8:
            add_fact("founded_by", org, rng.choice(founders), year=org.year)
        if i > 0 and i < len(companies) and rng.random() < 0.3:
            # Only earlier companies can own later ones: the ownership graph stays acyclic.
            owner = companies[rng.randrange(i)]
            year = _year(org.year + rng.randint(1, 30), owner.year)
            add_fact("subsidiary_of", org, owner, year=year, stake=rng.randint(51, 100))
    for artifact in artifacts:
        makers = born_by.between(artifact.year - 80, artifact.year - 18)
        if makers and rng.random() < 0.9:
            add_fact("created_by", artifact, rng.choice(makers), year=artifact.year)
        owner = rng.choice(people)
        since = _draw_year(rng, max(artifact.year, owner.year + 18), max(artifact.year, owner.year + 18) + 50)
        if since is not None and rng.random() < 0.75:
            add_fact("owned_by", artifact, owner, since=since, price=rng.randint(2, 900) * 100)
    organisations = sorted(companies + clubs, key=lambda o: (o.year, o.id))
    for event in events:
        add_fact("held_in", event, rng.choice(towns), year=event.year, attendees=rng.randint(20, 5000) * 10)
        hosts = [o for o in organisations if o.year <= event.year]
        if hosts and rng.random() < 0.9:
            add_fact("organised_by", event, rng.choice(hosts), year=event.year)
    pools = {"lives_in": towns, "headquartered_in": towns, "works_for": companies}
    _former_facts(rng, facts, entities, pools, add_fact)
    entities = with_aliases(entities, language)  # needs every name: unique in the world
    return World.trusted(id=world_id, seed=seed, language=language, entities=entities, facts=facts)


def _year(*earliest: int) -> int:
    """A plausible year: after every event it depends on, never after the present."""
    return min(LAST_YEAR, max(earliest))


def _draw_year(rng: random.Random, low: int, high: int) -> int | None:
    """A year in [low, high] that is not in the future, or None when none is (a fact that
    would have to happen after the present is left out rather than piled onto LAST_YEAR)."""
    high = min(high, LAST_YEAR)
    return rng.randint(low, high) if low <= high else None


class _ByYear:
    """Entities sorted by their year (birth, founding): a world's dates must be possible."""

    def __init__(self, entities: list[Entity]):
        self.entities = sorted(entities, key=lambda e: (e.year, e.id))
        self.years = [e.year for e in self.entities]

    def before(self, year: int) -> list[Entity]:
        """Those whose year is before `year` (an organisation someone can join in `year`)."""
        return self.entities[: bisect.bisect_left(self.years, year)]

    def between(self, first: int, last: int) -> list[Entity]:
        """Those whose year is in [first, last] (people of a given age at some date)."""
        return self.entities[bisect.bisect_left(self.years, first) : bisect.bisect_right(self.years, last)]


def _person_facts(rng, people, towns, companies, clubs, n_roles, add_fact) -> None:
    """Family, location, employment and membership facts; every relation stays functional.

    Dates are drawn first and partners second: an employer or club is one founded before the
    person joined it, a spouse is close in age, so dates read as a life would.
    """
    employers, societies = _ByYear(companies), _ByYear(clubs)
    for person in people:
        if rng.random() < 0.9:
            add_fact("born_in", person, rng.choice(towns), year=person.year)
        since = _draw_year(rng, person.year + 18, person.year + 40)
        if since is not None and rng.random() < 0.85:
            add_fact("lives_in", person, rng.choice(towns), since=since)
        since = _draw_year(rng, person.year + 20, person.year + 45)
        open_companies = employers.before(since) if since is not None else []
        if open_companies and rng.random() < 0.8:
            company = rng.choice(open_companies)
            add_fact("works_for", person, company, role=rng.randrange(n_roles), since=since)
        since = _draw_year(rng, person.year + 16, person.year + 50)
        open_clubs = societies.before(since) if since is not None else []
        if open_clubs and rng.random() < 0.4:
            add_fact("member_of", person, rng.choice(open_clubs), since=since)
    # Spouses are neighbours in birth order (a shuffled window keeps pairs varied), and marry
    # at 20 to 35: nobody weds at 70 a partner forty years younger.
    by_birth = sorted(people, key=lambda p: (p.year + rng.randint(0, 6), p.id))
    for a, b in zip(by_birth[0::2], by_birth[1::2], strict=False):
        year = _draw_year(rng, max(a.year, b.year) + 20, min(a.year, b.year) + 35)
        if year is not None and rng.random() < 0.45:
            add_fact("married_to", a, b, year=year)
    by_age = sorted(people, key=lambda p: (p.year, p.id))
    years = [p.year for p in by_age]
    for i, person in enumerate(by_age):
        # Parents are 18 to 45 years older (bisect: worlds are large).
        end = min(max(0, i - 1), bisect.bisect_right(years, person.year - 18))
        elders = by_age[bisect.bisect_left(years, person.year - 45) : end]
        if elders and rng.random() < 0.5:
            add_fact("child_of", person, rng.choice(elders))
        end = min(i, bisect.bisect_right(years, person.year - 5))
        seniors = by_age[max(0, end - 60) : end]
        since = _draw_year(rng, person.year + 18, person.year + 30)
        if seniors and since is not None and rng.random() < 0.4:
            add_fact("mentored_by", person, rng.choice(seniors), since=since)


def _former_facts(rng, facts, entities, pools: dict[str, list[Entity]], add_fact) -> None:
    """History: some current facts of changeable relations get a predecessor that ended
    (`until`) the year the current one began, e.g. an earlier residence or employer. The former
    tail is of the current one's kind (a town for a town, a company founded by then for an
    employer), and a person's history starts at 16 at the earliest."""
    by_id = {e.id: e for e in entities}
    for fact in list(facts):
        spec = RELATIONS[fact.relation]
        if not spec.history or rng.random() >= 0.3:
            continue
        since = fact.attributes["since"]
        start = since - rng.randint(3, 15)
        head = by_id[fact.head]
        previous = rng.choice(pools[fact.relation])
        adult = head.year + (16 if head.type == "person" else 0)
        if previous.id == fact.tail or start <= adult or previous.year >= start:
            continue
        attributes = {**fact.attributes, "since": start, "until": since}
        if "role" in attributes:
            attributes["role"] = rng.randrange(attributes["role"] + 1)
        add_fact(fact.relation, head, previous, **attributes)


def is_former(fact: Fact) -> bool:
    return "until" in fact.attributes


class WorldGraph:
    """A World as a typed multigraph (one edge per current fact) with the queries tasks need.

    Plain dict and set indexes, built in one pass: every query is a lookup, and a world is
    built once per few examples, so building the index must be cheap too.
    """

    def __init__(self, world: World):
        self.world = world
        self.entities = {e.id: e for e in world.entities}
        self.facts = {f.id: f for f in world.facts}
        self._facts_by_entity: dict[str, list[Fact]] = defaultdict(list)
        self._outgoing: dict[str, list[Fact]] = defaultdict(list)
        self._steps: dict[tuple[str, str], set[str]] = defaultdict(set)  # (entity, relation) -> reached
        self._edges: set[tuple[str, str]] = set()  # (head, tail) of every current fact
        self._neighbours: dict[str, set[str]] = defaultdict(set)
        self.former: dict[str, list[Fact]] = defaultdict(list)  # head -> facts that ended
        self._heads: dict[str, set[str]] = defaultdict(set)  # relation -> heads, former facts too
        self._tails: dict[str, set[str]] = defaultdict(set)  # relation -> entities it leads to
        self._company_kinds = len(lexicon(world.language)["organisation_kinds"])
        for fact in world.facts:
            self._heads[fact.relation].add(fact.head)
            if is_former(fact):
                self.former[fact.head].append(fact)
            else:
                self._index(fact)

    def _index(self, fact: Fact) -> None:
        head, tail = fact.head, fact.tail  # never equal: build_world makes no self-loops
        self._facts_by_entity[head].append(fact)
        self._facts_by_entity[tail].append(fact)
        self._outgoing[head].append(fact)
        self._steps[head, fact.relation].add(tail)
        self._tails[fact.relation].add(tail)
        if RELATIONS[fact.relation].symmetric:
            self._steps[tail, fact.relation].add(head)
            self._tails[fact.relation].add(head)
        self._edges.add((head, tail))
        self._neighbours[head].add(tail)
        self._neighbours[tail].add(head)

    def step(self, entity: str, relation: str) -> set[str]:
        """Every entity that `relation` leads to from `entity` (both ways if symmetric)."""
        return set(self._steps.get((entity, relation), ()))

    def follow(self, start: str, relations: list[str]) -> set[str]:
        """All entities a relation chain reaches from `start`; a well-posed question has one."""
        frontier = {start}
        for relation in relations:
            frontier = {nxt for entity in frontier for nxt in self.step(entity, relation)}
        return frontier

    def linked(self, a: str, b: str) -> bool:
        """True when a single fact (so a single sentence) mentions both entities."""
        return (a, b) in self._edges or (b, a) in self._edges

    def facts_of(self, entity: str) -> list[Fact]:
        """Current facts in which `entity` is head or tail, in world order."""
        return self._facts_by_entity.get(entity, [])

    def outgoing(self, entity: str) -> list[Fact]:
        """Current facts with `entity` as head, in world order."""
        return list(self._outgoing.get(entity, ()))

    def heads(self, relation: str) -> set[str]:
        """Every entity that is the head of a fact of `relation`, current or former."""
        return set(self._heads.get(relation, ()))

    def tails(self, relation: str) -> list[str]:
        """Every entity a current fact of `relation` leads to (either end if symmetric), sorted."""
        return sorted(self._tails.get(relation, ()))

    def fine_type(self, entity: str) -> str:
        """The entity's type, split where one type holds two kinds: a place is a town (it lies
        in a region) or a region, an organisation a company or a club."""
        e = self.entities[entity]
        if e.type == "place":
            return "town" if (entity, "located_in") in self._steps else "region"
        if e.type == "organisation":
            return "club" if e.kind >= self._company_kinds else "company"
        return e.type

    def neighbours(self, entity: str) -> set[str]:
        return set(self._neighbours.get(entity, ()))

    def to_networkx(self):
        """The world as a networkx MultiDiGraph: one node per entity (type, name, kind, year),
        one edge per fact keyed by fact id (relation, attributes, `former` for ended facts).

        For analysis and interchange (PhantomWiki-style tooling); the generator's own queries
        use the indexes above, which answer the same questions without networkx's overhead.
        """
        import networkx as nx  # only here: the generator's hot path does not need it

        graph = nx.MultiDiGraph(world_id=self.world.id, language=self.world.language)
        for entity in self.world.entities:
            graph.add_node(entity.id, type=entity.type, name=entity.name, kind=entity.kind, year=entity.year)
        for fact in self.world.facts:
            graph.add_edge(
                fact.head, fact.tail, key=fact.id, relation=fact.relation, former=is_former(fact),
                **fact.attributes,
            )  # fmt: skip
        return graph
