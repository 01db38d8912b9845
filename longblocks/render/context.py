"""Assembling a context of documents sized to an exact token count.

The prompt is `prefix + units + suffix`, where prefix/suffix come from the chat template
around the documents and every unit (document header, fact sentence, footer) is counted
once and cached per world. Because unit boundaries never merge under the BPE
pre-tokenizer, the sum of unit counts is the prompt's token count: sizing never
re-tokenises the context while adding documents. The finished prompt is counted once,
exactly; any difference (possible with other tokenizers) is absorbed and re-checked.

Filling, in order: evidence documents; whole distractor documents (near-miss entities
first) while they fit; one trimmed document (a subset of its sentences, chosen by a small
subset-sum); then paraphrase swaps (a sentence's other paraphrase is a few tokens longer or
shorter) absorb the last few tokens.
"""

import random
from dataclasses import dataclass

from longblocks.errors import UserError
from longblocks.render.documents import Document, Renderer
from longblocks.render.sizing import TokenCounter
from longblocks.world.schema import Fact

SENTINEL = "\x00DOCUMENTS\x00"
MAX_SWAP_TRIES = 2000
MAX_TRIM_MISSES = 50  # documents tried once the budget is smaller than any whole one


@dataclass
class Evidence:
    """A fact the answer depends on and the relative depth (0..1) it should sit at."""

    fact: Fact
    target_depth: float


@dataclass
class Context:
    prompt: str  # the whole chat-formatted prompt
    document: str  # the documents block alone (the row's `document` column)
    documents: list[Document]
    n_tokens: int
    depths: dict[str, tuple[str, float]]  # evidence fact id -> (doc_id, measured depth)


class CountCache:
    """Exact token counts of units, cached: a world's sentences recur across examples."""

    def __init__(self, counter: TokenCounter):
        self.counter = counter
        self._counts: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        count = self._counts.get(text)
        if count is None:
            count = self._counts[text] = self.counter.count(text)
        return count

    def document(self, doc: Document) -> int:
        return sum(self(unit) for unit in doc.units())


def split_frame(counter: TokenCounter, messages: list[dict[str, str]]) -> tuple[str, str]:
    """The chat-formatted text before and after the documents block.

    The user message must be `SENTINEL + "\\n\\n" + rest`; the blank line after the documents
    is carried by the last document's footer, so it is cut from the suffix here.
    """
    text = counter.chat_prompt(messages)
    prefix, suffix = text.split(SENTINEL)
    if not suffix.startswith("\n\n"):
        raise ValueError("the user message must continue with a blank line after the documents")
    return prefix, suffix[2:]


