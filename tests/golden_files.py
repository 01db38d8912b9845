"""Golden files: values pinned in tests/golden/, rewritten only on purpose with --update-golden."""

import json
from pathlib import Path

import pytest


def match_golden(path: Path, value, update: bool, **dump) -> None:
    """Assert `value` equals the JSON in `path`; with `update`, write it first (`dump`: json.dumps
    options). A missing golden file fails: a test that wrote its own expectation could not fail."""
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value, indent=1, ensure_ascii=False, **dump) + "\n", encoding="utf-8")
    if not path.is_file():
        pytest.fail(f"golden file {path} is missing: run pytest with --update-golden once and commit it")
    assert value == json.loads(path.read_text(encoding="utf-8"))
