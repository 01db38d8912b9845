import json

import pytest

from longblocks.build import WorldJob, generate_example
from longblocks.config import BuildConfig
from longblocks.render.context import ContextBuilder
from longblocks.render.documents import Renderer
from longblocks.rewards import ORDER_WEIGHT, longblocks_reward, order_agreement, score, score_rubric


def _item(fact, keys, year, known=()):
    return json.dumps({"fact": fact, "relation": "r", "keys": keys, "year": year, "known": sorted(known)})


# A hand-made timeline of Ostwick Holdings: founded by Mara Quill (1987), moved to Quillford
# (1990), employs Ben Ode (since 1995), whose birth year 1960 the world also records.
GOLD = {
    "kind": "rubric",
    "answer": "Ostwick Holdings",
    "ordered": True,
    "rubric": [
        _item("f1", ["Mara Quill", "1987"], 1987, {1950, 1987}),
        _item("f2", ["Quillford", "1990"], 1990, {1800, 1990}),
        _item("f3", ["Ben Ode", "1995"], 1995, {1960, 1995}),
        _item("f4", ["Ada Lind", "2001"], 2001, {1970, 2001}),
    ],
}
LINES = [
    "Ostwick Holdings was founded by Mara Quill in 1987.",
    "In 1990 it moved its head office to Quillford.",
    "Ben Ode has worked there since 1995.",
    "Ada Lind joined the company in 2001.",
]


def _report(lines, answer="Answer: Ostwick Holdings"):
    return "\n".join(["A history from the documents:", *lines, answer])


def test_full_ordered_report_scores_one():
    assert score(_report(LINES), GOLD).value == 1.0
    one_paragraph = " ".join(LINES)  # sentences, not lines, are the unit
    assert score(_report([one_paragraph]), GOLD).value == 1.0


def test_recall_is_the_share_of_items_stated():
    assert score(_report(LINES[:2]), GOLD).value == pytest.approx(0.5)
    assert score(_report(LINES[:1]), GOLD).value == pytest.approx(0.25)
    assert score(_report(["Mara Quill founded it; Ben Ode joined later."]), GOLD).value == 0.0


def test_reversed_timeline_loses_the_order_share():
    assert score(_report(LINES[::-1]), GOLD).value == pytest.approx(1 - ORDER_WEIGHT)
    one_swap = [LINES[1], LINES[0], *LINES[2:]]  # 5 of 6 pairs in order
    assert score(_report(one_swap), GOLD).value == pytest.approx(1 - ORDER_WEIGHT / 6)
    assert score(_report(LINES[::-1]), {**GOLD, "ordered": False}).value == 1.0


def test_order_agreement():
    assert order_agreement([(0, 0), (1, 0), (2, 0)], [1, 2, 3]) == 1.0
    assert order_agreement([(2, 0), (1, 0), (0, 0)], [1, 2, 3]) == 0.0
    assert order_agreement([(0, 9), (0, 3), None], [1, 2, 3]) == 0.0  # offsets within a sentence
    assert order_agreement([(1, 0), (0, 0)], [5, 5]) == 1.0  # same year: no pair to order


def test_a_misdated_fact_is_contradicted():
    wrong = [LINES[0].replace("1987", "1984"), *LINES[1:]]
    # f1 is not stated (recall 3/4) and contradicted (penalty 1 - 1/4).
    assert score(_report(wrong), GOLD).value == pytest.approx(0.75 * 0.75)
    assert score(_report(wrong), GOLD).value < score(_report(LINES[1:]), GOLD).value


def test_other_true_years_are_no_contradiction():
    lines = [
        "In 1990, Ostwick Holdings, founded by Mara Quill, moved to Quillford.",  # states f2 in full
        "Mara Quill, born in 1950, founded it in 1987.",
        "Ben Ode (born 1960) has worked there since 1995.",
        "Ada Lind joined in 2001.",
    ]
    assert score(_report(lines), {**GOLD, "ordered": False}).value == 1.0
    assert score(_report(["Ben Ode was born in 1960.", *LINES]), GOLD).value == 1.0


def test_statuses():
    assert score_rubric("", GOLD).status == "unparsable"
    assert score_rubric("\n".join(LINES), GOLD).status == "unparsable"  # no closing answer line
    assert score_rubric(_report(LINES), GOLD, truncated=True).status == "truncated"
    assert score_rubric("<think>" + "\n".join(LINES), GOLD).status == "truncated"
    for response in ("", "\n".join(LINES), "<think>" + "\n".join(LINES)):
        assert score_rubric(response, GOLD).value == 0.0
    hidden = "<think>" + "\n".join(LINES) + "</think>\nAnswer: Ostwick Holdings"
    assert score_rubric(hidden, GOLD) == score_rubric("Answer: Ostwick Holdings", GOLD)
    assert score_rubric(hidden, GOLD).value == 0.0 and score_rubric(hidden, GOLD).status == "ok"


def test_trl_signature_dispatches_rubric_rows():
    completions = [_report(LINES), [{"role": "assistant", "content": _report(LINES[:2])}]]
    assert longblocks_reward(completions, [GOLD, GOLD]) == pytest.approx([1.0, 0.5])


# Generated rows: the reference, half of it, a reversed timeline, a contradicted fact.


@pytest.fixture(scope="module")
def rows(graph, counter):
    builder = ContextBuilder(Renderer(graph), counter)
    job = WorldJob(0, graph.world.id, graph.world.seed, "train", "en", (4096,) * 12, ("longform",) * 12)
    made = [generate_example(builder, job, j, 4096, BuildConfig()).model_dump() for j in range(12)]
    assert {r["verification"]["ordered"] for r in made} == {True, False}
    return made


def _parts(row):
    """(heading, one line per rubric item, answer line) of a reference."""
    lines = row["reference"].splitlines()
    assert len(lines) == len(row["verification"]["rubric"]) + 2
    return lines[0], lines[1:-1], lines[-1]


def test_generated_reference_scores_one(rows):
    assert min(score(r["reference"], r["verification"]).value for r in rows) >= 0.99


def test_generated_half_report_scores_about_half(rows):
    for row in rows:
        head, items, answer = _parts(row)
        half = "\n".join([head, *items[1::2], answer])
        assert 0.4 <= score(half, row["verification"]).value <= 0.6, row["id"]


def test_generated_reversed_timeline_scores_clearly_lower(rows):
    for row in (r for r in rows if r["verification"]["ordered"]):
        head, items, answer = _parts(row)
        reversed_ = score("\n".join([head, *items[::-1], answer]), row["verification"]).value
        assert reversed_ <= 1 - ORDER_WEIGHT + 0.1, row["id"]


def test_generated_contradicted_fact_lowers_the_score(rows):
    for row in rows:
        head, items, answer = _parts(row)
        dated = [(n, json.loads(i)) for n, i in enumerate(row["verification"]["rubric"])]
        # an item whose year is not part of a name (event names carry their year)
        n, item = next((n, i) for n, i in dated if i["year"] and str(i["year"]) not in i["keys"][0])
        bad = next(
            str(y) for y in range(1500, 3000) if str(y) not in row["reference"] and y not in item["known"]
        )
        wrong = [*items[:n], items[n].replace(str(item["year"]), bad), *items[n + 1 :]]
        omitted = [*items[:n], *items[n + 1 :]]
        value = score("\n".join([head, *wrong, answer]), row["verification"]).value
        assert value < score("\n".join([head, *omitted, answer]), row["verification"]).value < 1.0
