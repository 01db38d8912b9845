"""Rollouts: stop/truncation masks, reward handling of truncated completions, frozen log-probs."""

import pytest
import torch

from dgrpo.config import RolloutConfig
from dgrpo.data import Example
from dgrpo.logprobs import completion_logprobs, lm_head_weight
from dgrpo.models import build_tiny, embedded_tokenizer
from dgrpo.rollout import fixed_group, frozen_logprobs, make_group, sample_group, score_group

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
EOS, PAD = 151645, 151643


def example(answer="Rome", response=None) -> Example:
    tokenizer = embedded_tokenizer()
    messages = [{"role": "user", "content": "Where?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return Example(
        index=0, id="x", prompt_ids=tokenizer(prompt, add_special_tokens=False)["input_ids"],
        response_ids=response, verification={"kind": "exact", "answer": answer}, task="multihop",
        length=1024, depth=0.5,
    )  # fmt: skip


def test_completions_end_at_their_first_stop_token():
    tokenizer = embedded_tokenizer()
    answer = tokenizer("Answer: Rome", add_special_tokens=False)["input_ids"]
    completions = torch.tensor([
        [*answer, EOS, 11, 12],  # stopped: the tail after EOS is dropped
        [*answer, 13, 14, 15],  # never stopped: truncated
        [EOS, 16, 17, 18, 19, 20],  # empty answer, stopped at once
    ])  # fmt: skip
    group = make_group(example(), torch.tensor([example().prompt_ids]), completions, tokenizer)
    assert group.mask.sum(1).tolist() == [len(answer) + 1, 6, 1]
    assert group.truncated.tolist() == [False, True, False]
    assert (group.completion_ids[~group.mask] == PAD).all()
    assert group.texts[0] == "Answer: Rome"
    score_group(group, "zero")
    assert group.rewards.tolist() == [1.0, 0.0, 0.0]
    assert group.statuses == ["ok", "truncated", "unparsable"]
    assert torch.equal(group.loss_mask, group.mask)


@pytest.mark.parametrize(
    ("mode", "reward", "masked"), [("zero", 0.0, False), ("score", 1.0, False), ("mask", 0.0, True)]
)
def test_truncated_reward_handling(mode, reward, masked):
    tokenizer = embedded_tokenizer()
    answer = tokenizer("Answer: Rome", add_special_tokens=False)["input_ids"]
    prompt = torch.tensor([example().prompt_ids])
    group = make_group(example(), prompt, torch.tensor([answer, answer]), tokenizer)
    group.truncated = torch.tensor([True, False])  # as if the first had been cut off
    score_group(group, mode)
    assert group.rewards.tolist() == [reward, 1.0]
    assert group.statuses[0] == "truncated"
    assert bool(group.loss_mask[0].any()) is not masked and bool(group.loss_mask[1].all())


def test_sampled_group_shapes_and_greedy_is_deterministic():
    model = build_tiny("tiny-qwen3", 0)
    cfg = RolloutConfig(group_size=3, max_new_tokens=5)
    torch.manual_seed(0)
    group = sample_group(model, embedded_tokenizer(), example(), cfg, 3)
    assert group.completion_ids.shape[0] == 3 and group.completion_ids.shape[1] <= 5
    assert group.prompt_ids.shape == (1, len(example().prompt_ids)) and model.training
    mask = group.mask.int()
    assert (mask[:, 1:] <= mask[:, :-1]).all()  # right-padded
    first = sample_group(model, embedded_tokenizer(), example(), cfg, 1, greedy=True)
    second = sample_group(model, embedded_tokenizer(), example(), cfg, 1, greedy=True)
    assert torch.equal(first.completion_ids, second.completion_ids)


def test_fixed_group_and_frozen_logprobs_match_a_naive_forward():
    model = build_tiny("tiny-qwen3", 0).eval()
    response = [*embedded_tokenizer()("Answer: Rome", add_special_tokens=False)["input_ids"], EOS]
    group = fixed_group(example(response=response), embedded_tokenizer())
    assert group.mask.all() and not group.truncated.any()
    got = frozen_logprobs(model, group, temperature=0.9, chunk_size=2)
    ids = torch.cat([group.prompt_ids, group.completion_ids], dim=1)
    with torch.no_grad():
        hidden = model.model(ids).last_hidden_state[:, group.prompt_ids.shape[1] - 1 : -1]
        want = completion_logprobs(hidden, lm_head_weight(model), group.completion_ids, 0.9)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
