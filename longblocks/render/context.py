"""Assembling a context of documents sized to an exact token count.

The prompt is `prefix + documents + suffix`, where prefix/suffix come from the chat template
around the documents block and each document is `[D1234]` + body. Token counts add up across
those pieces (the BPE pre-tokenizer never merges across them), and every piece is counted
once and cached per world, so sizing never re-tokenises the context while adding documents.
The finished prompt is counted once, exactly; a difference (possible with other tokenizers)
is absorbed and re-checked.

Filling, in order: evidence documents (trimmed of other sentences if the target is tight);
whole distractor documents (near-miss entities first) while they fit; trimmed documents (a
subset of sentences chosen by a small subset-sum); then paraphrase swaps (a sentence's other
paraphrase is a few tokens longer or shorter) absorb the last few tokens.
"""

import random
from collections import Counter
from dataclasses import dataclass
from itertools import groupby

from longblocks.errors import UserError
from longblocks.render.documents import Document, Renderer, fact_year
from longblocks.render.sizing import TokenCounter
from longblocks.world.schema import Fact

SENTINEL = "\x00DOCUMENTS\x00"
MAX_SWAP_TRIES = 2000
MAX_TRIM_MISSES = 50  # documents tried once the budget is smaller than any whole one


class EvidenceTooLong(UserError):
    """The evidence alone needs more tokens than the target length."""


class SizingMiss(RuntimeError):
    """No choice of fillers and paraphrases brought this context within tolerance: rare at 1k and
    above, about a quarter of draws below 512 tokens with a small tokenizer, where whole documents
    are a large share of the budget. Another draw of the question (other evidence documents,
    other fillers) usually fits."""


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
    """Exact token counts of pieces, cached: a world's documents recur across examples."""

    def __init__(self, counter: TokenCounter):
        self.counter = counter
        self._counts: dict[str, int] = {}
        self._key = f"body_tokens:{counter.name}"  # where a document keeps its body's count

    def __call__(self, text: str) -> int:
        count = self._counts.get(text)
        if count is None:
            count = self._counts[text] = self.counter.count(text)
        return count

    def document(self, doc: Document) -> int:
        """A document's tokens as the sum of its pieces' (they add up, see the module
        docstring): a document with sentences left out costs no new tokenisation. The body's
        sum is kept on the document (copies under another id share it)."""
        body = doc.__dict__.get(self._key)
        if body is None:
            body = self(doc.header) + sum(self(sentence) for sentence in doc.sentences) + self(doc.footer)
            doc.__dict__[self._key] = body
        return self(doc.id_unit) + body


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


def join(documents: list[Document]) -> str:
    return "".join(d.id_unit + d.body for d in documents)


