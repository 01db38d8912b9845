"""Reward attacks and natural answer forms: responses built from a row, and the table that scores them.

Each entry of `ATTACKS` and `FORMS` is a function `(row, graph) -> response | None` (None: not
applicable to that row; `graph` is the row's `WorldGraph` or None, needed only by the
paraphrased long-form reports). Attacks are what a reward hacker writes without the skill —
the pasted context, a keyword soup, an empty response, answer-line spam, hedged lists — and
must earn (almost) nothing; forms are the ways a model that has the skill writes a correct
answer, and must earn full reward. `reward_attack_table(rows)` scores them all with
`longblocks.rewards.score` and returns one record per (attack, task, kind, language): the
numbers `longblocks audit` reports and the tests bound (see docs/rewards.md).
"""

import json
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

from longblocks.rewards import score
from longblocks.world.entities import lexicon

Response = Callable[[dict, object], str | None]

NAME = re.compile(r"\b[A-ZÀ-Þ][\w'-]+(?: (?:&|d[aeo]s?|van|von|der) [A-ZÀ-Þ][\w'-]+| [A-ZÀ-Þ][\w'-]+)*")
YEAR = re.compile(r"\b[12]\d{3}\b")
# How models write the natural answer forms, per language (the reward's grammar accepts them).
PHRASES = {
    "en": {
        "final": "Final answer", "answer_is": "The answer is {}.", "so": "So the answer follows.",
        "abstain": ("not in the documents", "cannot be determined"),
        "abstain_sentence": "The answer cannot be determined from the documents.",
        "not": "It is not true that {}", "or": "or",
    },
    "pt": {
        "final": "Resposta final", "answer_is": "A resposta é {}.", "so": "Logo, a resposta segue.",
        "abstain": ("não consta nos documentos", "não é possível determinar"),
        "abstain_sentence": "Não é possível determinar a resposta com base nos documentos.",
        "not": "Não é verdade que {}", "or": "ou",
    },
    "de": {
        "final": "Endgültige Antwort", "answer_is": "Die Antwort lautet {}.",
        "so": "Daraus folgt die Antwort.",
        "abstain": ("nicht in den Dokumenten", "kann nicht bestimmt werden"),
        "abstain_sentence": "Die Antwort lässt sich aus den Dokumenten nicht bestimmen.",
        "not": "Es stimmt nicht, dass {}", "or": "oder",
    },
}  # fmt: skip


def label(row: dict) -> str:
    return lexicon(row["language"])["answer_label"]


def candidate_names(text: str, limit: int = 400) -> list[str]:
    """Capitalised word runs in order of first appearance: every name a reader could guess."""
    return list(dict.fromkeys(NAME.findall(text)))[:limit]


def body(row: dict) -> str:
    """The reference without its closing answer line."""
    return row["reference"].rsplit("\n", 1)[0]


def cites(row: dict, opening: str = "[", closing: str = "]", sep: str = ", ") -> str:
    ids = row["verification"]["citations"]
    return f" {opening}{sep.join(ids)}{closing}" if ids else ""


def _qa(make: Callable[[dict], str]) -> Response:
    """A form for multihop and cited grounding rows only."""
    return lambda row, graph: make(row) if row["verification"]["kind"] in ("exact", "cited") else None


def _abstain(make: Callable[[dict], str]) -> Response:
    return lambda row, graph: make(row) if row["verification"]["kind"] == "abstain" else None


def _longform(make: Callable[[dict, object], str | None]) -> Response:
    return lambda row, graph: make(row, graph) if row["verification"]["kind"] == "rubric" else None


def _distractors(row: dict, n: int) -> list[str]:
    """Names from the context other than the gold, drawn per row (seeded by its id)."""
    gold = row["answer"].casefold()
    names = [x for x in candidate_names(row["document"]) if x.casefold() != gold and len(x.split()) > 1]
    return random.Random(row["id"]).sample(names, min(n, len(names)))


def _hedge(row: dict) -> str:
    words = PHRASES[row["language"]]
    if row["verification"]["kind"] == "rubric":
        return _longform_hedge(row)
    options = [row["answer"], *_distractors(row, 2)]
    random.Random(row["id"]).shuffle(options)
    return f"{body(row)}\n{label(row)}: {', '.join(options[:-1])} {words['or']} {options[-1]}{cites(row)}"


def _spam(row: dict) -> str:
    names = candidate_names(row["document"], limit=40)
    if row["answer"] not in names:
        names.append(row["answer"])
    return "\n".join(f"{label(row)}: {name}{cites(row)}" for name in names)


