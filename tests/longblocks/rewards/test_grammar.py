"""Property tests over the answer grammar: every documented form of a right answer scores 1,
every hedge 0, and no zero is silent."""

from hypothesis import given, settings
from hypothesis import strategies as st

from longblocks.rewards import STATUSES, parse_response, score
from longblocks.rewards.grammar import LABELS, is_abstention, normalize

# Words that survive normalisation (an article such as 'as' or 'die' alone would vanish).
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzäöüéãç", min_size=2, max_size=9).filter(normalize)
NAME = st.lists(WORD, min_size=1, max_size=3).map(lambda ws: " ".join(w.capitalize() for w in ws))
# Reasoning that holds no answer marker: plain words and sentence ends, no colon, no brackets.
REASONING = st.lists(st.sampled_from(["the", "chain", "leads", "to", "a", "town", ".", "\n", "so", "then"]))
IDS = st.lists(st.integers(1000, 9999).map(lambda n: f"D{n}"), min_size=1, max_size=3, unique=True)
LANGUAGES = st.sampled_from(["en", "pt", "de"])
STATEMENT = {"en": "The answer is {}.", "pt": "A resposta é {}.", "de": "Die Antwort lautet {}."}


def _citations(ids: list[str], style: int) -> str:
    return [
        " " + " ".join(f"[{i}]" for i in ids),
        f" [{', '.join(ids)}]",
        f" ({', '.join(ids)})",
        f" ({'; '.join(ids)})",
    ][style]


@st.composite
def correct_response(draw):
    """(response, gold answer, cited ids) in one of the documented forms."""
    gold, ids, language = draw(NAME), draw(IDS), draw(LANGUAGES)
    cites = _citations(ids, draw(st.integers(0, 3)))
    label = draw(st.sampled_from(LABELS[language])).title()
    form = draw(st.integers(0, 5))
    closing = [
        f"{label}: {gold}{cites}",
        f"**{label}:** {gold}{cites}",
        f"{label}:\n{gold}{cites}",
        f"So that is settled. {label}: {gold}{cites}",
        f"$\\boxed{{{gold}}}${cites}",
        STATEMENT[language].format(gold + cites),
    ][form]
    reasoning = " ".join(draw(REASONING))
    return f"{reasoning}\n{closing}", gold, ids


@settings(max_examples=300, deadline=None)
@given(correct_response())
def test_every_documented_form_of_a_right_answer_scores_one(case):
    response, gold, ids = case
    parsed = parse_response(response)
    assert normalize(parsed.answer) == normalize(gold) and set(parsed.citations) == set(ids)
    verification = {"kind": "cited", "answer": gold, "aliases": [], "citations": ids}
    assert score(response, verification).value == 1.0
    assert score(response, {"kind": "exact", "answer": gold, "aliases": []}).value == 1.0
    # Repeating the answer in another marker changes nothing.
    assert score(f"\\boxed{{{gold}}}\n{response}", verification).value == 1.0


@settings(max_examples=200, deadline=None)
@given(NAME, st.lists(NAME, min_size=1, max_size=3), LANGUAGES, st.integers(0, 2), st.data())
def test_hedges_earn_nothing(gold, others, language, style, data):
    others = [o for o in others if normalize(o) != normalize(gold)]
    if not others:
        return
    joiner = {"en": " or ", "pt": " ou ", "de": " oder "}[language]
    options = data.draw(st.permutations([gold, *others]))
    label = LABELS[language][-1].title()
    response = [
        f"{label}: {joiner.join(options)}",
        f"{label}: {', '.join(options)}",
        "\n".join(f"{label}: {o}" for o in options),  # answer-line spam, the gold somewhere
    ][style]
    result = score(response, {"kind": "exact", "answer": gold, "aliases": []})
    assert result.value == 0.0 and result.status == "hedged"


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=200),
    st.sampled_from(["exact", "cited", "abstain"]),
    NAME,
    IDS,
)
def test_no_zero_is_silent(response, kind, gold, ids):
    answer = "unanswerable" if kind == "abstain" else gold
    result = score(response, {"kind": kind, "answer": answer, "aliases": [], "citations": ids})
    assert 0.0 <= result.value <= 1.0 and result.status in STATUSES
    assert (result.value > 0) == (result.status == "ok")
    assert result == score(response, {"kind": kind, "answer": answer, "aliases": [], "citations": ids})


@given(
    st.sampled_from(
        [
            "unanswerable",
            "Not in the documents.",
            "cannot be determined",
            "It cannot be determined.",
            "The documents do not say.",
            "sem resposta",
            "não consta nos documentos",
            "Não é possível determinar a resposta com base nos documentos.",
            "nicht beantwortbar",
            "Kann nicht bestimmt werden.",
            "Die Antwort lässt sich aus den Dokumenten nicht bestimmen.",
        ]
    ),  # fmt: skip
    NAME,
)
def test_abstention_phrasings_alone_abstain(phrase, name):
    assert is_abstention(phrase)
    assert not is_abstention(f"{name} or {phrase}") and not is_abstention(name)
