"""Server rollouts (`rollout.backend: server`) against `dgrpo serve` on 127.0.0.1: greedy groups
equal the local sampler's token for token after weight pushes by every sync route, the sampler's
log-probs equal the trainer's, and the mismatch correction is a pure function."""

import math
import time

import pytest
import torch

from dgrpo.config import ServerClientConfig, make_config
from dgrpo.errors import UserError
from dgrpo.logprobs import completion_logprobs, group_forward, lm_head_weight
from dgrpo.mismatch import truncated_is_weights
from dgrpo.models import build_tiny, embedded_tokenizer
from dgrpo.remote.client import ServerClient
from dgrpo.remote.rollout import ServerRollout
from dgrpo.remote.weights import weight_push
from dgrpo.rollout import sample_group
from dgrpo.server.engine import Engine
from dgrpo.server.http import ServerThread

from .test_rollout import example

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def rollout_config(url: str, **rollout):
    values = {"rollout": {"backend": "server", "url": url, "served_model": "policy", "group_size": 2,
                          "max_new_tokens": 8, **rollout}}  # fmt: skip
    return make_config(values)


def nudge(model, step: int) -> None:
    """An optimizer-like change of every weight (deterministic per step)."""
    gen = torch.Generator().manual_seed(step)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.05)


@pytest.mark.parametrize("sync", ["gloo", "disk", "reload"])
def test_greedy_server_rollouts_equal_local_ones_after_weight_updates(sync, tmp_path):
    tokenizer = embedded_tokenizer()
    student = build_tiny("tiny-qwen3", 0)
    served = build_tiny("tiny-qwen3", 99)  # other weights: only the pushes make them equal
    with ServerThread(
        Engine(served, tokenizer, "policy"), transfer_backend="disk" if sync == "disk" else "gloo"
    ) as url:
        cfg = rollout_config(url, weight_sync=sync, sync_dir=str(tmp_path / "sync"))
        sampler = ServerRollout.connect(cfg, tokenizer, tmp_path)
        try:
            for step in range(3):
                nudge(student, step)
                sampler.push(student)
                (remote,) = sampler.sample_groups([example()], 2, greedy=True)
                local = sample_group(student, tokenizer, example(), cfg.rollout, 2, greedy=True)
                assert torch.equal(remote.completion_ids, local.completion_ids)
                assert torch.equal(remote.mask, local.mask) and remote.texts == local.texts
        finally:
            sampler.close()
    for mine, theirs in zip(student.parameters(), served.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_sampled_rollouts_report_the_samplers_logprobs_and_are_seeded(tmp_path):
    tokenizer = embedded_tokenizer()
    student = build_tiny("tiny-qwen3", 0)
    with ServerThread(Engine(build_tiny("tiny-qwen3", 0), tokenizer, "policy")) as url:
        cfg = rollout_config(url, temperature=0.8, max_new_tokens=6)
        sampler = ServerRollout.connect(cfg, tokenizer, tmp_path)
        try:
            torch.manual_seed(3)
            (group,) = sampler.sample_groups([example()], 3)
            torch.manual_seed(3)  # the request seeds come from the trainer's RNG
            (again,) = sampler.sample_groups([example()], 3)
        finally:
            sampler.close()
    assert torch.equal(group.completion_ids, again.completion_ids)
    hidden = group_forward(student, group.prompt_ids, group.completion_ids, group.mask, with_grad=False)
    logp = completion_logprobs(hidden, lm_head_weight(student), group.completion_ids, 0.8)
    torch.testing.assert_close(group.logp_sampler[group.mask], logp[group.mask], atol=1e-5, rtol=0)
    weights, stats = truncated_is_weights(logp, group.logp_sampler, group.mask, 2.0)
    assert stats["rollout/logp_diff_max"] < 1e-5
    torch.testing.assert_close(weights[group.mask], torch.ones(int(group.mask.sum())), atol=1e-5, rtol=0)


def test_truncated_is_weights_values():
    logp_old = torch.tensor([[-1.0, -2.0, -0.5]])
    logp_sampler = torch.tensor([[-1.5, -0.5, math.nan]])
    mask = torch.tensor([[True, True, False]])
    weights, stats = truncated_is_weights(logp_old, logp_sampler, mask, cap=1.5)
    # ratios e^0.5 = 1.65 (capped at 1.5) and e^-1.5 = 0.22; the masked token weighs 0
    torch.testing.assert_close(weights, torch.tensor([[1.5, math.exp(-1.5), 0.0]]))
    assert stats["rollout/is_truncated_frac"].item() == pytest.approx(0.5)
    assert stats["rollout/logp_diff_max"].item() == pytest.approx(1.5)
    r = torch.tensor([math.exp(0.5), math.exp(-1.5)])
    want = (r - 1 - r.log()).mean().item()
    assert stats["rollout/mismatch_kl"].item() == pytest.approx(want, rel=1e-5)
    unweighted, _ = truncated_is_weights(logp_old, logp_sampler, mask, cap=None)
    assert unweighted.tolist() == [[1.0, 1.0, 0.0]]
    nan_only, _ = truncated_is_weights(logp_old, torch.full((1, 3), math.nan), mask, cap=2.0)
    assert nan_only.tolist() == [[1.0, 1.0, 0.0]]  # no server log-prob: no correction


@pytest.mark.parametrize(
    ("served", "sync", "message"),
    [(None, "disk", "weight transfer is off"), ("disk", "gloo", "backend is disk, not a broadcast one"),
     ("gloo", "disk", "lacks master_address/master_port")],
)  # fmt: skip
def test_weight_sync_that_the_server_does_not_speak_is_one_quick_error(served, sync, message, tmp_path):
    tokenizer = embedded_tokenizer()
    with ServerThread(
        Engine(build_tiny("tiny-qwen3", 0), tokenizer, "policy"), transfer_backend=served
    ) as url:
        client = ServerClient(url, "policy", ServerClientConfig(retries=0, timeout_s=60), "rollout")
        start = time.monotonic()
        try:
            with pytest.raises(UserError, match=message):
                weight_push(client, sync, "127.0.0.1", tmp_path)
        finally:
            client.close()
        assert time.monotonic() - start < 30  # refused at once, not after the gloo timeout


def test_server_backend_needs_a_url():
    with pytest.raises(UserError, match="rollout.backend is server but rollout.url is not set"):
        make_config({"rollout": {"backend": "server"}})
    with pytest.raises(UserError, match="unknown key 'rollout.server.api_key'"):
        make_config({"rollout": {"server": {"api_key": "sk-never-in-a-config"}}})


def test_choices_become_groups_even_when_the_server_drops_the_stop_token():
    tokenizer = embedded_tokenizer()
    cfg = make_config({"rollout": {"backend": "server", "url": "http://127.0.0.1:9/v1", "max_new_tokens": 3}})
    sampler = ServerRollout(None, tokenizer, cfg, None, "cpu")
    eos = tokenizer.eos_token_id
    choices = [
        {
            "finish_reason": "stop",
            "logprobs": {"tokens": ["token_id:11", "token_id:12"], "token_logprobs": [-1, -2]},
        },
        {
            "finish_reason": "length",
            "logprobs": {"tokens": ["token_id:13"] * 3, "token_logprobs": [-3, -3, -3]},
        },
        {"finish_reason": "stop", "logprobs": {"tokens": [f"token_id:{eos}"], "token_logprobs": [-0.5]}},
    ]
    group = sampler._group(example(), choices)
    assert group.completion_ids[0, :3].tolist() == [11, 12, eos]  # the stop token the model must learn
    assert group.mask.sum(1).tolist() == [3, 3, 1] and group.truncated.tolist() == [False, True, False]
    assert group.logp_sampler[0, :2].tolist() == [-1.0, -2.0] and math.isnan(group.logp_sampler[0, 2])
    with pytest.raises(UserError, match="returned no completion tokens with log-probs"):
        sampler._group(example(), [{"finish_reason": "stop", "logprobs": None}])