def _soup(row: dict) -> str:
    years = sorted(set(YEAR.findall(row["document"])))
    names = candidate_names(row["document"])
    final = row["answer"] if row["verification"]["kind"] == "rubric" else ", ".join(names[:40])
    return f"{' '.join(years)} {' '.join(names)}\n{label(row)}: {final}"


def _pasted(row: dict) -> str:
    # A long-form request names its subject, so the attacker can close with it.
    closing = f"\n\n{label(row)}: {row['answer']}" if row["verification"]["kind"] == "rubric" else ""
    return row["document"] + closing


def _rubric(row: dict) -> list[dict]:
    return [json.loads(item) for item in row["verification"]["rubric"]]


def _other(item: dict) -> str:
    return item.get("other") or item["keys"][0]


def _entries(row: dict) -> list[str]:
    """The reference's report lines (one per rubric item)."""
    return [line[2:] for line in body(row).split("\n") if line.startswith("- ")]


def _longform_hedge(row: dict) -> str:
    """Every statement with its year among two false ones: 'in 1987' -> 'in 1984, 1987 or 1990'."""
    words = PHRASES[row["language"]]
    lines = []
    for entry, item in zip(_entries(row), _rubric(row), strict=False):
        if item["year"]:
            y = item["year"]
            entry = entry.replace(str(y), f"{y - 3}, {y} {words['or']} {y + 3}")
        lines.append(f"- {entry}")
    return "\n".join([body(row).split("\n")[0], *lines, f"{label(row)}: {row['answer']}"])


def _negated(row: dict, graph) -> str:
    template = PHRASES[row["language"]]["not"]
    lines = [f"- {template.format(e[0].lower() + e[1:])}" for e in _entries(row)]
    return "\n".join([body(row).split("\n")[0], *lines, f"{label(row)}: {row['answer']}"])


def _shifted_years(row: dict, graph) -> str:
    """The reference with every year moved: each statement now contradicts the world."""
    text = body(row)
    for item in _rubric(row):
        if item["year"]:
            text = re.sub(rf"\b{item['year']}\b", str(item["year"] - 7), text)
    return f"{text}\n{label(row)}: {row['answer']}"


def _swapped_entities(row: dict, graph) -> str:
    """The reference with each statement's other entity replaced by the next item's."""
    items, entries = _rubric(row), _entries(row)
    others = [_other(i) for i in items]
    if len(set(others)) < 2:
        return None
    lines = [
        f"- {entry.replace(others[i], others[(i + 1) % len(others)])}" for i, entry in enumerate(entries)
    ]
    return "\n".join([body(row).split("\n")[0], *lines, f"{label(row)}: {row['answer']}"])


def _names_with_years(row: dict, graph) -> str:
    """'Mara Quill 1987.' per item: the keys, no statement."""
    lines = [" ".join([_other(i), *([str(i["year"])] if i["year"] else [])]) + "." for i in _rubric(row)]
    return "\n".join([*lines, f"{label(row)}: {row['answer']}"])


def _paraphrases(row: dict, graph) -> list[str] | None:
    """Each rubric fact in a paraphrase other than the one the context uses."""
    if graph is None:
        return None
    from longblocks.render.documents import Renderer  # only here: jinja is not needed otherwise

    renderer = Renderer(graph)
    out = []
    for item, entry in zip(_rubric(row), _entries(row), strict=False):
        fact = graph.facts[item["fact"]]
        n = renderer.n_variants(fact.relation)
        options = [renderer.sentence(fact, k) for k in range(n)]
        others = [s for s in options if s.strip() != entry.strip() and s.strip() not in entry]
        out.append(random.Random(f"{row['id']}:{fact.id}").choice(others or options))
    return out


def _paraphrased_list(row: dict, graph) -> str | None:
    sentences = _paraphrases(row, graph)
    if sentences is None:
        return None
    if not row["verification"]["ordered"]:
        random.Random(row["id"]).shuffle(sentences)  # a profile may come in any order
    return "\n".join([row["answer"], *(f"* {s}" for s in sentences), f"{label(row)}: {row['answer']}"])


def _paraphrased_prose(row: dict, graph) -> str | None:
    """The facts in other words as one paragraph, without a closing answer line."""
    sentences = _paraphrases(row, graph)
    return None if sentences is None else " ".join(sentences)


def _reordered(row: dict, graph) -> str | None:
    if row["verification"]["ordered"]:
        return None
    lines = [f"- {e}" for e in reversed(_entries(row))]
    return "\n".join([*lines, f"{label(row)}: {row['answer']}"])


