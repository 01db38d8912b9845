"""Scorers for short answers: exact (multihop), cited (grounding), abstain (grounding).

Each returns a `Score` whose status says why a zero is a zero: `wrong` (another answer),
`hedged` (several candidates on the answer line, or answer markers naming different
answers), `uncited` (the right answer without one right citation), `unparsable` (no answer),
`truncated` (cut off). `ok` always has a positive value.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from longblocks.rewards.grammar import (
    Parsed,
    contains_abstention,
    is_abstention,
    normalize,
    parse_response,
)

Status = Literal["ok", "wrong", "hedged", "uncited", "too_long", "unparsable", "truncated"]
STATUSES: tuple[Status, ...] = ("ok", "wrong", "hedged", "uncited", "too_long", "unparsable", "truncated")


@dataclass(frozen=True)
class Score:
    value: float
    status: Status  # `ok` iff value > 0


def exact_match(prediction: str, answer: str, aliases: list[str] = ()) -> bool:
    """Normalised prediction equals the normalised answer or one of its aliases."""
    return normalize(prediction) in {normalize(a) for a in (answer, *aliases)}


def _names_gold(text: str, gold: set[str]) -> bool:
    """The answer names a gold form among other words ('Mara Quill or Ben Ode')."""
    padded = f" {normalize(text)} "
    return any(f" {g} " in padded for g in gold if g)


def judge(parsed: Parsed, verification: Mapping[str, Any]) -> Score:
    """1 for the gold answer (or an alias, or an abstention on an abstain row), else a zero
    with its reason. Answer markers that disagree are a hedge whatever the last one says."""
    if parsed.status != "ok":
        return Score(0.0, parsed.status)
    abstain = verification["kind"] == "abstain"
    gold = {normalize(a) for a in (verification["answer"], *verification.get("aliases", []))}

    def canonical(answer: str) -> str:
        if abstain and is_abstention(answer):
            return "<abstain>"
        return "<gold>" if normalize(answer) in gold else normalize(answer)

    if len({canonical(a) for a in parsed.answers}) > 1:
        return Score(0.0, "hedged")
    if canonical(parsed.answer) in ("<gold>", "<abstain>"):
        return Score(1.0, "ok")
    hedged = contains_abstention(parsed.answer) if abstain else _names_gold(parsed.answer, gold)
    return Score(0.0, "hedged" if hedged else "wrong")


def score_exact(response: str, verification: Mapping[str, Any], truncated: bool = False) -> Score:
    """1 if the final answer matches the gold answer (or an alias), else 0."""
    return judge(parse_response(response, truncated), verification)


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
    verdict = judge(parsed, verification)
    if verdict.status != "ok":
        return verdict
    f1 = citation_f1(parsed.citations, verification["citations"])
    return Score(f1, "ok") if f1 > 0 else Score(0.0, "uncited")


def score_abstain(response: str, verification: Mapping[str, Any], truncated: bool = False) -> Score:
    """1 if the final answer abstains (any documented phrasing, any language), else 0."""
    return judge(parse_response(response, truncated), verification)
