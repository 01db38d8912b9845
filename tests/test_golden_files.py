"""The golden-file check itself: a missing golden fails, a changed value fails, --update-golden writes."""

import json

import pytest

from tests.golden_files import match_golden


def test_a_missing_golden_file_fails(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="is missing: run pytest with --update-golden"):
        match_golden(tmp_path / "row.json", {"a": 1}, update=False)
    assert not (tmp_path / "row.json").exists()  # nothing written that a later run would trust


def test_update_writes_and_a_different_value_fails(tmp_path):
    path = tmp_path / "golden" / "row.json"
    match_golden(path, {"b": [1, 2], "a": "é"}, update=True, sort_keys=True)
    assert (
        path.read_text(encoding="utf-8")
        == json.dumps({"a": "é", "b": [1, 2]}, indent=1, ensure_ascii=False) + "\n"
    )
    match_golden(path, {"a": "é", "b": [1, 2]}, update=False)
    with pytest.raises(AssertionError):
        match_golden(path, {"a": "e", "b": [1, 2]}, update=False)
