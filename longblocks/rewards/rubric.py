"""Long-form reports scored on attributed claims (verification kind `rubric`); docs/rewards.md.

A report is the response outside its <think> block; a closing answer line is optional. Its
*statements* are its sentences and lines (a run of more than MAX_STATEMENT_WORDS words with
no sentence end, such as a list of names, states nothing). Each rubric item (a JSON object
made by `longblocks.tasks.longform`) is one fact about the report's focus:

    {"fact": "f12", "relation": "founded_by", "other": "Mara Quill", "names": ["Mara Quill",
     "M. Quill"], "cues": ["found", "establish", ...], "language": "en", "year": 1987,
     "known": [1951, 1987, 1992]}

A statement *states* an item when one stretch of it (at most MAX_SPAN_WORDS words) names the
other entity (a name or alias), a word of the relation (`cues`, matched as word beginnings
after normalisation: "found" matches "founded") and, for a dated fact, its year — and that
stretch holds no year-like number (1000-2999) outside the item's `known` years and no other
rubric entity: "1953 1956 1990 Clayton Wells Travis Mcguire ..." states nothing. The focus
is the report's subject and need not be named. A negated statement ("not", "never", "não",
"nicht", ...) states nothing. A statement that does not state the item but gives its relation
and other entity with another year (the year nearest the name, outside `known` and not the
year of another rubric entity it names) *contradicts* it; one that gives the item's relation
and year to another rubric entity *misattributes* it.

    reward = recall × precision × (1 − wrong/n) × order × length

recall = stated items / n; precision = the share of the report's claims (statements holding
a year-like number or naming a rubric entity) that state an item, so facts about other
entities and pasted documents cost; wrong = items contradicted or misattributed somewhere; order =
1 − ORDER_WEIGHT × (1 − τ) for timelines (τ: `order_agreement`), else 1; length = 1 up to
`length_budget(n)` words, falling linearly to 0 at twice that. The reference (one verbatim
evidence sentence per item) scores 1; the same facts in other words, in a list or in prose,
in any order for a profile, score 1 when each sentence names its relation.
"""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from longblocks.rewards.answers import Score
from longblocks.rewards.grammar import normalize, report_text

ORDER_WEIGHT = 0.5  # share of a timeline's reward that its order decides
WORDS_PER_ITEM = 30  # a reference statement is 14-19 words: the budget is about twice that
BASE_WORDS = 30  # a title, an introduction, the closing line
NEGATIONS = {  # normalised; "n't" normalises to the word "t"
    "en": frozenset(("not", "never", "no", "neither", "nor", "none", "nothing", "t")),
    "pt": frozenset(("nao", "nunca", "jamais", "nem", "nenhum", "nenhuma")),
    "de": frozenset(("nicht", "nie", "niemals", "kein", "keine", "keinen", "keinem", "keiner", "weder")),
}
STATEMENT_BREAK = re.compile(r"(?<=[.!?;])(?<!\b[A-ZÀ-Þ]\.)\s+|\n+")  # not after an initial: 'M. Quill'
YEAR_LIKE = re.compile(r"[12]\d{3}")
MAX_STATEMENT_WORDS = 60  # a longer run without a sentence end (a list of names) states nothing
MAX_SPAN_WORDS = 24  # a statement's name, relation word and year lie this close together

Span = tuple[int, int]  # first and last token index, inclusive


@dataclass(frozen=True)
class Item:
    names: tuple[tuple[str, ...], ...]  # normalised name and aliases of the other entity
    cues: tuple[tuple[str, ...], ...] | None  # normalised relation words; None: not required
    year: str | None
    allowed: frozenset[str]  # year-like numbers a statement of it may hold
    negations: frozenset[str]


def load_items(rubric: list[str]) -> list[Item]:
    """Rubric items from their JSON; items without `names`/`cues` (older rows) fall back to
    their `keys`, with no relation word required."""
    items = []
    for raw in rubric:
        item = json.loads(raw)
        names = item.get("names") or item["keys"][:1]
        cues = item.get("cues")
        year = None if item["year"] is None else str(item["year"])
        items.append(
            Item(
                names=tuple(dict.fromkeys(tuple(normalize(n).split()) for n in names if normalize(n))),
                cues=None if cues is None else tuple(tuple(normalize(c).split()) for c in cues),
                year=year,
                allowed=frozenset({str(v) for v in item["known"]} | ({year} if year else set())),
                negations=NEGATIONS.get(item.get("language", "en"), NEGATIONS["en"]),
            )
        )
    return items