class ContextBuilder:
    """Builds contexts for one world; keeps the world's document and count caches warm."""

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
        pinned: list[tuple[Document, float]] = (),
        documents: dict[str, Document] | None = None,
        near_facts: frozenset[str] = frozenset(),
    ) -> Context:
        """A prompt of `target` ± `tolerance` tokens holding each evidence fact exactly once.

        `messages` is the chat with `SENTINEL` where the documents go; `near` lists entities
        whose documents make the best distractors; facts in `excluded` (and the evidence
        facts, outside their own document) appear nowhere. `pinned` documents (made by the
        task, e.g. an older dated record) are placed whole at their relative depth; their
        facts appear in no other document. `documents` replaces an entity's corpus document
        as the one its evidence is stated in (a task-made document, e.g. sized like a pinned
        one); that entity's corpus document is then no distractor. The `near` documents holding
        `near_facts` (decoy pointers) are placed like evidence documents.

        No fact is stated twice: a distractor leaves out the sentences an earlier document
        already holds, so a context repeats no sentence word for word.
        """
        prefix, suffix = split_frame(self.count.counter, messages)
        ids = _DocIds(rng)
        documents = documents or {}
        hidden = excluded | {e.fact.id for e in evidence}
        hidden |= {f for doc, _ in pinned for f in doc.facts}
        evidence_ids = {e.fact.id for e in evidence}
        placed = []
        for group in _by_head(evidence):
            # An earlier evidence document's facts are not stated again in a later one.
            seen = hidden.union(*(doc.facts for doc, _ in placed))
            placed.append((self._evidence_document(group, seen, ids.next(), rng, documents), group[0]))
        placed += [
            (doc.with_id(ids.next()), Evidence(self.graph.facts[doc.facts[0]], depth))
            for doc, depth in pinned
        ]
        # Documents the task made (or dated) are sealed: sizing never adds sentences to them.
        sealed = {doc.doc_id for doc, _ in placed[len(placed) - len(pinned) :]}
        sealed |= {doc.doc_id for doc, _ in placed if doc.entity in documents}
        stated = {f for doc, _ in placed for f in doc.facts}
        skip = set(documents) | {doc.entity for doc, _ in pinned} | {doc.entity for doc, _ in placed}
        # Each decoy's pointer document goes in whole, at a random depth, as the answer's evidence
        # document does: neither the count nor the length of the documents that name a candidate
        # through the final relation may tell the answer from its peers.
        near_facts = near_facts - hidden  # a peer's pointer may be evidence of the other side
        pointers = []
        for entity in near:
            doc = self._without(self.renderer.document(entity), hidden, stated)
            facts = [f for f in doc.facts if f in near_facts]
            if entity in skip or not facts:
                continue
            # depth unused: a pointer lies among the shuffled distractors (see below)
            pointers.append((doc.with_id(ids.next()), Evidence(self.graph.facts[facts[0]], 0.0)))
            stated.update(doc.facts)
            skip.add(entity)
        placed += pointers
        budget = (
            target - self.count(prefix) - self.count(suffix) - sum(self.count.document(d) for d, _ in placed)
        )
        # Every document holding a key sentence shrinks alike, in random order; sealed ones
        # (a task's newer record) only if the evidence cannot fit otherwise, or their length
        # beside a whole older record would tell which is current.
        keys = evidence_ids | near_facts
        if budget < 0:
            placed, budget = self._shrink_evidence_documents(placed, budget, keys, rng, whole=sealed)
        if budget < 0 and pointers:  # the evidence alone may still fit
            dropped = {doc.doc_id for doc, _ in pointers}
            budget += sum(self.count.document(d) for d, _ in placed if d.doc_id in dropped)
            placed = [(d, e) for d, e in placed if d.doc_id not in dropped]
        if budget < 0:
            placed, budget = self._shrink_evidence_documents(placed, budget, keys, rng)
        if budget < 0:
            raise EvidenceTooLong(
                f"length {target} is below what the evidence needs ({target - budget} tokens)",
                "choose a longer --length or fewer --hops",
            )
        fillers, budget = self._fill(budget, near, hidden, stated, skip, ids, rng)
        # The pointer documents are shuffled in with the distractors: each lands at a uniformly
        # random depth, as the answer's evidence does, and none pushes the evidence off its own.
        pointer_ids = {doc.doc_id for doc, _ in pointers}
        documents = _place(
            [(d, e) for d, e in placed if d.doc_id not in pointer_ids],
            fillers + [d for d, _ in placed if d.doc_id in pointer_ids],
            self.count,
            rng,
        )
        budget -= self._grow(budget, documents, hidden | stated, sealed)
        budget -= self._absorb(budget, documents, rng)
        prompt = prefix + join(documents) + suffix
        n_tokens = self.count.counter.count(prompt)
        for _ in range(3):  # other tokenizers may not be exactly additive: re-absorb, re-count
            if n_tokens == target:
                break
            self._absorb(target - n_tokens, documents, rng)
            prompt = prefix + join(documents) + suffix
            n_tokens = self.count.counter.count(prompt)
        if abs(n_tokens - target) > tolerance:
            raise SizingMiss(f"context sized to {n_tokens} tokens, target {target} ± {tolerance}")
        return Context(
            prompt=prompt,
            document=join(documents)[:-2],
            documents=documents,
            n_tokens=n_tokens,
            depths=_measure_depths(
                documents, self.count, evidence_ids | {e.fact.id for _, e in placed} - near_facts
            ),
        )

    def _evidence_document(
        self, group: list[Evidence], hidden: set[str], doc_id: str, rng, documents: dict[str, Document]
    ) -> Document:
        """The head's corpus (or task-made) document with each evidence sentence at a random
        position."""
        head = group[0].fact.head
        doc = documents.get(head) or self.renderer.document(head)
        doc = self._without(doc.with_id(doc_id), hidden)
        for evidence in group:
            sentence = self._sentence(evidence.fact.id)
            doc = doc.with_sentence(rng.randint(0, len(doc.facts)), evidence.fact.id, sentence, insert=True)
        return doc

    def _without(
        self, doc: Document, hidden: set[str], stated: frozenset[str] | set[str] = frozenset()
    ) -> Document:
        if hidden.isdisjoint(doc.facts) and stated.isdisjoint(doc.facts):
            return doc
        return doc.with_facts([i for i, f in enumerate(doc.facts) if f not in hidden and f not in stated])

    def _shrink_evidence_documents(self, placed, budget: int, key_ids: set[str], rng, whole=frozenset()):
        """Cut evidence (and pointer) documents, in random order, to their `key_ids` sentences
        until the budget is met.

        Short targets with many hops cannot hold every evidence document whole; the key
        sentences themselves always stay.
        """
        order = list(range(len(placed)))
        rng.shuffle(order)
        shrunk = list(placed)
        for i in order:
            doc, evidence = placed[i]
            if budget < 0 and evidence.fact.id in key_ids and doc.doc_id not in whole:  # pinned stay whole
                cut = doc.with_facts([k for k, f in enumerate(doc.facts) if f in key_ids])
                budget += self.count.document(doc) - self.count.document(cut)
                shrunk[i] = (cut, evidence)
        return shrunk, budget

    def _fill(
        self, budget: int, near: list[str], hidden: set[str], stated: set[str], skip: set[str], ids, rng
    ) -> tuple[list[Document], int]:
        """Whole distractor documents while they fit, then trimmed ones; returns what is left.
        A distractor leaves out facts already `stated` (and adds its own to it)."""
        fillers: list[Document] = []
        near_set = set(near)
        rest = [e for e in self.graph.entities if e not in near_set]
        rng.shuffle(rest)
        misses = 0
        for entity in near + rest:
            if budget <= 0 or misses > MAX_TRIM_MISSES:
                break
            if entity in skip:
                continue
            doc = self._without(self.renderer.document(entity).with_id(ids.peek()), hidden, stated)
            if not doc.facts:
                continue
            size = self.count.document(doc)
            if size > budget:
                doc = self._trim(doc, budget)
                if doc is None:
                    misses += 1
                    continue
                size = self.count.document(doc)
            ids.next()
            fillers.append(doc)
            stated.update(doc.facts)
            skip.add(entity)
            budget -= size
        return fillers, budget

    def _trim(self, doc: Document, budget: int) -> Document | None:
        """Keep the subset of the document's sentences that fills `budget` most closely."""
        room = budget - self.count(doc.id_unit) - self.count(doc.header) - self.count(doc.footer)
        if room <= 0:
            return None
        reachable: dict[int, tuple[int, ...]] = {0: ()}
        for i, sentence in enumerate(doc.sentences):
            size = self.count(sentence)
            for total, picked in list(reachable.items()):
                if total + size <= room and total + size not in reachable:
                    reachable[total + size] = (*picked, i)
        keep = reachable[max(reachable)]
        return doc.with_facts(list(keep)) if keep else None

    def _grow(self, budget: int, documents: list[Document], hidden: set[str], sealed: set[str]) -> int:
        """Fill a budget too small for another document with sentences the placed documents
        left out (trimmed or shrunk away); a subset-sum picks them. Returns tokens added.

        `hidden` holds every fact the context must not state (again); sealed documents and
        facts dated after a document's own date are never added."""
        if budget <= 0:
            return 0
        reachable: dict[int, tuple] = {0: ()}  # tokens added -> ((document, fact id), ...)
        offered = set(hidden)  # a fact two documents left out is offered once
        for d, doc in enumerate(documents):
            if doc.doc_id in sealed:
                continue
            missing = [
                f
                for f in self.renderer.document(doc.entity).facts
                if f not in doc.facts and f not in offered and fact_year(self.graph.facts[f]) <= doc.year
            ]
            offered.update(missing)
            for fact_id in missing:
                size = self.count(self._sentence(fact_id))
                for total, picked in list(reachable.items()):
                    if total + size <= budget and total + size not in reachable:
                        reachable[total + size] = (*picked, (d, fact_id))
            if budget in reachable:
                break
        added = max(reachable)
        for d, fact_id in reachable[added]:
            doc = documents[d]
            documents[d] = doc.with_sentence(len(doc.facts), fact_id, self._sentence(fact_id), insert=True)
        return added

    def _sentence(self, fact_id: str) -> str:
        return self.renderer.own_sentence(self.graph.facts[fact_id])

    def _absorb(self, residual: int, documents: list[Document], rng) -> int:
        """Swap sentence paraphrases and document frames so the total changes by `residual`
        (or as close as possible).

        A small subset-sum over the swaps' token deltas, both signs: a +9 and a -4 swap make
        +5 when no single swap does. Swaps are visited in random order and the search stops
        as soon as `residual` is reachable. Replaces documents in place; returns the change made.
        """
        if residual == 0:
            return 0
        # A slot is (document, sentence index) or (document, None) for the header and footer.
        # Frames of an entity with several documents here (a person's two dated records) stay:
        # its frames differ only in their dateline, and two swapped ones could repeat a title.
        per_entity = Counter(doc.entity for doc in documents)
        slots = [
            (d, i)
            for d, doc in enumerate(documents)
            for i in (None, *range(len(doc.facts)))
            if i is not None or per_entity[doc.entity] == 1
        ]
        rng.shuffle(slots)
        limit = abs(residual) + 64
        reachable: dict[int, tuple] = {0: ()}  # total change -> ((document, slot, new text), ...)
        for d, i in slots[:MAX_SWAP_TRIES]:
            options = self._swaps(documents[d], i)
            for total, picked in list(reachable.items()):
                for delta, text in options:
                    if abs(total + delta) <= limit and total + delta not in reachable:
                        reachable[total + delta] = (*picked, (d, i, text))
            if residual in reachable:
                break
        change = min(reachable, key=lambda total: (abs(residual - total), abs(total)))
        for d, i, text in reachable[change]:
            doc = documents[d]
            documents[d] = doc.with_frame(*text) if i is None else doc.with_sentence(i, doc.facts[i], text)
        return change

    def _swaps(self, doc: Document, i: int | None) -> list[tuple[int, object]]:
        """(token delta, replacement) for the other paraphrases of sentence i, or for the other
        frames of the document when i is None."""
        if i is None:
            current = self.count(doc.header) + self.count(doc.footer)
            return [
                (self.count(h) + self.count(f) - current, (h, f))
                for h, f in self.renderer.frames(doc)
                if self.count(h) + self.count(f) != current
            ]
        fact = self.graph.facts[doc.facts[i]]
        current = self.count(doc.sentences[i])
        options = []
        for variant in range(self.renderer.n_variants(fact.relation)):
            text = " " + self.renderer.sentence(fact, variant)
            if self.count(text) != current:
                options.append((self.count(text) - current, text))
        return options


