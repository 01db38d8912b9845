"""Rewards: a documented response format, a deterministic parser and pure scorers.

Response format (what every prompt's instruction asks for):

    <free reasoning, optional; a leading <think>...</think> block is ignored>
    Answer: <the answer>

The label may be `Answer`, `Resposta` or `Antwort` (any case, optionally in **bold**); the
LAST such line is the final answer. Document citations are written `[D1234]` on that line.
Grounded answers cite documents (`Answer: Mara Quill [D1234] [D0042]`) and score answer
correctness × citation F1; abstaining is the answer `unanswerable` (`sem resposta`,
`nicht beantwortbar`). A response with no answer line is *unparsable*; one cut off by the generation limit (or
with an unclosed <think>) is *truncated*. Both score 0 and are reported as such, never
silently.

Long-form reports (kind `rubric`) are the response outside its <think> block; they end with
the answer line naming the report's subject (`Answer: Ostwick Holdings`), which marks the
report as finished, so a report without it is unparsable. See `score_rubric`.

Every scorer is a pure function of (response, verification). `longblocks_reward` has TRL's
reward-function signature (`completions`, dataset columns as keyword lists) and dispatches on
each row's `verification.kind`. This module imports only the row schema: the trainer uses it.
"""

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["ok", "unparsable", "truncated"]

ANSWER_LINE = re.compile(r"^\W*(?:answer|resposta|antwort)\W*?\s*[:：]\s*(.*?)\s*$", re.IGNORECASE)
CITATION = re.compile(r"\[(D\d+)\]")
THINK = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)
# The abstention answer of each language (templates/<lang>/lexicon.yaml `abstain`; a test
# keeps them equal), normalised.
ABSTAIN_WORDS = ("unanswerable", "sem resposta", "nicht beantwortbar")
ARTICLES = frozenset(
    ("a", "an", "the")  # en
    + ("o", "os", "as", "um", "uma", "uns", "umas")  # pt ("a" is shared with en)
    + ("der", "die", "das", "den", "dem", "des", "ein", "eine", "einen", "einem", "einer")  # de
)


@dataclass(frozen=True)
class Parsed:
    answer: str | None  # text of the final answer line without citations; None if missing
    citations: tuple[str, ...]
    status: Status


@dataclass(frozen=True)
class Score:
    value: float
    status: Status


def parse_response(response: str, truncated: bool = False) -> Parsed:
    """Split a response into its final answer and citations (see the module docstring)."""
    if truncated:
        return Parsed(None, (), "truncated")
    if "<think>" in response and "</think>" not in response:
        return Parsed(None, (), "truncated")
    body = THINK.sub("", response)
    for line in reversed(body.strip().splitlines()):
        match = ANSWER_LINE.match(line)
        if match:
            text = match.group(1)
            citations = tuple(dict.fromkeys(CITATION.findall(text)))
            answer = CITATION.sub(" ", text).strip(" *")
            return Parsed(answer, citations, "ok")
    return Parsed(None, (), "unparsable")


