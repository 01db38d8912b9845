"""Grounded questions: answer with citations, abstain when the evidence is gone, and prefer
the newest of two dated records when a fact changed.

Three variants, drawn per example:
- `cited`: a 1–2 hop question; the answer must cite every document stating an evidence fact.
- `abstain`: the same kind of question with its last evidence fact removed from the whole
  context (the facts around it stay, as near misses); the correct response abstains.
- `conflict`: an entity whose residence, employer or headquarters changed. An older, dated
  record states the former fact; the entity's own newer document states the current one;
  the answer is the current value, citing the newer document.
"""

import random

from longblocks.render.documents import Renderer, nfc, variants
from longblocks.render.env import render
from longblocks.rewards import normalize
from longblocks.tasks.base import TaskInstance, TaskParams, register
from longblocks.tasks.chains import near_entities, phrase_chain, sample_chain
from longblocks.tasks.records import draw_change, record_pair
from longblocks.world.entities import lexicon
from longblocks.world.graph import WorldGraph
from longblocks.world.schema import RELATIONS

MAX_ATTEMPTS = 500


def _question(
    language: str, frames: str, start_name: str, relations: list[str], answer_type: str, rng
) -> tuple[str, str]:
    chain = phrase_chain(language, start_name, relations, rng)
    frame = rng.choice(variants(f"{language}/questions/{frames}.jinja"))
    return nfc(frame.render(chain=chain, answer_type=answer_type)), chain


