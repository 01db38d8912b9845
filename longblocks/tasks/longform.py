"""Long-form reports: a profile or a timeline of one entity, graded by a rubric of atomic facts.

The focus is a person or an organisation; the rubric is the facts that involve it (as head or
tail), one item per fact. A *profile* asks for everything the documents say about the focus,
so every fact about it that is not in the rubric is excluded from the context; a *timeline*
asks for the dated facts (a `year` or `since` attribute) in chronological order
(`verification.ordered`). Each rubric item is a JSON object, one attributed claim:

    {"fact": "f12", "relation": "founded_by", "other": "Mara Quill", "names": ["Mara Quill",
     "M. Quill"], "cues": ["found", "establish", ...], "language": "en", "year": 1987,
     "known": [1951, 1987, 1992]}

A report states the item when one stretch of a sentence names the other entity (`names`: its
name and its aliases of two words or more), a word of the relation (`cues`, from
`templates/<lang>/lexicon.yaml` `relation_cues`) and the year of a dated fact; the focus is
the report's subject. `known` lists every year-like number (1000-2999) the world gives that
other entity (its year, its facts' attributes) plus the focus's own year, so the reward can
tell a misdated fact from another true one (see docs/rewards.md and `longblocks.rewards.rubric`).
Two facts whose other entity and year could not be told apart (one's within the other's)
keep only the first.
"""

import json
import random

from longblocks.render.documents import Renderer, nfc, variants
from longblocks.render.env import render
from longblocks.tasks.base import TaskInstance, TaskParams, register
from longblocks.world.entities import lexicon
from longblocks.world.graph import WorldGraph
from longblocks.world.schema import Fact

FOCUS_TYPES = ("person", "organisation")
VARIANTS = ("profile", "timeline")
DATES = ("year", "since")  # attributes that date a fact; every paraphrase states them
MAX_NEAR = 300


def fact_year(fact: Fact) -> int | None:
    return next((fact.attributes[a] for a in DATES if a in fact.attributes), None)


def rubric_item(graph: WorldGraph, fact: Fact, focus: str) -> dict:
    """The rubric item stating `fact` in a report about `focus` (see the module docstring)."""
    other = graph.entities[fact.tail if fact.head == focus else fact.head]
    year = fact_year(fact)
    known = {other.year, graph.entities[focus].year} | {
        v for f in graph.facts_of(other.id) for k, v in f.attributes.items() if k != "role"
    }
    language = graph.world.language
    return {
        "fact": fact.id,
        "relation": fact.relation,
        "other": other.name,
        # single-word aliases (an organisation's short form) could be part of any name
        "names": [other.name, *(a for a in other.aliases if len(a.split()) > 1)],
        "cues": lexicon(language)["relation_cues"][fact.relation],
        "language": language,
        "year": year,
        "known": sorted(v for v in known if 1000 <= v <= 2999),
    }


def _keys(item: dict) -> set[str]:
    """What tells two items apart besides their relation: the other entity and the year."""
    return {item["other"], *([str(item["year"])] if item["year"] is not None else [])}


def rubric_facts(graph: WorldGraph, focus: str, variant: str) -> tuple[list[Fact], list[Fact]]:
    """(facts the report must state, chronological with undated last; facts about the focus
    left out of the rubric, which the context must not state)."""
    facts = sorted(graph.facts_of(focus), key=lambda f: (fact_year(f) is None, fact_year(f) or 0))
    kept, left_out, kept_keys = [], [], []
    for fact in facts:
        keys = _keys(rubric_item(graph, fact, focus))
        if variant == "timeline" and fact_year(fact) is None:
            left_out.append(fact)
        elif any(keys <= other or other <= keys for other in kept_keys):
            left_out.append(fact)  # a sentence stating one would also "state" the other
        else:
            kept.append(fact)
            kept_keys.append(keys)
    return kept, left_out


