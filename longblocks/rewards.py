"""Rewards: a documented response format, a deterministic parser and pure scorers.

Response format (what every prompt's instruction asks for):

    <free reasoning, optional; a leading <think>...</think> block is ignored>
    Answer: <the answer>

The label may be `Answer`, `Resposta` or `Antwort` (any case, optionally in **bold**); the
LAST such line is the final answer. Document citations are written `[D1234]` on that line.
A response with no answer line is *unparsable*; one cut off by the generation limit (or
with an unclosed <think>) is *truncated*. Both score 0 and are reported as such, never
silently.

Every scorer is a pure function of (response, verification). `longblocks_reward` has TRL's
reward-function signature (`completions`, dataset columns as keyword lists) and dispatches on
each row's `verification.kind`. This module imports only the row schema: the trainer uses it.
"""

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


SCORERS: dict[str, Callable[[str, Mapping[str, Any], bool], Score]] = {
    "exact": score_exact,
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
