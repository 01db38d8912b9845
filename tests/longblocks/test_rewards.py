import pytest

from longblocks import rewards
from longblocks.rewards import (
    count_statuses,
    exact_match,
    longblocks_reward,
    normalize,
    parse_response,
    score,
)

GOLD = {"kind": "exact", "answer": "Sherman Reach", "aliases": ["Sherman Vale"]}


@pytest.mark.parametrize(
    ("response", "answer", "citations"),
    [
        ("Answer: Sherman Reach", "Sherman Reach", ()),
        ("reasoning\n\n**Answer:** Sherman Reach.", "Sherman Reach.", ()),
        ("answer : Mara Quill [D1234][D0042] [D1234]", "Mara Quill", ("D1234", "D0042")),
        ("Resposta: Vila Nova", "Vila Nova", ()),
        ("Antwort: Müller Werke", "Müller Werke", ()),
        ("Answer: first\nmore thought\nAnswer: second", "second", ()),
        ("<think>Answer: hidden</think>\nAnswer: shown", "shown", ()),
    ],
)
def test_parse_response(response, answer, citations):
    parsed = parse_response(response)
    assert parsed.status == "ok" and parsed.answer == answer and parsed.citations == citations


@pytest.mark.parametrize(
    ("response", "status"),
    [("I think it is Sherman Reach", "unparsable"), ("", "unparsable"), ("<think>still going", "truncated")],
)
def test_unparsable_and_truncated_score_zero(response, status):
    result = score(response, GOLD)
    assert result.value == 0.0 and result.status == status


def test_truncation_flag_wins_over_content():
    assert score("Answer: Sherman Reach", GOLD, truncated=True).status == "truncated"


def test_normalisation_and_aliases():
    assert normalize("The Ávila  Works.") == "avila works"
    assert normalize("Die Müller-Werke") == "muller werke"
    assert exact_match("the sherman reach", "Sherman Reach")
    assert exact_match("Sherman Vale", "Sherman Reach", ["Sherman Vale"])
    assert not exact_match("Sherman", "Sherman Reach")
    assert score("Answer: sherman reach!", GOLD).value == 1.0
    assert score("Answer: Sherman Ridge", GOLD).value == 0.0


def test_trl_signature_accepts_strings_and_messages():
    completions = ["Answer: Sherman Reach", [{"role": "assistant", "content": "Answer: nope"}], "no answer"]
    values = longblocks_reward(completions=completions, verification=[GOLD] * 3, prompts=["p"] * 3)
    assert values == [1.0, 0.0, 0.0]
    assert longblocks_reward(["Answer: Sherman Reach"], [GOLD], truncated=[True]) == [0.0]


def test_count_statuses():
    scores = [score(r, GOLD) for r in ("Answer: x", "none", "<think>", "Answer: Sherman Reach")]
    assert count_statuses(scores) == {"ok": 2, "unparsable": 1, "truncated": 1}


def test_reference_scores_one_on_every_row(tiny_rows):
    rows, _ = tiny_rows
    all_rows = [r for split in rows.values() for r in split]
    assert all_rows
    for row in all_rows:
        assert score(row["reference"], row["verification"]).value == 1.0, row["id"]


def test_rewards_module_is_pure_of_generator_dependencies():
    import ast
    import inspect

    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(inspect.getsource(rewards)))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imported.isdisjoint({"networkx", "faker", "jinja2", "dgrpo"})


CITED = {"kind": "cited", "answer": "Nixonford", "aliases": [], "citations": ["D3807", "D9232"]}


@pytest.mark.parametrize(
    ("response", "value"),
    [
        ("Answer: Nixonford [D3807] [D9232]", 1.0),
        ("Answer: Nixonford [D9232][D3807]", 1.0),
        ("Answer: Nixonford [D3807]", 2 * 1.0 * 0.5 / 1.5),  # P=1, R=1/2
        ("Answer: Nixonford [D3807] [D9232] [D1111] [D2222]", 2 * 0.5 * 1.0 / 1.5),  # P=1/2, R=1
        ("Answer: Nixonford", 0.0),  # right answer, no citation
        ("Answer: Elsewhere [D3807] [D9232]", 0.0),
        ("Answer: unanswerable", 0.0),
    ],
)
def test_cited_reward_is_correctness_times_citation_f1(response, value):
    assert score(response, CITED).value == pytest.approx(value)


@pytest.mark.parametrize(
    ("response", "value"),
    [
        ("Answer: unanswerable", 1.0),
        ("Resposta: sem resposta", 1.0),
        ("Antwort: Nicht beantwortbar.", 1.0),
        ("Answer: Nixonford [D1]", 0.0),
        ("no idea", 0.0),
    ],
)
def test_abstain_reward(response, value):
    assert score(response, {"kind": "abstain", "answer": "unanswerable"}).value == value


def test_abstention_words_match_the_lexicons():
    from longblocks.rewards import ABSTAIN_WORDS
    from longblocks.world.entities import lexicon

    assert tuple(lexicon(lang)["abstain"] for lang in ("en", "pt", "de")) == ABSTAIN_WORDS