def _by_head(evidence: list[Evidence]) -> list[list[Evidence]]:
    """Evidence facts grouped by head entity (first-seen order): one document states them all."""
    groups: dict[str, list[Evidence]] = {}
    for item in evidence:
        groups.setdefault(item.fact.head, []).append(item)
    return list(groups.values())


class _DocIds:
    """Random, unique four-digit document ids: their order says nothing about position."""

    def __init__(self, rng: random.Random):
        self._rng = rng
        self._used: set[int] = set()
        self._next = self._draw()

    def _draw(self) -> int:
        while True:  # a context holds at most a few thousand documents of the 9000 ids
            candidate = self._rng.randrange(1000, 10000)
            if candidate not in self._used:
                return candidate

    def peek(self) -> str:
        return f"D{self._next}"

    def next(self) -> str:
        current = self._next
        self._used.add(current)
        self._next = self._draw()
        return f"D{current}"


def _place(
    placed: list[tuple[Document, Evidence]], fillers: list[Document], count: CountCache, rng
) -> list[Document]:
    """Shuffle the distractors, then lay the placed documents in among them in depth order,
    each where its key sentence's depth falls.

    A merge, not one insertion after another: an insertion walks the documents laid so far, so
    a later one whose goal lies before an earlier document already pushed deeper by its peers
    lands in front of it and pushes it deeper still (with nine decoy pointers at 4k, evidence
    aimed at depth 0.5 landed at 0.74). Documents sharing one depth (every evidence document
    under `--depth 0.5`) form one block centred on it.
    """
    rng.shuffle(fillers)
    total = sum(count.document(d) for d in fillers) + sum(count.document(d) for d, _ in placed)
    queue: list[tuple[float, Document]] = []  # (goal: tokens before the document, document)
    for depth, block in groupby(
        sorted(placed, key=lambda p: p[1].target_depth), key=lambda p: p[1].target_depth
    ):
        block = list(block)
        if len(block) == 1:
            doc, evidence = block[0]
            start = depth * total - _offset_in(doc, evidence.fact.id, count)
        else:
            start = depth * total - sum(count.document(doc) for doc, _ in block) / 2
        for doc, _ in block:
            queue.append((start, doc))
            start += count.document(doc)
    order: list[Document] = []
    laid = 0  # tokens laid so far
    for filler in fillers:
        # Each placed document whose goal falls before this filler's middle goes in first.
        while queue and queue[0][0] <= laid + count.document(filler) / 2:
            order.append(queue.pop(0)[1])
            laid += count.document(order[-1])
        order.append(filler)
        laid += count.document(filler)
    order += [doc for _, doc in queue]
    return order


def _offset_in(doc: Document, fact_id: str, count: CountCache) -> int:
    """Tokens from the start of a document to the sentence stating `fact_id`."""
    before = doc.sentences[: doc.facts.index(fact_id)]
    return count(doc.id_unit) + count(doc.header) + sum(count(s) for s in before)


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
