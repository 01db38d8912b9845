"""dgrpo.study: small tokenizers and models load like any HF model, the config rejects bad
input with one line, and the report turns runs into the table, plots and summary line."""

import json
import statistics
import warnings
from pathlib import Path

import pytest

from dgrpo.errors import UserError
from dgrpo.models import load_model, load_tokenizer
from dgrpo.study import pipeline
from dgrpo.study.__main__ import main
from dgrpo.study.assets import EOS, parameter_counts, save_model, train_bpe
from dgrpo.study.config import StudyConfig, load_study_config
from dgrpo.study.pipeline import STAMP, TIMINGS
from dgrpo.study.report import (
    method_table,
    paired_interval,
    per_row_accuracy,
    plot_curves,
    training_signal,
    verdicts,
    write_report,
)

TEXTS = ["Mara Quill has been a member of Ostwick Holdings since 1990.", "Answer: Mara Quill"] * 20
ARCH = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, head_dim=8)  # fmt: skip


def test_a_trained_bpe_and_a_small_model_load_through_dgrpo_models(tmp_path):
    tokenizer = train_bpe(TEXTS, 300, tmp_path / "tokenizer")
    save_model(tmp_path / "model", tokenizer, ARCH, seed=0)
    loaded = load_tokenizer(str(tmp_path / "model"))
    ids = loaded("Answer: Mara Quill")["input_ids"]
    assert loaded.decode(ids) == "Answer: Mara Quill"
    prompt = loaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                        add_generation_prompt=True)  # fmt: skip
    assert prompt == f"<|user|>\nhi{EOS}\n<|assistant|>\n"
    model = load_model(str(tmp_path / "model"))
    assert model.config.vocab_size == len(loaded) and model.config.eos_token_id == loaded.eos_token_id
    counts = parameter_counts(tmp_path / "model")
    assert counts["embedding"] == len(loaded) * 16 < counts["total"]


