"""Multi-hop questions: follow a chain of k functional relations from a named entity.

The question names only the start entity and the relation chain ("Who founded the employer
of Mara Quill?"). A question is kept only if, on the graph, the chain reaches exactly one
entity, and no single fact (hence no sentence of any context) mentions both the start
entity and the answer, so the answer cannot be read off without following every hop.
A share of the questions (`TaskParams.compositional_share`) are compositional: counting,
temporal and comparison variants, a third each (`tasks/compositional.py`).
"""

import random

from longblocks.render.documents import Renderer, nfc, variants
from longblocks.render.env import render
from longblocks.rewards import normalize
from longblocks.tasks.base import TaskInstance, TaskParams, register
from longblocks.tasks.chains import near_entities, phrase_chain, sample_chain
from longblocks.tasks.compositional import (
    check_comparison,
    check_counting,
    check_temporal,
    sample_comparison,
    sample_counting,
    sample_temporal,
)
from longblocks.world.graph import WorldGraph

MAX_ATTEMPTS = 500
VARIANTS = (sample_counting, sample_temporal, sample_comparison)


class Multihop:
    name = "multihop"

    def sample(self, renderer: Renderer, rng: random.Random, params: TaskParams) -> TaskInstance:
        roll = rng.random()
        if roll < params.compositional_share:
            sampler = VARIANTS[min(len(VARIANTS) - 1, int(roll / params.compositional_share * len(VARIANTS)))]
            for _ in range(MAX_ATTEMPTS):
                instance = sampler(renderer, rng, params)
                if instance is not None:
                    return instance
        return self._chain(renderer, rng, params)

    def _chain(self, renderer: Renderer, rng: random.Random, params: TaskParams) -> TaskInstance:
        graph, language = renderer.graph, renderer.language
        for _ in range(MAX_ATTEMPTS):
            walk = sample_chain(graph, rng, rng.choice(params.hops), params.length)
            if walk is None:
                continue
            entities, facts = walk
            start, answer = graph.entities[entities[0]], graph.entities[entities[-1]]
            relations = [f.relation for f in facts]
            if graph.follow(start.id, relations) != {answer.id}:
                continue
            if len(relations) > 1 and graph.linked(start.id, answer.id):
                continue  # one fact would answer a multi-hop question
            chain = phrase_chain(language, start.name, relations, rng)
            frame = rng.choice(variants(f"{language}/questions/multihop.jinja"))
            question = nfc(frame.render(chain=chain, answer_type=answer.type))
            if normalize(answer.name) in normalize(question):
                continue
            near = near_entities(graph, entities, relations, rng, params.length)
            return TaskInstance(
                question=question,
                answer=answer.name,
                aliases=list(answer.aliases),
                evidence=facts,
                near=near.entities,
                near_facts=near.facts,
                verification={
                    "kind": "exact",
                    "path": relations,
                    "start_entity": start.id,
                    "answer_entity": answer.id,
                },
            )
        raise RuntimeError(f"no well-posed {params.hops}-hop question in world {graph.world.id}")

    def reference(self, instance: TaskInstance, refs: list[dict], language: str) -> str:
        steps = [ref["sentence"] for ref in refs]
        return render(f"{language}/reference/multihop.jinja", steps=steps, answer=instance.answer)

    def check(self, row: dict, graph: WorldGraph) -> list[str]:
        v = row["verification"]
        if v.get("variant") == "counting":
            return check_counting(row, graph)
        if v.get("variant") == "temporal":
            return check_temporal(row, graph)
        if v.get("variant") == "comparison":
            return check_comparison(row, graph)
        problems = []
        reached = graph.follow(v["start_entity"], v["path"])
        if reached != {v["answer_entity"]}:
            problems.append(
                f"path {v['path']} from {v['start_entity']} reaches {sorted(reached)}, not one answer"
            )
        elif graph.entities[v["answer_entity"]].name != row["answer"]:
            problems.append(f"answer '{row['answer']}' is not the name of {v['answer_entity']}")
        if len(v["path"]) > 1 and graph.linked(v["start_entity"], v["answer_entity"]):
            problems.append("one fact links the start entity and the answer (a shortcut)")
        chain = [graph.facts.get(ref["fact_id"]) for ref in v["evidence"]]
        if None in chain or [f.relation for f in chain] != v["path"]:
            problems.append("evidence facts do not follow the relation path")
        return problems


register(Multihop())
