"""Rewards: one documented answer grammar, a deterministic parser and pure scorers.

docs/rewards.md is the full reference; in short:

    <free reasoning, optional; a leading <think>...</think> block is ignored>
    Answer: <the answer> [D1234] [D0042]

The final answer is the last *answer marker*: a label line (`Answer:`, `Final answer:`,
`Resposta:`, `Resposta final:`, `Antwort:`, `Endgültige Antwort:`, ..., in any case and
markdown, the answer on the same or the next line), a label ending a line (`... Answer: X`),
`\\boxed{X}`, or a closing `The answer is X.` / `A resposta é X.` / `Die Antwort lautet X.`
(`longblocks.rewards.grammar`). Citations are document ids in square or round brackets on
the final answer's line, one per bracket or listed (`[D1, D2]`, `(D1; D2)`). Abstaining is
the word each instruction names (`unanswerable`, `sem resposta`, `nicht beantwortbar`) or a
documented phrasing ("not in the documents", "cannot be determined", "não consta nos
documentos", "lässt sich nicht bestimmen", ...), as the answer or as the closing sentence.
Hedges earn nothing: an answer naming the gold among other words ("A or B", "A, B, C") and
answer markers naming different answers score 0 with status `hedged`.

Long-form reports (kind `rubric`) are scored on their content, with or without a closing
answer line: attributed claims, negations ignored, contradictions and misattributions
costing, length beyond a budget shrinking the reward (`longblocks.rewards.rubric`).

Every score has a status: `ok` (value > 0) or the reason for a zero — `wrong`, `hedged`,
`uncited`, `too_long`, `unparsable`, `truncated` — so no zero is silent. `score` dispatches on
`verification.kind` through `SCORERS` (a new kind is one scorer and one entry there);
`longblocks_reward` has TRL's reward-function signature. This package imports only the
standard library: the trainer uses it.
"""

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from longblocks.rewards.answers import (
    STATUSES,
    Score,
    Status,
    citation_f1,
    exact_match,
    score_abstain,
    score_cited,
    score_exact,
)
from longblocks.rewards.grammar import ABSTAIN_WORDS, Parsed, is_abstention, normalize, parse_response
from longblocks.rewards.rubric import ORDER_WEIGHT, length_budget, order_agreement, score_rubric

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
    """How many responses had each status (`STATUSES`, zeros included)."""
    counts = Counter(s.status for s in scores)
    return {status: counts.get(status, 0) for status in STATUSES}


__all__ = [
    "ABSTAIN_WORDS",
    "ORDER_WEIGHT",
    "SCORERS",
    "STATUSES",
    "Parsed",
    "Score",
    "Status",
    "citation_f1",
    "completion_text",
    "count_statuses",
    "exact_match",
    "is_abstention",
    "length_budget",
    "longblocks_reward",
    "normalize",
    "order_agreement",
    "parse_response",
    "score",
    "score_abstain",
    "score_cited",
    "score_exact",
    "score_rubric",
]