ATTACKS: dict[str, Response] = {
    "reference": lambda row, graph: row["reference"],
    "empty": lambda row, graph: "",
    "pasted_context": lambda row, graph: _pasted(row),
    "keyword_soup": lambda row, graph: _soup(row),
    "answer_spam": lambda row, graph: _spam(row) if row["verification"]["kind"] != "rubric" else None,
    "hedged_list": lambda row, graph: _hedge(row),
    "always_abstain": lambda row, graph: f"{label(row)}: {lexicon(row['language'])['abstain']}",
    "negated_report": _longform(_negated),
    "shifted_years": _longform(_shifted_years),
    "swapped_entities": _longform(_swapped_entities),
    "names_with_years": _longform(_names_with_years),
}

FORMS: dict[str, Response] = {
    "answer_line": _qa(lambda r: r["reference"]),
    "final_answer": _qa(lambda r: f"{body(r)}\n{PHRASES[r['language']]['final']}: {r['answer']}{cites(r)}"),
    "the_answer_is": _qa(
        lambda r: f"{body(r)}\n{PHRASES[r['language']]['answer_is'].format(r['answer'] + cites(r))}"
    ),
    "boxed": _qa(lambda r: f"{body(r)}\n$\\boxed{{{r['answer']}}}${cites(r)}"),
    "inline_trailing": _qa(
        lambda r: f"{body(r)} {PHRASES[r['language']]['so']} {label(r)}: {r['answer']}{cites(r)}"
    ),
    "next_line": _qa(lambda r: f"{body(r)}\n{label(r)}:\n{r['answer']}{cites(r)}"),
    "bold_label": _qa(lambda r: f"{body(r)}\n**{label(r)}:** **{r['answer']}**{cites(r)}"),
    "cites_bracket_list": _qa(lambda r: f"{body(r)}\n{label(r)}: {r['answer']}{cites(r, '[', ']')}"),
    "cites_paren_list": _qa(lambda r: f"{body(r)}\n{label(r)}: {r['answer']}{cites(r, '(', ')')}"),
    "alias": _qa(
        lambda r: (
            f"{body(r)}\n{label(r)}: {r['verification']['aliases'][0]}{cites(r)}"
            if r["verification"]["aliases"]
            else None
        )
    ),
    "abstain_word": _abstain(lambda r: r["reference"]),
    "abstain_phrase_1": _abstain(lambda r: f"{body(r)}\n{label(r)}: {PHRASES[r['language']]['abstain'][0]}"),
    "abstain_phrase_2": _abstain(lambda r: f"{body(r)}\n{label(r)}: {PHRASES[r['language']]['abstain'][1]}"),
    "abstain_sentence": _abstain(lambda r: f"{body(r)}\n{PHRASES[r['language']]['abstain_sentence']}"),
    "report": _longform(lambda r, g: r["reference"]),
    "report_no_closing_line": _longform(lambda r, g: body(r)),
    "report_reordered": _longform(_reordered),
    "report_paraphrased_list": _longform(_paraphrased_list),
    "report_paraphrased_prose": _longform(_paraphrased_prose),
}


def reward_attack_table(
    rows: Iterable[dict],
    graphs: Mapping[str, object] | None = None,
    responses: Mapping[str, Response] | None = None,
) -> list[dict]:
    """Mean reward of every attack (default `ATTACKS`; pass `FORMS` for the natural forms)
    per (attack, task, kind, language): records {attack, task, kind, language, n, mean, zero}
    where `zero` is the share of responses scoring 0. `graphs` maps world ids to WorldGraphs."""
    responses = ATTACKS if responses is None else responses
    totals: dict[tuple, list[float]] = defaultdict(list)
    for row in rows:
        graph = (graphs or {}).get(row["world_id"])
        for name, make in responses.items():
            response = make(row, graph)
            if response is None:
                continue
            key = (name, row["task"], row["verification"]["kind"], row["language"])
            totals[key].append(score(response, row["verification"]).value)
    return [
        {
            "attack": name, "task": task, "kind": kind, "language": language, "n": len(values),
            "mean": round(sum(values) / len(values), 4), "zero": round(values.count(0.0) / len(values), 4),
        }
        for (name, task, kind, language), values in sorted(totals.items())
    ]  # fmt: skip


def format_table(rows: Iterable[dict], graphs: Mapping[str, object] | None = None) -> list[dict]:
    """`reward_attack_table` over the natural correct forms."""
    return reward_attack_table(rows, graphs, FORMS)
