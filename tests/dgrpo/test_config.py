"""TrainConfig: shipped configs load, overrides apply, every bad input is one clear UserError."""

from pathlib import Path

import pytest
from pydantic import BaseModel

from dgrpo.config import METHODS, TrainConfig, load_config, make_config, to_yaml
from dgrpo.errors import UserError
from dgrpo.objective import TERMS

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads_and_names_its_method(path):
    cfg = load_config(path)
    assert cfg.loss.method == path.stem
    assert cfg.run.out_dir == f"out/{path.stem}"
    assert cfg.data.path == "data/demo"  # the Makefile demo writes there


def test_one_config_per_method():
    assert sorted(p.stem for p in CONFIGS) == sorted(METHODS)


def _walk(model: type[BaseModel], prefix=""):
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _walk(field.annotation, f"{prefix}{name}.")


def test_every_field_is_documented():
    undocumented = [name for name, field in _walk(TrainConfig) if not (field.description or "").strip()]
    assert undocumented == []


def test_defaults_are_valid_and_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(None)
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def test_overrides_parse_values_as_yaml(tmp_path):
    cfg = load_config(
        None,
        ["optim.lr=1e-4", "loss.method=sft", "data.columns={reference: response_x}",
         "optim.betas=[0.9, 0.95]",
         "optim.max_grad_norm=null", "run.report_to=[]"],
    )  # fmt: skip
    assert cfg.optim.lr == 1e-4 and cfg.loss.method == "sft"
    assert cfg.data.columns == {"reference": "response_x"}
    assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.max_grad_norm is None


def test_text_fields_receive_the_raw_override_text():
    # configs/sft.yaml's documented example: ': ' and quotes would make YAML read a mapping
    instruction = "End with a line 'Answer: <answer>'."
    cfg = load_config(
        None,
        [f"data.defaults.instruction={instruction}", "model.student=1e-3", "run.out_dir=out/#1",
         "loss.method=sft", "teacher.model=null", "data.name=~", "model.reference=yes"],
    )  # fmt: skip
    assert cfg.data.defaults == {"instruction": instruction}
    assert cfg.model.student == "1e-3" and cfg.run.out_dir == "out/#1" and cfg.loss.method == "sft"
    assert cfg.teacher.model is None and cfg.data.name is None and cfg.model.reference == "yes"


def test_a_rejected_override_shows_the_value_received():
    message = _error(overrides=["run.steps=a: b"])
    assert message.startswith("invalid run.steps ({'a': 'b'}): ")
    assert "invalid run.save_every ([1, 2])" in _error(overrides=["run.save_every=[1, 2]"])


def test_overrides_win_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss:\n  method: sft\noptim:\n  lr: 0.5\n")
    assert load_config(path, ["optim.lr=0.25"]).optim.lr == 0.25


def test_method_table_rows():
    assert METHODS["grpo"].pg and not METHODS["grpo"].opd and METHODS["grpo"].needs_rewards
    assert METHODS["opd"].opd and not METHODS["opd"].pg and not METHODS["opd"].needs_rewards
    assert METHODS["dgrpo"].pg and METHODS["dgrpo"].opd and METHODS["dgrpo"].needs_teacher
    assert not METHODS["sft"].samples and not METHODS["kd"].samples and METHODS["kd"].needs_teacher
    assert all(METHODS[m].samples for m in ("grpo", "opd", "dgrpo"))


def test_estimator_choices_match_the_objective_terms():
    choices = TrainConfig.model_json_schema()["$defs"]["LossConfig"]["properties"]["estimator"]["enum"]
    assert sorted(choices) == sorted(name.removeprefix("opd_") for name in TERMS if name.startswith("opd_"))


def _error(values=None, overrides=(), path=None) -> str:
    with pytest.raises(UserError) as info:
        if values is not None:
            make_config(values)
        else:
            load_config(path, list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optim.lrr=1"], "unknown key 'optim.lrr'; did you mean 'optim.lr'?"),
        (["optm.lr=1"], "unknown key 'optm'; did you mean 'optim'?"),
        (["loss.epsilon_low=0.1"], "unknown key 'loss.epsilon_low'; did you mean 'loss.eps_low'?"),
        (["loss.method=ppo"], "invalid loss.method ('ppo')"),
        (["loss.method=kd"], "teacher.model is required for method 'kd'"),
        (["loss.method=dgrpo"], "teacher.model is required for method 'dgrpo'"),
        (["rollout.group_size=1"], "rollout.group_size is 1 but method 'grpo' needs >= 2"),
        (["loss.method=dgrpo", "teacher.model=t", "rollout.group_size=1"], "needs >= 2"),
        (["loss.method=opd", "teacher.model=t", "teacher.url=http://x"], "and teacher.url are both set"),
        (["loss.method=opd", "teacher.url=http://x"], "needs the teacher's full distribution"),
        (["loss.method=kd", "teacher.url=http://x"], "needs the teacher's full distribution"),
        (["loss.method=opd", "teacher.url=http://x", "loss.estimator=sampled", "rollout.temperature=0.7"],
         "temperature 1"),
        (["loss.method=opd", "teacher.url=http://x", "loss.estimator=topk", "rollout.temperature=0.7"],
         "temperature 1"),
        (["optim.lr=-1"], "invalid optim.lr (-1)"),
        (["run.report_to=[mlflow]"], "invalid run.report_to.0 ('mlflow')"),
        (["lr"], "override 'lr' is not key=value"),
    ],
)  # fmt: skip
def test_bad_values_name_the_field(overrides, expected):
    assert expected in _error(overrides=overrides)


def test_opd_with_remote_teacher_and_sampled_estimator_is_valid():
    cfg = load_config(None, ["loss.method=opd", "teacher.url=http://x", "loss.estimator=sampled"])
    assert cfg.teacher.url == "http://x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("loss:\n  method: [sft\n", "cannot parse"),
        ("loss: {method: sft\n", "at line"),
        ("- a\n- b\n", "holds a list, not a mapping"),
        ("loss:\n  methd: sft\n", "unknown key 'loss.methd'; did you mean 'loss.method'?"),
    ],
)
def test_bad_yaml_files(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert expected in _error(path=path)


def test_missing_config_file(tmp_path):
    message = _error(path=tmp_path / "nope.yaml")
    assert "nope.yaml' is neither a file nor a bundled config" in message and "dgrpo init" in message


def test_a_checkout_path_outside_the_checkout_names_the_bundled_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "pass its name: `grpo` (`dgrpo init grpo` prints it)" in _error(path="configs/grpo.yaml")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_method_name_loads_its_bundled_config(method, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(method) == load_config(Path(__file__).parents[2] / "configs" / f"{method}.yaml")


def test_the_wheel_carries_the_bundled_configs():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    included = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert included["configs"] == "dgrpo/_configs"  # where bundled_configs() looks first
