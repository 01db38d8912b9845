"""dgrpo.study.reader: the prompt-weighted sft that teaches a from-scratch study model to read."""

import json

import pytest
import torch
import torch.nn.functional as F

from dgrpo.models import load_model
from dgrpo.study import reader
from dgrpo.study.reader import DONE, WARMUP_STEPS, batch_loss, learning_rate, sequences, train_reader
from tests.dgrpo.toy import make_dataset, make_model, make_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reader")
    tokenizer = make_tokenizer(tmp / "tokenizer")
    return tmp, make_dataset(tmp / "data"), make_model(tmp / "init", tokenizer, seed=0), tokenizer


def test_the_loss_weighs_prompt_tokens_by_the_prompt_weight(toy):
    _, data, init, tokenizer = toy
    rows = sequences(data, tokenizer)[:3]
    model = load_model(str(init))
    ids, prompts = rows[0][0], rows[0][1]
    logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    nll = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
    prompt_nll, response_nll = nll[: prompts - 1], nll[prompts - 1 :]
    for weight in (0.0, 0.3, 1.0):
        loss, response = batch_loss(model, rows[:1], tokenizer.pad_token_id, weight)
        total = weight * prompt_nll.sum() + response_nll.sum()
        expected = total / (weight * len(prompt_nll) + len(response_nll))
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        assert response.item() == pytest.approx(response_nll.mean().item(), rel=1e-5)
    # right padding changes nothing: a batch's loss is the token-weighted mean of its rows' losses
    rows = [rows[0], (rows[1][0][:-2] + rows[1][0][-1:], rows[1][1]), rows[2]]  # unequal lengths
    counts = [len(ids) - prompt for ids, prompt in rows]
    alone = [batch_loss(model, [row], tokenizer.pad_token_id, 0.0)[1].item() for row in rows]
    batched = batch_loss(model, rows, tokenizer.pad_token_id, 0.0)[1].item()
    assert len({len(ids) for ids, _ in rows}) > 1
    weighted = sum(a * n for a, n in zip(alone, counts, strict=True)) / sum(counts)
    assert batched == pytest.approx(weighted, rel=1e-5)


def test_the_schedule_warms_up_then_decays_to_a_tenth():
    assert learning_rate(0, 1000, 1.0) == pytest.approx(1 / WARMUP_STEPS)
    assert learning_rate(WARMUP_STEPS, 1000, 1.0) == pytest.approx(1.0)
    assert learning_rate(999, 1000, 1.0) == pytest.approx(0.1, abs=1e-4)


def test_a_reader_run_learns_saves_its_snapshot_and_is_reused(toy):
    tmp, data, init, _ = toy
    out = train_reader(str(init), data, tmp / "teacher", steps=60, batch_size=8, lr=1e-2,
                       prompt_weight=0.3, seed=0, snapshots=(20,))  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 61))
    first, last = rows[0]["response_nll"], sum(r["response_nll"] for r in rows[-10:]) / 10
    assert last < first / 4  # the one-token answers are learned
    assert (out / "step-20" / "config.json").is_file() and (out / DONE).is_file()
    before = (out / "model.safetensors").stat().st_mtime_ns
    train_reader(str(init), data, out, steps=60, batch_size=8, lr=1e-2, prompt_weight=0.3, seed=0,
                 snapshots=(20,))  # fmt: skip
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    train_reader(str(init), data, out, steps=5, batch_size=8, lr=1e-2, prompt_weight=0.3, seed=0)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 5  # other arguments: trained again
    assert not (out / "step-20").exists()


def test_a_bf16_autocast_reader_learns_keeps_float32_weights_and_is_keyed_apart(toy):
    tmp, data, init, _ = toy
    out = train_reader(str(init), data, tmp / "teacher-bf16", steps=60, batch_size=8, lr=1e-2,
                       prompt_weight=0.3, seed=0, autocast=True)  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0]["response_nll"], sum(r["response_nll"] for r in rows[-10:]) / 10
    assert last < first / 4
    assert json.loads((out / "reader-args.json").read_text())["autocast"] == "bf16"
    assert {p.dtype for p in load_model(str(out)).parameters()} == {torch.float32}
    train_reader(str(init), data, out, steps=60, batch_size=8, lr=1e-2, prompt_weight=0.3, seed=0)
    assert "autocast" not in json.loads((out / "reader-args.json").read_text())  # trained again in float32


def test_a_stopped_reader_run_continues_from_its_checkpoint_on_the_same_curve(toy, monkeypatch):
    tmp, data, init, _ = toy
    kwargs = dict(
        steps=12, batch_size=4, lr=1e-2, prompt_weight=0.3, seed=0, snapshots=(6,), checkpoint_every=4
    )
    whole = train_reader(str(init), data, tmp / "whole", **kwargs)
    calls = {"n": 0}

    def stop_at_step_10(*args):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return batch_loss(*args)

    monkeypatch.setattr(reader, "batch_loss", stop_at_step_10)
    with pytest.raises(KeyboardInterrupt):
        train_reader(str(init), data, tmp / "stopped", **kwargs)
    stopped = tmp / "stopped"
    assert (stopped / reader.RESUME).is_file() and not (stopped / DONE).exists()
    assert torch.load(stopped / reader.RESUME, weights_only=False)["step"] == 8
    monkeypatch.undo()
    calls["n"] = 0
    train_reader(str(init), data, stopped, **kwargs)  # steps 9-12 again, from the step-8 checkpoint

    def losses(out):
        return [
            (r["step"], r["loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        ]

    assert losses(stopped) == losses(whole) and len(losses(whole)) == 12
    resumed = load_model(str(stopped)).state_dict()
    for name, weight in load_model(str(whole)).state_dict().items():
        assert torch.equal(weight, resumed[name]), name
    assert (stopped / DONE).is_file() and not (stopped / reader.RESUME).exists()
    assert (stopped / "step-6" / "config.json").is_file()