def test_bad_study_configs_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(UserError, match="not found"):
        load_study_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("compare: {stepz: 3}\n")
    with pytest.raises(UserError, match="invalid compare.stepz"):
        load_study_config(bad)
    assert main([str(bad)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def record(reward: float, row: int = 0) -> dict:
    return {"id": f"r{row}", "task": "multihop", "length": "1k", "depth": "0.2-0.4", "reward": reward,
            "truncated": False}  # fmt: skip


def test_the_report_holds_the_table_plots_and_summary_line(tmp_path):
    cfg = StudyConfig(
        report_dir=str(tmp_path / "docs"), compare={"methods": ["grpo", "dgrpo"], "seeds": [0, 1]}
    )
    runs = {}
    for method, rewards in (("grpo", [[1, 0], [0, 0]]), ("dgrpo", [[1, 1], [1, 0]])):
        for seed, values in enumerate(rewards):
            run_dir = tmp_path / f"{method}-{seed}"
            run_dir.mkdir()
            flat = {"grpo": 0.75, "dgrpo": 0.25}[method]  # share of groups with all-equal rewards
            logged = [{"reward/mean": 0.1 * step, "frac_reward_zero_std": flat} for step in range(1, 4)]
            if method == "dgrpo":
                logged = [{**row, "kl_teacher": 1 / step} for step, row in enumerate(logged, 1)]
            lines = [json.dumps(row) for row in logged]
            (run_dir / "metrics.jsonl").write_text("\n".join(lines))
            records = [record(v, row) for row, v in enumerate(values)]
            runs[method, seed] = (run_dir, {"records": records, "retention": None})
    for name, loss in (("teacher", 0.5), ("student0", 2.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps({"loss": loss}))
    (tmp_path / "data").mkdir()
    audit = [
        {"name": "answer-type prior", "task": "multihop", "value": 0.3, "chance": 0.25},
        {"name": "most-mentioned of type", "task": "multihop", "value": 0.4, "chance": 0.25},
    ]
    (tmp_path / "data" / "audit.json").write_text(json.dumps(audit))
    (tmp_path / "data" / STAMP).write_text(json.dumps({"args": [], "generator": "0.1.0+0123456789abcdef"}))
    (tmp_path / TIMINGS).write_text(json.dumps({"runs": 600.0, "data": 120.0}))
    study = {"runs": runs, "root": tmp_path, "teacher": {"records": [record(1), record(1)]},
             "student0": {"records": [record(0), record(1)], "retention": None},
             "teacher_init": str(tmp_path / "none"), "student_init": str(tmp_path / "none")}  # fmt: skip
    table = method_table(runs, ["grpo", "dgrpo"])
    assert table["grpo"]["accuracy"] == pytest.approx((0.25, 0.3535534)) and table["dgrpo"]["per_seed"] == [
        1,
        0.5,
    ]
    line = write_report(cfg, study, 60.0, "configs/x.yaml")
    assert line == "grpo=0.250 dgrpo=0.750 teacher=1.000 student0=0.500"
    text = (tmp_path / "docs" / "results.md").read_text()
    assert "| dgrpo | 0.750 ± 0.354 |" in text and "Not run: `retention.length` is unset" in text
    assert "teacher 0.50, student0 2.00" in text
    assert "generated by longblocks 0.1.0+0123456789abcdef" in text  # which generator made the rows
    # the cost of the study from nothing, in stage order, not this (cached) invocation's minute
    assert "from nothing the study takes about 12 minutes: data 2.0, runs 10\n(each stage's time" in text
    assert "this invocation took 1.0 minutes, reusing" in text
    assert "0.250; the strongest answer-picking baseline of that audit (most-mentioned of type):" in text
    assert "| grpo | +0.500 | 0.707 | no | too few rows (2) | no |" in text  # 0.75 ± 0.35 against 0.25 ± 0.35
    assert "| grpo | 0.75 | 0.200 → 0.200 | — |" in text  # 3 steps: both ends of 10 are all of them
    assert "| dgrpo | 0.25 | 0.200 → 0.200 | 0.611 → 0.611 |" in text
    signal = training_signal(runs, ["sft", "grpo", "dgrpo"], window=1)
    assert set(signal) == {"grpo", "dgrpo"} and signal["grpo"]["kl"] is None  # sft ran no rollouts here
    assert signal["grpo"]["reward"] == pytest.approx((0.1, 0.3)) and signal["dgrpo"]["kl"] == pytest.approx(
        (1, 1 / 3)
    )
    pngs = {p.name for p in (tmp_path / "docs" / "results").iterdir()}
    assert pngs == {"reward.png", "kl.png", "teacher.png", "heatmap-grpo.png", "heatmap-dgrpo.png"}


def test_verdicts_call_a_difference_beyond_the_seed_spread():
    table = {
        "dgrpo": {"accuracy": (0.6, 0.02)},
        "grpo": {"accuracy": (0.5, 0.03)},
        "opd": {"accuracy": (0.58, 0.05)},
    }
    by_other = {v["other"]: v for v in verdicts(table)}
    assert by_other["grpo"]["beyond"] and by_other["grpo"]["diff"] == pytest.approx(0.1)
    assert not by_other["opd"]["beyond"] and by_other["opd"]["spread"] == pytest.approx(0.07)


def _runs(method_hits: dict[str, list[list[bool]]]) -> dict:
    """Study runs as write_report sees them: (method, seed) -> (dir, {records}), rows r0, r1, ..."""
    return {
        (method, seed): (
            None,
            {"records": [{"id": f"r{i}", "reward": float(hit)} for i, hit in enumerate(hits)]},
        )
        for method, seeds in method_hits.items()
        for seed, hits in enumerate(seeds)
    }


def test_the_paired_interval_says_whether_the_held_out_rows_tell_two_methods_apart():
    # 80 rows; dgrpo answers rows 0-39 in both seeds, grpo rows 0-29 in one seed and 0-31 in the other.
    runs = _runs({"dgrpo": [[i < 40 for i in range(80)]] * 2,
                  "grpo": [[i < 30 for i in range(80)], [i < 32 for i in range(80)]]})  # fmt: skip
    rows = {m: per_row_accuracy(runs, m) for m in ("dgrpo", "grpo")}
    assert rows["grpo"]["r30"] == 0.5 and rows["grpo"]["r0"] == 1.0 and len(rows["dgrpo"]) == 80
    low, high, n = paired_interval(rows["dgrpo"], rows["grpo"])
    diffs = [0.0] * 30 + [0.5] * 2 + [1.0] * 8 + [0.0] * 40
    mean, half = sum(diffs) / 80, 1.96 * statistics.stdev(diffs) / 80**0.5
    assert n == 80 and (low, high) == pytest.approx((mean - half, mean + half))
    assert low > 0  # 8 to 10 more rows of 80 in each seed: the rows tell them apart
    table = {"dgrpo": {"accuracy": (0.5, 0.0)}, "grpo": {"accuracy": (0.3875, 0.0177)}}
    (verdict,) = verdicts(table, rows=rows)
    assert verdict["rows_beyond"] and verdict["rows"] == 80 and verdict["beyond"]
    # one row's difference is not evidence
    one = _runs({"dgrpo": [[i < 1 for i in range(80)]], "grpo": [[False] * 80]})
    low, high, _ = paired_interval(per_row_accuracy(one, "dgrpo"), per_row_accuracy(one, "grpo"))
    assert low < 0 < high
    assert "rows" not in verdicts(table)[0]  # without rows: the seed spread only


def test_a_student_snapshot_needs_a_reader_teacher(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("teacher: {steps: 100}\nstudent: {from_teacher_step: 50}\n")
    with pytest.raises(UserError, match="needs a teacher trained here with prompt_weight > 0"):
        load_study_config(path)
    path.write_text("teacher: {steps: 100, prompt_weight: 0.3}\nstudent: {from_teacher_step: 100}\n")
    with pytest.raises(UserError, match="must be below teacher.steps"):
        load_study_config(path)
    path.write_text("teacher: {steps: 100, prompt_weight: 0.3}\nstudent: {from_teacher_step: 50}\n")
    assert load_study_config(path).student.from_teacher_step == 50


@pytest.mark.parametrize("name", ["full", "quick", "qwen3-32k"])
def test_shipped_study_configs_load(name):
    cfg = load_study_config(Path(__file__).parents[2] / "configs" / "study" / f"{name}.yaml")
    assert set(cfg.compare.methods) == {"sft", "kd", "grpo", "opd", "dgrpo"} and len(cfg.compare.seeds) >= 2


def test_the_real_scale_config_makes_gpu_runs_of_the_named_models(tmp_path):
    from dgrpo.config import make_config
    from dgrpo.study.pipeline import run_values

    configs = Path(__file__).parents[2] / "configs" / "study"
    cfg = load_study_config(configs / "qwen3-32k.yaml")
    assert (cfg.data.length, cfg.teacher.path, cfg.student.path) == (
        "32k",
        "/models/Qwen3-8B",
        "/models/Qwen3-1.7B",
    )
    c = cfg.compare
    values = run_values(
        cfg,
        tmp_path,
        tmp_path / "run",
        cfg.student.path,
        "dgrpo",
        0,
        c.steps,
        c.lr,
        c.batch_size,
        teacher=cfg.teacher.path,
    )
    run = make_config(values)  # a valid trainer config: the models are opened only when training starts
    assert (run.run.device, run.model.dtype, run.model.gradient_checkpointing) == ("cuda", "bfloat16", True)
    assert (run.teacher.model, run.rollout.group_size, run.rollout.max_new_tokens) == (
        "/models/Qwen3-8B",
        8,
        2048,
    )
    toy = run_values(
        load_study_config(configs / "full.yaml"), tmp_path, tmp_path / "toy", "s", "sft", 0, 1, 1e-3, 2
    )
    assert toy["model"]["gradient_checkpointing"] is False and toy["model"]["dtype"] == "float32"


def test_a_generated_folder_is_reused_only_for_the_same_arguments(tmp_path):
    from dgrpo.study.pipeline import generate

    args = ("--task", "multihop", "--hops", "2", "--length", "1k", "--num-examples", "3")
    out = generate(tmp_path / "data", *args)
    first = (out / "dataset_dict.json").stat().st_mtime_ns
    assert generate(tmp_path / "data", *args) == out
    assert (out / "dataset_dict.json").stat().st_mtime_ns == first
    generate(tmp_path / "data", *args[:-1], "4")  # the config changed: made again
    assert sum(json.loads((out / "generation.json").read_text())["summary"]["examples"].values()) == 4


def test_a_generated_folder_is_made_again_after_the_generator_changed(tmp_path, monkeypatch):
    args = ("--task", "multihop", "--hops", "1", "--length", "1k", "--num-examples", "2")
    out = pipeline.generate(tmp_path / "data", *args)
    first = (out / "dataset_dict.json").stat().st_mtime_ns
    monkeypatch.setattr(pipeline, "generator_version", lambda: "another")
    pipeline.generate(tmp_path / "data", *args)
    assert (out / "dataset_dict.json").stat().st_mtime_ns != first
    assert pipeline.stamp_of(out) == {"args": list(args), "generator": "another"}


def test_the_study_asks_the_cli_for_the_generator_version():
    from longblocks.version import generator_version

    assert pipeline.generator_version() == generator_version()


def test_a_new_vocabulary_size_trains_the_tokenizer_again(tmp_path):
    from transformers import AutoTokenizer

    def tokenizer_size(vocab_size: int) -> int:
        cfg = StudyConfig.model_validate({"tokenizer": {"vocab_size": vocab_size, "corpus_examples": 4}})
        folder = pipeline.tokenizer_dir(cfg, tmp_path)
        return len(AutoTokenizer.from_pretrained(folder, local_files_only=True))

    assert tokenizer_size(300) == 300
    assert tokenizer_size(400) == 400  # same corpus, other size: trained again, not reused


def test_trained_stages_are_dropped_when_their_data_changed(tmp_path):
    def trained(inputs: dict) -> list[str]:
        for name in ("teacher", "runs"):
            (tmp_path / name).mkdir(exist_ok=True)
        pipeline.drop_stale_stages(tmp_path, inputs)
        return sorted(p.name for p in tmp_path.iterdir() if p.is_dir())

    old, new = {"data": {"generator": "a"}}, {"data": {"generator": "b"}}
    assert trained(old) == []  # no record of what they were made from: not trusted
    assert trained(old) == ["runs", "teacher"]  # made from the same data: kept (and resumed)
    assert trained(new) == []
    assert json.loads((tmp_path / pipeline.INPUTS).read_text()) == new


@pytest.mark.parametrize(
    ("mode", "native", "bf16", "warned"),
    [("auto", True, True, False), ("auto", False, False, False), ("bf16", False, True, True),
     ("bf16", True, True, False), ("off", True, False, False)],
)  # fmt: skip
def test_teacher_autocast_auto_trains_in_bf16_only_where_the_cpu_multiplies_it(
    monkeypatch, caplog, mode, native, bf16, warned
):
    monkeypatch.setattr(pipeline, "native_bf16", lambda device: native)
    assert pipeline.reader_bf16(mode) is bf16
    assert ("without native bf16" in caplog.text) is warned


def test_a_curve_plot_with_no_run_logging_it_says_so_without_a_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns on a legend with nothing to label
        plot_curves({}, "reward", tmp_path / "reward.png")
        plot_curves({"grpo": [0.1, 0.3, 0.2]}, "reward", tmp_path / "grpo.png")
    assert (tmp_path / "reward.png").stat().st_size > 1000 and (tmp_path / "grpo.png").stat().st_size > 1000