class ContextBuilder:
    """Builds contexts for one world; keeps the world's sentence and count caches warm."""

    def __init__(self, renderer: Renderer, counter: TokenCounter):
        self.renderer = renderer
        self.graph = renderer.graph
        self.count = CountCache(counter)

    def build(
        self,
        messages: list[dict[str, str]],
        evidence: list[Evidence],
        near: list[str],
        excluded: set[str],
        target: int,
        tolerance: int,
        rng: random.Random,
    ) -> Context:
        """A prompt of `target` ± `tolerance` tokens holding each evidence fact once.

        `messages` is the chat with `SENTINEL` where the documents go; `near` lists entities
        whose documents make the best distractors; facts in `excluded` (and the evidence
        facts, outside their own document) appear nowhere.
        """
        prefix, suffix = split_frame(self.count.counter, messages)
        ids = _DocIds(rng)
        hidden = excluded | {e.fact.id for e in evidence}
        placed = [self._evidence_document(e, hidden, ids, rng) for e in evidence]
        budget = (
            target - self.count(prefix) - self.count(suffix) - sum(self.count.document(d) for d, _ in placed)
        )
        if budget < 0:
            budget += self._shrink_evidence_documents(placed, -budget)
        if budget < 0:
            raise UserError(
                f"length {target} is below what the evidence needs ({target - budget} tokens)",
                "choose a longer --length or fewer --hops",
            )
        fillers, budget = self._fill(budget, near, hidden, ids, rng)
        every = fillers + [d for d, _ in placed]
        budget -= self._absorb(budget, every, rng)
        documents = _place(placed, fillers, self.count, rng)
        prompt = prefix + "".join("".join(d.units()) for d in documents) + suffix
        n_tokens = self.count.counter.count(prompt)
        for _ in range(3):  # other tokenizers may not be exactly additive: re-absorb, re-count
            if n_tokens == target:
                break
            self._absorb(target - n_tokens, every, rng)
            prompt = prefix + "".join("".join(d.units()) for d in documents) + suffix
            n_tokens = self.count.counter.count(prompt)
        if abs(n_tokens - target) > tolerance:
            raise RuntimeError(f"context sized to {n_tokens} tokens, target {target} ± {tolerance}")
        return Context(
            prompt=prompt,
            document="".join("".join(d.units()) for d in documents)[:-2],
            documents=documents,
            n_tokens=n_tokens,
            depths=_measure_depths(documents, self.count, {e.fact.id for e in evidence}),
        )

    def _evidence_document(self, evidence: Evidence, hidden: set[str], ids, rng) -> tuple[Document, Evidence]:
        fact = evidence.fact
        others = self.renderer.document_facts(fact.head, rng, hidden)
        facts = others[:]
        facts.insert(rng.randint(0, len(others)), fact)
        return self.renderer.document(fact.head, ids.next(), facts, rng), evidence

    def _shrink_evidence_documents(self, placed: list[tuple[Document, Evidence]], excess: int) -> int:
        """Drop non-evidence sentences from evidence documents until `excess` tokens are freed.

        Short targets with many hops cannot hold every evidence document whole; the evidence
        sentences themselves always stay. Returns the tokens freed.
        """
        freed = 0
        for doc, evidence in placed:
            for i in reversed(range(len(doc.facts))):
                if freed >= excess:
                    return freed
                if doc.facts[i] != evidence.fact.id:
                    freed += self.count(doc.sentences[i])
                    del doc.facts[i], doc.sentences[i]
        return freed

    def _fill(self, budget: int, near: list[str], hidden: set[str], ids, rng) -> tuple[list[Document], int]:
        """Whole distractor documents while they fit, then trimmed ones; returns what is left."""
        fillers: list[Document] = []
        near_set = set(near)
        rest = [e for e in self.graph.entities if e not in near_set]
        rng.shuffle(rest)
        misses = 0
        for entity in near + rest:
            if budget <= 0 or misses > MAX_TRIM_MISSES:
                break
            facts = self.renderer.document_facts(entity, rng, hidden)
            if not facts:
                continue
            doc = self.renderer.document(entity, ids.peek(), facts, rng)
            size = self.count.document(doc)
            if size > budget:
                doc = self._trim(doc, budget)
                if doc is None:
                    misses += 1
                    continue
                size = self.count.document(doc)
            ids.next()
            fillers.append(doc)
            budget -= size
        return fillers, budget

    def _trim(self, doc: Document, budget: int) -> Document | None:
        """Keep the subset of the document's sentences that fills `budget` most closely."""
        room = budget - self.count(doc.header) - self.count(doc.footer)
        if room <= 0:
            return None
        sizes = [self.count(s) for s in doc.sentences]
        reachable: dict[int, tuple[int, ...]] = {0: ()}
        for i, size in enumerate(sizes):
            for total, picked in list(reachable.items()):
                if total + size <= room and total + size not in reachable:
                    reachable[total + size] = (*picked, i)
        keep = reachable[max(reachable)]
        if not keep:
            return None
        doc.facts = [doc.facts[i] for i in keep]
        doc.sentences = [doc.sentences[i] for i in keep]
        return doc

    def _absorb(self, residual: int, documents: list[Document], rng) -> int:
        """Swap sentence paraphrases to change the total by `residual`; returns the change made."""
        change = 0
        slots = [(d, i) for d in documents for i in range(len(d.sentences))]
        rng.shuffle(slots)
        for doc, i in slots[:MAX_SWAP_TRIES]:
            need = residual - change
            if need == 0:
                break
            fact = self.graph.facts[doc.facts[i]]
            current = self.count(doc.sentences[i])
            best = None
            for variant in range(self.renderer.n_variants(fact.relation)):
                text = " " + self.renderer.sentence(fact, variant)
                delta = self.count(text) - current
                fits = delta != 0 and abs(delta) <= abs(need) and (delta > 0) == (need > 0)
                if fits and (best is None or abs(delta) > abs(best[0])):
                    best = (delta, text)
            if best is not None:
                doc.sentences[i] = best[1]
                change += best[0]
        return change


class _DocIds:
    """Random, unique four-digit document ids: their order says nothing about position."""

    def __init__(self, rng: random.Random):
        self._pool = rng.sample(range(1000, 10000), 9000)

    def peek(self) -> str:
        return f"D{self._pool[-1]}"

    def next(self) -> str:
        return f"D{self._pool.pop()}"


def _place(
    placed: list[tuple[Document, Evidence]], fillers: list[Document], count: CountCache, rng
) -> list[Document]:
    """Shuffle the distractors, then insert each evidence document where its depth falls."""
    rng.shuffle(fillers)
    total = sum(count.document(d) for d, _ in placed) + sum(count.document(d) for d in fillers)
    order = list(fillers)
    for doc, evidence in sorted(placed, key=lambda p: p[1].target_depth):
        goal = evidence.target_depth * total - _offset_in(doc, evidence.fact.id, count)
        position, start = 0, 0
        while position < len(order) and start + count.document(order[position]) / 2 < goal:
            start += count.document(order[position])
            position += 1
        order.insert(position, doc)
    return order


def _offset_in(doc: Document, fact_id: str, count: CountCache) -> int:
    """Tokens from the start of a document to the sentence stating `fact_id`."""
    before = doc.sentences[: doc.facts.index(fact_id)]
    return count(doc.header) + sum(count(s) for s in before)


def _measure_depths(
    documents: list[Document], count: CountCache, wanted: set[str]
) -> dict[str, tuple[str, float]]:
    """Relative token depth (0..1) of each wanted fact's sentence within the documents block."""
    total = sum(count.document(d) for d in documents)
    depths: dict[str, tuple[str, float]] = {}
    position = 0
    for doc in documents:
        for fact_id in wanted.intersection(doc.facts):
            depths[fact_id] = (doc.doc_id, round((position + _offset_in(doc, fact_id, count)) / total, 4))
        position += count.document(doc)
    return depths