class Longform:
    name = "longform"

    def sample(self, renderer: Renderer, rng: random.Random, params: TaskParams) -> TaskInstance:
        graph, language = renderer.graph, renderer.language
        lowest, highest = params.rubric_items
        if params.length:  # each item costs a sentence, often a document: ~70 tokens, ~400 fixed
            highest = max(lowest, min(highest, (params.length - 400) // 70))
        variant = rng.choice(VARIANTS)
        candidates = sorted(e.id for e in graph.world.entities if e.type in FOCUS_TYPES)
        rng.shuffle(candidates)
        for focus_id in candidates:
            facts, left_out = rubric_facts(graph, focus_id, variant)
            if len(facts) < lowest:
                continue
            if len(facts) > highest:
                keep = set(rng.sample(range(len(facts)), highest))
                left_out += [f for i, f in enumerate(facts) if i not in keep]
                facts = [f for i, f in enumerate(facts) if i in keep]
            focus = graph.entities[focus_id]
            frame = rng.choice(variants(f"{language}/questions/longform.jinja"))
            question = nfc(frame.render(name=focus.name, type=focus.type, variant=variant))
            items = [rubric_item(graph, f, focus_id) for f in facts]
            return TaskInstance(
                question=question,
                answer=focus.name,
                aliases=list(focus.aliases),
                evidence=facts,
                near=near_entities(graph, focus_id, rng),
                excluded={f.id for f in left_out},
                verification={
                    "kind": "rubric",
                    "rubric": [json.dumps(item, ensure_ascii=False) for item in items],
                    "ordered": variant == "timeline",
                    "start_entity": focus_id,
                    "answer_entity": focus_id,
                },
            )
        raise RuntimeError(
            f"no {'/'.join(FOCUS_TYPES)} in world {graph.world.id} has {lowest} facts for a {variant}"
        )

    def reference(self, instance: TaskInstance, refs: list[dict], language: str) -> str:
        entries = [
            {"year": fact_year(fact), "sentence": ref["sentence"]}
            for fact, ref in zip(instance.evidence, refs, strict=False)  # refs may go on (pinned)
        ]
        return render(
            f"{language}/reference/longform.jinja",
            subject=instance.answer,
            variant="timeline" if instance.verification["ordered"] else "profile",
            entries=entries,
            answer=instance.answer,
        )

    def check(self, row: dict, graph: WorldGraph) -> list[str]:
        v = row["verification"]
        focus = v["start_entity"]
        if focus not in graph.entities:
            return [f"focus entity {focus} is not in the world"]
        problems = []
        if graph.entities[focus].name != row["answer"]:
            problems.append(f"answer '{row['answer']}' is not the name of {focus}")
        items = [json.loads(item) for item in v["rubric"]]
        if not items:
            problems.append("the rubric is empty")
        if [i["fact"] for i in items] != [ref["fact_id"] for ref in v["evidence"]]:
            problems.append("rubric items do not follow the evidence facts")
        for item in items:
            fact = graph.facts.get(item["fact"])
            if fact is None or focus not in (fact.head, fact.tail):
                problems.append(f"rubric fact {item['fact']} does not involve {focus}")
                continue
            expected = rubric_item(graph, fact, focus)
            for field, value in expected.items():
                if item.get(field) != value:
                    problems.append(
                        f"rubric item {fact.id}: {field} is {item.get(field)}, graph says {value}"
                    )
        years = [i.get("year") for i in items]
        if v["ordered"] and (None in years or years != sorted(years)):
            problems.append(f"timeline items are not in chronological order: {years}")
        return problems + self._unstated(row, graph, focus, {i["fact"] for i in items})

    def _unstated(self, row: dict, graph: WorldGraph, focus: str, rubric: set[str]) -> list[str]:
        """Facts about the focus outside the rubric must appear nowhere in the context."""
        renderer = Renderer(graph)
        problems = []
        for fact in graph.facts_of(focus):
            if fact.id in rubric:
                continue
            for n in range(renderer.n_variants(fact.relation)):
                if renderer.sentence(fact, n) in row["document"]:
                    problems.append(f"the context states {fact.id} about {focus}, which the rubric lacks")
                    break
        return problems


def near_entities(graph: WorldGraph, focus: str, rng: random.Random) -> list[str]:
    """Near-miss distractors: the focus's neighbours, then other entities of its type."""
    neighbours = sorted(graph.neighbours(focus))
    rng.shuffle(neighbours)
    kind = graph.entities[focus].type
    taken = {focus, *neighbours}
    same_type = sorted(e.id for e in graph.world.entities if e.type == kind and e.id not in taken)
    rng.shuffle(same_type)
    return (neighbours + same_type)[:MAX_NEAR]


register(Longform())
