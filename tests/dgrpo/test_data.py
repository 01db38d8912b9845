"""Prompts, column mapping, over-length rows and the resumable batch order."""

import datasets
import pytest

from dgrpo import data
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


def test_rows_tokenized_in_chunks_keep_their_ids_and_positions(tmp_path, tokenizer, monkeypatch):
    documents = ("Ada lives in Rome.", "Doc B. " * 600, "Bo lives in Oslo.", "Cy lives in Lima.", "Di.")
    cfg = DataConfig(path=str(published_layout(tmp_path, documents)), response_field="response_teacher",
                     defaults={"instruction": "x"}, max_prompt_tokens=200)  # fmt: skip
    monkeypatch.setattr(data, "PREPARE_CHUNK", 2)  # chunk edges fall before and after the long row
    prepared = prepare(cfg, tokenizer, "train", with_response=True, with_verification=False)
    assert [e.index for e in prepared.examples] == [0, 2, 3, 4] and prepared.skipped_long == 1
    rows = load_split(cfg, "train")
    for example in prepared.examples:
        fields = row_fields(rows[example.index], cfg)
        assert example.prompt_ids == tokenize_prompt(prompt_messages(fields), tokenizer, cfg)
        response = tokenizer(fields["response_teacher"], add_special_tokens=False)["input_ids"]
        assert example.response_ids == [*response, tokenizer.eos_token_id]


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


# ---------------------------------------------------------------- local folders: never stale


def _dry_run(saved, out):
    from longblocks.publish import publish

    publish(saved, "me/longblocks", dry_run=out)
    return out


@pytest.fixture(scope="module")
def second_dataset(tmp_path_factory):
    """Another saved dataset with different rows and counts than `dataset_dir`."""
    from longblocks import io
    from longblocks.build import build
    from longblocks.config import BuildConfig

    cfg = BuildConfig(lengths=[1024], num_examples=6, examples_per_world=2, seed=11)
    out = tmp_path_factory.mktemp("second") / "ds"
    io.save(*build(cfg), cfg, out, overwrite=False)
    return out


def test_a_folder_rewritten_in_place_gives_the_new_rows(dataset_dir, second_dataset, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder, cfg = tmp_path / "hub", DataConfig(path=str(tmp_path / "hub"))
    for saved in (dataset_dir, second_dataset):  # the second publish reuses the folder
        shutil.rmtree(folder, ignore_errors=True)
        _dry_run(saved, folder)
        expected = datasets.load_from_disk(str(saved))
        for split in ("train", "validation", "test"):
            assert load_split(cfg, split)["id"] == expected[split]["id"], (saved, split)
    assert len(load_split(cfg, "train")) != len(datasets.load_from_disk(str(dataset_dir))["train"])


def test_data_path_dot_is_the_current_folder(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(_dry_run(dataset_dir, tmp_path / "hub"))
    expected = datasets.load_from_disk(str(dataset_dir))["test"]["id"]
    assert load_split(DataConfig(path="."), "test")["id"] == expected


def test_content_fingerprint_follows_the_bytes_not_the_names(tmp_path):
    from dgrpo.data import content_fingerprint

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.json").write_text('{"a": 1}\n')
    before = content_fingerprint(tmp_path)
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x").write_text("ignored")
    assert content_fingerprint(tmp_path) == before
    (tmp_path / "data" / "train.json").write_text('{"a": 2}\n')
    assert content_fingerprint(tmp_path) != before


# ---------------------------------------------------------------- published layout: answer lines


@pytest.mark.parametrize(
    ("response", "language", "expected"),
    [
        ("Ada moved there. Answer: Rome", "en", "Ada moved there. Answer: Rome"),  # inline, read
        ("Ada lives in Rome.", "en", "Ada lives in Rome.\nAnswer: Rome"),
        ("Rome", "pt", "Rome\nResposta: Rome"),
        ("Roma, claro.\n", "de", "Roma, claro.\nAntwort: Rome"),
        ("Reasoning.\nAnswer: the rome", "en", "Reasoning.\nAnswer: the rome"),  # already read as Rome
        ("Ok.", "fr", "Ok.\nAnswer: Rome"),
    ],
)
def test_append_answer_line(response, language, expected):
    from dgrpo.data import response_text
    from longblocks.rewards import score

    fields = {"answer": "Rome", "language": language, "response_x": response}
    cfg = DataConfig(response_field="response_x", append_answer_line=True)
    assert response_text(fields, cfg) == expected
    assert score(expected, {"kind": "exact", "answer": "Rome"}).value == 1.0
    assert response_text(fields, DataConfig(response_field="response_x")) == response  # off by default


def test_append_answer_line_skips_a_response_with_another_answer():
    """Appending 'Answer: Rome' after 'Answer: Paris' would be a hedge (reward 0): such a row
    demonstrates a wrong answer and is left out of the sft/kd targets."""
    from dgrpo.data import response_text
    from longblocks.rewards import score

    cfg = DataConfig(response_field="response_x", append_answer_line=True)
    fields = {"answer": "Rome", "language": "en-GB", "response_x": "Reasoning.\nAnswer: Paris"}
    assert response_text(fields, cfg) is None
    assert score("Reasoning.\nAnswer: Paris\nAnswer: Rome", {"kind": "exact", "answer": "Rome"}).value == 0.0


def test_answer_labels_are_the_lexicon_labels():
    from pathlib import Path

    import yaml

    from dgrpo.data import ANSWER_LABELS

    templates = Path(__file__).parents[2] / "templates"
    lexicons = {
        p.parent.name: yaml.safe_load(p.read_text())["answer_label"] for p in templates.glob("*/lexicon.yaml")
    }
    assert lexicons == ANSWER_LABELS


def test_published_layout_targets_score_under_the_reward_trainers_use(dataset_dir, tmp_path, tokenizer):
    """Rows of the published layout (teacher responses ending with an inline answer, a sentence
    or a bare name): with data.append_answer_line every sft target scores 1 under the reward
    grpo/eval apply to such rows (exact match against `answer`); without it, only the inline
    answer is read and the sentence and the bare name are unparsable."""
    from longblocks.rewards import score

    source = datasets.load_from_disk(str(dataset_dir))["train"]
    endings = [lambda a: f"So it is {a}.", lambda a: f"Following the chain. Answer: {a}", lambda a: a]
    published = source.select_columns(["id", "document", "source", "language", "question", "answer"])
    published = published.add_column(
        "response_teacher", [endings[i % 3](row["answer"]) for i, row in enumerate(source)]
    )
    path = tmp_path / "published"
    datasets.DatasetDict({"train": published}).save_to_disk(str(path))
    base = dict(path=str(path), response_field="response_teacher", max_prompt_tokens=4096,
                defaults={"instruction": "End with a line 'Answer: <answer>'."})  # fmt: skip
    for append in (True, False):
        cfg = DataConfig(**base, append_answer_line=append)
        examples = prepare(cfg, tokenizer, "train", with_response=True, with_verification=True).examples
        assert len(examples) == len(source)
        for example in examples:
            assert example.verification["kind"] == "exact"
            target = tokenizer.decode(example.response_ids[:-1])
            expected = 1.0 if append or example.index % 3 == 1 else 0.0
            assert score(target, example.verification).value == expected, target