def length_budget(n_items: int) -> int:
    """Words a report of `n_items` facts may use before its reward shrinks."""
    return BASE_WORDS + WORDS_PER_ITEM * n_items


def _find(tokens: list[str], phrase: tuple[str, ...], prefix: bool) -> list[Span]:
    """Where `phrase` occurs: whole tokens, or (prefix=True) tokens beginning with its words."""
    n = len(phrase)
    hits = []
    for p in range(len(tokens) - n + 1):
        window = tokens[p : p + n]
        if all(t.startswith(w) if prefix else (w == t) for w, t in zip(phrase, window, strict=True)):
            hits.append((p, p + n - 1))
    return hits


class Statement:
    """One sentence or line of a report, tokenised once, with every rubric name located."""

    def __init__(self, text: str, items: list[Item], focus: list[tuple[str, ...]]):
        self.tokens = normalize(text).split()
        self.names = [[s for name in item.names for s in _find(self.tokens, name, False)] for item in items]
        in_name = {i for spans in self.names for a, b in spans for i in range(a, b + 1)}
        in_name |= {i for name in focus for a, b in _find(self.tokens, name, False) for i in range(a, b + 1)}
        self.in_name = in_name  # cue words and years inside a name ('Quill Fair 1987') do not count
        self.years = [i for i, t in enumerate(self.tokens) if YEAR_LIKE.fullmatch(t) and i not in in_name]
        self.items = items
        self.negated = not items or bool(items[0].negations & set(self.tokens))
        self.void = self.negated or len(self.tokens) > MAX_STATEMENT_WORDS

    def cues(self, item: Item) -> list[Span]:
        if item.cues is None:
            return [(-1, -1)]  # no relation word required: an empty stretch
        spans = [s for cue in item.cues for s in _find(self.tokens, cue, True)]
        return [(a, b) for a, b in spans if not any(i in self.in_name for i in range(a, b + 1))]

    def clean(self, span: Span, allowed: frozenset[str], names_ok: set[int]) -> bool:
        """No year-like number outside `allowed` and no name of an item outside `names_ok`."""
        a, b = span
        if b - a >= MAX_SPAN_WORDS:
            return False
        if any(a <= y <= b and self.tokens[y] not in allowed for y in self.years):
            return False
        return not any(
            a <= s and e <= b for j, spans in enumerate(self.names) if j not in names_ok for s, e in spans
        )

    def _years_of_others(self, i: int) -> set[str]:
        """Years of the other rubric items this statement names: a year beside one of them is theirs."""
        return {o.year for j, o in enumerate(self.items) if j != i and self.names[j] and o.year}

    def _same_name(self, i: int) -> set[int]:
        return {j for j, other in enumerate(self.items) if set(other.names) & set(self.items[i].names)}

    def states(self, i: int) -> Span | None:
        """The first stretch that states item i, or None."""
        item = self.items[i]
        if self.void:
            return None
        years = [(y, y) for y in self.years if self.tokens[y] == item.year] if item.year else [(-1, -1)]
        for parts in _combinations(self.names[i], self.cues(item), years):
            span = _cover(parts)
            if self.clean(span, item.allowed, self._same_name(i)):
                return span
        return None

    def contradicts(self, i: int) -> bool:
        """Relation and other entity of item i with a year (the nearest to the name) it cannot have."""
        item = self.items[i]
        if self.void or item.year is None or not self.years:
            return False
        for name in self.names[i]:
            nearest = min(self.years, key=lambda y: min(abs(y - name[0]), abs(y - name[1])))
            if self.tokens[nearest] in item.allowed or self.tokens[nearest] in self._years_of_others(i):
                continue
            for cue in self.cues(item):
                span = _cover([name, cue, (nearest, nearest)])
                if self.clean(span, item.allowed | {self.tokens[nearest]}, self._same_name(i)):
                    return True
        return False

    def misattributes(self, i: int, stated: set[int]) -> bool:
        """Relation and year of item i given to another rubric entity that this statement
        does not state a fact of."""
        item = self.items[i]
        if self.void or item.year is None or self.names[i]:
            return False
        years = [(y, y) for y in self.years if self.tokens[y] == item.year]
        for j, spans in enumerate(self.names):
            if j in stated or not spans or j in self._same_name(i):
                continue
            for parts in _combinations(spans, self.cues(item), years):
                if self.clean(_cover(parts), item.allowed | self.items[j].allowed, self._same_name(j)):
                    return True
        return False


