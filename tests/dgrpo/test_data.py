"""Prompts, column mapping, over-length rows and the resumable batch order."""

import datasets
import pytest

from dgrpo.config import DataConfig
from dgrpo.data import Batches, load_split, prepare, prompt_messages, row_fields, tokenize_prompt
from dgrpo.errors import UserError
from dgrpo.models import embedded_tokenizer
from longblocks.row import prompt_messages as longblocks_messages


@pytest.fixture(scope="module")
def tokenizer():
    return embedded_tokenizer()


def test_default_prompt_is_longblocks_prompt_exactly(dataset_dir, tokenizer):
    cfg = DataConfig(path=str(dataset_dir))
    rows = load_split(cfg, "train")
    prepared = prepare(cfg, tokenizer, "train", with_response=True, with_verification=True)
    assert len(prepared.examples) == len(rows) and prepared.skipped_long == 0
    for row, example in zip(rows, prepared.examples, strict=True):
        assert prompt_messages(row_fields(row, cfg)) == longblocks_messages(row)
        text = tokenizer.apply_chat_template(
            longblocks_messages(row), tokenize=False, add_generation_prompt=True
        )
        assert example.prompt_ids == tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(example.prompt_ids) == row["n_tokens"]  # what longblocks measured
        assert example.response_ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(example.response_ids[:-1]) == row["reference"]
        assert example.verification["answer"] == row["answer"] and example.task == row["task"]
        assert (example.length, example.depth) == (row["length"], row["depth"])


def published_layout(tmp_path, documents=("Doc A says Ada lives in Rome.", "Doc B. " * 600)):
    """A dataset laid out like the published LongBlocks: no system/instruction/verification."""
    rows = {
        "id": [f"ex{i}" for i in range(len(documents))],
        "document": list(documents),
        "question": ["Where does Ada live?"] * len(documents),
        "answer": ["Rome"] * len(documents),
        "response_teacher": ["Ada lives in Rome.\nAnswer: Rome"] * len(documents),
    }
    path = tmp_path / "published"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(path))
    return path


def test_published_layout_trains_with_a_column_mapping(tmp_path, tokenizer):
    cfg = DataConfig(
        path=str(published_layout(tmp_path)),
        columns={"reference": "response_teacher"},
        defaults={"instruction": "End with 'Answer: <answer>'.", "task": "multihop"},
        max_prompt_tokens=200,
    )
    prepared = prepare(cfg, tokenizer, "train", with_response=True, with_verification=True)
    assert prepared.skipped_long == 1  # the long second document, counted, not truncated
    (example,) = prepared.examples
    assert example.verification == {"kind": "exact", "answer": "Rome"}
    assert example.task == "multihop" and example.length is None and example.depth is None
    assert tokenizer.decode(example.response_ids[:-1]) == "Ada lives in Rome.\nAnswer: Rome"
    text = tokenizer.decode(example.prompt_ids)
    assert "Doc A says Ada lives in Rome.\n\nWhere does Ada live?\n\nEnd with 'Answer: <answer>'." in text
    assert "<|im_start|>system" not in text  # no system field: no system message


def test_a_response_column_can_be_named_directly(tmp_path, tokenizer):
    cfg = DataConfig(path=str(published_layout(tmp_path)), response_field="response_teacher",
                     defaults={"instruction": "x"})  # fmt: skip
    example = prepare(cfg, tokenizer, "train", with_response=True, with_verification=False).examples[0]
    assert tokenizer.decode(example.response_ids[:-1]).endswith("Answer: Rome")


def test_custom_prompt_template_and_chat_kwargs(tmp_path, tokenizer):
    template = tmp_path / "user.jinja"
    template.write_text("Q: {{ question }}\n{{ document }}")
    cfg = DataConfig(path=str(published_layout(tmp_path)), prompt_template=str(template),
                     chat_template_kwargs={"enable_thinking": False})  # fmt: skip
    fields = {"question": "Why?", "document": "Because."}
    assert prompt_messages(fields, template.read_text()) == [{"role": "user", "content": "Q: Why?\nBecause."}]
    assert tokenizer.decode(
        tokenize_prompt(prompt_messages(fields, template.read_text()), tokenizer, cfg)
    ).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    example = prepare(cfg, tokenizer, "train", with_response=False, with_verification=True).examples[0]
    assert tokenizer.decode(example.prompt_ids).startswith("<|im_start|>user\nQ: Where does Ada live?\nDoc A")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, "has no column for field 'instruction'"),
        ({"columns": {"reference": "response_x"}}, "data.columns.reference names column 'response_x'"),
        (
            {"defaults": {"instruction": "x"}, "response_field": "teacher_says"},
            "no column for field 'teacher_says'",
        ),
        ({"path": "/nonexistent/dataset/dir"}, "cannot load dataset '/nonexistent/dataset/dir'"),
        (
            {"defaults": {"instruction": "x", "reference": "y"}, "max_prompt_tokens": 5},
            "no usable rows in split",
        ),
    ],
)
def test_bad_datasets_are_one_clear_error(tmp_path, tokenizer, changes, expected):
    cfg = DataConfig(**{"path": str(published_layout(tmp_path)), **changes})
    with pytest.raises(UserError, match=expected.replace("(", r"\(")):
        prepare(cfg, tokenizer, "train", with_response=True, with_verification=True)


def test_missing_split_lists_the_splits(dataset_dir):
    with pytest.raises(UserError, match="has no split 'dev'; choose one of train, validation, test"):
        load_split(DataConfig(path=str(dataset_dir)), "dev")


def test_batches_cross_epochs_and_resume_exactly():
    batches = Batches(5, batch_size=2, seed=3)
    seen = [batches.next() for _ in range(3)]
    assert sorted(seen[0] + seen[1] + seen[2][:1]) == [0, 1, 2, 3, 4]  # epoch 0 is a permutation
    state = batches.state_dict()
    following = [batches.next() for _ in range(4)]
    resumed = Batches(5, batch_size=2, seed=3)
    resumed.load_state_dict(state)
    assert [resumed.next() for _ in range(4)] == following
    assert Batches(5, 5, seed=0, shuffle=False).next() == [0, 1, 2, 3, 4]
