"""Does a model read the documents, or only the question? Measured on its held-out completions.

A model can earn chance-level accuracy without reading: copy the question's entity and relation
into a plausible sentence and finish it with any name of the right kind from the context. These
shares tell that apart from reading:

- `quoted`: completions whose numbered evidence lines all appear word for word in the documents;
- `evidence`: completions whose evidence lines are exactly the row's evidence sentences;
- `name_from_context`: wrong answers that are nevertheless a name the documents contain.
"""

import re
import statistics

import datasets

from longblocks.rewards import parse_response

STEP = re.compile(r"^\s*\d+\.\s+(.*\S)\s*$")  # "1. <sentence>" lines of the reference layout


def held_out_rows(dataset: datasets.DatasetDict, splits: tuple[str, ...]) -> dict[str, dict]:
    """id -> row of the held-out splits (document, verification)."""
    return {row["id"]: row for split in splits if split in dataset for row in dataset[split]}


def reading(records: list[dict], rows: dict[str, dict]) -> dict[str, float]:
    """The three shares of the module docstring over `records` (evaluation records with their
    completion text); rows without evidence sentences are skipped."""
    quoted, evidence, from_context, wrong = 0, 0, 0, 0
    scored = [r for r in records if r.get("id") in rows and rows[r["id"]]["verification"].get("evidence")]
    for record in scored:
        row, lines = rows[record["id"]], record["completion"].splitlines()
        steps = [m[1] for m in map(STEP.match, lines) if m]
        gold = [e["sentence"] for e in row["verification"]["evidence"]]
        quoted += bool(steps) and all(step in row["document"] for step in steps)
        evidence += steps == gold
        if record["reward"] == 0:
            answer = parse_response(record["completion"]).answer  # the rewards' own answer grammar
            wrong += 1
            from_context += answer is not None and answer in row["document"]
    n = max(1, len(scored))
    return {"quoted": quoted / n, "evidence": evidence / n, "name_from_context": from_context / max(1, wrong)}


def mean_reading(cells: list[dict[str, float]]) -> dict[str, float]:
    """Seed mean of `reading` results."""
    return {key: statistics.fmean(cell[key] for cell in cells) for key in cells[0]}
