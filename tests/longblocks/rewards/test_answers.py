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
        ("reasoning\n\n**Answer:** Sherman Reach.", "Sherman Reach", ()),
        ("Answer: Nixonford (D3807, D9232)", "Nixonford", ("D3807", "D9232")),
        ("Answer: Nixonford [D3807; d9232].", "Nixonford", ("D3807", "D9232")),
        ("Answer:\n\n**Nixonford** [D3807]", "Nixonford", ("D3807",)),
        ("So it must be this town. Answer: Nixonford", "Nixonford", ()),
        ("Final answer: Nixonford", "Nixonford", ()),
        ("Endgültige Antwort: Nixonford", "Nixonford", ()),
        ("Resposta final: Nixonford", "Nixonford", ()),
        ("The chain ends there.\nThe answer is Nixonford [D3807, D9232].", "Nixonford", ("D3807", "D9232")),
        ("A resposta é Nixonford.", "Nixonford", ()),
        ("Die Antwort lautet Nixonford.", "Nixonford", ()),
        ("Thus $\\boxed{\\text{Nixonford}}$ (D3807)", "Nixonford", ("D3807",)),
        ("Answer: The answer is Nixonford", "Nixonford", ()),
        ("[D3807] [D9232] Answer: Nixonford", "Nixonford", ("D3807", "D9232")),
        ("answer : Mara Quill [D1234][D0042] [D1234]", "Mara Quill", ("D1234", "D0042")),
        ("Resposta: Vila Nova", "Vila Nova", ()),
        ("Antwort: Müller Werke", "Müller Werke", ()),
        ("Answer: second\nmore thought\nAnswer: second", "second", ()),
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
    responses = ("Answer: x", "none", "<think>", "Answer: Sherman Reach", "Answer: Sherman Reach or Quill")
    counts = count_statuses([score(r, GOLD) for r in responses])
    assert counts == {
        "ok": 1, "wrong": 1, "hedged": 1, "uncited": 0, "too_long": 0, "unparsable": 1, "truncated": 1
    }  # fmt: skip


def test_reference_scores_one_on_every_row(tiny_rows):
    rows, _ = tiny_rows
    all_rows = [r for split in rows.values() for r in split]
    assert all_rows
    for row in all_rows:
        assert score(row["reference"], row["verification"]).value == 1.0, row["id"]


def test_rewards_package_is_pure_of_generator_dependencies():
    import ast
    from pathlib import Path

    sources = [p.read_text(encoding="utf-8") for p in Path(rewards.__file__).parent.glob("*.py")]
    imported = {
        alias.name.split(".")[0]
        for source in sources
        for node in ast.walk(ast.parse(source))
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
        ("Answer: Nixonford [D3807, D9232]", 1.0),
        ("Answer: Nixonford (D3807, D9232)", 1.0),
        ("Answer: Nixonford (D3807; D9232; D1111; D2222)", 2 * 0.5 * 1.0 / 1.5),
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
        ("Answer: not in the documents", 1.0),
        ("Answer: cannot be determined", 1.0),
        ("The documents do not say.\nAnswer: The answer cannot be determined from the documents.", 1.0),
        ("Nothing matches. The answer cannot be determined from the documents.", 1.0),
        ("Resposta: não consta nos documentos", 1.0),
        ("Resposta: Não é possível determinar.", 1.0),
        ("Antwort: nicht in den Dokumenten", 1.0),
        ("Die Antwort lässt sich aus den Dokumenten nicht bestimmen.", 1.0),
        ("Answer: Nixonford [D1]", 0.0),
        ("Answer: Nixonford or unanswerable", 0.0),
        ("Answer: unanswerable\nAnswer: Nixonford", 0.0),
        ("no idea", 0.0),
    ],
)
def test_abstain_reward(response, value):
    assert score(response, {"kind": "abstain", "answer": "unanswerable"}).value == value


def test_abstention_words_match_the_lexicons():
    from longblocks.rewards import ABSTAIN_WORDS
    from longblocks.world.entities import lexicon

    assert tuple(lexicon(lang)["abstain"] for lang in ("en", "pt", "de")) == ABSTAIN_WORDS


@pytest.mark.parametrize(
    ("response", "status"),
    [
        ("Answer: Sherman Ridge", "wrong"),
        ("Answer: Sherman Reach or Sherman Ridge", "hedged"),
        ("Answer: Sherman Ridge, Sherman Reach, Quill Vale", "hedged"),
        ("Answer: Sherman Reach / Quill Vale", "hedged"),
        ("Answer: Sherman Ridge\nAnswer: Sherman Reach", "hedged"),  # spam: the last line does not win
        ("\\boxed{Quill Vale}\nAnswer: Sherman Reach", "hedged"),
        ("Answer: unanswerable", "wrong"),
        ("Answer:", "unparsable"),
    ],
)
def test_every_zero_says_why(response, status):
    assert score(response, GOLD) == rewards.Score(0.0, status)


def test_repeating_the_same_answer_is_no_hedge():
    assert score("The answer is Sherman Vale.\nAnswer: Sherman Reach", GOLD).value == 1.0  # an alias
    assert score("\\boxed{Sherman Reach}\n\nAnswer: **Sherman Reach**", GOLD).value == 1.0


def test_right_answer_without_a_right_citation_is_uncited():
    assert score("Answer: Nixonford", CITED) == rewards.Score(0.0, "uncited")
    assert score("Answer: Nixonford [D1111]", CITED) == rewards.Score(0.0, "uncited")