def normalize(text: str) -> str:
    """Case, accents, punctuation, articles and spacing removed: 'The Ávila Works.' -> 'avila works'."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"[^\w\s]|_", " ", text)
    return " ".join(word for word in text.split() if word not in ARTICLES)


_ABSTAIN = frozenset(normalize(w) for w in ABSTAIN_WORDS)


def exact_match(prediction: str, answer: str, aliases: list[str] = ()) -> bool:
    """Normalised prediction equals the normalised answer or one of its aliases."""
    gold = {normalize(a) for a in (answer, *aliases)}
    return normalize(prediction) in gold


def score_exact(response: str, verification: Mapping[str, Any], truncated: bool = False) -> Score:
    """1 if the final answer matches the gold answer (or an alias), else 0."""
    parsed = parse_response(response, truncated)
    if parsed.status != "ok":
        return Score(0.0, parsed.status)
    hit = exact_match(parsed.answer, verification["answer"], verification.get("aliases", []))
    return Score(1.0 if hit else 0.0, "ok")


def citation_f1(cited: tuple[str, ...], gold: list[str]) -> float:
    """F1 of cited document ids against the gold ones: 2PR / (P + R); 0 when either is empty."""
    hits = len(set(cited) & set(gold))
    if not hits:
        return 0.0
    precision, recall = hits / len(set(cited)), hits / len(set(gold))
    return 2 * precision * recall / (precision + recall)


def score_cited(response: str, verification: Mapping[str, Any], truncated: bool = False) -> Score:
    """Answer correctness × citation F1: `exact_match(answer) × F1(cited ids, gold ids)`.

    A right answer citing exactly the supporting documents scores 1; citing extra or missing
    documents lowers it (precision / recall); a wrong answer or an abstention scores 0.
    """
    parsed = parse_response(response, truncated)
    if parsed.status != "ok":
        return Score(0.0, parsed.status)
    hit = exact_match(parsed.answer, verification["answer"], verification.get("aliases", []))
    return Score(citation_f1(parsed.citations, verification["citations"]) if hit else 0.0, "ok")


def is_abstention(answer: str) -> bool:
    return normalize(answer) in _ABSTAIN


def score_abstain(response: str, verification: Mapping[str, Any], truncated: bool = False) -> Score:
    """1 if the final answer abstains (the documented word in any language), else 0."""
    parsed = parse_response(response, truncated)
    if parsed.status != "ok":
        return Score(0.0, parsed.status)
    return Score(1.0 if is_abstention(parsed.answer) else 0.0, "ok")


RUBRIC_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")  # a report's statements: sentences and lines
YEAR_LIKE = re.compile(r"[12]\d{3}")
ORDER_WEIGHT = 0.5  # share of a timeline's reward that its order decides


def _padded(text: str) -> str:
    """Normalised with a space at each end, so `in` matches whole words only."""
    return f" {normalize(text)} "


def rubric_hits(report: str, items: list[dict]) -> tuple[list[tuple[int, int] | None], list[bool]]:
    """For each rubric item: where the report first states it in full (sentence index, offset
    of its last key in that sentence) or None; and whether the report contradicts it."""
    sentences = [_padded(s) for s in RUBRIC_SENTENCE.split(report) if s.strip()]
    keys = [[_padded(k) for k in item["keys"]] for item in items]
    full = [{i for i, ks in enumerate(keys) if all(k in s for k in ks)} for s in sentences]
    first = [
        next(((n, s.find(ks[-1])) for n, s in enumerate(sentences) if i in full[n]), None)
        for i, ks in enumerate(keys)
    ]
    # Only sentences that state no item in full can contradict one (see `score_rubric`).
    loose = [
        (s, {w for w in s.split() if YEAR_LIKE.fullmatch(w)})
        for s, hit in zip(sentences, full, strict=True)
        if not hit
    ]
    contradicted = []
    for item, ks in zip(items, keys, strict=True):
        allowed = {str(v) for v in (*item["known"], item["year"])}
        names = ks[:-1]  # a dated item's keys end with its year
        contradicted.append(
            item["year"] is not None
            and any(years and years.isdisjoint(allowed) and all(k in s for k in names) for s, years in loose)
        )
    return first, contradicted


def order_agreement(positions: list[tuple[int, int] | None], years: list[int | None]) -> float:
    """Kendall-style τ in [0, 1]: the share of pairs of stated items with different years
    that the report mentions in chronological order; 1 when there is no such pair."""
    stated = [(p, y) for p, y in zip(positions, years, strict=True) if p is not None and y is not None]
    pairs = [(a, b) for i, a in enumerate(stated) for b in stated[i + 1 :] if a[1] != b[1]]
    if not pairs:
        return 1.0
    return sum((a[0] < b[0]) == (a[1] < b[1]) for a, b in pairs) / len(pairs)


def score_rubric(response: str, verification: Mapping[str, Any], truncated: bool = False) -> Score:
    """Rubric reward for a long-form report: recall × contradiction penalty × order term,

        reward = found/n × (1 − contradicted/n) × (1 − ORDER_WEIGHT × (1 − τ))

    over the n items of `verification.rubric` (JSON objects, see `longblocks.tasks.longform`:
    `keys` = entity names, then the year of a dated fact; `year`; `known`). An item is *found*
    when one sentence or line of the report holds all its keys (normalised, whole words). A
    dated item is *contradicted* when a sentence names its entity and gives year-like numbers
    (1000-2999), none of them its year or in its `known` list, while stating no rubric item in
    full (so "In 1990 X, founded by Mara Quill, moved to Quillford" is no contradiction of the
    founding). τ (`order_agreement`, only when `verification.ordered`, else 1) compares the
    first mentions of the found items with their years. The reference scores 1; a report of
    half the items about 0.5; a fully reversed timeline at most 1 − ORDER_WEIGHT.
    """
    parsed = parse_response(response, truncated)
    if parsed.status != "ok":
        return Score(0.0, parsed.status)
    items = [json.loads(item) for item in verification["rubric"]]
    if not items:
        return Score(0.0, "ok")
    first, contradicted = rubric_hits(THINK.sub("", response), items)
    recall = sum(p is not None for p in first) / len(items)
    penalty = 1 - sum(contradicted) / len(items)
    tau = order_agreement(first, [item["year"] for item in items]) if verification.get("ordered") else 1.0
    return Score(recall * penalty * (1 - ORDER_WEIGHT * (1 - tau)), "ok")


SCORERS: dict[str, Callable[[str, Mapping[str, Any], bool], Score]] = {
    "exact": score_exact,
    "cited": score_cited,
    "abstain": score_abstain,
    "rubric": score_rubric,
}


def score(response: str, verification: Mapping[str, Any], truncated: bool = False) -> Score:
    """Score one response against one row's `verification` (dict or model dump)."""
    if hasattr(verification, "model_dump"):
        verification = verification.model_dump()
    return SCORERS[verification["kind"]](response, verification, truncated)


def completion_text(completion: str | list[dict[str, str]]) -> str:
    """TRL passes plain strings or conversational lists of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m.get("role", "assistant") == "assistant")


def longblocks_reward(
    completions: list, verification: list, truncated: list[bool] | None = None, **_columns
) -> list[float]:
    """TRL-style reward function: one float per completion, dispatched on each row's kind."""
    flags = truncated or [False] * len(completions)
    return [
        score(completion_text(c), v, t).value
        for c, v, t in zip(completions, verification, flags, strict=True)
    ]


def count_statuses(scores: list[Score]) -> dict[str, int]:
    """How many responses were ok / unparsable / truncated."""
    counts = Counter(s.status for s in scores)
    return {status: counts.get(status, 0) for status in ("ok", "unparsable", "truncated")}