class Grounding:
    name = "grounding"

    def sample(self, renderer: Renderer, rng: random.Random, params: TaskParams) -> TaskInstance:
        roll = rng.random()
        if roll < params.conflict_share:
            variant = "conflict"
        elif roll < params.conflict_share + params.unanswerable_share:
            variant = "abstain"
        else:
            variant = "cited"
        sampler = {"cited": self._cited, "abstain": self._abstain, "conflict": self._conflict}[variant]
        for _ in range(MAX_ATTEMPTS):
            instance = sampler(renderer, rng, params.length)
            if instance is not None:
                return instance
        raise RuntimeError(f"no well-posed grounding/{variant} question in world {renderer.graph.world.id}")

    def _chain(self, renderer: Renderer, rng: random.Random, hops: int, length: int):
        """A path whose chain reaches one entity, phrased as a question that does not name it;
        at 2 hops no fact (so no sentence) may name both the start and the answer."""
        graph = renderer.graph
        walk = sample_chain(graph, rng, hops, length)
        if walk is None:
            return None
        entities, facts = walk
        relations = [f.relation for f in facts]
        start, answer = graph.entities[entities[0]], graph.entities[entities[-1]]
        if graph.follow(start.id, relations) != {answer.id}:
            return None
        if hops > 1 and graph.linked(start.id, answer.id):
            return None
        question, chain = _question(renderer.language, "multihop", start.name, relations, answer.type, rng)
        if normalize(answer.name) in normalize(question):
            return None
        return entities, facts, question, chain

    def _cited(self, renderer: Renderer, rng: random.Random, length: int) -> TaskInstance | None:
        found = self._chain(renderer, rng, rng.choice((1, 2)), length)
        if found is None:
            return None
        entities, facts, question, chain = found
        answer = renderer.graph.entities[entities[-1]]
        near = near_entities(renderer.graph, entities, [f.relation for f in facts], rng, length)
        return TaskInstance(
            question=question,
            answer=answer.name,
            aliases=list(answer.aliases),
            evidence=facts,
            near=near.entities,
            near_facts=near.facts,
            verification=_verification("cited", "cited", facts, entities),
            notes={"chain": chain},
        )

    def _abstain(self, renderer: Renderer, rng: random.Random, length: int) -> TaskInstance | None:
        found = self._chain(renderer, rng, rng.choice((1, 2)), length)
        if found is None:
            return None
        entities, facts, question, chain = found
        # The asked entity keeps its document, minus the removed fact, as answerable rows keep
        # theirs: "no document about it" must not give the abstention away.
        asked, removed, kept = entities[-2], facts[-1], facts[:-1]
        pinned = []
        if asked not in {f.head for f in kept}:
            doc = renderer.document(asked)
            gone = {removed.id} | {f.id for f in kept}
            doc = doc.with_facts([i for i, f in enumerate(doc.facts) if f not in gone])
            if not doc.facts:
                return None
            pinned.append((doc, rng.random()))
        near = near_entities(renderer.graph, entities, [f.relation for f in facts], rng, length)
        return TaskInstance(
            question=question,
            answer=lexicon(renderer.language)["abstain"],
            evidence=kept,  # the hops still stated: near misses around the gap
            excluded={removed.id},
            pinned=pinned,
            near=near.entities,
            near_facts=near.facts,
            verification=_verification("abstain", "abstain", facts, entities),
            notes={"chain": chain},
        )

    def _conflict(self, renderer: Renderer, rng: random.Random, length: int) -> TaskInstance | None:
        graph = renderer.graph
        change = draw_change(graph, rng)
        if change is None:
            return None
        old, new = change
        head = old.head
        answer = graph.entities[new.tail]
        question, chain = _question(
            renderer.language,
            "grounding_current",
            graph.entities[head].name,
            [new.relation],
            answer.type,
            rng,
        )
        if normalize(answer.name) in normalize(question):
            return None
        stale, current = record_pair(renderer, old, new, rng)
        near = near_entities(graph, [head, new.tail], [new.relation], rng, length)
        return TaskInstance(
            question=question,
            answer=answer.name,
            aliases=list(answer.aliases),
            evidence=[new],
            pinned=[(stale, rng.random())],
            documents={head: current},
            near=near.entities,
            near_facts=near.facts,
            verification=_verification("cited", "conflict", [new], [head, new.tail]),
            notes={"chain": chain},
        )

    def reference(self, instance: TaskInstance, refs: list[dict], language: str) -> str:
        steps = refs[: len(instance.evidence)]
        variant = instance.verification["variant"]
        return render(
            f"{language}/reference/grounding.jinja",
            mode=variant,
            steps=steps,
            stale=refs[len(steps)] if variant == "conflict" else None,
            chain=instance.notes["chain"],
            answer=instance.answer,
            citations=sorted({r["doc_id"] for r in steps}) if variant != "abstain" else [],
        )

    def check(self, row: dict, graph: WorldGraph) -> list[str]:
        v = row["verification"]
        problems = []
        reached = graph.follow(v["start_entity"], v["path"])
        if reached != {v["answer_entity"]}:
            problems.append(f"path {v['path']} from {v['start_entity']} reaches {sorted(reached)}")
            return problems
        true_name = graph.entities[v["answer_entity"]].name
        renderer = Renderer(graph)
        if v["variant"] == "abstain":
            if row["answer"] != lexicon(row["language"])["abstain"]:
                problems.append(f"abstention answer is '{row['answer']}'")
            hidden = _last_fact(graph, v["start_entity"], v["path"])
            if _stated(renderer, hidden, row["document"]):
                problems.append(f"the removed fact {hidden.id} is still stated in the context")
            return problems
        if row["answer"] != true_name:
            problems.append(f"answer '{row['answer']}' is not {true_name}")
        evidence_docs = sorted({ref["doc_id"] for ref in v["evidence"]})
        if v["citations"] != evidence_docs:
            problems.append(f"citations {v['citations']} are not the evidence documents {evidence_docs}")
        if v["variant"] == "conflict":
            former = [f for f in graph.former.get(v["start_entity"], []) if f.relation == v["path"][0]]
            if not any(_stated(renderer, f, row["document"]) for f in former):
                problems.append("no older record of the changed fact is in the context")
        return problems


def _verification(kind: str, variant: str, facts, entities) -> dict:
    return {
        "kind": kind,
        "variant": variant,
        "path": [f.relation for f in facts],
        "start_entity": entities[0],
        "answer_entity": entities[-1],
    }


def _last_fact(graph: WorldGraph, start: str, path: list[str]):
    """The fact realising the final hop of `path` from `start`."""
    (before,) = graph.follow(start, path[:-1])
    (after,) = graph.follow(start, path)
    for fact in graph.facts_of(before):
        forward = fact.head == before or RELATIONS[fact.relation].symmetric
        if fact.relation == path[-1] and {fact.head, fact.tail} == {before, after} and forward:
            return fact
    raise KeyError(f"no {path[-1]} fact from {before}")


def _stated(renderer: Renderer, fact, document: str) -> bool:
    """Whether any paraphrase of `fact` appears in the context."""
    return any(renderer.sentence(fact, v) in document for v in range(renderer.n_variants(fact.relation)))


register(Grounding())
