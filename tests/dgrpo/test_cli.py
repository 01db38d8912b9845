"""The `dgrpo` command: exit status 2 and one line naming the field for every bad input."""

from pathlib import Path

import pytest
import yaml

from dgrpo.cli import main
from dgrpo.models import build_tiny, embedded_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture
def write_config(tmp_path, make_run_values):
    def write(method="dgrpo", text=None, **sections):
        path = tmp_path / "config.yaml"
        path.write_text(text if text is not None else yaml.safe_dump(make_run_values(method, **sections)))
        return str(path)

    return write


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def error_line(capsys, *argv) -> str:
    code, line = run_cli(capsys, *argv)
    assert code == 2
    assert line.startswith("dgrpo: error: ")
    return line


def mismatched_teacher(tmp_path) -> str:
    path = tmp_path / "other-teacher"
    build_tiny("tiny-qwen3", 0).save_pretrained(path)
    embedded_tokenizer().save_pretrained(path)
    config = path / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"eos_token": "<|im_end|>"', '"eos_token": "<|endoftext|>"'))
    return str(path)


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("loss: {method: sft\n", [], "cannot parse"),
        ("loss:\n  methd: sft\n", [], "unknown key 'loss.methd'; did you mean 'loss.method'?"),
        (None, ["loss.method=ppo"], "invalid loss.method ('ppo')"),
        (None, ["teacher.model=null"], "teacher.model is required for method 'dgrpo'"),
        (None, ["rollout.group_size=1"], "rollout.group_size is 1 but method 'dgrpo' needs >= 2"),
        (None, ["data.columns.document=body"], "data.columns.document names column 'body'"),
        (None, ["data.path=/no/such/data"], "cannot load dataset '/no/such/data'"),
        (None, ["loss.method=sft", "data.response_field=response_x"], "has no column for field 'response_x'"),
        (None, ["model.student=/no/such/model"], "cannot load model '/no/such/model'"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, write_config, text, overrides, expected):
    line = error_line(capsys, "train", write_config(text=text), *(["--set", *overrides] if overrides else []))
    assert expected in line


def test_tokenizer_mismatch_exits_2(capsys, write_config, tmp_path):
    line = error_line(
        capsys, "train", write_config(), "--set", f"teacher.model={mismatched_teacher(tmp_path)}"
    )
    assert "teacher eos_token '<|endoftext|>' differs from the student's '<|im_end|>'" in line


def test_train_then_eval(capsys, write_config, tmp_path):
    config = write_config("sft", run={"steps": 1})
    assert main(["train", config, "--quiet"]) == 0
    run_dir = yaml.safe_load(Path(config).read_text())["run"]["out_dir"]
    assert "checkpoints" in capsys.readouterr().out
    eval_args = ["--split", "test", "--quiet", "--set", "data.max_prompt_tokens=4096"]
    assert main(["eval", config, "--checkpoint", run_dir, *eval_args]) == 0
    assert capsys.readouterr().out.startswith("test: accuracy 0.000")
    assert (Path(run_dir) / "checkpoints" / "step-000001" / "eval" / "test.json").is_file()


def test_schema_command_matches_the_committed_file(tmp_path):
    assert main(["schema", "--out", str(tmp_path / "s.json")]) == 0
    exported = (tmp_path / "s.json").read_text()
    assert '"LossConfig"' in exported
    committed = Path(__file__).parents[2] / "schemas" / "config.schema.json"
    assert exported == committed.read_text(), "schemas/config.schema.json is stale: run `make schemas`"


def test_train_finds_a_bundled_config_by_method_name(capsys, dataset_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the name resolves to the bundled file
    overrides = [f"data.path={dataset_dir}", "data.max_prompt_tokens=1100", "rollout.max_new_tokens=4",
                 "rollout.group_size=2", "run.steps=1", "run.progress=false"]  # fmt: skip
    assert main(["train", "grpo", "--quiet", "--set", *overrides]) == 0
    assert capsys.readouterr().out.startswith("grpo: metrics in out/grpo/metrics.jsonl")
    assert (tmp_path / "out" / "grpo" / "checkpoints" / "step-000001").is_dir()


def test_unknown_config_name_lists_the_bundled_ones(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = error_line(capsys, "train", "ppo")
    assert "config 'ppo' is neither a file nor a bundled config" in line
    assert all(name in line for name in ("dgrpo, grpo, kd, opd, sft", "dgrpo init grpo > my.yaml"))


def test_init_writes_the_bundled_config_to_edit(capsys, tmp_path):
    bundled = Path(__file__).parents[2] / "configs" / "kd.yaml"
    assert main(["init", "kd"]) == 0
    assert capsys.readouterr().out == bundled.read_text()
    out = tmp_path / "my.yaml"
    assert main(["init", "kd", "--out", str(out)]) == 0
    assert out.read_text() == bundled.read_text()
    assert "exists" in error_line(capsys, "init", "kd", "--out", str(out))
    assert "no bundled config 'ppo'" in error_line(capsys, "init", "ppo")


def test_save_model_writes_a_folder_transformers_loads(capsys, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "tiny"
    assert main(["save-model", "tiny-qwen3-teacher", str(out), "--seed", "3"]) == 0
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    expected = build_tiny("tiny-qwen3-teacher", 3)
    assert model.config.num_hidden_layers == 4
    for (name, got), want in zip(model.state_dict().items(), expected.state_dict().values(), strict=True):
        assert torch.equal(got, want), name
    tokenizer, embedded = AutoTokenizer.from_pretrained(out, local_files_only=True), embedded_tokenizer()
    messages = [{"role": "user", "content": "Wer gründete Ostwick? <think>"}]
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == (
        embedded.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    )
    assert tokenizer("Ávila Works 1999")["input_ids"] == embedded("Ávila Works 1999")["input_ids"]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert "exists and is not empty" in error_line(capsys, "save-model", "tiny-qwen3", str(out))
    assert "no embedded model 'huge'" in error_line(capsys, "save-model", "huge", str(tmp_path / "x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # nothing half-written left


def test_the_published_layout_example_in_sft_yaml_runs_as_written(capsys, dataset_dir, tmp_path, monkeypatch):
    """The command in configs/sft.yaml's header, with <dir> and <model> filled in, on a folder of
    the published LongBlocks layout (parquet, no system/instruction/reference/verification)."""
    import re
    import shlex

    import datasets

    header = (Path(__file__).parents[2] / "configs" / "sft.yaml").read_text()
    command = re.search(
        r"^#   (dgrpo train sft --set data\.path=<dir> .*?)$\n(?!#     )", header, re.M | re.S
    )
    text = re.sub(r"\\\n#\s+", " ", command.group(1))
    source = datasets.load_from_disk(str(dataset_dir))
    folder = tmp_path / "published" / "data"
    folder.mkdir(parents=True)
    for split, rows in source.items():
        rows = rows.select_columns(["id", "document", "source", "language", "question", "answer"])
        rows = rows.add_column("response_qwen3", [f"It is {a}. Answer: {a}" for a in rows["answer"]])
        rows.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    text = text.replace("<dir>", str(tmp_path / "published")).replace("<model>", "qwen3")
    argv = shlex.split(text)[1:] + ["run.steps=1", "data.max_prompt_tokens=1100", "run.progress=false"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    assert main([*argv, "--quiet"]) == 0, capsys.readouterr().err
    saved = yaml.safe_load((tmp_path / "out" / "sft" / "config.yaml").read_text())
    assert saved["data"]["defaults"] == {"instruction": "End with a line 'Answer: <answer>'."}
    assert saved["data"]["append_answer_line"] is True
