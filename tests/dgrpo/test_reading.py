"""dgrpo.study.reading: tells a model that quotes the documents from one that only echoes the question."""

import pytest

from dgrpo.study.reading import mean_reading, reading

DOCUMENT = (
    "[D1] Mara Quill was born in Ostwick. Lena Bright was born in Harlow.\n\n[D2] Harlow lies on a river."
)
ROW = {"document": DOCUMENT, "verification": {"evidence": [{"sentence": "Mara Quill was born in Ostwick."}]}}


def record(completion: str, reward: float, row_id: str = "r1") -> dict:
    return {"id": row_id, "completion": completion, "reward": reward}


def test_quoting_echoing_and_guessing_are_told_apart():
    rows = {"r1": ROW}
    records = [
        record("I follow the chain.\n1. Mara Quill was born in Ostwick.\nAnswer: Ostwick", 1.0),  # reads
        record("1. Lena Bright was born in Harlow.\nAnswer: Harlow", 0.0),  # quotes the wrong sentence
        record("1. Mara Quill was born in Harlow.\nAnswer: Harlow", 0.0),  # echoes, guesses a name
        record("1. Mara Quill was born in Paris.\nAnswer: Paris", 0.0),  # invents
        record("no layout at all", 0.0, row_id="unknown"),  # not a held-out row: skipped
    ]
    shares = reading(records, rows)
    assert shares == {"quoted": pytest.approx(2 / 4), "evidence": pytest.approx(1 / 4),
                      "name_from_context": pytest.approx(2 / 3)}  # fmt: skip
    assert (
        mean_reading([shares, {"quoted": 0.0, "evidence": 0.0, "name_from_context": 0.0}])["quoted"] == 0.25
    )