def _combinations(*groups: list[Span]):
    """Every choice of one span per group, the tightest first."""
    choices = [()]
    for group in groups:
        choices = [c + (g,) for c in choices for g in group]
    return sorted(choices, key=lambda c: _cover(c)[1] - _cover(c)[0])


def _cover(parts) -> Span:
    real = [p for p in parts if p[0] >= 0]
    return (min(a for a, _ in real), max(b for _, b in real)) if real else (0, 0)


def order_agreement(positions: list[tuple[int, int] | None], years: list[int | None]) -> float:
    """Kendall-style τ in [0, 1]: the share of pairs of stated items with different years
    that the report mentions in chronological order; 1 when there is no such pair."""
    stated = [(p, y) for p, y in zip(positions, years, strict=True) if p is not None and y is not None]
    pairs = [(a, b) for i, a in enumerate(stated) for b in stated[i + 1 :] if a[1] != b[1]]
    if not pairs:
        return 1.0
    return sum((a[0] < b[0]) == (a[1] < b[1]) for a, b in pairs) / len(pairs)


@dataclass(frozen=True)
class Assessment:
    first: list[tuple[int, int] | None]  # where each item is first stated (statement, token) or None
    wrong: set[int]  # items some statement contradicts or misattributes
    precision: float  # share of claims (statements with a year or a rubric entity) stating an item


def assess(report: str, items: list[Item], focus: list[str]) -> Assessment:
    """Every statement of the report against every item (see the module docstring)."""
    focus_names = [tuple(normalize(f).split()) for f in focus if normalize(f)]
    first: list[tuple[int, int] | None] = [None] * len(items)
    wrong: set[int] = set()
    claims = stating = 0
    texts = [t for t in STATEMENT_BREAK.split(report) if t.strip()]
    for n, text in enumerate(texts):
        statement = Statement(text, items, focus_names)
        spans = {i: statement.states(i) for i in range(len(items))}
        stated = {i for i, span in spans.items() if span is not None}
        claims += bool(statement.years or any(statement.names))
        stating += bool(stated)
        for i in stated:
            if first[i] is None:
                first[i] = (n, spans[i][0])
        for i in range(len(items)):
            if i not in stated and (statement.contradicts(i) or statement.misattributes(i, stated)):
                wrong.add(i)
    return Assessment(first, wrong, stating / claims if claims else 1.0)


def score_rubric(response: str, verification: Mapping[str, Any], truncated: bool = False) -> Score:
    """Long-form reward (see the module docstring): recall × precision × (1 − wrong/n) × order × length."""
    if truncated or ("<think>" in response and "</think>" not in response):
        return Score(0.0, "truncated")
    report = report_text(response).strip()
    items = load_items(verification["rubric"])
    if not report or not items:
        return Score(0.0, "unparsable")
    budget = length_budget(len(items))
    length = min(1.0, max(0.0, 2 - len(report.split()) / budget))
    if length == 0:
        return Score(0.0, "too_long")
    found = assess(report, items, [verification["answer"], *verification.get("aliases", [])])
    recall = sum(p is not None for p in found.first) / len(items)
    penalty = max(0.0, 1 - len(found.wrong) / len(items))
    years = [None if item.year is None else int(item.year) for item in items]
    tau = order_agreement(found.first, years) if verification.get("ordered") else 1.0
    value = recall * found.precision * penalty * (1 - ORDER_WEIGHT * (1 - tau)) * length
    return Score(value, "ok") if value > 0 else Score(0.0, "wrong")
