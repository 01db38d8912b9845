import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longblocks.build import WorldJob, generate_example
from longblocks.config import BuildConfig
from longblocks.render.context import ContextBuilder
from longblocks.render.documents import Renderer
from longblocks.rewards import (
    ORDER_WEIGHT,
    length_budget,
    longblocks_reward,
    order_agreement,
    score,
    score_rubric,
)
from longblocks.world.entities import lexicon

CUES = lexicon("en")["relation_cues"]


def _item(fact, relation, other, year, known=(), aliases=()):
    return json.dumps(
        {
            "fact": fact, "relation": relation, "other": other, "names": [other, *aliases],
            "cues": CUES[relation], "language": "en", "year": year, "known": sorted({*known, year} - {None}),
        }
    )  # fmt: skip


# A hand-made timeline of Ostwick Holdings: founded by Mara Quill (1987), moved to Quillford
# (1990), employs Ben Ode (since 1995), whose birth year 1960 the world also records.
GOLD = {
    "kind": "rubric",
    "answer": "Ostwick Holdings",
    "aliases": ["Ostwick"],
    "ordered": True,
    "rubric": [
        _item("f1", "founded_by", "Mara Quill", 1987, {1950}, aliases=["M. Quill"]),
        _item("f2", "headquartered_in", "Quillford", 1990, {1800}),
        _item("f3", "works_for", "Ben Ode", 1995, {1960}),
        _item("f4", "works_for", "Ada Lind", 2001, {1970}),
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
    # f1 is not stated (recall 3/4), contradicted (penalty 1 - 1/4), and its line is a claim
    # stating nothing (precision 3/4).
    assert score(_report(wrong), GOLD).value == pytest.approx(0.75**3)
    assert score(_report(wrong), GOLD).value < score(_report(LINES[1:]), GOLD).value


def test_other_true_years_are_no_contradiction():
    lines = [
        "In 1990, Ostwick Holdings moved its head office to Quillford.",
        "Mara Quill, born in 1950, founded it in 1987.",
        "Ben Ode (born 1960) has worked there since 1995.",
        "Ada Lind joined in 2001.",
    ]
    assert score(_report(lines), {**GOLD, "ordered": False}).value == 1.0
    # A true fact about another entity contradicts nothing; as a claim of its own it costs
    # precision (4 of 5 claims state an item).
    assert score(_report(["Ben Ode was born in 1960.", *LINES]), GOLD).value == pytest.approx(0.8)
    # Another rubric entity inside a claim's stretch: that claim (f2) is not stated, and its
    # year beside the founding (f1, undated here) contradicts nothing: 2 of 4 items stated,
    # 2 of 3 claims stating, no contradiction.
    nested = ["In 1990, Ostwick Holdings, founded by Mara Quill, moved its head office to Quillford."]
    value = score(_report([*nested, *LINES[2:]]), {**GOLD, "ordered": False}).value
    assert value == pytest.approx(0.5 * 2 / 3)


def test_statuses():
    assert score_rubric("", GOLD).status == "unparsable"
    assert score_rubric(_report(LINES), GOLD, truncated=True).status == "truncated"
    assert score_rubric("<think>" + "\n".join(LINES), GOLD).status == "truncated"
    hidden = "<think>" + "\n".join(LINES) + "</think>\nAnswer: Ostwick Holdings"
    assert score_rubric(hidden, GOLD) == score_rubric("Answer: Ostwick Holdings", GOLD)
    assert score_rubric(hidden, GOLD) == score_rubric("Nothing to report.", GOLD)
    assert score_rubric(hidden, GOLD).value == 0.0 and score_rubric(hidden, GOLD).status == "wrong"


def test_the_closing_answer_line_is_optional():
    assert score_rubric("\n".join(LINES), GOLD).value == 1.0
    assert score_rubric(" ".join(LINES), GOLD).value == 1.0


def test_a_claim_needs_its_relation_not_only_its_keys():
    keys_only = ["Mara Quill, 1987.", "Quillford 1990.", "Ben Ode: 1995.", "Ada Lind (2001)."]
    assert score(_report(keys_only), GOLD) == score(_report([]), GOLD)
    assert score(_report(keys_only), GOLD).value == 0.0
    wrong_relation = ["Ostwick Holdings was founded by Ben Ode in 1995."]  # Ben Ode works there
    assert score(_report(wrong_relation), GOLD).value == 0.0


def test_keyword_soup_states_nothing():
    soup = "1987 1990 1995 2001 Mara Quill Quillford Ben Ode Ada Lind founded moved worked joined"
    assert score(_report([soup]), GOLD).value == 0.0
    per_line = [f"{y} Mara Quill Quillford Ben Ode Ada Lind founded headquarters work" for y in (1987, 1990)]
    assert score(_report(per_line), GOLD).value == 0.0


def test_negated_statements_do_not_count():
    negated = [
        "Ostwick Holdings was not founded by Mara Quill in 1987.",
        "In 1990 it never moved its head office to Quillford.",
        "Ben Ode hasn't worked there since 1995.",
        "Ada Lind has nothing to do with it and did not join in 2001.",
    ]
    assert score(_report(negated), GOLD).value == 0.0
    assert score(_report([negated[0], *LINES[1:]]), GOLD).value == pytest.approx(0.75 * 0.75)


def test_a_fact_given_to_another_entity_costs():
    # Quillford's move is given to Ben Ode (its year with his name): f2 unstated (recall 3/4),
    # misattributed (penalty 1 - 1/4), its line a claim stating nothing (precision 3/4).
    lines = [LINES[0], "In 1990 Ben Ode moved the head office.", LINES[2], LINES[3]]
    assert score(_report(lines), GOLD).value == pytest.approx(0.75**3)


def test_aliases_of_the_other_entity_count():
    lines = ["Ostwick Holdings was founded by M. Quill in 1987.", *LINES[1:]]
    assert score(_report(lines), GOLD).value == 1.0


def test_length_beyond_the_budget_shrinks_the_reward():
    budget = length_budget(4)
    filler = " ".join(["Documents were read carefully"] * 100)
    assert score(_report(LINES), GOLD).value == 1.0
    words = len(_report(LINES).split())
    padded = _report([*LINES, " ".join(filler.split()[: budget - words])])
    assert score(padded, GOLD).value == 1.0  # exactly the budget
    over = _report([*LINES, " ".join(filler.split()[: budget // 2 + budget - words])])
    assert score(over, GOLD).value == pytest.approx(0.5, abs=0.01)
    assert score(_report([*LINES, filler, filler]), GOLD) == score_rubric("", GOLD).__class__(0.0, "too_long")


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
        n, item = next((n, i) for n, i in dated if i["year"] and str(i["year"]) not in i["other"])
        bad = next(
            str(y) for y in range(1500, 3000) if str(y) not in row["reference"] and y not in item["known"]
        )
        wrong = [*items[:n], items[n].replace(str(item["year"]), bad), *items[n + 1 :]]
        omitted = [*items[:n], *items[n + 1 :]]
        value = score("\n".join([head, *wrong, answer]), row["verification"]).value
        assert value < score("\n".join([head, *omitted, answer]), row["verification"]).value < 1.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_subset_of_statements_earns_its_share(rows, data):
    """A profile's items in any order and a timeline's in order, with or without the closing
    line: the reward is the share of items stated."""
    row = data.draw(st.sampled_from(rows))
    head, items, answer = _parts(row)
    keep = data.draw(st.lists(st.sampled_from(range(len(items))), unique=True))
    if row["verification"]["ordered"]:
        keep = sorted(keep)
    closing = data.draw(st.sampled_from([[answer], []]))
    value = score("\n".join([head, *(items[k] for k in keep), *closing]), row["verification"]).value
    assert value == pytest.approx(len(keep) / len(items))


def test_a_report_in_its_own_words_scores_one():
    prose = (
        "Mara Quill established Ostwick Holdings in 1987. Three years on, in 1990, the firm "
        "relocated its headquarters to Quillford. Ben Ode joined the staff in 1995, and Ada Lind "
        "was hired in 2001."
    )
    assert score(prose, GOLD).value == 1.0
    listed = "**Ostwick Holdings**\n* 1987 – founded by M. Quill\n* 1990 – head office moved to Quillford\n"
    listed += "* 1995 – Ben Ode starts work there\n* 2001 – Ada Lind is employed"
    assert score(listed, GOLD).value == 1.0
